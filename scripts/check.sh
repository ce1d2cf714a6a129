#!/usr/bin/env bash
# make check: every test of every tier, then one summary line "N passed, N failed, N skipped".
#   1. host:  cargo test (MMU engine against its reference model, uapi layout, launcher),
#             cargo clippy (the MMU engine denies panicking forms: rust/mmu/mod.rs)
#   2. qemu:  TCG boot, no VMX: the module refuses to load cleanly
#   3. bochs: one boot with VMX: the whole in-guest suite
#   4. bochs-debug: the hardening suites (hostile guests, ioctl fuzzer, lifecycle, leak
#      check) on the debug kernel (kernel-config/debug.config) in a 2-CPU Bochs
# Exits non-zero if anything failed or a tier did not run. Logs: out/ (paths printed).
source "$(dirname "$0")/lib.sh"
set +e

LOGS=$SHADOWVM_OUT/logs
COUNTS=$SHADOWVM_OUT/counts
mkdir -p "$LOGS"
: > "$COUNTS"
start=$(date +%s)
# A tier that could not run counts as one failure of its own.
tier_broken() { echo "$1 0 1 0" >> "$COUNTS"; echo "  FAIL $1: $2" >&2; }

QEMU_SUITES=noload
BOCHS_SUITES=module,api,guests,bench-check
DEBUG_SUITES=hostile,fuzz,lifecycle,reload,leakcheck
DEBUG_CPUS=2
# Backends of the short benchmark comparison (suite bench-check).
BENCH_CHECK_BACKENDS="shadowvm kvm-ept0 kvm-ept1"

step "[1/6] Host setup (packages, bindgen)"
"$SHADOWVM_TOP/scripts/setup-host.sh" || { tier_broken setup "host setup failed"; }

step "[2/6] Host tests: cargo test --workspace (log: $LOGS/cargo-test.log)"
(cd "$SHADOWVM_TOP" && cargo test --workspace --release 2>&1) > "$LOGS/cargo-test.log"
cargo_rc=$?
read -r p f i < <(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p+0, f+0, i+0 }' "$LOGS/cargo-test.log")
if [ "$cargo_rc" != 0 ] && [ "$f" = 0 ]; then
	tier_broken host "cargo test failed to build or run (see $LOGS/cargo-test.log)"
	tail -n 20 "$LOGS/cargo-test.log" >&2
else
	grep -E '^test .* FAILED$' "$LOGS/cargo-test.log" | sed 's/^/  FAIL host: /'
	echo "host $p $f $i" >> "$COUNTS"
	note "host: $p passed, $f failed, $i ignored"
fi
# The lint entry point (also `make lint`): the engine's deny list makes a panicking form an
# error, so this fails on a new one.
if cargo clippy --version >/dev/null 2>&1; then
	if (cd "$SHADOWVM_TOP" && cargo clippy --workspace --release 2>&1) > "$LOGS/clippy.log"; then
		echo "lint 1 0 0" >> "$COUNTS"
	else
		echo "lint 0 1 0" >> "$COUNTS"
		echo "  FAIL lint: cargo clippy --workspace --release (see $LOGS/clippy.log)" >&2
		grep -E -A8 '^error' "$LOGS/clippy.log" | head -n 40 >&2
	fi
else
	echo "lint 0 0 1" >> "$COUNTS"
	note "lint: skipped (cargo clippy is not installed)"
fi

step "[3/6] Building kernel, module, tests and initramfs"
mkdir -p "$SHADOWVM_OUT/tests"
echo "BENCH_CHECK_BACKENDS=\"$BENCH_CHECK_BACKENDS\"" > "$SHADOWVM_OUT/tests/bench-check.conf"
if images=$("$SHADOWVM_TOP/scripts/build-all.sh"); then
	read -r bzimage initrd <<< "$images"

	step "[4/6] QEMU tier (TCG, no VMX): suites $QEMU_SUITES"
	"$SHADOWVM_TOP/scripts/run-qemu.sh" "$bzimage" "$initrd" "$QEMU_SUITES" "$LOGS/qemu-serial.log" 300
	python3 "$SHADOWVM_TOP/scripts/tap-summary.py" qemu "$LOGS/qemu-serial.log" "$QEMU_SUITES" "$COUNTS"

	step "[5/6] Bochs tier (emulated VMX, a few minutes): suites $BOCHS_SUITES"
	"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$initrd" "$BOCHS_SUITES" "$LOGS/bochs-serial.log" 2400
	python3 "$SHADOWVM_TOP/scripts/tap-summary.py" bochs "$LOGS/bochs-serial.log" "$BOCHS_SUITES" "$COUNTS"

	# The debug kernel and its own module build go to out/debug; selftests, launcher and
	# guests are the ones built above.
	step "[6/6] Bochs debug tier (lockdep, KMEMLEAK, SLUB/page-alloc debugging; $DEBUG_CPUS CPUs): suites $DEBUG_SUITES"
	dbg=$SHADOWVM_OUT/debug
	t0=$(date +%s)
	if kdbg=$("$SHADOWVM_TOP/scripts/build-kernel.sh" "$SHADOWVM_TOP/kernel-config/test.config" "$SHADOWVM_TOP/kernel-config/debug.config") &&
		mkdir -p "$dbg" && rm -rf "$dbg/tests" "$dbg/guests" "$dbg/bin" &&
		cp -r "$SHADOWVM_OUT/tests" "$SHADOWVM_OUT/guests" "$SHADOWVM_OUT/bin" "$dbg/" &&
		kodbg=$(SHADOWVM_OUT=$dbg KDIR=$kdbg "$SHADOWVM_TOP/scripts/build-module.sh") &&
		SHADOWVM_OUT=$dbg "$SHADOWVM_TOP/scripts/build-initramfs.sh" "$kdbg" "$kodbg" "$dbg/initramfs.cpio.gz"; then
		note "debug kernel and module ready in $(( $(date +%s) - t0 )) s"
		t0=$(date +%s)
		"$SHADOWVM_TOP/scripts/run-bochs.sh" "$kdbg/arch/x86/boot/bzImage" "$dbg/initramfs.cpio.gz" "$DEBUG_SUITES" \
			"$LOGS/bochs-debug-serial.log" 1200 "$DEBUG_CPUS"
		note "debug boot took $(( $(date +%s) - t0 )) s"
		python3 "$SHADOWVM_TOP/scripts/tap-summary.py" bochs-debug "$LOGS/bochs-debug-serial.log" "$DEBUG_SUITES" "$COUNTS"
		grep -h -E '^# (FUZZ|HOSTILE|LIFECYCLE)-TOTAL' "$LOGS/bochs-debug-serial.log" | sed 's/^# /    /' >&2
	else
		tier_broken bochs-debug "the debug kernel, module or initramfs did not build"
	fi
else
	tier_broken qemu "not run: the build failed"
	tier_broken bochs "not run: the build failed"
	tier_broken bochs-debug "not run: the build failed"
fi

read -r P F S < <(awk '{ p += $2; f += $3; s += $4 } END { print p+0, f+0, s+0 }' "$COUNTS")
echo
echo "make check: $(( $(date +%s) - start )) s; per tier:"
awk '{ printf "  %-6s %4d passed, %d failed, %d skipped\n", $1, $2, $3, $4 }' "$COUNTS"
echo "Logs: $LOGS"
[ "$F" = 0 ] || echo "Something failed: the FAIL lines above name it; the logs hold the details."
echo "$P passed, $F failed, $S skipped"
[ "$F" = 0 ]
