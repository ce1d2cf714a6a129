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
use crate::vmx::exit::{ExitInfo, ExitReason};
use crate::vmx::window::CurrentVmcs;
use crate::x86::vector;
use kernel::cpu::CpuId;

/// What a handler decided.
pub(super) enum Handled {
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

/// Fills in an INTR exit (`cause`: why RUN returned without a guest exit).
pub(super) fn set_intr(run: &mut uapi::Run, cause: u32) {
    run.exit_reason = uapi::SHADOWVM_EXIT_INTR;
    run.exit.set(uapi::ExitIntr { cause, padding: 0 });
}

/// Ends the window with a VM-entry failure for userspace: the exit reason (bit 31 set) or
/// the VM-instruction error, and the exit qualification.
pub(super) fn entry_failed(run: &mut uapi::Run, reason: u64, qualification: u64) -> WindowEnd {
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
        if info.entry_failed() {
            return entry_failed(run, info.reason.into_raw().into(), info.qualification).into();
        }
        let handled = match info.basic_reason() {
            Some(reason) => self.handle_reason(reason, vmcs, ram, run, &info),
            None => self.unhandled(run, &info),
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

    /// The handler of each exit reason.
    fn handle_reason(
        &mut self,
        reason: ExitReason,
        vmcs: &CurrentVmcs<'_>,
        ram: &GuestRam,
        run: &mut uapi::Run,
        info: &ExitInfo,
    ) -> Handled {
        match reason {
            ExitReason::ExceptionNmi => self.exception(vmcs, ram, run, info),
            // The host gets the CPU back: a pending interrupt is taken when the window closes.
            ExitReason::ExternalInterrupt | ExitReason::PreemptionTimer => {
                Handled::End(WindowEnd::Interrupted)
            }
            // The guest can take what waits: the next entry injects it (`vcpu::irq`).
            ExitReason::InterruptWindow | ExitReason::NmiWindow => Handled::Resume,
            ExitReason::TripleFault => {
                self.event = None;
                user(run, uapi::SHADOWVM_EXIT_SHUTDOWN)
            }
            ExitReason::Cpuid => {
                let [a, b, c, d] = self
                    .cpuid
                    .lookup(self.state.gpr[0] as u32, self.state.gpr[1] as u32);
                self.state.gpr[0] = u64::from(a);
                self.state.gpr[3] = u64::from(b);
                self.state.gpr[1] = u64::from(c);
                self.state.gpr[2] = u64::from(d);
                self.skip(info)
            }
            ExitReason::Hlt => {
                self.skip(info);
                // An interrupt or NMI the guest can take now would wake it at once.
                if self.event_wakes_hlt() {
                    return Handled::Resume;
                }
                user(run, uapi::SHADOWVM_EXIT_HLT)
            }
            ExitReason::Invd => self.skip(info),
            ExitReason::Invlpg => {
                self.set_aside_engine_reports();
                self.mmu.invlpg(ram, info.qualification);
                let engine = self.mmu.take_tlb_flush();
                self.flush_guest_address(info.qualification, engine);
                self.skip(info)
            }
            ExitReason::Invpcid => self.invpcid(vmcs, ram, info),
            ExitReason::Rdpmc => self.raise(vector::GP, Some(0), None),
            ExitReason::Vmcall => {
                let g = &self.state.gpr;
                let hc = uapi::ExitHypercall {
                    nr: g[0],
                    args: [g[3], g[1], g[2], g[6], g[7], g[8]],
                    ret: 0,
                };
                run.exit.set(hc);
                self.completion = Completion::Hypercall;
                self.skip(info);
                user(run, uapi::SHADOWVM_EXIT_HYPERCALL)
            }
            // No nested VMX, no SMX, no MONITOR/MWAIT, no XSAVE: #UD, as on a CPU without them.
            ExitReason::Getsec
            | ExitReason::Vmclear
            | ExitReason::Vmlaunch
            | ExitReason::Vmptrld
            | ExitReason::Vmptrst
            | ExitReason::Vmread
            | ExitReason::Vmresume
            | ExitReason::Vmwrite
            | ExitReason::Vmxoff
            | ExitReason::Vmxon
            | ExitReason::Invept
            | ExitReason::Invvpid
            | ExitReason::Mwait
            | ExitReason::Monitor
            | ExitReason::Xsetbv => self.raise(vector::UD, None, None),
            ExitReason::CrAccess => self.cr_access(ram, info),
            ExitReason::DrAccess => self.dr_access(info),
            ExitReason::Io => self.io(run, info),
            ExitReason::Rdmsr => self.rdmsr(vmcs, run, info),
            ExitReason::Wrmsr => self.wrmsr(vmcs, ram, run, info),
            ExitReason::InvalidGuestState | ExitReason::MsrLoading | ExitReason::MceDuringEntry => {
                entry_failed(run, info.reason.into_raw().into(), info.qualification).into()
            }
            // Task switches and everything not enabled above.
            _ => self.unhandled(run, info),
        }
    }

    /// An exit shadowvm does not handle: an internal error for userspace.
    fn unhandled(&self, run: &mut uapi::Run, info: &ExitInfo) -> Handled {
        let suberror = uapi::SHADOWVM_INTERNAL_ERROR_UNHANDLED_EXIT;
        let (reason, qualification) = (info.reason.into_raw(), info.qualification);
        self.internal_error(run, suberror, reason, qualification, [0; 3])
            .into()
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
        self.advance_rip(info.instruction_len);
        Handled::Resume
    }

    /// Moves RIP past an instruction of `len` bytes that completed (here or, for an exit
    /// userspace completed, at the next RUN).
    fn advance_rip(&mut self, len: u32) {
        self.state.rip = self.state.rip.wrapping_add(len.into());
        if !self.state.code64() {
            self.state.rip &= 0xffff_ffff;
        }
        self.state.interruptibility &= !3;
    }

    fn raise(&mut self, vector: u8, error_code: Option<u32>, cr2: Option<u64>) -> Handled {
        self.queue_exception(vector, error_code, cr2);
        Handled::Raised
    }

    /// GPR `n` (0-15), all 64 bits.
    fn gpr(&self, n: usize) -> u64 {
        self.state.gpr.get(n & 15).copied().unwrap_or(0)
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
