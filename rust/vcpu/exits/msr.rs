// SPDX-License-Identifier: GPL-2.0

//! RDMSR and WRMSR exits: the MSRs a guest may use and where each one lives.

use super::super::state;
use super::{Handled, VcpuCore};
use crate::glue;
use crate::ram::GuestRam;
use crate::vmx::exit::ExitInfo;
use crate::vmx::insn;
use crate::vmx::vmcs::{
    GUEST_FS_BASE, GUEST_GS_BASE, GUEST_SYSENTER_CS, GUEST_SYSENTER_EIP, GUEST_SYSENTER_ESP,
};
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, msr, vector};

impl VcpuCore {
    /// RDMSR. FS/GS base and KERNEL_GS_BASE are read where they live during the window
    /// (the VMCS, the CPU): the guest changes them without exits (MOV to FS/GS, WRFSBASE,
    /// SWAPGS).
    pub(super) fn rdmsr(&mut self, vmcs: &CurrentVmcs<'_>, info: &ExitInfo) -> Handled {
        let s = &self.state;
        let v = match s.gpr[1] as u32 {
            msr::KERNEL_GS_BASE => glue::rdmsr(msr::KERNEL_GS_BASE).unwrap_or(0),
            msr::FS_BASE => vmcs.read(GUEST_FS_BASE),
            msr::GS_BASE => vmcs.read(GUEST_GS_BASE),
            msr::EFER => s.efer,
            msr::STAR => s.star,
            msr::LSTAR => s.lstar,
            msr::CSTAR => s.cstar,
            msr::SFMASK => s.sfmask,
            msr::SYSENTER_CS => s.sysenter_cs,
            msr::SYSENTER_ESP => s.sysenter_esp,
            msr::SYSENTER_EIP => s.sysenter_eip,
            msr::PAT => s.pat,
            msr::TSC => insn::rdtsc(),
            msr::MTRRCAP | msr::MTRR_DEF_TYPE => 0,
            msr::MISC_ENABLE => 1, // fast strings
            _ => return self.raise(vector::GP, Some(0), None),
        };
        self.state.gpr[0] = v & 0xffff_ffff;
        self.state.gpr[2] = v >> 32;
        self.skip(info)
    }

    /// WRMSR. Every write takes effect at once, where the value lives during the window:
    /// the VMCS for FS/GS base and SYSENTER, the CPU for the syscall MSRs.
    pub(super) fn wrmsr(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        info: &ExitInfo,
    ) -> Handled {
        let v = (self.state.gpr[0] & 0xffff_ffff) | (self.state.gpr[2] << 32);
        let s = &mut self.state;
        match s.gpr[1] as u32 {
            msr::EFER => {
                if v & !(x86::EFER_SCE | x86::EFER_LME | x86::EFER_LMA | x86::EFER_NXE) != 0
                    || (s.cr0 & x86::CR0_PG != 0 && (v ^ s.efer) & x86::EFER_LME != 0)
                    || (v & x86::EFER_NXE != 0 && !super::super::cpuid::has_nx())
                {
                    return self.raise(vector::GP, Some(0), None);
                }
                // LMA is read-only: the CPU keeps its own value.
                let efer = (v & !x86::EFER_LMA) | (s.efer & x86::EFER_LMA);
                let (cr0, cr4) = (s.cr0, s.cr4);
                return match self.commit_mode(ram, cr0, cr4, efer) {
                    Handled::Resume => self.skip(info),
                    other => other,
                };
            }
            msr::LSTAR
            | msr::CSTAR
            | msr::KERNEL_GS_BASE
            | msr::FS_BASE
            | msr::GS_BASE
            | msr::SYSENTER_ESP
            | msr::SYSENTER_EIP
                if !x86::canonical(v) =>
            {
                return self.raise(vector::GP, Some(0), None);
            }
            msr::STAR | msr::LSTAR | msr::CSTAR | msr::SFMASK | msr::KERNEL_GS_BASE => {
                let msr = s.gpr[1] as u32;
                let v = if msr == msr::SFMASK {
                    v & 0xffff_ffff
                } else {
                    v
                };
                match msr {
                    msr::STAR => s.star = v,
                    msr::LSTAR => s.lstar = v,
                    msr::CSTAR => s.cstar = v,
                    msr::SFMASK => s.sfmask = v,
                    _ => s.kernel_gs_base = v,
                }
                // The guest's value is in the CPU for the window (SYSCALL, SWAPGS use it).
                super::super::host::wrmsr(msr, v);
            }
            msr::FS_BASE => {
                s.seg[state::FS].base = v;
                vmcs.write(GUEST_FS_BASE, v);
            }
            msr::GS_BASE => {
                s.seg[state::GS].base = v;
                vmcs.write(GUEST_GS_BASE, v);
            }
            msr::SYSENTER_CS => {
                s.sysenter_cs = v & 0xffff;
                vmcs.write(GUEST_SYSENTER_CS, (v & 0xffff) as u32);
            }
            msr::SYSENTER_ESP => {
                s.sysenter_esp = v;
                vmcs.write(GUEST_SYSENTER_ESP, v);
            }
            msr::SYSENTER_EIP => {
                s.sysenter_eip = v;
                vmcs.write(GUEST_SYSENTER_EIP, v);
            }
            // Each byte must be a defined memory type (0, 1, 4, 5, 6, 7), else #GP (SDM 13.12.2).
            msr::PAT if !(0..8).all(|i| matches!((v >> (8 * i)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7)) => {
                return self.raise(vector::GP, Some(0), None);
            }
            msr::PAT => s.pat = v,
            // Guest TSC writes are ignored: the guest sees the host TSC.
            msr::TSC | msr::MISC_ENABLE => {}
            _ => return self.raise(vector::GP, Some(0), None),
        }
        self.skip(info)
    }
}
