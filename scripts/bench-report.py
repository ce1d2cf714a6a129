#!/usr/bin/env python3
"""make bench, host side: parses the serial log of the bench boot (suite selftests/bench)
and writes results.json (raw), results.md (tables) and ratios.svg (chart). Stdlib only.

Usage: bench-report.py --log <serial log> --out <dir> [--platform bochs|qemu-kvm]
                       [--exit-cycles 1500] [--boot-seconds N] [--commit ID]

The log holds one record per launcher run (see selftests/backends.sh):
    BENCHRUN-BEGIN backend=B image=I run=N
    BENCH <workload> <param>=<value> cycles=<n> iterations=<n>
    BENCHRUN-JSON {launcher --json statistics}
    BENCHRUN-ERROR <launcher message>
    BENCHRUN-END backend=B image=I run=N rc=<launcher exit status>
plus BENCH-CONFIG and BENCHRUN-BACKEND lines. Images named iso/<image>-<workload> are
isolation runs: one workload at full count, the others at 1 (iso/<image>-min: all at 1),
so a workload's VM exits and MMU events are its isolation run's minus the min run's.

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
BENCH = re.compile(r"^BENCH ([a-z0-9_]+) ([a-z_]+)=(\d+) cycles=(\d+) iterations=(\d+)$")
KV = re.compile(r"(\w+)=(\S+)")
# VM exits by reason: (label, KVM binary statistic, shadowvm statistic). KVM counts no
# CR-access or CPUID exits of its own: they are in "other" (total minus the named ones).
REASONS = [
    ("#PF", "kvm.vcpu.pf_taken", "exits.exception_nmi"),
    ("INVLPG", "kvm.vcpu.invlpg", "exits.invlpg"),
    ("CR", None, "exits.cr_access"),
    ("I/O", "kvm.vcpu.io_exits", "exits.io_instruction"),
    ("IRQ", "kvm.vcpu.irq_exits", "exits.external_interrupt"),
]
MMU_KVM = re.compile(r"^kvm\.(vm|vcpu)\.(pf_|mmu_|tlb_flush|remote_tlb|insn_emulation)")
MMU_GAUGES = {"kvm.vm.mmu_shadow_pages", "kvm.vm.max_mmu_rmap_size", "kvm.vm.pages_4k",
              "kvm.vm.pages_2m", "kvm.vm.pages_1g"}
PAIRS = [("shadowvm", "kvm-ept0"), ("shadowvm", "kvm-ept1"), ("kvm-ept0", "kvm-ept1")]


def parse(lines):
    config, backends, runs, cur = {}, {}, [], None
    for line in lines:
        line = line.rstrip("\r\n")
        if line.startswith("BENCH-CONFIG "):
            config = {k: v for k, v in KV.findall(line)}
        elif line.startswith("BENCHRUN-BACKEND "):
            kv = dict(KV.findall(line.split(" ok=")[0]))
            ok = " ok=1" in line
            backends[kv["backend"]] = {
                "available": ok,
                "error": None if ok else line.split(" ok=0", 1)[-1].strip() or "could not be loaded"}
        elif line.startswith("BENCHRUN-BEGIN "):
            kv = dict(KV.findall(line))
            cur = {"backend": kv.get("backend"), "image": kv.get("image"),
                   "run": int(kv.get("run", 0)), "rc": None, "bench": [], "launcher": None,
                   "errors": [], "malformed": []}
        elif cur is None:
            continue
        elif line.startswith("BENCH "):
            m = BENCH.match(line)
            if m:
                cur["bench"].append({"workload": m[1], "param": m[2], "value": int(m[3]),
                                     "cycles": int(m[4]), "iterations": int(m[5])})
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
            runs.append(cur)
            cur = None
    if cur is not None:
        cur["errors"].append("record not finished (boot ended or hung)")
        runs.append(cur)
    return config, backends, runs


def good(run):
    return run["rc"] == 0 and run["bench"] and not run["malformed"] and run["launcher"] is not None


def row_key(b):
    # cr3_pingpong has one row per address-space count; other workloads one row.
    return f"{b['workload']} {b['param']}={b['value']}"


def exit_counts(launcher, backend):
    """VM exits of one run: total and by reason (dict), from the backend's statistics."""
    stats = launcher.get("stats", {}) or {}
    if backend == "shadowvm":
        total = sum(v for k, v in stats.items() if k.startswith("exits."))
        col = 2
    else:
        total = stats.get("kvm.vcpu.exits", 0)
        col = 1
    by = {}
    for r in REASONS:
        if r[col]:
            by[r[0]] = stats.get(r[col], 0)
    by["other"] = total - sum(by.values())
    return total, by


def mmu_counts(launcher, backend):
    stats = launcher.get("stats", {}) or {}
    if backend == "shadowvm":
        return {k: v for k, v in stats.items() if k.startswith("mmu.")}
    return {k: v for k, v in stats.items() if MMU_KVM.match(k) and k not in MMU_GAUGES}


def summarize(runs, backend_names, images, exit_cycles):
    """Per image, row and backend: median cycles, per-workload exits and MMU events from
    the isolation runs, modelled cost; ratios between backends."""
    out = {}
    for image in images:
        rows = {}
        for backend in backend_names:
            main = [r for r in runs if r["backend"] == backend and r["image"] == image and good(r)]
            for r in main:
                for b in r["bench"]:
                    e = rows.setdefault(row_key(b), {"workload": b["workload"], "backends": {}})
                    e["backends"].setdefault(backend, {"cycles": []})["cycles"].append(b["cycles"])
                    e["backends"][backend]["iterations"] = b["iterations"]
            if main:
                walls = [r["launcher"].get("wall_time_ns", 0) for r in main]
                out.setdefault("_runs", {}).setdefault(image, {})[backend] = {
                    "runs": len(main), "wall_time_ns_median": statistics.median(walls),
                    "exits_total_median": statistics.median(exit_counts(r["launcher"], backend)[0] for r in main)}
            iso = {r["image"].rsplit("-", 1)[1]: r for r in runs
                   if r["backend"] == backend and r["image"].startswith(f"iso/{image}-") and good(r)}
            base = iso.get("min")
            for key, e in rows.items():
                be = e["backends"].get(backend)
                if not be:
                    continue
                be["cycles_median"] = statistics.median(be["cycles"])
                w = iso.get(e["workload"])
                if base is None or w is None:
                    continue
                t1, by1 = exit_counts(w["launcher"], backend)
                t0, by0 = exit_counts(base["launcher"], backend)
                m1, m0 = mmu_counts(w["launcher"], backend), mmu_counts(base["launcher"], backend)
                # Rows sharing one workload (cr3_pingpong: four rows, the same number of
                # switches each) share its isolation run evenly.
                share = 1 / sum(1 for x in rows.values() if x["workload"] == e["workload"])
                # I/O exits are the guest printing its BENCH line, after the timed part.
                by = {k: max(0, round((by1.get(k, 0) - by0.get(k, 0)) * share)) for k in by1 if k != "I/O"}
                be["exits"] = sum(by.values())
                be["exits_by_reason"] = by
                be["mmu"] = {k: round((m1.get(k, 0) - m0.get(k, 0)) * share) for k in m1}
                be["mmu"] = {k: v for k, v in be["mmu"].items() if v > 0}
                be["exits_share"] = round(share, 4)
                be["modelled"] = be["cycles_median"] + be["exits"] * exit_cycles
        for key, e in rows.items():
            e["ratios"] = {}
            for a, b in PAIRS:
                x, y = e["backends"].get(a), e["backends"].get(b)
                if x and y and y.get("cycles_median"):
                    r = {"cycles": x["cycles_median"] / y["cycles_median"]}
                    if "modelled" in x and "modelled" in y and y["modelled"]:
                        r["modelled"] = x["modelled"] / y["modelled"]
                    e["ratios"][f"{a}/{b}"] = r
        out[image] = rows
    return out


def fmt_n(v):
    if v is None:
        return "missing"
    if v >= 10_000_000:
        return f"{v / 1e6:.1f} M"
    if v >= 100_000:
        return f"{v / 1e3:.0f} k"
    return f"{v:,.0f}"


def fmt_r(v):
    return "missing" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def compact(d, limit=4):
    items = sorted(((k.split(".")[-1], v) for k, v in d.items() if v), key=lambda kv: -kv[1])
    if not items:
        return "0"
    s = ", ".join(f"{k} {fmt_n(v)}" for k, v in items[:limit])
    return s + (" …" if len(items) > limit else "")


def markdown(res, meta):
    bk, ec = meta["backends"], meta["exit_cycles"]
    L = [f"# shadowvm benchmark results", "",
         f"Made by `make bench` on {meta['date']}, commit `{meta['commit']}`, platform "
         f"**{meta['platform']}**, {meta['config'].get('runs', '?')} run(s) per image and "
         f"backend (median), boot {meta['boot_seconds']} s.", ""]
    if meta["platform"] == "bochs":
        L += ["Bochs (`clock: sync=none`) advances the TSC with emulated instructions, so "
              "*cycles* are instruction counts of the guest **and** of the hypervisor code that "
              "ran on its behalf, but a VM exit/entry itself costs about nothing. The "
              f"**modelled cost** adds **{ec} cycles per VM exit** (`BENCH_EXIT_CYCLES`; real "
              "VT-x round trips cost roughly 1,000-2,500 cycles) to show what real hardware would "
              "add. Wall times are emulated time, not comparable to real hardware.", ""]
    else:
        L += [f"Cycles are TSC ticks of the real CPU (nested VT-x under QEMU/KVM). The modelled "
              f"cost adds {ec} cycles per VM exit; wall times are real.", ""]
    L += ["VM exits and MMU events per workload come from isolation runs (that workload at "
          "full count, all others at 1, minus a run with everything at 1), without the I/O exits "
          "of printing the result; the four `cr3_pingpong` rows share one isolation run, split "
          "evenly (each does the same number of switches); `cow_fork` includes populating the "
          "parent (it scales with the same count). KVM names no CR-access exits: they are in "
          "*other* (one per CR3 write, and one per CR3 read in the guest's fault handlers).", "",
          "## Backends", "", "| backend | status |", "| --- | --- |"]
    for b in bk:
        st = meta["status"][b]
        L.append(f"| {b} | {'ok' if st['ok'] else 'missing: ' + st['why']} |")
    for image, rows in res.items():
        if image.startswith("_"):
            continue
        L += ["", f"## {image}", "", "Guest cycles (median) and modelled cost "
              f"(cycles + exits × {ec}); ratios are shadowvm to each KVM mode, and KVM ept=0 to ept=1.", ""]
        head = ["workload"] + [f"{b} cycles" for b in bk] + [f"{b} modelled" for b in bk] + \
               [f"{a}/{b} (modelled)" for a, b in PAIRS]
        L += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for key, e in rows.items():
            cells = [f"`{key}`"]
            for b in bk:
                x = e["backends"].get(b)
                cells.append(fmt_n(x["cycles_median"]) if x else "missing")
            for b in bk:
                x = e["backends"].get(b)
                cells.append(fmt_n(x.get("modelled")) if x and "modelled" in x else "missing")
            for a, b in PAIRS:
                r = e["ratios"].get(f"{a}/{b}")
                cells.append(f"{fmt_r(r['cycles'])} ({fmt_r(r.get('modelled'))})" if r else "missing")
            L.append("| " + " | ".join(cells) + " |")
        gone = [b for b in bk if not any(b in e["backends"] for e in rows.values())]
        L += ["", "VM exits per workload by reason, and MMU counters (largest first)"
              + (f"; no results from {', '.join(gone)}" if gone else "") + ":", "",
              "| workload | backend | exits | by reason | MMU counters |", "| --- | --- | --- | --- | --- |"]
        have = [b for b in bk if any(b in e["backends"] for e in rows.values())]
        for key, e in rows.items():
            for b in have:
                x = e["backends"].get(b)
                if not x:
                    L.append(f"| `{key}` | {b} | missing | | |")
                elif "exits" not in x:
                    L.append(f"| `{key}` | {b} | no isolation run | | |")
                else:
                    L.append(f"| `{key}` | {b} | {fmt_n(x['exits'])} | {compact(x['exits_by_reason'], 6)} | {compact(x['mmu'])} |")
    tot = res.get("_runs", {})
    if tot:
        L += ["", "## Whole runs", "", "Per image and backend: VM exits of a whole run (all "
              "workloads plus set-up) and wall time, medians.", "",
              "| image | backend | runs | VM exits | wall time (ms) |", "| --- | --- | --- | --- | --- |"]
        for image, per in tot.items():
            for b in bk:
                x = per.get(b)
                if x:
                    L.append(f"| {image} | {b} | {x['runs']} | {fmt_n(x['exits_total_median'])} | "
                             f"{x['wall_time_ns_median'] / 1e6:.1f} |")
                else:
                    L.append(f"| {image} | {b} | 0 | missing | missing |")
    L += ["", "Chart: [ratios.svg](ratios.svg). Raw data: results.json.", ""]
    return "\n".join(L)


def svg(res, meta):
    """Horizontal bars on a log scale: per image and workload, the cycle ratio of each pair
    (a thin black tick marks the modelled-cost ratio); missing pairs are labelled."""
    colors = {"shadowvm/kvm-ept0": "#d95f02", "shadowvm/kvm-ept1": "#7570b3", "kvm-ept0/kvm-ept1": "#1b9e77"}
    images = [i for i in res if not i.startswith("_")]
    bar, gap, left, width = 9, 8, 230, 520
    lo, hi = 0.1, 10000.0
    X = lambda v: left + width * (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    y = 74
    body = []
    for image in images:
        body.append(f'<text x="10" y="{y}" font-weight="bold">{image}</text>')
        y += 8
        for key, e in res[image].items():
            y0 = y
            for pair, c in colors.items():
                r = e["ratios"].get(pair)
                if r:
                    body.append(f'<rect x="{X(lo):.1f}" y="{y}" width="{X(r["cycles"]) - X(lo):.1f}" height="{bar - 1}" fill="{c}"><title>{image} {key} {pair}: {r["cycles"]:.3g} (modelled {r.get("modelled", float("nan")):.3g})</title></rect>')
                    lx = max(X(r["cycles"]), X(r.get("modelled", r["cycles"]))) + 4
                    body.append(f'<text x="{lx:.1f}" y="{y + bar - 2}" font-size="8">{fmt_r(r["cycles"])}</text>')
                    if "modelled" in r:
                        mx = X(r["modelled"])
                        body.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{y - 1}" y2="{y + bar}" stroke="black" stroke-width="2"/>')
                else:
                    body.append(f'<text x="{X(lo) + 4:.1f}" y="{y + bar - 2}" font-size="8" fill="{c}">{pair}: missing</text>')
                y += bar
            body.append(f'<text x="{left - 6}" y="{(y0 + y) / 2 + 4:.1f}" text-anchor="end">{key}</text>')
            y += gap
        y += 10
    grid = []
    for v in (0.1, 1, 10, 100, 1000, 10000):
        gx = X(v)
        grid.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="62" y2="{y}" stroke="#{"888" if v == 1 else "ddd"}"/>')
        grid.append(f'<text x="{gx:.1f}" y="{y + 14}" text-anchor="middle">{v:g}</text>')
    legend = []
    lx = 10
    for pair, c in colors.items():
        legend.append(f'<rect x="{lx}" y="40" width="12" height="10" fill="{c}"/><text x="{lx + 16}" y="49">{pair}</text>')
        lx += 190
    legend.append(f'<line x1="{lx}" x2="{lx}" y1="38" y2="52" stroke="black" stroke-width="2"/><text x="{lx + 6}" y="49">modelled ({meta["exit_cycles"]} cycles/exit)</text>')
    h = y + 30
    title = "Cycle ratios between backends (log scale; 1 = same; bar = measured, tick = modelled)"
    sub = f"make bench, {meta['platform']}, {meta['date']}, commit {meta['commit']}"
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="13" font-weight="bold">{title}</text>',
        f'<text x="10" y="31" font-size="10">{sub}</text>',
        *legend, *grid, *body,
        f'<text x="{left + width / 2}" y="{h - 4}" text-anchor="middle">ratio (first backend / second)</text>',
        "</svg>", ""])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--platform", default="bochs")
    ap.add_argument("--exit-cycles", type=int, default=1500)
    ap.add_argument("--boot-seconds", default="?")
    ap.add_argument("--commit", default="unknown")
    a = ap.parse_args()
    try:
        with open(a.log, errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        print(f"bench: no serial log: {e}", file=sys.stderr)
        return 1
    config, backends, runs = parse(lines)
    names = [b for b in config.get("backends", "").split(",") if b] or sorted(backends)
    images = [i for i in config.get("images", "").split(",") if i]
    status = {}
    for b in names:
        info = backends.get(b)
        mine = [r for r in runs if r["backend"] == b and not r["image"].startswith("iso/")]
        bad = [r for r in mine if not good(r)]
        if info is None:
            status[b] = {"ok": False, "why": "not reached (boot ended early?)"}
        elif not info["available"]:
            status[b] = {"ok": False, "why": info["error"]}
        elif not mine or bad:
            r = (bad or [None])[0]
            why = "no runs" if r is None else (
                f"{r['image']} run {r['run']}: launcher status {r['rc']}"
                + (f" ({'; '.join(r['errors'])})" if r["errors"] else "")
                + (f"; malformed: {r['malformed'][0]}" if r["malformed"] else ""))
            status[b] = {"ok": not bad and bool(mine), "why": why}
        else:
            status[b] = {"ok": True, "why": ""}
    for b in names:
        if not status[b]["ok"] and any(good(r) for r in runs if r["backend"] == b and not r["image"].startswith("iso/")):
            status[b]["why"] = "partly: " + status[b]["why"]
    meta = {"platform": a.platform, "exit_cycles": a.exit_cycles, "boot_seconds": a.boot_seconds,
            "commit": a.commit, "config": config, "backends": names, "status": status,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    res = summarize(runs, names, images, a.exit_cycles)
    done = any(l.startswith("SHADOWVM-DONE") for l in lines)
    splats = [l.strip() for l in lines if SPLAT.search(l)]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "boot_finished": done, "kernel_splats": splats[:5],
                   "summary": res, "runs": runs}, f, indent=1)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(markdown(res, meta))
    with open(os.path.join(a.out, "ratios.svg"), "w") as f:
        f.write(svg(res, meta))
    for b in names:
        print(f"  {b:<10} {'ok' if status[b]['ok'] else 'MISSING: ' + status[b]['why']}")
    if not done:
        print("bench: the boot did not finish (see the serial log)", file=sys.stderr)
    if splats:
        print(f"bench: kernel log has a splat: {splats[0]}", file=sys.stderr)
    if not any(s["ok"] for s in status.values()):
        print("bench: no backend produced a complete result", file=sys.stderr)
    print(f"  wrote {a.out}/results.json, results.md, ratios.svg")
    return 0 if done and not splats and any(s["ok"] for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
