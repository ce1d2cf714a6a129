// SPDX-License-Identifier: GPL-2.0

//! VM-exit handling: what each exit reason means for the guest, inside the window.
//!
//! Handlers run with interrupts off and must not sleep. They change [`super::GuestState`]
//! (advance RIP, write registers), queue an exception for the next entry, call the MMU
//! engine, or end the window with an exit for userspace described in the run page.

use super::state::{self, CS};
use super::{Completion, VcpuCore, WindowEnd};
use crate::emulate::{self, CodeSize, MmioData};
use crate::mmu::access::EngineAccess;
use crate::mmu::{self, Access, GuestMemory, PfOutcome};
use crate::uapi;
use crate::vm::GuestRam;
use crate::vmx::vmcs::*;
use crate::glue;
use crate::vmx::window::CurrentVmcs;

/// REP iterations emulated per exit: bounded so interrupts stay off only briefly.
const REP_CHUNK: u32 = 1024;

pub(crate) const DB: u8 = 1;
pub(crate) const UD: u8 = 6;
pub(crate) const DF: u8 = 8;
pub(crate) const GP: u8 = 13;
pub(crate) const PF: u8 = 14;
pub(crate) const AC: u8 = 17;
pub(crate) const MC: u8 = 18;

/// DR6 bits that read as 1 unless a debug exception reports them (and the fixed ones).
const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.B0-B3: which breakpoint matched.
const DR6_TRAP_BITS: u64 = 0xf;
/// DR6.BD: the next instruction would access a debug register (DR7.GD was set).
const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step.
const DR6_BS: u64 = 1 << 14;
const DR7_GD: u64 = 1 << 13;
const RFLAGS_TF: u64 = 1 << 8;
/// Interruptibility: blocking by STI and by MOV SS.
const BLOCKING_STI_MOVSS: u64 = 3;

/// What a handler decided.
pub(crate) enum Handled {
    /// Re-enter the guest.
    Resume,
    /// Re-enter the guest, delivering the exception just queued (the instruction did
    /// not complete: RIP stays).
    Raised,
    /// Close the window.
    End(WindowEnd),
    /// The MMU's page cache ran dry; nothing changed. Retry the same exit after a refill.
    NeedMemory,
}

/// Exit information, copied out of the VMCS right after the exit (so an exit can be
/// handled again in a later window).
#[derive(Clone, Copy)]
pub(crate) struct ExitInfo {
    pub(crate) reason: u32,
    pub(crate) qualification: u64,
    intr_info: u32,
    intr_error: u32,
    vectoring_info: u32,
    vectoring_error: u32,
    instruction_len: u32,
    instruction_info: u32,
}

impl ExitInfo {
    pub(crate) fn read(vmcs: &CurrentVmcs<'_>) -> Self {
        Self {
            reason: vmcs.read(VM_EXIT_REASON) as u32,
            qualification: vmcs.read(EXIT_QUALIFICATION),
            intr_info: vmcs.read(VM_EXIT_INTR_INFO) as u32,
            intr_error: vmcs.read(VM_EXIT_INTR_ERROR_CODE) as u32,
            vectoring_info: vmcs.read(IDT_VECTORING_INFO_FIELD) as u32,
            vectoring_error: vmcs.read(IDT_VECTORING_ERROR_CODE) as u32,
            instruction_len: vmcs.read(VM_EXIT_INSTRUCTION_LEN) as u32,
            instruction_info: vmcs.read(VMX_INSTRUCTION_INFO) as u32,
        }
    }

    pub(crate) fn basic_reason(&self) -> u32 {
        self.reason & 0xffff
    }

    /// An NMI (meant for the host) caused the exit.
    pub(crate) fn is_nmi(&self) -> bool {
        self.basic_reason() == EXIT_EXCEPTION_NMI
            && self.intr_info & INTR_INFO_VALID != 0
            && (self.intr_info >> 8) & 7 == INTR_TYPE_NMI
    }

    /// A machine check (meant for the host) caused the exit, in the guest or during VM
    /// entry.
    pub(crate) fn is_machine_check(&self) -> bool {
        self.basic_reason() == EXIT_MCE_DURING_ENTRY
            || (self.basic_reason() == EXIT_EXCEPTION_NMI
                && self.intr_info & INTR_INFO_VALID != 0
                && (self.intr_info >> 8) & 7 == INTR_TYPE_HW_EXCEPTION
                && self.intr_info as u8 == MC)
    }
}

/// An event to inject at VM entry, in the VM-entry interruption-information format.
#[derive(Clone, Copy)]
pub(crate) struct Event {
    pub(crate) info: u32,
    pub(crate) error_code: u32,
    pub(crate) instruction_len: u32,
    /// The guest CR2 to set with a #PF.
    pub(crate) cr2: Option<u64>,
}

impl Event {
    pub(crate) fn exception(vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Self {
        let ec = if error_code.is_some() { INTR_INFO_ERROR_CODE } else { 0 };
        Self {
            info: INTR_INFO_VALID | (INTR_TYPE_HW_EXCEPTION << 8) | ec | vector as u32,
            error_code: error_code.unwrap_or(0),
            instruction_len: 0,
            cr2,
        }
    }

    fn vector(&self) -> u8 {
        self.info as u8
    }

    fn is_hw_exception(&self) -> bool {
        (self.info >> 8) & 7 == INTR_TYPE_HW_EXCEPTION
    }
}

/// Exception classes for the double-fault rules (SDM 6.15, table 6-5).
#[derive(PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

fn class(vector: u8) -> Class {
    match vector {
        0 | 10 | 11 | 12 | 13 => Class::Contributory,
        14 => Class::PageFault,
        _ => Class::Benign,
    }
}

/// `new` was raised while `old` was being delivered. Returns the event to deliver, or
/// `None` for a triple fault (a fault while delivering a double fault).
pub(crate) fn merge_events(old: Event, new: Event) -> Option<Event> {
    if !old.is_hw_exception() {
        // Interrupts and software interrupts: the exception is delivered; a software
        // interrupt re-executes after the handler returns, as on hardware.
        return Some(new);
    }
    if old.vector() == DF {
        return None;
    }
    let (o, n) = (class(old.vector()), class(new.vector()));
    let double = (o == Class::Contributory && n == Class::Contributory)
        || (o == Class::PageFault && n != Class::Benign);
    Some(if double { Event::exception(DF, Some(0), None) } else { new })
}

pub(crate) fn set_intr(run: &mut uapi::Run, cause: u32) {
    run.exit_reason = uapi::SHADOWVM_EXIT_INTR;
    run.exit.set(uapi::ExitIntr { cause, padding: 0 });
}

pub(crate) fn set_fail_entry(run: &mut uapi::Run, reason: u64, qualification: u64) {
    run.exit_reason = uapi::SHADOWVM_EXIT_FAIL_ENTRY;
    run.exit.set(uapi::ExitFailEntry {
        hardware_entry_failure_reason: reason,
        exit_qualification: qualification,
        // SAFETY: No preconditions.
        cpu: unsafe { kernel::bindings::raw_smp_processor_id() },
        padding: 0,
    });
}

pub(crate) fn set_internal_error(run: &mut uapi::Run, suberror: u32, reason: u32, qualification: u64, data: [u64; 4]) {
    run.exit_reason = uapi::SHADOWVM_EXIT_INTERNAL_ERROR;
    run.exit.set(uapi::ExitInternalError { suberror, vmx_exit_reason: reason, exit_qualification: qualification, data });
}

fn user(run: &mut uapi::Run, reason: u32) -> Handled {
    run.exit_reason = reason;
    Handled::End(WindowEnd::User)
}

impl VcpuCore {
    /// Dispatches one exit.
    pub(super) fn handle(&mut self, vmcs: &CurrentVmcs<'_>, ram: &GuestRam, run: &mut uapi::Run, info: ExitInfo) -> Handled {
        if info.reason & (1 << 31) != 0 {
            set_fail_entry(run, info.reason as u64, info.qualification);
            return Handled::End(WindowEnd::User);
        }
        let handled = match info.basic_reason() {
            EXIT_EXCEPTION_NMI => self.exception(vmcs, ram, run, &info),
            // The host gets the CPU back: a pending interrupt is taken when the window closes.
            EXIT_EXTERNAL_INTERRUPT | EXIT_PREEMPTION_TIMER => Handled::End(WindowEnd::Interrupted),
            EXIT_TRIPLE_FAULT => {
                self.event = None;
                user(run, uapi::SHADOWVM_EXIT_SHUTDOWN)
            }
            EXIT_CPUID => {
                let (a, b, c, d) = super::cpuid::guest_cpuid(self.state.gpr[0] as u32, self.state.gpr[1] as u32);
                self.state.gpr[0] = a as u64;
                self.state.gpr[3] = b as u64;
                self.state.gpr[1] = c as u64;
                self.state.gpr[2] = d as u64;
                self.skip(&info)
            }
            EXIT_HLT => {
                self.skip(&info);
                user(run, uapi::SHADOWVM_EXIT_HLT)
            }
            EXIT_INVD => self.skip(&info),
            EXIT_INVLPG => {
                self.mmu.invlpg(ram, info.qualification);
                self.skip(&info)
            }
            EXIT_INVPCID => self.invpcid(vmcs, ram, &info),
            EXIT_RDPMC => self.raise(GP, Some(0), None),
            EXIT_VMCALL => {
                let g = &self.state.gpr;
                let hc = uapi::ExitHypercall { nr: g[0], args: [g[3], g[1], g[2], g[6], g[7], g[8]], ret: 0 };
                run.exit.set(hc);
                self.completion = Completion::Hypercall;
                self.skip(&info);
                user(run, uapi::SHADOWVM_EXIT_HYPERCALL)
            }
            // No nested VMX, no SMX, no MONITOR/MWAIT, no XSAVE: #UD, as on a CPU without them.
            EXIT_GETSEC | EXIT_VMCLEAR..=EXIT_VMXON | EXIT_INVEPT | EXIT_INVVPID | EXIT_MWAIT | EXIT_MONITOR | EXIT_XSETBV => {
                self.raise(UD, None, None)
            }
            EXIT_CR_ACCESS => self.cr_access(ram, &info),
            EXIT_DR_ACCESS => self.dr_access(&info),
            EXIT_IO => self.io(run, &info),
            EXIT_RDMSR => self.rdmsr(vmcs, &info),
            EXIT_WRMSR => self.wrmsr(vmcs, ram, &info),
            EXIT_INVALID_GUEST_STATE | EXIT_MSR_LOADING | EXIT_MCE_DURING_ENTRY => {
                set_fail_entry(run, info.reason as u64, info.qualification);
                Handled::End(WindowEnd::User)
            }
            EXIT_TASK_SWITCH => {
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT, info.reason, info.qualification, [self.state.rip, 0, 0, 0]);
                Handled::End(WindowEnd::User)
            }
            _ => {
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT, info.reason, info.qualification, [self.state.rip, 0, 0, 0]);
                Handled::End(WindowEnd::User)
            }
        };
        self.report_mmu_failure(run);
        if self.triple_fault {
            // A fault while delivering a double fault: the CPU would shut down.
            self.triple_fault = false;
            self.event = None;
            return user(run, uapi::SHADOWVM_EXIT_SHUTDOWN);
        }
        handled
    }

    /// An event whose delivery the exit interrupted is delivered again, unless the handler
    /// raises something that merges with it. Called for every exit, including those the
    /// host takes (NMI, machine check), so no event of the guest is lost.
    pub(super) fn note_vectoring(&mut self, info: &ExitInfo) {
        if info.vectoring_info & INTR_INFO_VALID == 0 {
            return;
        }
        let kind = (info.vectoring_info >> 8) & 7;
        let len = match kind {
            INTR_TYPE_SW_INTR | INTR_TYPE_PRIV_SW_EXCEPTION | INTR_TYPE_SW_EXCEPTION => info.instruction_len,
            _ => 0,
        };
        self.event = Some(Event {
            info: info.vectoring_info & !(1 << 12),
            error_code: info.vectoring_error,
            instruction_len: len,
            cr2: None,
        });
    }

    /// An MMU event failed for good (`max_shadow_pages` reached with nothing to free):
    /// the run ends; `report_mmu_failure` tells userspace.
    fn mmu_failed(&mut self, e: mmu::MmuError) -> Handled {
        self.mmu_failed = Some(e);
        Handled::End(WindowEnd::User)
    }

    /// Fills in the internal error (suberror MMU, data: RIP, engine error code) for an
    /// MMU failure recorded by `mmu_failed`.
    pub(super) fn report_mmu_failure(&mut self, run: &mut uapi::Run) {
        if let Some(e) = self.mmu_failed.take() {
            let data = [self.state.rip, e.code(), 0, 0];
            set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_MMU, 0, e.code(), data);
        }
    }

    /// Advances RIP past the exiting instruction; an instruction that completes ends any
    /// STI/MOV SS interrupt shadow.
    fn skip(&mut self, info: &ExitInfo) -> Handled {
        self.state.rip = self.state.rip.wrapping_add(info.instruction_len as u64);
        if !self.state.code64() {
            self.state.rip &= 0xffff_ffff;
        }
        self.state.interruptibility &= !3;
        Handled::Resume
    }

    fn raise(&mut self, vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Handled {
        self.queue_exception(vector, error_code, cr2);
        Handled::Raised
    }

    /// GPR `n` as an instruction operand (32 bits outside 64-bit mode).
    fn gpr_operand(&self, n: usize) -> u64 {
        let v = self.state.gpr.get(n & 15).copied().unwrap_or(0);
        if self.state.code64() { v } else { v & 0xffff_ffff }
    }

    fn set_gpr(&mut self, n: usize, v: u64) {
        let v = if self.state.code64() { v } else { v & 0xffff_ffff };
        if let Some(r) = self.state.gpr.get_mut(n & 15) {
            *r = v;
        }
    }

    /// Exception exit: #PF for the shadow MMU; #DB and #AC reflected into the guest as
    /// the CPU would have delivered them. (NMIs and #MC are the host's: the run loop
    /// takes them before this.)
    fn exception(&mut self, vmcs: &CurrentVmcs<'_>, ram: &GuestRam, run: &mut uapi::Run, info: &ExitInfo) -> Handled {
        let vector = info.intr_info as u8;
        match vector {
            PF => {}
            DB => return self.reflect_debug(info),
            AC => return self.raise(AC, Some(0), None),
            _ => {
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT, info.reason, info.intr_info as u64, [self.state.rip, 0, 0, 0]);
                return Handled::End(WindowEnd::User);
            }
        }
        let ac = self.state.rflags & state::RFLAGS_AC != 0;
        let gva = info.qualification;
        // The fault came from the CPU delivering an event (pushing its frame, reading the
        // IDT or GDT), not from the instruction at RIP: emulating that instruction would be
        // wrong. Stop protecting the frame and deliver the event again (KVM's
        // kvm_mmu_unprotect_page_virt when an event needs reinjection).
        let delivering = info.vectoring_info & INTR_INFO_VALID != 0;
        match self.mmu.page_fault(&mut self.cache, ram, gva, info.intr_error, self.state.cpl(), ac) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(PfOutcome::Fixed) => Handled::Resume,
            Ok(PfOutcome::Inject(pf)) => self.raise(PF, Some(pf.error_code), Some(pf.cr2)),
            Ok(PfOutcome::EmulateWrite { gpa }) if delivering => {
                if self.mmu.unprotect(&mut self.cache, ram, self.state.rip, gpa) {
                    return Handled::Resume;
                }
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_DELIVERY_EV, info.reason, gva, [self.state.rip, info.vectoring_info as u64, gpa, 0]);
                Handled::End(WindowEnd::User)
            }
            Ok(PfOutcome::Mmio { gpa }) if delivering => {
                // An event frame or descriptor table in MMIO: no device can take that.
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_DELIVERY_EV, info.reason, gva, [self.state.rip, info.vectoring_info as u64, gpa, 0]);
                Handled::End(WindowEnd::User)
            }
            Ok(PfOutcome::EmulateWrite { gpa }) => self.emulate(Some(vmcs), ram, run, Some(gpa), None),
            Ok(PfOutcome::Mmio { .. }) => self.emulate(Some(vmcs), ram, run, None, None),
        }
    }

    /// A #DB the guest caused: report it in the guest's DR6 as the CPU would and deliver
    /// it (KVM's `handle_exception_nmi` and `kvm_deliver_exception_payload`). ICEBP (INT1)
    /// exits before it completes: it is skipped, then the #DB is a trap after it.
    fn reflect_debug(&mut self, info: &ExitInfo) -> Handled {
        if (info.intr_info >> 8) & 7 == INTR_TYPE_PRIV_SW_EXCEPTION {
            self.skip(info);
        } else if self.state.rflags & RFLAGS_TF != 0 && self.state.interruptibility & BLOCKING_STI_MOVSS != 0 {
            // The CPU does not record the pending single step when #DB exits; VM entry
            // requires it with TF=1 and STI/MOV SS blocking (SDM 26.3.1.5).
            self.state.pending_dbg |= DR6_BS;
        }
        self.set_dr6_from(info.qualification);
        self.raise(DB, None, None)
    }

    /// Updates the guest's DR6 for a #DB reported as `payload` (exit-qualification format:
    /// every bit active high).
    fn set_dr6_from(&mut self, payload: u64) {
        let dr6 = (self.state.dr6 & !DR6_TRAP_BITS) | DR6_ACTIVE_LOW | payload;
        self.state.dr6 = (dr6 ^ (payload & DR6_ACTIVE_LOW)) & !(1 << 12);
    }

    /// Emulates the instruction at RIP: a write to a write-protected page table
    /// (`pt_gpa`), or an MMIO access. `mmio` completes an MMIO read userspace answered.
    /// Inside a window (`vmcs`), the segments are read from the VMCS first: the guest can
    /// change them without an exit (MOV Sreg, SWAPGS, WRFSBASE).
    pub(super) fn emulate(
        &mut self,
        vmcs: Option<&CurrentVmcs<'_>>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        pt_gpa: Option<u64>,
        mmio: Option<MmioData>,
    ) -> Handled {
        if let Some(vmcs) = vmcs {
            self.state.save_segments(vmcs);
        }
        let s = &self.state;
        let cpl3 = s.cpl() == 3;
        let ac = s.rflags & state::RFLAGS_AC != 0;
        let cs = &s.seg[CS];
        let mode = CodeSize::from_cpu(s.long_mode(), cs.l != 0, cs.db != 0, false);
        let rip_linear = if s.code64() { s.rip } else { cs.base.wrapping_add(s.rip) & 0xffff_ffff };
        // Fetch up to 15 bytes, page by page, through the guest's tables.
        let mut bytes = [0u8; 15];
        let mut got = 0usize;
        let mut fetch_fault = None;
        while got < bytes.len() {
            let la = rip_linear.wrapping_add(got as u64);
            let n = core::cmp::min(bytes.len() - got, 4096 - (la & 0xfff) as usize);
            let access = Access { write: false, fetch: true, user: cpl3, implicit: false, ac };
            let gpa = match self.mmu.translate(ram, la, access) {
                Ok(gpa) => gpa,
                Err(pf) => {
                    fetch_fault = Some(pf);
                    break;
                }
            };
            let Some(dst) = bytes.get_mut(got..got + n) else { break };
            if !ram.read(gpa, dst) {
                break;
            }
            got += n;
        }
        let insn = match emulate::decode(bytes.get(..got).unwrap_or(&[]), mode) {
            Ok(insn) => insn,
            // The instruction runs into a page the guest cannot fetch: that #PF is what the
            // CPU would raise (the guest changed its tables since the exit).
            Err(emulate::DecodeError::NeedMoreBytes) if fetch_fault.is_some() => {
                let pf = fetch_fault.unwrap_or(mmu::PageFault { cr2: rip_linear, error_code: 0x10 });
                return self.raise(PF, Some(pf.error_code), Some(pf.cr2));
            }
            Err(e) => {
                if let (Some(gpa), emulate::DecodeError::Unsupported { .. }) = (pt_gpa, e) {
                    // The engine's fallback: stop shadowing the frame and let the write
                    // through, unless re-entering cannot make progress (then the internal
                    // error below, with the instruction bytes: never a loop).
                    if self.mmu.unprotect(&mut self.cache, ram, self.state.rip, gpa) {
                        return Handled::Resume;
                    }
                }
                if let Some(ex) = e.exception() {
                    return self.raise_emulated(ex);
                }
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_EMULATION, EXIT_EXCEPTION_NMI, 0, [self.state.rip, got as u64, u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]]), 0]);
                return Handled::End(WindowEnd::User);
            }
        };
        let mut regs = emulate::Regs { gpr: [0; 16], rip: s.rip, rflags: s.rflags };
        regs.gpr.copy_from_slice(&s.gpr[..16]);
        let mut env = emulate::Env::default();
        // Outside 64-bit mode each access passes its segment's limit and type checks; real
        // and virtual-8086 mode check only the limit (any segment may be written there).
        let typed = s.cr0 & state::CR0_PE != 0 && s.rflags & uapi::SHADOWVM_RFLAGS_VM == 0;
        for ((b, c), seg) in env.seg_base.iter_mut().zip(env.seg_check.iter_mut()).zip(s.seg.iter()) {
            *b = seg.base;
            *c = if s.code64() {
                emulate::SegCheck::None
            } else if seg.unusable != 0 {
                emulate::SegCheck::Unusable
            } else {
                let type_ = if typed { seg.type_ } else { 3 };
                emulate::SegCheck::Desc { limit: seg.limit, type_, big: seg.db != 0 }
            };
        }
        let mut mem = EngineAccess::new(&mut self.mmu, &mut self.cache, ram, s.cpl(), ac);
        // A REP string store over a page table (a guest clearing a frame it reuses) would
        // exit once per iteration; run a bounded chunk of iterations per exit instead.
        let outcome = if insn.rep() {
            emulate::execute_rep(&insn, &mut regs, &env, &mut mem, mmio.as_ref(), REP_CHUNK)
        } else {
            emulate::execute(&insn, &mut regs, &env, &mut mem, mmio.as_ref())
        };
        let (mmio_write, pt_writes) = (mem.mmio_write, mem.pt_writes);
        self.stats.emulated_pt_writes = self.stats.emulated_pt_writes.wrapping_add(pt_writes);
        // `regs` holds what committed: the whole instruction, or the REP iterations done
        // before an exception or an MMIO read (RIP still at the instruction then).
        if outcome.is_ok() {
            self.state.gpr[..16].copy_from_slice(&regs.gpr);
            self.state.rip = regs.rip;
            self.state.rflags = regs.rflags;
        }
        match outcome {
            Ok(emulate::Outcome::Done | emulate::Outcome::RepContinue) => {
                self.state.interruptibility &= !3;
                if let Some((gpa, data, len)) = mmio_write {
                    run.exit.set(uapi::ExitMmio { gpa, data, len, is_write: 1, padding: [0; 3] });
                    return user(run, uapi::SHADOWVM_EXIT_MMIO);
                }
                Handled::Resume
            }
            Ok(emulate::Outcome::MmioRead(req)) => {
                let access = Access { write: false, fetch: false, user: cpl3, implicit: false, ac };
                let Ok(gpa) = self.mmu.translate(ram, req.addr.linear, access) else {
                    return Handled::Resume;
                };
                if req.size > 8 {
                    set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_EMULATION, EXIT_EXCEPTION_NMI, 0, [self.state.rip, req.size as u64, 0, 0]);
                    return Handled::End(WindowEnd::User);
                }
                run.exit.set(uapi::ExitMmio { gpa, data: [0; 8], len: req.size as u32, is_write: 0, padding: [0; 3] });
                self.completion = Completion::MmioRead { linear: req.addr.linear, len: req.size };
                user(run, uapi::SHADOWVM_EXIT_MMIO)
            }
            Ok(emulate::Outcome::Exception(ex)) => self.raise_emulated(ex),
            Ok(emulate::Outcome::Retry) => Handled::Resume,
            Err(_) => {
                set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_EMULATION, EXIT_EXCEPTION_NMI, 0, [self.state.rip, 0, 0, 0]);
                Handled::End(WindowEnd::User)
            }
        }
    }

    fn raise_emulated(&mut self, ex: emulate::Exception) -> Handled {
        match ex {
            emulate::Exception::Ud => self.raise(UD, None, None),
            emulate::Exception::Gp(e) => self.raise(GP, Some(e), None),
            emulate::Exception::Ss(e) => self.raise(12, Some(e), None),
            emulate::Exception::Pf { addr, error_code } => self.raise(PF, Some(error_code), Some(addr)),
        }
    }

    fn io(&mut self, run: &mut uapi::Run, info: &ExitInfo) -> Handled {
        let q = info.qualification;
        let size = ((q & 7) + 1) as u8;
        let input = q & 8 != 0;
        let port = (q >> 16) as u16;
        if q & 0x10 != 0 {
            // INS/OUTS: not emulated; say so rather than guess.
            set_internal_error(run, uapi::SHADOWVM_INTERNAL_ERROR_EMULATION, info.reason, q, [self.state.rip, 0, 0, 0]);
            return Handled::End(WindowEnd::User);
        }
        let mask = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let data = if input { 0 } else { self.state.gpr[0] & mask };
        run.exit.set(uapi::ExitIo {
            direction: if input { uapi::SHADOWVM_IO_IN } else { uapi::SHADOWVM_IO_OUT },
            size,
            port,
            count: 1,
            data,
        });
        if input {
            self.completion = Completion::In(size);
        }
        self.skip(info);
        user(run, uapi::SHADOWVM_EXIT_IO)
    }

    /// MOV to/from CR0/CR3/CR4/CR8, CLTS, LMSW (SDM table 28-3).
    fn cr_access(&mut self, ram: &GuestRam, info: &ExitInfo) -> Handled {
        let q = info.qualification;
        let cr = q & 0xf;
        let reg = ((q >> 8) & 0xf) as usize;
        let r = match (q >> 4) & 3 {
            0 => {
                let v = self.gpr_operand(reg);
                match cr {
                    0 => self.set_cr0(ram, v),
                    3 => self.set_cr3(ram, v),
                    4 => self.set_cr4(ram, v),
                    8 if v >> 4 != 0 => self.raise(GP, Some(0), None),
                    8 => {
                        self.state.cr8 = v;
                        Handled::Resume
                    }
                    _ => self.raise(UD, None, None),
                }
            }
            1 => {
                let v = match cr {
                    3 => self.state.cr3,
                    8 => self.state.cr8,
                    _ => return self.raise(UD, None, None),
                };
                self.set_gpr(reg, v);
                Handled::Resume
            }
            2 => self.set_cr0(ram, self.state.cr0 & !state::CR0_TS),
            _ => {
                // LMSW loads CR0[3:0] but cannot clear PE.
                let src = (q >> 16) & 0xf;
                let v = (self.state.cr0 & !0xe) | src;
                self.set_cr0(ram, v)
            }
        };
        match r {
            Handled::Resume => self.skip(info),
            other => other,
        }
    }

    fn set_cr0(&mut self, ram: &GuestRam, v: u64) -> Handled {
        let v = v | state::CR0_ET;
        let s = &self.state;
        let (old, mut efer) = (s.cr0, s.efer);
        let pg = v & state::CR0_PG != 0;
        if v & !state::CR0_VALID != 0
            || (pg && v & state::CR0_PE == 0)
            || (v & state::CR0_NW != 0 && v & state::CR0_CD == 0)
        {
            return self.raise(GP, Some(0), None);
        }
        if v & state::CR0_PE == 0 {
            // Back to real mode: shadowvm has no real-mode support (no unrestricted guest).
            return self.raise(GP, Some(0), None);
        }
        if pg && old & state::CR0_PG == 0 && efer & state::EFER_LME != 0 {
            if s.cr4 & state::CR4_PAE == 0 || s.seg[CS].l != 0 {
                return self.raise(GP, Some(0), None);
            }
            efer |= state::EFER_LMA;
        }
        if !pg && old & state::CR0_PG != 0 && efer & state::EFER_LMA != 0 {
            if s.code64() {
                return self.raise(GP, Some(0), None);
            }
            efer &= !state::EFER_LMA;
        }
        self.commit_mode(ram, v, s.cr4, efer)
    }

    fn set_cr4(&mut self, ram: &GuestRam, v: u64) -> Handled {
        let s = &self.state;
        let pcide_on = v & state::CR4_PCIDE != 0 && s.cr4 & state::CR4_PCIDE == 0;
        if v & !super::cpuid::cr4_allowed() != 0
            || (s.long_mode() && v & state::CR4_PAE == 0)
            || (pcide_on && (!s.long_mode() || s.cr3 & 0xfff != 0))
        {
            return self.raise(GP, Some(0), None);
        }
        self.commit_mode(ram, s.cr0, v, s.efer)
    }

    /// Hands a CR0/CR4/EFER change to the MMU; commits it only if the MMU accepts it.
    fn commit_mode(&mut self, ram: &GuestRam, cr0: u64, cr4: u64, efer: u64) -> Handled {
        match self.mmu.set_mode(&mut self.cache, ram, cr0, cr4, efer) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(mmu::CtlOutcome::Gp) => self.raise(GP, Some(0), None),
            Ok(mmu::CtlOutcome::Ok) => {
                self.state.cr0 = cr0;
                self.state.cr4 = cr4;
                self.state.efer = efer;
                Handled::Resume
            }
        }
    }

    fn set_cr3(&mut self, ram: &GuestRam, v: u64) -> Handled {
        match self.mmu.set_cr3(&mut self.cache, ram, v) {
            Err(mmu::MmuError::NeedMemory) => Handled::NeedMemory,
            Err(e @ mmu::MmuError::LimitReached) => self.mmu_failed(e),
            Ok(mmu::CtlOutcome::Gp) => self.raise(GP, Some(0), None),
            Ok(mmu::CtlOutcome::Ok) => {
                // Bit 63 (no-flush with PCIDs) is not part of CR3.
                self.state.cr3 = if self.state.cr4 & state::CR4_PCIDE != 0 { v & !(1 << 63) } else { v };
                Handled::Resume
            }
        }
    }

    /// MOV to/from DR0-DR7: the guest's values live here and are loaded into the hardware
    /// for each window, so a write ends the window (the next one loads the new values).
    fn dr_access(&mut self, info: &ExitInfo) -> Handled {
        let q = info.qualification;
        let mut dr = (q & 7) as usize;
        let reg = ((q >> 8) & 0xf) as usize;
        if dr == 4 || dr == 5 {
            if self.state.cr4 & (1 << 3) != 0 {
                return self.raise(UD, None, None);
            }
            dr += 2;
        }
        // The VM exit comes before these checks of the instruction (SDM 25.1.3).
        if self.state.cpl() != 0 {
            return self.raise(GP, Some(0), None);
        }
        if self.state.dr7 & DR7_GD != 0 {
            // General detect: a fault before the access; the CPU clears GD to let the
            // handler use the debug registers.
            self.state.dr7 &= !DR7_GD;
            self.set_dr6_from(DR6_BD);
            return self.raise(DB, None, None);
        }
        if q & 0x10 != 0 {
            let v = match self.state.dr.get(dr) {
                Some(&v) => v,
                None if dr == 6 => self.state.dr6,
                None => self.state.dr7,
            };
            self.set_gpr(reg, v);
        } else {
            let v = self.gpr_operand(reg);
            if dr >= 6 && v >> 32 != 0 {
                return self.raise(GP, Some(0), None);
            }
            match self.state.dr.get_mut(dr) {
                Some(slot) => *slot = v,
                None if dr == 6 => self.state.dr6 = (v & 0xf00f) | 0xffff_0ff0,
                None => self.state.dr7 = (v & 0xffff_2bff) | 0x400,
            }
            self.skip(info);
            return Handled::End(WindowEnd::Interrupted);
        }
        self.skip(info)
    }

    /// INVPCID: type in a register, descriptor (PCID, address) in memory.
    fn invpcid(&mut self, vmcs: &CurrentVmcs<'_>, ram: &GuestRam, info: &ExitInfo) -> Handled {
        self.state.save_segments(vmcs);
        let ii = info.instruction_info;
        let kind = self.gpr_operand(((ii >> 28) & 0xf) as usize);
        let mut addr = info.qualification;
        if ii & (1 << 27) == 0 {
            addr = addr.wrapping_add(self.state.gpr[((ii >> 23) & 0xf) as usize]);
        }
        if ii & (1 << 22) == 0 {
            addr = addr.wrapping_add(self.state.gpr[((ii >> 18) & 0xf) as usize] << (ii & 3));
        }
        // The instruction's address size (instruction information bits 9:7).
        addr &= match (ii >> 7) & 7 {
            0 => 0xffff,
            1 => 0xffff_ffff,
            _ => u64::MAX,
        };
        let seg = ((ii >> 15) & 7) as usize;
        let code64 = self.state.code64();
        let base = self.state.seg.get(seg).map_or(0, |s| if code64 && seg < 4 { 0 } else { s.base });
        addr = addr.wrapping_add(base);
        if !code64 {
            addr &= 0xffff_ffff;
        }
        // A supervisor data read: SMAP applies unless EFLAGS.AC is set; it may cross a page.
        let ac = self.state.rflags & state::RFLAGS_AC != 0;
        let access = Access { write: false, fetch: false, user: false, implicit: false, ac };
        let mut desc = [0u8; 16];
        let mut done = 0;
        while done < desc.len() {
            let la = addr.wrapping_add(done as u64);
            let n = core::cmp::min(desc.len() - done, 4096 - (la & 0xfff) as usize);
            let gpa = match self.mmu.translate(ram, la, access) {
                Ok(gpa) => gpa,
                Err(pf) => return self.raise(PF, Some(pf.error_code), Some(pf.cr2)),
            };
            let Some(dst) = desc.get_mut(done..done + n) else { break };
            if !ram.read(gpa, dst) {
                return self.raise(GP, Some(0), None);
            }
            done += n;
        }
        let [p0, p1, p2, p3, p4, p5, p6, p7, g0, g1, g2, g3, g4, g5, g6, g7] = desc;
        let pcid = u64::from_le_bytes([p0, p1, p2, p3, p4, p5, p6, p7]);
        let gva = u64::from_le_bytes([g0, g1, g2, g3, g4, g5, g6, g7]);
        let canonical = ((gva as i64) << 16 >> 16) as u64 == gva;
        let kind = match kind {
            0 if !canonical => return self.raise(GP, Some(0), None),
            0 => mmu::InvpcidKind::Address,
            1 => mmu::InvpcidKind::Single,
            2 => mmu::InvpcidKind::AllIncludingGlobal,
            3 => mmu::InvpcidKind::AllExceptGlobal,
            _ => return self.raise(GP, Some(0), None),
        };
        match self.mmu.invpcid(ram, kind, pcid, gva) {
            mmu::CtlOutcome::Gp => self.raise(GP, Some(0), None),
            mmu::CtlOutcome::Ok => self.skip(info),
        }
    }

    /// RDMSR. FS/GS base and KERNEL_GS_BASE are read where they live during the window
    /// (the VMCS, the CPU): the guest changes them without exits (MOV to FS/GS, WRFSBASE,
    /// SWAPGS).
    fn rdmsr(&mut self, vmcs: &CurrentVmcs<'_>, info: &ExitInfo) -> Handled {
        let s = &self.state;
        let v = match s.gpr[1] as u32 {
            super::MSR_KERNEL_GS_BASE => glue::rdmsr(super::MSR_KERNEL_GS_BASE).unwrap_or(0),
            super::MSR_FS_BASE => vmcs.read(GUEST_FS_BASE),
            super::MSR_GS_BASE => vmcs.read(GUEST_GS_BASE),
            super::MSR_EFER => s.efer,
            super::MSR_STAR => s.star,
            super::MSR_LSTAR => s.lstar,
            super::MSR_CSTAR => s.cstar,
            super::MSR_SFMASK => s.sfmask,
            super::MSR_SYSENTER_CS => s.sysenter_cs,
            super::MSR_SYSENTER_ESP => s.sysenter_esp,
            super::MSR_SYSENTER_EIP => s.sysenter_eip,
            MSR_PAT => s.pat,
            MSR_TSC => {
                let (lo, hi): (u32, u32);
                // SAFETY: RDTSC has no side effects.
                unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
                ((hi as u64) << 32) | lo as u64
            }
            MSR_MTRRCAP | MSR_MTRR_DEF_TYPE => 0,
            MSR_MISC_ENABLE => 1, // fast strings
            _ => return self.raise(GP, Some(0), None),
        };
        self.state.gpr[0] = v & 0xffff_ffff;
        self.state.gpr[2] = v >> 32;
        self.skip(info)
    }

    /// WRMSR. Every write takes effect at once, where the value lives during the window:
    /// the VMCS for FS/GS base and SYSENTER, the CPU for the syscall MSRs.
    fn wrmsr(&mut self, vmcs: &CurrentVmcs<'_>, ram: &GuestRam, info: &ExitInfo) -> Handled {
        let v = (self.state.gpr[0] & 0xffff_ffff) | (self.state.gpr[2] << 32);
        let canonical = ((v as i64) << 16 >> 16) as u64 == v;
        let s = &mut self.state;
        match s.gpr[1] as u32 {
            super::MSR_EFER => {
                if v & !(state::EFER_SCE | state::EFER_LME | state::EFER_LMA | state::EFER_NXE) != 0
                    || (s.cr0 & state::CR0_PG != 0 && (v ^ s.efer) & state::EFER_LME != 0)
                    || (v & state::EFER_NXE != 0 && !super::cpuid::has_nx())
                {
                    return self.raise(GP, Some(0), None);
                }
                // LMA is read-only: the CPU keeps its own value.
                let efer = (v & !state::EFER_LMA) | (s.efer & state::EFER_LMA);
                let (cr0, cr4) = (s.cr0, s.cr4);
                return match self.commit_mode(ram, cr0, cr4, efer) {
                    Handled::Resume => self.skip(info),
                    other => other,
                };
            }
            super::MSR_LSTAR | super::MSR_CSTAR | super::MSR_KERNEL_GS_BASE | super::MSR_FS_BASE | super::MSR_GS_BASE
            | super::MSR_SYSENTER_ESP | super::MSR_SYSENTER_EIP
                if !canonical =>
            {
                return self.raise(GP, Some(0), None);
            }
            super::MSR_STAR | super::MSR_LSTAR | super::MSR_CSTAR | super::MSR_SFMASK | super::MSR_KERNEL_GS_BASE => {
                let msr = s.gpr[1] as u32;
                let v = if msr == super::MSR_SFMASK { v & 0xffff_ffff } else { v };
                match msr {
                    super::MSR_STAR => s.star = v,
                    super::MSR_LSTAR => s.lstar = v,
                    super::MSR_CSTAR => s.cstar = v,
                    super::MSR_SFMASK => s.sfmask = v,
                    _ => s.kernel_gs_base = v,
                }
                // The guest's value is in the CPU for the window (SYSCALL, SWAPGS use it).
                super::wrmsr(msr, v);
            }
            super::MSR_FS_BASE => {
                s.seg[state::FS].base = v;
                vmcs.write(GUEST_FS_BASE, v);
            }
            super::MSR_GS_BASE => {
                s.seg[state::GS].base = v;
                vmcs.write(GUEST_GS_BASE, v);
            }
            super::MSR_SYSENTER_CS => {
                s.sysenter_cs = v & 0xffff;
                vmcs.write(GUEST_SYSENTER_CS, v & 0xffff);
            }
            super::MSR_SYSENTER_ESP => {
                s.sysenter_esp = v;
                vmcs.write(GUEST_SYSENTER_ESP, v);
            }
            super::MSR_SYSENTER_EIP => {
                s.sysenter_eip = v;
                vmcs.write(GUEST_SYSENTER_EIP, v);
            }
            // Each byte must be a defined memory type (0, 1, 4, 5, 6, 7), else #GP (SDM 13.12.2).
            MSR_PAT if !(0..8).all(|i| matches!((v >> (8 * i)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7)) => {
                return self.raise(GP, Some(0), None);
            }
            MSR_PAT => s.pat = v,
            // Guest TSC writes are ignored: the guest sees the host TSC.
            MSR_TSC | MSR_MISC_ENABLE => {}
            _ => return self.raise(GP, Some(0), None),
        }
        self.skip(info)
    }

    /// Completes an MMIO read userspace answered (outside a window): the instruction is
    /// decoded again and executed with the value. It may still need userspace (the store
    /// of a read-modify-write or of MOVS to MMIO, or an internal error): then `run` holds
    /// that exit and the result is true. An exception it raises is queued.
    pub(super) fn complete_mmio(&mut self, ram: &GuestRam, run: &mut uapi::Run, linear: u64, len: u8) -> bool {
        let m = run.mmio();
        let mut data = [0u8; 16];
        data[..8].copy_from_slice(&m.data);
        let mmio = MmioData { linear, len, data };
        matches!(self.emulate(None, ram, run, None, Some(mmio)), Handled::End(_))
    }
}

const MSR_TSC: u32 = 0x10;
const MSR_MTRRCAP: u32 = 0xfe;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

impl GuestRam {
    /// Copies guest-physical memory out; false if any byte is not RAM.
    pub(crate) fn read(&self, gpa: u64, dst: &mut [u8]) -> bool {
        let off = (gpa & 0xfff) as usize;
        if off + dst.len() > 4096 {
            return false;
        }
        let Some(f) = self.frame(gpa >> 12) else { return false };
        // SAFETY: `f.ptr` is a 4 KiB frame of guest RAM (GuestMemory contract); the range
        // is inside it. Guest memory may change concurrently (userspace mapping): bytes.
        unsafe { core::ptr::copy_nonoverlapping(f.ptr.add(off), dst.as_mut_ptr(), dst.len()) };
        true
    }
}
