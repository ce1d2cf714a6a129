#!/usr/bin/env bash
# Boots the test kernel in QEMU and runs the named in-guest suites; the serial log is the
# result. Uses KVM with nested VMX when /dev/kvm exists on an Intel host (then the VMX
# suites can run here too); otherwise TCG, which has no VMX.
# Usage: run-qemu.sh <bzImage> <initrd> <suites,comma,separated> <serial log> [timeout s]
# SHADOWVM_BOOT_MEGS: the machine's memory in MiB (default 512; make bench raises it for its
# scale rows). SHADOWVM_BOOT_BAUD: the serial console's speed (default: the kernel's).
source "$(dirname "$0")/lib.sh"

kernel=$1 initrd=$2 suites=$3 log=$4 timeout=${5:-300}
accel=(-accel tcg -cpu max)
if [ -w /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then
	accel=(-accel kvm -cpu host,+vmx)
fi
timeout --foreground "$timeout" qemu-system-x86_64 "${accel[@]}" -m "${SHADOWVM_BOOT_MEGS:-512}" -smp 2 \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0${SHADOWVM_BOOT_BAUD:+,$SHADOWVM_BOOT_BAUD} quiet panic=-1 oops=panic shadowvm.suites=$suites" \
	-nographic -no-reboot -serial "file:$log" -monitor none </dev/null >"$log.qemu" 2>&1 || true
