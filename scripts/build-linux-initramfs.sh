#!/usr/bin/env bash
# Builds the Linux guest's test programs (samples/linux) and packs its initramfs: static
# busybox, samples/linux/init as /init, linuxtest (with one link per test and one for the
# benchmark, lbench), exit-device and bench-mark.
# Usage: build-linux-initramfs.sh [output.cpio]   (default: out/linux/initramfs.cpio)
# Not compressed, like the test initramfs (build-initramfs.sh says why).
source "$(dirname "$0")/lib.sh"

build=$SHADOWVM_OUT/linux
out=${1:-$build/initramfs.cpio}
file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not static: install busybox-static"
logged "$build/make.log" make -C "$SHADOWVM_TOP/samples/linux" O="$build"

root=$(mktemp -d "$SHADOWVM_OUT/linux-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$SHADOWVM_TOP/samples/linux/init" "$root/init"
install -m 0755 "$build/linuxtest" "$build/exit-device" "$build/bench-mark" "$root/bin/"
# The test programs and the benchmark (lbench), one link each.
for t in $(sed -n 's/^PROGRAMS="\(.*\)"$/\1/p' "$SHADOWVM_TOP/samples/linux/init") lbench; do
	ln -s linuxtest "$root/bin/$t"
done
# Nothing else needs to exist: the kernel's default initramfs has /dev/console and /root.
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
