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
use crate::uapi;
use crate::vm::GuestRam;
use crate::vmx::caps::VmxCaps;
use crate::vmx::insn;
use crate::vmx::vmcs::*;
use crate::vmx::window::{CurrentVmcs, VmxRegion, VmxRoot};
use core::arch::asm;
use exits::{Event, ExitInfo, Handled};
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
            pages: KVec::with_capacity(CACHE_PAGES, GFP_KERNEL)?,
            low: KVec::with_capacity(CACHE_LOW_PAGES, GFP_KERNEL)?,
        })
    }

    fn refill(&mut self) -> Result {
        for (list, want, low) in [(&mut self.pages, CACHE_PAGES, false), (&mut self.low, CACHE_LOW_PAGES, true)] {
            while list.len() < want {
                let (ptr, hpa) = glue::alloc_table_page(low).ok_or(ENOMEM)?;
                // INVARIANT: a fresh zeroed page; capacity was reserved in `new`.
                if let Err(e) = list.push(HostPage { ptr, hpa }, GFP_KERNEL) {
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
        if low { self.low.pop() } else { self.pages.pop() }
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
pub(crate) enum WindowEnd {
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
    MmioRead { linear: u64, len: u8 },
}

/// One vCPU: its VMX regions (borrowed by the window while it is open) and the rest.
///
/// # Invariants
///
/// `vmxon` and `vmcs` are tagged with this CPU model's revision identifier; the VMCS is
/// current on no CPU outside a window.
pub(crate) struct Vcpu {
    vmxon: VmxRegion,
    vmcs: VmxRegion,
    cpu: VcpuCore,
}

/// Everything of a vCPU but its VMX regions: guest state, MMU, pending events.
///
/// # Invariants
///
/// `state` holds the guest state between windows (see [`GuestState`]).
pub(crate) struct VcpuCore {
    pub(crate) state: GuestState,
    /// The guest's x87/SSE state (FXSAVE image) between windows.
    fpu: KBox<FxArea>,
    pub(crate) mmu: KBox<Mmu>,
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
    /// VMX-preemption timer value for one entry: about 1 ms of guest time.
    preemption_ticks: u64,
    pub(crate) stats: VcpuStats,
}

#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// The VMX-preemption timer value for about 1 ms. The timer bounds how long one entry can
/// keep the CPU even if an external interrupt does not cause a VM exit (Bochs 2.7 delivers
/// none while the guest has RFLAGS.IF=0, unlike the SDM); on hardware it is a backstop.
fn preemption_ticks(caps: &VmxCaps) -> u64 {
    // SAFETY: `tsc_khz` is written once during boot calibration and only read afterwards.
    let khz = unsafe { kernel::bindings::tsc_khz } as u64;
    let ticks_per_ms = if khz == 0 { 1 << 21 } else { khz };
    core::cmp::max(ticks_per_ms >> caps.preemption_timer_rate(), 1)
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

impl core::ops::Deref for Vcpu {
    type Target = VcpuCore;
    fn deref(&self) -> &VcpuCore {
        &self.cpu
    }
}

impl core::ops::DerefMut for Vcpu {
    fn deref_mut(&mut self) -> &mut VcpuCore {
        &mut self.cpu
    }
}

impl Vcpu {
    pub(crate) fn new(caps: &'static VmxCaps, cfg: mmu::Config) -> Result<KBox<Self>> {
        let mut cfg = cfg;
        cfg.maxphyaddr = guest_maxphyaddr();
        cfg.gb_pages = cpuid::has_gb_pages();
        let mut fpu = KBox::new(FxArea([0; 512]), GFP_KERNEL)?;
        // FXSAVE image of a CPU after reset: FCW 0x37f, MXCSR 0x1f80.
        fpu.0[0] = 0x7f;
        fpu.0[1] = 0x03;
        fpu.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Ok(KBox::new(
            Self {
                vmxon: VmxRegion::new(caps)?,
                vmcs: VmxRegion::new(caps)?,
                cpu: VcpuCore {
                state: GuestState::reset(),
                fpu,
                mmu: KBox::new(Mmu::new(cfg), GFP_KERNEL)?,
                cache: PageCache::new()?,
                caps,
                event: None,
                pending_exit: None,
                completion: Completion::None,
                paging_dirty: true,
                triple_fault: false,
                mmu_failed: None,
                busy_logged: false,
                preemption_ticks: preemption_ticks(caps),
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
            GFP_KERNEL,
        )?)
    }

    /// RUN: runs the guest until an exit for userspace (`Ok`, run page filled in), a
    /// signal (`EINTR`), or the end of the time slice (`Ok`, exit reason INTR).
    pub(crate) fn run(&mut self, ram: &GuestRam, run: &mut uapi::Run) -> Result {
        self.cpu.complete(ram, run);
        let signal = || kernel::current!().signal_pending();
        if run.immediate_exit != 0 || signal() {
            let cause = if run.immediate_exit != 0 { uapi::SHADOWVM_INTR_IMMEDIATE_EXIT } else { uapi::SHADOWVM_INTR_SIGNAL };
            exits::set_intr(run, cause);
            return Err(EINTR);
        }
        let slice_end = glue::jiffies().wrapping_add(kernel::time::msecs_to_jiffies(crate::run_slice_ms()) as usize);
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
            self.cpu.stats.cache_refills += 1;
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
        cpu.stats.windows += 1;
        let _fpu = FpuOwned::begin();
        let irqs = IrqsOff::save();
        let host = HostSegments::save();
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
                let end = cpu.in_window(&vmcs, ram, run);
                drop(vmcs);
                end
            }
            Err(e) => {
                pr_err!("RUN: {e}\n");
                Err(e.errno())
            }
        };
        drop(root);
        host.restore(&irqs);
        let nmi = matches!(end, Ok((_, true)));
        if nmi {
            // An NMI arrived while the guest ran and caused the exit: deliver it to the host
            // through its own handler, as KVM did before it called the handler directly.
            // SAFETY: Interrupts are off, we are out of VMX operation with the host's
            // descriptor tables loaded; the NMI handler copes with an INT 2 entry.
            unsafe { asm!("int 2") };
        }
        drop(irqs);
        end.map(|(e, _)| e)
    }

}

impl VcpuCore {
    /// SET_REGS: checked values replace the registers; a pending completion (IN, MMIO
    /// read, hypercall) is dropped, as the ABI says.
    pub(crate) fn set_regs(&mut self, r: &uapi::Regs) -> bool {
        let ok = self.state.set_regs(r);
        if ok {
            self.completion = Completion::None;
        }
        ok
    }

    /// SET_SREGS (values already checked): the MMU rebuilds at the next entry, and anything
    /// queued for the old state is dropped.
    pub(crate) fn set_sregs(&mut self, s: &uapi::Sregs) {
        self.state.set_sregs(s);
        self.paging_dirty = true;
        self.pending_exit = None;
        self.event = None;
        self.completion = Completion::None;
    }

    /// Frees the shadow tables (the VM is going away).
    pub(crate) fn teardown(&mut self) {
        self.mmu.teardown(&mut self.cache);
    }

    /// Finishes what userspace completed: the data of an IN or an MMIO read, the result
    /// of a hypercall.
    fn complete(&mut self, ram: &GuestRam, run: &mut uapi::Run) {
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
            Completion::MmioRead { linear, len } => self.complete_mmio(ram, run, linear, len),
        }
    }

    /// Inside the window: VMCS setup, then enter/exit/handle until the window must close.
    /// Returns how it ended and whether an NMI must be re-raised for the host.
    fn in_window(&mut self, vmcs: &CurrentVmcs<'_>, ram: &GuestRam, run: &mut uapi::Run) -> Result<(WindowEnd, bool)> {
        self.write_controls(vmcs);
        self.write_host_state(vmcs);
        self.state.load(vmcs);
        let msrs = SwappedMsrs::enter(&self.state);
        // SAFETY: The FPU is ours (FpuOwned held by the caller); the area is a valid,
        // 16-aligned FXSAVE image (from reset or a previous FXSAVE).
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.fpu.0.as_ptr(), options(nostack, readonly)) };

        let mut launched = false;
        let result = loop {
            if self.paging_dirty {
                match self.rebuild_paging(ram) {
                    Ok(()) => self.paging_dirty = false,
                    Err(e) => {
                        self.report_mmu_failure(run);
                        break Ok((e, false));
                    }
                }
            }
            self.sync_paging(vmcs);
            if let Some(info) = self.pending_exit.take() {
                match self.handle(ram, run, info) {
                    Handled::Resume | Handled::Raised => {}
                    Handled::End(end) => break Ok((end, false)),
                    Handled::NeedMemory => {
                        self.pending_exit = Some(info);
                        break Ok((WindowEnd::NeedMemory, false));
                    }
                }
                self.sync_paging(vmcs);
            }
            if glue::need_resched() {
                break Ok((WindowEnd::Interrupted, false));
            }
            if vmcs.failed() {
                exits::set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT, 0, 0, [self.state.rip, 0, 0, 0]);
                break Ok((WindowEnd::User, false));
            }
            self.inject_event(vmcs);
            self.state.load_volatile(vmcs);
            if self.caps.has_preemption_timer() {
                vmcs.write(VMX_PREEMPTION_TIMER_VALUE, self.preemption_ticks);
            }
            self.stats.entries += 1;
            // SAFETY: The VMCS is current with complete host, control and guest state;
            // HOST_RIP points at shadowvm_vmx_exit; `gpr` has the 17 slots the routine uses.
            let failed = unsafe { shadowvm_vmx_run(self.state.gpr.as_mut_ptr(), launched as u64) };
            launched = true;
            if failed != 0 {
                let err = vmcs.read(VM_INSTRUCTION_ERROR);
                exits::set_fail_entry(run, err, 0);
                break Ok((WindowEnd::User, false));
            }
            self.state.save_volatile(vmcs);
            let info = ExitInfo::read(vmcs);
            self.event = None;
            if let Some(reason) = self.stats.exits.get_mut(info.basic_reason() as usize) {
                *reason += 1;
            }
            if info.is_nmi() {
                break Ok((WindowEnd::Interrupted, true));
            }
            match self.handle(ram, run, info) {
                Handled::Resume | Handled::Raised => {}
                Handled::End(end) => break Ok((end, false)),
                Handled::NeedMemory => {
                    self.pending_exit = Some(info);
                    break Ok((WindowEnd::NeedMemory, false));
                }
            }
        };
        // SAFETY: As for FXRSTOR above; the area is writable and 16-aligned.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.fpu.0.as_mut_ptr(), options(nostack)) };
        msrs.leave(&mut self.state);
        self.state.save(vmcs);
        result
    }

    /// Builds the MMU state for the current guest registers (first entry, SET_SREGS).
    fn rebuild_paging(&mut self, ram: &GuestRam) -> core::result::Result<(), WindowEnd> {
        let s = &self.state;
        match self.mmu.set_mode(&mut self.cache, ram, s.cr0, s.cr4, s.efer) {
            Err(mmu::MmuError::NeedMemory) => return Err(WindowEnd::NeedMemory),
            Err(e @ mmu::MmuError::LimitReached) => {
                self.mmu_failed = Some(e);
                return Err(WindowEnd::User);
            }
            Ok(mmu::CtlOutcome::Gp) => self.queue_exception(exits::GP, Some(0), None),
            Ok(mmu::CtlOutcome::Ok) => {}
        }
        match self.mmu.set_cr3(&mut self.cache, ram, self.state.cr3) {
            Err(mmu::MmuError::NeedMemory) => Err(WindowEnd::NeedMemory),
            Err(e @ mmu::MmuError::LimitReached) => {
                self.mmu_failed = Some(e);
                Err(WindowEnd::User)
            }
            Ok(mmu::CtlOutcome::Gp) => {
                self.queue_exception(exits::GP, Some(0), None);
                Ok(())
            }
            Ok(mmu::CtlOutcome::Ok) => Ok(()),
        }
    }

    /// Programs what the MMU decides: the shadow root, the real CR0/CR4/EFER, IA-32e mode,
    /// and the read shadows that show the guest its own CR0/CR4.
    fn sync_paging(&self, vmcs: &CurrentVmcs<'_>) {
        let hw = self.mmu.hw_state();
        let s = &self.state;
        let caps = self.caps;
        let cr0 = ((s.cr0 | hw.cr0_set | caps.cr0_fixed0) & caps.cr0_fixed1) & !(state::CR0_NW | state::CR0_CD);
        let cr4 = (((s.cr4 & !hw.cr4_mask) | hw.cr4) | caps.cr4_fixed0) & caps.cr4_fixed1;
        let efer = (s.efer & !hw.efer_mask) | hw.efer;
        vmcs.write(GUEST_CR0, cr0);
        vmcs.write(GUEST_CR4, cr4);
        vmcs.write(GUEST_CR3, hw.cr3);
        vmcs.write(GUEST_IA32_EFER, efer);
        vmcs.write(CR0_READ_SHADOW, s.cr0);
        vmcs.write(CR4_READ_SHADOW, s.cr4);
        let entry = self.caps.entry.must_be_one | ENTRY_LOAD_EFER | if efer & state::EFER_LMA != 0 { ENTRY_IA32E_MODE } else { 0 };
        vmcs.write(VM_ENTRY_CONTROLS, (entry & self.caps.entry.may_be_one) as u64);
    }

    fn write_controls(&self, vmcs: &CurrentVmcs<'_>) {
        let c = self.caps;
        let mut pin = PIN_EXT_INTR_EXITING | PIN_NMI_EXITING;
        if c.has_preemption_timer() {
            pin |= PIN_PREEMPTION_TIMER;
        }
        let mut proc = PROC_HLT_EXITING | PROC_INVLPG_EXITING | PROC_MWAIT_EXITING | PROC_RDPMC_EXITING
            | PROC_CR3_LOAD_EXITING | PROC_CR3_STORE_EXITING | PROC_CR8_LOAD_EXITING
            | PROC_CR8_STORE_EXITING | PROC_MOV_DR_EXITING | PROC_UNCOND_IO_EXITING | PROC_MONITOR_EXITING;
        let proc2 = if c.has_invpcid() { PROC2_ENABLE_INVPCID } else { 0 };
        if proc2 != 0 {
            proc |= PROC_SECONDARY;
        }
        vmcs.write(PIN_BASED_VM_EXEC_CONTROL, ((pin | c.pin.must_be_one) & c.pin.may_be_one) as u64);
        vmcs.write(CPU_BASED_VM_EXEC_CONTROL, ((proc | c.proc.must_be_one) & c.proc.may_be_one) as u64);
        if proc2 != 0 {
            vmcs.write(SECONDARY_VM_EXEC_CONTROL, ((proc2 | c.proc2.must_be_one) & c.proc2.may_be_one) as u64);
        }
        let exit = EXIT_HOST_ADDR_SPACE_SIZE | EXIT_SAVE_EFER | EXIT_LOAD_EFER;
        vmcs.write(VM_EXIT_CONTROLS, ((exit | c.exit.must_be_one) & c.exit.may_be_one) as u64);
        // Only #PF is intercepted, and all of them (mask = match = 0).
        vmcs.write(EXCEPTION_BITMAP, 1 << exits::PF);
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
        for f in [HOST_DS_SELECTOR, HOST_ES_SELECTOR, HOST_FS_SELECTOR, HOST_GS_SELECTOR] {
            vmcs.write(f, 0);
        }
        vmcs.write(HOST_TR_SELECTOR, tr as u64);
        vmcs.write(HOST_TR_BASE, tss_base(gdt_base, tr));
        vmcs.write(HOST_GDTR_BASE, gdt_base);
        vmcs.write(HOST_IDTR_BASE, idt_base);
        vmcs.write(HOST_FS_BASE, glue::rdmsr(MSR_FS_BASE).unwrap_or(0));
        vmcs.write(HOST_GS_BASE, glue::rdmsr(MSR_GS_BASE).unwrap_or(0));
        vmcs.write(HOST_IA32_SYSENTER_CS, glue::rdmsr(MSR_SYSENTER_CS).unwrap_or(0));
        vmcs.write(HOST_IA32_SYSENTER_ESP, glue::rdmsr(MSR_SYSENTER_ESP).unwrap_or(0));
        vmcs.write(HOST_IA32_SYSENTER_EIP, glue::rdmsr(MSR_SYSENTER_EIP).unwrap_or(0));
        vmcs.write(HOST_IA32_EFER, glue::rdmsr(MSR_EFER).unwrap_or(0));
        // SAFETY: Only the address of the exit label is taken.
        vmcs.write(HOST_RIP, core::ptr::addr_of!(shadowvm_vmx_exit) as u64);
    }

    /// Queues an exception for the next entry, merging it with an event that was being
    /// delivered when the exit happened (SDM 6.15, "double fault" rules).
    pub(crate) fn queue_exception(&mut self, vector: u8, error_code: Option<u32>, cr2: Option<u64>) {
        self.stats.injected_exceptions += 1;
        let new = Event::exception(vector, error_code, cr2);
        self.event = match self.event {
            None => Some(new),
            Some(old) => exits::merge_events(old, new),
        };
        self.triple_fault = self.event.is_none();
    }

    fn inject_event(&mut self, vmcs: &CurrentVmcs<'_>) {
        let Some(ev) = self.event else {
            vmcs.write(VM_ENTRY_INTR_INFO_FIELD, 0);
            return;
        };
        if let Some(cr2) = ev.cr2 {
            self.state.gpr[state::CR2] = cr2;
        }
        vmcs.write(VM_ENTRY_INTR_INFO_FIELD, ev.info as u64);
        vmcs.write(VM_ENTRY_EXCEPTION_ERROR_CODE, ev.error_code as u64);
        vmcs.write(VM_ENTRY_INSTRUCTION_LEN, ev.instruction_len as u64);
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

const KERNEL_CS: u64 = 0x10;
const KERNEL_DS: u64 = 0x18;
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
pub(crate) const MSR_CSTAR: u32 = 0xc000_0083;
pub(crate) const MSR_SFMASK: u32 = 0xc000_0084;
pub(crate) const MSR_FS_BASE: u32 = 0xc000_0100;
pub(crate) const MSR_GS_BASE: u32 = 0xc000_0101;
pub(crate) const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub(crate) const MSR_SYSENTER_CS: u32 = 0x174;
pub(crate) const MSR_SYSENTER_ESP: u32 = 0x175;
pub(crate) const MSR_SYSENTER_EIP: u32 = 0x176;

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
    let desc = (gdt + (tr & !7) as u64) as *const u64;
    // SAFETY: The kernel's GDT is mapped and TR indexes its 16-byte TSS descriptor.
    let (lo, hi) = unsafe { (desc.read_unaligned(), desc.add(1).read_unaligned()) };
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}

/// Host selectors and LDT that a VM exit does not restore (it loads null or the host
/// fields), saved before the window and reloaded after it, with the GDT and TSS limits.
struct HostSegments {
    ds: u16,
    es: u16,
    ldt: u16,
}

impl HostSegments {
    fn save() -> Self {
        let (ds, es, ldt): (u16, u16, u16);
        // SAFETY: Reading segment selectors and LDTR has no side effects.
        unsafe {
            asm!("mov {0:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
            asm!("mov {0:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
            asm!("sldt {0:x}", out(reg) ldt, options(nomem, nostack, preserves_flags));
        }
        Self { ds, es, ldt }
    }

    fn restore(&self, irqs: &IrqsOff) {
        // SAFETY: These are the values the CPU held before the window, valid in the same
        // GDT; interrupts are off so nothing observes the intermediate state.
        unsafe {
            asm!("mov ds, {0:x}", in(reg) self.ds, options(nostack, preserves_flags));
            asm!("mov es, {0:x}", in(reg) self.es, options(nostack, preserves_flags));
            if self.ldt != 0 {
                asm!("lldt {0:x}", in(reg) self.ldt, options(nostack, preserves_flags));
            }
        }
        glue::restore_host_descriptors(irqs);
    }
}

/// MSRs the guest's instructions use directly but VMX does not switch (SWAPGS, SYSCALL):
/// the guest's values are in the CPU only while the window is open.
struct SwappedMsrs {
    host: [(u32, u64); 5],
}

impl SwappedMsrs {
    fn enter(s: &GuestState) -> Self {
        let list = [
            (MSR_KERNEL_GS_BASE, s.kernel_gs_base),
            (MSR_STAR, s.star),
            (MSR_LSTAR, s.lstar),
            (MSR_CSTAR, s.cstar),
            (MSR_SFMASK, s.sfmask),
        ];
        let mut host = [(0, 0); 5];
        for (i, (msr, guest)) in list.into_iter().enumerate() {
            host[i] = (msr, glue::rdmsr(msr).unwrap_or(0));
            wrmsr(msr, guest);
        }
        Self { host }
    }
}

impl SwappedMsrs {
    /// Saves the guest's values (SWAPGS changes KERNEL_GS_BASE) and restores the host's.
    fn leave(self, s: &mut GuestState) {
        s.kernel_gs_base = glue::rdmsr(MSR_KERNEL_GS_BASE).unwrap_or(0);
        for (msr, v) in self.host {
            wrmsr(msr, v);
        }
    }
}

/// Writes an MSR from the fixed list above (all exist on every x86-64 CPU with VMX).
fn wrmsr(msr: u32, v: u64) {
    // SAFETY: Called with interrupts off inside a window for the syscall/swapgs MSRs only;
    // the values are canonical (checked at WRMSR emulation) or the host's own.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}
