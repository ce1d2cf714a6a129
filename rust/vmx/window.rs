// SPDX-License-Identifier: GPL-2.0

//! Local-mode VMX: VMX operation only inside an interrupts-off window.
//!
//! Linux 7.2 owns CR4 through a per-CPU shadow and exports the helpers that keep it in sync
//! to the kvm modules only. A CR4.VMXE left set behind the kernel's back turns its next CR4
//! rewrite into a #GP in VMX operation. So shadowvm sets CR4.VMXE, does VMXON and VMPTRLD,
//! runs, and before interrupts come back on does VMCLEAR, VMXOFF and restores CR4 exactly.
//!
//! The guards below make that order a matter of types: a [`VmxRoot`] borrows the
//! [`IrqsOff`] proof, a [`CurrentVmcs`] borrows the [`VmxRoot`], so they can only be dropped
//! (VMCLEAR, then VMXOFF + CR4 restore, then interrupts on) in that order.

use super::caps::VmxCaps;
use super::insn::{self, InvvpidKind, VmFail};
use super::vmcs::{Field, Width};
use crate::glue::{self, IrqsOff};
use crate::x86::CR4_VMXE;
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use kernel::{page::Page, prelude::*};

/// Why a window could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowError {
    /// CR4.VMXE was already set: another hypervisor (such as kvm-intel) is in VMX
    /// operation on this CPU.
    Busy,
    /// VMXON failed although the preconditions were checked.
    VmxonFailed,
    /// VMCLEAR or VMPTRLD of the VMCS failed.
    VmcsFailed,
}

impl WindowError {
    pub(crate) fn errno(self) -> Error {
        match self {
            WindowError::Busy => EBUSY,
            WindowError::VmxonFailed | WindowError::VmcsFailed => EIO,
        }
    }
}

impl kernel::fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WindowError::Busy => {
                "CR4.VMXE already set: another hypervisor (kvm-intel?) holds VMX on this CPU"
            }
            WindowError::VmxonFailed => "VMXON failed",
            WindowError::VmcsFailed => "VMCLEAR/VMPTRLD failed",
        })
    }
}

/// A 4 KiB VMX region (a VMXON region or a VMCS), tagged with the VMCS revision identifier.
///
/// # Invariants
///
/// `pa` is the physical address of `page`, whose first 4 bytes hold the revision identifier
/// of the CPU's VMCS layout (from IA32_VMX_BASIC) and whose other bytes start zeroed.
pub(crate) struct VmxRegion {
    // Owned so the page stays allocated while `pa` is handed to the CPU.
    _page: Page,
    pa: u64,
}

impl VmxRegion {
    pub(crate) fn new(caps: &VmxCaps) -> Result<Self> {
        let page = glue::zeroed_page()?;
        let rev = caps.revision_id().to_le_bytes();
        // SAFETY: `rev` is 4 readable bytes; the page is ours alone, nothing races.
        unsafe { page.write_raw(rev.as_ptr(), 0, rev.len())? };
        let pa = glue::page_phys(&page);
        // INVARIANT: `pa` is the page's physical address and the revision id is written.
        Ok(Self { _page: page, pa })
    }

    pub(crate) fn pa(&self) -> u64 {
        self.pa
    }
}

/// This CPU is in VMX root operation while the value lives.
///
/// # Invariants
///
/// VMXON succeeded with CR4 = `saved_cr4 | CR4_VMXE`; interrupts stay off for `'irq`; on
/// drop the CPU leaves VMX operation and CR4 gets back `saved_cr4`, before the borrowed
/// [`IrqsOff`] can re-enable interrupts.
pub(crate) struct VmxRoot<'irq> {
    saved_cr4: u64,
    _irqs: PhantomData<&'irq IrqsOff>,
}

impl<'irq> VmxRoot<'irq> {
    /// Enters VMX root operation on this CPU using `vmxon` as the VMXON region.
    ///
    /// The region must outlive the window, which the shared lifetime ensures.
    pub(crate) fn enter(_irqs: &'irq IrqsOff, vmxon: &'irq VmxRegion) -> Result<Self, WindowError> {
        let cr4 = insn::read_cr4();
        if cr4 & CR4_VMXE != 0 {
            return Err(WindowError::Busy);
        }
        // SAFETY: Interrupts are off (we hold `_irqs`) and CR4 is restored below on failure
        // or in `drop` before they can come back on. Only VMXE changes.
        unsafe { insn::write_cr4(cr4 | CR4_VMXE) };
        // SAFETY: Interrupts are off, CR4.VMXE is set, feature control and fixed bits were
        // checked at load, and the region is a valid, tagged page that outlives the window.
        if let Err(VmFail) = unsafe { insn::vmxon(vmxon.pa()) } {
            // SAFETY: Restores the exact value read above, interrupts still off.
            unsafe { insn::write_cr4(cr4) };
            return Err(WindowError::VmxonFailed);
        }
        // INVARIANT: VMXON succeeded with CR4 = cr4 | VMXE.
        Ok(Self {
            saved_cr4: cr4,
            _irqs: PhantomData,
        })
    }

    /// Makes `vmcs` the current VMCS (after clearing it, so the next entry is a VMLAUNCH).
    pub(crate) fn load<'w>(&'w self, vmcs: &'w VmxRegion) -> Result<CurrentVmcs<'w>, WindowError> {
        // SAFETY: We are in VMX root operation (type invariant) and `vmcs` is a tagged page.
        unsafe { insn::vmclear(vmcs.pa()) }.map_err(|_| WindowError::VmcsFailed)?;
        // SAFETY: As above; the VMCS was just cleared so it is current nowhere else.
        unsafe { insn::vmptrld(vmcs.pa()) }.map_err(|_| WindowError::VmcsFailed)?;
        // INVARIANT: `vmcs` is now current.
        Ok(CurrentVmcs {
            pa: vmcs.pa(),
            failed: Cell::new(false),
            _root: PhantomData,
        })
    }
}

impl Drop for VmxRoot<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the CPU is in VMX root operation with interrupts off.
        unsafe { insn::vmxoff() };
        // SAFETY: Restores the value the kernel had, interrupts still off.
        unsafe { insn::write_cr4(self.saved_cr4) };
    }
}

/// A VMCS is current on this CPU while the value lives; it is cleared on drop so the vCPU
/// may run on another CPU next time.
///
/// # Invariants
///
/// The VMCS at `pa` was made current by VMPTRLD inside the borrowed [`VmxRoot`].
pub(crate) struct CurrentVmcs<'w> {
    pa: u64,
    failed: Cell<bool>,
    _root: PhantomData<&'w VmxRoot<'w>>,
}

impl CurrentVmcs<'_> {
    /// Reads a field. Fields are constants of [`super::vmcs`], valid on every CPU with VMX,
    /// so a failure is a bug: it reads as 0 and is remembered (see [`Self::failed`]).
    pub(crate) fn read<W: Width>(&self, field: Field<W>) -> W::Value {
        // SAFETY: A VMCS is current (type invariant).
        let v = unsafe { insn::vmread(field.encoding()) }.unwrap_or_else(|_| {
            self.failed.set(true);
            0
        });
        W::from_raw(v)
    }

    /// Writes a field; a failure is remembered as for [`Self::read`].
    ///
    /// Host-state fields are written only by the vCPU's host-state setup, from this CPU's
    /// real registers.
    pub(crate) fn write<W: Width>(&self, field: Field<W>, value: W::Value) {
        // SAFETY: A VMCS is current (type invariant); see above for host-state fields.
        if unsafe { insn::vmwrite(field.encoding(), W::to_raw(value)) }.is_err() {
            self.failed.set(true);
        }
    }

    /// INVVPID (the CPU is in VMX root operation while a VMCS is current). A failure (a
    /// type the CPU lacks) is remembered as for [`Self::read`]: the vCPU then ends the
    /// window instead of entering with translations it meant to drop.
    pub(crate) fn invvpid(&self, kind: InvvpidKind, vpid: u16, linear: u64) {
        // SAFETY: VMX root operation: the root this VMCS borrows outlives it.
        if unsafe { insn::invvpid(kind, vpid, linear) }.is_err() {
            self.failed.set(true);
        }
    }

    /// Whether a VMREAD, VMWRITE or INVVPID failed since the VMCS was loaded.
    pub(crate) fn failed(&self) -> bool {
        self.failed.get()
    }
}

impl Drop for CurrentVmcs<'_> {
    fn drop(&mut self) {
        // SAFETY: In VMX root operation (the root outlives us) with this VMCS current. A
        // failure here would mean a corrupted VMCS pointer, which the invariant excludes.
        let _ = unsafe { insn::vmclear(self.pa) };
    }
}

/// What one probe window saw: used by the load-time probe and the debugfs trigger.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WindowReport {
    pub(crate) cpu: u32,
    pub(crate) cr4_before: u64,
    pub(crate) cr4_after: u64,
    pub(crate) result: Option<Result<(), WindowError>>,
}

impl WindowReport {
    pub(crate) fn cr4_restored(&self) -> bool {
        self.cr4_before == self.cr4_after
    }
}

/// Opens a window on this CPU (VMXON, VMCLEAR + VMPTRLD of `vmcs` if given, VMCLEAR,
/// VMXOFF) and reports what happened and whether CR4 came back unchanged.
pub(crate) fn probe(irqs: &IrqsOff, vmxon: &VmxRegion, vmcs: Option<&VmxRegion>) -> WindowReport {
    let cr4_before = insn::read_cr4();
    let result = VmxRoot::enter(irqs, vmxon).and_then(|root| match vmcs {
        Some(vmcs) => root.load(vmcs).map(drop),
        None => Ok(()),
    });
    WindowReport {
        cpu: irqs.cpu(),
        cr4_before,
        cr4_after: insn::read_cr4(),
        result: Some(result),
    }
}
