// SPDX-License-Identifier: GPL-2.0

//! x86 architectural vocabulary (Intel SDM Vol. 3): control-register, EFER, RFLAGS and
//! debug-register bits, MSR numbers and exception vectors, defined once.
//!
//! Pure: no kernel types, no policy. What shadowvm lets a guest set (the allowed CR4 and
//! EFER bits) is the vCPU's business and lives in `vcpu/state.rs`, built from these names.

// CR0 (SDM 2.5).
pub(crate) const CR0_PE: u64 = 1 << 0;
pub(crate) const CR0_MP: u64 = 1 << 1;
pub(crate) const CR0_EM: u64 = 1 << 2;
pub(crate) const CR0_TS: u64 = 1 << 3;
pub(crate) const CR0_ET: u64 = 1 << 4;
pub(crate) const CR0_NE: u64 = 1 << 5;
pub(crate) const CR0_WP: u64 = 1 << 16;
pub(crate) const CR0_AM: u64 = 1 << 18;
pub(crate) const CR0_NW: u64 = 1 << 29;
pub(crate) const CR0_CD: u64 = 1 << 30;
pub(crate) const CR0_PG: u64 = 1 << 31;
/// The defined CR0 bits (the rest are reserved: setting one is a #GP).
pub(crate) const CR0_DEFINED: u64 = CR0_PE
    | CR0_MP
    | CR0_EM
    | CR0_TS
    | CR0_ET
    | CR0_NE
    | CR0_WP
    | CR0_AM
    | CR0_NW
    | CR0_CD
    | CR0_PG;

// CR4 (SDM 2.5).
/// The low 11 bits: VME PVI TSD DE PSE PAE MCE PGE PCE OSFXSR OSXMMEXCPT.
pub(crate) const CR4_LOW11: u64 = 0x7ff;
pub(crate) const CR4_DE: u64 = 1 << 3;
pub(crate) const CR4_PAE: u64 = 1 << 5;
pub(crate) const CR4_MCE: u64 = 1 << 6;
pub(crate) const CR4_VMXE: u64 = 1 << 13;
pub(crate) const CR4_FSGSBASE: u64 = 1 << 16;
pub(crate) const CR4_PCIDE: u64 = 1 << 17;
pub(crate) const CR4_SMEP: u64 = 1 << 20;
pub(crate) const CR4_SMAP: u64 = 1 << 21;

// IA32_EFER (SDM 2.2.1).
pub(crate) const EFER_SCE: u64 = 1 << 0;
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;
pub(crate) const EFER_NXE: u64 = 1 << 11;

// RFLAGS (SDM 2.3).
pub(crate) const RFLAGS_TF: u64 = 1 << 8;
pub(crate) const RFLAGS_IF: u64 = 1 << 9;
pub(crate) const RFLAGS_VM: u64 = 1 << 17;
pub(crate) const RFLAGS_AC: u64 = 1 << 18;

// Debug registers (SDM 18.2).
/// DR6 bits that read as 1 unless a debug exception reports them (and the fixed ones).
pub(crate) const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.B0-B3: which breakpoint matched.
pub(crate) const DR6_TRAP_BITS: u64 = 0xf;
/// DR6 bit 12 (reserved, reads as 0 outside of RTM).
pub(crate) const DR6_BIT12: u64 = 1 << 12;
/// DR6.BD: the next instruction would access a debug register (DR7.GD was set).
pub(crate) const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step.
pub(crate) const DR6_BS: u64 = 1 << 14;
/// DR6 bits a MOV to DR6 can set (B0-B3, BD, BS, BT).
pub(crate) const DR6_WRITABLE: u64 = 0xf00f;
/// DR7.L0-G3: the bits that enable a breakpoint.
pub(crate) const DR7_ENABLES: u64 = 0xff;
/// DR7.GD: general detect.
pub(crate) const DR7_GD: u64 = 1 << 13;
/// DR7 after reset (and as a VM exit leaves it): only the fixed bit 10.
pub(crate) const DR7_RESET: u64 = 0x400;
/// DR7 bits a MOV to DR7 can set.
pub(crate) const DR7_WRITABLE: u64 = 0xffff_2bff;

/// Interruptibility state (SDM 25.4.2): blocking by STI and by MOV SS.
pub(crate) const BLOCKING_STI_MOVSS: u64 = 3;
/// Interruptibility state: blocking by STI.
pub(crate) const BLOCKING_STI: u64 = 1;
/// Interruptibility state: blocking by MOV SS.
pub(crate) const BLOCKING_MOV_SS: u64 = 2;
/// Interruptibility state: blocking by NMI (with virtual NMIs: virtual-NMI blocking).
pub(crate) const BLOCKING_NMI: u64 = 8;

/// Exception vectors (SDM 6.3.1).
pub(crate) mod vector {
    pub(crate) const DE: u8 = 0;
    pub(crate) const DB: u8 = 1;
    pub(crate) const UD: u8 = 6;
    pub(crate) const DF: u8 = 8;
    pub(crate) const TS: u8 = 10;
    pub(crate) const NP: u8 = 11;
    pub(crate) const SS: u8 = 12;
    pub(crate) const GP: u8 = 13;
    pub(crate) const PF: u8 = 14;
    pub(crate) const AC: u8 = 17;
    pub(crate) const MC: u8 = 18;
}

/// MSR numbers (SDM Vol. 4).
pub(crate) mod msr {
    pub(crate) const IA32_FEATURE_CONTROL: u32 = 0x3a;
    pub(crate) const SYSENTER_CS: u32 = 0x174;
    pub(crate) const SYSENTER_ESP: u32 = 0x175;
    pub(crate) const SYSENTER_EIP: u32 = 0x176;
    pub(crate) const IA32_DEBUGCTL: u32 = 0x1d9;
    pub(crate) const IA32_VMX_BASIC: u32 = 0x480;
    pub(crate) const IA32_VMX_MISC: u32 = 0x485;
    pub(crate) const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub(crate) const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub(crate) const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub(crate) const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub(crate) const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub(crate) const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub(crate) const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub(crate) const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub(crate) const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub(crate) const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub(crate) const EFER: u32 = 0xc000_0080;
    pub(crate) const STAR: u32 = 0xc000_0081;
    pub(crate) const LSTAR: u32 = 0xc000_0082;
    pub(crate) const CSTAR: u32 = 0xc000_0083;
    pub(crate) const SFMASK: u32 = 0xc000_0084;
    pub(crate) const FS_BASE: u32 = 0xc000_0100;
    pub(crate) const GS_BASE: u32 = 0xc000_0101;
    pub(crate) const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// Whether `v` is a canonical 48-bit linear address.
pub(crate) fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}
