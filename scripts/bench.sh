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
#                      and its charts, Documentation/benchmarks-{ratios,scale}.svg
#   BENCH_TIMEOUT      seconds for the whole boot (default 3600)
#   BENCH_SCALE        1: also the scale rows (default); only: the scale rows alone
#                      (BENCH_IMAGES ignored); 0: none
#   BENCH_SCALE_MEMS   guest memory sizes of the scale rows, MiB (default
#                      "64 128 256 512 1024"); the Bochs machine gets the largest + 512 MiB
#   BENCH_SCALE_SPACES address-space counts of each scale run (default "1,2,4,8,16,32,64";
#                      powers of two up to 64)
#   BENCH_SCALE_RUNS   runs per backend and memory size (default 1: in Bochs three runs'
#                      cycles per fault were within 0.5 %, 2 % on kvm-ept1's 200-cycle
#                      faults, and a run with 1 GiB takes 8-15 s of emulated time)
# Exits non-zero when the boot did not finish or no backend produced a result; a backend
# that fails or cannot run shows as "missing" in the report.
source "$(dirname "$0")/lib.sh"

# The scale rows' settings: checked, BENCH_IMAGES emptied for BENCH_SCALE=only, and the
# Bochs machine's memory raised for the largest scale guest (the booted kernel, its
# initramfs and the launcher need about 512 MiB beside it; Bochs takes at most 2048).
bench_scale_settings() {
	case $BENCH_SCALE in
	0) BENCH_SCALE_MEMS= ;;
	1) ;;
	only) BENCH_IMAGES= ;;
	*) die "BENCH_SCALE=$BENCH_SCALE: use 1 (with the other rows), only or 0" ;;
	esac
	local m top=0
	for m in $BENCH_SCALE_MEMS; do
		[[ $m =~ ^[0-9]+$ ]] && ((m >= 64)) || die "BENCH_SCALE_MEMS: '$m' is not a size in MiB of at least 64"
		((m > top)) && top=$m
	done
	[[ $BENCH_SCALE_SPACES =~ ^[0-9]+(,[0-9]+)*$ ]] ||
		die "BENCH_SCALE_SPACES: '$BENCH_SCALE_SPACES' is not a comma-separated list (e.g. 1,2,4)"
	for m in ${BENCH_SCALE_SPACES//,/ }; do
		case $m in 1 | 2 | 4 | 8 | 16 | 32 | 64) ;; *) die "BENCH_SCALE_SPACES: $m is not a power of two up to 64" ;; esac
	done
	if ((top + 512 > ${SHADOWVM_BOOT_MEGS:-512})); then
		((top + 512 <= 2048)) || die "BENCH_SCALE_MEMS: $top MiB is too much for Bochs (at most 1536)"
		export SHADOWVM_BOOT_MEGS=$((top + 512))
	fi
}

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
BENCH_SCALE=${BENCH_SCALE:-1}
# The serial console at 115200 baud, not the kernel's 9600: Bochs emulates the line's speed.
# With only the scale rows the suite took 87.7 s of emulated time instead of 151.6 s (the
# whole command's CPU time 152 s instead of 161 s: Bochs skips ahead while the CPU idles).
export SHADOWVM_BOOT_BAUD=${SHADOWVM_BOOT_BAUD:-115200}
BENCH_SCALE_MEMS=${BENCH_SCALE_MEMS:-64 128 256 512 1024}
BENCH_SCALE_SPACES=${BENCH_SCALE_SPACES:-1,2,4,8,16,32,64}
BENCH_SCALE_RUNS=${BENCH_SCALE_RUNS:-1}
out=$SHADOWVM_OUT/bench
log=$out/serial.log
start=$(date +%s)
# What the images are built from (taken now: the tree may change during the long boot).
commit=$(git -C "$SHADOWVM_TOP" describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$out"
bench_scale_settings

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
BENCH_SCALE_MEMS="$BENCH_SCALE_MEMS"
BENCH_SCALE_SPACES="$BENCH_SCALE_SPACES"
BENCH_SCALE_RUNS=$BENCH_SCALE_RUNS
CONF
(cd "$extra" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$extra/extra.cpio.gz"
cat "$initrd" "$extra/extra.cpio.gz" > "$out/initramfs.cpio.gz"

platform=bochs
if [ -w /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then platform=qemu-kvm; fi
step "Booting ($platform): suite bench, backends: $BENCH_BACKENDS; images: ${BENCH_IMAGES:-none}, $BENCH_RUNS run(s) each; Linux guest: $([ "$BENCH_LINUX" = 1 ] && echo "$BENCH_LINUX_RUNS boot(s), rows $BENCH_LINUX_ROWS" || echo off); scale: ${BENCH_SCALE_MEMS:-none} MiB, $BENCH_SCALE_RUNS run(s) each (machine: ${SHADOWVM_BOOT_MEGS:-512} MiB; log: $log)"
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
[ -n "$doc" ] && [ -f "$out/scale.svg" ] && cp "$out/scale.svg" "$SHADOWVM_TOP/Documentation/benchmarks-scale.svg"
echo "make bench: $(( $(date +%s) - start )) s"
exit $rc
