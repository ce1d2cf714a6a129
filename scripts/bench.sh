#!/usr/bin/env bash
# make bench: one boot of the test kernel runs every benchmark image under every backend,
# several runs each, then scripts/bench-report.py writes out/bench/{results.json,
# results.md,ratios.svg}; counters per workload come from the same runs (benchmark marks).
# Bochs (emulated VT-x) here; QEMU with KVM (nested VT-x) where /dev/kvm is usable on an
# Intel host, which also makes the wall times meaningful.
#
# Settings (environment):
#   BENCH_BACKENDS     backends, in order (default "shadowvm kvm-ept0 kvm-ept1")
#   BENCH_RUNS         runs per image and backend (default 5); the report shows the
#                      minimum, median and maximum
#   BENCH_IMAGES       benchmark images (default "bench-lm bench-pae bench-32"; the quick
#                      variants are bench-<mode>-quick; empty: none, only the Linux rows)
#   BENCH_LINUX        1: also the Linux guest's rows (boot, fork+exec, pipe, page faults,
#                      copy-on-write fork, many processes, THP), 0: not (default 1)
#   BENCH_LINUX_RUNS   boots of the Linux guest per backend (default 3)
#   BENCH_LINUX_ROWS   its rows: all, or some of fork_exec_exit,pipe_switch,mmap_fault,
#                      cow_fork,many_procs,thp_fault (the boot row is always there)
#   BENCH_EXIT_CYCLES  modelled cost of one VM exit round trip in cycles (default 1500)
#   BENCH_EXIT_CYCLES_SOURCE  where that figure comes from, stated in the report (default:
#                      the report's own text saying it is assumed, with its reference)
#   BENCH_UPDATE_DOC   1: also replace the results block of Documentation/benchmarks.md
#                      and its chart, Documentation/benchmarks-ratios.svg
#   BENCH_TIMEOUT      seconds for the whole boot (default 3600)
# Exits non-zero when the boot did not finish or no backend produced a result; a backend
# that fails or cannot run shows as "missing" in the report.
source "$(dirname "$0")/lib.sh"

BENCH_BACKENDS=${BENCH_BACKENDS:-shadowvm kvm-ept0 kvm-ept1}
BENCH_RUNS=${BENCH_RUNS:-5}
BENCH_IMAGES=${BENCH_IMAGES-bench-lm bench-pae bench-32}
BENCH_LINUX=${BENCH_LINUX:-1}
BENCH_LINUX_RUNS=${BENCH_LINUX_RUNS:-3}
BENCH_LINUX_ROWS=${BENCH_LINUX_ROWS:-all}
BENCH_EXIT_CYCLES=${BENCH_EXIT_CYCLES:-1500}
BENCH_EXIT_CYCLES_SOURCE=${BENCH_EXIT_CYCLES_SOURCE:-}
BENCH_UPDATE_DOC=${BENCH_UPDATE_DOC:-0}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-3600}
out=$SHADOWVM_OUT/bench
log=$out/serial.log
start=$(date +%s)
# What the images are built from (taken now: the tree may change during the long boot).
commit=$(git -C "$SHADOWVM_TOP" describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$out"

step "Building kernel, module, tests, launcher, guests and initramfs"
images=$("$SHADOWVM_TOP/scripts/build-all.sh") || die "build failed"
read -r bzimage initrd <<< "$images"

# The settings go in a second cpio archive appended to the initramfs (the kernel unpacks
# concatenated archives), so out/tests stays as make check uses it.
extra=$(mktemp -d "$SHADOWVM_OUT/bench-extra.XXXXXX")
trap 'rm -rf "$extra"' EXIT
mkdir -p "$extra/tests"
cat > "$extra/tests/bench.conf" <<CONF
BENCH_BACKENDS="$BENCH_BACKENDS"
BENCH_IMAGES="$BENCH_IMAGES"
BENCH_RUNS=$BENCH_RUNS
BENCH_LINUX=$BENCH_LINUX
BENCH_LINUX_RUNS=$BENCH_LINUX_RUNS
BENCH_LINUX_ROWS="$BENCH_LINUX_ROWS"
CONF
(cd "$extra" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$extra/extra.cpio.gz"
cat "$initrd" "$extra/extra.cpio.gz" > "$out/initramfs.cpio.gz"

platform=bochs
if [ -w /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then platform=qemu-kvm; fi
step "Booting ($platform): suite bench, backends: $BENCH_BACKENDS; $BENCH_RUNS run(s) each of ${BENCH_IMAGES:-no image}; Linux guest: $([ "$BENCH_LINUX" = 1 ] && echo "$BENCH_LINUX_RUNS boot(s), rows $BENCH_LINUX_ROWS" || echo off) (log: $log)"
boot_start=$(date +%s)
if [ $platform = bochs ]; then
	"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$out/initramfs.cpio.gz" bench "$log" "$BENCH_TIMEOUT"
else
	"$SHADOWVM_TOP/scripts/run-qemu.sh" "$bzimage" "$out/initramfs.cpio.gz" bench "$log" "$BENCH_TIMEOUT"
fi
boot_s=$(( $(date +%s) - boot_start ))
note "boot took $boot_s s"

step "Report: $out/results.md, results.json, ratios.svg"
doc=
[ "$BENCH_UPDATE_DOC" = 1 ] && doc=$SHADOWVM_TOP/Documentation/benchmarks.md
# Debian's interpreter: python3-matplotlib (make setup) is installed for it, not for a
# python3 that may come first in PATH.
/usr/bin/python3 "$SHADOWVM_TOP/scripts/bench-report.py" --log "$log" --out "$out" --platform "$platform" \
	--exit-cycles "$BENCH_EXIT_CYCLES" --exit-cycles-source "$BENCH_EXIT_CYCLES_SOURCE" \
	${doc:+--update-doc "$doc"} --boot-seconds "$boot_s" \
	--commit "$commit"
rc=$?
[ -n "$doc" ] && [ -f "$out/ratios.svg" ] && cp "$out/ratios.svg" "$SHADOWVM_TOP/Documentation/benchmarks-ratios.svg"
echo "make bench: $(( $(date +%s) - start )) s"
exit $rc
