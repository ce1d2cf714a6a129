// SPDX-License-Identifier: GPL-2.0

//! A virtual CPU: its VMCS, the run loop in local-mode windows, and the bridge to the MMU
//! engine.
//!
//! `RUN` repeats: check for signals, refill the MMU's page cache (may sleep), open a window
//! (interrupts off, VMXON, VMPTRLD), enter the guest and handle every exit that needs no
//! sleeping inside the window, close it (VMCLEAR, VMXOFF, CR4 restored, interrupts on).
//! A window closes on a host interrupt, `need_resched`, an exit for userspace, or a page
//! cache that ran dry; the exit that needed memory is then handled again in the next one.

mod cpuid;
mod exits;
mod host;
pub(crate) mod irq;
pub(crate) mod state;

use crate::cpumodel;
use crate::glue::{self, FpuOwned, IrqsOff};
use crate::mmu::{self, HostPage, Mmu, PageSource};
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::caps::VmxCaps;
use crate::vmx::exit::{ExitInfo, ExitReason, RawExitReason, ENTRY_FAIL_PDPTE, EXIT_REASONS};
use crate::vmx::insn;
use crate::vmx::vmcs::*;
use crate::vmx::vpid::Vpid;
use crate::vmx::window::{CurrentVmcs, VmxRegion, VmxRoot};
use crate::x86::{self, vector};
use core::arch::asm;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use exits::{Event, Handled};
use host::{load_syscall_msrs, save_syscall_msrs, HostFields, HostState};
use kernel::prelude::*;
use state::{GuestState, SavedFields};

extern "C" {
    fn shadowvm_vmx_run(regs: *mut u64, launched: u64) -> i32;
}

/// Pages kept ready for the MMU engine, which runs with interrupts off and cannot
/// allocate. Refilled (sleeping) before every window.
///
/// # Invariants
///
/// Every entry is a zeroed page from [`glue::alloc_table_page`] owned by the cache; `low`
/// entries are below 4 GiB physical.
struct PageCache {
    pages: KVec<HostPage>,
    low: KVec<HostPage>,
}

/// Pages in the cache when a window opens: more than one #PF or CR3 switch needs, so most
/// windows never run dry (and when one does, the event is retried after a refill).
const CACHE_PAGES: usize = 24;
const CACHE_LOW_PAGES: usize = 2;

impl PageCache {
    fn new() -> Result<Self> {
        Ok(Self {
            pages: KVec::with_capacity(CACHE_PAGES, GFP_KERNEL_ACCOUNT)?,
            low: KVec::with_capacity(CACHE_LOW_PAGES, GFP_KERNEL_ACCOUNT)?,
        })
    }

    fn refill(&mut self) -> Result {
        for (list, want, low) in [
            (&mut self.pages, CACHE_PAGES, false),
            (&mut self.low, CACHE_LOW_PAGES, true),
        ] {
            while list.len() < want {
                let (ptr, hpa) = glue::alloc_table_page(low).ok_or(ENOMEM)?;
                // INVARIANT: a fresh zeroed page; capacity was reserved in `new`.
                if let Err(e) = list.push(HostPage { ptr, hpa }, GFP_KERNEL_ACCOUNT) {
                    // SAFETY: The page was just allocated and is not referenced anywhere.
                    unsafe { glue::free_table_page(ptr) };
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

impl PageSource for PageCache {
    fn alloc_page(&mut self, low: bool) -> Option<HostPage> {
        if low {
            self.low.pop()
        } else {
            self.pages.pop()
        }
    }

    fn free_page(&mut self, page: HostPage) {
        // SAFETY: The engine returns only pages it got from `alloc_page`, i.e. from
        // `glue::alloc_table_page`, and no longer uses them.
        unsafe { glue::free_table_page(page.ptr) };
    }
}

/// Pages straight from the page allocator, for the engine calls made in process context
/// where allocating may sleep (sizing the engine for guest memory).
struct SleepingPages;

impl PageSource for SleepingPages {
    fn alloc_page(&mut self, low: bool) -> Option<HostPage> {
        let (ptr, hpa) = glue::alloc_table_page(low)?;
        Some(HostPage { ptr, hpa })
    }

    fn free_page(&mut self, page: HostPage) {
        // SAFETY: The engine returns only pages it got from `alloc_page`, i.e. from
        // `glue::alloc_table_page`, and no longer uses them.
        unsafe { glue::free_table_page(page.ptr) };
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        for p in Iterator::chain(self.pages.iter(), self.low.iter()) {
            // SAFETY: Pages in the cache are ours (type invariant) and unused.
            unsafe { glue::free_table_page(p.ptr) };
        }
    }
}

/// Per-vCPU statistics beside the MMU's counters.
pub(crate) struct VcpuStats {
    pub(crate) exits: [u64; EXIT_REASONS],
    pub(crate) windows: u64,
    pub(crate) entries: u64,
    pub(crate) cache_refills: u64,
    pub(crate) injected_exceptions: u64,
    pub(crate) emulated_pt_writes: u64,
    /// INVVPIDs of the vCPU's whole VPID, and of one address.
    pub(crate) invvpid_context: u64,
    pub(crate) invvpid_address: u64,
}

/// Translations to invalidate in the CPU's TLB before the next VM entry (with a VPID the
/// TLB outlives entries; without one every entry flushes it and this is not used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlbWork {
    None,
    /// The translations of one linear address (an INVLPG whose shadow change, if any,
    /// was that address's entry).
    Address(u64),
    /// Every translation of the vCPU's VPID.
    All,
}

impl TlbWork {
    /// Both of `self` and `other`.
    fn and(self, other: TlbWork) -> TlbWork {
        match (self, other) {
            (TlbWork::None, x) | (x, TlbWork::None) => x,
            (TlbWork::Address(a), TlbWork::Address(b)) if a == b => self,
            _ => TlbWork::All,
        }
    }

    /// What a shadow change the engine reports needs outside an INVLPG: all of it.
    fn from_engine(f: mmu::TlbFlush) -> TlbWork {
        match f {
            mmu::TlbFlush::None => TlbWork::None,
            mmu::TlbFlush::OneLeaf | mmu::TlbFlush::All => TlbWork::All,
        }
    }
}

/// What the current window last wrote to the VMCS fields that an entry would otherwise
/// write again unchanged: an entry writes only the fields whose value differs. `None`
/// until the window's first write (every window starts on a freshly loaded VMCS).
///
/// # Invariants
///
/// Inside a window, a `Some` value is what the current VMCS holds in that field (the CPU
/// never changes these fields itself); the value is reset when a window opens.
#[derive(Clone, Copy, Default)]
struct WrittenFields {
    paging: Option<PagingFields>,
    /// CPU_BASED_VM_EXEC_CONTROL.
    proc: Option<u32>,
    /// Whether PIN_BASED_VM_EXEC_CONTROL activates the VMX-preemption timer.
    timer: Option<bool>,
}

/// The guest paging fields [`VcpuCore::sync_paging`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PagingFields {
    cr0: u64,
    cr4: u64,
    cr3: u64,
    efer: u64,
    cr0_shadow: u64,
    cr4_shadow: u64,
    entry_controls: u32,
    /// The page-fault error-code mask/match for the guest-not-present bypass.
    pfec_bypass: bool,
}

impl PagingFields {
    /// Whether `other` is `self` with another GUEST_CR3.
    fn differs_in_cr3_only(&self, other: &PagingFields) -> bool {
        PagingFields {
            cr3: other.cr3,
            ..*self
        } == *other
    }
}

/// How a window ended.
enum WindowEnd {
    /// A host interrupt, `need_resched` or an NMI: go round again.
    Interrupted,
    /// The MMU's page cache ran dry: refill and retry the pending exit.
    NeedMemory,
    /// The exit needs userspace; the run page has been filled in.
    User,
}

/// Userspace's half of an exit, completed at the next RUN.
#[derive(Clone, Copy)]
enum Completion {
    None,
    /// An IN of this many bytes: the data goes into RAX.
    In(u8),
    /// A hypercall: its return value goes into RAX.
    Hypercall,
    /// An MMIO read: the instruction is executed again with the data.
    MmioRead {
        linear: u64,
        len: u8,
    },
    /// An RDMSR (`write` false) or WRMSR of `len` bytes that userspace handles.
    Msr {
        write: bool,
        len: u32,
    },
}

/// One vCPU: what the window borrows while it is open (the VMX regions, the guest's FPU
/// state) and the rest.
///
/// # Invariants
///
/// `vmxon` and `vmcs` are tagged with this CPU model's revision identifier; the VMCS is
/// current on no CPU outside a window.
pub(crate) struct Vcpu {
    vmxon: VmxRegion,
    vmcs: VmxRegion,
    /// The guest's x87/SSE state between windows.
    fpu: KBox<FxArea>,
    cpu: VcpuCore,
}

/// Everything of a vCPU but what the window borrows: guest state, MMU, pending events.
///
/// # Invariants
///
/// `state` holds the guest state between windows (see [`GuestState`]).
struct VcpuCore {
    state: GuestState,
    mmu: KBox<Mmu>,
    cache: PageCache,
    caps: &'static VmxCaps,
    /// The guest's CPUID table: the default one, or what SET_CPUID installed (filtered).
    cpuid: KBox<cpumodel::cpuid::Table>,
    /// An event to deliver at the next VM entry.
    event: Option<Event>,
    /// External interrupts and NMIs from userspace, waiting for the guest.
    irqs: irq::PendingIrqs,
    /// An exit that could not finish in its window (the page cache ran dry).
    pending_exit: Option<ExitInfo>,
    completion: Completion,
    /// The MMU state needs to be built before the first entry.
    paging_dirty: bool,
    /// An exception arrived while a double fault was being delivered.
    triple_fault: bool,
    /// An MMU event failed for good ([`mmu::MmuError::LimitReached`]): reported to
    /// userspace as an internal error (`report_mmu_failure`).
    mmu_failed: Option<mmu::MmuError>,
    /// A refused window was logged already.
    busy_logged: bool,
    /// This vCPU's number, never reused (for the branch-prediction barrier between VMs).
    id: u64,
    /// The VPID tagging the guest's TLB entries; `None` (the CPU has no usable VPIDs, or
    /// all are taken) flushes the TLB at every VM entry.
    vpid: Option<Vpid>,
    /// What the TLB must lose before the next entry (used with a VPID).
    tlb: TlbWork,
    /// Longest interrupts-off window, in TSC ticks (module parameter `window_us`).
    window_ticks: u64,
    /// VMCS fields written in the current window (see [`WrittenFields`]).
    written: WrittenFields,
    /// Whether the VMCS holds what the last window left in it: `vmcs_holds`,
    /// `host_in_vmcs` and the constant controls of [`Self::write_controls`]. False before
    /// the first window and after one that saw a VMCS access fail.
    vmcs_known: bool,
    /// What the VMCS holds of the guest fields a window reads back when it closes.
    vmcs_holds: SavedFields,
    /// What the VMCS holds of the host fields.
    host_in_vmcs: HostFields,
    stats: VcpuStats,
}

/// An FXSAVE image.
///
/// # Invariants
///
/// The bytes are a valid FXSAVE image (FXRSTOR does not fault on them): the reset image
/// of [`FxArea::RESET`], what an FXSAVE stored, or an image [`FxArea::loadable`]
/// accepted.
#[repr(C, align(16))]
struct FxArea([u8; uapi::SHADOWVM_FXSAVE_SIZE]);

impl FxArea {
    /// The image of a CPU after reset: FCW 0x37f, MXCSR 0x1f80, the rest 0.
    const RESET: Self = {
        let mut a = [0u8; 512];
        a[0] = 0x7f;
        a[1] = 0x03;
        a[24] = 0x80;
        a[25] = 0x1f;
        // INVARIANT: the reset image.
        Self(a)
    };

    /// Whether FXRSTOR loads `image` without a fault: in 64-bit mode the only bits of the
    /// image it faults on (#GP) are MXCSR bits outside the CPU's MXCSR_MASK (SDM Vol. 1,
    /// 10.5.1 and 11.6.6; Vol. 2, FXRSTOR). Everything else is taken as it is, as
    /// hardware does: the abridged tag, FOP, FIP/FDP and bytes 464-511 are never checked.
    fn loadable(image: &[u8; uapi::SHADOWVM_FXSAVE_SIZE]) -> bool {
        const M: usize = uapi::SHADOWVM_FXSAVE_MXCSR;
        // Constant indices into the 512-byte array: checked at compile time.
        let mxcsr = u32::from_le_bytes([image[M], image[M + 1], image[M + 2], image[M + 3]]);
        mxcsr & !mxcsr_mask() == 0
    }
}

/// The MXCSR bits this CPU implements: the MXCSR_MASK field that FXSAVE stores (0 means
/// the default 0xffbf, SDM Vol. 1, 11.6.6). Read by [`Vcpu::new`] before any SET_FPU can
/// ask; 0 until then.
static MXCSR_MASK: AtomicU32 = AtomicU32::new(0);

/// MXCSR_MASK as read by [`probe_mxcsr_mask`]; the default if it never ran.
fn mxcsr_mask() -> u32 {
    match MXCSR_MASK.load(Ordering::Relaxed) {
        0 => 0xffbf,
        mask => mask,
    }
}

/// Reads MXCSR_MASK with an FXSAVE into `area`, then puts the reset image back. The area
/// is on the heap: FXSAVE needs 16-byte alignment, which the kernel stack does not give
/// an over-aligned local.
fn probe_mxcsr_mask(area: &mut FxArea) {
    {
        let _owned = FpuOwned::begin();
        // SAFETY: The FPU is ours while `_owned` lives; the area is writable, 16-byte
        // aligned and 512 bytes. INVARIANT: FXSAVE stores a valid image.
        unsafe { asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
    }
    // Constant indices into the 512-byte array: checked at compile time.
    let reported = u32::from_le_bytes([area.0[28], area.0[29], area.0[30], area.0[31]]);
    let mask = if reported == 0 { 0xffbf } else { reported };
    MXCSR_MASK.store(mask, Ordering::Relaxed);
    *area = FxArea::RESET;
}

/// The guest's x87/SSE registers are in the CPU while this value lives; dropping it stores
/// them back into the area.
///
/// # Invariants
///
/// FXRSTOR loaded `area` on this CPU while the task owns the FPU (`'f` borrows the
/// [`FpuOwned`], so the kernel's own FPU state comes back only after the drop).
struct GuestFpu<'f> {
    area: &'f mut FxArea,
    _owned: PhantomData<&'f FpuOwned>,
}

impl<'f> GuestFpu<'f> {
    fn load(_owned: &'f FpuOwned, area: &'f mut FxArea) -> Self {
        // SAFETY: The FPU is ours (`_owned`); the area is 16-aligned and holds a valid
        // FXSAVE image (`FxArea` invariant), so FXRSTOR does not fault.
        unsafe { asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, readonly)) };
        // INVARIANT: loaded just above, with the FPU owned for `'f`.
        Self {
            area,
            _owned: PhantomData,
        }
    }
}

impl Drop for GuestFpu<'_> {
    fn drop(&mut self) {
        // SAFETY: The FPU is still ours (type invariant); the area is writable, 16-aligned
        // and 512 bytes. INVARIANT: FXSAVE stores a valid image.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.area.0.as_mut_ptr(), options(nostack)) };
    }
}

/// Numbers for [`VcpuCore::id`]; 0 is never handed out (the per-CPU "last VM" starts at 0).
static NEXT_VCPU_ID: AtomicU64 = AtomicU64::new(1);

/// TSC ticks of one interrupts-off window (`window_us`). Every window ends by this
/// deadline whatever the guest does: the exit path checks it before re-entering, and an
/// entry with RFLAGS.IF=0 arms the VMX-preemption timer with the time left. An external
/// interrupt ends a window too (external-interrupt exiting); Bochs gives none to a guest
/// entered with RFLAGS.IF=0, so there the timer is what returns the CPU (see
/// `VcpuCore::arm_preemption_timer`).
fn window_ticks() -> u64 {
    // SAFETY: `tsc_khz` is written once during boot calibration and only read afterwards.
    let khz = u64::from(unsafe { kernel::bindings::tsc_khz });
    let ticks_per_ms = if khz == 0 { 1 << 21 } else { khz };
    core::cmp::max(ticks_per_ms.saturating_mul(crate::window_us()) / 1000, 1)
}

/// The CPU's MAXPHYADDR (CPUID.80000008H:EAX[7:0]): what the engine's shadow entries are
/// checked against, and what CPUID reports to the guest.
fn host_maxphyaddr() -> u8 {
    let leaf = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if leaf >= 0x8000_0008 {
        (core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xff) as u8
    } else {
        36
    }
}

impl Vcpu {
    /// The guest's registers (GET_REGS, GET_SREGS).
    pub(crate) fn state(&self) -> &GuestState {
        &self.cpu.state
    }

    /// The MMU engine, for its statistics and the PDPTE check of SET_SREGS.
    pub(crate) fn mmu(&self) -> &Mmu {
        &self.cpu.mmu
    }

    pub(crate) fn stats(&self) -> &VcpuStats {
        &self.cpu.stats
    }

    /// The VPID tagging this vCPU's TLB entries, 0 for none (the TLB is flushed at every
    /// VM entry).
    pub(crate) fn vpid(&self) -> u16 {
        self.cpu.vpid.as_ref().map_or(0, Vpid::get)
    }

    /// SET_REGS: false (nothing changed) if the values are invalid.
    pub(crate) fn set_regs(&mut self, r: &uapi::Regs) -> bool {
        self.cpu.set_regs(r)
    }

    /// SET_SREGS with values [`state::check_sregs`] and the PDPTE check accepted.
    pub(crate) fn set_sregs(&mut self, ram: &GuestRam, s: &uapi::Sregs) {
        self.cpu.set_sregs(ram, s)
    }

    /// GET_FPU: the guest's x87/SSE state as its FXSAVE image (`uapi::Fpu::fxsave`).
    pub(crate) fn fpu_image(&self) -> &[u8; uapi::SHADOWVM_FXSAVE_SIZE] {
        &self.fpu.0
    }

    /// SET_FPU: false (nothing changed) for an image FXRSTOR would fault on.
    pub(crate) fn set_fpu_image(&mut self, image: &[u8; uapi::SHADOWVM_FXSAVE_SIZE]) -> bool {
        if !FxArea::loadable(image) {
            return false;
        }
        // INVARIANT: FXRSTOR loads it (checked just above).
        self.fpu.0 = *image;
        true
    }

    /// Sizes the MMU engine for guest memory below guest frame `frames` (its per-gfn
    /// index and shadow-page limit, see `Mmu::set_guest_frames`); `ENOMEM` if the index
    /// pages cannot be allocated (what was allocated stays, nothing else changes). Process
    /// context: may sleep.
    pub(crate) fn size_mmu(&mut self, frames: u64) -> Result {
        self.cpu
            .mmu
            .set_guest_frames(&mut SleepingPages, frames)
            .map_err(|_| ENOMEM)
    }

    /// Guest memory changed under the vCPU (a slot was added): out-of-sync shadow tables
    /// are read again, as after a full guest TLB flush. Nothing else can be stale: the
    /// engine maps only guest frames that are RAM (an MMIO fault installs nothing), and
    /// guest tables outside RAM read as not present.
    pub(crate) fn memory_changed(&mut self, ram: &GuestRam) {
        self.cpu.mmu.flush(ram);
        self.cpu.flush_guest_tlb();
    }

    /// GET_MSRS: fills in `entries` up to the first MSR the module does not own; returns
    /// how many it filled.
    pub(crate) fn get_msrs(&self, entries: &mut [uapi::MsrEntry]) -> usize {
        for (n, e) in entries.iter_mut().enumerate() {
            match self.cpu.read_owned_msr(e.index, None) {
                Some(v) => e.data = v,
                None => return n,
            }
        }
        entries.len()
    }

    /// SET_MSRS: writes `entries` in order up to the first one a guest WRMSR could not do
    /// (an MSR the module does not own, a value that would fault); returns how many it
    /// wrote.
    pub(crate) fn set_msrs(&mut self, ram: &GuestRam, entries: &[uapi::MsrEntry]) -> usize {
        for (n, e) in entries.iter().enumerate() {
            if !self.cpu.set_msr_from_user(ram, e.index, e.data) {
                return n;
            }
        }
        entries.len()
    }

    /// GET_SUPPORTED_CPUID: what shadowvm can virtualize on this host (no vCPU needed).
    pub(crate) fn supported_cpuid() -> Result<KVec<uapi::CpuidEntry>> {
        let table = cpuid::supported_table()?;
        let mut out = KVec::with_capacity(table.entries().len(), GFP_KERNEL)?;
        for e in table.entries() {
            out.push(cpuid::to_uapi(e), GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// SET_CPUID: installs `entries`, feature bits filtered by the supported set. `EINVAL`
    /// (the old table stays) for more than `SHADOWVM_CPUID_MAX_ENTRIES` entries, unknown
    /// flags, nonzero padding, or two entries for the same leaf and subleaf.
    pub(crate) fn set_cpuid(&mut self, entries: &[uapi::CpuidEntry]) -> Result {
        self.cpu.cpuid = cpuid::filtered_table(entries)?;
        Ok(())
    }

    /// SHADOWVM_INTERRUPT (see `irq`).
    pub(crate) fn queue_interrupt(&mut self, irq: &uapi::Interrupt) -> Result {
        self.cpu.queue_interrupt(irq)
    }

    /// SHADOWVM_NMI (see `irq`).
    pub(crate) fn queue_nmi(&mut self) -> Result {
        self.cpu.queue_nmi()
    }

    /// GET_VCPU_EVENTS (see `irq`).
    pub(crate) fn events(&mut self) -> uapi::VcpuEvents {
        self.cpu.events()
    }

    /// SET_VCPU_EVENTS (see `irq`).
    pub(crate) fn set_events(&mut self, e: &uapi::VcpuEvents) -> Result {
        self.cpu.set_events(e)
    }

    /// The run page's `ready_for_interrupt_injection` and `if_flag` after RUN.
    pub(crate) fn interrupt_status(&self) -> (bool, bool) {
        (self.cpu.ready_for_interrupt_injection(), self.cpu.if_flag())
    }

    pub(crate) fn new(caps: &'static VmxCaps, cfg: mmu::Config) -> Result<KBox<Self>> {
        let mut cfg = cfg;
        cfg.maxphyaddr = host_maxphyaddr();
        cfg.host_maxphyaddr = host_maxphyaddr();
        cfg.gb_pages = cpuid::has_gb_pages();
        // A vCPU's memory is charged to the VM's opener, as KVM does (GFP_KERNEL_ACCOUNT).
        let mut fpu = KBox::new(FxArea::RESET, GFP_KERNEL_ACCOUNT)?;
        probe_mxcsr_mask(&mut fpu);
        Ok(KBox::new(
            Self {
                vmxon: VmxRegion::new(caps)?,
                vmcs: VmxRegion::new(caps)?,
                fpu,
                cpu: VcpuCore {
                    state: GuestState::reset(),
                    mmu: KBox::new(Mmu::new(cfg), GFP_KERNEL_ACCOUNT)?,
                    cache: PageCache::new()?,
                    caps,
                    cpuid: cpuid::default_table()?,
                    event: None,
                    irqs: irq::PendingIrqs::default(),
                    pending_exit: None,
                    completion: Completion::None,
                    paging_dirty: true,
                    triple_fault: false,
                    mmu_failed: None,
                    busy_logged: false,
                    id: NEXT_VCPU_ID.fetch_add(1, Ordering::Relaxed),
                    vpid: if caps.vpid_usable() && crate::vpid_enabled() {
                        Vpid::alloc()
                    } else {
                        None
                    },
                    tlb: TlbWork::All,
                    window_ticks: window_ticks(),
                    written: WrittenFields::default(),
                    vmcs_known: false,
                    vmcs_holds: SavedFields::default(),
                    host_in_vmcs: HostFields::default(),
                    stats: VcpuStats {
                        exits: [0; EXIT_REASONS],
                        windows: 0,
                        entries: 0,
                        cache_refills: 0,
                        injected_exceptions: 0,
                        emulated_pt_writes: 0,
                        invvpid_context: 0,
                        invvpid_address: 0,
                    },
                },
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// RUN: runs the guest until an exit for userspace (`Ok`, run page filled in), a
    /// signal (`EINTR`), or the end of the time slice (`Ok`, exit reason INTR).
    pub(crate) fn run(&mut self, ram: &GuestRam, run: &mut uapi::Run) -> Result {
        if self.cpu.complete(ram, run) {
            return Ok(());
        }
        let signal = || kernel::current!().signal_pending();
        if run.immediate_exit != 0 || signal() {
            let cause = if run.immediate_exit != 0 {
                uapi::SHADOWVM_INTR_IMMEDIATE_EXIT
            } else {
                uapi::SHADOWVM_INTR_SIGNAL
            };
            exits::set_intr(run, cause);
            return Err(EINTR);
        }
        let slice_end = glue::jiffies()
            .wrapping_add(kernel::time::msecs_to_jiffies(crate::run_slice_ms()) as usize);
        loop {
            if signal() {
                exits::set_intr(run, uapi::SHADOWVM_INTR_SIGNAL);
                return Err(EINTR);
            }
            if (glue::jiffies().wrapping_sub(slice_end) as isize) >= 0 {
                exits::set_intr(run, uapi::SHADOWVM_INTR_TIME_SLICE);
                return Ok(());
            }
            self.cpu.cache.refill()?;
            self.cpu.stats.cache_refills = self.cpu.stats.cache_refills.wrapping_add(1);
            glue::cond_resched();
            match self.window(ram, run)? {
                WindowEnd::Interrupted | WindowEnd::NeedMemory => continue,
                WindowEnd::User => return Ok(()),
            }
        }
    }

    /// One interrupts-off window.
    fn window(&mut self, ram: &GuestRam, run: &mut uapi::Run) -> Result<WindowEnd> {
        let cpu = &mut self.cpu;
        cpu.stats.windows = cpu.stats.windows.wrapping_add(1);
        let fpu = FpuOwned::begin();
        let irqs = IrqsOff::save();
        // Everything of the host that a VM exit does not restore, put back on drop
        // (after VMXOFF, before interrupts come back on).
        let host = HostState::save(&irqs, &cpu.state);
        // A guest must not steer the branch predictions of the next VM on this CPU.
        glue::barrier_on_vm_switch(&irqs, cpu.id);
        let root = match VmxRoot::enter(&irqs, &self.vmxon) {
            Ok(root) => root,
            Err(e) => {
                // One line per VM, not one per RUN.
                if !cpu.busy_logged {
                    cpu.busy_logged = true;
                    pr_warn!("RUN refused: {e}\n");
                }
                return Err(e.errno());
            }
        };
        let end = match root.load(&self.vmcs) {
            Ok(vmcs) => {
                let deadline = insn::rdtsc().saturating_add(cpu.window_ticks);
                let guest_fpu = GuestFpu::load(&fpu, &mut self.fpu);
                let end = cpu.in_window(&vmcs, ram, run, deadline);
                drop(guest_fpu);
                drop(vmcs);
                end
            }
            Err(e) => {
                pr_err!("RUN: {e}\n");
                Err(e.errno())
            }
        };
        drop(root);
        drop(host);
        match end {
            Ok((_, HostEvent::Nmi)) => glue::raise_nmi(&irqs),
            Ok((_, HostEvent::MachineCheck)) => glue::machine_check(&irqs),
            _ => {}
        }
        drop(irqs);
        end.map(|(e, _)| e)
    }
}

/// An event the guest's exit handed to the host: delivered once the host's state is
/// back, before interrupts come on (as KVM does right after the exit).
#[derive(Clone, Copy, PartialEq, Eq)]
enum HostEvent {
    None,
    /// An NMI arrived while the guest ran.
    Nmi,
    /// A machine check arrived while the guest ran or during VM entry.
    MachineCheck,
}

impl VcpuCore {
    /// SET_REGS: checked values replace the registers; a pending completion (IN, MMIO
    /// read, hypercall) is dropped, as the ABI says.
    fn set_regs(&mut self, r: &uapi::Regs) -> bool {
        let ok = self.state.set_regs(r);
        if ok {
            self.completion = Completion::None;
        }
        ok
    }

    /// SET_SREGS (values already checked, PAE PDPTEs included): anything queued for the
    /// old state is dropped, and the MMU takes the new paging state at once, as MOV to
    /// CR3 would: PAE PDPTEs are loaded now, so later changes to them in memory have no
    /// effect until the guest writes CR3. If that cannot finish here (memory short, or the
    /// PDPTEs changed since they were checked), the next RUN does it.
    fn set_sregs(&mut self, ram: &GuestRam, s: &uapi::Sregs) {
        self.state.set_sregs(s);
        self.flush_guest_tlb();
        self.paging_dirty = true;
        self.pending_exit = None;
        self.event = None;
        self.completion = Completion::None;
        for _ in 0..3 {
            if self.cache.refill().is_err() {
                return;
            }
            match self.load_paging(ram) {
                Err(mmu::MmuError::NeedMemory) => continue,
                Ok(mmu::CtlOutcome::Ok) => self.paging_dirty = false,
                // The next RUN reports what went wrong.
                Ok(mmu::CtlOutcome::Gp) | Err(mmu::MmuError::LimitReached) => {}
            }
            return;
        }
    }

    /// Frees the shadow tables (the VM is going away).
    fn teardown(&mut self) {
        self.mmu.teardown(&mut self.cache);
    }

    /// Finishes what userspace completed: the data of an IN or an MMIO read, the result
    /// of a hypercall. True if that produced an exit for userspace (`run` holds it).
    fn complete(&mut self, ram: &GuestRam, run: &mut uapi::Run) -> bool {
        match core::mem::replace(&mut self.completion, Completion::None) {
            Completion::None => {}
            Completion::In(size) => {
                let data = run.io().data;
                let rax = &mut self.state.gpr[0];
                *rax = match size {
                    1 => (*rax & !0xff) | (data & 0xff),
                    2 => (*rax & !0xffff) | (data & 0xffff),
                    // A 32-bit register write zero-extends into RAX.
                    _ => data & 0xffff_ffff,
                };
            }
            Completion::Hypercall => self.state.gpr[0] = run.hypercall().ret,
            Completion::MmioRead { linear, len } => {
                return self.complete_mmio(ram, run, linear, len)
            }
            Completion::Msr { write, len } => self.complete_msr(run, write, len),
        }
        false
    }

    /// Inside the window (the guest's FPU registers already loaded, see [`GuestFpu`]): VMCS
    /// setup, then enter/exit/handle until the window must close or `deadline` (TSC)
    /// passes. Returns how it ended and what the host must take over.
    fn in_window(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        deadline: u64,
    ) -> Result<(WindowEnd, HostEvent)> {
        self.written = WrittenFields::default();
        let known = core::mem::replace(&mut self.vmcs_known, false);
        self.write_controls(vmcs, known);
        // Since this vCPU's last window it may have moved to another CPU, whose TLB can
        // hold old translations tagged with its VPID, and another hypervisor may have run
        // a guest with the same VPID here (VPIDs are per CPU and per hypervisor): start
        // clean (the SDM suggests INVVPID after VMXON for the same reason).
        self.tlb = TlbWork::All;
        self.host_in_vmcs = host::write_vmcs_host_state(vmcs, known.then_some(&self.host_in_vmcs));
        self.fix_interrupt_shadow();
        let mut held = self.state.load(vmcs, known.then_some(&self.vmcs_holds));
        load_syscall_msrs(&self.state);

        let mut launched = false;
        let mut exit = self.pending_exit.take();
        let result = loop {
            if self.paging_dirty {
                match self.rebuild_paging(ram, run) {
                    Ok(()) => self.paging_dirty = false,
                    Err(end) => {
                        self.report_mmu_failure(run);
                        break (end, HostEvent::None);
                    }
                }
            }
            if let Some(info) = exit.take() {
                if let Some(end) = self.dispatch(vmcs, ram, run, info) {
                    break (end, HostEvent::None);
                }
                if self.irq_window_open(run) {
                    break (WindowEnd::User, HostEvent::None);
                }
            }
            // Never enter without a shadow root this VM owns: zapping or reclaim may have
            // dropped the current one.
            match self.mmu.ensure_root(&mut self.cache, ram) {
                Ok(()) => {}
                Err(mmu::MmuError::NeedMemory) => break (WindowEnd::NeedMemory, HostEvent::None),
                Err(e @ mmu::MmuError::LimitReached) => {
                    self.mmu_failed = Some(e);
                    self.report_mmu_failure(run);
                    break (WindowEnd::User, HostEvent::None);
                }
            }
            let hw = self.mmu.hw_state();
            self.flush_tlb(vmcs);
            if hw.cr3 == 0 || vmcs.failed() {
                let suberror = if hw.cr3 == 0 {
                    uapi::SHADOWVM_INTERNAL_ERROR_MMU
                } else {
                    uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT
                };
                break (
                    self.internal_error(run, suberror, 0, 0, [0; 3]),
                    HostEvent::None,
                );
            }
            let now = insn::rdtsc();
            if glue::need_resched() || now >= deadline {
                break (WindowEnd::Interrupted, HostEvent::None);
            }
            self.sync_paging(vmcs, &hw);
            self.inject_event(vmcs);
            let shadow = self.inject_interrupts(vmcs, run.request_interrupt_window != 0);
            self.state.load_volatile(vmcs, &mut held);
            if self.arm_preemption_timer(vmcs) {
                // The time left in the window, not a fresh slice per entry: a guest that
                // exits in a tight loop cannot extend the window.
                let ticks = (deadline - now).wrapping_shr(self.caps.preemption_timer_rate());
                vmcs.write(
                    VMX_PREEMPTION_TIMER_VALUE,
                    ticks.clamp(1, u32::MAX.into()) as u32,
                );
            }
            self.stats.entries = self.stats.entries.wrapping_add(1);
            // SAFETY: The VMCS is current with complete host, control and guest state;
            // HOST_RIP points at shadowvm_vmx_exit; `gpr` has the 17 slots the routine
            // uses; GUEST_CR3 is the MMU's current root (checked above).
            let failed =
                unsafe { shadowvm_vmx_run(self.state.gpr.as_mut_ptr(), u64::from(launched)) };
            launched = true;
            if failed != 0 {
                let err = vmcs.read(VM_INSTRUCTION_ERROR);
                break (exits::entry_failed(run, err.into(), 0), HostEvent::None);
            }
            held = self.state.save_volatile(vmcs);
            let info = ExitInfo::read(vmcs);
            self.keep_shadow_across_fault(&info, shadow);
            self.event = None;
            if let Some(reason) = self.stats.exits.get_mut(usize::from(info.basic())) {
                *reason = reason.wrapping_add(1);
            }
            // An event whose delivery the exit interrupted is delivered again (also after
            // an NMI or machine-check exit, which the host takes first).
            self.note_vectoring(&info);
            self.restore_nmi_blocking(&info);
            if info.is_nmi() {
                break (WindowEnd::Interrupted, HostEvent::Nmi);
            }
            if info.is_machine_check() {
                // The host's machine check: its handler runs once the host state is back.
                // An #MC during VM entry fails the entry, as on hardware.
                if info.basic_reason() == Some(ExitReason::MceDuringEntry) {
                    let reason = info.reason.into_raw().into();
                    let end = exits::entry_failed(run, reason, info.qualification);
                    break (end, HostEvent::MachineCheck);
                }
                break (WindowEnd::Interrupted, HostEvent::MachineCheck);
            }
            exit = Some(info);
        };
        save_syscall_msrs(&mut self.state);
        self.state.save(vmcs);
        // Only values read without a failure are known to be in the VMCS.
        if !vmcs.failed() {
            self.vmcs_holds.record(&self.state);
            self.vmcs_known = true;
        }
        Ok(result)
    }

    /// Handles one exit; `Some` when the window must close. An exit that ran out of
    /// page-cache memory is kept and handled again in the next window.
    fn dispatch(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: ExitInfo,
    ) -> Option<WindowEnd> {
        match self.handle(vmcs, ram, run, info) {
            Handled::Resume | Handled::Raised => None,
            Handled::End(end) => Some(end),
            Handled::NeedMemory => {
                self.pending_exit = Some(info);
                Some(WindowEnd::NeedMemory)
            }
        }
    }

    /// Hands the guest's paging registers to the MMU (vCPU reset, SET_SREGS).
    fn load_paging(
        &mut self,
        ram: &GuestRam,
    ) -> core::result::Result<mmu::CtlOutcome, mmu::MmuError> {
        self.flush_guest_tlb();
        let s = &self.state;
        let (cr0, cr4, efer, cr3) = (s.cr0, s.cr4, s.efer, s.cr3);
        match self.mmu.set_mode(&mut self.cache, ram, cr0, cr4, efer)? {
            mmu::CtlOutcome::Ok => self.mmu.set_cr3(&mut self.cache, ram, cr3),
            gp => Ok(gp),
        }
    }

    /// [`Self::load_paging`] at the first entry after a reset or a SET_SREGS that could
    /// not finish it. PDPTEs that cannot be loaded fail the entry as on hardware (SDM
    /// 26.3.1.6: exit reason 33 with bit 31, qualification 2); the next RUN tries again.
    fn rebuild_paging(
        &mut self,
        ram: &GuestRam,
        run: &mut uapi::Run,
    ) -> core::result::Result<(), WindowEnd> {
        match self.load_paging(ram) {
            Err(mmu::MmuError::NeedMemory) => Err(WindowEnd::NeedMemory),
            Err(e @ mmu::MmuError::LimitReached) => {
                self.mmu_failed = Some(e);
                Err(WindowEnd::User)
            }
            Ok(mmu::CtlOutcome::Gp) => {
                let reason = RawExitReason::entry_failure(ExitReason::InvalidGuestState);
                Err(exits::entry_failed(
                    run,
                    reason.into_raw().into(),
                    ENTRY_FAIL_PDPTE,
                ))
            }
            Ok(mmu::CtlOutcome::Ok) => Ok(()),
        }
    }

    /// The hardware CR4.MCE stays set whatever the guest's: with it clear, a machine check
    /// in guest mode would shut the whole machine down instead of reaching the host.
    /// Only the fields that differ from what the window last wrote are written (most
    /// exits change none; a CR3 write changes GUEST_CR3 alone).
    fn sync_paging(&mut self, vmcs: &CurrentVmcs<'_>, hw: &mmu::HwPaging) {
        let s = &self.state;
        let caps = self.caps;
        let cr0 = ((s.cr0 | hw.cr0_set | caps.cr0_fixed0) & caps.cr0_fixed1)
            & !(x86::CR0_NW | x86::CR0_CD);
        let cr4 =
            (((s.cr4 & !hw.cr4_mask) | hw.cr4 | x86::CR4_MCE) | caps.cr4_fixed0) & caps.cr4_fixed1;
        let efer = (s.efer & !hw.efer_mask) | hw.efer;
        let entry = EntryControls::from_raw(0)
            .with_load_efer(true)
            .with_load_debug_controls(true)
            .with_ia32e_mode(efer & x86::EFER_LMA != 0);
        let now = PagingFields {
            cr0,
            cr4,
            cr3: hw.cr3,
            efer,
            cr0_shadow: s.cr0,
            cr4_shadow: s.cr4,
            entry_controls: caps.entry.adjust(entry.into_raw()),
            pfec_bypass: hw.pfec_bypass,
        };
        match self.written.paging {
            Some(old) if old == now => return,
            // A CR3 load or a root switch changes the root alone.
            Some(old) if old.differs_in_cr3_only(&now) => vmcs.write(GUEST_CR3, now.cr3),
            _ => {
                vmcs.write(GUEST_CR0, now.cr0);
                vmcs.write(GUEST_CR4, now.cr4);
                vmcs.write(GUEST_CR3, now.cr3);
                vmcs.write(GUEST_IA32_EFER, now.efer);
                vmcs.write(CR0_READ_SHADOW, now.cr0_shadow);
                vmcs.write(CR4_READ_SHADOW, now.cr4_shadow);
                vmcs.write(VM_ENTRY_CONTROLS, now.entry_controls);
                write_pf_filter(vmcs, now.pfec_bypass);
            }
        }
        self.written.paging = Some(now);
    }

    /// Writes CPU_BASED_VM_EXEC_CONTROL unless it holds `value` already.
    fn write_proc_controls(&mut self, vmcs: &CurrentVmcs<'_>, value: u32) {
        if self.written.proc != Some(value) {
            vmcs.write(CPU_BASED_VM_EXEC_CONTROL, value);
            self.written.proc = Some(value);
        }
    }

    /// The pin-based controls, with the VMX-preemption timer active or not.
    fn pin_controls(&self, timer: bool) -> u32 {
        let c = self.caps;
        // Virtual NMIs: the CPU tracks the guest's blocking of the NMIs `irq` injects.
        let pin = PinControls::from_raw(0)
            .with_ext_intr_exiting(true)
            .with_nmi_exiting(true)
            .with_virtual_nmis(c.has_virtual_nmis())
            .with_preemption_timer(timer && c.has_preemption_timer());
        c.pin.adjust(pin.into_raw())
    }

    /// Activates the VMX-preemption timer for the next entry if it needs one, and says so.
    ///
    /// With "external-interrupt exiting" every host interrupt makes the guest exit, with
    /// whatever RFLAGS.IF the guest has (SDM vol. 3C, "Interrupt-Window Exiting and
    /// External-Interrupt Exiting"): on hardware, the host's timer tick already ends a
    /// window. Bochs 3.0 masks external interrupts in the guest when the entry loads
    /// RFLAGS.IF = 0 (its VM entry recomputes the interrupt mask, `handleCpuContextChange`
    /// in `cpu/vmx.cc`, before it marks the CPU as in VMX non-root operation), until the
    /// guest changes IF itself; a guest entered with IF = 0 that never sets it would then
    /// hold the CPU for ever. So the timer bounds exactly those entries, by the window's
    /// deadline; entries with IF = 1 get external-interrupt exits on both and run without
    /// it (no timer exits for a guest that keeps interrupts enabled, as Linux does).
    fn arm_preemption_timer(&mut self, vmcs: &CurrentVmcs<'_>) -> bool {
        let timer = self.state.rflags & x86::RFLAGS_IF == 0 && self.caps.has_preemption_timer();
        if self.written.timer != Some(timer) {
            vmcs.write(PIN_BASED_VM_EXEC_CONTROL, self.pin_controls(timer));
            self.written.timer = Some(timer);
        }
        timer
    }

    /// Invalidates before a VM entry what the guest's TLB operations and the shadow's
    /// changes since the last entry ask for (with a VPID; without one the entry flushes
    /// everything). An INVVPID that fails marks the VMCS failed: no entry follows.
    fn flush_tlb(&mut self, vmcs: &CurrentVmcs<'_>) {
        // Without a VPID the engine's reports just accumulate (untaken, they cost nothing).
        let Some(vpid) = self.vpid.as_ref().map(Vpid::get) else {
            return;
        };
        let engine = TlbWork::from_engine(self.mmu.take_tlb_flush());
        let work = core::mem::replace(&mut self.tlb, TlbWork::None).and(engine);
        match work {
            TlbWork::None => {}
            TlbWork::Address(linear) if x86::canonical(linear) => {
                self.stats.invvpid_address = self.stats.invvpid_address.wrapping_add(1);
                vmcs.invvpid(self.caps.invvpid_address(), vpid, linear);
            }
            TlbWork::Address(_) | TlbWork::All => {
                self.stats.invvpid_context = self.stats.invvpid_context.wrapping_add(1);
                vmcs.invvpid(self.caps.invvpid_whole(), vpid, 0);
            }
        }
    }

    /// The guest (or userspace) did something that flushes its TLB architecturally (a CR3
    /// load without the PCID no-flush bit, a paging-mode change, INVPCID of a context): the
    /// shadow may have nothing to say about it (translations cached from shadow entries
    /// changed since and invalidated one address at a time), so everything goes.
    pub(crate) fn flush_guest_tlb(&mut self) {
        self.tlb = TlbWork::All;
    }

    /// INVLPG (or INVPCID of one address) of `linear` was handed to the engine: the CPU
    /// must drop that address's translations, and whatever else the engine changed.
    fn flush_guest_address(&mut self, linear: u64, engine: mmu::TlbFlush) {
        if self.vpid.is_none() {
            return;
        }
        let work = match engine {
            // The engine changed at most the entry of this address.
            mmu::TlbFlush::None | mmu::TlbFlush::OneLeaf => TlbWork::Address(linear),
            mmu::TlbFlush::All => TlbWork::All,
        };
        self.tlb = self.tlb.and(work);
    }

    /// An INVPCID for a PCID other than the current one was handed to the engine: the
    /// CPU's TLB holds only the current root's translations (making another root current
    /// invalidates everything), so only the shadow entries the engine changed matter.
    fn flush_engine_changes(&mut self, engine: mmu::TlbFlush) {
        if self.vpid.is_some() {
            self.tlb = self.tlb.and(TlbWork::from_engine(engine));
        }
    }

    /// Before an INVLPG or INVPCID goes to the engine: what the engine reported earlier
    /// is set aside (whole flush), so that what it reports next is the instruction's alone.
    fn set_aside_engine_reports(&mut self) {
        if self.vpid.is_some() {
            let before = TlbWork::from_engine(self.mmu.take_tlb_flush());
            self.tlb = self.tlb.and(before);
        }
    }

    /// The secondary processor-based controls.
    fn secondary_controls(&self) -> Proc2Controls {
        Proc2Controls::from_raw(0)
            .with_enable_invpcid(self.caps.has_invpcid())
            .with_enable_vpid(self.vpid.is_some())
    }

    /// The primary processor-based controls without the window exits, which
    /// `inject_interrupts` adds at each entry.
    fn primary_controls(&self) -> ProcControls {
        ProcControls::from_raw(0)
            .with_hlt_exiting(true)
            .with_invlpg_exiting(true)
            .with_mwait_exiting(true)
            .with_rdpmc_exiting(true)
            .with_cr3_load_exiting(true)
            .with_cr3_store_exiting(true)
            .with_cr8_load_exiting(true)
            .with_cr8_store_exiting(true)
            .with_mov_dr_exiting(true)
            .with_uncond_io_exiting(true)
            .with_monitor_exiting(true)
            .with_use_tsc_offsetting(true)
            .with_secondary(self.secondary_controls().into_raw() != 0)
    }

    /// `known`: the VMCS holds what the last window wrote (see `vmcs_known`), so the
    /// fields below that never change are not written again.
    fn write_controls(&mut self, vmcs: &CurrentVmcs<'_>, known: bool) {
        let c = self.caps;
        let proc2 = self.secondary_controls();
        let secondary = proc2.into_raw() != 0;
        let proc = self.primary_controls();
        vmcs.write(PIN_BASED_VM_EXEC_CONTROL, self.pin_controls(true));
        self.written.timer = Some(true);
        let proc = c.proc.adjust(proc.into_raw());
        vmcs.write(CPU_BASED_VM_EXEC_CONTROL, proc);
        self.written.proc = Some(proc);
        if secondary {
            vmcs.write(SECONDARY_VM_EXEC_CONTROL, c.proc2.adjust(proc2.into_raw()));
        }
        if let Some(vpid) = &self.vpid {
            vmcs.write(VIRTUAL_PROCESSOR_ID, vpid.get());
        }
        vmcs.write(VM_ENTRY_INTR_INFO_FIELD, 0);
        // RDTSC and RDMSR(IA32_TSC) read host TSC + offset without exits.
        vmcs.write(TSC_OFFSET, self.state.tsc_offset);
        if known {
            return;
        }
        // Until `sync_paging` sets it before the first entry, from the paging state.
        write_pf_filter(vmcs, false);
        let exit = ExitControls::from_raw(0)
            .with_host_addr_space_size(true)
            .with_save_efer(true)
            .with_load_efer(true)
            .with_save_debug_controls(true);
        vmcs.write(VM_EXIT_CONTROLS, c.exit.adjust(exit.into_raw()));
        // #PF for the shadow MMU (which of them: PAGE_FAULT_ERROR_CODE_MASK/MATCH, set
        // before each entry in `sync_paging`); #MC for the host; #DB and #AC because their
        // delivery can fault again with the same vector, which the CPU would repeat
        // forever in microcode with no exit (CVE-2015-8104, CVE-2015-5307).
        let intercepted = [vector::DB, vector::AC, vector::MC, vector::PF];
        let bitmap = intercepted
            .iter()
            .fold(0u32, |m, &v| m | 1u32.wrapping_shl(v.into()));
        vmcs.write(EXCEPTION_BITMAP, bitmap);
        vmcs.write(CR3_TARGET_COUNT, 0);
        // The guest sees its own CR0/CR4 through the read shadows; every write exits.
        vmcs.write(CR0_GUEST_HOST_MASK, u64::MAX);
        vmcs.write(CR4_GUEST_HOST_MASK, u64::MAX);
        vmcs.write(VM_EXIT_MSR_STORE_COUNT, 0);
        vmcs.write(VM_EXIT_MSR_LOAD_COUNT, 0);
        vmcs.write(VM_ENTRY_MSR_LOAD_COUNT, 0);
    }
}

/// Which #PFs exit, with #PF set in the exception bitmap (SDM vol. 3C 25.2: a #PF exits
/// when `error_code & MASK == MATCH`): with `gnp_bypass` (the engine's
/// [`mmu::HwPaging::pfec_bypass`]) only those with P=1 (protection, reserved bits: the
/// shadow's not-filled entries are P=1 with reserved bits), and P=0 faults, which only a
/// guest-not-present shadow entry gives, go to the guest with the CPU's error code and
/// CR2; without it, all of them.
fn write_pf_filter(vmcs: &CurrentVmcs<'_>, gnp_bypass: bool) {
    let present = if gnp_bypass {
        PfErrorCode::PRESENT
    } else {
        PfErrorCode::NONE
    };
    vmcs.write(PAGE_FAULT_ERROR_CODE_MASK, present);
    vmcs.write(PAGE_FAULT_ERROR_CODE_MATCH, present);
}

// SAFETY: The raw pointers inside (MMU and page-cache pages) point to kernel pages owned
// by this vCPU alone, usable from any thread; all access goes through `&mut self`.
unsafe impl Send for VcpuCore {}

impl Drop for VcpuCore {
    fn drop(&mut self) {
        self.teardown();
    }
}
