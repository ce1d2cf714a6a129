// SPDX-License-Identifier: GPL-2.0

//! RDMSR and WRMSR: the MSRs the module owns and where each one lives, the exits to
//! userspace for the others, and the same MSRs for `SHADOWVM_GET_MSRS`/`SET_MSRS`.
//!
//! Every RDMSR/WRMSR exits (the VMCS has no MSR bitmap: "use MSR bitmaps" stays 0). Which
//! MSRs the module owns and which values they take is decided in `cpumodel::msr`, once
//! for the guest and for userspace. A write from either side that the rules refuse is a
//! #GP(0) for the guest and the stopping point of SET_MSRS.

use super::super::state;
use super::{user, Handled, VcpuCore};
use crate::cpumodel::msr::{self as rules, index, GuestWrite, WriteContext, WriteError};
use crate::glue;
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::exit::ExitInfo;
use crate::vmx::insn;
use crate::vmx::vmcs::{
    GUEST_FS_BASE, GUEST_GS_BASE, GUEST_SYSENTER_CS, GUEST_SYSENTER_EIP, GUEST_SYSENTER_ESP,
    TSC_OFFSET,
};
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, vector};

/// Where the owned MSRs live during an access: inside a window some are in the VMCS (FS/GS
/// base, SYSENTER, the TSC offset) or in the CPU (the syscall MSRs, KERNEL_GS_BASE, which
/// SWAPGS changes without exits); between windows the saved [`state::GuestState`] is all.
pub(in crate::vcpu) type Live<'a, 'v> = Option<&'a CurrentVmcs<'v>>;

impl VcpuCore {
    /// The value of an MSR the module owns; `None` for any other.
    pub(in crate::vcpu) fn read_owned_msr(&self, msr: u32, live: Live<'_, '_>) -> Option<u64> {
        let s = &self.state;
        Some(match msr {
            index::KERNEL_GS_BASE => match live {
                Some(_) => glue::rdmsr(index::KERNEL_GS_BASE).unwrap_or(0),
                None => s.kernel_gs_base,
            },
            index::FS_BASE => live.map_or(s.seg[state::FS].base, |v| v.read(GUEST_FS_BASE)),
            index::GS_BASE => live.map_or(s.seg[state::GS].base, |v| v.read(GUEST_GS_BASE)),
            index::EFER => s.efer,
            index::STAR => s.star,
            index::LSTAR => s.lstar,
            index::CSTAR => s.cstar,
            index::SFMASK => s.sfmask,
            // Only WRMSR changes these, and it updates both copies.
            index::SYSENTER_CS => s.sysenter_cs,
            index::SYSENTER_ESP => s.sysenter_esp,
            index::SYSENTER_EIP => s.sysenter_eip,
            index::PAT => s.pat,
            // What RDTSC in the guest reads now (VMCS TSC offset).
            index::TSC => insn::rdtsc().wrapping_add(s.tsc_offset),
            _ => return None,
        })
    }

    /// Stores a value [`rules::check_write`] returned for an owned MSR other than EFER
    /// (whose writers also change the paging mode), where it lives.
    pub(in crate::vcpu) fn store_owned_msr(&mut self, msr: u32, v: u64, live: Live<'_, '_>) {
        let s = &mut self.state;
        match msr {
            index::STAR | index::LSTAR | index::CSTAR | index::SFMASK | index::KERNEL_GS_BASE => {
                match msr {
                    index::STAR => s.star = v,
                    index::LSTAR => s.lstar = v,
                    index::CSTAR => s.cstar = v,
                    index::SFMASK => s.sfmask = v,
                    _ => s.kernel_gs_base = v,
                }
                // Inside the window the guest's value is in the CPU (SYSCALL, SWAPGS use
                // it); between windows the next window loads it.
                if live.is_some() {
                    super::super::host::wrmsr(msr, v);
                }
            }
            index::FS_BASE => {
                s.seg[state::FS].base = v;
                if let Some(vmcs) = live {
                    vmcs.write(GUEST_FS_BASE, v);
                }
            }
            index::GS_BASE => {
                s.seg[state::GS].base = v;
                if let Some(vmcs) = live {
                    vmcs.write(GUEST_GS_BASE, v);
                }
            }
            index::SYSENTER_CS => {
                s.sysenter_cs = v;
                // A 32-bit field (the value has 16 bits).
                if let Some(vmcs) = live {
                    vmcs.write(GUEST_SYSENTER_CS, v as u32);
                }
            }
            index::SYSENTER_ESP => {
                s.sysenter_esp = v;
                if let Some(vmcs) = live {
                    vmcs.write(GUEST_SYSENTER_ESP, v);
                }
            }
            index::SYSENTER_EIP => {
                s.sysenter_eip = v;
                if let Some(vmcs) = live {
                    vmcs.write(GUEST_SYSENTER_EIP, v);
                }
            }
            index::PAT => s.pat = v,
            // The guest reads `v` now and counts on from there at the host's rate.
            index::TSC => {
                s.tsc_offset = v.wrapping_sub(insn::rdtsc());
                let offset = s.tsc_offset;
                if let Some(vmcs) = live {
                    vmcs.write(TSC_OFFSET, offset);
                }
            }
            _ => {}
        }
    }

    /// RDMSR: an owned MSR is read where it lives; the VMX capability MSRs fault; any
    /// other exits to userspace.
    pub(super) fn rdmsr(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        run: &mut uapi::Run,
        info: &ExitInfo,
    ) -> Handled {
        let msr = self.state.gpr[1] as u32;
        if let Some(v) = self.read_owned_msr(msr, Some(vmcs)) {
            self.state.gpr[0] = v & 0xffff_ffff;
            self.state.gpr[2] = v >> 32;
            return self.skip(info);
        }
        if rules::always_gp(msr) {
            return self.raise(vector::GP, Some(0), None);
        }
        self.user_msr(run, info, msr, None)
    }

    /// WRMSR: takes effect at once where the value lives; a value the rules refuse is
    /// #GP(0); an MSR the module does not own exits to userspace.
    pub(super) fn wrmsr(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: &ExitInfo,
    ) -> Handled {
        let s = &self.state;
        let msr = s.gpr[1] as u32;
        let v = (s.gpr[0] & 0xffff_ffff) | (s.gpr[2] << 32);
        let ctx = WriteContext {
            nx: super::super::cpuid::guest_nx(&self.cpuid),
            guest: Some(GuestWrite {
                paging: s.cr0 & x86::CR0_PG != 0,
                efer: s.efer,
            }),
        };
        match rules::check_write(msr, v, &ctx) {
            Err(WriteError::NotOwned) if !rules::always_gp(msr) => {
                self.user_msr(run, info, msr, Some(v))
            }
            Err(_) => self.raise(vector::GP, Some(0), None),
            Ok(efer) if msr == index::EFER => {
                let (cr0, cr4) = (s.cr0, s.cr4);
                match self.commit_mode(ram, cr0, cr4, efer) {
                    Handled::Resume => self.skip(info),
                    other => other,
                }
            }
            Ok(v) => {
                self.store_owned_msr(msr, v, Some(vmcs));
                self.skip(info)
            }
        }
    }

    /// Ends the window with an RDMSR (`write` = `None`) or WRMSR exit for userspace. The
    /// instruction completes at the next RUN ([`Self::complete_msr`]).
    fn user_msr(
        &mut self,
        run: &mut uapi::Run,
        info: &ExitInfo,
        msr: u32,
        write: Option<u64>,
    ) -> Handled {
        run.exit.set(uapi::ExitMsr {
            error: 0,
            pad: [0; 3],
            index: msr,
            data: write.unwrap_or(0),
        });
        self.completion = super::super::Completion::Msr {
            write: write.is_some(),
            len: info.instruction_len,
        };
        let reason = match write {
            Some(_) => uapi::SHADOWVM_EXIT_X86_WRMSR,
            None => uapi::SHADOWVM_EXIT_X86_RDMSR,
        };
        user(run, reason)
    }

    /// Completes an RDMSR/WRMSR userspace handled: #GP(0) if it set `error` (RIP stays),
    /// else RDMSR loads EDX:EAX from `data`, and RIP moves past the instruction.
    pub(in crate::vcpu) fn complete_msr(&mut self, run: &uapi::Run, write: bool, len: u32) {
        let m = run.msr();
        if m.error != 0 {
            self.queue_exception(vector::GP, Some(0), None);
            return;
        }
        if !write {
            self.state.gpr[0] = m.data & 0xffff_ffff;
            self.state.gpr[2] = m.data >> 32;
        }
        self.advance_rip(len);
    }
}

impl VcpuCore {
    /// One entry of SET_MSRS (between windows): false, with nothing changed, if the module
    /// does not own the MSR or a guest WRMSR of the value would fault. EFER must also fit
    /// CR0, CR4 and CS as SET_SREGS requires (its LMA included: userspace sets the whole
    /// register); the new paging mode is built at the next RUN.
    pub(in crate::vcpu) fn set_msr_from_user(&mut self, ram: &GuestRam, msr: u32, v: u64) -> bool {
        let ctx = WriteContext {
            nx: super::super::cpuid::has_nx(),
            guest: None,
        };
        match rules::check_write(msr, v, &ctx) {
            Err(_) => false,
            Ok(efer) if msr == index::EFER => {
                let mut s = self.state.sregs();
                s.efer = efer;
                if !state::check_sregs(&s)
                    || (state::pae_paging(&s) && !self.mmu.pae_pdptes_valid(ram, s.cr3))
                {
                    return false;
                }
                self.state.efer = efer;
                self.paging_dirty = true;
                true
            }
            Ok(v) => {
                self.store_owned_msr(msr, v, None);
                true
            }
        }
    }
}
