# shadowvm: top-level entry points.
#   make            build shadowvm.ko (against KDIR, or the cached test kernel built on demand)
#   make check      everything: host tests, QEMU tier, Bochs (VMX) tiers; one summary line
#   make check-quick  the development loop: host tests, build, one Bochs boot (module, api, guests)
#   make lint       clippy on the host crates (fails on a panicking form in rust/mmu or
#                   rust/emulate), rustfmt --check on the host crates and the kernel crate
#   make demo       boot Bochs, load the module, show what it found, run a guest on it
#   make demo-linux boot Bochs and the unmodified Linux guest on shadowvm, with its statistics
#   make bench      benchmark guests under shadowvm, KVM ept=0 and ept=1: out/bench/results.md
#   make setup      install host packages and tools only
#   make linux-guest       build the Linux guest (kernel-config/guest.config, samples/linux)
#   make linux-guest-qemu  build it and boot it under QEMU TCG (samples/linux/run-qemu.sh)
#   make linux-guest-loader-qemu  boot it under QEMU from what the launcher's Linux loader
#                          wrote (samples/linux/run-loader-qemu.sh)
#   make linux-guest-ends-qemu  how the guest powers off, reboots and panics under QEMU, the
#                          reference for the launcher's outcomes (samples/linux/run-qemu-ends.sh)
#   make linux-bench-qemu  the Linux guest's benchmark rows (LINUXTEST_BENCH=all) under QEMU
#                          TCG, where the benchmark marks do nothing: the rows' own checks
# KDIR=/path/to/linux-7.2/build builds against your own kernel; logs go to out/.
# (Kbuild reads the file named Kbuild, so this Makefile only drives the scripts.)

SHELL := /bin/bash
S := scripts

.PHONY: all module setup kernel check check-quick lint demo demo-linux bench clean linux-guest linux-guest-qemu linux-guest-loader-qemu linux-guest-ends-qemu linux-bench-qemu
all: module

setup:
	@$(S)/setup-host.sh

kernel: setup
	@$(S)/build-kernel.sh >/dev/null

module: $(if $(KDIR),,setup)
	@$(S)/build-module.sh

check:
	@$(S)/check.sh

check-quick:
	@$(S)/check.sh --quick

lint:
	@$(S)/lint.sh

demo:
	@$(S)/demo.sh

demo-linux:
	@$(S)/demo.sh demo-linux

bench: setup
	@$(S)/bench.sh

linux-guest: setup
	@$(S)/build-linux-guest.sh >/dev/null

linux-guest-qemu: linux-guest
	@samples/linux/run-qemu.sh out/linux/bzImage out/linux/initramfs.cpio

linux-guest-loader-qemu: linux-guest
	@samples/linux/run-loader-qemu.sh out/linux/bzImage out/linux/initramfs.cpio

linux-guest-ends-qemu: linux-guest
	@samples/linux/run-qemu-ends.sh out/linux/bzImage out/linux/initramfs.cpio

linux-bench-qemu: linux-guest
	@samples/linux/run-qemu.sh -a "quiet LINUXTEST_BENCH=all" out/linux/bzImage out/linux/initramfs.cpio

clean:
	rm -rf out target samples/guests/build samples/multiboot/build samples/linux/build
