// SPDX-License-Identifier: GPL-2.0

//! The end-of-run report: a readable table or JSON.

use crate::devices::IoCounts;
use crate::runloop::{LoopStats, Mark, Outcome, EXIT_REASONS};
use std::fmt::Write as _;

/// Everything reported about one run.
pub struct Report<'a> {
    pub backend: &'a str,
    pub image: &'a str,
    pub image_kind: &'a str,
    pub start: &'a str,
    pub memory: u64,
    pub entry: u64,
    pub outcome: &'a Outcome,
    pub loop_stats: &'a LoopStats,
    pub io: IoCounts,
    /// Backend statistics, in the backend's order.
    pub backend_stats: &'a [(String, u64)],
    /// Why backend statistics are missing, if they are.
    pub stats_error: Option<String>,
}

impl Report<'_> {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let ls = self.loop_stats;
        let _ = writeln!(s, "== shadowvm-run: {} ==", self.outcome.describe());
        let _ = writeln!(
            s,
            "backend {}, image {} ({}, entry {:#x}), start {}, memory {} MiB",
            self.backend,
            self.image,
            self.image_kind,
            self.entry,
            self.start,
            self.memory >> 20
        );
        let _ = writeln!(s, "{:<40} {:>16}", "VM exits seen by the launcher", "count");
        for (name, n) in EXIT_REASONS.iter().zip(ls.exits) {
            if n != 0 {
                let _ = writeln!(s, "  {name:<38} {n:>16}");
            }
        }
        for (name, n) in [
            ("io.serial", self.io.serial),
            ("io.exit_port", self.io.exit_port),
            ("io.other", self.io.other),
            ("mmio.testdev", self.io.testdev),
            ("io.i8042", self.io.keyboard),
            ("io.fw_cfg", self.io.fw_cfg),
            ("io.pic", self.io.pic),
            ("mmio.apic", self.io.apic),
        ] {
            if n != 0 {
                let _ = writeln!(s, "    {name:<36} {n:>16}");
            }
        }
        let _ = writeln!(s, "  {:<38} {:>16}", "total", ls.total_exits());
        for (name, n) in [
            ("interrupts injected", ls.interrupts),
            ("NMIs injected", ls.nmis),
            ("halted-guest sleeps", ls.halt_sleeps),
        ] {
            if n != 0 {
                let _ = writeln!(s, "{name:<40} {n:>16}");
            }
        }
        let _ = writeln!(
            s,
            "{:<40} {:>16}",
            format!("{} statistics", self.backend),
            "value"
        );
        if let Some(e) = &self.stats_error {
            let _ = writeln!(s, "  (unavailable: {e})");
        } else if self.backend_stats.is_empty() {
            let _ = writeln!(s, "  (none reported)");
        }
        for (name, v) in self.backend_stats {
            let _ = writeln!(s, "  {name:<38} {v:>16}");
        }
        if !ls.marks.is_empty() {
            let _ = writeln!(s, "{:<40} {:>16}", "benchmark marks", ls.marks.len());
        }
        let _ = writeln!(
            s,
            "{:<40} {:>16.6}",
            "time in RUN (s)",
            ls.in_guest.as_secs_f64()
        );
        let _ = writeln!(s, "{:<40} {:>16.6}", "wall time (s)", ls.wall.as_secs_f64());
        s
    }

    pub fn json(&self) -> String {
        let ls = self.loop_stats;
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"backend\":{},\"image\":{},\"image_kind\":{},\"start\":{},\"memory\":{},\"entry\":{},",
            q(self.backend),
            q(self.image),
            q(self.image_kind),
            q(self.start),
            self.memory,
            self.entry
        );
        let status = match self.outcome {
            Outcome::Exited(c) => c.to_string(),
            Outcome::DebugExit(v) => v.to_string(),
            _ => "null".into(),
        };
        let _ = write!(
            s,
            "\"outcome\":{{\"kind\":{},\"guest_status\":{},\"exit_status\":{},\"message\":{}}},",
            q(self.outcome.kind()),
            status,
            self.outcome.exit_status(),
            q(&self.outcome.describe())
        );
        let exits: Vec<String> = EXIT_REASONS
            .iter()
            .zip(ls.exits)
            .map(|(n, v)| format!("{}:{v}", q(n)))
            .collect();
        let _ = write!(
            s,
            "\"exits\":{{{},\"total\":{}}},",
            exits.join(","),
            ls.total_exits()
        );
        let _ = write!(
            s,
            "\"io\":{{\"serial\":{},\"exit_port\":{},\"other\":{},\"testdev\":{},\"i8042\":{},\"fw_cfg\":{},\"pic\":{},\"apic\":{}}},",
            self.io.serial,
            self.io.exit_port,
            self.io.other,
            self.io.testdev,
            self.io.keyboard,
            self.io.fw_cfg,
            self.io.pic,
            self.io.apic
        );
        let _ = write!(
            s,
            "\"interrupts\":{{\"injected\":{},\"nmis\":{},\"halt_sleeps\":{}}},",
            ls.interrupts, ls.nmis, ls.halt_sleeps
        );
        let stats: Vec<String> = self
            .backend_stats
            .iter()
            .map(|(n, v)| format!("{}:{v}", q(n)))
            .collect();
        let _ = write!(s, "\"stats\":{{{}}},", stats.join(","));
        let _ = write!(
            s,
            "\"stats_error\":{},",
            self.stats_error.as_deref().map_or("null".into(), q)
        );
        let marks: Vec<String> = marks_json(&ls.marks);
        let _ = write!(s, "\"marks\":[{}],", marks.join(","));
        let _ = write!(
            s,
            "\"time_in_run_ns\":{},\"wall_time_ns\":{}}}",
            ls.in_guest.as_nanos(),
            ls.wall.as_nanos()
        );
        s
    }
}

/// One JSON object per benchmark mark: the value written, the cumulative times, the
/// counters that changed since the previous mark (since the start for the first), as signed
/// differences: the launcher's exits as `launcher.<reason>` and `launcher.total`, and the
/// backend's statistics under their own names (unchanged counters are left out), then the
/// guest's TSC at the mark when the backend could read it.
fn marks_json(marks: &[Mark]) -> Vec<String> {
    let counters = |m: &Mark| {
        let mut c: Vec<(String, u64)> = EXIT_REASONS
            .iter()
            .zip(m.exits)
            .map(|(n, v)| (format!("launcher.{n}"), v))
            .collect();
        c.push(("launcher.total".into(), m.exits.iter().sum()));
        if let Ok(b) = &m.backend {
            c.extend(b.iter().cloned());
        }
        c
    };
    let mut before: std::collections::HashMap<String, u64> = Default::default();
    marks
        .iter()
        .map(|m| {
            let now = counters(m);
            let delta: Vec<String> = now
                .iter()
                .filter_map(|(n, v)| {
                    let d = v.wrapping_sub(before.get(n).copied().unwrap_or(0)) as i64;
                    (d != 0).then(|| format!("{}:{d}", q(n)))
                })
                .collect();
            before = now.into_iter().collect();
            let error = match &m.backend {
                Ok(_) => String::new(),
                Err(e) => format!(",\"stats_error\":{}", q(e)),
            };
            let tsc = m
                .guest_tsc
                .map_or(String::new(), |t| format!(",\"guest_tsc\":{t}"));
            format!(
                "{{\"mark\":{},\"time_in_run_ns\":{},\"wall_time_ns\":{},\"delta\":{{{}}}{tsc}{error}}}",
                m.value,
                m.in_guest.as_nanos(),
                m.wall.as_nanos(),
                delta.join(",")
            )
        })
        .collect()
}

/// JSON string literal.
fn q(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in text.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report<'a>(
        outcome: &'a Outcome,
        ls: &'a LoopStats,
        stats: &'a [(String, u64)],
    ) -> Report<'a> {
        Report {
            backend: "shadowvm",
            image: "g\"uest.elf",
            image_kind: "elf32",
            start: "protected",
            memory: 64 << 20,
            entry: 0x10_0000,
            outcome,
            loop_stats: ls,
            io: IoCounts {
                serial: 10,
                exit_port: 1,
                other: 0,
                testdev: 0,
                keyboard: 2,
                fw_cfg: 0,
                pic: 0,
                apic: 0,
            },
            backend_stats: stats,
            stats_error: None,
        }
    }

    #[test]
    fn json_shape() {
        let mut ls = LoopStats {
            in_guest: Duration::from_millis(5),
            wall: Duration::from_millis(6),
            ..Default::default()
        };
        ls.exits[0] = 11;
        let stats = vec![
            ("mmu.pf_fixed".to_string(), 9),
            ("exits.cr_access".to_string(), 2),
        ];
        let j = report(&Outcome::Exited(0), &ls, &stats).json();
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"image\":\"g\\\"uest.elf\""));
        assert!(j.contains("\"outcome\":{\"kind\":\"exit\",\"guest_status\":0,\"exit_status\":0,"));
        assert!(j.contains("\"exits\":{\"io\":11,\"mmio\":0,"));
        assert!(j.contains("\"total\":11}"));
        assert!(j.contains(
            "\"io\":{\"serial\":10,\"exit_port\":1,\"other\":0,\"testdev\":0,\"i8042\":2,\"fw_cfg\":0,\"pic\":0,\"apic\":0}"
        ));
        assert!(j.contains("\"stats\":{\"mmu.pf_fixed\":9,\"exits.cr_access\":2}"));
        assert!(j.contains("\"time_in_run_ns\":5000000"));
        // Balanced braces and quotes: a cheap well-formedness check without a JSON parser.
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        let j2 = report(&Outcome::Timeout, &ls, &[]).json();
        assert!(j2.contains("\"guest_status\":null,\"exit_status\":175"));
        let j3 = report(&Outcome::DebugExit(0x42), &ls, &[]).json();
        assert!(j3.contains("\"kind\":\"debug_exit\",\"guest_status\":66,\"exit_status\":133"));
        let j4 = report(
            &Outcome::Reset {
                qemu_no_reboot: false,
                console: None,
            },
            &ls,
            &[],
        )
        .json();
        assert!(j4.contains("\"kind\":\"reset\",\"guest_status\":null,\"exit_status\":178"));
        let j5 = report(
            &Outcome::KernelPanic {
                line: "Kernel panic - not syncing: \"x\"".into(),
            },
            &ls,
            &[],
        )
        .json();
        assert!(j5.contains(
            "\"kind\":\"kernel_panic\",\"guest_status\":null,\"exit_status\":179,\
             \"message\":\"guest kernel panic: \\\"Kernel panic - not syncing: \\\"x\\\"\\\"\""
        ));
    }

    #[test]
    fn table_lists_counters() {
        let mut ls = LoopStats::default();
        ls.exits[2] = 1;
        let stats = vec![("mmu.pf_fixed".to_string(), 9)];
        let t = report(
            &Outcome::Halted {
                rip: Some(0x10_0005),
                interrupts_enabled: false,
            },
            &ls,
            &stats,
        )
        .table();
        assert!(t.contains("halted with interrupts disabled at rip 0x100005"));
        assert!(t.contains("hlt"));
        assert!(t.contains("mmu.pf_fixed"));
        assert!(t.contains("io.serial"));
        assert!(!t.contains("mmio"), "zero counts are left out");
    }

    #[test]
    fn marks_are_differences_from_the_previous_mark() {
        let mark = |value, io, pf: u64, gauge: u64| Mark {
            value,
            exits: {
                let mut e = [0; EXIT_REASONS.len()];
                e[0] = io;
                e
            },
            in_guest: Duration::from_nanos(value * 10),
            wall: Duration::from_nanos(value * 20),
            backend: Ok(vec![("mmu.pf".into(), pf), ("mmu.now".into(), gauge)]),
            guest_tsc: (value != 2).then_some(value * 1000),
        };
        let ls = LoopStats {
            marks: vec![
                mark(1, 3, 5, 7),
                mark(2, 4, 5, 6),
                Mark {
                    backend: Err("gone".into()),
                    ..mark(3, 4, 0, 0)
                },
            ],
            ..Default::default()
        };
        let j = report(&Outcome::Exited(0), &ls, &[]).json();
        assert!(
            j.contains(concat!(
                "\"marks\":[{\"mark\":1,\"time_in_run_ns\":10,\"wall_time_ns\":20,\"delta\":",
                "{\"launcher.io\":3,\"launcher.total\":3,\"mmu.pf\":5,\"mmu.now\":7},",
                "\"guest_tsc\":1000},",
                "{\"mark\":2,\"time_in_run_ns\":20,\"wall_time_ns\":40,\"delta\":",
                "{\"launcher.io\":1,\"launcher.total\":1,\"mmu.now\":-1}},",
                "{\"mark\":3,\"time_in_run_ns\":30,\"wall_time_ns\":60,\"delta\":{},",
                "\"guest_tsc\":3000,\"stats_error\":\"gone\"}],"
            )),
            "{j}"
        );
        assert!(report(&Outcome::Exited(0), &ls, &[])
            .table()
            .contains("benchmark marks"));
    }

    #[test]
    fn json_escapes_control_characters() {
        assert_eq!(q("a\u{1}b\n"), "\"a\\u0001b\\n\"");
    }
}
