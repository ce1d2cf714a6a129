// SPDX-License-Identifier: GPL-2.0

//! Exceptions and events: the exception exit, reflected #DB, events to inject and the
//! double-fault rules (SDM 6.15).

use super::{Handled, VcpuCore};
use crate::emulate;
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::exit::{
    ExitInfo, InterruptionInfo, INTR_TYPE_EXT_INTR, INTR_TYPE_HW_EXCEPTION, INTR_TYPE_NMI,
    INTR_TYPE_PRIV_SW_EXCEPTION, INTR_TYPE_SW_EXCEPTION, INTR_TYPE_SW_INTR,
};
use crate::vmx::vmcs::{
    VM_ENTRY_EXCEPTION_ERROR_CODE, VM_ENTRY_INSTRUCTION_LEN, VM_ENTRY_INTR_INFO_FIELD,
};
use crate::vmx::window::CurrentVmcs;
use crate::x86::{self, vector};

/// An event to inject at VM entry, in the VM-entry interruption-information format.
#[derive(Clone, Copy)]
pub(in crate::vcpu) struct Event {
    info: InterruptionInfo,
    error_code: u32,
    instruction_len: u32,
    /// The guest CR2 to set with a #PF.
    cr2: Option<u64>,
}

impl Event {
    pub(in crate::vcpu) fn exception(
        vector: u8,
        error_code: Option<u32>,
        cr2: Option<u64>,
    ) -> Self {
        let info = InterruptionInfo::from_raw(0)
            .with_valid(true)
            .with_const_kind::<INTR_TYPE_HW_EXCEPTION>()
            .with_has_error_code(error_code.is_some())
            .with_vector(vector);
        Self {
            info,
            error_code: error_code.unwrap_or(0),
            instruction_len: 0,
            cr2,
        }
    }

    fn vector(&self) -> u8 {
        self.info.vector_u8()
    }

    fn is_hw_exception(&self) -> bool {
        self.info.kind().get() == INTR_TYPE_HW_EXCEPTION
    }

    /// A hardware exception: its vector and error code (GET_VCPU_EVENTS). `None` for a
    /// software interrupt or exception, which the instruction at RIP raises again.
    pub(in crate::vcpu) fn as_exception(&self) -> Option<(u8, Option<u32>)> {
        if !self.is_hw_exception() {
            return None;
        }
        let error_code = self
            .info
            .has_error_code()
            .into_bool()
            .then_some(self.error_code);
        Some((self.vector(), error_code))
    }

    /// The CR2 value a #PF still has to set, taken out of the event.
    pub(in crate::vcpu) fn take_cr2(&mut self) -> Option<u64> {
        self.cr2.take()
    }
}

/// Exception classes for the double-fault rules (SDM 6.15, table 6-5).
#[derive(PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

fn class(v: u8) -> Class {
    match v {
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => Class::Contributory,
        vector::PF => Class::PageFault,
        _ => Class::Benign,
    }
}

/// `new` was raised while `old` was being delivered. Returns the event to deliver, or
/// `None` for a triple fault (a fault while delivering a double fault).
fn merge_events(old: Event, new: Event) -> Option<Event> {
    if !old.is_hw_exception() {
        // Interrupts and software interrupts: the exception is delivered; a software
        // interrupt re-executes after the handler returns, as on hardware.
        return Some(new);
    }
    if old.vector() == vector::DF {
        return None;
    }
    let (o, n) = (class(old.vector()), class(new.vector()));
    let double = (o == Class::Contributory && n == Class::Contributory)
        || (o == Class::PageFault && n != Class::Benign);
    Some(if double {
        Event::exception(vector::DF, Some(0), None)
    } else {
        new
    })
}

impl VcpuCore {
    /// Exception exit: #PF for the shadow MMU; #DB and #AC reflected into the guest as
    /// the CPU would have delivered them. (NMIs and #MC are the host's: the run loop
    /// takes them before this.)
    pub(super) fn exception(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: &ExitInfo,
    ) -> Handled {
        match info.intr_info.vector_u8() {
            vector::PF => self.page_fault(vmcs, ram, run, info),
            vector::DB => self.reflect_debug(info),
            vector::AC => self.raise(vector::AC, Some(0), None),
            _ => {
                let suberror = uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT;
                let (reason, qualification) = (info.reason.into_raw(), info.intr_info.into_raw());
                self.internal_error(run, suberror, reason, qualification.into(), [0; 3])
                    .into()
            }
        }
    }

    /// An event whose delivery the exit interrupted is delivered again, unless the handler
    /// raises something that merges with it. Called for every exit, including those the
    /// host takes (NMI, machine check), so no event of the guest is lost.
    pub(in crate::vcpu) fn note_vectoring(&mut self, info: &ExitInfo) {
        let vectoring = info.vectoring_info;
        if !vectoring.valid().into_bool() {
            return;
        }
        // Interrupts and NMIs go back into their queues: delivered again as soon as the
        // guest can take them, after any exception the handler raises (so never lost to
        // `merge_events`).
        match vectoring.kind().get() {
            INTR_TYPE_EXT_INTR => return self.irqs.requeue_interrupt(vectoring.vector_u8()),
            INTR_TYPE_NMI => {
                // The delivery did not complete, so the guest is not in its handler and does
                // not block NMIs yet (KVM's `__vmx_complete_interrupts` clears it too).
                self.state.interruptibility &= !x86::BLOCKING_NMI;
                return self.irqs.requeue_nmi();
            }
            _ => {}
        }
        let len = match vectoring.kind().get() {
            INTR_TYPE_SW_INTR | INTR_TYPE_PRIV_SW_EXCEPTION | INTR_TYPE_SW_EXCEPTION => {
                info.instruction_len
            }
            _ => 0,
        };
        self.event = Some(Event {
            info: vectoring.with_bit12(false),
            error_code: info.vectoring_error,
            instruction_len: len,
            cr2: None,
        });
    }

    /// A #DB the guest caused: report it in the guest's DR6 as the CPU would and deliver
    /// it (KVM's `handle_exception_nmi` and `kvm_deliver_exception_payload`). ICEBP (INT1)
    /// exits before it completes: it is skipped, then the #DB is a trap after it.
    pub(super) fn reflect_debug(&mut self, info: &ExitInfo) -> Handled {
        if info.intr_info.kind().get() == INTR_TYPE_PRIV_SW_EXCEPTION {
            self.skip(info);
        } else if self.state.rflags & x86::RFLAGS_TF != 0
            && self.state.interruptibility & x86::BLOCKING_STI_MOVSS != 0
        {
            // The CPU does not record the pending single step when #DB exits; VM entry
            // requires it with TF=1 and STI/MOV SS blocking (SDM 26.3.1.5).
            self.state.pending_dbg |= x86::DR6_BS;
        }
        self.set_dr6_from(info.qualification);
        self.raise(vector::DB, None, None)
    }

    /// Updates the guest's DR6 for a #DB reported as `payload` (exit-qualification format:
    /// every bit active high).
    pub(super) fn set_dr6_from(&mut self, payload: u64) {
        let dr6 = (self.state.dr6 & !x86::DR6_TRAP_BITS) | x86::DR6_ACTIVE_LOW | payload;
        self.state.dr6 = (dr6 ^ (payload & x86::DR6_ACTIVE_LOW)) & !x86::DR6_BIT12;
    }

    pub(super) fn raise_emulated(&mut self, ex: emulate::Exception) -> Handled {
        match ex {
            emulate::Exception::Ud => self.raise(vector::UD, None, None),
            emulate::Exception::Gp(e) => self.raise(vector::GP, Some(e), None),
            emulate::Exception::Ss(e) => self.raise(vector::SS, Some(e), None),
            emulate::Exception::Pf { addr, error_code } => {
                self.raise(vector::PF, Some(error_code), Some(addr))
            }
        }
    }

    /// Queues an exception for the next entry, merging it with an event that was being
    /// delivered when the exit happened (SDM 6.15, "double fault" rules).
    pub(in crate::vcpu) fn queue_exception(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        cr2: Option<u64>,
    ) {
        self.stats.injected_exceptions = self.stats.injected_exceptions.wrapping_add(1);
        let new = Event::exception(vector, error_code, cr2);
        self.event = match self.event {
            None => Some(new),
            Some(old) => merge_events(old, new),
        };
        self.triple_fault = self.event.is_none();
    }

    pub(in crate::vcpu) fn inject_event(&mut self, vmcs: &CurrentVmcs<'_>) {
        // Nothing to write without an event: every VM exit clears the field's valid bit
        // (SDM vol. 3C, "VM-Entry Controls for Event Injection"), and a window starts with
        // the field 0 (`write_controls`). A VM-entry failure while loading guest state may
        // leave it set, but such an exit always ends the window (`handle`).
        let Some(ev) = self.event else {
            return;
        };
        if let Some(cr2) = ev.cr2 {
            self.state.gpr[super::super::state::CR2] = cr2;
        }
        vmcs.write(VM_ENTRY_INTR_INFO_FIELD, ev.info.into_raw());
        vmcs.write(VM_ENTRY_EXCEPTION_ERROR_CODE, ev.error_code);
        vmcs.write(VM_ENTRY_INSTRUCTION_LEN, ev.instruction_len);
    }
}
