#!/usr/bin/env python3
"""Judges one boot's serial log: the TAP of every expected suite, completion, kernel splats.

Usage: tap-summary.py <tier> <serial log> <suite>[,<suite>...] <counts file>
       tap-summary.py --self-test

Before judging, it checks its own splat pattern against sample kernel lines (a failure of
that check fails the tier).

Prints one line per failed, missing or unfinished test and a tier summary; appends
"<tier> <passed> <failed> <skipped>" to the counts file. Exit status 1 if anything failed.
"""
import os
import re
import sys

SPLAT = re.compile(r"\b(BUG:|WARNING:|Oops|general protection fault|Kernel panic|kernel BUG|"
                   r"Call Trace:|UBSAN:|KASAN:|refcount_t:|INFO: task .* blocked|"
                   r"watchdog: BUG|hard LOCKUP|unreferenced object|list_(?:add|del) corruption|"
                   # RCU stalls: "rcu: INFO: rcu_sched self-detected stall on CPU",
                   # "rcu: INFO: rcu_preempt detected (expedited) stalls on CPUs/tasks",
                   # "INFO: rcu_tasks detected stalls on tasks".
                   r"INFO: rcu_\w+ (?:self-)?detected (?:expedited )?stall|"
                   # An MSR access outside an exception-table entry faulted (pr_warn).
                   r"unchecked MSR access error|"
                   # smp_call_function*() waited too long (CONFIG_CSD_LOCK_WAIT_DEBUG):
                   # "csd: Detected non-responsive CSD lock (#1) on CPU#0, waiting ...",
                   # "csd: CSD lock (#1) got unstuck on CPU#00, ...".
                   r"csd: .*CSD lock \(#|"
                   # SLUB debugging ("BUG kmalloc-64 (Not tainted): Redzone overwritten"),
                   # kmemleak giving up (then it would find nothing).
                   r"BUG [\w.-]+ \(|kmemleak: .*(?:disabled|[Cc]annot)|"
                   # The OOM killer ran: guest RAM is allocated so that a shortage fails the
                   # call instead, so in a test run this is a bug, not the kernel working.
                   r"invoked oom-killer|[Oo]ut of memory: Killed process)")

# Lines the kernel prints in these forms (7.x sources), and lines a clean run prints, for
# the self-check that runs before every judgement (and alone with --self-test): a change
# of the pattern that stops catching one of them fails the tier instead of passing quietly.
SPLAT_SAMPLES = [
    "[  301.512345] memcg invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "[  301.612345] Memory cgroup out of memory: Killed process 93 (memcg) total-vm:1016kB, anon-rss:56kB",
    "[  301.712345] Out of memory: Killed process 77 (sh) total-vm:2048kB, anon-rss:128kB",
    "[  301.123456] rcu: INFO: rcu_sched self-detected stall on CPU",
    "rcu: INFO: rcu_preempt self-detected stall on CPU",
    "rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
    "rcu: INFO: rcu_sched detected expedited stalls on CPUs/tasks: { 1-... } 21 jiffies s: 341",
    "INFO: rcu_tasks detected stalls on tasks:",
    "watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [fuzz:123]",
    "CPU0: Watchdog detected hard LOCKUP on cpu 1",
    "INFO: task kworker/u4:2:45 blocked for more than 61 seconds.",
    "unchecked MSR access error: WRMSR to 0x1d9 (tried to write 0x0000000000000001) at rIP: "
    "0xffffffffc0201234 (shadowvm_run+0x54/0x120 [shadowvm])",
    "unchecked MSR access error: RDMSR from 0x3a at rIP: 0xffffffff8104d5a4 (native_read_msr+0x4/0x30)",
    "csd: Detected non-responsive CSD lock (#1) on CPU#0, waiting 5000000032 ns for CPU#01 "
    "do_nothing+0x0/0x10(0x0).",
    "csd: Continued non-responsive CSD lock (#1) on CPU#0, waiting 10000000064 ns for CPU#01",
    "csd: CSD lock (#1) got unstuck on CPU#00, CPU#01 released the lock.",
    "BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!",
    "WARNING: CPU: 1 PID: 80 at arch/x86/kernel/fpu/core.c:446 kernel_fpu_begin_mask+0x9c/0xb0",
    "WARNING: possible circular locking dependency detected",
    "BUG: sleeping function called from invalid context at mm/slub.c:4123",
    "BUG: unable to handle page fault for address: ffffc90000a3f000",
    "Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000",
    "kernel BUG at mm/slub.c:461!",
    "Kernel panic - not syncing: Fatal exception",
    "list_add corruption. prev->next should be next (ffff888003a2c0e8), but was 0000000000000000.",
    "BUG kmalloc-64 (Not tainted): Redzone overwritten",
    "BUG: Bad page state in process fuzz  pfn:0a3f1",
    "unreferenced object 0xffff888003b1e000 (size 64):",
    "kmemleak: Cannot allocate a kmemleak_object structure",
    "kmemleak: Kernel memory leak detector disabled",
    "refcount_t: underflow; use-after-free.",
    "UBSAN: array-index-out-of-bounds in drivers/foo.c:12:3",
    " Call Trace:",
]
CLEAN_SAMPLES = [
    "ok 3 - kill -9 of processes inside RUN",
    "SHADOWVM-BOOT-LOG warnings=1",
    "# FUZZ-TOTAL calls=123456 runs=5000 seed=1 seconds=40",
    "rcu: Hierarchical RCU implementation.",
    "rcu: RCU calculated value of scheduler-enlistment delay is 25 jiffies.",
    "NMI watchdog: Perf NMI watchdog permanently disabled",
    "kmemleak: Kernel memory leak detector initialized (mem pool available: 15677)",
    "kmemleak: Automatic memory scanning thread started",
    "smp: Brought up 1 node, 2 CPUs",
    "ok 12 - the splat check catches RCU stalls, soft lockups, hung tasks and csd-lock waits",
    # kselftest harness and kselftest.h output (selftests/kselftest/).
    "#  RUN           vm.triple_fault ...",
    "# faults while delivering UD, PF and DF end in a triple fault (SHUTDOWN)",
    "#            OK  vm.triple_fault",
    "ok 31 vm.triple_fault",
    "# api.c:61:set_memory_twice:Expected 0 (0) != __rc == -1 && __e == (EEXIST) (0)",
    "# close_during_run: Test terminated by timeout",
    "ok 11 allocation failures in turn # SKIP no fault injection in this kernel",
    "# Totals: pass:41 fail:0 xfail:0 xpass:0 skip:0 error:0",
]


def self_check(init_path):
    """Problems of the splat pattern against the samples, and of /init's dmesg filter (the
    only way lines printed below the console level reach the serial log)."""
    problems = [f"splat pattern misses: {l!r}" for l in SPLAT_SAMPLES if not SPLAT.search(l)]
    problems += [f"splat pattern fires on a clean line: {l!r}" for l in CLEAN_SAMPLES if SPLAT.search(l)]
    try:
        with open(init_path) as f:
            m = re.search(r"grep -E '([^']*)' \| head -n 200", f.read())
    except OSError as e:
        m, problems = None, problems + [f"cannot read {init_path}: {e}"]
    if m is None:
        problems.append(f"no dmesg filter found in {init_path}")
    else:
        flt = re.compile(m.group(1))
        problems += [f"/init's dmesg filter drops: {l!r}" for l in SPLAT_SAMPLES if not flt.search(l)]
    return problems


RESULT = re.compile(r"^(not ok|ok)\s+(\d+)\s*(?:-\s*)?(.*?)\s*(#\s*(SKIP|TODO)\b.*)?$", re.I)


def main():
    init_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "initramfs", "init")
    if sys.argv[1:] == ["--self-test"]:
        problems = self_check(init_path)
        for p in problems:
            print(f"  FAIL splat self-test: {p}")
        print(f"splat self-test: {len(SPLAT_SAMPLES) + len(CLEAN_SAMPLES)} samples, "
              f"{len(problems)} problem(s)")
        return 1 if problems else 0
    tier, log_path, suites, counts_path = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    try:
        with open(log_path, errors="replace") as f:
            lines = [l.rstrip("\r\n") for l in f]
    except OSError as e:
        lines = []
        print(f"  FAIL {tier}: no serial log ({e})")
    passed = failed = skipped = 0
    problems = []

    def fail(msg):
        nonlocal failed
        failed += 1
        problems.append(msg)

    for p in self_check(init_path):
        fail(f"splat check self-test: {p}")

    blocks, cur = {}, None
    for line in lines:
        if line.startswith("SHADOWVM-SUITE-BEGIN "):
            cur = line.split()[1]
            blocks[cur] = {"lines": [], "rc": None}
        elif line.startswith("SHADOWVM-SUITE-END ") and cur:
            m = re.search(r"rc=(\d+)", line)
            blocks[cur]["rc"] = int(m.group(1)) if m else -1
            cur = None
        elif cur:
            blocks[cur]["lines"].append(line)

    for suite in suites:
        b = blocks.get(suite)
        if b is None:
            fail(f"{suite}: suite did not run (no output in {log_path})")
            continue
        plan, seen, suite_failed = None, 0, 0
        for line in b["lines"]:
            m = re.match(r"^1\.\.(\d+)", line)
            if m and plan is None:
                plan = int(m.group(1))
                continue
            m = RESULT.match(line)
            if not m:
                continue
            seen += 1
            name = f"{suite}: {m.group(3) or '#' + m.group(2)}"
            directive = (m.group(5) or "").upper()
            if directive == "SKIP":
                skipped += 1
            elif m.group(1).lower() == "ok" or directive == "TODO":
                passed += 1
            else:
                suite_failed += 1
                fail(name)
        if b["rc"] is None:
            fail(f"{suite}: unfinished (no end marker: hang or crash?)")
        elif plan is None:
            fail(f"{suite}: no TAP plan line")
        elif seen < plan:
            fail(f"{suite}: {plan - seen} planned test(s) missing")
            failed += plan - seen - 1  # each missing test counts as one failure
        elif seen > plan:
            fail(f"{suite}: {seen} results for a plan of {plan}")
        if b["rc"] not in (None, 0) and suite_failed == 0:
            fail(f"{suite}: exited with status {b['rc']} although no test failed")

    done = any(l.startswith("SHADOWVM-DONE") for l in lines)
    if not done:
        fail("boot did not reach the end of /init (hang, panic or timeout)")
    splats = [l for l in lines if SPLAT.search(l)]
    if splats:
        fail("kernel log has a splat: " + splats[0].strip())
    elif done:
        passed += 1  # a complete boot whose kernel log stayed clean: one test of its own

    for p in problems:
        print(f"  FAIL {tier}: {p}")
    print(f"  {tier}: {passed} passed, {failed} failed, {skipped} skipped (log: {log_path})")
    with open(counts_path, "a") as f:
        f.write(f"{tier} {passed} {failed} {skipped}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
