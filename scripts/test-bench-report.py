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


def scale_record(backend, memory, run, rows, seen_memory=None, image="bench-scale-lm"):
    """A scale run's record. rows: (spaces, cycles, tables, shadow-page delta, exits)."""
    lines = [f"BENCHRUN-BEGIN backend={backend} image={image} run={run} memory_mib={memory}"]
    marks = []
    counter = {"shadowvm": "mmu.shadow_pages_now"}.get(backend, "kvm.vm.mmu_shadow_pages")
    exits = "exits.exception_nmi" if backend == "shadowvm" else "kvm.vcpu.exits"
    for k, (spaces, cyc, tables, shadow, n_exits) in enumerate(rows):
        lines.append(f"BENCH-SCALE spaces={spaces} memory_mib={seen_memory or memory} "
                     f"faults=512 tables={tables} mark={k}")
        lines.append(f"BENCH scale_fault spaces={spaces} cycles={cyc} iterations=512 mark={k}")
        # The opening mark's delta (set-up: the page count so far) must not be used.
        marks.append({"mark": 2 * k, "time_in_run_ns": 1, "wall_time_ns": 1,
                      "delta": {counter: 5000}})
        marks.append({"mark": 2 * k + 1, "time_in_run_ns": 2, "wall_time_ns": 2,
                      "delta": {counter: shadow, exits: n_exits + 1, "launcher.total": 1,
                                "kvm.vm.pages_4k": 512}})
    lines.append("BENCH-TOTAL cycles=99")
    lines.append("BENCHRUN-JSON " + json.dumps(
        {"outcome": {"kind": "exit", "guest_status": 0}, "wall_time_ns": 1, "stats": {},
         "marks": marks}))
    lines.append(f"BENCHRUN-END backend={backend} image={image} run={run} rc=0 seconds=1")
    return lines


def scale_log():
    """shadowvm flat (within 10 %) everywhere; kvm-ept0 slower per fault at 1024 MiB and
    with shadow memory that grows with guest memory; one shadowvm run saw other memory."""
    lines = ["BENCH-CONFIG backends=shadowvm,kvm-ept0 images= runs=5",
             "BENCH-SCALE-CONFIG image=bench-scale-lm mems=64,1024 spaces=1,64 runs=3 "
             "memtotal_kib=1572864",
             "BENCHRUN-BACKEND backend=shadowvm ok=1"]
    for run, jitter in enumerate([0, 512, 1024], 1):
        lines += scale_record("shadowvm", 64, run, [(1, 512_000 + jitter, 39, 34, 1536),
                                                    (64, 530_000, 323, 290, 1600)])
        lines += scale_record("shadowvm", 1024, run, [(1, 520_000, 39, 34, 1536),
                                                      (64, 540_000 + jitter, 323, 291, 1600)])
    lines += scale_record("shadowvm", 1024, 4, [(1, 9_000_000, 39, 34, 1536)], seen_memory=512)
    lines.append("BENCHRUN-BACKEND backend=kvm-ept0 ok=1")
    for run in (1, 2, 3):
        lines += scale_record("kvm-ept0", 64, run, [(1, 600_000, 39, 34, 1536),
                                                    (64, 610_000, 323, 330, 1536)])
        lines += scale_record("kvm-ept0", 1024, run, [(1, 900_000, 39, 68, 1536),
                                                      (64, 910_000, 323, 660, 1536)])
    lines.append("SHADOWVM-DONE")
    return lines


class Scale(unittest.TestCase):
    def setUp(self):
        self.config, _, runs = br.parse(scale_log())
        self.names = ["shadowvm", "kvm-ept0"]
        self.scale = br.scale_summary(runs, self.names)
        self.meta = {"backends": self.names, "config": self.config, "platform": "bochs",
                     "date": "d", "commit": "c"}

    def test_points_from_the_closing_marks_of_the_same_runs(self):
        self.assertEqual(self.config["scale"]["mems"], "64,1024")
        p = self.scale["points"]["shadowvm"][(64, 1)]
        self.assertEqual(p["cycles_per_fault"]["median"], 512_512 / 512)
        self.assertEqual((p["cycles_per_fault"]["min"], p["cycles_per_fault"]["max"]),
                         (1000, 1002))
        self.assertEqual(p["shadow_pages"], 34)
        self.assertEqual(p["tables"], 39)
        self.assertEqual(p["exits_per_fault"], 1536 / 512)
        self.assertEqual(self.scale["points"]["kvm-ept0"][(1024, 64)]["shadow_pages"], 660)
        self.assertEqual(self.scale["points"]["kvm-ept0"][(1024, 64)]["leaf_4k"], 512)

    def test_a_run_with_other_memory_is_a_problem_not_a_point(self):
        p = self.scale["points"]["shadowvm"][(1024, 1)]
        self.assertEqual(p["cycles_per_fault"]["max"], 520_000 / 512)
        self.assertEqual(self.scale["problems"],
                         ["shadowvm bench-scale-lm run 4 spaces=1: the guest saw 512 MiB, "
                          "not the 1024 MiB asked for"])

    def test_flatness_sentences_agree_with_the_data(self):
        L = br.scale_sentences(self.scale, self.names)
        shadow = next(x for x in L if x.startswith("- **shadowvm**"))
        kvm = next(x for x in L if x.startswith("- **kvm-ept0**"))
        # shadowvm: 1,000 -> 1,055 cycles per fault (spaces=64) is within 10 %.
        self.assertIn("cycles per fault across guest memory flat (largest/smallest 1.02", shadow)
        self.assertIn("shadow memory across guest memory flat", shadow)
        self.assertNotIn("not flat", shadow)
        # kvm-ept0: 1,172 -> 1,758 cycles per fault, 34 -> 68 shadow pages.
        self.assertIn("cycles per fault across guest memory **not flat** (largest/smallest "
                      "1.50, at 1 address space: 1,172 at 64 MiB, 1 space, 1,758 at 1024 MiB, "
                      "1 space)", kvm)
        self.assertIn("shadow memory across guest memory **not flat** (largest/smallest 2.00",
                      kvm)
        self.assertIn("cycles per fault across address spaces flat", kvm)

    def test_tables(self):
        md = br.scale_markdown(self.scale, self.meta)
        self.assertIn("| memory | 1 space | 64 spaces |", md)
        self.assertIn("| 64 MiB | 1,001 (1,000-1,002) (3.00) | 1,035 (3.12) |", md)
        self.assertIn("| 1,024 MiB | 136 (34) | 1,164 (291) |", md)
        self.assertIn("| guest tables | 39 | 323 |", md)
        self.assertIn("- problem: shadowvm bench-scale-lm run 4", md)
        self.assertIn("the booted kernel with 1,536 MiB", md)
        self.assertEqual(br.scale_markdown({"points": {}, "problems": []}, self.meta), "")

    def test_pages_dropped_under_the_limit(self):
        def pt(cycles, shadow, dropped):
            return {"faults": 512, "tables": 40, "exits_per_fault": 3.0, "shadow_pages": shadow,
                    "reclaimed": dropped, "cycles_per_fault": br.spread([cycles])}
        scale = {"points": {"kvm-ept0": {(64, 1): pt(1000, 37, 0), (64, 32): pt(1000, -10, 172),
                                         (128, 32): pt(1000, 161, 0)}}, "problems": []}
        L = br.scale_sentences(scale, ["kvm-ept0"])
        self.assertIn("shadow memory across guest memory **not flat** (smallest not above 0, at "
                      "32 address spaces: -40 KiB at 64 MiB, 32 spaces, 644 KiB at 128 MiB, "
                      "32 spaces)", L[0])
        md = br.scale_markdown(scale, {"backends": ["kvm-ept0"], "config": {}})
        self.assertIn("| 64 MiB | 148 (37) | -40 (-10; 172 dropped) |", md)

    def test_ept_leaf_mappings(self):
        def pt(leaf):
            return {"faults": 512, "tables": 40, "exits_per_fault": 0.0, "leaf_4k": leaf,
                    "cycles_per_fault": br.spread([200])}
        meta = {"backends": ["kvm-ept1"], "config": {}}
        md = br.scale_markdown({"points": {"kvm-ept1": {(64, 1): pt(0), (128, 1): pt(0)}},
                                "problems": []}, meta)
        self.assertIn("changed in no timed part", md)
        md = br.scale_markdown({"points": {"kvm-ept1": {(64, 1): pt(0), (128, 1): pt(512)}},
                                "problems": []}, meta)
        self.assertIn("| 128 MiB | 512 |", md)


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False).result.wasSuccessful() else 1)
