// SPDX-License-Identifier: GPL-2.0

//! The run loop shared by all backends: enter the guest, dispatch exits to the device model,
//! count them, and decide when the guest is finished.

use crate::backend::{Backend, Capabilities, Exit};
use crate::devices::Devices;
use crate::error::Result;
use crate::msr;
use crate::platform::Platform;
use shadowvm_uapi::SHADOWVM_RFLAGS_IF;
use std::time::{Duration, Instant};

/// Launcher hypercalls (VMCALL with the number in RAX; shadowvm backend only, KVM handles
/// VMCALL itself).
pub const HC_PING: u64 = 0;
/// Ends the run with status `args[0]`, like a write to the exit port.
pub const HC_EXIT: u64 = 1;
/// Writes the byte `args[0]` to the serial output.
pub const HC_PUTCHAR: u64 = 2;
/// Returned in RAX for an unknown hypercall number.
pub const HC_UNKNOWN: u64 = u64::MAX;

/// Benchmark mark port: a guest OUT here (any size) records a `Mark`, a snapshot of the
/// launcher's and the backend's counters, so that a benchmark can attribute exits to the
/// instructions between two marks. No device sits there on a PC.
pub const BENCH_MARK_PORT: u16 = 0xf8;

/// The mark the launcher records at a Linux kernel's entry (`Devices::mark_entry`): the
/// Linux benchmark (samples/linux/lbench.c) writes mark 1 when its /init starts, so marks 0
/// and 1 enclose the boot, as marks 2k and 2k+1 enclose a benchmark's row k.
pub const LINUX_ENTRY_MARK: u64 = 0;

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status written to the exit port (or the exit hypercall).
    Exited(u32),
    /// Value written to QEMU's isa-debug-exit (`--exit-device qemu`).
    DebugExit(u64),
    /// The guest reset the machine (i8042 command 0xFE). With `--exit-device qemu` the
    /// status is QEMU's with -no-reboot: 0. `console`: a Linux guest's restart line.
    Reset {
        qemu_no_reboot: bool,
        console: Option<String>,
    },
    /// A Linux guest's kernel panicked (`line`, its first panic line on the console) and
    /// then reset or halted the machine, or finished its report (`devices::linux_console`).
    KernelPanic {
        line: String,
    },
    /// A Linux guest powered off or halted (`line`, the kernel's message): without ACPI the
    /// kernel halts its CPU with interrupts off.
    PowerOff {
        line: String,
    },
    /// HLT with nothing that could wake the guest: IF=0 and no NMI pending, or IF=1 with no
    /// interrupt pending, no armed timer and no device that can interrupt (or a backend that
    /// cannot inject interrupts).
    Halted {
        rip: Option<u64>,
        interrupts_enabled: bool,
    },
    Shutdown {
        rip: Option<u64>,
    },
    FailEntry {
        reason: u64,
        qualification: u64,
        cpu: u32,
    },
    InternalError {
        suberror: u32,
        vmx_exit_reason: u32,
        qualification: u64,
        data: Vec<u64>,
    },
    UnhandledMmio {
        gpa: u64,
        len: u32,
        write: bool,
        rip: Option<u64>,
    },
    Timeout,
    Interrupted,
    UnknownExit(String),
}

impl Outcome {
    /// Process exit status (see the usage text and Documentation/uapi.md).
    pub fn exit_status(&self) -> u8 {
        match self {
            // Guest statuses 0..=127 pass through unchanged; larger ones become 128 (the full
            // value is in the message and the JSON).
            Self::Exited(s) => (*s).min(128) as u8,
            // QEMU exits with (v << 1) | 1, and the process status keeps the low 8 bits.
            Self::DebugExit(v) => ((v << 1) | 1) as u8,
            Self::Reset {
                qemu_no_reboot: true,
                ..
            } => 0,
            Self::Reset {
                qemu_no_reboot: false,
                ..
            } => 178,
            Self::KernelPanic { .. } => 179,
            Self::PowerOff { .. } => 180,
            Self::Halted { .. } => 170,
            Self::Shutdown { .. } => 171,
            Self::FailEntry { .. } => 172,
            Self::InternalError { .. } => 173,
            Self::UnhandledMmio { .. } => 174,
            Self::Timeout => 175,
            Self::Interrupted => 176,
            Self::UnknownExit(_) => 177,
        }
    }

    /// Short machine-readable kind, for JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exited(_) => "exit",
            Self::DebugExit(_) => "debug_exit",
            Self::Reset { .. } => "reset",
            Self::KernelPanic { .. } => "kernel_panic",
            Self::PowerOff { .. } => "power_off",
            Self::Halted { .. } => "halt",
            Self::Shutdown { .. } => "shutdown",
            Self::FailEntry { .. } => "fail_entry",
            Self::InternalError { .. } => "internal_error",
            Self::UnhandledMmio { .. } => "unhandled_mmio",
            Self::Timeout => "timeout",
            Self::Interrupted => "interrupted",
            Self::UnknownExit(_) => "unknown_exit",
        }
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        let at = |rip: &Option<u64>| rip.map(|r| format!(" at rip {r:#x}")).unwrap_or_default();
        match self {
            Self::Exited(0) => "guest passed (exit status 0)".into(),
            Self::Exited(s) => format!("guest failed with exit status {s} ({s:#x})"),
            Self::DebugExit(v) => format!(
                "guest wrote {v:#x} to isa-debug-exit: status {} as QEMU's (v << 1) | 1",
                self.exit_status()
            ),
            Self::Reset {
                qemu_no_reboot,
                console,
            } => format!(
                "guest reset the machine (i8042 command 0xFE){}{}",
                console
                    .as_ref()
                    .map(|l| format!(" after the kernel said \"{l}\""))
                    .unwrap_or_default(),
                if *qemu_no_reboot {
                    ": status 0, as QEMU with -no-reboot"
                } else {
                    ""
                }
            ),
            Self::KernelPanic { line } => format!("guest kernel panic: \"{line}\""),
            Self::PowerOff { line } => format!(
                "guest powered off: the kernel said \"{line}\" and halted its CPU with \
                 interrupts off"
            ),
            Self::Halted { rip, interrupts_enabled: false } => {
                format!("guest halted with interrupts disabled{} without writing an exit status", at(rip))
            }
            Self::Halted { rip, interrupts_enabled: true } => {
                format!("guest halted{} waiting for an interrupt, but nothing can raise one (no pending interrupt, no armed timer)", at(rip))
            }
            Self::Shutdown { rip } => format!("guest shut down (triple fault){}", at(rip)),
            Self::FailEntry { reason, qualification, cpu } => {
                if reason & shadowvm_uapi::SHADOWVM_FAIL_ENTRY_EXIT_REASON != 0 {
                    format!(
                        "VM entry failed on cpu {cpu}: exit reason {} with entry-failure bit 31 ({reason:#x}), exit qualification {qualification:#x} (invalid guest state)",
                        reason & 0xffff
                    )
                } else {
                    format!("VM entry failed on cpu {cpu}: VM-instruction error {reason}, exit qualification {qualification:#x}")
                }
            }
            Self::InternalError { suberror, vmx_exit_reason, qualification, data } => format!(
                "hypervisor internal error: suberror {suberror}, VMX exit reason {vmx_exit_reason}, exit qualification {qualification:#x}, data {data:#x?}"
            ),
            Self::UnhandledMmio { gpa, len, write, rip } => format!(
                "guest {} {len} bytes at guest-physical {gpa:#x}{}, which is neither RAM nor a device (raise --memory if it should be RAM)",
                if *write { "wrote" } else { "read" },
                at(rip)
            ),
            Self::Timeout => "guest did not finish before --timeout".into(),
            Self::Interrupted => "interrupted by a signal".into(),
            Self::UnknownExit(what) => format!("unhandled exit: {what}"),
        }
    }
}

/// Fixed order of the exit reasons in reports.
pub const EXIT_REASONS: [&str; 11] = [
    "io",
    "mmio",
    "hlt",
    "hypercall",
    "shutdown",
    "fail_entry",
    "internal_error",
    "intr",
    "irq_window",
    "msr",
    "other",
];

/// The counters at one benchmark mark (a guest write to `BENCH_MARK_PORT`), taken after the
/// marking OUT's own exit was counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The value the guest wrote.
    pub value: u64,
    /// The launcher's exit counts so far, in `EXIT_REASONS` order.
    pub exits: [u64; EXIT_REASONS.len()],
    /// Time inside RUN and wall time of the loop so far.
    pub in_guest: Duration,
    pub wall: Duration,
    /// The backend's statistics at the mark, or why they could not be read.
    pub backend: std::result::Result<Vec<(String, u64)>, String>,
    /// The guest's TSC at the mark (IA32_TSC through the backend; None if it cannot be
    /// read): what the guest's RDTSC would have returned there.
    pub guest_tsc: Option<u64>,
}

/// What the loop measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Exits by reason, in `EXIT_REASONS` order.
    pub exits: [u64; EXIT_REASONS.len()],
    /// Time spent inside the backend's RUN.
    pub in_guest: Duration,
    /// Wall time of the whole loop.
    pub wall: Duration,
    /// External interrupts injected.
    pub interrupts: u64,
    /// NMIs injected.
    pub nmis: u64,
    /// Times a halted guest was put to sleep until its next event.
    pub halt_sleeps: u64,
    /// Benchmark marks, in the order the guest wrote them.
    pub marks: Vec<Mark>,
}

impl LoopStats {
    /// Records marks `values`: the counters so far, the backend's statistics and the guest's
    /// TSC, read once for all of them.
    fn mark(&mut self, backend: &mut dyn Backend, values: &[u64], wall: Duration) {
        let backend_stats = backend.stats().map_err(|e| e.to_string());
        let guest_tsc = backend
            .get_msrs(&[msr::IA32_TSC])
            .ok()
            .and_then(|v| v.first().copied());
        for &value in values {
            self.marks.push(Mark {
                value,
                exits: self.exits,
                in_guest: self.in_guest,
                wall,
                backend: backend_stats.clone(),
                guest_tsc,
            });
        }
    }

    fn count(&mut self, reason: &str) {
        if let Some(i) = EXIT_REASONS.iter().position(|r| *r == reason) {
            self.exits[i] += 1;
        }
    }
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }
}

/// How often a halted guest waiting for serial input looks for it (1 ms).
const SERIAL_INPUT_POLL_NS: u64 = 1_000_000;

/// How the loop waits for time to pass (real signals and timers, or a test's fake clock).
pub trait Waiter {
    /// Makes a RUN still in the guest return at `deadline` (platform clock ns; None: never).
    fn kick_at(&mut self, deadline: Option<u64>);
    /// Called after every RUN: the next RUN may enter the guest again.
    fn after_run(&mut self);
    /// Blocks until `deadline` (None: until a signal) or a stop signal; `now` is the
    /// platform clock.
    fn sleep_until(&mut self, deadline: Option<u64>, now: u64);
}

/// Runs the guest until it is finished. `stop` is polled before each entry and after each
/// interrupted RUN; it reports a timeout or an interrupt signal.
pub fn run(
    backend: &mut dyn Backend,
    devices: &mut Devices,
    stop: &dyn Fn() -> Option<Outcome>,
) -> Result<(Outcome, LoopStats)> {
    run_with(
        backend,
        devices,
        stop,
        &mut crate::signals::SignalWaiter::default(),
    )
}

/// Before an entry: expires timers, injects a pending NMI, and injects the highest pending
/// interrupt if the guest can take it now, else asks for an interrupt-window exit.
fn deliver_interrupts(
    backend: &mut dyn Backend,
    platform: &mut Platform,
    stats: &mut LoopStats,
) -> Result<()> {
    platform.poll();
    if platform.take_nmi() {
        backend.inject_nmi()?;
        stats.nmis += 1;
    }
    let mut want_window = false;
    if platform.interrupt_pending() {
        if backend.ready_for_interrupt_injection() {
            if let Some(vector) = platform.acknowledge() {
                backend.inject_interrupt(vector)?;
                stats.interrupts += 1;
            }
            want_window = platform.interrupt_pending();
        } else {
            want_window = true;
        }
    }
    backend.set_request_interrupt_window(want_window);
    Ok(())
}

/// A HLT exit: with interrupts, sleeps until something can be delivered (Ok(None): resume
/// the guest); ends the run when nothing can ever wake it or `stop` says so.
fn halt(
    backend: &mut dyn Backend,
    devices: &mut Devices,
    caps: Capabilities,
    stop: &dyn Fn() -> Option<Outcome>,
    waiter: &mut dyn Waiter,
    stats: &mut LoopStats,
) -> Result<Option<Outcome>> {
    if !caps.irq {
        let regs = backend.regs().ok();
        return Ok(Some(Outcome::Halted {
            rip: regs.map(|r| r.rip),
            interrupts_enabled: regs.is_some_and(|r| r.rflags & SHADOWVM_RFLAGS_IF != 0),
        }));
    }
    let interrupts_enabled = backend.guest_if();
    loop {
        devices.poll_input();
        let serial_can_wake = interrupts_enabled && devices.serial_input_can_interrupt();
        let platform = &mut devices.platform;
        platform.poll();
        if platform.apic.nmi_pending() || (interrupts_enabled && platform.interrupt_pending()) {
            return Ok(None);
        }
        if !platform.can_wake(interrupts_enabled) && !serial_can_wake {
            return Ok(Some(Outcome::Halted {
                rip: backend.regs().ok().map(|r| r.rip),
                interrupts_enabled,
            }));
        }
        if let Some(o) = stop() {
            return Ok(Some(o));
        }
        stats.halt_sleeps += 1;
        let now = platform.now_ns();
        let mut deadline = platform.next_deadline();
        if serial_can_wake {
            // Serial input comes through a channel, which cannot end the sleep: look again
            // after a short while.
            let poll = now.saturating_add(SERIAL_INPUT_POLL_NS);
            deadline = Some(deadline.map_or(poll, |d| d.min(poll)));
        }
        waiter.sleep_until(deadline, now);
    }
}

/// `run` with an explicit way of waiting.
pub fn run_with(
    backend: &mut dyn Backend,
    devices: &mut Devices,
    stop: &dyn Fn() -> Option<Outcome>,
    waiter: &mut dyn Waiter,
) -> Result<(Outcome, LoopStats)> {
    let mut stats = LoopStats::default();
    let caps = backend.capabilities();
    let start = Instant::now();
    if let Some(value) = devices.entry_mark() {
        stats.mark(backend, &[value], start.elapsed());
    }
    let outcome = loop {
        if let Some(o) = stop() {
            break o;
        }
        devices.poll_input();
        if caps.irq {
            deliver_interrupts(backend, &mut devices.platform, &mut stats)?;
            waiter.kick_at(devices.platform.next_deadline());
        }
        let t = Instant::now();
        let exit = backend.run();
        stats.in_guest += t.elapsed();
        waiter.after_run();
        let exit = exit?;
        stats.count(exit.reason());
        match exit {
            Exit::IoOut { port, values, .. } if port == BENCH_MARK_PORT => {
                stats.mark(backend, &values, start.elapsed());
            }
            Exit::IoOut { port, size, values } => {
                let exit_device = devices.exit_device();
                if let Some(o) = values
                    .iter()
                    .find_map(|v| devices.io_out(port, size, *v).outcome(exit_device))
                {
                    break o;
                }
            }
            Exit::IoIn { port, size, count } => {
                let values: Vec<u64> = (0..count).map(|_| devices.io_in(port, size)).collect();
                backend.complete_io_in(&values);
            }
            Exit::MmioRead { gpa, len } => match devices.mmio_read(gpa, len) {
                Some(data) => backend.complete_mmio_read(&data[..(len as usize).min(8)]),
                None => {
                    break Outcome::UnhandledMmio {
                        gpa,
                        len,
                        write: false,
                        rip: backend.regs().ok().map(|r| r.rip),
                    }
                }
            },
            Exit::MmioWrite { gpa, len, data } => {
                if !devices.mmio_write(gpa, &data[..(len as usize).min(8)]) {
                    break Outcome::UnhandledMmio {
                        gpa,
                        len,
                        write: true,
                        rip: backend.regs().ok().map(|r| r.rip),
                    };
                }
            }
            Exit::Hlt => {
                if let Some(o) = halt(backend, devices, caps, stop, waiter, &mut stats)? {
                    break o;
                }
            }
            // Injection happens before the next entry.
            Exit::IrqWindowOpen => {}
            Exit::MsrRead { index } => {
                let r = devices.platform.rdmsr(index);
                backend.complete_msr(r.unwrap_or(0), r.is_err());
            }
            Exit::MsrWrite { index, data } => {
                // A TSC deadline is relative to the guest's TSC, which only the backend has.
                let tsc = if index == msr::IA32_TSC_DEADLINE {
                    backend
                        .get_msrs(&[msr::IA32_TSC])
                        .ok()
                        .and_then(|v| v.first().copied())
                } else {
                    None
                };
                let r = devices.platform.wrmsr(index, data, tsc);
                backend.complete_msr(0, r.is_err());
            }
            Exit::Hypercall { nr, args } => match nr {
                HC_EXIT => break Outcome::Exited(args[0] as u32),
                HC_PING => backend.complete_hypercall(0),
                HC_PUTCHAR => {
                    devices.io_out(crate::devices::SERIAL_BASE, 1, args[0]);
                    backend.complete_hypercall(0);
                }
                _ => backend.complete_hypercall(HC_UNKNOWN),
            },
            Exit::Shutdown => {
                break Outcome::Shutdown {
                    rip: backend.regs().ok().map(|r| r.rip),
                }
            }
            Exit::FailEntry {
                reason,
                qualification,
                cpu,
            } => {
                break Outcome::FailEntry {
                    reason,
                    qualification,
                    cpu,
                }
            }
            Exit::InternalError {
                suberror,
                vmx_exit_reason,
                qualification,
                data,
            } => {
                break Outcome::InternalError {
                    suberror,
                    vmx_exit_reason,
                    qualification,
                    data,
                }
            }
            Exit::Intr => {}
            Exit::Other(what) => break Outcome::UnknownExit(what),
        }
        if let Some(o) = devices.linux_panic_finished() {
            break o;
        }
    };
    let outcome = devices.explain_linux_end(outcome);
    devices.flush();
    stats.wall = start.elapsed();
    Ok((outcome, stats))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::CpuidEntry;
    use crate::devices::tests::Capture;
    use crate::error::Error;
    use crate::platform::Platform;
    use shadowvm_uapi::{Regs, Sregs};
    use std::cell::Cell;
    use std::collections::VecDeque;

    /// A backend that replays a script of exits and records what the loop answered.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub script: VecDeque<Result<Exit>>,
        pub regs: Regs,
        pub sregs: Sregs,
        pub io_in: Vec<Vec<u64>>,
        pub hypercall_ret: Vec<u64>,
        pub mmio_read: Vec<Vec<u8>>,
        pub runs: usize,
        pub mem: Vec<u8>,
        pub immediate_exit: u8,
        pub caps: Capabilities,
        /// Value `ready_for_interrupt_injection` returns until something is injected.
        pub ready: bool,
        pub injected: Vec<u8>,
        pub nmis: usize,
        pub window_requested: bool,
        pub msr_answers: Vec<(u64, bool)>,
        pub cpuid: Vec<CpuidEntry>,
        pub guest_tsc: u64,
        /// Added to `guest_tsc` by every RUN, as if the guest ran that many cycles.
        pub tsc_per_run: u64,
        /// `request_interrupt_window` at each entry.
        pub window_at_run: Vec<bool>,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn memory(&mut self) -> &mut [u8] {
            &mut self.mem
        }
        fn set_state(&mut self, regs: &Regs, sregs: &Sregs) -> Result<()> {
            self.regs = *regs;
            self.sregs = *sregs;
            Ok(())
        }
        fn regs(&mut self) -> Result<Regs> {
            Ok(self.regs)
        }
        fn run(&mut self) -> Result<Exit> {
            self.runs += 1;
            self.guest_tsc += self.tsc_per_run;
            self.window_at_run.push(self.window_requested);
            // Like KVM: after an exit the guest is ready when IF=1 (no shadow modelled).
            self.ready = self.regs.rflags & SHADOWVM_RFLAGS_IF != 0;
            self.script
                .pop_front()
                .unwrap_or(Ok(Exit::Other("script ended".into())))
        }
        fn complete_io_in(&mut self, values: &[u64]) {
            self.io_in.push(values.to_vec());
        }
        fn complete_hypercall(&mut self, ret: u64) {
            self.hypercall_ret.push(ret);
        }
        fn complete_mmio_read(&mut self, data: &[u8]) {
            self.mmio_read.push(data.to_vec());
        }
        fn immediate_exit_ptr(&mut self) -> *mut u8 {
            &mut self.immediate_exit
        }
        fn stats(&mut self) -> Result<Vec<(String, u64)>> {
            Ok(vec![
                ("mmu.pf_fixed".into(), 3),
                ("runs".into(), self.runs as u64),
            ])
        }
        fn capabilities(&self) -> Capabilities {
            self.caps
        }
        fn inject_interrupt(&mut self, vector: u8) -> Result<()> {
            assert!(self.ready, "injected while not ready");
            self.injected.push(vector);
            self.ready = false;
            Ok(())
        }
        fn inject_nmi(&mut self) -> Result<()> {
            self.nmis += 1;
            Ok(())
        }
        fn set_request_interrupt_window(&mut self, on: bool) {
            self.window_requested = on;
        }
        fn ready_for_interrupt_injection(&mut self) -> bool {
            self.ready
        }
        fn guest_if(&mut self) -> bool {
            self.regs.rflags & SHADOWVM_RFLAGS_IF != 0
        }
        fn complete_msr(&mut self, data: u64, gp: bool) {
            self.msr_answers.push((data, gp));
        }
        fn supported_cpuid(&mut self) -> Result<Vec<CpuidEntry>> {
            Ok(Vec::new())
        }
        fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
            self.cpuid = entries.to_vec();
            Ok(())
        }
        fn get_msrs(&mut self, indices: &[u32]) -> Result<Vec<u64>> {
            Ok(indices
                .iter()
                .map(|&i| {
                    if i == msr::IA32_TSC {
                        self.guest_tsc
                    } else {
                        0
                    }
                })
                .collect())
        }
        fn set_msrs(&mut self, _: &[(u32, u64)]) -> Result<()> {
            Ok(())
        }
        fn tsc_khz(&mut self) -> Result<u32> {
            Ok(1_000_000)
        }
    }

    fn out(port: u16, size: u8, v: u64) -> Result<Exit> {
        Ok(Exit::IoOut {
            port,
            size,
            values: vec![v],
        })
    }

    fn go(script: Vec<Result<Exit>>) -> (Result<(Outcome, LoopStats)>, Fake, Vec<u8>) {
        let mut fake = Fake {
            script: script.into(),
            ..Default::default()
        };
        let cap = Capture::default();
        let mut dev = Devices::new(Box::new(cap.clone()), true);
        let r = run(&mut fake, &mut dev, &|| None);
        let text = cap.0.borrow().clone();
        (r, fake, text)
    }

    #[test]
    fn serial_then_exit_port() {
        let (r, fake, text) = go(vec![
            out(0x3f8, 1, b'o'.into()),
            Ok(Exit::IoIn {
                port: 0x3fd,
                size: 1,
                count: 1,
            }),
            out(0x3f8, 1, b'k'.into()),
            Ok(Exit::Intr),
            out(0xf4, 4, 0),
            out(0x3f8, 1, b'!'.into()),
        ]);
        let (outcome, stats) = r.unwrap();
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(outcome.exit_status(), 0);
        assert_eq!(text, b"ok");
        assert_eq!(fake.io_in, vec![vec![0x60]]);
        assert_eq!(fake.runs, 5, "nothing runs after the exit port");
        assert_eq!(stats.exits[0], 4);
        assert_eq!(stats.exits[7], 1);
        assert_eq!(stats.total_exits(), 5);
    }

    #[test]
    fn bench_marks_snapshot_the_counters_in_order() {
        let (r, _, text) = go(vec![
            out(BENCH_MARK_PORT, 4, 2),
            out(0x3f8, 1, b'x'.into()),
            Ok(Exit::Intr),
            out(BENCH_MARK_PORT, 1, 3),
            out(0xf4, 4, 0),
        ]);
        let (outcome, stats) = r.unwrap();
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(text, b"x", "a mark is not serial output");
        let marks: Vec<_> = stats
            .marks
            .iter()
            .map(|m| (m.value, m.exits[0], m.exits[7], m.backend.clone()))
            .collect();
        let backend = |runs: u64| Ok(vec![("mmu.pf_fixed".into(), 3), ("runs".into(), runs)]);
        // Each snapshot counts the marking OUT itself and is taken before the next RUN.
        assert_eq!(marks, vec![(2, 1, 0, backend(1)), (3, 3, 1, backend(4))]);
        assert!(stats.marks[0].wall <= stats.marks[1].wall);
    }

    #[test]
    fn entry_mark_comes_before_the_first_run_with_the_guest_tsc() {
        let mut fake = Fake {
            script: vec![
                out(0x3f8, 1, b'x'.into()),
                out(BENCH_MARK_PORT, 4, 1),
                out(0xf4, 4, 0),
            ]
            .into(),
            guest_tsc: 5_000,
            tsc_per_run: 100,
            ..Default::default()
        };
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        dev.mark_entry(LINUX_ENTRY_MARK);
        let (_, stats) = run(&mut fake, &mut dev, &|| None).unwrap();
        let marks: Vec<_> = stats
            .marks
            .iter()
            .map(|m| (m.value, m.exits.iter().sum::<u64>(), m.guest_tsc))
            .collect();
        // The entry mark: nothing has run yet; the guest's mark 1 after its second RUN.
        assert_eq!(marks, vec![(0, 0, Some(5_000)), (1, 2, Some(5_200))]);
    }

    #[test]
    fn no_entry_mark_unless_asked() {
        let (r, _, _) = go(vec![out(0xf4, 4, 0)]);
        assert!(r.unwrap().1.marks.is_empty());
    }

    #[test]
    fn string_out_stops_at_exit_status() {
        let (r, _, text) = go(vec![
            Ok(Exit::IoOut {
                port: 0x3f8,
                size: 1,
                values: vec![b'a'.into(), b'b'.into()],
            }),
            out(0xf4, 4, 7),
        ]);
        assert_eq!(r.unwrap().0, Outcome::Exited(7));
        assert_eq!(text, b"ab");
    }

    #[test]
    fn exit_status_is_capped_below_launcher_codes() {
        assert_eq!(Outcome::Exited(5).exit_status(), 5);
        assert_eq!(Outcome::Exited(0x7f).exit_status(), 0x7f);
        assert_eq!(Outcome::Exited(1000).exit_status(), 128);
    }

    #[test]
    fn reset_and_debug_exit_end_the_run() {
        let (r, fake, _) = go(vec![out(0x64, 1, 0xfe), out(0xf4, 4, 0)]);
        let o = r.unwrap().0;
        assert_eq!(
            o,
            Outcome::Reset {
                qemu_no_reboot: false,
                console: None
            }
        );
        assert_eq!((o.exit_status(), o.kind()), (178, "reset"));
        assert_eq!(fake.runs, 1);
        let mut fake = Fake {
            script: vec![out(0x3f8, 1, b'x'.into()), out(0xf4, 4, 0x21)].into(),
            ..Default::default()
        };
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        dev.set_exit_device(crate::devices::ExitDevice::Qemu);
        let o = run(&mut fake, &mut dev, &|| None).unwrap().0;
        assert_eq!(o, Outcome::DebugExit(0x21));
        assert_eq!(o.exit_status(), 0x43);
        assert!(o.describe().contains("0x21"), "{}", o.describe());
    }

    /// Runs `script` after the guest wrote `console` to COM1, with the console read as a
    /// Linux guest's when `linux`; returns the outcome and the RUNs made.
    fn linux_end(console: &str, script: Vec<Result<Exit>>, linux: bool) -> (Outcome, usize) {
        let text = Ok(Exit::IoOut {
            port: 0x3f8,
            size: 1,
            values: console.bytes().map(u64::from).collect(),
        });
        let mut fake = Fake {
            script: std::iter::once(text).chain(script).collect(),
            ..Default::default()
        };
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        if linux {
            dev.watch_linux_console();
        }
        let o = run(&mut fake, &mut dev, &|| None).unwrap().0;
        (o, fake.runs)
    }

    #[test]
    fn linux_guest_ends_are_told_apart() {
        let reset = || out(0x64, 1, 0xfe);
        let panic = "[ 2.6] Kernel panic - not syncing: Attempted to kill init!\r\n";
        let (o, _) = linux_end(panic, vec![reset()], true);
        assert_eq!((o.kind(), o.exit_status()), ("kernel_panic", 179));
        // Not for a guest whose console is not read as Linux's.
        let (o, _) = linux_end(panic, vec![reset()], false);
        assert_eq!((o.kind(), o.exit_status()), ("reset", 178));
        let (o, _) = linux_end("[ 2.5] reboot: Restarting system\r\n", vec![reset()], true);
        assert_eq!((o.kind(), o.exit_status()), ("reset", 178));
        assert!(
            o.describe().contains("Restarting system"),
            "{}",
            o.describe()
        );
        let halt = "[ 2.1] reboot: Power off not available: System halted instead\r\n";
        let (o, _) = linux_end(halt, vec![Ok(Exit::Hlt)], true);
        assert_eq!((o.kind(), o.exit_status()), ("power_off", 180));
        // The end of a panic report ends the run at once: a kernel booted without panic=
        // spins from there on.
        let report = format!("{panic}[ 2.6] ---[ end Kernel panic - not syncing: x ]---\r\n");
        let (o, runs) = linux_end(&report, vec![Ok(Exit::Intr), Ok(Exit::Intr)], true);
        assert_eq!((o.kind(), runs), ("kernel_panic", 1));
    }

    #[test]
    fn hlt_reports_interrupt_flag() {
        let (r, ..) = go(vec![Ok(Exit::Hlt)]);
        let o = r.unwrap().0;
        assert_eq!(
            o,
            Outcome::Halted {
                rip: Some(0),
                interrupts_enabled: false
            }
        );
        assert_eq!(o.exit_status(), 170);
        assert!(o.describe().contains("interrupts disabled"));
    }

    #[test]
    fn mmio_is_reported_and_stops() {
        let (r, fake, _) = go(vec![
            Ok(Exit::MmioWrite {
                gpa: 0xfed0_0000,
                len: 4,
                data: [0; 8],
            }),
            out(0xf4, 4, 0),
        ]);
        let o = r.unwrap().0;
        assert_eq!(
            o,
            Outcome::UnhandledMmio {
                gpa: 0xfed0_0000,
                len: 4,
                write: true,
                rip: Some(0)
            }
        );
        assert_eq!(o.exit_status(), 174);
        assert!(o.describe().contains("0xfed00000"));
        assert_eq!(fake.runs, 1);
    }

    #[test]
    fn testdev_mmio_is_answered() {
        let base = crate::devices::TESTDEV_IOMEM_BASE;
        let (r, fake, _) = go(vec![
            Ok(Exit::MmioWrite {
                gpa: base + 8,
                len: 4,
                data: [0x78, 0x56, 0x34, 0x12, 0xee, 0xee, 0xee, 0xee],
            }),
            Ok(Exit::MmioRead {
                gpa: base + 8,
                len: 8,
            }),
            Ok(Exit::MmioRead {
                gpa: base + 9,
                len: 2,
            }),
            // Just past the window: unhandled, as before.
            Ok(Exit::MmioRead {
                gpa: base + 0x1_0000,
                len: 1,
            }),
        ]);
        let o = r.unwrap().0;
        assert_eq!(
            fake.mmio_read,
            vec![vec![0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0], vec![0x56, 0x34]]
        );
        assert_eq!(
            o,
            Outcome::UnhandledMmio {
                gpa: base + 0x1_0000,
                len: 1,
                write: false,
                rip: Some(0)
            }
        );
        assert_eq!(fake.runs, 4);
    }

    #[test]
    fn hypercalls() {
        let (r, fake, text) = go(vec![
            Ok(Exit::Hypercall {
                nr: HC_PING,
                args: [0; 6],
            }),
            Ok(Exit::Hypercall {
                nr: HC_PUTCHAR,
                args: [u64::from(b'z'), 0, 0, 0, 0, 0],
            }),
            Ok(Exit::Hypercall {
                nr: 99,
                args: [0; 6],
            }),
            Ok(Exit::Hypercall {
                nr: HC_EXIT,
                args: [3, 0, 0, 0, 0, 0],
            }),
        ]);
        assert_eq!(r.unwrap().0, Outcome::Exited(3));
        assert_eq!(fake.hypercall_ret, vec![0, 0, HC_UNKNOWN]);
        assert_eq!(text, b"z");
    }

    #[test]
    fn failures_map_to_distinct_statuses() {
        let cases = [
            (Exit::Shutdown, 171),
            (
                Exit::FailEntry {
                    reason: (1 << 31) | 33,
                    qualification: 0,
                    cpu: 1,
                },
                172,
            ),
            (
                Exit::InternalError {
                    suberror: 2,
                    vmx_exit_reason: 52,
                    qualification: 0,
                    data: vec![0x1000],
                },
                173,
            ),
            (Exit::Other("x".into()), 177),
        ];
        for (exit, status) in cases {
            let (r, ..) = go(vec![Ok(exit)]);
            let o = r.unwrap().0;
            assert_eq!(o.exit_status(), status, "{o:?}");
        }
        let d = Outcome::FailEntry {
            reason: (1 << 31) | 33,
            qualification: 0,
            cpu: 1,
        }
        .describe();
        assert!(d.contains("exit reason 33"), "{d}");
    }

    #[test]
    fn backend_errors_propagate() {
        let (r, ..) = go(vec![out(0x3f8, 1, 0), Err(Error::os("RUN failed: EFAULT"))]);
        assert_eq!(r.unwrap_err().msg, "RUN failed: EFAULT");
    }

    #[test]
    fn stop_is_checked_between_runs() {
        let mut fake = Fake {
            script: vec![Ok(Exit::Intr), Ok(Exit::Intr), Ok(Exit::Intr)].into(),
            ..Default::default()
        };
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        let polls = Cell::new(0);
        let stop = || {
            polls.set(polls.get() + 1);
            (polls.get() == 3).then_some(Outcome::Timeout)
        };
        let (o, stats) = run(&mut fake, &mut dev, &stop).unwrap();
        assert_eq!(o, Outcome::Timeout);
        assert_eq!(o.exit_status(), 175);
        assert_eq!(fake.runs, 2);
        assert_eq!(stats.exits[7], 2);
    }

    /// A `Waiter` on a fake clock: sleeping jumps to the deadline.
    #[derive(Default)]
    struct FakeWaiter {
        clock: crate::platform::tests::FakeClock,
        kicks: Vec<Option<u64>>,
        sleeps: Vec<Option<u64>>,
        after_runs: usize,
        /// Sent as serial input at the first sleep.
        input: Option<(std::sync::mpsc::SyncSender<Vec<u8>>, Vec<u8>)>,
    }

    impl Waiter for FakeWaiter {
        fn kick_at(&mut self, deadline: Option<u64>) {
            self.kicks.push(deadline);
        }
        fn after_run(&mut self) {
            self.after_runs += 1;
        }
        fn sleep_until(&mut self, deadline: Option<u64>, now: u64) {
            assert_eq!(now, self.clock.0.get());
            self.sleeps.push(deadline);
            self.clock.0.set(deadline.unwrap_or(now + 1_000_000));
            if let Some((tx, bytes)) = self.input.take() {
                tx.send(bytes).unwrap();
            }
        }
    }

    struct IrqRun {
        result: Result<(Outcome, LoopStats)>,
        fake: Fake,
        waiter: FakeWaiter,
        dev: Devices,
    }

    /// Runs `script` on a backend with interrupt support, the platform on a fake clock
    /// prepared by `setup`, and the guest's IF as given.
    fn go_irq(
        script: Vec<Result<Exit>>,
        interrupts_enabled: bool,
        setup: impl FnOnce(&mut Platform),
        stop: &dyn Fn() -> Option<Outcome>,
    ) -> IrqRun {
        let mut fake = Fake {
            script: script.into(),
            caps: Capabilities {
                irq: true,
                user_msr: true,
                cpuid: true,
                tsc: true,
                tsc_deadline: true,
            },
            guest_tsc: 40_000,
            ..Default::default()
        };
        if interrupts_enabled {
            fake.regs.rflags = SHADOWVM_RFLAGS_IF | 2;
        }
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        let (mut platform, clock) = crate::platform::tests::platform();
        platform.configure(Some(1_000_000), 36);
        setup(&mut platform);
        dev.set_platform(platform);
        let mut waiter = FakeWaiter {
            clock,
            ..Default::default()
        };
        let result = run_with(&mut fake, &mut dev, stop, &mut waiter);
        IrqRun {
            result,
            fake,
            waiter,
            dev,
        }
    }

    fn apic_write(p: &mut Platform, reg: u32, v: u32) {
        assert!(p.mmio_write(0xfee0_0000 + u64::from(reg), &v.to_le_bytes()));
    }

    fn enable_apic(p: &mut Platform) {
        apic_write(p, crate::apic::reg::SVR, 0x1ff);
    }

    fn exit_port() -> Result<Exit> {
        out(0xf4, 4, 0)
    }

    #[test]
    fn injects_when_ready_else_requests_a_window() {
        let r = go_irq(
            vec![Ok(Exit::IrqWindowOpen), exit_port()],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::ICR_LOW, (1 << 18) | 0x40);
                apic_write(p, crate::apic::reg::ICR_LOW, (1 << 18) | 0x50);
            },
            &|| None,
        );
        let (o, stats) = r.result.unwrap();
        assert_eq!(o, Outcome::Exited(0));
        // Not ready before the first entry: only a window request. At the window: the higher
        // vector; 0x40 stays in IRR behind 0x50 in service, so no new window request.
        assert_eq!(r.fake.window_at_run, vec![true, false]);
        assert_eq!(r.fake.injected, vec![0x50]);
        assert_eq!(stats.interrupts, 1);
        assert_eq!(stats.exits[8], 1, "irq_window counted");
        let apic = &r.dev.platform.apic;
        assert_eq!(apic.ppr(), 0x50, "0x50 in service");
        assert_eq!(r.waiter.after_runs, 2);
    }

    #[test]
    fn pic_interrupt_through_extint() {
        let mut r = go_irq(
            vec![Ok(Exit::Intr), exit_port()],
            true,
            |p| {
                p.io_out(0x21, 0xef);
                p.set_irq_line(4, true);
            },
            &|| None,
        );
        assert_eq!(r.result.unwrap().0, Outcome::Exited(0));
        assert_eq!(
            r.fake.injected,
            vec![0x0c],
            "IRQ 4 at the BIOS's vector base 8"
        );
        assert_eq!(r.dev.platform.io_in(0x20), Some(0), "IRR: taken");
    }

    #[test]
    fn hlt_sleeps_until_the_timer_then_injects() {
        let r = go_irq(
            vec![Ok(Exit::Hlt), exit_port()],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::TIMER_DIVIDE, 0b1011);
                apic_write(p, crate::apic::reg::LVT_TIMER, 0x30);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 5000);
            },
            &|| None,
        );
        let (o, stats) = r.result.unwrap();
        assert_eq!(o, Outcome::Exited(0));
        assert_eq!(
            r.waiter.kicks,
            vec![Some(5000), None],
            "kick armed while in the guest"
        );
        assert_eq!(r.waiter.sleeps, vec![Some(5000)]);
        assert_eq!(stats.halt_sleeps, 1);
        assert_eq!(r.fake.injected, vec![0x30]);
    }

    #[test]
    fn periodic_timer_interrupts_repeat() {
        let eoi = || {
            Ok(Exit::MmioWrite {
                gpa: 0xfee0_00b0,
                len: 4,
                data: [0; 8],
            })
        };
        let r = go_irq(
            vec![Ok(Exit::Hlt), eoi(), Ok(Exit::Hlt), eoi(), exit_port()],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::TIMER_DIVIDE, 0b1011);
                apic_write(p, crate::apic::reg::LVT_TIMER, (1 << 17) | 0x31);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 1000);
            },
            &|| None,
        );
        let (o, stats) = r.result.unwrap();
        assert_eq!(o, Outcome::Exited(0));
        assert_eq!(r.fake.injected, vec![0x31, 0x31]);
        assert_eq!(r.waiter.sleeps, vec![Some(1000), Some(2000)]);
        assert_eq!(stats.halt_sleeps, 2);
    }

    #[test]
    fn halted_guest_with_a_blocked_interrupt_sleeps_on() {
        // The periodic timer's vector is in service and never EOIed: the next one waits in
        // IRR, so the guest sleeps from deadline to deadline until the timeout.
        let polls = Cell::new(0);
        let r = go_irq(
            vec![Ok(Exit::Hlt), Ok(Exit::Hlt)],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::TIMER_DIVIDE, 0b1011);
                apic_write(p, crate::apic::reg::LVT_TIMER, (1 << 17) | 0x31);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 1000);
            },
            &|| {
                polls.set(polls.get() + 1);
                (polls.get() > 6).then_some(Outcome::Timeout)
            },
        );
        assert_eq!(r.result.unwrap().0, Outcome::Timeout);
        assert_eq!(r.fake.injected, vec![0x31]);
        assert_eq!(&r.waiter.sleeps[..3], &[Some(1000), Some(2000), Some(3000)]);
    }

    #[test]
    fn hlt_with_nothing_to_wake_ends_as_halted() {
        // IF=1 but nothing armed.
        let r = go_irq(vec![Ok(Exit::Hlt)], true, enable_apic, &|| None);
        assert_eq!(
            r.result.unwrap().0,
            Outcome::Halted {
                rip: Some(0),
                interrupts_enabled: true
            }
        );
        assert!(r.waiter.sleeps.is_empty());
        // IF=0 with a timer armed: only an NMI could wake it.
        let r = go_irq(
            vec![Ok(Exit::Hlt)],
            false,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::LVT_TIMER, 0x30);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 100);
            },
            &|| None,
        );
        let o = r.result.unwrap().0;
        assert_eq!(o.exit_status(), 170);
        assert!(o.describe().contains("interrupts disabled"));
        // A masked timer cannot wake the guest either.
        let r = go_irq(
            vec![Ok(Exit::Hlt)],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::LVT_TIMER, 0x1_0030);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 100);
            },
            &|| None,
        );
        assert_eq!(r.result.unwrap().0.exit_status(), 170);
    }

    #[test]
    fn nmi_is_injected_before_entry() {
        let r = go_irq(
            vec![Ok(Exit::Hlt)],
            false,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::ICR_LOW, (1 << 18) | (4 << 8));
            },
            &|| None,
        );
        let (o, stats) = r.result.unwrap();
        assert_eq!(r.fake.nmis, 1);
        assert_eq!(stats.nmis, 1);
        // Afterwards nothing can wake the IF=0 guest.
        assert_eq!(o.exit_status(), 170);
    }

    #[test]
    fn pending_nmi_wakes_a_halted_guest_with_if_clear() {
        let mut fake = Fake {
            caps: Capabilities {
                irq: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        enable_apic(&mut dev.platform);
        apic_write(
            &mut dev.platform,
            crate::apic::reg::ICR_LOW,
            (1 << 18) | (4 << 8),
        );
        let mut stats = LoopStats::default();
        let mut waiter = FakeWaiter::default();
        let caps = fake.caps;
        let r = halt(&mut fake, &mut dev, caps, &|| None, &mut waiter, &mut stats);
        assert_eq!(r.unwrap(), None, "resume to take the NMI");
        assert!(waiter.sleeps.is_empty());
    }

    #[test]
    fn stop_ends_a_halt_sleep() {
        let sleeps = Cell::new(0);
        let r = go_irq(
            vec![Ok(Exit::Hlt)],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::LVT_TIMER, (1 << 17) | 0x30);
                apic_write(p, crate::apic::reg::TIMER_INITIAL, 1 << 30);
                // Masked by TPR: the interrupt stays pending in IRR, the guest sleeps on.
                apic_write(p, crate::apic::reg::TPR, 0xff);
            },
            &|| {
                sleeps.set(sleeps.get() + 1);
                (sleeps.get() > 4).then_some(Outcome::Timeout)
            },
        );
        assert_eq!(r.result.unwrap().0, Outcome::Timeout);
        assert!(r.waiter.sleeps.len() >= 2);
    }

    #[test]
    fn msr_exits_are_answered() {
        let r = go_irq(
            vec![
                Ok(Exit::MsrRead {
                    index: msr::IA32_APIC_BASE,
                }),
                Ok(Exit::MsrRead { index: 0x1234_5678 }),
                Ok(Exit::MsrWrite {
                    index: msr::IA32_FEATURE_CONTROL,
                    data: 5,
                }),
                Ok(Exit::MsrWrite {
                    index: crate::msr::IA32_TSC_DEADLINE,
                    data: 50_000,
                }),
                exit_port(),
            ],
            true,
            |p| {
                enable_apic(p);
                apic_write(p, crate::apic::reg::LVT_TIMER, (2 << 17) | 0x30);
            },
            &|| None,
        );
        let (_, stats) = r.result.unwrap();
        assert_eq!(
            r.fake.msr_answers,
            vec![(0xfee0_0900, false), (0, true), (0, true), (0, false)]
        );
        assert_eq!(stats.exits[9], 4, "msr counted");
        // Guest TSC 40_000 at 1 GHz: 10_000 ns to the deadline.
        assert_eq!(r.dev.platform.next_deadline(), Some(10_000));
    }

    #[test]
    fn without_irq_support_nothing_is_injected() {
        let mut fake = Fake {
            script: vec![Ok(Exit::Intr), Ok(Exit::Hlt)].into(),
            ready: true,
            ..Default::default()
        };
        fake.regs.rflags = SHADOWVM_RFLAGS_IF;
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        dev.platform.io_out(0x21, 0xef);
        dev.platform.set_irq_line(4, true);
        let mut waiter = FakeWaiter::default();
        let (o, _) = run_with(&mut fake, &mut dev, &|| None, &mut waiter).unwrap();
        assert_eq!(
            o,
            Outcome::Halted {
                rip: Some(0),
                interrupts_enabled: true
            }
        );
        assert!(fake.injected.is_empty());
        assert!(waiter.kicks.is_empty());
    }

    #[test]
    fn serial_input_wakes_a_halted_guest() {
        let mut fake = Fake {
            script: vec![Ok(Exit::Hlt), Ok(Exit::Hlt)].into(),
            caps: Capabilities {
                irq: true,
                ..Default::default()
            },
            ..Default::default()
        };
        fake.regs.rflags = SHADOWVM_RFLAGS_IF | 2;
        let mut dev = Devices::new(Box::new(Capture::default()), true);
        let (platform, clock) = crate::platform::tests::platform();
        dev.set_platform(platform);
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        dev.set_serial_input(rx);
        dev.platform.io_out(0x21, 0xef); // IRQ 4 unmasked (BIOS vectors 0x08-0x0f)
        dev.io_out(0x3f9, 1, 1); // IER: received-data interrupt
        let mut waiter = FakeWaiter {
            clock,
            input: Some((tx.clone(), b"k".to_vec())),
            ..Default::default()
        };
        let stop_after = Cell::new(0);
        let stop = || {
            stop_after.set(stop_after.get() + 1);
            (stop_after.get() > 20).then_some(Outcome::Timeout)
        };
        let (o, _) = run_with(&mut fake, &mut dev, &stop, &mut waiter).unwrap();
        // The first HLT slept once (1 ms poll) until the byte came, then IRQ 4 was taken.
        assert_eq!(waiter.sleeps[0], Some(SERIAL_INPUT_POLL_NS));
        assert_eq!(fake.injected, vec![0x0c]);
        assert!(waiter.sleeps.len() > 2);
        // The second HLT: nothing more to read, but input may still come: sleeps on until
        // the stop. With the channel closed (end of input) it would end as halted.
        assert_eq!(o, Outcome::Timeout);
        drop(tx);
        let mut fake2 = Fake {
            script: vec![Ok(Exit::Hlt)].into(),
            caps: fake.caps,
            regs: fake.regs,
            ..Default::default()
        };
        let (o, _) = run_with(&mut fake2, &mut dev, &|| None, &mut waiter).unwrap();
        assert_eq!(o.exit_status(), 170);
    }
}
