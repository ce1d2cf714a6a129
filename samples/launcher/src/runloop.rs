// SPDX-License-Identifier: GPL-2.0

//! The run loop shared by all backends: enter the guest, dispatch exits to the device model,
//! count them, and decide when the guest is finished.

use crate::backend::{Backend, Exit};
use crate::devices::Devices;
use crate::error::Result;
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

/// How the guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status written to the exit port (or the exit hypercall).
    Exited(u32),
    /// Value written to QEMU's isa-debug-exit (`--exit-device qemu`).
    DebugExit(u64),
    /// The guest reset the machine (i8042 command 0xFE). With `--exit-device qemu` the
    /// status is QEMU's with -no-reboot: 0.
    Reset {
        qemu_no_reboot: bool,
    },
    /// HLT; with IF=0 nothing can wake it, and the launcher injects no interrupts either.
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
            } => 0,
            Self::Reset {
                qemu_no_reboot: false,
            } => 178,
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
            Self::Reset { qemu_no_reboot } => format!(
                "guest reset the machine (i8042 command 0xFE){}",
                if *qemu_no_reboot {
                    ": status 0, as QEMU with -no-reboot"
                } else {
                    ""
                }
            ),
            Self::Halted { rip, interrupts_enabled: false } => {
                format!("guest halted with interrupts disabled{} without writing an exit status", at(rip))
            }
            Self::Halted { rip, interrupts_enabled: true } => {
                format!("guest halted{} waiting for an interrupt, but the launcher provides none", at(rip))
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
pub const EXIT_REASONS: [&str; 9] = [
    "io",
    "mmio",
    "hlt",
    "hypercall",
    "shutdown",
    "fail_entry",
    "internal_error",
    "intr",
    "other",
];

/// What the loop measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Exits by reason, in `EXIT_REASONS` order.
    pub exits: [u64; EXIT_REASONS.len()],
    /// Time spent inside the backend's RUN.
    pub in_guest: Duration,
    /// Wall time of the whole loop.
    pub wall: Duration,
}

impl LoopStats {
    fn count(&mut self, reason: &str) {
        if let Some(i) = EXIT_REASONS.iter().position(|r| *r == reason) {
            self.exits[i] += 1;
        }
    }
    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }
}

/// Runs the guest until it is finished. `stop` is polled before each entry and after each
/// interrupted RUN; it reports a timeout or an interrupt signal.
pub fn run(
    backend: &mut dyn Backend,
    devices: &mut Devices,
    stop: &dyn Fn() -> Option<Outcome>,
) -> Result<(Outcome, LoopStats)> {
    let mut stats = LoopStats::default();
    let start = Instant::now();
    let outcome = loop {
        if let Some(o) = stop() {
            break o;
        }
        devices.poll_input();
        let t = Instant::now();
        let exit = backend.run();
        stats.in_guest += t.elapsed();
        let exit = exit?;
        stats.count(exit.reason());
        match exit {
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
                let regs = backend.regs().ok();
                break Outcome::Halted {
                    rip: regs.map(|r| r.rip),
                    interrupts_enabled: regs.is_some_and(|r| r.rflags & SHADOWVM_RFLAGS_IF != 0),
                };
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
    };
    devices.flush();
    stats.wall = start.elapsed();
    Ok((outcome, stats))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::tests::Capture;
    use crate::error::Error;
    use shadowvm_uapi::{Regs, Sregs};
    use std::cell::Cell;
    use std::collections::VecDeque;

    /// A backend that replays a script of exits and records what the loop answered.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub script: VecDeque<Result<Exit>>,
        pub regs: Regs,
        pub io_in: Vec<Vec<u64>>,
        pub hypercall_ret: Vec<u64>,
        pub mmio_read: Vec<Vec<u8>>,
        pub runs: usize,
        pub mem: Vec<u8>,
        pub immediate_exit: u8,
    }

    impl Backend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn memory(&mut self) -> &mut [u8] {
            &mut self.mem
        }
        fn set_state(&mut self, regs: &Regs, _: &Sregs) -> Result<()> {
            self.regs = *regs;
            Ok(())
        }
        fn regs(&mut self) -> Result<Regs> {
            Ok(self.regs)
        }
        fn run(&mut self) -> Result<Exit> {
            self.runs += 1;
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
            Ok(vec![("mmu.pf_fixed".into(), 3)])
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
                qemu_no_reboot: false
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
                gpa: 0xfee0_0000,
                len: 4,
                data: [0; 8],
            }),
            out(0xf4, 4, 0),
        ]);
        let o = r.unwrap().0;
        assert_eq!(
            o,
            Outcome::UnhandledMmio {
                gpa: 0xfee0_0000,
                len: 4,
                write: true,
                rip: Some(0)
            }
        );
        assert_eq!(o.exit_status(), 174);
        assert!(o.describe().contains("0xfee00000"));
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
}
