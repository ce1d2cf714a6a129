#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Run the guest images under QEMU TCG, the correctness oracle: it executes them as the
# hardware would.  Every functional guest (pt-*.elf, and mmio-*.elf with the pc-testdev
# device, whose MMIO window they use) must print a complete, all-ok TAP stream and exit
# with status 0 through the isa-debug-exit port (QEMU's own exit status is then 1).  The quick benchmark images (bench-*-quick.elf) must print well-formed BENCH
# lines and exit 0.
#
# usage: run-qemu.sh [build-dir]        (QEMU=..., TIMEOUT=seconds may be set)
set -u

dir=$(cd "$(dirname "$0")" && pwd)
O=${1:-$dir/build}
QEMU=${QEMU:-qemu-system-x86_64}
TIMEOUT=${TIMEOUT:-60}
log_dir=$O/qemu-logs
mkdir -p "$log_dir"

pass=0
fail=0
summary=""

note() { summary="$summary$1
"; }

check_tap() {
	img=$1 log=$2 status=$3
	plan=$(grep -Eo '(^|[^0-9])1\.\.[0-9]+$' "$log" | head -n1 | sed 's/.*1\.\.//')
	oks=$(grep -Ec '^ok [0-9]+ - ' "$log")
	notoks=$(grep -Ec '^not ok [0-9]+ - ' "$log")
	skips=$(grep -Ec '^ok [0-9]+ - .*# SKIP' "$log")
	why=""
	[ -n "$plan" ] || why="no TAP plan"
	[ -z "$why" ] && [ "$notoks" -ne 0 ] && why="$notoks test(s) failed"
	[ -z "$why" ] && [ "$oks" -ne "$plan" ] && why="plan 1..$plan but $oks results"
	grep -q '^Bail out!' "$log" && why="bailed out: $(grep '^Bail out!' "$log" | head -n1)"
	[ -z "$why" ] && [ "$status" -ne 1 ] && why="QEMU exit status $status (guest exit code $(( (status - 1) / 2 )) ), expected 1"
	if [ -z "$why" ]; then
		pass=$((pass + 1))
		note "PASS  $(basename "$img"): $oks tests ($skips skipped)"
	else
		fail=$((fail + 1))
		note "FAIL  $(basename "$img"): $why (log: $log)"
		grep -E -A3 '^not ok' "$log" | sed 's/^/      /'
	fi
}

check_bench() {
	img=$1 log=$2 status=$3
	lines=$(grep -c '^BENCH ' "$log")
	bad=$(grep '^BENCH ' "$log" |
	      grep -Evc '^BENCH [a-z0-9_]+ [a-z0-9_]+=[0-9]+ cycles=[0-9]+ iterations=[0-9]+ mark=[0-9]+$')
	why=""
	[ "$lines" -gt 0 ] || why="no BENCH lines"
	[ -z "$why" ] && [ "$bad" -ne 0 ] && why="$bad malformed BENCH line(s)"
	[ -z "$why" ] && [ "$status" -ne 1 ] && why="QEMU exit status $status, expected 1"
	if [ -z "$why" ]; then
		pass=$((pass + 1))
		note "PASS  $(basename "$img"): $lines measurements"
	else
		fail=$((fail + 1))
		note "FAIL  $(basename "$img"): $why (log: $log)"
	fi
}

found=0
for img in "$O"/pt-*.elf "$O"/mmio-*.elf "$O"/bench-*-quick.elf; do
	[ -e "$img" ] || continue
	found=$((found + 1))
	log=$log_dir/$(basename "$img" .elf).log
	status_file=$log.status
	devices=""
	case $(basename "$img") in mmio-*) devices="-device pc-testdev" ;; esac
	# shellcheck disable=SC2086 # $devices: zero or two words
	{ timeout "$TIMEOUT" "$QEMU" -cpu max -m 64 -nographic -no-reboot -kernel "$img" \
		-device isa-debug-exit,iobase=0xf4,iosize=4 $devices </dev/null 2>&1; echo $? >"$status_file"; } |
		tr -d '\r' >"$log"
	status=$(cat "$status_file")
	[ "$status" -eq 124 ] && echo "$(basename "$img"): timed out after ${TIMEOUT}s" >>"$log"
	case $(basename "$img") in
	pt-* | mmio-*) check_tap "$img" "$log" "$status" ;;
	*) check_bench "$img" "$log" "$status" ;;
	esac
done

[ "$found" -gt 0 ] || { echo "run-qemu.sh: no guest images in $O (run make first)" >&2; exit 2; }
printf '%s' "$summary"
echo "qemu-test: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
