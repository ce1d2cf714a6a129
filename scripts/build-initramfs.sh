#!/usr/bin/env bash
# Packs the test initramfs: busybox, /init, the module, kvm modules for the comparison
# tests, selftests, the launcher, guest images, Multiboot test kernels and the Linux guest
# (when built).
# Usage: build-initramfs.sh <kernel build dir> <shadowvm.ko> <output.cpio>
# Not compressed: in Bochs, inflating it took the kernel ~200M instructions (a second of
# guest time) per boot, more than reading the larger image from the boot CD.
source "$(dirname "$0")/lib.sh"

kbuild=$1 ko=$2 out=$3
root=$(mktemp -d "$SHADOWVM_OUT/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
# mktemp makes it 0700, and it becomes the guest's /: other users could not reach /dev.
chmod 0755 "$root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/modules,tests,guests,multiboot}
cp /bin/busybox "$root/bin/busybox"
file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not static: install busybox-static"
install -m 0755 "$SHADOWVM_TOP/scripts/initramfs/init" "$root/init"
cp "$ko" "$root/lib/modules/shadowvm.ko"
for m in virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-intel.ko; do
	[ -f "$kbuild/$m" ] && cp "$kbuild/$m" "$root/lib/modules/"
done
cp -r "$SHADOWVM_OUT/tests/." "$root/tests/"
[ -d "$SHADOWVM_OUT/guests" ] && cp -r "$SHADOWVM_OUT/guests/." "$root/guests/"
# The kernels, their modules and kernels.list; not the objects.
[ -d "$SHADOWVM_OUT/multiboot" ] && find "$SHADOWVM_OUT/multiboot" -maxdepth 1 -type f -exec cp {} "$root/multiboot/" \;
# QEMU's outputs, the reference of the platform suite.
[ -d "$SHADOWVM_OUT/multiboot/qemu-ref" ] && mkdir -p "$root/multiboot/qemu-ref" &&
	cp "$SHADOWVM_OUT/multiboot/qemu-ref/"*.out "$SHADOWVM_OUT/multiboot/qemu-ref/"*.status "$root/multiboot/qemu-ref/"
[ -x "$SHADOWVM_OUT/bin/shadowvm-run" ] && cp "$SHADOWVM_OUT/bin/shadowvm-run" "$root/bin/"
# The Linux guest (scripts/build-linux-guest.sh) for the linux suite, when built: its
# kernel (~2 MB) and initramfs (~3 MB).
if [ -f "$SHADOWVM_OUT/linux/bzImage" ] && [ -f "$SHADOWVM_OUT/linux/initramfs.cpio" ]; then
	mkdir -p "$root/linux"
	cp "$SHADOWVM_OUT/linux/bzImage" "$SHADOWVM_OUT/linux/initramfs.cpio" "$root/linux/"
fi
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$out"
