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
