#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the Linux guest under QEMU TCG from what the launcher's Linux loader
# (samples/launcher/src/linux.rs) put in guest memory, instead of QEMU's own loader: the
# launcher's unit test dump_loaded_guest_for_qemu writes the regions load() filled (the
# kernel, the initrd, the low region with the GDT, page tables, zero page and command
# line), and enter64 (samples/linux/enter64.S, a Multiboot kernel) copies them to their
# addresses and enters the kernel's 64-bit entry with the loader's GDT and page tables.
# Checks the run like run-qemu.sh: every test passes, QEMU status 1.
#
# usage: run-loader-qemu.sh [-o OUTDIR] BZIMAGE INITRAMFS
#   -o OUTDIR   default: the directory of INITRAMFS, subdirectory loader-qemu
# Environment: QEMU (default qemu-system-x86_64), QEMU_CPU (default max).
set -u

usage() { sed -n 's/^# \{0,1\}//; /^usage:/,/^Environment/p' "$0" >&2; exit 2; }
die() { echo "run-loader-qemu.sh: $*" >&2; exit 2; }

out_dir=""
while getopts o:h opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
kernel=$(realpath "$1") initrd=$(realpath "$2") || die "no such files"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out_dir=${out_dir:-$(dirname "$initrd")/loader-qemu}
mkdir -p "$out_dir" || die "cannot create $out_dir"
out_dir=$(realpath "$out_dir")
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_CPU=${QEMU_CPU:-max}
append="console=ttyS0 earlyprintk=serial,ttyS0,115200 pti=on panic=-1 oops=panic"

make -s -C "$here" O="$out_dir" "$out_dir/enter64" || die "cannot build enter64"
(cd "$top" && SHADOWVM_LINUX_DUMP=$out_dir/regions.d SHADOWVM_LINUX_BZIMAGE=$kernel \
	SHADOWVM_LINUX_INITRD=$initrd SHADOWVM_LINUX_CMDLINE=$append \
	cargo test -q --release -p shadowvm-launcher dump_loaded_guest_for_qemu -- --ignored \
	>"$out_dir/dump.log" 2>&1) || { tail -20 "$out_dir/dump.log"; die "the loader's dump failed"; }

modules=""
while read -r name addr; do
	modules+="${modules:+,}$out_dir/regions.d/$name.bin $addr"
done <"$out_dir/regions.d/regions"
log=$out_dir/linux.log
start=$(date +%s.%N)
timeout 600 "$QEMU" -nodefaults -machine pc -cpu "$QEMU_CPU" -m 256 -smp 1 -display none \
	-no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4 \
	-kernel "$out_dir/enter64" -initrd "$modules" </dev/null 2>"$out_dir/linux.stderr" |
	tr -d '\r' >"$log"
status=${PIPESTATUS[0]}
wall=$(awk "BEGIN { print $(date +%s.%N) - $start }")
echo "$status" >"$out_dir/linux.status"
plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$log" | head -n 1)
oks=$(grep -cE '^ok [0-9]+ - ' "$log")
if [ -n "$plan" ] && [ "$oks" = "$plan" ] && ! grep -qE '^not ok|^Bail out!|Kernel panic' "$log" &&
	[ "$status" = 1 ] && grep -q "^\[ *[0-9.]*\] Command line: $append\$" "$log"; then
	echo "PASS  linux-loader-qemu: booted from the launcher's loader, $oks tests ok, QEMU status 1, $wall s (log: $log)"
else
	echo "FAIL  linux-loader-qemu: plan ${plan:-none}, $oks ok, QEMU status $status (log: $log)"
	exit 1
fi
