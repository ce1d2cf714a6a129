// SPDX-License-Identifier: GPL-2.0

//! A VM: one open of `/dev/shadowvm`. Guest memory ([`GuestRam`]), the run page, the vCPU,
//! the ioctl interface (see `Documentation/uapi.md`) and the statistics.

use crate::ram::GuestRam;
use crate::uapi;
use crate::vcpu::Vcpu;
use crate::vmx::exit::{exit_reason_name, EXIT_REASONS};
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    mm::virt::VmaNew,
    new_mutex,
    page::Page,
    prelude::*,
    sync::Mutex,
    task::Kuid,
    uaccess::{UserPtr, UserSlice},
};

/// The one-page structure shared with userspace through mmap.
///
/// # Invariants
///
/// `page` is zero-initialised and then holds a `uapi::Run` at offset 0; userspace may
/// change it at any time, so it is copied in and out whole, never referenced.
struct RunPage {
    page: Page,
}

impl RunPage {
    fn new() -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
        let me = Self { page };
        let run = uapi::Run {
            version: uapi::SHADOWVM_RUN_VERSION,
            size: core::mem::size_of::<uapi::Run>() as u32,
            ..Default::default()
        };
        me.store(&run);
        Ok(me)
    }

    fn load(&self) -> uapi::Run {
        let mut run = uapi::Run::default();
        // SAFETY: The page holds a `Run` (any bit pattern is valid: plain integers) and is
        // 4 KiB aligned; `run` is a `Run` on our stack, and both are whole words long.
        unsafe {
            copy_words(
                crate::glue::page_virt(&self.page).cast::<u64>(),
                core::ptr::addr_of_mut!(run).cast::<u64>(),
                RUN_WORDS,
            )
        };
        run
    }

    fn store(&self, run: &uapi::Run) {
        // SAFETY: As in `load`, the other way round.
        unsafe {
            copy_words(
                core::ptr::addr_of!(*run).cast::<u64>(),
                crate::glue::page_virt(&self.page).cast::<u64>(),
                RUN_WORDS,
            )
        };
    }

    /// Writes back what the module owns after RUN: the exit and the interrupt status.
    /// `immediate_exit` and `request_interrupt_window` are userspace's alone; another thread
    /// may set them while RUN runs, and writing back the copy taken at entry would lose that.
    fn store_exit(&self, run: &uapi::Run) {
        let p = crate::glue::page_virt(&self.page).cast::<uapi::Run>();
        // SAFETY: As in `load`; the fields are in bounds of the page, written one by one.
        unsafe {
            core::ptr::addr_of_mut!((*p).version).write_volatile(uapi::SHADOWVM_RUN_VERSION);
            core::ptr::addr_of_mut!((*p).size)
                .write_volatile(core::mem::size_of::<uapi::Run>() as u32);
            core::ptr::addr_of_mut!((*p).ready_for_interrupt_injection)
                .write_volatile(run.ready_for_interrupt_injection);
            core::ptr::addr_of_mut!((*p).if_flag).write_volatile(run.if_flag);
            core::ptr::addr_of_mut!((*p).exit_reason).write_volatile(run.exit_reason);
            copy_words(
                core::ptr::addr_of!(run.exit).cast::<u64>(),
                core::ptr::addr_of_mut!((*p).exit).cast::<u64>(),
                EXIT_AREA_WORDS,
            );
        }
    }
}

/// `Run` and its exit area in 8-byte words: they are copied a word at a time, since a
/// volatile copy of the whole structure compiles to one access per byte of the exit area
/// (about 1,000 instructions at each RUN, 300 more at its end).
const RUN_WORDS: usize = core::mem::size_of::<uapi::Run>() / 8;
const EXIT_AREA_WORDS: usize = uapi::SHADOWVM_EXIT_AREA_SIZE / 8;
const _: () = assert!(
    core::mem::size_of::<uapi::Run>() % 8 == 0
        && core::mem::align_of::<uapi::Run>() >= 8
        && core::mem::size_of::<uapi::ExitArea>() == EXIT_AREA_WORDS * 8
        && core::mem::align_of::<uapi::ExitArea>() >= 8
);

/// Copies `words` 8-byte words from `src` to `dst` with volatile accesses on both sides
/// (one of them is the page userspace may write at any time).
///
/// # Safety
///
/// `src` and `dst` are 8-byte aligned, valid for `words` words of reads and writes
/// respectively, hold plain integers (any bit pattern valid), and do not overlap.
unsafe fn copy_words(src: *const u64, dst: *mut u64, words: usize) {
    for i in 0..words {
        // SAFETY: `i < words`, in bounds and aligned by the caller's guarantee.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
}

/// Counters of one VM, for GET_STATS.
fn stat_entries(vcpu: Option<&Vcpu>) -> Result<KVec<uapi::StatEntry>> {
    let mut out = KVec::new();
    let mut push = |name: &str, value: u64| -> Result {
        let mut e = uapi::StatEntry {
            name: [0; uapi::SHADOWVM_STAT_NAME_LEN],
            value,
        };
        let n = core::cmp::min(name.len(), uapi::SHADOWVM_STAT_NAME_LEN - 1);
        e.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        out.push(e, GFP_KERNEL)?;
        Ok(())
    };
    let Some(v) = vcpu else {
        return Ok(KVec::new());
    };
    let mut name = [0u8; uapi::SHADOWVM_STAT_NAME_LEN];
    for i in 0..EXIT_REASONS {
        let count = v.stats().exits[i];
        if count == 0 {
            continue;
        }
        let n = join(&mut name, "exits.", exit_reason_name(i));
        push(n, count)?;
    }
    for (k, value) in v.mmu().counters() {
        let n = join(&mut name, "mmu.", k);
        push(n, value)?;
    }
    push("mmu.shadow_pages_now", v.mmu().shadow_pages() as u64)?;
    push("mmu.cached_roots_now", v.mmu().cached_roots() as u64)?;
    push("run.windows", v.stats().windows)?;
    push("run.entries", v.stats().entries)?;
    push("run.cache_refills", v.stats().cache_refills)?;
    push("run.injected_exceptions", v.stats().injected_exceptions)?;
    push("run.emulated_pt_writes", v.stats().emulated_pt_writes)?;
    push("run.vpid", u64::from(v.vpid()))?;
    push("run.invvpid_context", v.stats().invvpid_context)?;
    push("run.invvpid_address", v.stats().invvpid_address)?;
    Ok(out)
}

/// `prefix` + `name` in `buf`, as a str (both are ASCII; cut to fit).
fn join<'a>(buf: &'a mut [u8; uapi::SHADOWVM_STAT_NAME_LEN], prefix: &str, name: &str) -> &'a str {
    let mut n = 0;
    for b in Iterator::chain(prefix.bytes(), name.bytes()).take(buf.len() - 1) {
        buf[n] = b;
        n += 1;
    }
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}

// Marks uapi structures as plain data, copied whole to and from userspace.
macro_rules! plain_data {
    ($($t:ty),*) => {$(
        // SAFETY: The uapi structures are `repr(C)` plain integers with explicit padding
        // fields (checked by the layout tests in rust/uapi), so every byte pattern is a
        // valid value.
        unsafe impl kernel::transmute::FromBytes for $t {}
        // SAFETY: As above, and no byte is uninitialised padding.
        unsafe impl kernel::transmute::AsBytes for $t {}
    )*};
}
plain_data!(
    uapi::Memory,
    uapi::Regs,
    uapi::Sregs,
    uapi::Stats,
    uapi::StatEntry,
    uapi::MemoryRegion,
    uapi::Interrupt,
    uapi::VcpuEvents
);
plain_data!(uapi::Msrs, uapi::MsrEntry, uapi::Cpuid, uapi::CpuidEntry);

/// The capabilities of user-space MSR exits, CPUID and the TSC: 1 each.
fn msr_cpuid_tsc_cap(cap: usize) -> Option<isize> {
    match u32::try_from(cap).ok()? {
        uapi::SHADOWVM_CAP_USER_MSR | uapi::SHADOWVM_CAP_CPUID | uapi::SHADOWVM_CAP_TSC => Some(1),
        _ => None,
    }
}

/// `hdr.entries` as a user slice of `count` elements of `T`.
fn user_array<T>(entries: u64, count: usize) -> Result<UserSlice> {
    let bytes = count.checked_mul(core::mem::size_of::<T>()).ok_or(EINVAL)?;
    Ok(UserSlice::new(UserPtr::from_addr(entries as usize), bytes))
}

/// The `Msrs` header at `arg` and its entries (`EINVAL` for flags, too many entries, or a
/// nonzero reserved field).
fn read_msrs(arg: usize) -> Result<(uapi::Msrs, KVec<uapi::MsrEntry>)> {
    let hdr: uapi::Msrs = user_copy_in(arg)?;
    if hdr.flags != 0 || hdr.nmsrs > uapi::SHADOWVM_MSRS_MAX {
        return Err(EINVAL);
    }
    let n = hdr.nmsrs as usize;
    let mut r = user_array::<uapi::MsrEntry>(hdr.entries, n)?.reader();
    let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        let e: uapi::MsrEntry = r.read()?;
        if e.reserved != 0 {
            return Err(EINVAL);
        }
        entries.push(e, GFP_KERNEL)?;
    }
    Ok((hdr, entries))
}

/// GET_SUPPORTED_CPUID: the entries, or `E2BIG` with `nent` set to how many there are.
fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let hdr: uapi::Cpuid = user_copy_in(arg)?;
    if hdr.flags != 0 {
        return Err(EINVAL);
    }
    let entries = Vcpu::supported_cpuid()?;
    let nent = entries.len() as u32;
    user_copy_out(arg, &uapi::Cpuid { nent, ..hdr })?;
    if hdr.nent < nent {
        return Err(E2BIG);
    }
    let mut w = user_array::<uapi::CpuidEntry>(hdr.entries, entries.len())?.writer();
    for e in entries.iter() {
        w.write(e)?;
    }
    Ok(0)
}

/// GET_TSC_KHZ: the host's TSC frequency, which the guest's TSC runs at; `EIO` if the
/// kernel did not calibrate it.
fn get_tsc_khz() -> Result<isize> {
    // SAFETY: `tsc_khz` is written during boot calibration and only read afterwards.
    let khz = unsafe { kernel::bindings::tsc_khz };
    if khz == 0 {
        return Err(EIO);
    }
    Ok(khz as isize)
}

/// Users with VMs open at once that the per-user count can track (more: `EMFILE`).
const USER_SLOTS: usize = 256;

/// Open VMs, all users together and per user (by effective uid at open). Fixed-size: a
/// static is never dropped, so a heap buffer here would outlive the module.
pub(crate) struct VmCounts {
    total: u64,
    users: [Option<(Kuid, u64)>; USER_SLOTS],
}

kernel::sync::global_lock! {
    // SAFETY: Initialised in the module initialiser, before the device is registered.
    pub(crate) unsafe(uninit) static VM_COUNTS: Mutex<VmCounts> =
        VmCounts { total: 0, users: [None; USER_SLOTS] };
}

/// One counted VM; the counts drop with it.
///
/// # Invariants
///
/// Each value accounts for exactly one VM in [`VM_COUNTS`]: one in `total` and one in the
/// slot of `uid`.
struct VmSlot {
    uid: Kuid,
}

impl VmSlot {
    /// Counts a VM for `uid`: `EMFILE` beyond `max_vms` in all or `max_vms_per_user` for
    /// this user (or with `USER_SLOTS` other users holding VMs).
    fn take(uid: Kuid) -> Result<Self> {
        let mut guard = VM_COUNTS.lock();
        let counts = &mut *guard;
        if counts.total >= crate::max_vms() {
            return Err(EMFILE);
        }
        match counts.users.iter_mut().flatten().find(|(u, _)| *u == uid) {
            Some((_, n)) if *n >= crate::max_vms_per_user() => return Err(EMFILE),
            Some((_, n)) => *n = n.saturating_add(1),
            None => {
                let free = counts
                    .users
                    .iter_mut()
                    .find(|s| s.is_none())
                    .ok_or(EMFILE)?;
                *free = Some((uid, 1));
            }
        }
        counts.total = counts.total.saturating_add(1);
        // INVARIANT: both counts above are ours.
        Ok(Self { uid })
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        let mut guard = VM_COUNTS.lock();
        let counts = &mut *guard;
        counts.total = counts.total.saturating_sub(1);
        if let Some(slot) = counts
            .users
            .iter_mut()
            .find(|s| matches!(s, Some((u, _)) if *u == self.uid))
        {
            match slot {
                Some((_, n)) if *n > 1 => *n -= 1,
                _ => *slot = None,
            }
        }
    }
}

/// Everything of a VM behind its lock.
struct Vm {
    ram: GuestRam,
    vcpu: Option<KBox<Vcpu>>,
}

/// One open of `/dev/shadowvm`: one VM.
#[pin_data]
pub(crate) struct VmFile {
    #[pin]
    vm: Mutex<Vm>,
    run: RunPage,
    /// Set while a thread is in RUN, so a second one gets EBUSY instead of waiting.
    running: AtomicU8,
    _slot: VmSlot,
}

fn user_copy_in<T: kernel::transmute::FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .reader()
        .read::<T>()
}

fn user_copy_out<T: kernel::transmute::AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .writer()
        .write::<T>(v)
}

impl VmFile {
    /// SET_MEMORY: slot 0 at guest-physical 0.
    fn set_memory(&self, arg: usize) -> Result<isize> {
        let m: uapi::Memory = user_copy_in(arg)?;
        if !m.is_valid() {
            return Err(EINVAL);
        }
        self.add_memory_region(&uapi::MemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            size: m.size,
        })
    }

    fn set_memory_region(&self, arg: usize) -> Result<isize> {
        let region: uapi::MemoryRegion = user_copy_in(arg)?;
        self.add_memory_region(&region)
    }

    fn add_memory_region(&self, region: &uapi::MemoryRegion) -> Result<isize> {
        let mut guard = self.vm.lock();
        let vm = &mut *guard;
        // The engine's per-gfn index first: if it cannot grow, nothing changes.
        if let (Some(vcpu), true) = (vm.vcpu.as_mut(), region.is_valid()) {
            let end = region.guest_phys_addr.saturating_add(region.size);
            vcpu.size_mmu(vm.ram.frame_limit().max(end >> 12))?;
        }
        vm.ram.add_slot(region, crate::max_memory_bytes())?;
        if let Some(vcpu) = vm.vcpu.as_mut() {
            vcpu.memory_changed(&vm.ram);
        }
        Ok(0)
    }

    /// CHECK_CAP: the value of capability `cap`; `EINVAL` for one this module does not
    /// know.
    fn check_cap(&self, cap: usize) -> Result<isize> {
        let cap = u32::try_from(cap).map_err(|_| EINVAL)?;
        let value: u64 = match cap {
            uapi::SHADOWVM_CAP_MEMORY_SLOTS => uapi::SHADOWVM_MEMORY_SLOTS.into(),
            uapi::SHADOWVM_CAP_MAX_MEMORY_MB => crate::max_memory_bytes() >> 20,
            uapi::SHADOWVM_CAP_FPU => 1,
            uapi::SHADOWVM_CAP_IRQ => crate::vcpu::irq::irq_cap() as u64,
            _ => return msr_cpuid_tsc_cap(cap as usize).ok_or(EINVAL),
        };
        // The ioctl return value is an int: saturate (max_memory_mb could be set absurdly).
        Ok(isize::try_from(value.min(i32::MAX as u64)).unwrap_or(0))
    }

    fn create_vcpu(&self) -> Result<isize> {
        let mut vm = self.vm.lock();
        if vm.vcpu.is_some() {
            return Err(EEXIST);
        }
        if vm.ram.is_empty() {
            return Err(EINVAL);
        }
        let mut vcpu = Vcpu::new(crate::caps()?, crate::mmu_config())?;
        vcpu.size_mmu(vm.ram.frame_limit())?;
        vm.vcpu = Some(vcpu);
        Ok(0)
    }

    fn get_stats(&self, arg: usize) -> Result<isize> {
        let hdr: uapi::Stats = user_copy_in(arg)?;
        if hdr.flags != 0 {
            return Err(EINVAL);
        }
        let entries = {
            let vm = self.vm.lock();
            stat_entries(vm.vcpu.as_deref())?
        };
        let count = entries.len() as u32;
        let out = uapi::Stats { count, ..hdr };
        user_copy_out(arg, &out)?;
        if hdr.count < count {
            return Err(E2BIG);
        }
        let bytes = entries.len() * core::mem::size_of::<uapi::StatEntry>();
        let mut w = UserSlice::new(UserPtr::from_addr(hdr.entries as usize), bytes).writer();
        for e in entries.iter() {
            w.write(e)?;
        }
        Ok(0)
    }

    fn run(&self) -> Result<isize> {
        if self.running.swap(1, Ordering::Acquire) != 0 {
            return Err(EBUSY);
        }
        let r = (|| {
            let mut guard = self.vm.lock();
            let vm = &mut *guard;
            let (ram, Some(vcpu)) = (&vm.ram, vm.vcpu.as_mut()) else {
                return Err(EINVAL);
            };
            let mut run = self.run.load();
            let r = vcpu.run(ram, &mut run);
            // Whatever RUN returned with, as KVM's `post_kvm_run_save`.
            let (ready, if_flag) = vcpu.interrupt_status();
            run.ready_for_interrupt_injection = u8::from(ready);
            run.if_flag = u8::from(if_flag);
            self.run.store_exit(&run);
            r.map(|()| 0)
        })();
        self.running.store(0, Ordering::Release);
        r
    }

    // The FXSAVE image travels as bytes (`uapi::Fpu` is its only field): a 16-byte aligned
    // `uapi::Fpu` local would not be, on a kernel stack that is only 8-byte aligned.
    fn get_fpu(&self, arg: usize) -> Result<isize> {
        let mut image = [0u8; uapi::SHADOWVM_FXSAVE_SIZE];
        self.with_vcpu(|v| {
            image = *v.fpu_image();
            Ok(())
        })?;
        UserSlice::new(UserPtr::from_addr(arg), image.len())
            .writer()
            .write_slice(&image)?;
        Ok(0)
    }

    fn set_fpu(&self, arg: usize) -> Result<isize> {
        let mut image = [0u8; uapi::SHADOWVM_FXSAVE_SIZE];
        UserSlice::new(UserPtr::from_addr(arg), image.len())
            .reader()
            .read_slice(&mut image)?;
        self.with_vcpu(|v| {
            if v.set_fpu_image(&image) {
                Ok(0)
            } else {
                Err(EINVAL)
            }
        })
    }

    /// GET_MSRS: the number of entries read (up to the first MSR the module does not own);
    /// those entries are written back.
    fn get_msrs(&self, arg: usize) -> Result<isize> {
        let (hdr, mut entries) = read_msrs(arg)?;
        let n = self.with_vcpu(|v| Ok(v.get_msrs(&mut entries)))?;
        let mut w = user_array::<uapi::MsrEntry>(hdr.entries, n)?.writer();
        for e in entries.iter().take(n) {
            w.write(e)?;
        }
        Ok(n as isize)
    }

    /// SET_MSRS: the number of entries written (up to the first the module refuses).
    fn set_msrs(&self, arg: usize) -> Result<isize> {
        let (_, entries) = read_msrs(arg)?;
        let mut vm = self.vm.lock();
        let Vm { ram, vcpu: Some(v) } = &mut *vm else {
            return Err(EINVAL);
        };
        Ok(v.set_msrs(ram, &entries) as isize)
    }

    /// SET_CPUID: installs the table (see `Vcpu::set_cpuid`).
    fn set_cpuid(&self, arg: usize) -> Result<isize> {
        let hdr: uapi::Cpuid = user_copy_in(arg)?;
        if hdr.flags != 0 || hdr.nent > uapi::SHADOWVM_CPUID_MAX_ENTRIES {
            return Err(EINVAL);
        }
        let n = hdr.nent as usize;
        let mut r = user_array::<uapi::CpuidEntry>(hdr.entries, n)?.reader();
        let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            entries.push(r.read::<uapi::CpuidEntry>()?, GFP_KERNEL)?;
        }
        self.with_vcpu(|v| v.set_cpuid(&entries))?;
        Ok(0)
    }

    fn with_vcpu<R>(&self, f: impl FnOnce(&mut Vcpu) -> Result<R>) -> Result<R> {
        let mut vm = self.vm.lock();
        let vcpu = vm.vcpu.as_mut().ok_or(EINVAL)?;
        f(vcpu)
    }

    /// The interrupt ioctls (INTERRUPT, NMI, GET/SET_VCPU_EVENTS); `None` for other commands.
    fn irq_ioctl(&self, cmd: u32, arg: usize) -> Option<Result<isize>> {
        Some(match cmd {
            uapi::SHADOWVM_INTERRUPT => user_copy_in::<uapi::Interrupt>(arg)
                .and_then(|irq| self.with_vcpu(|v| v.queue_interrupt(&irq)))
                .map(|()| 0),
            uapi::SHADOWVM_NMI if arg != 0 => Err(EINVAL),
            uapi::SHADOWVM_NMI => self.with_vcpu(|v| v.queue_nmi()).map(|()| 0),
            uapi::SHADOWVM_GET_VCPU_EVENTS => self
                .with_vcpu(|v| Ok(v.events()))
                .and_then(|e| user_copy_out(arg, &e))
                .map(|()| 0),
            uapi::SHADOWVM_SET_VCPU_EVENTS => user_copy_in::<uapi::VcpuEvents>(arg)
                .and_then(|e| self.with_vcpu(|v| v.set_events(&e)))
                .map(|()| 0),
            _ => return None,
        })
    }
}

#[vtable]
impl MiscDevice for VmFile {
    type Ptr = Pin<KBox<Self>>;

    fn open(file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Pin<KBox<Self>>> {
        // An open that raced module initialisation holds no module reference: refuse it,
        // or rmmod could free the code this file runs.
        if !crate::glue::file_pins_module(file) {
            return Err(EAGAIN);
        }
        crate::caps()?;
        let slot = VmSlot::take(file.cred().euid())?;
        KBox::try_pin_init(
            try_pin_init!(VmFile {
                vm <- new_mutex!(Vm { ram: GuestRam::new(), vcpu: None }),
                run: RunPage::new()?,
                running: AtomicU8::new(0),
                _slot: slot,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    fn ioctl(me: Pin<&VmFile>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        // Commands without an argument structure take no argument.
        let no_arg = || if arg == 0 { Ok(()) } else { Err(EINVAL) };
        match cmd {
            uapi::SHADOWVM_GET_API_VERSION => {
                no_arg().map(|()| uapi::SHADOWVM_API_VERSION as isize)
            }
            uapi::SHADOWVM_SET_MEMORY => me.set_memory(arg),
            uapi::SHADOWVM_CREATE_VCPU => no_arg().and_then(|()| me.create_vcpu()),
            uapi::SHADOWVM_GET_REGS => {
                let r = me.with_vcpu(|v| Ok(v.state().regs()))?;
                user_copy_out(arg, &r).map(|()| 0)
            }
            uapi::SHADOWVM_SET_REGS => {
                let r: uapi::Regs = user_copy_in(arg)?;
                me.with_vcpu(|v| if v.set_regs(&r) { Ok(0) } else { Err(EINVAL) })
            }
            uapi::SHADOWVM_GET_SREGS => {
                let s = me.with_vcpu(|v| Ok(v.state().sregs()))?;
                user_copy_out(arg, &s).map(|()| 0)
            }
            uapi::SHADOWVM_SET_SREGS => {
                let s: uapi::Sregs = user_copy_in(arg)?;
                if !crate::vcpu::state::check_sregs(&s) {
                    return Err(EINVAL);
                }
                let mut vm = me.vm.lock();
                let Vm { ram, vcpu: Some(v) } = &mut *vm else {
                    return Err(EINVAL);
                };
                // PAE paging loads the PDPTEs with the registers, as MOV to CR3 does: a
                // state whose PDPTEs have reserved bits set cannot be entered.
                if crate::vcpu::state::pae_paging(&s) && !v.mmu().pae_pdptes_valid(ram, s.cr3) {
                    return Err(EINVAL);
                }
                v.set_sregs(ram, &s);
                Ok(0)
            }
            uapi::SHADOWVM_RUN => no_arg().and_then(|()| me.run()),
            uapi::SHADOWVM_GET_STATS => me.get_stats(arg),
            // ABI v2 (issue 11).
            uapi::SHADOWVM_CHECK_CAP => me.check_cap(arg),
            uapi::SHADOWVM_SET_MEMORY_REGION => me.set_memory_region(arg),
            uapi::SHADOWVM_GET_FPU => me.get_fpu(arg),
            uapi::SHADOWVM_SET_FPU => me.set_fpu(arg),
            uapi::SHADOWVM_GET_MSRS => me.get_msrs(arg),
            uapi::SHADOWVM_SET_MSRS => me.set_msrs(arg),
            uapi::SHADOWVM_GET_SUPPORTED_CPUID => get_supported_cpuid(arg),
            uapi::SHADOWVM_SET_CPUID => me.set_cpuid(arg),
            uapi::SHADOWVM_GET_TSC_KHZ => no_arg().and_then(|()| get_tsc_khz()),
            _ => me.irq_ioctl(cmd, arg).unwrap_or(Err(ENOTTY)),
        }
    }

    fn mmap(me: Pin<&VmFile>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: The VMA is being set up by mmap and is valid for this call.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff } as u64;
        let offset = pgoff.checked_mul(uapi::SHADOWVM_PAGE_SIZE).ok_or(EINVAL)?;
        let len = (vma.end() - vma.start()) as u64;
        if vma.flags() & kernel::mm::virt::flags::SHARED == 0 {
            // A private mapping would copy on write and hide the guest's memory.
            return Err(EINVAL);
        }
        vma.set_dontexpand();
        let mixed = vma.set_mixedmap();
        if offset == uapi::SHADOWVM_RUN_MMAP_OFFSET {
            if len != uapi::SHADOWVM_RUN_MMAP_SIZE || me.vm.lock().vcpu.is_none() {
                return Err(EINVAL);
            }
            return mixed.vm_insert_page(vma.start(), &me.run.page);
        }
        // Guest memory: file offset = guest-physical address, all inside one slot.
        let vm = me.vm.lock();
        let pages = vm.ram.pages(offset, len).ok_or(EINVAL)?;
        for (i, page) in pages.enumerate() {
            mixed.vm_insert_page(vma.start() + i * uapi::SHADOWVM_PAGE_SIZE as usize, &page)?;
        }
        Ok(())
    }
}
