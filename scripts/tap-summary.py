#!/usr/bin/env python3
"""Judges one boot's serial log: the TAP of every expected suite, completion, kernel splats.

Usage: tap-summary.py <tier> <serial log> <suite>[,<suite>...] <counts file>

Prints one line per failed, missing or unfinished test and a tier summary; appends
"<tier> <passed> <failed> <skipped>" to the counts file. Exit status 1 if anything failed.
"""
import re
import sys

SPLAT = re.compile(r"\b(BUG:|WARNING:|Oops|general protection fault|Kernel panic|kernel BUG|"
                   r"Call Trace:|UBSAN:|KASAN:|refcount_t:|INFO: task .* blocked|"
                   r"watchdog: BUG|unreferenced object|"
                   # SLUB debugging ("BUG kmalloc-64 (Not tainted): Redzone overwritten"),
                   # kmemleak giving up (then it would find nothing).
                   r"BUG [\w.-]+ \(|kmemleak: .*(?:disabled|[Cc]annot))")
RESULT = re.compile(r"^(not ok|ok)\s+(\d+)\s*(?:-\s*)?(.*?)\s*(#\s*(SKIP|TODO)\b.*)?$", re.I)


def main():
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
