// SPDX-License-Identifier: GPL-2.0

//! Safe Rust faces of the helpers in `glue.c` (static-inline kernel functions Rust cannot
//! call through `bindings`).

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::{bindings, page::Page, prelude::*};

extern "C" {
    fn shadowvm_irq_save() -> usize;
    fn shadowvm_irq_restore(flags: usize);
    fn shadowvm_rdmsr_safe(msr: u32, val: *mut u64) -> i32;
    // `struct page` is opaque here (its Rust binding is not FFI-safe by value).
    fn shadowvm_page_to_phys(page: *mut c_void) -> u64;
    fn shadowvm_alloc_table_page(low: bool) -> *mut c_void;
    fn shadowvm_free_table_page(virt: *mut c_void);
    fn shadowvm_alloc_guest_page() -> *mut c_void;
    fn shadowvm_free_guest_page(page: *mut c_void);
    fn shadowvm_available_memory_bytes() -> u64;
    fn shadowvm_virt_to_phys(virt: *mut c_void) -> u64;
    fn shadowvm_page_address(page: *mut c_void) -> *mut c_void;
    fn shadowvm_fpu_begin();
    fn shadowvm_fpu_end();
    fn shadowvm_restore_host_descriptors();
    fn shadowvm_need_resched() -> bool;
    fn shadowvm_cond_resched();
    fn shadowvm_jiffies() -> usize;
    fn shadowvm_on_each_cpu(func: unsafe extern "C" fn(*mut c_void), info: *mut c_void);
    fn shadowvm_fred_enabled() -> bool;
    fn shadowvm_barrier_on_vm_switch(vm: u64);
    fn shadowvm_raise_nmi();
    fn shadowvm_machine_check();
    fn shadowvm_load_user_segments(fs: u16, gs: u16, fs_base: u64);
    // `struct miscdevice` and `struct file` are opaque here (not FFI-safe by value).
    fn shadowvm_misc_set_owner(misc: *mut c_void);
    fn shadowvm_file_pins_module(file: *mut c_void) -> bool;
}

/// Local interrupts are disabled on this CPU while this value lives.
///
/// Code that must not be interrupted (the VMX window) takes a `&IrqsOff` as proof.
///
/// # Invariants
///
/// Local interrupts are off for the lifetime of the value. `flags`, when present, holds
/// the interrupt state saved when the value was created; it is restored when the value is
/// dropped, on the same CPU (the type is neither `Send` nor `Sync`, and with interrupts off
/// the task cannot migrate). `None` means the context (a cross-CPU call) disabled them and
/// will restore them itself.
pub(crate) struct IrqsOff {
    flags: Option<usize>,
    _not_send: PhantomData<*mut ()>,
}

impl IrqsOff {
    /// Disables local interrupts, remembering whether they were on.
    pub(crate) fn save() -> Self {
        // SAFETY: local_irq_save has no preconditions.
        let flags = unsafe { shadowvm_irq_save() };
        // INVARIANT: interrupts are now off and `flags` is the state just saved.
        Self {
            flags: Some(flags),
            _not_send: PhantomData,
        }
    }

    /// The CPU this code runs on (stable while interrupts are off).
    pub(crate) fn cpu(&self) -> u32 {
        // With interrupts off the task cannot migrate: the id is stable while `self` lives.
        kernel::cpu::CpuId::current().as_u32()
    }
}

impl Drop for IrqsOff {
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            // SAFETY: By the type invariant, `flags` was saved on this CPU by `save`.
            unsafe { shadowvm_irq_restore(flags) };
        }
    }
}

/// `EOPNOTSUPP`, which the 7.2 kernel crate does not name.
pub(crate) fn eopnotsupp() -> Error {
    Error::from_errno(-(bindings::EOPNOTSUPP as i32))
}

/// Reads an MSR, returning `None` if the CPU does not implement it (the #GP is caught).
pub(crate) fn rdmsr(msr: u32) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: `v` is a valid location for the result; rdmsrq_safe catches the #GP of a
    // missing MSR through the exception table.
    let rc = unsafe { shadowvm_rdmsr_safe(msr, &mut v) };
    (rc == 0).then_some(v)
}

/// The host-physical address of a page.
pub(crate) fn page_phys(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for the lifetime of `page`.
    unsafe { shadowvm_page_to_phys(page.as_ptr().cast()) }
}

/// Runs `f(data)` on every online CPU with interrupts disabled and waits for all of them.
///
/// `f` runs in interrupt context on the other CPUs, so it must not sleep; `T: Sync` because
/// all CPUs see `data` at once.
pub(crate) fn on_each_cpu<T: Sync>(data: &T, f: fn(&T, &IrqsOff)) {
    struct Call<'a, T> {
        data: &'a T,
        f: fn(&T, &IrqsOff),
    }
    /// # Safety
    ///
    /// `info` points to a `Call<'_, T>` that stays alive until this returns.
    unsafe extern "C" fn trampoline<T>(info: *mut c_void) {
        // SAFETY: `info` is the `Call` below, alive until on_each_cpu returns (it waits).
        let call = unsafe { &*info.cast::<Call<'_, T>>() };
        // INVARIANT: on_each_cpu runs its callback with interrupts disabled and restores
        // them itself.
        let irqs = IrqsOff {
            flags: None,
            _not_send: PhantomData,
        };
        (call.f)(call.data, &irqs);
    }
    let call = Call { data, f };
    // SAFETY: `trampoline::<T>` matches `call`'s type; with wait=1 the call completes on all
    // CPUs before `call` goes out of scope.
    unsafe {
        shadowvm_on_each_cpu(
            trampoline::<T>,
            core::ptr::from_ref(&call).cast_mut().cast(),
        )
    };
}

/// Allocates a zeroed page, charged to the caller's memory cgroup.
pub(crate) fn zeroed_page() -> Result<Page> {
    Ok(Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?)
}

/// A zeroed page of guest RAM charged to the caller's memory cgroup, or `None` when memory
/// (or the cgroup's limit) is short: never the OOM killer, which would pick a task by its
/// RSS, and guest RAM is in none.
pub(crate) fn alloc_guest_page() -> Option<NonNull<bindings::page>> {
    // SAFETY: No preconditions; may sleep, and callers run in process context.
    NonNull::new(unsafe { shadowvm_alloc_guest_page() }.cast())
}

/// Frees a page from [`alloc_guest_page`].
///
/// # Safety
///
/// `page` came from [`alloc_guest_page`], and its owner releases it once and last.
pub(crate) unsafe fn free_guest_page(page: NonNull<bindings::page>) {
    // SAFETY: The caller passes its own reference to a page from `alloc_guest_page`.
    unsafe { shadowvm_free_guest_page(page.as_ptr().cast()) };
}

/// Memory the kernel estimates it could give out without swapping (MemAvailable), in bytes.
pub(crate) fn available_memory_bytes() -> u64 {
    // SAFETY: No preconditions.
    unsafe { shadowvm_available_memory_bytes() }
}

/// The kernel-virtual address of a page (never highmem on x86-64).
pub(crate) fn page_virt(page: &Page) -> *mut u8 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for the lifetime of `page`.
    unsafe { shadowvm_page_address(page.as_ptr().cast()).cast() }
}

/// A zeroed page for the MMU engine, outside any `Page` wrapper (the engine hands pages
/// back by address). `low` asks for one below 4 GiB. Sleeps; `None` when memory is short.
pub(crate) fn alloc_table_page(low: bool) -> Option<(*mut u8, u64)> {
    // SAFETY: No preconditions; may sleep, and callers run in process context.
    let virt = unsafe { shadowvm_alloc_table_page(low) };
    if virt.is_null() {
        return None;
    }
    // SAFETY: `virt` is a directly mapped kernel address just allocated.
    Some((virt.cast(), unsafe { shadowvm_virt_to_phys(virt) }))
}

/// Frees a page from [`alloc_table_page`]. Safe with interrupts off.
///
/// # Safety
///
/// `virt` came from [`alloc_table_page`] and is not used afterwards.
pub(crate) unsafe fn free_table_page(virt: *mut u8) {
    // SAFETY: The caller guarantees `virt` is a page of ours no longer in use.
    unsafe { shadowvm_free_table_page(virt.cast()) }
}

/// The task may use the FPU registers for the guest while this value lives (the kernel
/// saved the task's own state); preemption is off.
///
/// # Invariants
///
/// Created by one kernel_fpu_begin(); dropped by one kernel_fpu_end() on the same CPU.
pub(crate) struct FpuOwned(PhantomData<*mut ()>);

impl FpuOwned {
    pub(crate) fn begin() -> Self {
        // SAFETY: Process context; balanced by `drop`.
        unsafe { shadowvm_fpu_begin() };
        Self(PhantomData)
    }
}

impl Drop for FpuOwned {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, kernel_fpu_begin() was called once.
        unsafe { shadowvm_fpu_end() };
    }
}

/// Reloads the GDT limit and invalidates the cached TSS limit after VM exits.
pub(crate) fn restore_host_descriptors(_irqs: &IrqsOff) {
    // SAFETY: Interrupts (hence preemption) are off, as both helpers require.
    unsafe { shadowvm_restore_host_descriptors() }
}

pub(crate) fn need_resched() -> bool {
    // SAFETY: No preconditions.
    unsafe { shadowvm_need_resched() }
}

pub(crate) fn cond_resched() {
    // SAFETY: Process context with no locks that forbid sleeping (callers ensure).
    unsafe { shadowvm_cond_resched() }
}

pub(crate) fn jiffies() -> usize {
    // SAFETY: No preconditions.
    unsafe { shadowvm_jiffies() }
}

/// Whether the host delivers events through FRED (then an NMI cannot be re-raised with
/// `INT 2`).
pub(crate) fn fred_enabled() -> bool {
    // SAFETY: No preconditions.
    unsafe { shadowvm_fred_enabled() }
}

/// Issues an indirect branch prediction barrier if the guest about to run on this CPU
/// belongs to another VM than the last one (`vm` is a number never reused).
pub(crate) fn barrier_on_vm_switch(_irqs: &IrqsOff, vm: u64) {
    // SAFETY: Interrupts are off, so the per-CPU variable is this CPU's throughout.
    unsafe { shadowvm_barrier_on_vm_switch(vm) }
}

/// Hands an NMI that caused a VM exit to the host's NMI handler.
///
/// Only on non-FRED hosts: the module refuses to load on FRED hosts.
pub(crate) fn raise_nmi(_irqs: &IrqsOff) {
    // SAFETY: Interrupts are off, the host's state (descriptor tables, GS, CR4) is back,
    // and the host does not use FRED (checked at load), so INT 2 enters the NMI handler
    // through the IDT, which copes with that entry.
    unsafe { shadowvm_raise_nmi() }
}

/// Hands a machine check that caused a VM exit to the host's handler.
pub(crate) fn machine_check(_irqs: &IrqsOff) {
    // SAFETY: Interrupts are off and the host's state is back, as do_machine_check
    // expects when called right after a VM exit (KVM does the same).
    unsafe { shadowvm_machine_check() }
}

/// Reloads the task's FS and GS selectors (nonzero ones) after a VM exit nulled them;
/// `fs_base` is the FS base to keep.
pub(crate) fn load_user_segments(_irqs: &IrqsOff, fs: u16, gs: u16, fs_base: u64) {
    // SAFETY: Interrupts are off; the selectors are the ones the CPU held before the
    // window (the kernel's loaders catch a selector that became invalid).
    unsafe { shadowvm_load_user_segments(fs, gs, fs_base) }
}

/// Makes the registered device's open files hold a reference on this module (the kernel
/// crate's miscdevice leaves `file_operations.owner` unset).
///
/// # Safety
///
/// `misc` is a registered miscdevice of this module, not yet opened by anyone who relies on
/// its old operations, and it stays registered while the module lives.
pub(crate) unsafe fn misc_set_owner(misc: *mut bindings::miscdevice) {
    // SAFETY: The caller guarantees `misc` is a live, registered miscdevice of this module.
    unsafe { shadowvm_misc_set_owner(misc.cast()) }
}

/// Whether the open `file` holds a reference on this module.
pub(crate) fn file_pins_module(file: &kernel::fs::File) -> bool {
    // SAFETY: `file.as_ptr()` is a valid `struct file` for the duration of the call.
    unsafe { shadowvm_file_pins_module(file.as_ptr().cast()) }
}
