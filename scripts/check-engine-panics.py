#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Checks the built module object for panics reachable from the shadow MMU engine, the
instruction emulator and the rest of the code that runs with interrupts off.

Usage: check-engine-panics.py <shadowvm.o> [llvm-version]

The engine (rust/mmu, module `shadowvm::mmu`) and the emulator (rust/emulate, module
`shadowvm::emulate`) run with interrupts off in VMX operation, where a Rust panic is a
kernel BUG. Clippy denies the panicking source forms in both (see rust/mmu/mod.rs and
rust/emulate/mod.rs); this is the check on what the compiler really emitted, which also
catches what clippy does not see (copy_from_slice length checks, iterator counters with
overflow checks, slice methods that bounds-check internally).

A checked function is one whose demangled name starts with `shadowvm::emulate::`,
`shadowvm::mmu::`, `shadowvm::vcpu::`, `shadowvm::vmx::`, `shadowvm::ram::` or
`shadowvm::x86::` or `shadowvm::cpumodel::` (with or without a leading `<`): the emulator,
the engine, the vCPU's run loop and exit handlers, the VMX layer, guest RAM, the x86
vocabulary and the CPU model's rules (MSR writes, CPUID lookup), all of which run with
interrupts off; or a `core::` generic instantiated with one of their
closures. It fails if it calls a panic entry point (core::panicking::*, *_fail,
copy_from_slice_impl), directly or through `core::` functions. Calls to other module code (the PageSource and
GuestMemory callbacks) are not followed: that code is not the engine.
Exit status: 0 clean, 1 panics found (listed on stderr), 2 usage or tool error.
"""
import re
import subprocess
import sys

# What runs with interrupts off in VMX operation: the instruction emulator, the engine, the
# vCPU (the run loop, the exit handlers and the instruction emulation around the engine) and
# the VMX layer.
CHECKED = tuple(p + m
                for m in ("shadowvm::emulate::", "shadowvm::mmu::", "shadowvm::vcpu::",
                          "shadowvm::vmx::", "shadowvm::ram::", "shadowvm::x86::",
                          "shadowvm::cpumodel::")
                for p in ("", "<"))

PANIC = re.compile(r"core::panicking::|_fail\b|unwrap_failed|expect_failed|"
                   r"copy_from_slice_impl|len_mismatch|panic_bounds_check")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    obj = sys.argv[1]
    ver = sys.argv[2] if len(sys.argv) > 2 else "19"
    try:
        dis = subprocess.run([f"llvm-objdump-{ver}", "-dr", "--no-show-raw-insn", obj],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"check-engine-panics: llvm-objdump-{ver} failed: {e}", file=sys.stderr)
        return 2
    calls = {}
    fn = None
    for line in dis.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            fn = m.group(1)
            calls.setdefault(fn, set())
            continue
        if fn is None:
            continue
        m = re.search(r"R_X86_64_(?:PLT32|PC32)\s+([^\s+-]+)", line)
        if m:
            calls[fn].add(m.group(1))
            continue
        m = re.search(r"\b(?:callq|call|jmpq|jmp)\s+0x[0-9a-f]+ <([^>+]+)>$", line)
        if m and m.group(1) != fn:
            calls[fn].add(m.group(1))
    names = sorted(set(calls) | {c for cs in calls.values() for c in cs})
    try:
        out = subprocess.run([f"llvm-cxxfilt-{ver}"], input="\n".join(names) + "\n",
                             check=True, capture_output=True, text=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"check-engine-panics: llvm-cxxfilt-{ver} failed: {e}", file=sys.stderr)
        return 2
    dem = dict(zip(names, out))

    def is_engine(sym):
        d = dem.get(sym, sym)
        if d.startswith(CHECKED):
            return True
        return d.lstrip("<").startswith("core::") and re.search(
            r"shadowvm::(?:emulate|mmu|vcpu|vmx)::\S*\{closure", d) is not None

    def is_core(sym):
        return dem.get(sym, sym).lstrip("<").startswith("core::")

    # Panic paths reachable from fn through core:: functions (memoised DFS).
    memo = {}

    def panics(f, stack):
        if f in memo:
            return memo[f]
        if f in stack:
            return []
        stack.add(f)
        found = []
        for c in sorted(calls.get(f, ())):
            if PANIC.search(dem.get(c, c)):
                found.append(dem.get(c, c))
            elif is_core(c) and c in calls:
                found += [f"{dem.get(c, c)} -> {p}" for p in panics(c, stack)]
        stack.discard(f)
        memo[f] = found
        return found

    engine = [f for f in calls if is_engine(f)]
    bad = {f: panics(f, set()) for f in engine}
    bad = {f: p for f, p in bad.items() if p}
    if not engine:
        print(f"check-engine-panics: no engine function in {obj}", file=sys.stderr)
        return 2
    for f, ps in sorted(bad.items(), key=lambda x: dem.get(x[0], x[0])):
        print(f"engine panic: {dem.get(f, f)}", file=sys.stderr)
        for p in sorted(set(ps)):
            print(f"    calls {p}", file=sys.stderr)
    print(f"check-engine-panics: {len(engine)} engine functions, {len(bad)} with a panic path",
          file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
