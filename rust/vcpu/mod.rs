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
pub(crate) mod state;

use crate::glue::{self, FpuOwned, IrqsOff};
use crate::mmu::{self, HostPage, Mmu, PageSource};
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::caps::VmxCaps;
use crate::vmx::exit::{ExitInfo, ExitReason, RawExitReason, ENTRY_FAIL_PDPTE, EXIT_REASONS};
use crate::vmx::insn;
use crate::vmx::vmcs::*;
use crate::vmx::window::{CurrentVmcs, VmxRegion, VmxRoot};
use crate::x86::{self, msr, vector};
use core::arch::asm;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};
use exits::{Event, Handled};
use kernel::prelude::*;
use state::GuestState;

extern "C" {
    fn shadowvm_vmx_run(regs: *mut u64, launched: u64) -> i32;
    static shadowvm_vmx_exit: u8;
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
    /// An event to deliver at the next VM entry.
    event: Option<Event>,
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
    /// Longest interrupts-off window, in TSC ticks (module parameter `window_us`).
    window_ticks: u64,
    stats: VcpuStats,
}

/// An FXSAVE image.
///
/// # Invariants
///
/// The bytes are a valid FXSAVE image (FXRSTOR does not fault on them): the reset image
/// of [`FxArea::RESET`] or what an FXSAVE stored.
#[repr(C, align(16))]
struct FxArea([u8; 512]);

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
/// deadline whatever the guest does: the VMX-preemption timer is armed with the time left
/// at each entry, and the exit path checks it before re-entering. On hardware an external
/// interrupt also ends a window; Bochs 2.7 gives no interrupt exit while the guest has
/// RFLAGS.IF=0, so there the deadline is all that returns the CPU.
fn window_ticks() -> u64 {
    // SAFETY: `tsc_khz` is written once during boot calibration and only read afterwards.
    let khz = unsafe { kernel::bindings::tsc_khz } as u64;
    let ticks_per_ms = if khz == 0 { 1 << 21 } else { khz };
    core::cmp::max(ticks_per_ms.saturating_mul(crate::window_us()) / 1000, 1)
}

/// Bits of the guest's MAXPHYADDR the engine uses: what CPUID reports to the guest.
fn guest_maxphyaddr() -> u8 {
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

    /// SET_REGS: false (nothing changed) if the values are invalid.
    pub(crate) fn set_regs(&mut self, r: &uapi::Regs) -> bool {
        self.cpu.set_regs(r)
    }

    /// SET_SREGS with values [`state::check_sregs`] and the PDPTE check accepted.
    pub(crate) fn set_sregs(&mut self, ram: &GuestRam, s: &uapi::Sregs) {
        self.cpu.set_sregs(ram, s)
    }

    pub(crate) fn new(caps: &'static VmxCaps, cfg: mmu::Config) -> Result<KBox<Self>> {
        let mut cfg = cfg;
        cfg.maxphyaddr = guest_maxphyaddr();
        cfg.gb_pages = cpuid::has_gb_pages();
        // A vCPU's memory is charged to the VM's opener, as KVM does (GFP_KERNEL_ACCOUNT).
        let fpu = KBox::new(FxArea::RESET, GFP_KERNEL_ACCOUNT)?;
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
                    event: None,
                    pending_exit: None,
                    completion: Completion::None,
                    paging_dirty: true,
                    triple_fault: false,
                    mmu_failed: None,
                    busy_logged: false,
                    id: NEXT_VCPU_ID.fetch_add(1, Ordering::Relaxed),
                    window_ticks: window_ticks(),
                    stats: VcpuStats {
                        exits: [0; EXIT_REASONS],
                        windows: 0,
                        entries: 0,
                        cache_refills: 0,
                        injected_exceptions: 0,
                        emulated_pt_writes: 0,
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
        self.write_controls(vmcs);
        self.write_host_state(vmcs);
        self.state.load(vmcs);
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
            self.state.load_volatile(vmcs);
            if self.caps.has_preemption_timer() {
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
            let failed = unsafe { shadowvm_vmx_run(self.state.gpr.as_mut_ptr(), launched as u64) };
            launched = true;
            if failed != 0 {
                let err = vmcs.read(VM_INSTRUCTION_ERROR);
                break (exits::entry_failed(run, err.into(), 0), HostEvent::None);
            }
            self.state.save_volatile(vmcs);
            let info = ExitInfo::read(vmcs);
            self.event = None;
            if let Some(reason) = self.stats.exits.get_mut(usize::from(info.basic())) {
                *reason = reason.wrapping_add(1);
            }
            // An event whose delivery the exit interrupted is delivered again (also after
            // an NMI or machine-check exit, which the host takes first).
            self.note_vectoring(&info);
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
    fn sync_paging(&self, vmcs: &CurrentVmcs<'_>, hw: &mmu::HwPaging) {
        let s = &self.state;
        let caps = self.caps;
        let cr0 = ((s.cr0 | hw.cr0_set | caps.cr0_fixed0) & caps.cr0_fixed1)
            & !(x86::CR0_NW | x86::CR0_CD);
        let cr4 =
            (((s.cr4 & !hw.cr4_mask) | hw.cr4 | x86::CR4_MCE) | caps.cr4_fixed0) & caps.cr4_fixed1;
        let efer = (s.efer & !hw.efer_mask) | hw.efer;
        vmcs.write(GUEST_CR0, cr0);
        vmcs.write(GUEST_CR4, cr4);
        vmcs.write(GUEST_CR3, hw.cr3);
        vmcs.write(GUEST_IA32_EFER, efer);
        vmcs.write(CR0_READ_SHADOW, s.cr0);
        vmcs.write(CR4_READ_SHADOW, s.cr4);
        let entry = EntryControls::from_raw(0)
            .with_load_efer(true)
            .with_load_debug_controls(true)
            .with_ia32e_mode(efer & x86::EFER_LMA != 0);
        vmcs.write(VM_ENTRY_CONTROLS, caps.entry.adjust(entry.into_raw()));
    }

    fn write_controls(&self, vmcs: &CurrentVmcs<'_>) {
        let c = self.caps;
        let pin = PinControls::from_raw(0)
            .with_ext_intr_exiting(true)
            .with_nmi_exiting(true)
            .with_preemption_timer(c.has_preemption_timer());
        let proc2 = Proc2Controls::from_raw(0).with_enable_invpcid(c.has_invpcid());
        let secondary = proc2.into_raw() != 0;
        let proc = ProcControls::from_raw(0)
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
            .with_secondary(secondary);
        vmcs.write(PIN_BASED_VM_EXEC_CONTROL, c.pin.adjust(pin.into_raw()));
        vmcs.write(CPU_BASED_VM_EXEC_CONTROL, c.proc.adjust(proc.into_raw()));
        if secondary {
            vmcs.write(SECONDARY_VM_EXEC_CONTROL, c.proc2.adjust(proc2.into_raw()));
        }
        let exit = ExitControls::from_raw(0)
            .with_host_addr_space_size(true)
            .with_save_efer(true)
            .with_load_efer(true)
            .with_save_debug_controls(true);
        vmcs.write(VM_EXIT_CONTROLS, c.exit.adjust(exit.into_raw()));
        // #PF for the shadow MMU (all of them: mask = match = 0); #MC for the host; #DB and
        // #AC because their delivery can fault again with the same vector, which the CPU
        // would repeat forever in microcode with no exit (CVE-2015-8104, CVE-2015-5307).
        let intercepted = [vector::DB, vector::AC, vector::MC, vector::PF];
        let bitmap = intercepted
            .iter()
            .fold(0u32, |m, &v| m | 1u32.wrapping_shl(v.into()));
        vmcs.write(EXCEPTION_BITMAP, bitmap);
        vmcs.write(PAGE_FAULT_ERROR_CODE_MASK, 0);
        vmcs.write(PAGE_FAULT_ERROR_CODE_MATCH, 0);
        vmcs.write(CR3_TARGET_COUNT, 0);
        // The guest sees its own CR0/CR4 through the read shadows; every write exits.
        vmcs.write(CR0_GUEST_HOST_MASK, u64::MAX);
        vmcs.write(CR4_GUEST_HOST_MASK, u64::MAX);
        vmcs.write(VM_EXIT_MSR_STORE_COUNT, 0);
        vmcs.write(VM_EXIT_MSR_LOAD_COUNT, 0);
        vmcs.write(VM_ENTRY_MSR_LOAD_COUNT, 0);
        vmcs.write(VM_ENTRY_INTR_INFO_FIELD, 0);
        vmcs.write(TSC_OFFSET, 0);
    }

    /// Host state: this CPU's real registers, loaded by every VM exit.
    fn write_host_state(&self, vmcs: &CurrentVmcs<'_>) {
        let (gdt_base, idt_base, tr) = descriptor_tables();
        let cr0: u64;
        let cr3: u64;
        // SAFETY: Reading control registers has no side effects.
        unsafe {
            asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
            asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        }
        vmcs.write(HOST_CR0, cr0);
        vmcs.write(HOST_CR3, cr3);
        vmcs.write(HOST_CR4, insn::read_cr4());
        vmcs.write(HOST_CS_SELECTOR, KERNEL_CS);
        vmcs.write(HOST_SS_SELECTOR, KERNEL_DS);
        for f in [
            HOST_DS_SELECTOR,
            HOST_ES_SELECTOR,
            HOST_FS_SELECTOR,
            HOST_GS_SELECTOR,
        ] {
            vmcs.write(f, 0);
        }
        vmcs.write(HOST_TR_SELECTOR, tr);
        vmcs.write(HOST_TR_BASE, tss_base(gdt_base, tr));
        vmcs.write(HOST_GDTR_BASE, gdt_base);
        vmcs.write(HOST_IDTR_BASE, idt_base);
        vmcs.write(HOST_FS_BASE, glue::rdmsr(msr::FS_BASE).unwrap_or(0));
        vmcs.write(HOST_GS_BASE, glue::rdmsr(msr::GS_BASE).unwrap_or(0));
        // A 32-bit field: VMWRITE would ignore the upper half too.
        vmcs.write(
            HOST_IA32_SYSENTER_CS,
            glue::rdmsr(msr::SYSENTER_CS).unwrap_or(0) as u32,
        );
        vmcs.write(
            HOST_IA32_SYSENTER_ESP,
            glue::rdmsr(msr::SYSENTER_ESP).unwrap_or(0),
        );
        vmcs.write(
            HOST_IA32_SYSENTER_EIP,
            glue::rdmsr(msr::SYSENTER_EIP).unwrap_or(0),
        );
        vmcs.write(HOST_IA32_EFER, glue::rdmsr(msr::EFER).unwrap_or(0));
        // SAFETY: Only the address of the exit label is taken.
        vmcs.write(HOST_RIP, core::ptr::addr_of!(shadowvm_vmx_exit) as u64);
    }
}

// SAFETY: The raw pointers inside (MMU and page-cache pages) point to kernel pages owned
// by this vCPU alone, usable from any thread; all access goes through `&mut self`.
unsafe impl Send for VcpuCore {}

impl Drop for VcpuCore {
    fn drop(&mut self) {
        self.teardown();
    }
}

const KERNEL_CS: u16 = 0x10;
const KERNEL_DS: u16 = 0x18;

/// GDT base, IDT base and TR selector of this CPU.
fn descriptor_tables() -> (u64, u64, u16) {
    let mut gdt = [0u8; 10];
    let mut idt = [0u8; 10];
    let tr: u16;
    // SAFETY: SGDT/SIDT store 10 bytes into the buffers; STR reads a register.
    unsafe {
        asm!("sgdt [{}]", in(reg) gdt.as_mut_ptr(), options(nostack));
        asm!("sidt [{}]", in(reg) idt.as_mut_ptr(), options(nostack));
        asm!("str {0:x}", out(reg) tr, options(nomem, nostack));
    }
    let base = |b: &[u8; 10]| u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
    (base(&gdt), base(&idt), tr)
}

/// Base of the 64-bit TSS descriptor `tr` in the GDT at `gdt`.
fn tss_base(gdt: u64, tr: u16) -> u64 {
    let desc = gdt.wrapping_add((tr & !7) as u64) as *const u64;
    // SAFETY: The kernel's GDT is mapped and TR indexes its 16-byte TSS descriptor.
    let (lo, hi) = unsafe { (desc.read_unaligned(), desc.add(1).read_unaligned()) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}

/// MSRs the guest's instructions use directly but VMX does not switch (SWAPGS, SYSCALL):
/// the guest's values are in the CPU only while the window is open ([`HostState`] puts
/// the host's back).
const SYSCALL_MSRS: [u32; 5] = [
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
];

fn load_syscall_msrs(s: &GuestState) {
    for (msr, v) in
        SYSCALL_MSRS
            .into_iter()
            .zip([s.kernel_gs_base, s.star, s.lstar, s.cstar, s.sfmask])
    {
        wrmsr(msr, v);
    }
}

/// Saves what the guest can change without an exit (SWAPGS changes KERNEL_GS_BASE).
fn save_syscall_msrs(s: &mut GuestState) {
    s.kernel_gs_base = glue::rdmsr(msr::KERNEL_GS_BASE).unwrap_or(0);
}

/// The host state a VM exit does not restore, saved before a window and put back when
/// dropped, in the order the dependencies need: LDT before the selectors that may point
/// into it, GS before KERNEL_GS_BASE (loading GS through `load_gs_index` changes it),
/// breakpoint addresses before DR7, and the GDT/TSS limits last (KVM:
/// `vmx_prepare_switch_to_host`, `hw_breakpoint_restore`).
///
/// # Invariants
///
/// Interrupts are off for `'irq`; while the value lives the CPU may hold the guest's
/// syscall MSRs and, when `guest_drs` is set, the guest's DR0-3.
struct HostState<'irq> {
    irqs: &'irq IrqsOff,
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    ldt: u16,
    /// FS base, when FS holds a selector whose reload would change it.
    fs_base: u64,
    msrs: [u64; SYSCALL_MSRS.len()],
    dr7: u64,
    debugctl: u64,
    /// The host's DR0-3 and DR6, when the guest's breakpoints were loaded.
    host_drs: Option<[u64; 5]>,
}

impl<'irq> HostState<'irq> {
    /// Saves the host's state and loads the guest's breakpoint addresses if it has any
    /// enabled (DR7 itself is loaded by VM entry).
    fn save(irqs: &'irq IrqsOff, guest: &GuestState) -> Self {
        let (ds, es, fs, gs, ldt): (u16, u16, u16, u16, u16);
        // SAFETY: Reading segment selectors and LDTR has no side effects.
        unsafe {
            asm!("mov {0:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
            asm!("sldt {0:x}", out(reg) ldt, options(nomem, nostack, preserves_flags));
        }
        let mut msrs = [0; SYSCALL_MSRS.len()];
        for (v, msr) in msrs.iter_mut().zip(SYSCALL_MSRS) {
            *v = glue::rdmsr(msr).unwrap_or(0);
        }
        let dr7 = insn::read_dr::<7>();
        let host_drs = (guest.dr7 & x86::DR7_ENABLES != 0).then(|| {
            let host = [
                insn::read_dr::<0>(),
                insn::read_dr::<1>(),
                insn::read_dr::<2>(),
                insn::read_dr::<3>(),
                insn::read_dr::<6>(),
            ];
            // SAFETY: Interrupts are off and `drop` writes the host's values back. The
            // host's breakpoints are disabled first (as KVM does), so none fires on a guest
            // address before VM entry loads the guest's DR7.
            unsafe {
                insn::write_dr::<7>(x86::DR7_RESET);
                insn::write_dr::<0>(guest.dr[0]);
                insn::write_dr::<1>(guest.dr[1]);
                insn::write_dr::<2>(guest.dr[2]);
                insn::write_dr::<3>(guest.dr[3]);
            }
            host
        });
        Self {
            irqs,
            ds,
            es,
            fs,
            gs,
            ldt,
            fs_base: if fs != 0 {
                glue::rdmsr(msr::FS_BASE).unwrap_or(0)
            } else {
                0
            },
            msrs,
            dr7,
            debugctl: glue::rdmsr(msr::IA32_DEBUGCTL).unwrap_or(0),
            host_drs,
        }
    }
}

impl Drop for HostState<'_> {
    fn drop(&mut self) {
        // SAFETY: These are the values the CPU held before the window, valid in the same
        // GDT/LDT; interrupts are off (type invariant) so nothing observes the
        // intermediate state. GS goes through `load_gs_index`, which keeps the kernel's
        // GS base.
        unsafe {
            asm!("mov ds, {0:x}", in(reg) self.ds, options(nostack, preserves_flags));
            asm!("mov es, {0:x}", in(reg) self.es, options(nostack, preserves_flags));
            if self.ldt != 0 {
                asm!("lldt {0:x}", in(reg) self.ldt, options(nostack, preserves_flags));
            }
        }
        // A VM exit loads null FS/GS selectors (HOST_FS/GS_SELECTOR): a 32-bit task's TLS
        // selectors would be gone when it returns to user mode.
        glue::load_user_segments(self.irqs, self.fs, self.gs, self.fs_base);
        for (msr, v) in SYSCALL_MSRS.into_iter().zip(self.msrs) {
            wrmsr(msr, v);
        }
        if let Some([dr0, dr1, dr2, dr3, dr6]) = self.host_drs {
            // SAFETY: The host's own values, saved in `save` with interrupts off.
            unsafe {
                insn::write_dr::<0>(dr0);
                insn::write_dr::<1>(dr1);
                insn::write_dr::<2>(dr2);
                insn::write_dr::<3>(dr3);
                insn::write_dr::<6>(dr6);
            }
        }
        // A VM exit clears DR7 and IA32_DEBUGCTL: the host's breakpoints (ptrace, perf)
        // and branch tracing would silently stop on this CPU.
        if self.dr7 != x86::DR7_RESET {
            // SAFETY: The host's own DR7, its breakpoint addresses restored just above.
            unsafe { insn::write_dr::<7>(self.dr7) };
        }
        if self.debugctl != 0 {
            wrmsr(msr::IA32_DEBUGCTL, self.debugctl);
        }
        glue::restore_host_descriptors(self.irqs);
    }
}

/// Writes an MSR of the vCPU's fixed set: the syscall MSRs (present on every x86-64 CPU
/// with VMX), and DEBUGCTL with the host's own value, read from the CPU.
fn wrmsr(index: u32, v: u64) {
    let (lo, hi) = (v as u32, (v >> 32) as u32);
    // SAFETY: Called with interrupts off around a window; the values are the host's own or
    // the guest's, checked canonical at WRMSR emulation.
    unsafe { asm!("wrmsr", in("ecx") index, in("eax") lo, in("edx") hi, options(nostack)) };
}
