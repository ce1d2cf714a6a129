#!/usr/bin/env bash
# Builds the Linux guest: the kernel from kernel-config/guest.config (cached like the test
# kernel) copied to out/linux/bzImage, and its initramfs out/linux/initramfs.cpio.
# Usage: build-linux-guest.sh   (prints the two paths)
source "$(dirname "$0")/lib.sh"

kbuild=$("$SHADOWVM_TOP/scripts/build-kernel.sh" "$SHADOWVM_TOP/kernel-config/guest.config")
mkdir -p "$SHADOWVM_OUT/linux"
cp "$kbuild/arch/x86/boot/bzImage" "$SHADOWVM_OUT/linux/bzImage"
echo "$SHADOWVM_OUT/linux/bzImage"
"$SHADOWVM_TOP/scripts/build-linux-initramfs.sh"
