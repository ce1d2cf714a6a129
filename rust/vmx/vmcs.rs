// SPDX-License-Identifier: GPL-2.0

//! VMCS field encodings (Intel SDM Vol. 3, Appendix B), the subset shadowvm uses.
//!
//! Values copied from the kernel's `arch/x86/include/asm/vmx.h` (`enum vmcs_field`).
#![allow(dead_code)]

pub(crate) const GUEST_ES_SELECTOR: u32 = 0x00000800;
pub(crate) const GUEST_CS_SELECTOR: u32 = 0x00000802;
pub(crate) const GUEST_SS_SELECTOR: u32 = 0x00000804;
pub(crate) const GUEST_DS_SELECTOR: u32 = 0x00000806;
pub(crate) const GUEST_FS_SELECTOR: u32 = 0x00000808;
pub(crate) const GUEST_GS_SELECTOR: u32 = 0x0000080a;
pub(crate) const GUEST_LDTR_SELECTOR: u32 = 0x0000080c;
pub(crate) const GUEST_TR_SELECTOR: u32 = 0x0000080e;
pub(crate) const HOST_ES_SELECTOR: u32 = 0x00000c00;
pub(crate) const HOST_CS_SELECTOR: u32 = 0x00000c02;
pub(crate) const HOST_SS_SELECTOR: u32 = 0x00000c04;
pub(crate) const HOST_DS_SELECTOR: u32 = 0x00000c06;
pub(crate) const HOST_FS_SELECTOR: u32 = 0x00000c08;
pub(crate) const HOST_GS_SELECTOR: u32 = 0x00000c0a;
pub(crate) const HOST_TR_SELECTOR: u32 = 0x00000c0c;
pub(crate) const IO_BITMAP_A: u32 = 0x00002000;
pub(crate) const IO_BITMAP_B: u32 = 0x00002002;
pub(crate) const MSR_BITMAP: u32 = 0x00002004;
pub(crate) const VM_EXIT_MSR_STORE_ADDR: u32 = 0x00002006;
pub(crate) const VM_EXIT_MSR_LOAD_ADDR: u32 = 0x00002008;
pub(crate) const VM_ENTRY_MSR_LOAD_ADDR: u32 = 0x0000200a;
pub(crate) const TSC_OFFSET: u32 = 0x00002010;
pub(crate) const VMCS_LINK_POINTER: u32 = 0x00002800;
pub(crate) const GUEST_IA32_DEBUGCTL: u32 = 0x00002802;
pub(crate) const GUEST_IA32_PAT: u32 = 0x00002804;
pub(crate) const GUEST_IA32_EFER: u32 = 0x00002806;
pub(crate) const HOST_IA32_PAT: u32 = 0x00002c00;
pub(crate) const HOST_IA32_EFER: u32 = 0x00002c02;
pub(crate) const PIN_BASED_VM_EXEC_CONTROL: u32 = 0x00004000;
pub(crate) const CPU_BASED_VM_EXEC_CONTROL: u32 = 0x00004002;
pub(crate) const EXCEPTION_BITMAP: u32 = 0x00004004;
pub(crate) const PAGE_FAULT_ERROR_CODE_MASK: u32 = 0x00004006;
pub(crate) const PAGE_FAULT_ERROR_CODE_MATCH: u32 = 0x00004008;
pub(crate) const CR3_TARGET_COUNT: u32 = 0x0000400a;
pub(crate) const VM_EXIT_CONTROLS: u32 = 0x0000400c;
pub(crate) const VM_EXIT_MSR_STORE_COUNT: u32 = 0x0000400e;
pub(crate) const VM_EXIT_MSR_LOAD_COUNT: u32 = 0x00004010;
pub(crate) const VM_ENTRY_CONTROLS: u32 = 0x00004012;
pub(crate) const VM_ENTRY_MSR_LOAD_COUNT: u32 = 0x00004014;
pub(crate) const VM_ENTRY_INTR_INFO_FIELD: u32 = 0x00004016;
pub(crate) const VM_ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x00004018;
pub(crate) const VM_ENTRY_INSTRUCTION_LEN: u32 = 0x0000401a;
pub(crate) const TPR_THRESHOLD: u32 = 0x0000401c;
pub(crate) const SECONDARY_VM_EXEC_CONTROL: u32 = 0x0000401e;
pub(crate) const VM_INSTRUCTION_ERROR: u32 = 0x00004400;
pub(crate) const VM_EXIT_REASON: u32 = 0x00004402;
pub(crate) const VM_EXIT_INTR_INFO: u32 = 0x00004404;
pub(crate) const VM_EXIT_INTR_ERROR_CODE: u32 = 0x00004406;
pub(crate) const IDT_VECTORING_INFO_FIELD: u32 = 0x00004408;
pub(crate) const IDT_VECTORING_ERROR_CODE: u32 = 0x0000440a;
pub(crate) const VM_EXIT_INSTRUCTION_LEN: u32 = 0x0000440c;
pub(crate) const VMX_INSTRUCTION_INFO: u32 = 0x0000440e;
pub(crate) const GUEST_ES_LIMIT: u32 = 0x00004800;
pub(crate) const GUEST_CS_LIMIT: u32 = 0x00004802;
pub(crate) const GUEST_SS_LIMIT: u32 = 0x00004804;
pub(crate) const GUEST_DS_LIMIT: u32 = 0x00004806;
pub(crate) const GUEST_FS_LIMIT: u32 = 0x00004808;
pub(crate) const GUEST_GS_LIMIT: u32 = 0x0000480a;
pub(crate) const GUEST_LDTR_LIMIT: u32 = 0x0000480c;
pub(crate) const GUEST_TR_LIMIT: u32 = 0x0000480e;
pub(crate) const GUEST_GDTR_LIMIT: u32 = 0x00004810;
pub(crate) const GUEST_IDTR_LIMIT: u32 = 0x00004812;
pub(crate) const GUEST_ES_AR_BYTES: u32 = 0x00004814;
pub(crate) const GUEST_CS_AR_BYTES: u32 = 0x00004816;
pub(crate) const GUEST_SS_AR_BYTES: u32 = 0x00004818;
pub(crate) const GUEST_DS_AR_BYTES: u32 = 0x0000481a;
pub(crate) const GUEST_FS_AR_BYTES: u32 = 0x0000481c;
pub(crate) const GUEST_GS_AR_BYTES: u32 = 0x0000481e;
pub(crate) const GUEST_LDTR_AR_BYTES: u32 = 0x00004820;
pub(crate) const GUEST_TR_AR_BYTES: u32 = 0x00004822;
pub(crate) const GUEST_INTERRUPTIBILITY_INFO: u32 = 0x00004824;
pub(crate) const GUEST_ACTIVITY_STATE: u32 = 0x00004826;
pub(crate) const GUEST_SYSENTER_CS: u32 = 0x0000482A;
pub(crate) const VMX_PREEMPTION_TIMER_VALUE: u32 = 0x0000482E;
pub(crate) const HOST_IA32_SYSENTER_CS: u32 = 0x00004c00;
pub(crate) const CR0_GUEST_HOST_MASK: u32 = 0x00006000;
pub(crate) const CR4_GUEST_HOST_MASK: u32 = 0x00006002;
pub(crate) const CR0_READ_SHADOW: u32 = 0x00006004;
pub(crate) const CR4_READ_SHADOW: u32 = 0x00006006;
pub(crate) const CR3_TARGET_VALUE0: u32 = 0x00006008;
pub(crate) const EXIT_QUALIFICATION: u32 = 0x00006400;
pub(crate) const GUEST_LINEAR_ADDRESS: u32 = 0x0000640a;
pub(crate) const GUEST_CR0: u32 = 0x00006800;
pub(crate) const GUEST_CR3: u32 = 0x00006802;
pub(crate) const GUEST_CR4: u32 = 0x00006804;
pub(crate) const GUEST_ES_BASE: u32 = 0x00006806;
pub(crate) const GUEST_CS_BASE: u32 = 0x00006808;
pub(crate) const GUEST_SS_BASE: u32 = 0x0000680a;
pub(crate) const GUEST_DS_BASE: u32 = 0x0000680c;
pub(crate) const GUEST_FS_BASE: u32 = 0x0000680e;
pub(crate) const GUEST_GS_BASE: u32 = 0x00006810;
pub(crate) const GUEST_LDTR_BASE: u32 = 0x00006812;
pub(crate) const GUEST_TR_BASE: u32 = 0x00006814;
pub(crate) const GUEST_GDTR_BASE: u32 = 0x00006816;
pub(crate) const GUEST_IDTR_BASE: u32 = 0x00006818;
pub(crate) const GUEST_DR7: u32 = 0x0000681a;
pub(crate) const GUEST_RSP: u32 = 0x0000681c;
pub(crate) const GUEST_RIP: u32 = 0x0000681e;
pub(crate) const GUEST_RFLAGS: u32 = 0x00006820;
pub(crate) const GUEST_PENDING_DBG_EXCEPTIONS: u32 = 0x00006822;
pub(crate) const GUEST_SYSENTER_ESP: u32 = 0x00006824;
pub(crate) const GUEST_SYSENTER_EIP: u32 = 0x00006826;
pub(crate) const HOST_CR0: u32 = 0x00006c00;
pub(crate) const HOST_CR3: u32 = 0x00006c02;
pub(crate) const HOST_CR4: u32 = 0x00006c04;
pub(crate) const HOST_FS_BASE: u32 = 0x00006c06;
pub(crate) const HOST_GS_BASE: u32 = 0x00006c08;
pub(crate) const HOST_TR_BASE: u32 = 0x00006c0a;
pub(crate) const HOST_GDTR_BASE: u32 = 0x00006c0c;
pub(crate) const HOST_IDTR_BASE: u32 = 0x00006c0e;
pub(crate) const HOST_IA32_SYSENTER_ESP: u32 = 0x00006c10;
pub(crate) const HOST_IA32_SYSENTER_EIP: u32 = 0x00006c12;
pub(crate) const HOST_RSP: u32 = 0x00006c14;
pub(crate) const HOST_RIP: u32 = 0x00006c16;

// Control bits (SDM Vol. 3, chapter 25.6-25.8).
pub(crate) const PIN_EXT_INTR_EXITING: u32 = 1 << 0;
pub(crate) const PIN_NMI_EXITING: u32 = 1 << 3;
pub(crate) const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
pub(crate) const PROC_HLT_EXITING: u32 = 1 << 7;
pub(crate) const PROC_INVLPG_EXITING: u32 = 1 << 9;
pub(crate) const PROC_MWAIT_EXITING: u32 = 1 << 10;
pub(crate) const PROC_RDPMC_EXITING: u32 = 1 << 11;
pub(crate) const PROC_CR3_LOAD_EXITING: u32 = 1 << 15;
pub(crate) const PROC_CR3_STORE_EXITING: u32 = 1 << 16;
pub(crate) const PROC_CR8_LOAD_EXITING: u32 = 1 << 19;
pub(crate) const PROC_CR8_STORE_EXITING: u32 = 1 << 20;
pub(crate) const PROC_MOV_DR_EXITING: u32 = 1 << 23;
pub(crate) const PROC_UNCOND_IO_EXITING: u32 = 1 << 24;
pub(crate) const PROC_MONITOR_EXITING: u32 = 1 << 29;
pub(crate) const PROC_SECONDARY: u32 = 1 << 31;
pub(crate) const PROC2_ENABLE_INVPCID: u32 = 1 << 12;
pub(crate) const EXIT_SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
pub(crate) const EXIT_HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
pub(crate) const EXIT_SAVE_EFER: u32 = 1 << 20;
pub(crate) const EXIT_LOAD_EFER: u32 = 1 << 21;
pub(crate) const ENTRY_LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
pub(crate) const ENTRY_IA32E_MODE: u32 = 1 << 9;
pub(crate) const ENTRY_LOAD_EFER: u32 = 1 << 15;

// Basic exit reasons (SDM Vol. 3, Appendix C).
pub(crate) const EXIT_EXCEPTION_NMI: u32 = 0;
pub(crate) const EXIT_EXTERNAL_INTERRUPT: u32 = 1;
pub(crate) const EXIT_TRIPLE_FAULT: u32 = 2;
pub(crate) const EXIT_TASK_SWITCH: u32 = 9;
pub(crate) const EXIT_CPUID: u32 = 10;
pub(crate) const EXIT_GETSEC: u32 = 11;
pub(crate) const EXIT_HLT: u32 = 12;
pub(crate) const EXIT_INVD: u32 = 13;
pub(crate) const EXIT_INVLPG: u32 = 14;
pub(crate) const EXIT_RDPMC: u32 = 15;
pub(crate) const EXIT_VMCALL: u32 = 18;
pub(crate) const EXIT_VMCLEAR: u32 = 19;
pub(crate) const EXIT_VMXON: u32 = 27;
pub(crate) const EXIT_CR_ACCESS: u32 = 28;
pub(crate) const EXIT_DR_ACCESS: u32 = 29;
pub(crate) const EXIT_IO: u32 = 30;
pub(crate) const EXIT_RDMSR: u32 = 31;
pub(crate) const EXIT_WRMSR: u32 = 32;
pub(crate) const EXIT_INVALID_GUEST_STATE: u32 = 33;
pub(crate) const EXIT_MSR_LOADING: u32 = 34;
pub(crate) const EXIT_MWAIT: u32 = 36;
pub(crate) const EXIT_MONITOR: u32 = 39;
pub(crate) const EXIT_MCE_DURING_ENTRY: u32 = 41;
pub(crate) const EXIT_INVEPT: u32 = 50;
pub(crate) const EXIT_INVVPID: u32 = 53;
pub(crate) const EXIT_XSETBV: u32 = 55;
pub(crate) const EXIT_PREEMPTION_TIMER: u32 = 52;
pub(crate) const EXIT_INVPCID: u32 = 58;
/// Number of basic exit reasons counted in the statistics (0..=EXIT_REASONS-1).
pub(crate) const EXIT_REASONS: usize = 70;

/// Names of the basic exit reasons, for the statistics (`exits.<name>`).
pub(crate) fn exit_reason_name(reason: usize) -> &'static str {
    const NAMES: [&str; EXIT_REASONS] = [
        "exception_nmi", "external_interrupt", "triple_fault", "init", "sipi", "io_smi",
        "other_smi", "interrupt_window", "nmi_window", "task_switch", "cpuid", "getsec", "hlt",
        "invd", "invlpg", "rdpmc", "rdtsc", "rsm", "vmcall", "vmclear", "vmlaunch", "vmptrld",
        "vmptrst", "vmread", "vmresume", "vmwrite", "vmxoff", "vmxon", "cr_access", "dr_access",
        "io", "rdmsr", "wrmsr", "invalid_guest_state", "msr_loading", "reason_35", "mwait",
        "mtf", "reason_38", "monitor", "pause", "mce_during_entry", "reason_42",
        "tpr_below_threshold", "apic_access", "virtualized_eoi", "gdtr_idtr", "ldtr_tr",
        "ept_violation", "ept_misconfig", "invept", "rdtscp", "preemption_timer", "invvpid",
        "wbinvd", "xsetbv", "apic_write", "rdrand", "invpcid", "vmfunc", "encls", "rdseed",
        "pml_full", "xsaves", "xrstors", "reason_65", "spp", "umwait", "tpause", "loadiwkey",
    ];
    NAMES.get(reason).copied().unwrap_or("other")
}

/// Exit qualification of a VM-entry failure: the PDPTEs could not be loaded (SDM 27.8).
pub(crate) const ENTRY_FAIL_PDPTE: u64 = 2;

// Event injection / exit interruption information (SDM 25.8.3, 27.2.2).
pub(crate) const INTR_INFO_VALID: u32 = 1 << 31;
pub(crate) const INTR_INFO_ERROR_CODE: u32 = 1 << 11;
pub(crate) const INTR_TYPE_EXT_INTR: u32 = 0;
pub(crate) const INTR_TYPE_NMI: u32 = 2;
pub(crate) const INTR_TYPE_HW_EXCEPTION: u32 = 3;
pub(crate) const INTR_TYPE_SW_INTR: u32 = 4;
pub(crate) const INTR_TYPE_PRIV_SW_EXCEPTION: u32 = 5;
pub(crate) const INTR_TYPE_SW_EXCEPTION: u32 = 6;
