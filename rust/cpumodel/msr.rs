// SPDX-License-Identifier: GPL-2.0

//! The MSRs the module owns, and what a write to one of them may store.
//!
//! The module owns the MSRs whose values live in its own guest state (the VMCS, the
//! syscall MSRs it switches, the TSC offset). Every other MSR belongs to userspace: a guest
//! RDMSR/WRMSR of it exits with `SHADOWVM_EXIT_X86_RDMSR`/`WRMSR`, except the few that
//! [`always_gp`] keeps at #GP. [`check_write`] is the one place that decides whether a
//! value is acceptable, for the guest's WRMSR and for `SHADOWVM_SET_MSRS` alike.

/// MSR indices.
pub mod index {
    /// IA32_TIME_STAMP_COUNTER.
    pub const TSC: u32 = 0x10;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR: SYSCALL/SYSRET selectors.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR: SYSCALL target in 64-bit mode.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR: SYSCALL target in compatibility mode.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK (Linux: MSR_SYSCALL_MASK).
    pub const SFMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE: what SWAPGS exchanges with GS base.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_VMX_BASIC, the first VMX capability MSR.
    pub const VMX_FIRST: u32 = 0x480;
    /// IA32_VMX_VMFUNC, the last VMX capability MSR.
    pub const VMX_LAST: u32 = 0x491;
}

/// EFER.SCE: SYSCALL/SYSRET enable.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.LME: IA-32e mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: IA-32e mode active (read-only to the guest).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: execute-disable enable.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER bits the virtual CPU has; the others are reserved.
pub const EFER_VALID: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

/// The MSRs the module owns, in the order `SHADOWVM_GET_MSRS` documents them.
pub const OWNED: [u32; 13] = [
    index::EFER,
    index::STAR,
    index::LSTAR,
    index::CSTAR,
    index::SFMASK,
    index::FS_BASE,
    index::GS_BASE,
    index::KERNEL_GS_BASE,
    index::SYSENTER_CS,
    index::SYSENTER_ESP,
    index::SYSENTER_EIP,
    index::PAT,
    index::TSC,
];

/// Whether the module keeps this MSR's value (RDMSR/WRMSR never exit to userspace for it).
pub fn owned(msr: u32) -> bool {
    OWNED.contains(&msr)
}

/// MSRs that give #GP without asking userspace: the VMX capability MSRs. The guest is not
/// offered VMX (CPUID.1:ECX.VMX is never set), and KVM, too, faults on them when nested
/// virtualization is off.
pub fn always_gp(msr: u32) -> bool {
    (index::VMX_FIRST..=index::VMX_LAST).contains(&msr)
}

/// A 64-bit address with bits 63:47 all equal (4-level paging: the guest has no LA57).
pub fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

/// Whether every byte of a PAT value is a defined memory type (0, 1, 4, 5, 6, 7; SDM
/// 13.12.2: WRMSR of another one is #GP).
pub fn pat_valid(v: u64) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Who writes, and what the rules depend on.
#[derive(Clone, Copy, Debug)]
pub struct WriteContext {
    /// EFER.NXE may be set: the host has NX (and, for the guest, its CPUID table shows NX).
    pub nx: bool,
    /// `Some` for the guest's WRMSR, `None` for userspace (`SHADOWVM_SET_MSRS`).
    pub guest: Option<GuestWrite>,
}

/// What a guest WRMSR of EFER is checked against.
#[derive(Clone, Copy, Debug)]
pub struct GuestWrite {
    /// CR0.PG: EFER.LME cannot change while paging is on.
    pub paging: bool,
    /// The current EFER: LMA is read-only to the guest and keeps its value.
    pub efer: u64,
}

/// Why a write is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Not an MSR the module owns: the guest's access goes to userspace, SET_MSRS stops.
    NotOwned,
    /// A value a guest WRMSR faults on (#GP(0)); SET_MSRS stops there.
    Invalid,
}

/// Checks a write of `value` to `msr` and returns what to store: the same value, or its
/// architectural part (SFMASK and SYSENTER_CS keep their low bits, as the module always
/// has; a guest's EFER keeps the current LMA).
///
/// EFER from userspace is checked here only for reserved bits and NX; whether it fits CR0
/// and CR4 (LMA = PG and LME) is the caller's check, the same as for `SHADOWVM_SET_SREGS`.
pub fn check_write(msr: u32, value: u64, ctx: &WriteContext) -> Result<u64, WriteError> {
    match msr {
        index::EFER => {
            if value & !EFER_VALID != 0 || (value & EFER_NXE != 0 && !ctx.nx) {
                return Err(WriteError::Invalid);
            }
            match ctx.guest {
                Some(g) => {
                    if g.paging && (value ^ g.efer) & EFER_LME != 0 {
                        return Err(WriteError::Invalid);
                    }
                    Ok((value & !EFER_LMA) | (g.efer & EFER_LMA))
                }
                None => Ok(value),
            }
        }
        index::LSTAR
        | index::CSTAR
        | index::KERNEL_GS_BASE
        | index::FS_BASE
        | index::GS_BASE
        | index::SYSENTER_ESP
        | index::SYSENTER_EIP => {
            if canonical(value) {
                Ok(value)
            } else {
                Err(WriteError::Invalid)
            }
        }
        index::SFMASK => Ok(value & 0xffff_ffff),
        index::SYSENTER_CS => Ok(value & 0xffff),
        index::PAT => {
            if pat_valid(value) {
                Ok(value)
            } else {
                Err(WriteError::Invalid)
            }
        }
        index::STAR | index::TSC => Ok(value),
        _ => Err(WriteError::NotOwned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: WriteContext = WriteContext {
        nx: true,
        guest: None,
    };

    fn guest(paging: bool, efer: u64) -> WriteContext {
        WriteContext {
            nx: true,
            guest: Some(GuestWrite { paging, efer }),
        }
    }

    #[test]
    fn owned_list_has_no_duplicates() {
        let mut v = OWNED.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), OWNED.len());
    }

    #[test]
    fn every_owned_msr_has_a_write_rule() {
        for m in OWNED {
            assert_ne!(
                check_write(m, 0, &HOST),
                Err(WriteError::NotOwned),
                "{m:#x}"
            );
        }
        for m in [
            0x1b,
            0x3a,
            0x1a0,
            0xfe,
            0x2ff,
            0x6e0,
            0x800,
            0x480,
            0xc000_0103,
        ] {
            assert!(!owned(m));
            assert_eq!(check_write(m, 0, &HOST), Err(WriteError::NotOwned));
        }
    }

    #[test]
    fn vmx_capability_msrs_fault() {
        assert!(always_gp(0x480) && always_gp(0x48d) && always_gp(0x491));
        assert!(!always_gp(0x47f) && !always_gp(0x492) && !always_gp(0x3a));
        assert!(OWNED.iter().all(|&m| !always_gp(m)));
    }

    #[test]
    fn bases_must_be_canonical() {
        for m in [
            index::FS_BASE,
            index::GS_BASE,
            index::KERNEL_GS_BASE,
            index::LSTAR,
            index::CSTAR,
            index::SYSENTER_ESP,
            index::SYSENTER_EIP,
        ] {
            assert_eq!(
                check_write(m, 0xffff_8000_0000_1000, &HOST),
                Ok(0xffff_8000_0000_1000)
            );
            assert_eq!(
                check_write(m, 0x7fff_ffff_f000, &HOST),
                Ok(0x7fff_ffff_f000)
            );
            assert_eq!(
                check_write(m, 0x8000_0000_0000, &HOST),
                Err(WriteError::Invalid)
            );
            assert_eq!(
                check_write(m, 0x0080_0000_0000_0000, &guest(true, 0)),
                Err(WriteError::Invalid)
            );
        }
        // STAR is not an address: any value.
        assert_eq!(check_write(index::STAR, u64::MAX, &HOST), Ok(u64::MAX));
    }

    #[test]
    fn efer_reserved_bits_and_nx() {
        assert_eq!(
            check_write(index::EFER, 1 << 1, &HOST),
            Err(WriteError::Invalid)
        );
        // SVME (bit 12): an AMD bit, reserved here.
        assert_eq!(
            check_write(index::EFER, 1 << 12, &HOST),
            Err(WriteError::Invalid)
        );
        let no_nx = WriteContext {
            nx: false,
            guest: None,
        };
        assert_eq!(
            check_write(index::EFER, EFER_NXE, &no_nx),
            Err(WriteError::Invalid)
        );
        assert_eq!(check_write(index::EFER, EFER_NXE, &HOST), Ok(EFER_NXE));
        let all = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        assert_eq!(check_write(index::EFER, all, &HOST), Ok(all));
    }

    #[test]
    fn guest_efer_keeps_lma_and_lme_while_paging() {
        let long = EFER_LME | EFER_LMA;
        // LMA is read-only: writing it clear keeps it set, writing it set keeps it clear.
        assert_eq!(
            check_write(index::EFER, EFER_LME | EFER_SCE, &guest(true, long)),
            Ok(long | EFER_SCE)
        );
        assert_eq!(check_write(index::EFER, EFER_LMA, &guest(false, 0)), Ok(0));
        // LME cannot change with paging on, either way.
        assert_eq!(
            check_write(index::EFER, EFER_LME, &guest(true, 0)),
            Err(WriteError::Invalid)
        );
        assert_eq!(
            check_write(index::EFER, 0, &guest(true, long)),
            Err(WriteError::Invalid)
        );
        assert_eq!(
            check_write(index::EFER, EFER_LME, &guest(false, 0)),
            Ok(EFER_LME)
        );
    }

    #[test]
    fn pat_types() {
        assert_eq!(
            check_write(index::PAT, 0x0007_0406_0007_0406, &HOST),
            Ok(0x0007_0406_0007_0406)
        );
        for bad in [2u64, 3, 8, 0xff] {
            for byte in 0..8 {
                let v = bad << (8 * byte);
                assert_eq!(
                    check_write(index::PAT, v, &HOST),
                    Err(WriteError::Invalid),
                    "{v:#x}"
                );
            }
        }
    }

    #[test]
    fn truncated_registers() {
        assert_eq!(check_write(index::SFMASK, u64::MAX, &HOST), Ok(0xffff_ffff));
        assert_eq!(check_write(index::SYSENTER_CS, 0x1_0010, &HOST), Ok(0x10));
        assert_eq!(check_write(index::TSC, u64::MAX, &HOST), Ok(u64::MAX));
    }
}
