// SPDX-License-Identifier: GPL-2.0

//! Control- and debug-register exits: MOV to/from CR0/CR3/CR4/CR8, CLTS, LMSW and
//! MOV to/from DR0-DR7.

use super::super::state::{self, CS};
use super::{Handled, VcpuCore, WindowEnd};
use crate::mmu;
use crate::ram::GuestRam;
use crate::vmx::exit::ExitInfo;
use crate::x86::{self, vector};

impl VcpuCore {
    /// MOV to/from CR0/CR3/CR4/CR8, CLTS, LMSW (SDM table 28-3).
    pub(super) fn cr_access(&mut self, ram: &GuestRam, info: &ExitInfo) -> Handled {
        let q = info.cr_access();
        let cr = q.cr().get();
        let reg = q.gpr().get() as usize;
        let r = match q.access_type().get() {
            0 => {
                let v = self.gpr_operand(reg);
                match cr {
                    0 => self.set_cr0(ram, v),
                    3 => self.set_cr3(ram, v),
                    4 => self.set_cr4(ram, v),
                    8 if v >> 4 != 0 => self.raise(vector::GP, Some(0), None),
                    8 => {
                        self.state.cr8 = v;
                        Handled::Resume
                    }
                    _ => self.raise(vector::UD, None, None),
                }
            }
            1 => {
                let v = match cr {
                    3 => self.state.cr3,
                    8 => self.state.cr8,
                    _ => return self.raise(vector::UD, None, None),
                };
                self.set_gpr(reg, v);
                Handled::Resume
            }
            2 => self.set_cr0(ram, self.state.cr0 & !x86::CR0_TS),
            _ => {
                // LMSW loads CR0[3:0] but cannot clear PE.
                let src = q.lmsw_source().get();
                let v = (self.state.cr0 & !0xe) | src;
                self.set_cr0(ram, v)
            }
        };
        match r {
            Handled::Resume => self.skip(info),
            other => other,
        }
    }

    pub(super) fn set_cr0(&mut self, ram: &GuestRam, v: u64) -> Handled {
        let v = v | x86::CR0_ET;
        let s = &self.state;
        let (old, mut efer) = (s.cr0, s.efer);
        let pg = v & x86::CR0_PG != 0;
        if v & !state::CR0_VALID != 0
            || (pg && v & x86::CR0_PE == 0)
            || (v & x86::CR0_NW != 0 && v & x86::CR0_CD == 0)
        {
            return self.raise(vector::GP, Some(0), None);
        }
        if v & x86::CR0_PE == 0 {
            // Back to real mode: shadowvm has no real-mode support (no unrestricted guest).
            return self.raise(vector::GP, Some(0), None);
        }
        if pg && old & x86::CR0_PG == 0 && efer & x86::EFER_LME != 0 {
            if s.cr4 & x86::CR4_PAE == 0 || s.seg[CS].l != 0 {
                return self.raise(vector::GP, Some(0), None);
            }
            efer |= x86::EFER_LMA;
        }
        if !pg && old & x86::CR0_PG != 0 && efer & x86::EFER_LMA != 0 {
            if s.code64() {
                return self.raise(vector::GP, Some(0), None);
            }
            efer &= !x86::EFER_LMA;
        }
        self.commit_mode(ram, v, s.cr4, efer)
    }

    pub(super) fn set_cr4(&mut self, ram: &GuestRam, v: u64) -> Handled {
        let s = &self.state;
        let pcide_on = v & x86::CR4_PCIDE != 0 && s.cr4 & x86::CR4_PCIDE == 0;
        if v & !super::super::cpuid::guest_cr4_allowed(&self.cpuid) != 0
            || (s.long_mode() && v & x86::CR4_PAE == 0)
            || (pcide_on && (!s.long_mode() || s.cr3 & 0xfff != 0))
        {
            return self.raise(vector::GP, Some(0), None);
        }
        self.commit_mode(ram, s.cr0, v, s.efer)
    }

    /// Hands a CR0/CR4/EFER change to the MMU; commits it only if the MMU accepts it.
    pub(super) fn commit_mode(&mut self, ram: &GuestRam, cr0: u64, cr4: u64, efer: u64) -> Handled {
        match self.mmu.set_mode(&mut self.cache, ram, cr0, cr4, efer) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(mmu::CtlOutcome::Gp) => self.raise(vector::GP, Some(0), None),
            Ok(mmu::CtlOutcome::Ok) => {
                // Paging-mode bits flush the guest's TLB; the others are rare enough not
                // to be worth telling apart.
                self.flush_guest_tlb();
                self.state.cr0 = cr0;
                self.state.cr4 = cr4;
                self.state.efer = efer;
                Handled::Resume
            }
        }
    }

    pub(super) fn set_cr3(&mut self, ram: &GuestRam, v: u64) -> Handled {
        match self.mmu.set_cr3(&mut self.cache, ram, v) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(mmu::CtlOutcome::Gp) => self.raise(vector::GP, Some(0), None),
            Ok(mmu::CtlOutcome::Ok) => {
                // Bit 63 (no-flush with PCIDs) is not part of CR3. Without it the load
                // flushes the guest's TLB; with it, only a switch of shadow root does (the
                // engine reports that).
                let pcide = self.state.cr4 & x86::CR4_PCIDE != 0;
                if !(pcide && v & (1 << 63) != 0) {
                    self.flush_guest_tlb();
                }
                self.state.cr3 = if pcide { v & !(1 << 63) } else { v };
                Handled::Resume
            }
        }
    }

    /// MOV to/from DR0-DR7: the guest's values live here and are loaded into the hardware
    /// for each window, so a write ends the window (the next one loads the new values).
    pub(super) fn dr_access(&mut self, info: &ExitInfo) -> Handled {
        let q = info.dr_access();
        let mut dr = q.dr().get() as usize;
        let reg = q.gpr().get() as usize;
        if dr == 4 || dr == 5 {
            if self.state.cr4 & x86::CR4_DE != 0 {
                return self.raise(vector::UD, None, None);
            }
            dr += 2;
        }
        // The VM exit comes before these checks of the instruction (SDM 25.1.3).
        if self.state.cpl() != 0 {
            return self.raise(vector::GP, Some(0), None);
        }
        if self.state.dr7 & x86::DR7_GD != 0 {
            // General detect: a fault before the access; the CPU clears GD to let the
            // handler use the debug registers.
            self.state.dr7 &= !x86::DR7_GD;
            self.set_dr6_from(x86::DR6_BD);
            return self.raise(vector::DB, None, None);
        }
        if q.read().into_bool() {
            let v = match self.state.dr.get(dr) {
                Some(&v) => v,
                None if dr == 6 => self.state.dr6,
                None => self.state.dr7,
            };
            self.set_gpr(reg, v);
        } else {
            let v = self.gpr_operand(reg);
            if dr >= 6 && v >> 32 != 0 {
                return self.raise(vector::GP, Some(0), None);
            }
            match self.state.dr.get_mut(dr) {
                Some(slot) => *slot = v,
                None if dr == 6 => self.state.dr6 = (v & x86::DR6_WRITABLE) | x86::DR6_ACTIVE_LOW,
                None => self.state.dr7 = (v & x86::DR7_WRITABLE) | x86::DR7_RESET,
            }
            self.skip(info);
            return Handled::End(WindowEnd::Interrupted);
        }
        self.skip(info)
    }
}
