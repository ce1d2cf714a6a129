// SPDX-License-Identifier: GPL-2.0

//! VMX capability discovery: CPUID, IA32_FEATURE_CONTROL and the VMX capability MSRs.
//!
//! Read once at module load. Everything the design needs is checked here so that later
//! VMX instructions cannot fail for a reason we could have known in advance.

use crate::glue::rdmsr;
use crate::vmx::insn::InvvpidKind;
use crate::vmx::vmcs::{PinControls, Proc2Controls, ProcControls};
use crate::x86::msr;
use core::fmt;
use kernel::prelude::*;

const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

const BASIC_TRUE_CTLS: u64 = 1 << 55;
const BASIC_32BIT_ADDRESSES: u64 = 1 << 48;
const BASIC_MEMTYPE_WB: u64 = 6;

/// IA32_VMX_EPT_VPID_CAP (SDM vol. 3D A.10): INVVPID and the types it supports.
const VPID_CAP_INVVPID: u64 = 1 << 32;
const VPID_CAP_INDIVIDUAL_ADDRESS: u64 = 1 << 40;
const VPID_CAP_SINGLE_CONTEXT: u64 = 1 << 41;
const VPID_CAP_ALL_CONTEXT: u64 = 1 << 42;

/// Controls shadowvm cannot work without, by control word: (bit, name).
pub(crate) mod required {
    use crate::vmx::vmcs::{EntryControls, ExitControls, PinControls, ProcControls};

    pub(crate) const PIN: &[(u32, &str)] = &[
        (
            PinControls::EXT_INTR_EXITING_SHIFT,
            "external-interrupt exiting",
        ),
        (PinControls::NMI_EXITING_SHIFT, "NMI exiting"),
    ];
    pub(crate) const PROC: &[(u32, &str)] = &[
        (ProcControls::USE_TSC_OFFSETTING_SHIFT, "use TSC offsetting"),
        (
            ProcControls::INTERRUPT_WINDOW_EXITING_SHIFT,
            "interrupt-window exiting",
        ),
        (ProcControls::HLT_EXITING_SHIFT, "HLT exiting"),
        (ProcControls::INVLPG_EXITING_SHIFT, "INVLPG exiting"),
        (ProcControls::CR3_LOAD_EXITING_SHIFT, "CR3-load exiting"),
        (ProcControls::CR3_STORE_EXITING_SHIFT, "CR3-store exiting"),
        (
            ProcControls::UNCOND_IO_EXITING_SHIFT,
            "unconditional I/O exiting",
        ),
    ];
    pub(crate) const EXIT: &[(u32, &str)] = &[
        (
            ExitControls::SAVE_DEBUG_CONTROLS_SHIFT,
            "save debug controls",
        ),
        (
            ExitControls::HOST_ADDR_SPACE_SIZE_SHIFT,
            "host address-space size",
        ),
        (ExitControls::SAVE_EFER_SHIFT, "save IA32_EFER"),
        (ExitControls::LOAD_EFER_SHIFT, "load IA32_EFER"),
    ];
    pub(crate) const ENTRY: &[(u32, &str)] = &[
        (
            EntryControls::LOAD_DEBUG_CONTROLS_SHIFT,
            "load debug controls",
        ),
        (EntryControls::IA32E_MODE_SHIFT, "IA-32e mode guest"),
        (EntryControls::LOAD_EFER_SHIFT, "load IA32_EFER"),
    ];
}

/// Allowed settings of one VMX control word, from its capability MSR: bits that must be 1
/// (low half) and bits that may be 1 (high half).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Allowed {
    pub(crate) must_be_one: u32,
    pub(crate) may_be_one: u32,
}

impl Allowed {
    fn from_msr(v: u64) -> Self {
        Self {
            must_be_one: v as u32,
            may_be_one: (v >> 32) as u32,
        }
    }

    /// The control word to write for the wanted bits `want`: with the bits that must be 1,
    /// without those that may not be.
    pub(crate) fn adjust(&self, want: u32) -> u32 {
        (want | self.must_be_one) & self.may_be_one
    }

    pub(crate) fn supports(&self, bit: u32) -> bool {
        self.may_be_one & 1u32.wrapping_shl(bit) != 0 && bit < 32
    }
}

/// Why VMX cannot be used; each maps to one log line and an errno.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CapError {
    NoVmx,
    DisabledByFirmware(u64),
    MissingMsr(u32),
    NoTrueControls,
    UnsupportedVmcs(u64),
    MissingControl(&'static str, &'static str),
}

impl CapError {
    pub(crate) fn errno(&self) -> Error {
        match self {
            CapError::NoVmx => ENODEV,
            _ => crate::glue::eopnotsupp(),
        }
    }
}

impl kernel::fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapError::NoVmx => write!(f, "CPU does not support VMX (CPUID.1:ECX.VMX = 0)"),
            CapError::DisabledByFirmware(v) => write!(
                f,
                "VMX is disabled by firmware (IA32_FEATURE_CONTROL = {v:#x}); \
                 enable VT-x in the BIOS setup"
            ),
            CapError::MissingMsr(m) => write!(f, "VMX capability MSR {m:#x} cannot be read"),
            CapError::NoTrueControls => {
                write!(
                    f,
                    "VMX lacks the true-control capability MSRs (IA32_VMX_BASIC bit 55)"
                )
            }
            CapError::UnsupportedVmcs(b) => {
                write!(
                    f,
                    "unsupported VMCS layout or memory type (IA32_VMX_BASIC = {b:#x})"
                )
            }
            CapError::MissingControl(word, name) => {
                write!(f, "VMX lacks the required {word} control '{name}'")
            }
        }
    }
}

/// What this CPU's VMX offers, as read from the capability MSRs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VmxCaps {
    pub(crate) basic: u64,
    pub(crate) misc: u64,
    pub(crate) pin: Allowed,
    pub(crate) proc: Allowed,
    /// Secondary processor-based controls; all zero if the CPU has none.
    pub(crate) proc2: Allowed,
    pub(crate) exit: Allowed,
    pub(crate) entry: Allowed,
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
    /// IA32_VMX_EPT_VPID_CAP; 0 where the CPU has neither EPT nor VPIDs.
    pub(crate) ept_vpid_cap: u64,
}

fn msr(m: u32) -> Result<u64, CapError> {
    rdmsr(m).ok_or(CapError::MissingMsr(m))
}

fn cpuid_ecx(leaf: u32) -> u32 {
    core::arch::x86_64::__cpuid(leaf).ecx
}

fn check(
    word: &'static str,
    allowed: &Allowed,
    bits: &[(u32, &'static str)],
) -> Result<(), CapError> {
    for &(bit, name) in bits {
        if !allowed.supports(bit) {
            return Err(CapError::MissingControl(word, name));
        }
    }
    Ok(())
}

impl VmxCaps {
    /// Reads and checks the VMX capabilities of the CPU this runs on.
    pub(crate) fn read() -> Result<Self, CapError> {
        if cpuid_ecx(1) & (1 << 5) == 0 {
            return Err(CapError::NoVmx);
        }
        let fc = msr(msr::IA32_FEATURE_CONTROL)?;
        if fc & FEATURE_CONTROL_LOCKED == 0 || fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err(CapError::DisabledByFirmware(fc));
        }
        let basic = msr(msr::IA32_VMX_BASIC)?;
        if basic & BASIC_TRUE_CTLS == 0 {
            return Err(CapError::NoTrueControls);
        }
        let vmcs_size = (basic >> 32) & 0x1fff;
        if vmcs_size == 0
            || vmcs_size > 4096
            || basic & BASIC_32BIT_ADDRESSES != 0
            || (basic >> 50) & 0xf != BASIC_MEMTYPE_WB
        {
            return Err(CapError::UnsupportedVmcs(basic));
        }
        let proc = Allowed::from_msr(msr(msr::IA32_VMX_TRUE_PROCBASED_CTLS)?);
        // Secondary controls are optional (used for INVPCID pass-through when present).
        let proc2 = if proc.supports(ProcControls::SECONDARY_SHIFT) {
            Allowed::from_msr(msr(msr::IA32_VMX_PROCBASED_CTLS2)?)
        } else {
            Allowed::default()
        };
        // The MSR exists only with EPT or VPIDs allowed in the secondary controls.
        let ept_vpid_cap = if proc2.supports(Proc2Controls::ENABLE_EPT_SHIFT)
            || proc2.supports(Proc2Controls::ENABLE_VPID_SHIFT)
        {
            rdmsr(msr::IA32_VMX_EPT_VPID_CAP).unwrap_or(0)
        } else {
            0
        };
        let caps = Self {
            basic,
            misc: msr(msr::IA32_VMX_MISC)?,
            pin: Allowed::from_msr(msr(msr::IA32_VMX_TRUE_PINBASED_CTLS)?),
            proc,
            proc2,
            exit: Allowed::from_msr(msr(msr::IA32_VMX_TRUE_EXIT_CTLS)?),
            entry: Allowed::from_msr(msr(msr::IA32_VMX_TRUE_ENTRY_CTLS)?),
            cr0_fixed0: msr(msr::IA32_VMX_CR0_FIXED0)?,
            cr0_fixed1: msr(msr::IA32_VMX_CR0_FIXED1)?,
            cr4_fixed0: msr(msr::IA32_VMX_CR4_FIXED0)?,
            cr4_fixed1: msr(msr::IA32_VMX_CR4_FIXED1)?,
            ept_vpid_cap,
        };
        check("pin-based", &caps.pin, required::PIN)?;
        check("processor-based", &caps.proc, required::PROC)?;
        check("VM-exit", &caps.exit, required::EXIT)?;
        check("VM-entry", &caps.entry, required::ENTRY)?;
        Ok(caps)
    }

    /// VMCS revision identifier, written at the start of VMXON and VMCS regions.
    pub(crate) fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7fff_ffff
    }

    /// Size of a VMCS region in bytes (at most 4096, checked in [`Self::read`]).
    pub(crate) fn vmcs_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1fff) as u32
    }

    pub(crate) fn has_ept(&self) -> bool {
        self.proc2.supports(Proc2Controls::ENABLE_EPT_SHIFT)
    }

    pub(crate) fn has_unrestricted_guest(&self) -> bool {
        self.proc2.supports(Proc2Controls::UNRESTRICTED_GUEST_SHIFT)
    }

    pub(crate) fn has_vpid(&self) -> bool {
        self.proc2.supports(Proc2Controls::ENABLE_VPID_SHIFT)
    }

    /// VPIDs that shadowvm can use: the control, and INVVPID with a type that flushes a
    /// whole VPID (single-context, or failing that all-context).
    pub(crate) fn vpid_usable(&self) -> bool {
        self.has_vpid()
            && self.ept_vpid_cap & VPID_CAP_INVVPID != 0
            && self.ept_vpid_cap & (VPID_CAP_SINGLE_CONTEXT | VPID_CAP_ALL_CONTEXT) != 0
    }

    /// The INVVPID type that flushes every translation of one VPID: single-context, or
    /// all-context where the CPU lacks it (more than needed, never less).
    pub(crate) fn invvpid_whole(&self) -> InvvpidKind {
        if self.ept_vpid_cap & VPID_CAP_SINGLE_CONTEXT != 0 {
            InvvpidKind::SingleContext
        } else {
            InvvpidKind::AllContext
        }
    }

    /// The INVVPID type for the translations of one address: individual-address, or
    /// [`Self::invvpid_whole`] where the CPU lacks it.
    pub(crate) fn invvpid_address(&self) -> InvvpidKind {
        if self.ept_vpid_cap & VPID_CAP_INDIVIDUAL_ADDRESS != 0 {
            InvvpidKind::IndividualAddress
        } else {
            self.invvpid_whole()
        }
    }

    pub(crate) fn has_preemption_timer(&self) -> bool {
        self.pin.supports(PinControls::PREEMPTION_TIMER_SHIFT)
    }

    /// The VMX-preemption timer counts down once every 2^rate TSC ticks (IA32_VMX_MISC[4:0]).
    pub(crate) fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1f) as u32
    }

    pub(crate) fn has_invpcid(&self) -> bool {
        self.proc2.supports(Proc2Controls::ENABLE_INVPCID_SHIFT)
    }

    /// Virtual NMIs with NMI-window exiting: what NMI injection into the guest needs (the
    /// CPU then tracks the guest's NMI blocking, set by delivery and cleared by IRET).
    pub(crate) fn has_virtual_nmis(&self) -> bool {
        self.pin.supports(PinControls::VIRTUAL_NMIS_SHIFT)
            && self.proc.supports(ProcControls::NMI_WINDOW_EXITING_SHIFT)
    }
}

impl fmt::Display for VmxCaps {
    /// The summary shown in the load log line and in debugfs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yn = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "vmcs_revision: {:#x}", self.revision_id())?;
        writeln!(f, "vmcs_size: {}", self.vmcs_size())?;
        writeln!(f, "vmx_basic: {:#x}", self.basic)?;
        writeln!(f, "vmx_misc: {:#x}", self.misc)?;
        writeln!(
            f,
            "pinbased: must1={:#x} may1={:#x}",
            self.pin.must_be_one, self.pin.may_be_one
        )?;
        writeln!(
            f,
            "procbased: must1={:#x} may1={:#x}",
            self.proc.must_be_one, self.proc.may_be_one
        )?;
        writeln!(
            f,
            "procbased2: must1={:#x} may1={:#x}",
            self.proc2.must_be_one, self.proc2.may_be_one
        )?;
        writeln!(
            f,
            "exit: must1={:#x} may1={:#x}",
            self.exit.must_be_one, self.exit.may_be_one
        )?;
        writeln!(
            f,
            "entry: must1={:#x} may1={:#x}",
            self.entry.must_be_one, self.entry.may_be_one
        )?;
        writeln!(
            f,
            "cr0_fixed: 0={:#x} 1={:#x}",
            self.cr0_fixed0, self.cr0_fixed1
        )?;
        writeln!(
            f,
            "cr4_fixed: 0={:#x} 1={:#x}",
            self.cr4_fixed0, self.cr4_fixed1
        )?;
        writeln!(f, "ept: {} (not used)", yn(self.has_ept()))?;
        writeln!(
            f,
            "unrestricted_guest: {} (not used)",
            yn(self.has_unrestricted_guest())
        )?;
        writeln!(
            f,
            "vpid: {} (used: {}, ept_vpid_cap={:#x})",
            yn(self.has_vpid()),
            yn(self.vpid_usable()),
            self.ept_vpid_cap
        )?;
        writeln!(f, "invpcid: {}", yn(self.has_invpcid()))?;
        writeln!(f, "virtual_nmis: {}", yn(self.has_virtual_nmis()))
    }
}
