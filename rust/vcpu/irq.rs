// SPDX-License-Identifier: GPL-2.0

//! Interrupts and NMIs from userspace, without an interrupt controller in the module (the
//! shape of KVM's `KVM_INTERRUPT`, `KVM_NMI` and `request_interrupt_window` without an
//! in-kernel irqchip): the queues, their injection at VM entry, the interrupt and NMI
//! windows, and the vCPU events of `GET/SET_VCPU_EVENTS`.
//!
//! Priority at each entry (SDM 6.9): an exception or re-delivered software event
//! (`VcpuCore::event`) first, then an NMI, then the external interrupt. What cannot be
//! delivered at this entry waits, and the window exits ("interrupt-window exiting",
//! "NMI-window exiting") bring the CPU back as soon as the guest can take it.

use super::exits::Event;
use super::VcpuCore;
use crate::uapi;
use crate::vmx::exit::{
    ExitInfo, ExitReason, InterruptionInfo, INTR_TYPE_EXT_INTR, INTR_TYPE_HW_EXCEPTION,
    INTR_TYPE_NMI,
};
use crate::vmx::vmcs::VM_ENTRY_INTR_INFO_FIELD;
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, vector};
use kernel::prelude::*;

/// The NMI vector.
const NMI_VECTOR: u8 = 2;

/// The STI/MOV SS shadow a VM entry started with (interruptibility bits), and where.
#[derive(Clone, Copy)]
pub(super) struct EntryShadow {
    rip: u64,
    blocking: u64,
}

/// Interrupts and NMIs waiting for the guest.
///
/// # Invariants
///
/// `nmi_pending <= uapi::SHADOWVM_NMI_PENDING_MAX`.
#[derive(Clone, Copy, Default)]
pub(super) struct PendingIrqs {
    /// The external interrupt to deliver once the guest can take it: queued by
    /// `SHADOWVM_INTERRUPT`, or one whose delivery an exit interrupted.
    interrupt: Option<u8>,
    /// NMIs waiting: one more than the guest is handling may be latched, as on hardware.
    nmi_pending: u8,
}

impl PendingIrqs {
    /// An external interrupt whose delivery an exit interrupted: delivered again.
    pub(super) fn requeue_interrupt(&mut self, vector: u8) {
        self.interrupt = Some(vector);
    }

    /// An NMI whose delivery an exit interrupted: delivered again.
    pub(super) fn requeue_nmi(&mut self) {
        // INVARIANT: capped.
        self.nmi_pending = self
            .nmi_pending
            .saturating_add(1)
            .min(uapi::SHADOWVM_NMI_PENDING_MAX);
    }
}

/// Whether an exception with `vector` pushes an error code: #DF, #TS, #NP, #SS, #GP, #PF,
/// #AC (SDM table 6-1). VM entry requires the error-code bit to say exactly this in
/// protected mode (SDM 26.2.1.3), the only mode shadowvm runs.
fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// #CP: VM entry wants its error-code bit set only where the CPU has CET, which the guest
/// never has (CR4.CET cannot be set), so it can never be pending.
const CP_VECTOR: u8 = 21;

/// Whether SET_VCPU_EVENTS accepts `e` (what uapi.md promises): flags, padding and
/// reserved fields zero, booleans 0 or 1, vectors and counts in range, and fields of an
/// absent exception or interrupt zero.
fn events_valid(e: &uapi::VcpuEvents) -> bool {
    let bool_ok = |b: u8| b <= 1;
    let zeros_ok = e.flags == 0
        && e.reserved == [0; 11]
        && e.exception_padding == 0
        && e.interrupt_padding == 0
        && e.nmi_padding == [0; 2];
    let exception_ok = if e.exception_injected == 0 {
        e.exception_nr == 0 && e.exception_has_error_code == 0 && e.exception_error_code == 0
    } else {
        e.exception_injected == 1
            && e.exception_nr < 32
            && e.exception_nr != NMI_VECTOR
            && e.exception_nr != CP_VECTOR
            && bool_ok(e.exception_has_error_code)
            && (e.exception_has_error_code != 0) == exception_has_error_code(e.exception_nr)
            && e.exception_error_code >> 16 == 0
    };
    let interrupt_ok =
        bool_ok(e.interrupt_injected) && (e.interrupt_injected != 0 || e.interrupt_nr == 0);
    // One of the two shadows at most: both cannot be entered (SDM 26.3.1.5).
    let shadow_ok = matches!(
        e.interrupt_shadow,
        0 | uapi::SHADOWVM_INTERRUPT_SHADOW_STI | uapi::SHADOWVM_INTERRUPT_SHADOW_MOV_SS
    );
    let nmi_ok = e.nmi_pending <= uapi::SHADOWVM_NMI_PENDING_MAX && bool_ok(e.nmi_masked);
    zeros_ok && exception_ok && interrupt_ok && shadow_ok && nmi_ok
}

impl VcpuCore {
    /// SHADOWVM_INTERRUPT: queues `irq`, replacing an interrupt queued before and not yet
    /// delivered, as `KVM_INTERRUPT` does without an in-kernel irqchip.
    pub(super) fn queue_interrupt(&mut self, irq: &uapi::Interrupt) -> Result {
        if irq.padding != 0 {
            return Err(EINVAL);
        }
        let vector = u8::try_from(irq.irq).map_err(|_| EINVAL)?;
        self.irqs.interrupt = Some(vector);
        Ok(())
    }

    /// SHADOWVM_NMI: queues an NMI. NMIs beyond what the CPU could latch are dropped (two
    /// pending, or one while the guest is in its NMI handler: KVM's `process_nmi`). Needs
    /// virtual NMIs, or the module could not see when the guest's handler returns.
    pub(super) fn queue_nmi(&mut self) -> Result {
        if !self.caps.has_virtual_nmis() {
            return Err(crate::glue::eopnotsupp());
        }
        self.irqs.requeue_nmi();
        self.limit_nmis();
        Ok(())
    }

    /// While the guest blocks NMIs, at most one more can wait (INVARIANT kept: only lowers).
    fn limit_nmis(&mut self) {
        if self.state.interruptibility & x86::BLOCKING_NMI != 0 {
            self.irqs.nmi_pending = self.irqs.nmi_pending.min(1);
        }
    }

    /// The guest's RFLAGS.IF (the run page's `if_flag`).
    pub(super) fn if_flag(&self) -> bool {
        self.state.rflags & x86::RFLAGS_IF != 0
    }

    /// The guest could take an external interrupt at the next entry: IF = 1 and no STI or
    /// MOV SS shadow.
    fn interrupt_allowed(&self) -> bool {
        self.if_flag() && self.state.interruptibility & x86::BLOCKING_STI_MOVSS == 0
    }

    /// A queued interrupt or NMI that the next entry delivers: it ends a HLT at once, as
    /// on hardware (after HLT's exit the STI shadow it may have been in is over).
    pub(super) fn event_wakes_hlt(&self) -> bool {
        let interrupt = self.irqs.interrupt.is_some() && self.interrupt_allowed();
        let nmi = self.irqs.nmi_pending > 0
            && self.state.interruptibility & (x86::BLOCKING_STI_MOVSS | x86::BLOCKING_NMI) == 0;
        interrupt || nmi
    }

    /// The run page's `ready_for_interrupt_injection` (KVM's
    /// `kvm_vcpu_ready_for_interrupt_injection`): an interrupt queued now is delivered at
    /// the next entry, because the guest can take one and nothing else is waiting before it.
    pub(super) fn ready_for_interrupt_injection(&self) -> bool {
        self.interrupt_allowed() && self.event.is_none() && self.irqs.interrupt.is_none()
    }

    /// Userspace asked for the interrupt window and it is open: RUN returns with
    /// SHADOWVM_EXIT_IRQ_WINDOW_OPEN (checked after each exit handled in the module, as
    /// KVM's `vcpu_run` does).
    pub(super) fn irq_window_open(&self, run: &mut uapi::Run) -> bool {
        if run.request_interrupt_window == 0 || !self.ready_for_interrupt_injection() {
            return false;
        }
        run.exit_reason = uapi::SHADOWVM_EXIT_IRQ_WINDOW_OPEN;
        run.exit = uapi::ExitArea::default();
        true
    }

    /// An exit while the guest executed IRET from its NMI handler, caused by a fault in
    /// that IRET ("NMI unblocking due to IRET", bit 12 of the exit interruption
    /// information; not defined for a fault during event delivery): the IRET unblocked
    /// NMIs but will run again, so the blocking comes back until then (as KVM's
    /// `vmx_recover_nmi_blocking`).
    pub(super) fn restore_nmi_blocking(&mut self, info: &ExitInfo) {
        let intr = info.intr_info;
        if info.basic_reason() == Some(ExitReason::ExceptionNmi)
            && intr.valid().into_bool()
            && intr.bit12().into_bool()
            && intr.vector_u8() != vector::DF
            && !info.vectoring_info.valid().into_bool()
            && self.caps.has_virtual_nmis()
        {
            self.state.interruptibility |= x86::BLOCKING_NMI;
        }
    }

    /// Before the window's first entry: an interruptibility state userspace may have set
    /// made consistent with RFLAGS (SDM 26.3.1.5): no STI blocking with IF = 0, and with a
    /// shadow the pending single step (BS) exactly when TF is set. States the CPU saved
    /// already are.
    pub(super) fn fix_interrupt_shadow(&mut self) {
        let s = &mut self.state;
        if s.rflags & x86::RFLAGS_IF == 0 {
            s.interruptibility &= !x86::BLOCKING_STI;
        }
        if s.interruptibility & x86::BLOCKING_STI_MOVSS != 0 {
            if s.rflags & x86::RFLAGS_TF != 0 {
                s.pending_dbg |= x86::DR6_BS;
            } else {
                s.pending_dbg &= !x86::DR6_BS;
            }
        }
    }

    /// At each entry, after `inject_event` wrote the exception or re-delivered event (if
    /// any): an NMI or the queued interrupt if nothing comes before it and the guest can
    /// take it, and the window exits for what still waits. `request_window` is the run
    /// page's `request_interrupt_window`. Returns the STI/MOV SS shadow the guest enters
    /// with, for [`Self::keep_shadow_across_fault`].
    pub(super) fn inject_interrupts(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        request_window: bool,
    ) -> EntryShadow {
        let blocking = self.state.interruptibility;
        let mut busy = self.event.is_some();
        if !busy
            && self.irqs.nmi_pending > 0
            && blocking & (x86::BLOCKING_STI_MOVSS | x86::BLOCKING_NMI) == 0
        {
            let info = InterruptionInfo::from_raw(0)
                .with_valid(true)
                .with_const_kind::<INTR_TYPE_NMI>()
                .with_vector(NMI_VECTOR);
            vmcs.write(VM_ENTRY_INTR_INFO_FIELD, info.into_raw());
            // INVARIANT: lowered.
            self.irqs.nmi_pending -= 1;
            busy = true;
        }
        if !busy && self.interrupt_allowed() {
            if let Some(v) = self.irqs.interrupt.take() {
                let info = InterruptionInfo::from_raw(0)
                    .with_valid(true)
                    .with_const_kind::<INTR_TYPE_EXT_INTR>()
                    .with_vector(v);
                vmcs.write(VM_ENTRY_INTR_INFO_FIELD, info.into_raw());
                busy = true;
            }
        }
        // An NMI held back only by an STI shadow waits for the interrupt window: a CPU that
        // does not block NMIs after STI would take the NMI-window exit at once, again and
        // again (KVM's `vmx_enable_nmi_window`). IF is 1 in an STI shadow.
        let nmi_waits = self.irqs.nmi_pending > 0;
        let sti_shadow = self.state.interruptibility & x86::BLOCKING_STI != 0;
        let proc = self
            .primary_controls()
            .with_interrupt_window_exiting(
                self.irqs.interrupt.is_some() || request_window || (nmi_waits && sti_shadow),
            )
            .with_nmi_window_exiting(nmi_waits && !sti_shadow);
        self.write_proc_controls(vmcs, self.caps.proc.adjust(proc.into_raw()));
        // An entry that delivers an event leaves no STI or MOV SS blocking (SDM 26.6.1).
        EntryShadow {
            rip: self.state.rip,
            blocking: if busy {
                0
            } else {
                blocking & x86::BLOCKING_STI_MOVSS
            },
        }
    }

    /// A #PF exit on the first instruction after an entry with an STI or MOV SS shadow
    /// ends the shadow (the CPU clears that blocking when the guest incurs an exception;
    /// Bochs 2.7 saves it cleared), although the instruction will run again: a fault the
    /// MMU fixes in its shadow tables is none of the guest's business. The shadow comes
    /// back, so that no interrupt slips in before that instruction (`sti; hlt` with the
    /// HLT on a page the shadow does not map yet would otherwise sleep through its
    /// wake-up). If the fault turns out to be the guest's, its injection ends the shadow
    /// anyway; an instruction that completes (emulated) clears it.
    pub(super) fn keep_shadow_across_fault(&mut self, info: &ExitInfo, shadow: EntryShadow) {
        let pf = info.basic_reason() == Some(ExitReason::ExceptionNmi)
            && info.intr_info.is(INTR_TYPE_HW_EXCEPTION)
            && info.intr_info.vector_u8() == vector::PF;
        if pf && !info.vectoring_info.valid().into_bool() && self.state.rip == shadow.rip {
            self.state.interruptibility |= shadow.blocking;
        }
    }

    /// GET_VCPU_EVENTS. A #PF still to be delivered sets CR2 now (the CPU sets it when it
    /// detects the fault), so the registers read next hold it. A software interrupt or
    /// exception whose delivery an exit interrupted is not reported: RIP still points at
    /// its instruction, which raises it again if the events are set back.
    pub(super) fn events(&mut self) -> uapi::VcpuEvents {
        let mut e = uapi::VcpuEvents::default();
        if let Some(ev) = self.event.as_mut() {
            if let Some(cr2) = ev.take_cr2() {
                self.state.gpr[super::state::CR2] = cr2;
            }
            if let Some((nr, error_code)) = ev.as_exception() {
                e.exception_injected = 1;
                e.exception_nr = nr;
                e.exception_has_error_code = u8::from(error_code.is_some());
                e.exception_error_code = error_code.unwrap_or(0);
            }
        }
        if let Some(v) = self.irqs.interrupt {
            e.interrupt_injected = 1;
            e.interrupt_nr = v;
        }
        let blocking = self.state.interruptibility;
        e.interrupt_shadow = if blocking & x86::BLOCKING_STI != 0 {
            uapi::SHADOWVM_INTERRUPT_SHADOW_STI
        } else if blocking & x86::BLOCKING_MOV_SS != 0 {
            uapi::SHADOWVM_INTERRUPT_SHADOW_MOV_SS
        } else {
            0
        };
        e.nmi_pending = self.irqs.nmi_pending;
        e.nmi_masked = u8::from(blocking & x86::BLOCKING_NMI != 0);
        e
    }

    /// SET_VCPU_EVENTS: `EINVAL` for values [`events_valid`] refuses, `EOPNOTSUPP` for NMI
    /// state without virtual NMIs; otherwise everything is replaced (a software event
    /// waiting for re-delivery is dropped: its instruction runs again).
    pub(super) fn set_events(&mut self, e: &uapi::VcpuEvents) -> Result {
        if !events_valid(e) {
            return Err(EINVAL);
        }
        if (e.nmi_pending != 0 || e.nmi_masked != 0) && !self.caps.has_virtual_nmis() {
            return Err(crate::glue::eopnotsupp());
        }
        self.event = (e.exception_injected != 0).then(|| {
            let error_code = (e.exception_has_error_code != 0).then_some(e.exception_error_code);
            Event::exception(e.exception_nr, error_code, None)
        });
        self.triple_fault = false;
        self.irqs.interrupt = (e.interrupt_injected != 0).then_some(e.interrupt_nr);
        let mut blocking =
            self.state.interruptibility & !(x86::BLOCKING_STI_MOVSS | x86::BLOCKING_NMI);
        if e.interrupt_shadow & uapi::SHADOWVM_INTERRUPT_SHADOW_STI != 0 {
            blocking |= x86::BLOCKING_STI;
        }
        if e.interrupt_shadow & uapi::SHADOWVM_INTERRUPT_SHADOW_MOV_SS != 0 {
            blocking |= x86::BLOCKING_MOV_SS;
        }
        if e.nmi_masked != 0 {
            blocking |= x86::BLOCKING_NMI;
        }
        self.state.interruptibility = blocking;
        // INVARIANT: checked against the maximum by `events_valid`.
        self.irqs.nmi_pending = e.nmi_pending;
        self.limit_nmis();
        Ok(())
    }
}

/// Value of SHADOWVM_CAP_IRQ: INTERRUPT, NMI (where the CPU has virtual NMIs), the
/// interrupt window and the vCPU events are all there.
pub(crate) fn irq_cap() -> isize {
    1
}
