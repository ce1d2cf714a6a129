// SPDX-License-Identifier: GPL-2.0

//! The VMCS fields shadowvm uses (Intel SDM Vol. 3, Appendix B), typed by width.
//!
//! A field is a [`Field<W>`]: its encoding and its width `W` ([`W16`], [`W32`], [`W64`] or
//! [`Natural`]). [`CurrentVmcs::read`](super::window::CurrentVmcs::read) returns and
//! [`CurrentVmcs::write`](super::window::CurrentVmcs::write) takes the width's value type,
//! so a 64-bit value cannot be written to a 16-bit field by mistake; the width bits of each
//! encoding are checked against `W` when the constant is built (a mismatch fails the build).
//!
//! Encodings copied from the kernel's `arch/x86/include/asm/vmx.h` (`enum vmcs_field`).

use core::marker::PhantomData;

/// The width of a VMCS field: the type its value has in Rust and the code of bits 14:13 of
/// its encoding (SDM B.1).
pub(crate) trait Width {
    /// What a read returns and a write takes.
    type Value: Copy;
    /// Bits 14:13 of the encodings of fields of this width.
    const CODE: u32;
    /// The value as VMWRITE's 64-bit source operand.
    fn to_raw(v: Self::Value) -> u64;
    /// The value from VMREAD's 64-bit destination (the field's own bits).
    fn from_raw(v: u64) -> Self::Value;
}

/// 16-bit fields (selectors).
pub(crate) enum W16 {}
/// 32-bit fields (controls, limits, access rights, exit information).
pub(crate) enum W32 {}
/// 64-bit fields (full access).
pub(crate) enum W64 {}
/// Natural-width fields: 64 bits on x86-64 (control registers, bases, RIP, RSP).
pub(crate) enum Natural {}

impl Width for W16 {
    type Value = u16;
    const CODE: u32 = 0;
    fn to_raw(v: u16) -> u64 {
        v.into()
    }
    fn from_raw(v: u64) -> u16 {
        v as u16
    }
}

impl Width for W64 {
    type Value = u64;
    const CODE: u32 = 1;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

impl Width for W32 {
    type Value = u32;
    const CODE: u32 = 2;
    fn to_raw(v: u32) -> u64 {
        v.into()
    }
    fn from_raw(v: u64) -> u32 {
        v as u32
    }
}

impl Width for Natural {
    type Value = u64;
    const CODE: u32 = 3;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

/// A #PF error code as the page-fault error-code mask and match controls hold it (SDM
/// vol. 3A 4.7 for the bits, vol. 3C 25.2 for the controls: with #PF in the exception
/// bitmap, a #PF exits when `error_code & mask == match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PfErrorCode(u32);

impl PfErrorCode {
    /// No bit.
    pub(crate) const NONE: PfErrorCode = PfErrorCode(0);
    /// P (bit 0): the fault was on a present entry (protection or reserved bit).
    pub(crate) const PRESENT: PfErrorCode = PfErrorCode(1);
}

/// The page-fault error-code mask and match fields: 32 bits holding a [`PfErrorCode`].
pub(crate) enum PfCode {}

impl Width for PfCode {
    type Value = PfErrorCode;
    const CODE: u32 = 2;
    fn to_raw(v: PfErrorCode) -> u64 {
        v.0.into()
    }
    fn from_raw(v: u64) -> PfErrorCode {
        PfErrorCode(v as u32)
    }
}

/// A VMCS field of width `W`.
///
/// # Invariants
///
/// `encoding` is a field encoding whose width bits (14:13) are `W::CODE` and whose access
/// type (bit 0) is full.
pub(crate) struct Field<W: Width> {
    encoding: u32,
    _width: PhantomData<W>,
}

impl<W: Width> Clone for Field<W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W: Width> Copy for Field<W> {}

impl<W: Width> Field<W> {
    /// The field with `encoding`. Only for constants: the width check runs at compile time
    /// there.
    const fn new(encoding: u32) -> Self {
        assert!((encoding >> 13) & 3 == W::CODE && encoding & 1 == 0);
        // INVARIANT: checked just above.
        Self {
            encoding,
            _width: PhantomData,
        }
    }

    /// The encoding, as VMREAD and VMWRITE take it.
    pub(crate) fn encoding(self) -> u32 {
        self.encoding
    }
}

pub(crate) type Field16 = Field<W16>;
pub(crate) type Field32 = Field<W32>;
pub(crate) type FieldNat = Field<Natural>;

macro_rules! fields {
    ($($(#[$m:meta])* $w:ident $name:ident = $enc:expr;)*) => {
        $($(#[$m])* pub(crate) const $name: Field<$w> = Field::new($enc);)*
    };
}

fields! {
    // 16-bit fields.
    W16 VIRTUAL_PROCESSOR_ID = 0x0000;
    W16 GUEST_ES_SELECTOR = 0x0800;
    W16 GUEST_CS_SELECTOR = 0x0802;
    W16 GUEST_SS_SELECTOR = 0x0804;
    W16 GUEST_DS_SELECTOR = 0x0806;
    W16 GUEST_FS_SELECTOR = 0x0808;
    W16 GUEST_GS_SELECTOR = 0x080a;
    W16 GUEST_LDTR_SELECTOR = 0x080c;
    W16 GUEST_TR_SELECTOR = 0x080e;
    W16 HOST_ES_SELECTOR = 0x0c00;
    W16 HOST_CS_SELECTOR = 0x0c02;
    W16 HOST_SS_SELECTOR = 0x0c04;
    W16 HOST_DS_SELECTOR = 0x0c06;
    W16 HOST_FS_SELECTOR = 0x0c08;
    W16 HOST_GS_SELECTOR = 0x0c0a;
    W16 HOST_TR_SELECTOR = 0x0c0c;
    // 64-bit fields.
    W64 TSC_OFFSET = 0x2010;
    W64 VMCS_LINK_POINTER = 0x2800;
    W64 GUEST_IA32_DEBUGCTL = 0x2802;
    W64 GUEST_IA32_EFER = 0x2806;
    W64 HOST_IA32_EFER = 0x2c02;
    // 32-bit fields.
    W32 GUEST_ES_LIMIT = 0x4800;
    W32 GUEST_CS_LIMIT = 0x4802;
    W32 GUEST_SS_LIMIT = 0x4804;
    W32 GUEST_DS_LIMIT = 0x4806;
    W32 GUEST_FS_LIMIT = 0x4808;
    W32 GUEST_GS_LIMIT = 0x480a;
    W32 GUEST_LDTR_LIMIT = 0x480c;
    W32 GUEST_TR_LIMIT = 0x480e;
    W32 GUEST_ES_AR_BYTES = 0x4814;
    W32 GUEST_CS_AR_BYTES = 0x4816;
    W32 GUEST_SS_AR_BYTES = 0x4818;
    W32 GUEST_DS_AR_BYTES = 0x481a;
    W32 GUEST_FS_AR_BYTES = 0x481c;
    W32 GUEST_GS_AR_BYTES = 0x481e;
    W32 GUEST_LDTR_AR_BYTES = 0x4820;
    W32 GUEST_TR_AR_BYTES = 0x4822;
    W32 PIN_BASED_VM_EXEC_CONTROL = 0x4000;
    W32 CPU_BASED_VM_EXEC_CONTROL = 0x4002;
    W32 EXCEPTION_BITMAP = 0x4004;
    PfCode PAGE_FAULT_ERROR_CODE_MASK = 0x4006;
    PfCode PAGE_FAULT_ERROR_CODE_MATCH = 0x4008;
    W32 CR3_TARGET_COUNT = 0x400a;
    W32 VM_EXIT_CONTROLS = 0x400c;
    W32 VM_EXIT_MSR_STORE_COUNT = 0x400e;
    W32 VM_EXIT_MSR_LOAD_COUNT = 0x4010;
    W32 VM_ENTRY_CONTROLS = 0x4012;
    W32 VM_ENTRY_MSR_LOAD_COUNT = 0x4014;
    W32 VM_ENTRY_INTR_INFO_FIELD = 0x4016;
    W32 VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
    W32 VM_ENTRY_INSTRUCTION_LEN = 0x401a;
    W32 SECONDARY_VM_EXEC_CONTROL = 0x401e;
    W32 VM_INSTRUCTION_ERROR = 0x4400;
    W32 VM_EXIT_REASON = 0x4402;
    W32 VM_EXIT_INTR_INFO = 0x4404;
    W32 VM_EXIT_INTR_ERROR_CODE = 0x4406;
    W32 IDT_VECTORING_INFO_FIELD = 0x4408;
    W32 IDT_VECTORING_ERROR_CODE = 0x440a;
    W32 VM_EXIT_INSTRUCTION_LEN = 0x440c;
    W32 VMX_INSTRUCTION_INFO = 0x440e;
    W32 GUEST_GDTR_LIMIT = 0x4810;
    W32 GUEST_IDTR_LIMIT = 0x4812;
    W32 GUEST_INTERRUPTIBILITY_INFO = 0x4824;
    W32 GUEST_ACTIVITY_STATE = 0x4826;
    W32 GUEST_SYSENTER_CS = 0x482a;
    W32 VMX_PREEMPTION_TIMER_VALUE = 0x482e;
    W32 HOST_IA32_SYSENTER_CS = 0x4c00;
    // Natural-width fields.
    Natural GUEST_ES_BASE = 0x6806;
    Natural GUEST_CS_BASE = 0x6808;
    Natural GUEST_SS_BASE = 0x680a;
    Natural GUEST_DS_BASE = 0x680c;
    Natural GUEST_FS_BASE = 0x680e;
    Natural GUEST_GS_BASE = 0x6810;
    Natural GUEST_LDTR_BASE = 0x6812;
    Natural GUEST_TR_BASE = 0x6814;
    Natural CR0_GUEST_HOST_MASK = 0x6000;
    Natural CR4_GUEST_HOST_MASK = 0x6002;
    Natural CR0_READ_SHADOW = 0x6004;
    Natural CR4_READ_SHADOW = 0x6006;
    Natural EXIT_QUALIFICATION = 0x6400;
    Natural GUEST_CR0 = 0x6800;
    Natural GUEST_CR3 = 0x6802;
    Natural GUEST_CR4 = 0x6804;
    Natural GUEST_GDTR_BASE = 0x6816;
    Natural GUEST_IDTR_BASE = 0x6818;
    Natural GUEST_DR7 = 0x681a;
    Natural GUEST_RSP = 0x681c;
    Natural GUEST_RIP = 0x681e;
    Natural GUEST_RFLAGS = 0x6820;
    Natural GUEST_PENDING_DBG_EXCEPTIONS = 0x6822;
    Natural GUEST_SYSENTER_ESP = 0x6824;
    Natural GUEST_SYSENTER_EIP = 0x6826;
    Natural HOST_CR0 = 0x6c00;
    Natural HOST_CR3 = 0x6c02;
    Natural HOST_CR4 = 0x6c04;
    Natural HOST_FS_BASE = 0x6c06;
    Natural HOST_GS_BASE = 0x6c08;
    Natural HOST_TR_BASE = 0x6c0a;
    Natural HOST_GDTR_BASE = 0x6c0c;
    Natural HOST_IDTR_BASE = 0x6c0e;
    Natural HOST_IA32_SYSENTER_ESP = 0x6c10;
    Natural HOST_IA32_SYSENTER_EIP = 0x6c12;
    Natural HOST_RIP = 0x6c16;
}

/// The four fields of one guest segment register.
#[derive(Clone, Copy)]
pub(crate) struct SegmentFields {
    pub(crate) selector: Field16,
    pub(crate) limit: Field32,
    pub(crate) access_rights: Field32,
    pub(crate) base: FieldNat,
}

/// The guest segment registers in VMCS order: ES, CS, SS, DS, FS, GS, LDTR, TR (the order
/// of `GuestState::seg`).
pub(crate) const GUEST_SEGMENTS: [SegmentFields; 8] = [
    SegmentFields {
        selector: GUEST_ES_SELECTOR,
        limit: GUEST_ES_LIMIT,
        access_rights: GUEST_ES_AR_BYTES,
        base: GUEST_ES_BASE,
    },
    SegmentFields {
        selector: GUEST_CS_SELECTOR,
        limit: GUEST_CS_LIMIT,
        access_rights: GUEST_CS_AR_BYTES,
        base: GUEST_CS_BASE,
    },
    SegmentFields {
        selector: GUEST_SS_SELECTOR,
        limit: GUEST_SS_LIMIT,
        access_rights: GUEST_SS_AR_BYTES,
        base: GUEST_SS_BASE,
    },
    SegmentFields {
        selector: GUEST_DS_SELECTOR,
        limit: GUEST_DS_LIMIT,
        access_rights: GUEST_DS_AR_BYTES,
        base: GUEST_DS_BASE,
    },
    SegmentFields {
        selector: GUEST_FS_SELECTOR,
        limit: GUEST_FS_LIMIT,
        access_rights: GUEST_FS_AR_BYTES,
        base: GUEST_FS_BASE,
    },
    SegmentFields {
        selector: GUEST_GS_SELECTOR,
        limit: GUEST_GS_LIMIT,
        access_rights: GUEST_GS_AR_BYTES,
        base: GUEST_GS_BASE,
    },
    SegmentFields {
        selector: GUEST_LDTR_SELECTOR,
        limit: GUEST_LDTR_LIMIT,
        access_rights: GUEST_LDTR_AR_BYTES,
        base: GUEST_LDTR_BASE,
    },
    SegmentFields {
        selector: GUEST_TR_SELECTOR,
        limit: GUEST_TR_LIMIT,
        access_rights: GUEST_TR_AR_BYTES,
        base: GUEST_TR_BASE,
    },
];

kernel::bitfield! {
    /// Pin-based VM-execution controls (SDM 25.6.1).
    pub(crate) struct PinControls(u32) {
        0:0 ext_intr_exiting;
        3:3 nmi_exiting;
        5:5 virtual_nmis;
        6:6 preemption_timer;
    }
}

kernel::bitfield! {
    /// Primary processor-based VM-execution controls (SDM 25.6.2).
    pub(crate) struct ProcControls(u32) {
        3:3 use_tsc_offsetting;
        2:2 interrupt_window_exiting;
        7:7 hlt_exiting;
        9:9 invlpg_exiting;
        10:10 mwait_exiting;
        11:11 rdpmc_exiting;
        15:15 cr3_load_exiting;
        16:16 cr3_store_exiting;
        19:19 cr8_load_exiting;
        20:20 cr8_store_exiting;
        22:22 nmi_window_exiting;
        23:23 mov_dr_exiting;
        24:24 uncond_io_exiting;
        29:29 monitor_exiting;
        31:31 secondary;
    }
}

kernel::bitfield! {
    /// Secondary processor-based VM-execution controls (SDM 25.6.2).
    pub(crate) struct Proc2Controls(u32) {
        1:1 enable_ept;
        5:5 enable_vpid;
        7:7 unrestricted_guest;
        12:12 enable_invpcid;
    }
}

kernel::bitfield! {
    /// VM-exit controls (SDM 25.7.1).
    pub(crate) struct ExitControls(u32) {
        2:2 save_debug_controls;
        9:9 host_addr_space_size;
        20:20 save_efer;
        21:21 load_efer;
    }
}

kernel::bitfield! {
    /// VM-entry controls (SDM 25.8.1).
    pub(crate) struct EntryControls(u32) {
        2:2 load_debug_controls;
        9:9 ia32e_mode;
        15:15 load_efer;
    }
}

kernel::bitfield! {
    /// Segment access rights in the VMCS format (SDM 25.4.1, table 25-2).
    pub(crate) struct AccessRights(u32) {
        3:0 seg_type;
        4:4 s;
        6:5 dpl;
        7:7 present;
        12:12 avl;
        13:13 l;
        14:14 db;
        15:15 g;
        16:16 unusable;
    }
}
