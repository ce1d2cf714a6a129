// SPDX-License-Identifier: GPL-2.0

//! VM exits: the exit reason, the exit information read from the VMCS, and typed views of
//! the exit qualifications, interruption information and instruction information
//! (SDM Vol. 3, chapter 28 and Appendix C).

use super::vmcs::{
    EXIT_QUALIFICATION, IDT_VECTORING_ERROR_CODE, IDT_VECTORING_INFO_FIELD, VMX_INSTRUCTION_INFO,
    VM_EXIT_INSTRUCTION_LEN, VM_EXIT_INTR_ERROR_CODE, VM_EXIT_INTR_INFO, VM_EXIT_REASON,
};
use super::window::CurrentVmcs;
use crate::x86::vector;

macro_rules! exit_reasons {
    ($($n:literal $v:ident $name:literal,)*) => {
        /// Basic exit reasons (SDM Appendix C); the `Reserved` ones have no meaning yet.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        #[repr(u16)]
        pub(crate) enum ExitReason {
            $($v = $n,)*
        }

        impl ExitReason {
            /// The reason with number `n`, if the SDM defines it.
            pub(crate) fn from_basic(n: u16) -> Option<Self> {
                match n {
                    $($n => Some(Self::$v),)*
                    _ => None,
                }
            }

            /// The name in the statistics (`exits.<name>`).
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Self::$v => $name,)*
                }
            }
        }
    };
}

exit_reasons! {
    0 ExceptionNmi "exception_nmi",
    1 ExternalInterrupt "external_interrupt",
    2 TripleFault "triple_fault",
    3 Init "init",
    4 Sipi "sipi",
    5 IoSmi "io_smi",
    6 OtherSmi "other_smi",
    7 InterruptWindow "interrupt_window",
    8 NmiWindow "nmi_window",
    9 TaskSwitch "task_switch",
    10 Cpuid "cpuid",
    11 Getsec "getsec",
    12 Hlt "hlt",
    13 Invd "invd",
    14 Invlpg "invlpg",
    15 Rdpmc "rdpmc",
    16 Rdtsc "rdtsc",
    17 Rsm "rsm",
    18 Vmcall "vmcall",
    19 Vmclear "vmclear",
    20 Vmlaunch "vmlaunch",
    21 Vmptrld "vmptrld",
    22 Vmptrst "vmptrst",
    23 Vmread "vmread",
    24 Vmresume "vmresume",
    25 Vmwrite "vmwrite",
    26 Vmxoff "vmxoff",
    27 Vmxon "vmxon",
    28 CrAccess "cr_access",
    29 DrAccess "dr_access",
    30 Io "io",
    31 Rdmsr "rdmsr",
    32 Wrmsr "wrmsr",
    33 InvalidGuestState "invalid_guest_state",
    34 MsrLoading "msr_loading",
    35 Reserved35 "reason_35",
    36 Mwait "mwait",
    37 Mtf "mtf",
    38 Reserved38 "reason_38",
    39 Monitor "monitor",
    40 Pause "pause",
    41 MceDuringEntry "mce_during_entry",
    42 Reserved42 "reason_42",
    43 TprBelowThreshold "tpr_below_threshold",
    44 ApicAccess "apic_access",
    45 VirtualizedEoi "virtualized_eoi",
    46 GdtrIdtr "gdtr_idtr",
    47 LdtrTr "ldtr_tr",
    48 EptViolation "ept_violation",
    49 EptMisconfig "ept_misconfig",
    50 Invept "invept",
    51 Rdtscp "rdtscp",
    52 PreemptionTimer "preemption_timer",
    53 Invvpid "invvpid",
    54 Wbinvd "wbinvd",
    55 Xsetbv "xsetbv",
    56 ApicWrite "apic_write",
    57 Rdrand "rdrand",
    58 Invpcid "invpcid",
    59 Vmfunc "vmfunc",
    60 Encls "encls",
    61 Rdseed "rdseed",
    62 PmlFull "pml_full",
    63 Xsaves "xsaves",
    64 Xrstors "xrstors",
    65 Reserved65 "reason_65",
    66 Spp "spp",
    67 Umwait "umwait",
    68 Tpause "tpause",
    69 Loadiwkey "loadiwkey",
}

/// Number of basic exit reasons counted in the statistics (0..=EXIT_REASONS-1).
pub(crate) const EXIT_REASONS: usize = 70;

/// Name of basic exit reason number `reason`, for the statistics (`exits.<name>`).
pub(crate) fn exit_reason_name(reason: usize) -> &'static str {
    u16::try_from(reason)
        .ok()
        .and_then(ExitReason::from_basic)
        .map_or("other", ExitReason::name)
}

/// Exit qualification of a VM-entry failure: the PDPTEs could not be loaded (SDM 27.8).
pub(crate) const ENTRY_FAIL_PDPTE: u64 = 2;

kernel::bitfield! {
    /// The exit-reason field (SDM 25.9.1).
    pub(crate) struct RawExitReason(u32) {
        15:0 basic;
        31:31 entry_failed;
    }
}

impl RawExitReason {
    /// A VM-entry failure with basic reason `reason` (bit 31 set).
    pub(crate) fn entry_failure(reason: ExitReason) -> Self {
        Self::from_raw(0)
            .with_basic(reason as u16)
            .with_entry_failed(true)
    }
}

// Interruption types (SDM 25.8.3, 27.2.2).
pub(crate) const INTR_TYPE_EXT_INTR: u32 = 0;
pub(crate) const INTR_TYPE_NMI: u32 = 2;
pub(crate) const INTR_TYPE_HW_EXCEPTION: u32 = 3;
pub(crate) const INTR_TYPE_SW_INTR: u32 = 4;
pub(crate) const INTR_TYPE_PRIV_SW_EXCEPTION: u32 = 5;
pub(crate) const INTR_TYPE_SW_EXCEPTION: u32 = 6;

kernel::bitfield! {
    /// Interruption information: of the exit (VM-exit interruption information), of the
    /// event being delivered (IDT-vectoring information) and of an event to inject
    /// (VM-entry interruption information); one format (SDM 25.8.3, 25.9.2).
    pub(crate) struct InterruptionInfo(u32) {
        7:0 vector;
        /// The interruption type (`INTR_TYPE_*`).
        10:8 kind;
        11:11 has_error_code;
        /// Undefined in IDT-vectoring information; must be 0 at VM entry.
        12:12 bit12;
        31:31 valid;
    }
}

impl InterruptionInfo {
    /// Valid, of type `kind`.
    pub(crate) fn is(self, kind: u32) -> bool {
        self.valid().into_bool() && self.kind().get() == kind
    }

    /// The vector, as an x86 vector number.
    pub(crate) fn vector_u8(self) -> u8 {
        self.vector().get() as u8
    }
}

kernel::bitfield! {
    /// Exit qualification of a control-register access (SDM table 28-3).
    pub(crate) struct CrAccess(u64) {
        3:0 cr;
        /// 0: MOV to CR, 1: MOV from CR, 2: CLTS, 3: LMSW.
        5:4 access_type;
        11:8 gpr;
        /// LMSW's source data.
        19:16 lmsw_source;
    }
}

kernel::bitfield! {
    /// Exit qualification of a MOV DR (SDM table 28-4).
    pub(crate) struct DrAccess(u64) {
        2:0 dr;
        /// Set for MOV from DR.
        4:4 read;
        11:8 gpr;
    }
}

kernel::bitfield! {
    /// Exit qualification of an I/O instruction (SDM table 28-5).
    pub(crate) struct IoAccess(u64) {
        /// Access size minus 1 (0, 1 or 3).
        2:0 size_minus_1;
        3:3 input;
        4:4 string;
        31:16 port;
    }
}

kernel::bitfield! {
    /// VM-exit instruction information of INVEPT, INVPCID and INVVPID (SDM table 28-9).
    pub(crate) struct InvInstructionInfo(u32) {
        1:0 scale;
        /// 0: 16-bit, 1: 32-bit, 2: 64-bit.
        9:7 address_size;
        17:15 segment;
        21:18 index;
        22:22 index_invalid;
        26:23 base;
        27:27 base_invalid;
        /// The register operand (the INVPCID type).
        31:28 reg2;
    }
}

/// Exit information, copied out of the VMCS right after the exit (so an exit can be
/// handled again in a later window).
#[derive(Clone, Copy)]
pub(crate) struct ExitInfo {
    pub(crate) reason: RawExitReason,
    pub(crate) qualification: u64,
    pub(crate) intr_info: InterruptionInfo,
    pub(crate) intr_error: u32,
    pub(crate) vectoring_info: InterruptionInfo,
    pub(crate) vectoring_error: u32,
    pub(crate) instruction_len: u32,
    pub(crate) instruction_info: u32,
}

impl ExitInfo {
    ///
    /// Only the fields the exit defines and the handlers use are read (a VMREAD each, on
    /// every exit): the interruption information of exception/NMI exits (and its error
    /// code when it has one), the IDT-vectoring error code when an event was being
    /// delivered with one, the instruction information of INVPCID. The others stay 0.
    pub(crate) fn read(vmcs: &CurrentVmcs<'_>) -> Self {
        let reason = RawExitReason::from_raw(vmcs.read(VM_EXIT_REASON));
        let basic = ExitReason::from_basic(reason.basic().get() as u16);
        let vectoring_info = InterruptionInfo::from_raw(vmcs.read(IDT_VECTORING_INFO_FIELD));
        let mut info = Self {
            reason,
            qualification: vmcs.read(EXIT_QUALIFICATION),
            intr_info: InterruptionInfo::from_raw(0),
            intr_error: 0,
            vectoring_info,
            vectoring_error: 0,
            instruction_len: vmcs.read(VM_EXIT_INSTRUCTION_LEN),
            instruction_info: 0,
        };
        match basic {
            Some(ExitReason::ExceptionNmi) => {
                info.intr_info = InterruptionInfo::from_raw(vmcs.read(VM_EXIT_INTR_INFO));
                if info.intr_info.has_error_code().into_bool() {
                    info.intr_error = vmcs.read(VM_EXIT_INTR_ERROR_CODE);
                }
            }
            Some(ExitReason::Invpcid) => info.instruction_info = vmcs.read(VMX_INSTRUCTION_INFO),
            _ => {}
        }
        if vectoring_info.valid().into_bool() && vectoring_info.has_error_code().into_bool() {
            info.vectoring_error = vmcs.read(IDT_VECTORING_ERROR_CODE);
        }
        info
    }

    /// The basic exit reason number (the statistics count by it).
    pub(crate) fn basic(&self) -> u16 {
        self.reason.basic().get() as u16
    }

    /// The basic exit reason, if the SDM defines it.
    pub(crate) fn basic_reason(&self) -> Option<ExitReason> {
        ExitReason::from_basic(self.basic())
    }

    /// The exit reports a VM-entry failure (bit 31 of the exit reason).
    pub(crate) fn entry_failed(&self) -> bool {
        self.reason.entry_failed().into_bool()
    }

    /// An NMI (meant for the host) caused the exit.
    pub(crate) fn is_nmi(&self) -> bool {
        self.basic_reason() == Some(ExitReason::ExceptionNmi) && self.intr_info.is(INTR_TYPE_NMI)
    }

    /// A machine check (meant for the host) caused the exit, in the guest or during VM
    /// entry.
    pub(crate) fn is_machine_check(&self) -> bool {
        match self.basic_reason() {
            Some(ExitReason::MceDuringEntry) => true,
            Some(ExitReason::ExceptionNmi) => {
                self.intr_info.is(INTR_TYPE_HW_EXCEPTION)
                    && self.intr_info.vector_u8() == vector::MC
            }
            _ => false,
        }
    }

    pub(crate) fn cr_access(&self) -> CrAccess {
        CrAccess::from_raw(self.qualification)
    }

    pub(crate) fn dr_access(&self) -> DrAccess {
        DrAccess::from_raw(self.qualification)
    }

    pub(crate) fn io(&self) -> IoAccess {
        IoAccess::from_raw(self.qualification)
    }

    pub(crate) fn inv_info(&self) -> InvInstructionInfo {
        InvInstructionInfo::from_raw(self.instruction_info)
    }
}
