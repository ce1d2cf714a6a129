// SPDX-License-Identifier: GPL-2.0

//! VM-exit handling: what each exit reason means for the guest, inside the window.
//!
//! Handlers run with interrupts off and must not sleep. They change [`super::GuestState`]
//! (advance RIP, write registers), queue an exception for the next entry, call the MMU
//! engine, or end the window with an exit for userspace described in the run page.
//!
//! [`VcpuCore::handle`] dispatches by exit reason to the handlers, one file per kind:
//! `cr` (control and debug registers), `msr`, `io`, `mem` (#PF, emulation, INVPCID) and
//! `events` (exceptions, events to inject).

mod cr;
mod events;
mod io;
mod mem;
mod msr;

pub(super) use events::Event;

use super::{Completion, VcpuCore, WindowEnd};
use crate::mmu;
use crate::ram::GuestRam;
use crate::uapi;
use crate::vmx::vmcs::*;
use crate::vmx::window::CurrentVmcs;
use crate::x86::vector;
use kernel::cpu::CpuId;

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

impl From<WindowEnd> for Handled {
    fn from(end: WindowEnd) -> Self {
        Handled::End(end)
    }
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
                && self.intr_info as u8 == vector::MC)
    }
}

/// Fills in an INTR exit (`cause`: why RUN returned without a guest exit).
pub(crate) fn set_intr(run: &mut uapi::Run, cause: u32) {
    run.exit_reason = uapi::SHADOWVM_EXIT_INTR;
    run.exit.set(uapi::ExitIntr { cause, padding: 0 });
}

/// Ends the window with a VM-entry failure for userspace: the exit reason (bit 31 set) or
/// the VM-instruction error, and the exit qualification.
pub(crate) fn entry_failed(run: &mut uapi::Run, reason: u64, qualification: u64) -> WindowEnd {
    run.exit_reason = uapi::SHADOWVM_EXIT_FAIL_ENTRY;
    run.exit.set(uapi::ExitFailEntry {
        hardware_entry_failure_reason: reason,
        exit_qualification: qualification,
        // Interrupts are off in the window: the CPU the entry failed on.
        cpu: CpuId::current().as_u32(),
        padding: 0,
    });
    WindowEnd::User
}

/// Ends the window with an exit for userspace of `reason` (the run page's exit data is
/// already filled in).
fn user(run: &mut uapi::Run, reason: u32) -> Handled {
    run.exit_reason = reason;
    Handled::End(WindowEnd::User)
}

impl VcpuCore {
    /// Dispatches one exit.
    pub(super) fn handle(
        &mut self,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: ExitInfo,
    ) -> Handled {
        if info.reason & (1 << 31) != 0 {
            return entry_failed(run, info.reason as u64, info.qualification).into();
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
                let (a, b, c, d) =
                    super::cpuid::guest_cpuid(self.state.gpr[0] as u32, self.state.gpr[1] as u32);
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
            EXIT_RDPMC => self.raise(vector::GP, Some(0), None),
            EXIT_VMCALL => {
                let g = &self.state.gpr;
                let hc = uapi::ExitHypercall {
                    nr: g[0],
                    args: [g[3], g[1], g[2], g[6], g[7], g[8]],
                    ret: 0,
                };
                run.exit.set(hc);
                self.completion = Completion::Hypercall;
                self.skip(&info);
                user(run, uapi::SHADOWVM_EXIT_HYPERCALL)
            }
            // No nested VMX, no SMX, no MONITOR/MWAIT, no XSAVE: #UD, as on a CPU without them.
            EXIT_GETSEC
            | EXIT_VMCLEAR..=EXIT_VMXON
            | EXIT_INVEPT
            | EXIT_INVVPID
            | EXIT_MWAIT
            | EXIT_MONITOR
            | EXIT_XSETBV => self.raise(vector::UD, None, None),
            EXIT_CR_ACCESS => self.cr_access(ram, &info),
            EXIT_DR_ACCESS => self.dr_access(&info),
            EXIT_IO => self.io(run, &info),
            EXIT_RDMSR => self.rdmsr(vmcs, &info),
            EXIT_WRMSR => self.wrmsr(vmcs, ram, &info),
            EXIT_INVALID_GUEST_STATE | EXIT_MSR_LOADING | EXIT_MCE_DURING_ENTRY => {
                entry_failed(run, info.reason as u64, info.qualification).into()
            }
            // Task switches and everything not enabled above.
            _ => self
                .internal_error(
                    run,
                    uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT,
                    info.reason,
                    info.qualification,
                    [0, 0, 0],
                )
                .into(),
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

    /// Ends the window with an internal error for userspace. The data words are the guest's
    /// RIP followed by `more`.
    pub(super) fn internal_error(
        &self,
        run: &mut uapi::Run,
        suberror: u32,
        reason: u32,
        qualification: u64,
        more: [u64; 3],
    ) -> WindowEnd {
        let [a, b, c] = more;
        run.exit_reason = uapi::SHADOWVM_EXIT_INTERNAL_ERROR;
        run.exit.set(uapi::ExitInternalError {
            suberror,
            vmx_exit_reason: reason,
            exit_qualification: qualification,
            data: [self.state.rip, a, b, c],
        });
        WindowEnd::User
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
            self.internal_error(
                run,
                uapi::SHADOWVM_INTERNAL_ERROR_MMU,
                0,
                e.code(),
                [e.code(), 0, 0],
            );
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
        if self.state.code64() {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    fn set_gpr(&mut self, n: usize, v: u64) {
        let v = if self.state.code64() {
            v
        } else {
            v & 0xffff_ffff
        };
        if let Some(r) = self.state.gpr.get_mut(n & 15) {
            *r = v;
        }
    }
}
