#!/usr/bin/env python3
"""Unit tests of scripts/bench-report.py on a made-up serial log: a row's counters are its
closing mark's, less the closing OUT, from the same run as its cycles; min/median/max over
runs; the generated summary agrees with the table. Run: python3 scripts/test-bench-report.py
"""
import importlib.util
import json
import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_report", os.path.join(HERE, "bench-report.py"))
br = importlib.util.module_from_spec(spec)
spec.loader.exec_module(br)


def record(backend, run, rows, total_cycles=1000, wall=5_000_000):
    """A BENCHRUN record. rows: (workload, param, value, cycles, iterations, delta)."""
    lines = [f"BENCHRUN-BEGIN backend={backend} image=bench-lm run={run}"]
    marks = []
    for k, (w, p, v, cyc, it, delta) in enumerate(rows):
        lines.append(f"BENCH {w} {p}={v} cycles={cyc} iterations={it} mark={k}")
        # The opening mark's delta (set-up) must not be counted: give it large values.
        marks.append({"mark": 2 * k, "time_in_run_ns": 10 * k, "wall_time_ns": 100 * k,
                      "delta": {"kvm.vcpu.exits": 999, "exits.cr_access": 999}})
        marks.append({"mark": 2 * k + 1, "time_in_run_ns": 10 * k + 5,
                      "wall_time_ns": 100 * k + 50, "delta": delta})
    lines.append(f"BENCH-TOTAL cycles={total_cycles}")
    launcher = {"outcome": {"kind": "exit", "guest_status": 0}, "wall_time_ns": wall,
                "stats": {"kvm.vcpu.exits": 77, "exits.cr_access": 70, "exits.io": 7},
                "marks": marks}
    lines.append("BENCHRUN-JSON " + json.dumps(launcher))
    lines.append(f"BENCHRUN-END backend={backend} image=bench-lm run={run} rc=0 seconds={run}.5")
    return lines


def log():
    lines = ["BENCH-CONFIG backends=shadowvm,kvm-ept0 images=bench-lm runs=3",
             "BENCHRUN-BACKEND backend=shadowvm ok=1"]
    for run, cyc in enumerate([100, 300, 200], 1):
        lines += record("shadowvm", run, [
            ("invlpg", "pages", 1, cyc, 10,
             {"exits.invlpg": 10, "exits.io": 1, "mmu.invlpg": 10,
              "launcher.total": 1}),
            ("first_touch", "pages", 4, 50, 4,
             {"exits.exception_nmi": 12, "exits.io": 1, "launcher.total": 1}),
        ], total_cycles=1000 + run)
    lines.append("BENCHRUN-BACKEND backend=kvm-ept0 ok=1")
    for run in (1, 2, 3):
        lines += record("kvm-ept0", run, [
            ("invlpg", "pages", 1, 400, 10,
             {"kvm.vcpu.exits": 11, "kvm.vcpu.invlpg": 10, "kvm.vcpu.io_exits": 1,
              "launcher.total": 1}),
            ("first_touch", "pages", 4, 40, 4,
             {"kvm.vcpu.exits": 9, "kvm.vcpu.pf_taken": 8, "kvm.vcpu.io_exits": 1,
              "launcher.total": 1}),
        ], total_cycles=2000)
    lines.append("SHADOWVM-DONE")
    return lines


def linux_record(backend, run, boot_tsc, boot_delta, rows, rc=0, init=True):
    """A Linux guest's BENCHRUN record. The launcher's mark 0 at the kernel's entry has
    guest TSC 1000; /init's BENCH-INIT line has boot_tsc and mark 1, whose delta is
    boot_delta. rows: (workload, param, value, cycles, operations, mark k, delta)."""
    lines = [f"BENCHRUN-BEGIN backend={backend} image=linux run={run}"]
    if init:
        lines.append(f"BENCH-INIT tsc={boot_tsc} mark=1")
    marks = [{"mark": 0, "time_in_run_ns": 0, "wall_time_ns": 0, "delta": {},
              "guest_tsc": 1000},
             {"mark": 1, "time_in_run_ns": 5, "wall_time_ns": 50, "delta": boot_delta,
              "guest_tsc": boot_tsc + 7}]
    for w, p, v, cyc, ops, k, delta in rows:
        lines.append(f"BENCH {w} {p}={v} cycles={cyc} iterations={ops} mark={k}")
        marks.append({"mark": 2 * k, "time_in_run_ns": 10 * k, "wall_time_ns": 100 * k,
                      "delta": {"kvm.vcpu.exits": 999, "exits.cr_access": 999}})
        marks.append({"mark": 2 * k + 1, "time_in_run_ns": 10 * k + 5,
                      "wall_time_ns": 100 * k + 50, "delta": delta})
    launcher = {"outcome": {"kind": "exit", "guest_status": rc}, "wall_time_ns": 9,
                "stats": {}, "marks": marks}
    lines.append("BENCHRUN-JSON " + json.dumps(launcher))
    lines.append(f"BENCHRUN-END backend={backend} image=linux run={run} rc={rc} seconds=4.0")
    return lines


def linux_log():
    lines = ["BENCH-CONFIG backends=shadowvm,kvm-ept0 images= runs=5 linux_runs=3 "
             "linux_rows=all", "BENCHRUN-BACKEND backend=shadowvm ok=1"]
    for run, (boot, fork_cycles) in enumerate([(51000, 800), (41000, 600), (61000, 700)], 1):
        lines += linux_record("shadowvm", run, boot, {
            "exits.io": 3, "exits.exception_nmi": 10, "mmu.hidden_faults_fixed": 10}, [
            ("fork_exec_exit", "loops", 4, fork_cycles, 4, 1,
             {"exits.exception_nmi": 8, "exits.cr_access": 4, "exits.io": 1,
              "mmu.cr3_writes": 4}),
            ("mmap_fault", "pages", 8, 160, 8, 3,
             {"exits.exception_nmi": 8, "exits.io": 1})])
        lines.insert(-2, f"BENCH-INFO thp_fault thp_fault_alloc={run + 1} thp_fault_fallback=0")
    lines.append("BENCHRUN-BACKEND backend=kvm-ept0 ok=1")
    for run in (1, 2, 3):
        lines += linux_record("kvm-ept0", run, 21000, {
            "kvm.vcpu.exits": 13, "kvm.vcpu.io_exits": 3, "kvm.vcpu.pf_taken": 10}, [
            ("fork_exec_exit", "loops", 4, 400, 4, 1,
             {"kvm.vcpu.exits": 21, "kvm.vcpu.pf_taken": 16, "kvm.vcpu.io_exits": 1}),
            ("mmap_fault", "pages", 8, 80, 8, 3,
             {"kvm.vcpu.exits": 17, "kvm.vcpu.pf_taken": 16, "kvm.vcpu.io_exits": 1})])
    lines.append("SHADOWVM-DONE")
    return lines


LINUX_META = {"backends": ["shadowvm", "kvm-ept0"], "exit_cycles": 1000,
              "exit_cycles_source": "test", "platform": "bochs", "date": "d", "commit": "c",
              "config": {"runs": "5", "linux_runs": "3", "linux_rows": "all"},
              "boot_seconds": 1,
              "status": {"shadowvm": {"ok": True}, "kvm-ept0": {"ok": True}}}


class LinuxRows(unittest.TestCase):
    def setUp(self):
        _, _, self.runs = br.parse(linux_log())
        self.lres = br.summarize_linux(self.runs, ["shadowvm", "kvm-ept0"], 1000)
        self.rows = self.lres["rows"]

    def test_boot_row_runs_from_the_entry_mark_tsc_to_init(self):
        self.assertEqual(self.runs[0]["init"], {"tsc": 51000, "mark": 1})
        s = self.rows["boot_to_init"]["backends"]["shadowvm"]
        # /init's TSC less the launcher's guest TSC at the kernel's entry (1000).
        self.assertEqual((s["cycles"]["min"], s["cycles"]["median"], s["cycles"]["max"]),
                         (40000, 50000, 60000))
        # Mark 1's delta less /init's own OUT.
        self.assertEqual(s["exits_per_op"]["median"], 12)
        self.assertEqual(s["exits_by_reason_per_op"], {"#PF/EPT": 10, "I/O": 2})
        self.assertEqual(list(self.rows)[0], "boot_to_init", "the boot row comes first")

    def test_rows_are_per_operation_from_their_own_marks(self):
        s = self.rows["fork_exec_exit loops=4"]["backends"]["shadowvm"]
        self.assertEqual(s["operations"], 4)
        self.assertEqual((s["cycles_per_op"]["min"], s["cycles_per_op"]["median"],
                          s["cycles_per_op"]["max"]), (150, 175, 200))
        self.assertEqual(s["exits_per_op"]["median"], 3)
        self.assertEqual(s["exits_by_reason_per_op"], {"#PF/EPT": 2, "CR": 1})
        self.assertEqual(s["mmu_per_op"], {"mmu.cr3_writes": 1})
        self.assertEqual(s["modelled_per_op"], 175 + 3 * 1000)
        k = self.rows["mmap_fault pages=8"]["backends"]["kvm-ept0"]
        self.assertEqual(k["exits_per_op"]["median"], 2)
        self.assertEqual(k["exits_by_reason_per_op"], {"#PF/EPT": 2})

    def test_a_failed_boot_makes_the_backend_missing_with_its_reason(self):
        lines = linux_log()[:-1] + linux_record("kvm-ept0", 4, 21000, {}, [], rc=1, init=False)
        lres = br.summarize_linux(br.parse(lines)[2], ["shadowvm", "kvm-ept0"], 1000)
        self.assertEqual(lres["status"]["kvm-ept0"],
                         {"ok": False, "why": "partly: run 4: launcher status 1; no "
                                              "BENCH-INIT line"})
        self.assertTrue(lres["status"]["shadowvm"]["ok"])
        # The good boots still count.
        self.assertEqual(lres["rows"]["boot_to_init"]["backends"]["kvm-ept0"]["runs"], 3)

    def test_tables_and_goals_agree_with_the_data(self):
        res = {"images": {}, "whole": {}, "skips": {}, "linux": self.lres}
        md = br.markdown(res, LINUX_META)
        self.assertIn("### Linux guest on shadowvm", md)
        self.assertIn("| `fork_exec_exit loops=4` | 4 | 175 (150-200) | 3.00 | #PF/EPT 2.00, "
                      "CR 1.00 | cr3_writes 1.00 | 3,175 | 1.75 | 0.60 | 0.62 |", md)
        # kvm-ept0's own table has no ratio columns against itself.
        self.assertIn("| `mmap_fault pages=8` | 8 | 10.00 | 2.00 | #PF/EPT 2.00 | pf_taken 2.00 | "
                      "2,010 |", md)
        self.assertIn("| linux | boot exits ≤ kvm-ept0 (`boot_to_init`) | 12 against 12 "
                      "(1.000) | yes |", md)
        self.assertIn("| linux | exits ≤ 0.75 on `fork_exec_exit loops=4` (per operation) | "
                      "0.600 | yes |", md)
        self.assertIn("| linux | exits ≤ 0.75 on `mmap_fault pages=8` (per operation) | "
                      "0.500 | yes |", md)
        self.assertIn("- **Linux guest, shadowvm against kvm-ept0** (3 rows, per operation): "
                      "fewer guest cycles (median) on 0, as many or more on 3", md)
        self.assertNotIn("no comparison", md)
        self.assertIn("What the guest kernel did in `thp_fault`, per boot (`/proc/vmstat` "
                      "differences, median (min-max)): shadowvm thp_fault_alloc 3 (2-4), "
                      "thp_fault_fallback 0.", md)

    def test_per_operation_figures(self):
        self.assertEqual([br.fmt_op(v) for v in (0, 0.001, 0.5, 99.994, 1234, 250_000)],
                         ["0.00", "<0.01", "0.50", "99.99", "1,234", "250 k"])


class Report(unittest.TestCase):
    def setUp(self):
        config, _, self.runs = br.parse(log())
        self.res = br.summarize(self.runs, ["shadowvm", "kvm-ept0"], ["bench-lm"], 1000)
        self.rows = self.res["images"]["bench-lm"]

    def test_counters_come_from_the_closing_mark_less_its_out(self):
        s = self.rows["invlpg pages=1"]["backends"]["shadowvm"]
        self.assertEqual(s["exits"]["median"], 10)
        self.assertEqual(s["exits_by_reason"], {"INVLPG": 10})
        self.assertEqual(s["mmu"], {"mmu.invlpg": 10})
        k = self.rows["invlpg pages=1"]["backends"]["kvm-ept0"]
        self.assertEqual(k["exits"]["median"], 10)
        self.assertEqual(k["exits_by_reason"], {"INVLPG": 10})
        self.assertEqual(self.rows["first_touch pages=4"]["backends"]["kvm-ept0"]
                         ["exits_by_reason"], {"#PF/EPT": 8})

    def test_spread_and_modelled_cost(self):
        s = self.rows["invlpg pages=1"]["backends"]["shadowvm"]
        self.assertEqual((s["cycles"]["min"], s["cycles"]["median"], s["cycles"]["max"]),
                         (100, 200, 300))
        self.assertEqual(s["modelled"], 200 + 10 * 1000)
        w = self.res["whole"]["bench-lm"]["shadowvm"]["guest_cycles"]
        self.assertEqual((w["min"], w["median"], w["max"]), (1001, 1002, 1003))
        p = self.res["whole"]["bench-lm"]["shadowvm"]["process_s"]
        self.assertEqual((p["min"], p["median"], p["max"]), (1.5, 2.5, 3.5))

    def test_summary_agrees_with_the_table(self):
        meta = {"backends": ["shadowvm", "kvm-ept0"], "exit_cycles": 1000,
                "exit_cycles_source": "test", "platform": "bochs", "date": "d", "commit": "c",
                "config": {"runs": "3"}, "boot_seconds": 1,
                "status": {"shadowvm": {"ok": True}, "kvm-ept0": {"ok": True}}}
        md = br.markdown(self.res, meta)
        # invlpg: 200 < 400 cycles, 10 = 10 exits; first_touch: 50 > 40 cycles, 12 > 8 exits.
        self.assertIn("fewer guest cycles (median) on 1, as many or more on 1 "
                      "(`first_touch pages=4` 1.25)", md)
        self.assertIn("fewer VM exits on 0, as many on 1, more on 1 "
                      "(`first_touch pages=4` 12 against 8)", md)
        self.assertIn("Source of the per-exit figure: test.", md)
        self.assertIn("| `invlpg pages=1` | 200 (100-300) | 400 |", md)
        self.assertIn("| bench-lm | exits ≤ 0.75 on `first_touch pages=4` | 1.500 | no |", md)
        self.assertIn("| bench-lm | cycles per event ≤ 0.6 on `invlpg pages=1` | 0.500 | yes |",
                      md)
        # The launcher processes: shadowvm 2.5 s (median), kvm-ept0 2.5 s.
        self.assertIn("| bench-lm | whole-run time ≤ 1.0 | guest cycles 0.501, run-loop wall "
                      "time 1.000, launcher process 1.000 | yes |", md)

    def test_update_doc_replaces_only_the_block(self):
        with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
            f.write("head\n<!-- bench-report:begin -->\nold\n<!-- bench-report:end -->\ntail\n")
        try:
            br.update_doc(f.name, "new")
            with open(f.name) as g:
                self.assertEqual(g.read(), "head\n<!-- bench-report:begin -->\nnew\n"
                                           "<!-- bench-report:end -->\ntail\n")
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False).result.wasSuccessful() else 1)
