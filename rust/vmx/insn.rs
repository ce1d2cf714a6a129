// SPDX-License-Identifier: GPL-2.0

//! Raw VMX and control-register instructions.
//!
//! Thin wrappers, one instruction each. VMX instructions report failure through RFLAGS
//! (CF = VMfailInvalid, ZF = VMfailValid); both are folded into [`VmFail`]. The callers in
//! [`super::window`] establish the preconditions (interrupts off, CR4.VMXE set, a valid
//! region) that make these instructions fault-free.

use core::arch::asm;

/// A VMX instruction failed (VMfailInvalid or VMfailValid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmFail;

/// Folds the "below or equal" condition (CF or ZF) after a VMX instruction into a result.
fn vm_result(failed: u8) -> Result<(), VmFail> {
    if failed != 0 {
        Err(VmFail)
    } else {
        Ok(())
    }
}

/// Reads CR4 from the hardware (not the kernel's per-CPU shadow).
pub(crate) fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: Reading CR4 has no side effects and is allowed at CPL0.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects (CR4.TSD only matters at CPL3).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads debug register `N` (0-3, 6 or 7).
pub(crate) fn read_dr<const N: u8>() -> u64 {
    let v: u64;
    // SAFETY: Reading a debug register has no side effects at CPL0.
    unsafe {
        asm!("mov {0}, dr{n}", out(reg) v, n = const N, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes debug register `N` (0-3, 6 or 7).
///
/// # Safety
///
/// Interrupts are off and the host's value is written back before they come on (the
/// kernel's breakpoint code owns these registers), or `v` is the host's own value. For
/// DR7, no breakpoint may be enabled on an address the host uses in between.
pub(crate) unsafe fn write_dr<const N: u8>(v: u64) {
    // SAFETY: The caller guarantees the preconditions above.
    unsafe {
        asm!("mov dr{n}, {0}", in(reg) v, n = const N, options(nomem, nostack, preserves_flags))
    };
}

/// Writes CR4.
///
/// # Safety
///
/// Interrupts must be disabled, and the caller must restore the kernel's value before they
/// are enabled again: the kernel keeps a per-CPU shadow of CR4 that must match the hardware
/// whenever kernel code that may rewrite CR4 can run. `v` must differ from the current value
/// only in CR4.VMXE.
pub(crate) unsafe fn write_cr4(v: u64) {
    // SAFETY: The caller guarantees that only VMXE changes and that the shadow is restored.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Enters VMX root operation with the VMXON region at physical address `pa`.
///
/// # Safety
///
/// Interrupts are disabled, CR4.VMXE is set, IA32_FEATURE_CONTROL allows VMX outside SMX,
/// CR0/CR4 satisfy the VMX fixed bits, and `pa` is a 4 KiB-aligned page holding the VMCS
/// revision identifier that stays allocated until VMXOFF.
pub(crate) unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: The caller guarantees the preconditions above; the operand is a memory
    // location holding the region's physical address.
    unsafe {
        asm!("vmxon [{pa}]", "setbe {f}", pa = in(reg) &pa, f = out(reg_byte) failed,
             options(nostack))
    };
    vm_result(failed)
}

/// Leaves VMX root operation.
///
/// # Safety
///
/// The CPU is in VMX root operation entered by [`vmxon`], with interrupts disabled.
pub(crate) unsafe fn vmxoff() {
    // SAFETY: The caller guarantees VMX root operation; VMXOFF has no memory operand.
    unsafe { asm!("vmxoff", options(nostack)) };
}

/// Clears the VMCS at `pa`: writes its cached state to memory and marks it inactive.
///
/// # Safety
///
/// VMX root operation; `pa` is a page holding a VMCS with the right revision identifier.
pub(crate) unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: See the function's safety requirements.
    unsafe {
        asm!("vmclear [{pa}]", "setbe {f}", pa = in(reg) &pa, f = out(reg_byte) failed,
             options(nostack))
    };
    vm_result(failed)
}

/// Makes the VMCS at `pa` current on this CPU.
///
/// # Safety
///
/// VMX root operation; `pa` is a cleared or previously loaded VMCS page with the right
/// revision identifier, not current on any other CPU.
pub(crate) unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: See the function's safety requirements.
    unsafe {
        asm!("vmptrld [{pa}]", "setbe {f}", pa = in(reg) &pa, f = out(reg_byte) failed,
             options(nostack))
    };
    vm_result(failed)
}

/// Reads a field of the current VMCS.
///
/// # Safety
///
/// VMX root operation with a current VMCS.
pub(crate) unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let failed: u8;
    let v: u64;
    // SAFETY: See the function's safety requirements.
    unsafe {
        asm!("vmread {v}, {f}", "setbe {fl}", f = in(reg) u64::from(field), v = out(reg) v,
             fl = out(reg_byte) failed, options(nostack))
    };
    vm_result(failed).map(|()| v)
}

/// Writes a field of the current VMCS.
///
/// # Safety
///
/// VMX root operation with a current VMCS. Host-state fields must describe this CPU's
/// real state (they are loaded at every VM exit).
pub(crate) unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: See the function's safety requirements.
    unsafe {
        asm!("vmwrite {f}, {v}", "setbe {fl}", f = in(reg) u64::from(field), v = in(reg) value,
             fl = out(reg_byte) failed, options(nostack))
    };
    vm_result(failed)
}

/// INVVPID types (SDM vol. 3C, "INVVPID"; which ones a CPU has: IA32_VMX_EPT_VPID_CAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum InvvpidKind {
    /// The translations of one linear address (canonical) for one VPID.
    IndividualAddress = 0,
    /// Every translation tagged with one VPID.
    SingleContext = 1,
    /// Every translation tagged with any VPID but 0 (the host's).
    AllContext = 2,
}

/// Invalidates the TLB and paging-structure-cache entries of `vpid` that `kind` selects
/// (`linear` for [`InvvpidKind::IndividualAddress`], ignored otherwise).
///
/// # Safety
///
/// VMX root operation. A failure (a type the CPU lacks, VPID 0, a non-canonical address)
/// is reported, not faulted on.
pub(crate) unsafe fn invvpid(kind: InvvpidKind, vpid: u16, linear: u64) -> Result<(), VmFail> {
    let failed: u8;
    // Bits 15:0 the VPID, 63:16 reserved (0), 127:64 the linear address.
    let desc: [u64; 2] = [u64::from(vpid), linear];
    // SAFETY: See the function's safety requirements; the descriptor is 16 readable bytes
    // that live across the instruction.
    unsafe {
        asm!("invvpid {k}, xmmword ptr [{d}]", "setbe {f}", k = in(reg) kind as u64,
             d = in(reg) desc.as_ptr(), f = out(reg_byte) failed, options(nostack))
    };
    vm_result(failed)
}
