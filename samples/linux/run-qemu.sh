#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the Linux guest under QEMU TCG, the reference run: QEMU's `pc` machine with one
# CPU, 256 MiB, COM1 on stdio, isa-debug-exit at 0xf4 and the guest kernel booted directly
# (-kernel/-initrd/-append: QEMU's own Linux loader). Passes when the serial log has one
# complete TAP stream with every test ok (skips allowed) and no "Bail out!", and QEMU ended
# with status 1: /init wrote 0 to the exit device (0 * 2 + 1).
#
# Writes to OUTDIR: linux.log (everything COM1 printed), linux.status (QEMU's exit
# status), linux.stderr (QEMU's own messages), linux.time (wall seconds and the guest's
# seconds at init and at the end).
#
# usage: run-qemu.sh [-o OUTDIR] [-t SECONDS] [-a WORDS] [-n] BZIMAGE INITRAMFS
#   -o OUTDIR   default: the directory of INITRAMFS
#   -t SECONDS  timeout (default 600)
#   -a WORDS    appended to the kernel command line (e.g. LINUXTEST_SCALE=2)
#   -n          print the QEMU command line, run nothing
# Environment: QEMU (default qemu-system-x86_64), QEMU_CPU (default max).
set -u

usage() { sed -n 's/^# \{0,1\}//; /^usage:/,/^Environment/p' "$0" >&2; exit 2; }
die() { echo "run-qemu.sh: $*" >&2; exit 2; }

out_dir="" timeout=600 extra="" dry_run=0
while getopts o:t:a:nh opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	t) timeout=$OPTARG ;;
	a) extra=$OPTARG ;;
	n) dry_run=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
kernel=$1 initrd=$2
[ -f "$kernel" ] || die "no kernel $kernel (make linux-guest builds it)"
[ -f "$initrd" ] || die "no initramfs $initrd (make linux-guest builds it)"
[[ $timeout =~ ^[0-9]+$ ]] || die "timeout '$timeout' is not a number of seconds"
out_dir=${out_dir:-$(dirname "$initrd")}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_CPU=${QEMU_CPU:-max}

# The guest's command line, the same on every platform. pti=on: a CPU that reports itself
# not affected by Meltdown (QEMU's TCG `max` model says it is AMD) would get no KPTI by
# default. panic=-1 oops=panic: a kernel failure ends the run at once (a reset, status 0
# here) instead of hanging until the timeout.
append="console=ttyS0 earlyprintk=serial,ttyS0,115200 pti=on panic=-1 oops=panic${extra:+ $extra}"
ARGS=("$QEMU" -nodefaults -machine pc -cpu "$QEMU_CPU" -m 256 -smp 1 -display none
	-no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
	-kernel "$kernel" -initrd "$initrd" -append "$append")
if ((dry_run)); then
	printf '%q ' timeout "$timeout" "${ARGS[@]}"
	echo
	exit 0
fi

mkdir -p "$out_dir" || die "cannot create $out_dir"
log=$out_dir/linux.log
start=$(date +%s.%N)
timeout "$timeout" "${ARGS[@]}" </dev/null 2>"$out_dir/linux.stderr" | tr -d '\r' >"$log"
status=${PIPESTATUS[0]}
wall=$(awk "BEGIN { print $(date +%s.%N) - $start }")
echo "$status" >"$out_dir/linux.status"

# why: prints why the run failed, or nothing.
why() {
	local plan results notok
	[ "$status" = 124 ] && { echo "timed out after $timeout s"; return; }
	grep -q '^Bail out!' "$log" && { grep -m1 '^Bail out!' "$log"; return; }
	grep -qE 'Kernel panic|Oops' "$log" && { echo "kernel failure: $(grep -m1 -E 'Kernel panic|Oops' "$log")"; return; }
	[ "$(grep -c '^TAP version 13$' "$log")" = 1 ] || { echo "not one TAP header (no init, or a reboot)"; return; }
	plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$log" | head -n 1)
	[ -n "$plan" ] || { echo "no TAP plan"; return; }
	results=$(grep -cE '^(not )?ok [0-9]+ - ' "$log")
	notok=$(grep -cE '^not ok [0-9]+' "$log")
	[ "$notok" = 0 ] || { echo "$notok of $plan tests failed: $(grep '^not ok' "$log" | tr '\n' ';')"; return; }
	[ "$results" = "$plan" ] || { echo "plan 1..$plan but $results results"; return; }
	[ "$status" = 1 ] || echo "QEMU exit status $status, expected 1 (the exit device with 0)"
}
reason=$(why)
at_init=$(sed -n 's/^# Linux .* reached init at \([0-9.]*\) s.*/\1/p' "$log")
at_end=$(sed -n 's/.*; done at \([0-9.]*\) s (guest clock)$/\1/p' "$log")
printf 'wall %.1f s, guest at init %s s, guest at end %s s\n' "$wall" "${at_init:-?}" "${at_end:-?}" |
	tee "$out_dir/linux.time"
if [ -z "$reason" ]; then
	echo "PASS  linux-qemu: $(grep -cE '^ok [0-9]+ - ' "$log") tests ($(grep -cE '^ok [0-9]+ - .*# SKIP' "$log") skipped), QEMU status $status (log: $log)"
else
	echo "FAIL  linux-qemu: $reason (log: $log)"
	exit 1
fi
