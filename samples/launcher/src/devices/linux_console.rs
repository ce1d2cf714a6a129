// SPDX-License-Identifier: GPL-2.0

//! How a Linux guest ends, from its console. What the machine does cannot tell the endings
//! apart: a kernel without ACPI powers off by halting its CPU with interrupts off (as a
//! hung one might), and a reboot and a panic (with `panic=-1`) both reset the machine
//! through the i8042. The kernel says which it is on its console just before, so for a
//! Linux guest the launcher reads COM1 (`console=ttyS0`) for these lines and names the
//! outcome after them. A guest whose console is elsewhere gets the machine-level outcome.

use crate::runloop::Outcome;

/// Longest console line kept; the rest of a longer line is dropped (the kernel's lines
/// below, after their timestamp, fit well within it).
const MAX_LINE: usize = 256;

/// kernel/panic.c: the first line of a panic, and the line that ends its report (after
/// which a kernel that does not reset spins forever).
const PANIC: &str = "Kernel panic - not syncing";
const PANIC_END: &str = "---[ end Kernel panic - not syncing";
/// kernel/reboot.c (its messages start with "reboot: "): halt and power off, the
/// first when power off was asked for but the kernel has no way to do it (no ACPI).
const HALT: [&str; 3] = [
    "reboot: Power off not available: System halted instead",
    "reboot: System halted",
    "reboot: Power down",
];
/// kernel/reboot.c: a restart (it may be followed by the restart command).
const RESTART: &str = "reboot: Restarting system";

/// What the console said so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinuxConsole {
    /// The line being received, without its carriage returns.
    line: Vec<u8>,
    /// The first panic line, from "Kernel panic" on.
    panic: Option<String>,
    /// The kernel printed the end of its panic report.
    panic_ended: bool,
    /// The last halt or power-off line, from "reboot:" on.
    halt: Option<String>,
    /// The last restart line, from "reboot:" on.
    restart: Option<String>,
}

impl LinuxConsole {
    /// Takes bytes the guest wrote to the console.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => self.end_line(),
                b'\r' => {}
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        let from = |marker: &str| line.find(marker).map(|at| line[at..].trim_end().to_owned());
        if line.contains(PANIC_END) {
            self.panic_ended = self.panic.is_some();
        } else if let Some(l) = from(PANIC) {
            self.panic.get_or_insert(l);
        } else if let Some(l) = HALT.iter().find_map(|m| from(m)) {
            self.halt = Some(l);
        } else if let Some(l) = from(RESTART) {
            self.restart = Some(l);
        }
    }

    /// The kernel panicked and has finished reporting it: nothing more will come (it
    /// spins, or resets if `panic=` says so), so the run can end now.
    pub fn panic_finished(&self) -> Option<Outcome> {
        let line = self.panic.as_ref().filter(|_| self.panic_ended)?;
        Some(Outcome::KernelPanic { line: line.clone() })
    }

    /// The outcome named after what the kernel said before the machine ended that way:
    /// after a panic line, a reset, halt, triple fault or timeout is the panic's; a halt
    /// with interrupts off after a halt or power-off line is a power off; a reset keeps
    /// the restart line for its message. Anything else stays as it was.
    pub fn explain(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Reset { .. }
            | Outcome::Halted { .. }
            | Outcome::Shutdown { .. }
            | Outcome::Timeout
                if self.panic.is_some() =>
            {
                Outcome::KernelPanic {
                    line: self.panic.clone().unwrap_or_default(),
                }
            }
            Outcome::Halted {
                interrupts_enabled: false,
                ..
            } if self.halt.is_some() => Outcome::PowerOff {
                line: self.halt.clone().unwrap_or_default(),
            },
            Outcome::Reset { qemu_no_reboot, .. } => Outcome::Reset {
                qemu_no_reboot,
                console: self.restart.clone(),
            },
            o => o,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(text: &str) -> LinuxConsole {
        let mut c = LinuxConsole::default();
        // In pieces, as the guest writes a byte at a time.
        for chunk in text.as_bytes().chunks(3) {
            c.feed(chunk);
        }
        c
    }

    const RESET: Outcome = Outcome::Reset {
        qemu_no_reboot: false,
        console: None,
    };
    const HALTED_IF0: Outcome = Outcome::Halted {
        rip: Some(0xffff_ffff_8100_0000),
        interrupts_enabled: false,
    };

    #[test]
    fn poweroff_without_acpi_is_a_halt_after_its_line() {
        let c =
            console("[    2.170000] reboot: Power off not available: System halted instead\r\n");
        let o = c.explain(HALTED_IF0);
        assert_eq!(
            o,
            Outcome::PowerOff {
                line: "reboot: Power off not available: System halted instead".into()
            }
        );
        assert_eq!((o.exit_status(), o.kind()), (180, "power_off"));
        assert!(o.describe().contains("powered off"), "{}", o.describe());
        // A halt with interrupts on is the guest waiting for nothing, not a power off.
        let waiting = Outcome::Halted {
            rip: None,
            interrupts_enabled: true,
        };
        assert_eq!(c.explain(waiting.clone()), waiting);
        // Without the line, a halt stays a halt.
        assert_eq!(console("[ 1.0] ok\n").explain(HALTED_IF0), HALTED_IF0);
        assert_eq!(HALTED_IF0.exit_status(), 170);
    }

    #[test]
    fn reboot_is_a_reset_with_its_line() {
        let c = console("[ 2.56] reboot: Restarting system\r\n[ 2.56] reboot: machine restart\r\n");
        let o = c.explain(RESET);
        assert_eq!(
            o,
            Outcome::Reset {
                qemu_no_reboot: false,
                console: Some("reboot: Restarting system".into())
            }
        );
        assert_eq!((o.exit_status(), o.kind()), (178, "reset"));
        assert!(
            o.describe().contains("Restarting system"),
            "{}",
            o.describe()
        );
        let qemu = c.explain(Outcome::Reset {
            qemu_no_reboot: true,
            console: None,
        });
        assert_eq!(qemu.exit_status(), 0, "QEMU with -no-reboot");
    }

    #[test]
    fn panic_wins_over_how_the_machine_ended() {
        let text =
            "[ 2.61] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300\r\n\
                    [ 2.61] CPU: 0 UID: 0 PID: 1 Comm: init\r\n[ 2.61] Kernel Offset: disabled\r\n";
        let c = console(text);
        let want = Outcome::KernelPanic {
            line: "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300".into(),
        };
        for o in [
            RESET,
            HALTED_IF0,
            Outcome::Shutdown { rip: None },
            Outcome::Timeout,
        ] {
            assert_eq!(c.explain(o), want);
        }
        assert_eq!((want.exit_status(), want.kind()), (179, "kernel_panic"));
        assert!(want.describe().contains("Attempted to kill init"));
        // An exit status the guest wrote is its own, whatever came before.
        assert_eq!(c.explain(Outcome::Exited(0)), Outcome::Exited(0));
        // Not finished until the end of the report.
        assert_eq!(c.panic_finished(), None);
        let c = console(&format!(
            "{text}[ 2.62] ---[ end Kernel panic - not syncing: Attempted to kill init! ]---\r\n"
        ));
        assert_eq!(c.panic_finished(), Some(want));
    }

    #[test]
    fn only_the_first_panic_counts_and_long_lines_are_cut() {
        let c = console(&format!(
            "Kernel panic - not syncing: first\nKernel panic - not syncing: second{}\n",
            "x".repeat(1000)
        ));
        assert_eq!(
            c.explain(RESET),
            Outcome::KernelPanic {
                line: "Kernel panic - not syncing: first".into()
            }
        );
        let c = console(&format!(
            "{}\nreboot: Restarting system\n",
            "y".repeat(1000)
        ));
        assert!(matches!(
            c.explain(RESET),
            Outcome::Reset {
                console: Some(_),
                ..
            }
        ));
        // An end marker without a panic line before it ends nothing.
        assert_eq!(
            console("---[ end Kernel panic - not syncing: x ]---\n").panic_finished(),
            None
        );
    }
}
