#!/usr/bin/env bash
# Builds everything a boot needs: kernel (cached), module, selftests, launcher, guest images,
# Multiboot test kernels, the Linux guest, and the initramfs. Prints "<bzImage> <initramfs>" on stdout.
source "$(dirname "$0")/lib.sh"

kbuild=$("$SHADOWVM_TOP/scripts/build-kernel.sh")
ko=$(KDIR=$kbuild "$SHADOWVM_TOP/scripts/build-module.sh")
step "Building selftests"
logged "$SHADOWVM_OUT/logs/selftests-build.log" make -C "$SHADOWVM_TOP/selftests" O="$SHADOWVM_OUT/tests"
if [ -f "$SHADOWVM_TOP/samples/launcher/Cargo.toml" ]; then
	step "Building the launcher (static)"
	# A target directory of its own: make check's host tests hold target/'s lock while they
	# build (over a minute), and the boots wait for this build.
	logged "$SHADOWVM_OUT/logs/launcher-build.log" cargo build --release --quiet -p shadowvm-launcher \
		--manifest-path "$SHADOWVM_TOP/Cargo.toml" --target-dir "$SHADOWVM_OUT/target"
	mkdir -p "$SHADOWVM_OUT/bin"
	cp "$SHADOWVM_OUT/target/release/shadowvm-run" "$SHADOWVM_OUT/bin/"
fi
if [ -f "$SHADOWVM_TOP/samples/guests/Makefile" ]; then
	step "Building guest images"
	logged "$SHADOWVM_OUT/logs/guests-build.log" make -C "$SHADOWVM_TOP/samples/guests" O="$SHADOWVM_OUT/guests"
fi
if [ -f "$SHADOWVM_TOP/samples/multiboot/Makefile" ]; then
	step "Building Multiboot test kernels"
	logged "$SHADOWVM_OUT/logs/multiboot-build.log" make -C "$SHADOWVM_TOP/samples/multiboot" O="$SHADOWVM_OUT/multiboot"
	# QEMU's outputs are the platform suite's reference in Bochs, so they go into the
	# initramfs; make check's multiboot-qemu job reports this run (a few seconds).
	step "Running the Multiboot test kernels under QEMU TCG (the reference outputs)"
	rm -rf "$SHADOWVM_OUT/multiboot/qemu-ref"
	"$SHADOWVM_TOP/samples/multiboot/run-qemu.sh" -o "$SHADOWVM_OUT/multiboot/qemu-ref" "$SHADOWVM_OUT/multiboot" \
		> "$SHADOWVM_OUT/logs/multiboot-qemu-run.log" 2>&1 || true
fi
if [ -x "$SHADOWVM_TOP/scripts/build-linux-guest.sh" ]; then
	step "Building the Linux guest (its kernel is cached: about 10 min the first time)"
	logged "$SHADOWVM_OUT/logs/linux-guest-build.log" "$SHADOWVM_TOP/scripts/build-linux-guest.sh"
fi
step "Packing the initramfs"
"$SHADOWVM_TOP/scripts/build-initramfs.sh" "$kbuild" "$ko" "$SHADOWVM_OUT/initramfs.cpio"
echo "$kbuild/arch/x86/boot/bzImage $SHADOWVM_OUT/initramfs.cpio"
