#!/usr/bin/env python3
"""make bench, host side: parses the serial log of the bench boot (suite selftests/bench)
and writes results.json (raw data and summary), results.md (tables and the sentences that
state results, all generated from the data) and ratios.svg (chart, matplotlib).

Usage: bench-report.py --log <serial log> --out <dir> [--platform bochs|qemu-kvm]
                       [--exit-cycles 1500] [--exit-cycles-source TEXT]
                       [--boot-seconds N] [--commit ID] [--update-doc FILE]

The log holds one record per launcher run (see selftests/backends.sh):
    BENCHRUN-BEGIN backend=B image=I run=N
    BENCH <workload> <param>=<value> cycles=<n> iterations=<n> mark=<k>
    BENCH-SKIP <workload> <param>=<value> <reason>
    BENCH-TOTAL cycles=<n>
    BENCHRUN-JSON {launcher --json statistics, with "marks"}
    BENCHRUN-ERROR <launcher message>
    BENCHRUN-END backend=B image=I run=N rc=<launcher exit status>
plus BENCH-CONFIG and BENCHRUN-BACKEND lines. The Linux guest's records (image=linux,
samples/linux/lbench.c) have BENCH lines of the same form, one per operation row, and
    BENCH-INIT tsc=<guest TSC when /init started> mark=1
for the boot row, which starts at the launcher's mark 0 at the kernel's entry (its
"guest_tsc" in the JSON), and
    BENCH-INFO <row> <name>=<n> ...
for what the guest kernel did in a row (thp_fault: the huge pages it made); they have no
BENCH-TOTAL. Row k's timed part lies between the
benchmark marks 2k and 2k+1; the launcher's "delta" of mark 2k+1 holds the counters that
changed between the two snapshots, i.e. those of the timed instructions plus the OUT of
the closing mark, which is taken off (one exit, an I/O exit).

--update-doc FILE replaces what lies between the lines "<!-- bench-report:begin -->" and
"<!-- bench-report:end -->" of FILE with results.md (its headings one level down).

Exit status 1 when the boot did not finish or no backend produced a complete result.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys

SPLAT = re.compile(r"\b(BUG:|WARNING:|Oops|general protection fault|Kernel panic|kernel BUG|"
                   r"Call Trace:|UBSAN:|KASAN:)")
BENCH = re.compile(r"^BENCH ([a-z0-9_]+) ([a-z_]+)=(\d+) cycles=(\d+) iterations=(\d+) mark=(\d+)$")
SKIP = re.compile(r"^BENCH-SKIP ([a-z0-9_]+) ([a-z_]+)=(\d+) (.*)$")
TOTAL = re.compile(r"^BENCH-TOTAL cycles=(\d+)$")
INIT = re.compile(r"^BENCH-INIT tsc=(\d+) mark=(\d+)$")
INFO = re.compile(r"^BENCH-INFO ([a-z0-9_]+)((?: [a-z0-9_]+=\d+)+)$")
SCALE_LINE = re.compile(r"^BENCH-SCALE spaces=(\d+) memory_mib=(\d+) faults=(\d+) tables=(\d+) "
                        r"mark=(\d+)$")
KV = re.compile(r"(\w+)=(\S+)")
# VM exits by reason: (label, KVM vCPU statistic, shadowvm statistic). KVM counts page
# faults it handles (#PF exits under ept=0, EPT violations under ept=1) as pf_taken; it has
# no counter of CR-access, CPUID or preemption-timer exits: those are in "other" (the
# backend's total minus the named reasons). shadowvm names every VMX exit reason.
REASONS = [
    ("#PF/EPT", "kvm.vcpu.pf_taken", "exits.exception_nmi"),
    ("INVLPG", "kvm.vcpu.invlpg", "exits.invlpg"),
    ("CR", None, "exits.cr_access"),
    ("I/O", "kvm.vcpu.io_exits", "exits.io"),
    ("IRQ", "kvm.vcpu.irq_exits", "exits.external_interrupt"),
    ("HLT", "kvm.vcpu.halt_exits", "exits.hlt"),
    ("timer", None, "exits.preemption_timer"),
]
MMU_KVM = re.compile(r"^kvm\.(vm|vcpu)\.(pf_|mmu_|tlb_flush|remote_tlb|insn_emulation)")
# Gauges and peaks (KVM's STATS_DESC_ICOUNTER/PCOUNTER/IBOOLEAN in arch/x86/kvm/x86.c and
# include/linux/kvm_host.h; shadowvm's *_now): their differences are not events.
GAUGES = re.compile(r"^(kvm\.vm\.(mmu_unsync|mmu_shadow_pages|max_mmu_rmap_size|"
                    r"max_mmu_page_hash_collisions|pages_4k|pages_2m|pages_1g|nx_lpage_splits)|"
                    r"kvm\.vcpu\.(guest_mode|blocking)|mmu\..*_now)$")
PAIRS = [("shadowvm", "kvm-ept0"), ("shadowvm", "kvm-ept1"), ("kvm-ept0", "kvm-ept1")]
DEFAULT_EXIT_SOURCE = (
    "assumed, not measured on this platform: the order of one VT-x VM exit plus VM entry "
    "round trip with a minimal handler on recent Intel cores (Intel's note \"Virtualization "
    "and Performance: Understanding VM Exits\", 2009, puts a transition at hundreds to "
    "thousands of cycles); set BENCH_EXIT_CYCLES and BENCH_EXIT_CYCLES_SOURCE to a figure "
    "measured on the target host")


def parse(lines):
    config, backends, runs, cur = {}, {}, [], None
    for line in lines:
        line = line.rstrip("\r\n")
        if line.startswith("BENCH-CONFIG "):
            config = {k: v for k, v in KV.findall(line)} | (
                {"scale": config["scale"]} if "scale" in config else {})
        elif line.startswith("BENCH-SCALE-CONFIG "):
            config["scale"] = {k: v for k, v in KV.findall(line)}
        elif line.startswith("BENCHRUN-BACKEND "):
            kv = dict(KV.findall(line.split(" ok=")[0]))
            ok = " ok=1" in line
            backends[kv["backend"]] = {
                "available": ok,
                "error": None if ok else line.split(" ok=0", 1)[-1].strip() or "could not be loaded"}
        elif line.startswith("BENCHRUN-BEGIN "):
            kv = dict(KV.findall(line))
            cur = {"backend": kv.get("backend"), "image": kv.get("image"),
                   "run": int(kv.get("run", 0)), "rc": None, "bench": [], "skips": [],
                   "total_cycles": None, "launcher": None, "errors": [], "malformed": [],
                   "init": None, "info": {},
                   "memory_mib": int(kv["memory_mib"]) if "memory_mib" in kv else None,
                   "scale": []}
        elif cur is None:
            continue
        elif line.startswith("BENCH "):
            m = BENCH.match(line)
            if m:
                cur["bench"].append({"workload": m[1], "param": m[2], "value": int(m[3]),
                                     "cycles": int(m[4]), "iterations": int(m[5]),
                                     "mark": int(m[6])})
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCH-SKIP "):
            m = SKIP.match(line)
            if m:
                cur["skips"].append({"row": f"{m[1]} {m[2]}={m[3]}", "why": m[4]})
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCH-INIT "):
            m = INIT.match(line)
            if m:
                cur["init"] = {"tsc": int(m[1]), "mark": int(m[2])}
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCH-INFO "):
            m = INFO.match(line)
            if m:
                cur["info"][m[1]] = {k: int(v) for k, v in KV.findall(m[2])}
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCH-SCALE "):
            m = SCALE_LINE.match(line)
            if m:
                cur["scale"].append({"spaces": int(m[1]), "memory_mib": int(m[2]),
                                     "faults": int(m[3]), "tables": int(m[4]),
                                     "mark": int(m[5])})
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCH-TOTAL "):
            m = TOTAL.match(line)
            if m:
                cur["total_cycles"] = int(m[1])
            else:
                cur["malformed"].append(line)
        elif line.startswith("BENCHRUN-JSON "):
            try:
                cur["launcher"] = json.loads(line.split(" ", 1)[1])
            except ValueError as e:
                cur["malformed"].append(f"launcher JSON: {e}")
        elif line.startswith("BENCHRUN-ERROR "):
            cur["errors"].append(line.split(" ", 1)[1])
        elif line.startswith("BENCHRUN-END "):
            m = re.search(r"rc=(\d+)", line)
            cur["rc"] = int(m[1]) if m else None
            m = re.search(r"seconds=([0-9.]+)", line)
            cur["seconds"] = float(m[1]) if m else None
            runs.append(cur)
            cur = None
    if cur is not None:
        cur["errors"].append("record not finished (boot ended or hung)")
        runs.append(cur)
    return config, backends, runs


def good(run):
    return (run["rc"] == 0 and run["bench"] and not run["malformed"]
            and run["launcher"] is not None and run["total_cycles"] is not None)


def row_key(b):
    return f"{b['workload']} {b['param']}={b['value']}"


def backend_exits(stats, backend):
    """Total VM exits and exits by reason (dict) from a set of backend counters."""
    if backend == "shadowvm":
        total = sum(v for k, v in stats.items() if k.startswith("exits."))
        col = 2
    else:
        total = stats.get("kvm.vcpu.exits", 0)
        col = 1
    by = {r[0]: stats.get(r[col], 0) for r in REASONS if r[col]}
    by["other"] = total - sum(by.values())
    return total, by


def mmu_events(stats, backend):
    if backend == "shadowvm":
        keep = (k for k in stats if k.startswith("mmu."))
    else:
        keep = (k for k in stats if MMU_KVM.match(k))
    return {k: stats[k] for k in keep if not GAUGES.match(k)}


def row_counters(run, mark, backend):
    """Counters of one row's timed part in one run: the closing mark's delta, less the
    closing OUT (one I/O exit). None when the mark is missing."""
    marks = {m["mark"]: m for m in run["launcher"].get("marks", [])}
    closing = marks.get(2 * mark + 1)
    if closing is None or 2 * mark not in marks:
        return None
    delta = closing.get("delta", {})
    total, by = backend_exits(delta, backend)
    total -= 1
    by["I/O"] = by.get("I/O", 0) - 1
    return {"exits": total, "by_reason": by, "mmu": mmu_events(delta, backend),
            "launcher_exits": delta.get("launcher.total", 0) - 1,
            "wall_ns": closing["wall_time_ns"] - marks[2 * mark]["wall_time_ns"]}


def spread(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1],
            "n": len(values)}


def median_dict(dicts):
    keys = sorted({k for d in dicts for k in d})
    out = {k: statistics.median(d.get(k, 0) for d in dicts) for k in keys}
    return {k: v for k, v in out.items() if v}


def summarize(runs, backend_names, images, exit_cycles):
    """Per image, row and backend: cycles (min/median/max over runs), exits by reason and
    MMU events of the same runs (medians), modelled cost; ratios; whole runs."""
    out = {"images": {}, "whole": {}, "skips": {}}
    for image in images:
        rows = {}
        for backend in backend_names:
            mine = [r for r in runs if r["backend"] == backend and r["image"] == image and good(r)]
            per_row = {}
            for r in mine:
                for b in r["bench"]:
                    e = rows.setdefault(row_key(b), {"workload": b["workload"], "backends": {}})
                    x = per_row.setdefault(row_key(b), {"cycles": [], "counters": [],
                                                        "iterations": b["iterations"]})
                    x["cycles"].append(b["cycles"])
                    c = row_counters(r, b["mark"], backend)
                    if c is not None:
                        x["counters"].append(c)
                for s in r["skips"]:
                    out["skips"].setdefault(image, {})[s["row"]] = s["why"]
            for key, x in per_row.items():
                be = {"iterations": x["iterations"], "cycles": spread(x["cycles"])}
                if x["counters"] and len(x["counters"]) == len(x["cycles"]):
                    cs = x["counters"]
                    be["exits"] = spread([c["exits"] for c in cs])
                    be["exits_by_reason"] = median_dict([c["by_reason"] for c in cs])
                    be["mmu"] = median_dict([c["mmu"] for c in cs])
                    be["wall_ns"] = spread([c["wall_ns"] for c in cs])
                    be["modelled"] = be["cycles"]["median"] + be["exits"]["median"] * exit_cycles
                rows[key]["backends"][backend] = be
            if mine:
                totals = [backend_exits(r["launcher"].get("stats", {}) or {}, backend)[0]
                          for r in mine]
                out["whole"].setdefault(image, {})[backend] = {
                    "runs": len(mine),
                    "guest_cycles": spread([r["total_cycles"] for r in mine]),
                    "wall_ns": spread([r["launcher"].get("wall_time_ns", 0) for r in mine]),
                    "exits": spread(totals)}
                secs = [r["seconds"] for r in mine if r.get("seconds") is not None]
                if len(secs) == len(mine):
                    out["whole"][image][backend]["process_s"] = spread(secs)
        for e in rows.values():
            e["ratios"] = {}
            for a, b in PAIRS:
                x, y = e["backends"].get(a), e["backends"].get(b)
                if not (x and y and y["cycles"]["median"]):
                    continue
                r = {"cycles": x["cycles"]["median"] / y["cycles"]["median"],
                     "cycles_low": x["cycles"]["min"] / y["cycles"]["max"],
                     "cycles_high": x["cycles"]["max"] / y["cycles"]["min"]}
                if "modelled" in x and "modelled" in y and y["modelled"]:
                    r["modelled"] = x["modelled"] / y["modelled"]
                if "exits" in x and "exits" in y:
                    r["exits"] = (x["exits"]["median"], y["exits"]["median"])
                e["ratios"][f"{a}/{b}"] = r
        out["images"][image] = rows
    return out


def fmt_n(v):
    if v is None:
        return "missing"
    if abs(v) >= 10_000_000:
        return f"{v / 1e6:.1f} M"
    if abs(v) >= 100_000:
        return f"{v / 1e3:.0f} k"
    return f"{v:,.0f}"


def fmt_r(v):
    return "missing" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def fmt_spread(s):
    """median, with min-max when they differ."""
    low, mid, high = fmt_n(s["min"]), fmt_n(s["median"]), fmt_n(s["max"])
    if low == mid == high:
        return mid
    return f"{mid} ({low}-{high})"


def compact(d, limit=5):
    items = sorted(((k.split(".")[-1], v) for k, v in d.items() if v), key=lambda kv: -kv[1])
    if not items:
        return "0"
    s = ", ".join(f"{k} {fmt_n(v)}" for k, v in items[:limit])
    return s + (" …" if len(items) > limit else "")


def listing(items, limit=8):
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def headline(res, names):
    """Sentences that compare shadowvm with each KVM mode, computed from the summary."""
    L = []
    for other in ("kvm-ept0", "kvm-ept1"):
        if "shadowvm" not in names or other not in names:
            continue
        for image, rows in res["images"].items():
            pair = f"shadowvm/{other}"
            cmp = [(k, e["ratios"][pair]) for k, e in rows.items() if pair in e["ratios"]]
            if not cmp:
                L.append(f"- **{image}, shadowvm against {other}**: no rows with both backends.")
                continue
            w = res["whole"].get(image, {})
            whole = ""
            if "shadowvm" in w and other in w:
                g = w["shadowvm"]["guest_cycles"]["median"] / w[other]["guest_cycles"]["median"]
                t = w["shadowvm"]["wall_ns"]["median"] / max(w[other]["wall_ns"]["median"], 1)
                whole = (f" Whole run (set-up included): guest cycles ratio {fmt_r(g)}, "
                         f"launcher wall time ratio {fmt_r(t)}.")
            L.append(f"- **{image}, shadowvm against {other}** ({len(cmp)} rows): "
                     f"{comparison(cmp, fmt_n)}{whole}")
    return L


def comparison(cmp, fmt_exits):
    """The sentence comparing shadowvm with another backend over rows `cmp` ((row, ratios)
    pairs): guest cycles, VM exits (numbers through `fmt_exits`) and modelled cost."""
    faster = [k for k, r in cmp if r["cycles"] < 1]
    slower = [f"`{k}` {fmt_r(r['cycles'])}" for k, r in cmp if r["cycles"] >= 1]
    with_exits = [(k, r["exits"]) for k, r in cmp if "exits" in r]
    fewer = [k for k, (a, b) in with_exits if a < b]
    equal = [k for k, (a, b) in with_exits if a == b]
    more = [f"`{k}` {fmt_exits(a)} against {fmt_exits(b)}"
            for k, (a, b) in with_exits if a > b]
    lower = [k for k, r in cmp if r.get("modelled", 9) < 1]
    return (f"fewer guest cycles (median) on {len(faster)}, as many or more on "
            f"{len(cmp) - len(faster)} ({listing(slower)}); fewer VM exits on {len(fewer)}, "
            f"as many on {len(equal)}, more on {len(more)} ({listing(more)}); lower modelled "
            f"cost on {len(lower)}.")


def ratio_text(a, b):
    """A goal's ratio: three decimals, so that one next to its threshold reads the right way."""
    if b:
        return f"{a / b:.3f}" if a / b < 100 else fmt_r(a / b)
    return "1.00" if a == 0 else f"{fmt_n(a)} against 0"


def goals(res, names):
    """The goals of issue 13 against prefaulted KVM ept=0, per image: each figure, and
    whether it is met. Returns table lines."""
    if "shadowvm" not in names or "kvm-ept0" not in names:
        return []
    L = ["| image | goal (shadowvm / kvm-ept0) | figure | met |", "| --- | --- | --- | --- |"]

    def exits(e):
        x, y = e["backends"].get("shadowvm"), e["backends"].get("kvm-ept0")
        if x and y and "exits" in x and "exits" in y:
            return x["exits"]["median"], y["exits"]["median"]
        return None

    for image, rows in res["images"].items():
        pairs = {k: exits(e) for k, e in rows.items() if exits(e)}
        worst = [(k, a, b) for k, (a, b) in pairs.items() if a > b]
        figure = (listing([f"`{k}` {ratio_text(a, b)}" for k, a, b in worst], 4)
                  if worst else "all ≤ 1.00")
        L.append(f"| {image} | exits ≤ 1.0 on every row | {figure} | "
                 f"{'no' if worst else 'yes'} |")
        for workload in ("first_touch", "cow_fork"):
            for k, (a, b) in pairs.items():
                if rows[k]["workload"] == workload:
                    ok = b > 0 and a / b <= 0.75
                    L.append(f"| {image} | exits ≤ 0.75 on `{k}` | {ratio_text(a, b)} | "
                             f"{'yes' if ok else 'no'} |")
        for workload in ("cr3_pingpong", "invlpg", "pt_storm"):
            for k, e in rows.items():
                r = e["ratios"].get("shadowvm/kvm-ept0")
                if e["workload"] == workload and r:
                    ok = r["cycles"] <= 0.6
                    L.append(f"| {image} | cycles per event ≤ 0.6 on `{k}` | "
                             f"{r['cycles']:.3f} | {'yes' if ok else 'no'} |")
        w = res["whole"].get(image, {})
        if "shadowvm" in w and "kvm-ept0" in w:
            g = w["shadowvm"]["guest_cycles"]["median"] / w["kvm-ept0"]["guest_cycles"]["median"]
            t = w["shadowvm"]["wall_ns"]["median"] / max(w["kvm-ept0"]["wall_ns"]["median"], 1)
            figures = [g, t]
            text = f"guest cycles {g:.3f}, run-loop wall time {t:.3f}"
            ps, pk = w["shadowvm"].get("process_s"), w["kvm-ept0"].get("process_s")
            if ps and pk and pk["median"]:
                figures.append(ps["median"] / pk["median"])
                text += f", launcher process {figures[-1]:.3f}"
            L.append(f"| {image} | whole-run time ≤ 1.0 | {text} | "
                     f"{'yes' if max(figures) <= 1 else 'no'} |")
    return L


def per_row_sentences(rows, names):
    """One sentence per row: cycles and exits per iteration of each backend."""
    L = []
    for key, e in rows.items():
        parts = []
        for b in names:
            x = e["backends"].get(b)
            if not x:
                parts.append(f"{b} missing")
                continue
            it = x["iterations"] or 1
            s = f"{b} {x['cycles']['median'] / it:,.0f} cycles"
            if "exits" in x:
                s += f" and {x['exits']['median'] / it:.2f} exits"
            parts.append(s)
        it = next((x["iterations"] for x in e["backends"].values()), 0)
        L.append(f"- `{key}`, per iteration ({it:,} iterations): " + "; ".join(parts) + ".")
    return L


def markdown(res, meta, level=1):
    h = "#" * level
    bk, ec = meta["backends"], meta["exit_cycles"]
    pairs = [(a, b) for a, b in PAIRS if a in bk and b in bk]
    runs = meta["config"].get("runs", "?")
    L = [f"{h} shadowvm benchmark results", "",
         f"Made by `make bench` on {meta['date']}, commit `{meta['commit']}`, platform "
         f"**{meta['platform']}**, {runs} run(s) per image and backend, boot "
         f"{meta['boot_seconds']} s. Figures are medians over the runs, with (min-max) where "
         f"the rounded figures differ.", ""]
    if meta["platform"] == "bochs":
        L += ["Bochs (`clock: sync=none`) advances the TSC with emulated instructions, so "
              "*cycles* count the instructions of the guest **and** of the hypervisor code that "
              "ran on its behalf, while a VM exit/entry itself costs about nothing; wall times "
              "are emulated time.", ""]
    else:
        L += ["Cycles are TSC ticks of the real CPU (nested VT-x under QEMU/KVM); wall times "
              "are real.", ""]
    L += [f"**Modelled cost** = median cycles + median exits × **{ec:,} cycles per exit**. "
          f"Source of the per-exit figure: {meta['exit_cycles_source']}.", "",
          "VM exits, exits by reason and MMU counters of a row are those of its timed part in "
          "the same runs as its cycles: the launcher snapshots the backend's counters "
          "(shadowvm `GET_STATS`, KVM's binary statistics of the VM and vCPU) at the guest's "
          "benchmark marks around the timed loop, less the closing mark's own I/O exit. "
          "KVM counts no CR-access or preemption-timer exits: they are in *other*.", "",
          f"{h}# Summary (generated from the tables below)", ""]
    L += ((headline(res, bk) + linux_headline(res.get("linux"), bk))
          or ["- (no comparison: shadowvm or KVM missing)"])
    g = goals(res, bk)
    if len(g) == 2:
        g = []  # the header alone: no image
    if g or linux_goals(res.get("linux"), bk):
        g = (g or ["| image | goal (shadowvm / kvm-ept0) | figure | met |",
                   "| --- | --- | --- | --- |"]) + linux_goals(res.get("linux"), bk)
    if g:
        L += ["", "The goals of issue 13 (ratios in this run against KVM ept=0; *cycles per "
              "event* is the ratio of median cycles, both doing the same iterations):", ""] + g
    L += ["", f"{h}# Backends", "", "| backend | status |", "| --- | --- |"]
    for b in bk:
        st = meta["status"][b]
        L.append(f"| {b} | {'ok' if st['ok'] else 'missing: ' + st['why']} |")
    for image, rows in res["images"].items():
        L += ["", f"{h}# {image}", "",
              f"Guest cycles of the timed part, VM exits (median, min-max) and modelled cost; "
              f"ratios of median cycles (and of modelled cost).", ""]
        head = (["row"] + [f"{b} cycles" for b in bk] + [f"{b} exits" for b in bk]
                + [f"{b} modelled" for b in bk] + [f"{a}/{b}" for a, b in pairs])
        L += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for key, e in rows.items():
            cells = [f"`{key}`"]
            for b in bk:
                x = e["backends"].get(b)
                cells.append(fmt_spread(x["cycles"]) if x else "missing")
            for b in bk:
                x = e["backends"].get(b)
                cells.append(fmt_spread(x["exits"]) if x and "exits" in x else "missing")
            for b in bk:
                x = e["backends"].get(b)
                cells.append(fmt_n(x.get("modelled")) if x and "modelled" in x else "missing")
            for a, b in pairs:
                r = e["ratios"].get(f"{a}/{b}")
                cells.append(f"{fmt_r(r['cycles'])} ({fmt_r(r.get('modelled'))})" if r else "missing")
            L.append("| " + " | ".join(cells) + " |")
        for row, why in res["skips"].get(image, {}).items():
            L.append(f"\nNot run: `{row}`: {why}.")
        L += ["", "Per iteration (medians):", ""] + per_row_sentences(rows, bk)
        have = [b for b in bk if any(b in e["backends"] for e in rows.values())]
        L += ["", "VM exits by reason and MMU counters of the timed part (medians, largest "
              "first):", "", "| row | backend | exits by reason | MMU counters |",
              "| --- | --- | --- | --- |"]
        for key, e in rows.items():
            for b in have:
                x = e["backends"].get(b)
                if not x or "exits" not in x:
                    L.append(f"| `{key}` | {b} | missing | |")
                else:
                    L.append(f"| `{key}` | {b} | {compact(x['exits_by_reason'], 7)} | "
                             f"{compact(x['mmu'])} |")
    L += linux_markdown(res.get("linux"), meta, h)
    if res["whole"]:
        L += ["", f"{h}# Whole runs", "", "Per image and backend, set-up included: the guest's "
              "cycles from its start to its last line (`BENCH-TOTAL`), the launcher's wall time "
              "of the run loop, the whole launcher process by the booted kernel's clock (VM "
              "creation and guest memory set-up included; emulated seconds in Bochs), and the "
              "backend's VM exits; median (min-max where the rounded figures differ).", "",
              "| image | backend | runs | guest cycles | wall time (ms) | launcher process (s) "
              "| VM exits |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for image, per in res["whole"].items():
            for b in bk:
                x = per.get(b)
                if not x:
                    L.append(f"| {image} | {b} | 0 | missing | missing | missing | missing |")
                    continue
                w = x["wall_ns"]
                wall = f"{w['median'] / 1e6:.1f}"
                if w["min"] != w["max"]:
                    wall += f" ({w['min'] / 1e6:.1f}-{w['max'] / 1e6:.1f})"
                p = x.get("process_s")
                proc = "not recorded"
                if p:
                    proc = f"{p['median']:.2f}"
                    if p["min"] != p["max"]:
                        proc += f" ({p['min']:.2f}-{p['max']:.2f})"
                L.append(f"| {image} | {b} | {x['runs']} | {fmt_spread(x['guest_cycles'])} | "
                         f"{wall} | {proc} | {fmt_spread(x['exits'])} |")
    L += ["", "Chart: `ratios.svg`. Raw data: `results.json`.", ""]
    return "\n".join(L)

# ------------------------------------------------------------- the Linux guest's rows
# The Linux guest's benchmark (samples/linux/lbench.c, selftests/backends.sh
# linux_bench_run): its records are those of image LINUX_IMAGE. Its rows are reported per
# operation, each backend in a table of its own, with ratios against KVM ept=0.
LINUX_IMAGE = "linux"
LINUX_BOOT = "boot_to_init"
# Issue 13's Linux rows with a goal of exits ≤ 0.75 of KVM ept=0's: fork/exec and page
# faults (the boot row's goal is exits ≤ KVM ept=0's).
LINUX_EXIT_GOAL_ROWS = ("fork_exec_exit", "mmap_fault")
LINUX_EXIT_GOAL = 0.75


def linux_good(run):
    return (run["image"] == LINUX_IMAGE and run["rc"] == 0 and not run["malformed"]
            and run["launcher"] is not None and run["init"] is not None)


def linux_rows(run, backend):
    """(row, workload, operations, cycles, counters) for each row of one Linux run. The boot
    row runs from the launcher's mark at the kernel's entry, whose guest TSC the launcher
    read through the backend, to /init's mark, whose TSC /init read with RDTSC (marks 0 and
    1: row 0). counters is None when a mark or the entry's TSC is missing."""
    out = []
    init = run["init"]
    if init is not None and init["mark"] % 2 == 1:
        marks = {m["mark"]: m for m in run["launcher"].get("marks", [])}
        entry = marks.get(init["mark"] - 1, {}).get("guest_tsc")
        if entry is not None and init["tsc"] >= entry:
            out.append((LINUX_BOOT, LINUX_BOOT, 1, init["tsc"] - entry,
                        row_counters(run, init["mark"] // 2, backend)))
    for b in run["bench"]:
        out.append((row_key(b), b["workload"], b["iterations"], b["cycles"],
                    row_counters(run, b["mark"], backend)))
    return out


def summarize_linux(runs, backend_names, exit_cycles):
    """Per row and backend, over the good Linux runs: cycles and exits per operation
    (min/median/max), exits by reason and MMU events per operation (medians), modelled cost
    per operation; ratios of the backend pairs; each backend's status. None without Linux
    runs."""
    mine_all = [r for r in runs if r["image"] == LINUX_IMAGE]
    if not mine_all:
        return None
    rows, status = {}, {}
    for backend in backend_names:
        mine = [r for r in mine_all if r["backend"] == backend]
        bad = [r for r in mine if not linux_good(r)]
        if not mine:
            status[backend] = {"ok": False, "why": "no Linux runs"}
        elif bad:
            r = bad[0]
            why = (f"run {r['run']}: launcher status {r['rc']}"
                   + (f" ({'; '.join(r['errors'])})" if r["errors"] else "")
                   + (f"; malformed: {r['malformed'][0]}" if r["malformed"] else "")
                   + ("; no BENCH-INIT line" if r["init"] is None else ""))
            status[backend] = {"ok": False,
                               "why": ("partly: " if len(bad) < len(mine) else "") + why}
        else:
            status[backend] = {"ok": True, "why": ""}
        per = {}
        for r in mine:
            if not linux_good(r):
                continue
            for key, workload, ops, cycles, counters in linux_rows(r, backend):
                x = per.setdefault(key, {"workload": workload, "ops": ops, "cycles": [],
                                         "counters": []})
                x["cycles"].append(cycles)
                if counters is not None:
                    x["counters"].append(counters)
        for key, x in per.items():
            ops = x["ops"] or 1
            be = {"operations": x["ops"], "runs": len(x["cycles"]),
                  "cycles": spread(x["cycles"]),
                  "cycles_per_op": spread([c / ops for c in x["cycles"]])}
            if x["counters"] and len(x["counters"]) == len(x["cycles"]):
                cs = x["counters"]
                be["exits"] = spread([c["exits"] for c in cs])
                be["exits_per_op"] = spread([c["exits"] / ops for c in cs])
                be["exits_by_reason_per_op"] = {
                    k: v / ops for k, v in median_dict([c["by_reason"] for c in cs]).items()}
                be["mmu_per_op"] = {
                    k: v / ops for k, v in median_dict([c["mmu"] for c in cs]).items()}
                be["modelled_per_op"] = (be["cycles_per_op"]["median"]
                                         + be["exits_per_op"]["median"] * exit_cycles)
            rows.setdefault(key, {"workload": x["workload"], "backends": {}})[
                "backends"][backend] = be
    for e in rows.values():
        e["ratios"] = {}
        for a, b in PAIRS:
            x, y = e["backends"].get(a), e["backends"].get(b)
            if not (x and y and y["cycles_per_op"]["median"]):
                continue
            r = {"cycles": x["cycles_per_op"]["median"] / y["cycles_per_op"]["median"]}
            if "modelled_per_op" in x and "modelled_per_op" in y and y["modelled_per_op"]:
                r["modelled"] = x["modelled_per_op"] / y["modelled_per_op"]
            if "exits_per_op" in x and "exits_per_op" in y:
                r["exits"] = (x["exits_per_op"]["median"], y["exits_per_op"]["median"])
            e["ratios"][f"{a}/{b}"] = r
    info = {}
    for backend in backend_names:
        good_runs = [r for r in mine_all if r["backend"] == backend and linux_good(r)]
        for row in sorted({row for r in good_runs for row in r["info"]}):
            have = [r["info"][row] for r in good_runs if row in r["info"]]
            names = sorted({k for h in have for k in h})
            info.setdefault(row, {})[backend] = {
                k: spread([h.get(k, 0) for h in have]) for k in names}
    return {"rows": rows, "status": status, "info": info}


def fmt_op(v):
    """A per-operation figure: two decimals below 100 (exits per operation are often
    fractions; "<0.01" for a smaller one that is not 0), else as fmt_n."""
    if v is None:
        return "missing"
    if 0 < abs(v) < 0.005:
        return "<0.01"
    return f"{v:.2f}" if abs(v) < 100 else fmt_n(v)


def fmt_spread_op(s):
    low, mid, high = fmt_op(s["min"]), fmt_op(s["median"]), fmt_op(s["max"])
    return mid if low == mid == high else f"{mid} ({low}-{high})"


def compact_op(d, limit=5):
    items = sorted(((k.split(".")[-1], v) for k, v in d.items() if v), key=lambda kv: -kv[1])
    if not items:
        return "0"
    s = ", ".join(f"{k} {fmt_op(v)}" for k, v in items[:limit])
    return s + (" …" if len(items) > limit else "")


def linux_ratio_cell(a, b):
    if a is None or b is None:
        return "missing"
    if b:
        return fmt_r(a / b)
    return "1.00" if a == 0 else f"{fmt_op(a)} against 0"


def linux_headline(lres, names):
    """One sentence per KVM mode comparing shadowvm's Linux rows with it."""
    if not lres or "shadowvm" not in names:
        return []
    L = []
    for other in ("kvm-ept0", "kvm-ept1"):
        pair = f"shadowvm/{other}"
        cmp = [(k, e["ratios"][pair]) for k, e in lres["rows"].items() if pair in e["ratios"]]
        if other not in names or not cmp:
            continue
        L.append(f"- **Linux guest, shadowvm against {other}** ({len(cmp)} rows, per "
                 f"operation): {comparison(cmp, fmt_op)}")
    return L


def linux_goals(lres, names):
    """Issue 13's goals on the Linux rows against KVM ept=0: goals-table lines."""
    if not lres or "shadowvm" not in names or "kvm-ept0" not in names:
        return []
    L = []
    for key, e in lres["rows"].items():
        r = e["ratios"].get("shadowvm/kvm-ept0")
        if not r or "exits" not in r:
            continue
        a, b = r["exits"]
        if e["workload"] == LINUX_BOOT:
            L.append(f"| linux | boot exits ≤ kvm-ept0 (`{key}`) | {fmt_n(a)} against "
                     f"{fmt_n(b)} ({ratio_text(a, b)}) | {'yes' if a <= b else 'no'} |")
        elif e["workload"] in LINUX_EXIT_GOAL_ROWS:
            ok = b > 0 and a / b <= LINUX_EXIT_GOAL
            L.append(f"| linux | exits ≤ {LINUX_EXIT_GOAL} on `{key}` (per operation) | "
                     f"{ratio_text(a, b)} | {'yes' if ok else 'no'} |")
    return L


def linux_markdown(lres, meta, h):
    """The Linux guest's section: backends' status, then one table per backend."""
    if not lres:
        return []
    bk = meta["backends"]
    boots = meta["config"].get("linux_runs", "?")
    L = ["", f"{h}# Linux guest", "",
         f"The unmodified Linux guest (kernel from `kernel-config/guest.config`, its initramfs "
         f"with `samples/linux/lbench.c`) booted by `shadowvm-run --kernel` with `quiet "
         f"LINUXTEST_BENCH={meta['config'].get('linux_rows', 'all')}`, {boots} boot(s) per "
         f"backend. Figures are **per operation** (a row's operations per boot in the second "
         f"column): median over the boots, (min-max) where the rounded figures differ. "
         f"`{LINUX_BOOT}` runs from the kernel's entry (the launcher's mark and its reading "
         f"of the guest's TSC) to /init's first command (`bench-mark`: RDTSC, then the mark); "
         f"the other rows lie between `lbench`'s marks around its RDTSCs. Modelled cost per "
         f"operation = cycles + exits × {meta['exit_cycles']:,}.", "",
         "| backend | Linux rows |", "| --- | --- |"]
    for b in bk:
        st = lres["status"].get(b, {"ok": False, "why": "not run"})
        L.append(f"| {b} | {'ok' if st['ok'] else 'missing: ' + st['why']} |")
    for b in bk:
        vs = "kvm-ept0" if b != "kvm-ept0" and "kvm-ept0" in bk else None
        head = ["row", "operations", "cycles per op", "VM exits per op",
                "exits by reason per op", "MMU counters per op", "modelled per op"]
        if vs:
            head += [f"cycles / {vs}", f"exits / {vs}", f"modelled / {vs}"]
        L += ["", f"{h}## Linux guest on {b}", "", "| " + " | ".join(head) + " |",
              "|" + " --- |" * len(head)]
        for key, e in lres["rows"].items():
            x = e["backends"].get(b)
            if not x:
                L.append(f"| `{key}` |" + " missing |" * (len(head) - 1))
                continue
            cells = [f"`{key}`", f"{x['operations']:,}", fmt_spread_op(x["cycles_per_op"])]
            if "exits_per_op" in x:
                cells += [fmt_spread_op(x["exits_per_op"]),
                          compact_op(x["exits_by_reason_per_op"], 7),
                          compact_op(x["mmu_per_op"]), fmt_op(x["modelled_per_op"])]
            else:
                cells += ["missing"] * 4
            if vs:
                y = e["backends"].get(vs)
                ex = (x.get("exits_per_op", {}).get("median") if x else None,
                      y.get("exits_per_op", {}).get("median") if y else None)
                cells += [linux_ratio_cell(x["cycles_per_op"]["median"],
                                           y["cycles_per_op"]["median"] if y else None),
                          linux_ratio_cell(*ex),
                          linux_ratio_cell(x.get("modelled_per_op"),
                                           y.get("modelled_per_op") if y else None)]
            L.append("| " + " | ".join(cells) + " |")
    for row, per in lres.get("info", {}).items():
        parts = [f"{b} " + ", ".join(f"{k} {fmt_spread(v)}" for k, v in per[b].items())
                 for b in bk if b in per]
        L += ["", f"What the guest kernel did in `{row}`, per boot (`/proc/vmstat` differences, "
              f"median (min-max)): " + "; ".join(parts) + "."]
    return L


def chart(res, meta, path):
    """Horizontal bars of the median-cycle ratio of each backend pair per row (log scale),
    whiskers from the min/max runs, a black tick at the modelled-cost ratio."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
        # Text as text, not glyph outlines (a tenth of the size), and stable element ids.
        matplotlib.rcParams["svg.fonttype"] = "none"
        matplotlib.rcParams["svg.hashsalt"] = "shadowvm-bench"
    except ImportError as e:
        raise SystemExit(f"bench: the chart needs matplotlib ({e}): install Debian's "
                         f"python3-matplotlib (make setup) and run this with /usr/bin/python3")

    colors = {"shadowvm/kvm-ept0": "#d95f02", "shadowvm/kvm-ept1": "#7570b3",
              "kvm-ept0/kvm-ept1": "#1b9e77"}
    colors = {p: c for p, c in colors.items()
              if all(b in meta["backends"] for b in p.split("/"))}
    images = list(res["images"])
    heights = [max(len(res["images"][i]), 1) for i in images] or [1]
    fig, axes = plt.subplots(len(images) or 1, 1, figsize=(9, 0.42 * sum(heights) + 1.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    bar = 0.27
    for ax, image in zip(axes[:, 0], images):
        rows = list(res["images"][image].items())
        for j, (pair, color) in enumerate(colors.items()):
            ys, vals, lo, hi, mods = [], [], [], [], []
            for i, (_, e) in enumerate(rows):
                r = e["ratios"].get(pair)
                if not r:
                    continue
                y = i + (j - 1) * bar
                ys.append(y)
                vals.append(r["cycles"])
                lo.append(r["cycles"] - r["cycles_low"])
                hi.append(r["cycles_high"] - r["cycles"])
                if "modelled" in r:
                    mods.append((r["modelled"], y))
            ax.barh(ys, vals, height=bar, color=color, label=pair, xerr=[lo, hi],
                    error_kw={"elinewidth": 0.8, "capsize": 1.5})
            if mods:
                ax.scatter([m[0] for m in mods], [m[1] for m in mods], marker="|", s=60,
                           color="black", zorder=3,
                           label=f"modelled ({meta['exit_cycles']} cycles/exit)" if j == 0 else None)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axvline(1, color="#888", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([k for k, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(image, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", which="major", color="#ddd", linewidth=0.5)
    if images:  # (BENCH_IMAGES may be empty: only the Linux rows, which are not charted)
        axes[0, 0].legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("ratio of median guest cycles, first backend / second (log scale; "
                           "whiskers: min/max runs)", fontsize=8)
    fig.suptitle(f"make bench, {meta['platform']}, {meta['date']}, commit {meta['commit']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


# ---------------------------------------------------------------- scale rows
# The scale image (bench-scale-*, selftests/bench's BENCH_SCALE_MEMS) runs the same number
# of first-touch faults (scale_fault rows) at each guest memory size and address-space
# count. Each row's shadow memory is the change of the backend's shadow page count over
# its timed part: shadowvm's mmu.shadow_pages_now, KVM's mmu_shadow_pages (pages of its
# shadow MMU; its TDP MMU, used with ept=1, keeps no such count: pages_4k, the 4 KiB
# leaf mappings, is shown for it instead).
SHADOW_PAGES = {"shadowvm": "mmu.shadow_pages_now", "kvm-ept0": "kvm.vm.mmu_shadow_pages"}
# Shadow pages dropped to stay under the backend's limit (shadowvm max_shadow_pages, KVM's
# n_max_mmu_pages, 2 % of guest memory by default): when they are, the page count above
# is what was added less what was dropped.
RECLAIMED = {"shadowvm": "mmu.shadow_pages_reclaimed", "kvm-ept0": "kvm.vm.mmu_recycled"}
LEAF_PAGES = "kvm.vm.pages_4k"
SCALE_TOLERANCE = 0.10


def scale_summary(runs, names):
    """Per backend, per (memory MiB, spaces): cycles per fault (spread over runs), exits
    per fault, shadow pages added (median), guest page-table frames; and the problems
    found (a row without its BENCH-SCALE line, memory other than the one asked for)."""
    points, problems = {}, []
    for r in runs:
        if r.get("memory_mib") is None or not good(r) or r["backend"] not in names:
            continue
        lines = {x["mark"]: x for x in r["scale"]}
        for b in r["bench"]:
            if b["workload"] != "scale_fault":
                continue
            where = f"{r['backend']} {r['image']} run {r['run']} spaces={b['value']}"
            x = lines.get(b["mark"])
            if x is None:
                problems.append(f"{where}: no BENCH-SCALE line")
                continue
            if x["memory_mib"] != r["memory_mib"]:
                problems.append(f"{where}: the guest saw {x['memory_mib']} MiB, not the "
                                f"{r['memory_mib']} MiB asked for")
                continue
            marks = {m["mark"]: m for m in r["launcher"].get("marks", [])}
            closing = marks.get(2 * b["mark"] + 1)
            c = row_counters(r, b["mark"], r["backend"])
            if closing is None or c is None:
                problems.append(f"{where}: marks missing")
                continue
            delta = closing.get("delta", {})
            p = points.setdefault(r["backend"], {}).setdefault(
                (r["memory_mib"], b["value"]),
                {"faults": x["faults"], "tables": x["tables"], "cpf": [], "epf": [],
                 "shadow": [], "leaf": [], "reclaimed": []})
            p["cpf"].append(b["cycles"] / x["faults"])
            p["epf"].append(c["exits"] / x["faults"])
            if r["backend"] in SHADOW_PAGES:
                p["shadow"].append(delta.get(SHADOW_PAGES[r["backend"]], 0))
                p["reclaimed"].append(delta.get(RECLAIMED[r["backend"]], 0))
            p["leaf"].append(delta.get(LEAF_PAGES, 0))
    out = {}
    for backend, pts in points.items():
        out[backend] = {}
        for key, p in sorted(pts.items()):
            e = {"faults": p["faults"], "tables": p["tables"], "cycles_per_fault": spread(p["cpf"]),
                 "exits_per_fault": statistics.median(p["epf"])}
            if p["shadow"]:
                e["shadow_pages"] = statistics.median(p["shadow"])
                e["reclaimed"] = statistics.median(p["reclaimed"])
            if backend.startswith("kvm"):
                e["leaf_4k"] = statistics.median(p["leaf"])
            out[backend][key] = e
    return {"points": out, "problems": problems}


def scale_flatness(pts, metric, across, tolerance=SCALE_TOLERANCE):
    """Largest over smallest of a metric (a function of a point) across memory sizes
    (across="memory", at each address-space count) or across address-space counts
    (across="spaces", at each memory size), over the groups with at least two points.
    Returns (worst ratio, the group it is in, (low key, high key)), or None."""
    groups = {}
    for (mem, spaces), e in pts.items():
        v = metric(e)
        if v is None:
            continue
        group = spaces if across == "memory" else mem
        groups.setdefault(group, []).append(((mem, spaces), v))
    worst = None
    for group, vals in groups.items():
        if len(vals) < 2:
            continue
        # Ties: the first and the last key, so that the two points named differ.
        lo = min(vals, key=lambda kv: (kv[1], kv[0]))
        hi = max(vals, key=lambda kv: (kv[1], kv[0]))
        ratio = hi[1] / lo[1] if lo[1] > 0 else (1.0 if hi[1] == lo[1] else math.inf)
        if worst is None or ratio > worst[0]:
            worst = (ratio, group, (lo[0], hi[0]))
    return worst


def cycles_metric(e):
    return e["cycles_per_fault"]["median"]


def shadow_metric(e):
    return e.get("shadow_pages")


def shadow_per_table_metric(e):
    return e["shadow_pages"] / e["tables"] if "shadow_pages" in e and e["tables"] else None


def scale_sentences(scale, names, tolerance=SCALE_TOLERANCE):
    """Whether cycles per fault and shadow memory stayed flat, per backend, from the data."""
    L = []
    pct = f"{tolerance * 100:.0f} %"

    def point(key):
        return f"{key[0]} MiB, {key[1]} space{'s' if key[1] != 1 else ''}"

    def verdict(what, w, fmt):
        ratio, group, (lo, hi) = w
        where = (f"at {group} address space{'s' if group != 1 else ''}"
                 if lo[1] == hi[1] else f"with {group} MiB")
        flat = ratio <= 1 + tolerance
        figure = f"largest/smallest {ratio:.2f}" if ratio != math.inf else "smallest not above 0"
        return (f"{what} {'flat' if flat else '**not flat**'} ({figure}, {where}: "
                f"{fmt(lo)} at {point(lo)}, {fmt(hi)} at {point(hi)})")

    for b in names:
        pts = scale["points"].get(b)
        if not pts:
            if any(b in scale["points"] for b in names):
                L.append(f"- **{b}**: no scale results.")
            continue
        parts = []
        for across, label in (("memory", "across guest memory"),
                              ("spaces", "across address spaces")):
            w = scale_flatness(pts, cycles_metric, across, tolerance)
            if w:
                parts.append(verdict(f"cycles per fault {label}", w,
                                     lambda k: f"{cycles_metric(pts[k]):,.0f}"))
        w = scale_flatness(pts, shadow_metric, "memory", tolerance)
        if w:
            parts.append(verdict("shadow memory across guest memory", w,
                                 lambda k: f"{shadow_metric(pts[k]) * 4:,.0f} KiB"))
        w = scale_flatness(pts, shadow_per_table_metric, "spaces", tolerance)
        if w:
            parts.append(verdict("shadow pages per guest page table across address spaces",
                                 w, lambda k: f"{shadow_per_table_metric(pts[k]):.2f}"))
        if parts:
            L.append(f"- **{b}**: " + "; ".join(parts) + ".")
    if L:
        L.append(f"\n*Flat* means the largest median is within {pct} of the smallest "
                 f"(tolerance {pct}).")
    return L


def scale_markdown(scale, meta, level=1):
    """The Scale section: generated sentences, then per backend a table of cycles per
    fault (exits per fault) and one of shadow memory, by guest memory and address spaces."""
    pts_all = scale["points"]
    if not pts_all and not scale["problems"]:
        return ""
    h = "#" * level
    cfg = meta["config"].get("scale", {})
    L = ["", f"{h}# Scale", "",
         f"Image `{cfg.get('image', 'bench-scale-lm')}` (long mode), {cfg.get('runs', '?')} "
         f"run(s) per guest memory size and backend, the booted kernel with "
         f"{int(cfg.get('memtotal_kib', 0)) // 1024:,} MiB. Each `scale_fault` row takes the "
         f"same number of first-touch faults, in 32 2 MiB regions spread evenly over all of "
         f"guest memory, shared among 1-64 address spaces visited in turn (16 faults a "
         f"visit). *Cycles per fault*: guest cycles of the timed part over the faults (median, "
         f"min-max), with VM exits per fault in parentheses. *Shadow memory*: the change of "
         f"the backend's shadow page count over the timed part × 4 KiB (shadowvm "
         f"`mmu.shadow_pages_now`, KVM `mmu_shadow_pages`; KVM's TDP MMU under ept=1 keeps "
         f"no page count: its new 4 KiB leaf mappings, `pages_4k`, are shown instead), and "
         f"the guest page-table frames of the row's address spaces beside it.", ""]
    L += scale_sentences(scale, meta["backends"]) or ["- (no scale results)"]
    for p in scale["problems"][:5]:
        L.append(f"- problem: {p}")
    for b in meta["backends"]:
        pts = pts_all.get(b)
        if not pts:
            continue
        mems = sorted({k[0] for k in pts})
        spaces = sorted({k[1] for k in pts})
        head = ["memory"] + [f"{s} space{'s' if s != 1 else ''}" for s in spaces]
        L += ["", f"**{b}**, guest cycles per fault (VM exits per fault):", "",
              "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for m in mems:
            cells = [f"{m:,} MiB"]
            for sp in spaces:
                e = pts.get((m, sp))
                if e is None:
                    cells.append("missing")
                    continue
                c = e["cycles_per_fault"]
                text = f"{c['median']:,.0f}"
                if f"{c['min']:,.0f}" != f"{c['max']:,.0f}":
                    text += f" ({c['min']:,.0f}-{c['max']:,.0f})"
                cells.append(f"{text} ({e['exits_per_fault']:.2f})")
            L.append("| " + " | ".join(cells) + " |")
        key = "shadow_pages" if b in SHADOW_PAGES else "leaf_4k"
        if key == "leaf_4k" and not any(e.get("leaf_4k") for e in pts.values()):
            L += ["", f"**{b}** has no shadow pages, and its count of 4 KiB leaf mappings "
                  f"(`pages_4k`) changed in no timed part: every frame was mapped before."]
            continue
        what = ("shadow memory added, KiB (shadow pages; pages dropped under the backend's "
                "limit)" if key == "shadow_pages"
                else "new 4 KiB leaf mappings (`pages_4k`; no shadow page count)")
        L += ["", f"**{b}**, {what}; last row: guest page-table frames:", "",
              "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for m in mems:
            cells = [f"{m:,} MiB"]
            for sp in spaces:
                e = pts.get((m, sp))
                v = None if e is None else e.get(key)
                if v is None:
                    cells.append("missing")
                elif key == "shadow_pages":
                    dropped = e.get("reclaimed", 0)
                    cells.append(f"{v * 4:,.0f} ({v:,.0f}"
                                 + (f"; {dropped:,.0f} dropped)" if dropped else ")"))
                else:
                    cells.append(f"{v:,.0f}")
            L.append("| " + " | ".join(cells) + " |")
        tables = [next((pts[(m, sp)]["tables"] for m in mems if (m, sp) in pts), None)
                  for sp in spaces]
        L.append("| guest tables | " + " | ".join("missing" if t is None else f"{t:,}"
                                                 for t in tables) + " |")
    return "\n".join(L) + "\n"


def scale_chart(scale, meta, path):
    """Cycles per fault against guest memory (one line per backend and address-space
    count, first and last) and against address spaces (at the largest memory)."""
    pts_all = scale["points"]
    if not pts_all:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "shadowvm-bench"
    import matplotlib.ticker
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"shadowvm": "#d95f02", "kvm-ept0": "#1b9e77", "kvm-ept1": "#7570b3"}
    for b in meta["backends"]:
        pts = pts_all.get(b)
        if not pts:
            continue
        mems = sorted({k[0] for k in pts})
        spaces = sorted({k[1] for k in pts})
        # Solid: the first address-space count (left) or memory size (right); dashed: the last.
        for sp, style in ((spaces[0], "-o"), (spaces[-1], "--s")):
            xs = [m for m in mems if (m, sp) in pts]
            a1.plot(xs, [cycles_metric(pts[(m, sp)]) for m in xs], style, markersize=3,
                    color=colors.get(b), label=f"{b}, {sp} space{'s' if sp != 1 else ''}")
        for mem, style in ((mems[0], "-o"), (mems[-1], "--s")):
            xs = [sp for sp in spaces if (mem, sp) in pts]
            a2.plot(xs, [cycles_metric(pts[(mem, sp)]) for sp in xs], style, markersize=3,
                    color=colors.get(b), label=f"{b}, {mem} MiB")
    for ax, xl in ((a1, "guest memory (MiB)"), (a2, "address spaces")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_yscale("log")
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel("guest cycles per fault (median)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(color="#ddd", linewidth=0.5)
        ax.legend(fontsize=6)
    fig.suptitle(f"make bench scale rows, {meta['platform']}, {meta['date']}, commit "
                 f"{meta['commit']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return True


def update_doc(path, text):
    begin, end = "<!-- bench-report:begin -->", "<!-- bench-report:end -->"
    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        raise ValueError(f"{path} has no {begin} ... {end} block")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{text}\n{end}{tail}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True, action="append",
                    help="serial log of a bench boot; repeat to combine boots (images of "
                         "the later ones are added)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--platform", default="bochs")
    ap.add_argument("--exit-cycles", type=int, default=1500)
    ap.add_argument("--exit-cycles-source", default="")
    ap.add_argument("--boot-seconds", default="?")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--update-doc")
    a = ap.parse_args()
    config, backends, runs, lines = {}, {}, [], []
    images = []
    for path in a.log:
        try:
            with open(path, errors="replace") as f:
                mine = f.readlines()
        except OSError as e:
            print(f"bench: no serial log: {e}", file=sys.stderr)
            return 1
        c, b, r = parse(mine)
        for key, value in c.items():
            if key == "images":
                continue
            if key in config and config[key] != value:
                print(f"bench: the logs differ in {key} ({config[key]} against {value})",
                      file=sys.stderr)
                return 1
            config[key] = value
        images += [i for i in c.get("images", "").split(",") if i and i not in images]
        backends.update(b)
        runs += r
        lines.append(mine)
    config["images"] = ",".join(images)
    names = [b for b in config.get("backends", "").split(",") if b] or sorted(backends)
    status = {}
    for b in names:
        info = backends.get(b)
        mine = [r for r in runs if r["backend"] == b and r["image"] != LINUX_IMAGE]
        bad = [r for r in mine if not good(r)]
        if info is None:
            status[b] = {"ok": False, "why": "not reached (boot ended early?)"}
        elif not info["available"]:
            status[b] = {"ok": False, "why": info["error"]}
        elif not images:
            status[b] = {"ok": True, "why": ""}  # no image asked for: loading it is all
        elif not mine or bad:
            r = (bad or [None])[0]
            why = "no runs" if r is None else (
                f"{r['image']} run {r['run']}: launcher status {r['rc']}"
                + (f" ({'; '.join(r['errors'])})" if r["errors"] else "")
                + (f"; malformed: {r['malformed'][0]}" if r["malformed"] else ""))
            partly = any(good(x) for x in mine)
            status[b] = {"ok": False, "why": ("partly: " if partly else "") + why}
        else:
            status[b] = {"ok": True, "why": ""}
    meta = {"platform": a.platform, "exit_cycles": a.exit_cycles,
            "exit_cycles_source": a.exit_cycles_source or DEFAULT_EXIT_SOURCE,
            "boot_seconds": a.boot_seconds, "commit": a.commit, "config": config,
            "backends": names, "status": status,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    res = summarize(runs, names, images, a.exit_cycles)
    res["linux"] = summarize_linux(runs, names, a.exit_cycles)
    scale = scale_summary(runs, names)
    done = all(any(line.startswith("SHADOWVM-DONE") for line in mine) for mine in lines)
    splats = [line.strip() for mine in lines for line in mine if SPLAT.search(line)]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "boot_finished": done, "kernel_splats": splats[:5],
                   "summary": res, "scale": {"points": {b: [dict(e, memory_mib=k[0], spaces=k[1])
                                                           for k, e in p.items()]
                                                       for b, p in scale["points"].items()},
                                             "problems": scale["problems"]},
                   "runs": runs}, f, indent=1)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(markdown(res, meta) + scale_markdown(scale, meta))
    if res["images"]:
        chart(res, meta, os.path.join(a.out, "ratios.svg"))
    if scale_chart(scale, meta, os.path.join(a.out, "scale.svg")):
        print(f"  wrote {a.out}/scale.svg")
    if a.update_doc:
        update_doc(a.update_doc, markdown(res, meta, level=3) + scale_markdown(scale, meta, 3))
    for b in names:
        print(f"  {b:<10} {'ok' if status[b]['ok'] else 'MISSING: ' + status[b]['why']}")
        if res["linux"]:
            st = res["linux"]["status"][b]
            print(f"  {b:<10} Linux rows {'ok' if st['ok'] else 'MISSING: ' + st['why']}")
    if not done:
        print("bench: the boot did not finish (see the serial log)", file=sys.stderr)
    if splats:
        print(f"bench: kernel log has a splat: {splats[0]}", file=sys.stderr)
    produced = ((images and any(s["ok"] for s in status.values()))
                or (res["linux"] and any(s["ok"] for s in res["linux"]["status"].values())))
    if not produced:
        print("bench: no backend produced a complete result", file=sys.stderr)
    print(f"  wrote {a.out}/results.json, results.md" + (", ratios.svg" if res["images"] else "")
          + (f"; updated {a.update_doc}" if a.update_doc else ""))
    return 0 if done and not splats and produced else 1


if __name__ == "__main__":
    sys.exit(main())
