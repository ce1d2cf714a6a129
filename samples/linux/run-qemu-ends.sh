#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The reference for how the Linux guest ends when it does not use the exit device: boots it
# under QEMU TCG (samples/linux/run-qemu.sh) three times with no test program and
# LINUXTEST_END=poweroff, reboot and panic, and checks what the guest printed and how QEMU
# (-no-reboot) ended:
#
#   poweroff  "reboot: Power off not available: System halted instead" (the kernel has no
#             ACPI, so it halts the CPU with interrupts off); QEMU keeps the halted machine
#             until the timeout (status 124 from timeout(1)).
#   reboot    "reboot: Restarting system", no panic; QEMU exits 0 on the reset.
#   panic     "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"
#             (init exited with status 3); with panic=-1 the kernel resets at once: QEMU
#             exits 0.
#
# shadowvm-run tells the three apart (Documentation/linux-guest.md, "How a run ends").
#
# usage: run-qemu-ends.sh [-o OUTDIR] [-t SECONDS] BZIMAGE INITRAMFS
#   -o OUTDIR   default: the directory of INITRAMFS; each run in OUTDIR/end-NAME
#   -t SECONDS  timeout of one run (default 30; the poweroff run always takes all of it)
set -u

usage() { sed -n 's/^# \{0,1\}//; /^usage:/,/^$/p' "$0" >&2; exit 2; }
die() { echo "run-qemu-ends.sh: $*" >&2; exit 2; }

out_dir="" timeout=30
while getopts o:t:h opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	t) timeout=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
kernel=$1 initrd=$2
out_dir=${out_dir:-$(dirname "$initrd")}
here=$(dirname "$0")

failed=0
for end in poweroff reboot panic; do
	dir=$out_dir/end-$end
	# run-qemu.sh's own verdict expects the exit device; this script judges instead.
	"$here/run-qemu.sh" -o "$dir" -t "$timeout" -a "LINUXTEST_PROGRAMS=none LINUXTEST_END=$end" \
		"$kernel" "$initrd" >/dev/null
	[ -f "$dir/linux.status" ] || die "run-qemu.sh did not run (see its message above)"
	status=$(cat "$dir/linux.status") log=$dir/linux.log
	case $end in
	poweroff) want_status=124 want='reboot: Power off not available: System halted instead' ;;
	reboot) want_status=0 want='reboot: Restarting system' ;;
	panic) want_status=0 want='Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300' ;;
	esac
	reason=""
	grep -qF "$want" "$log" || reason="no \"$want\" on the console"
	if [ -z "$reason" ] && [ "$end" != panic ] && grep -q 'Kernel panic' "$log"; then
		reason="the kernel panicked: $(grep -m1 'Kernel panic' "$log")"
	fi
	[ -n "$reason" ] || [ "$status" = "$want_status" ] || reason="QEMU status $status, expected $want_status"
	if [ -z "$reason" ]; then
		echo "PASS  linux-qemu-end-$end: \"$want\", QEMU status $status (log: $log)"
	else
		echo "FAIL  linux-qemu-end-$end: $reason (log: $log)"
		failed=1
	fi
done
exit $failed
