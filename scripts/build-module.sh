#!/usr/bin/env bash
# Builds shadowvm.ko against KDIR (any Linux 7.2+ build tree with CONFIG_RUST), or against
# the cached test kernel (built first if needed). Objects go to out/module, not the tree.
# Prints the path of shadowvm.ko on stdout.
source "$(dirname "$0")/lib.sh"

kdir=${KDIR:-}
[ -n "$kdir" ] || kdir=$("$SHADOWVM_TOP/scripts/build-kernel.sh")
[ -f "$kdir/Makefile" ] || die "KDIR=$kdir is not a kernel build directory (no Makefile)"
grep -q '^CONFIG_RUST=y' "$kdir/.config" 2>/dev/null || die "KDIR=$kdir has no CONFIG_RUST=y: shadowvm needs a Rust-enabled 7.2 kernel"

mo=$SHADOWVM_OUT/module
mkdir -p "$mo"
step "Building shadowvm.ko against $kdir"
BINDGEN=$SHADOWVM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen
# KMAKEFLAGS lets a user with another toolchain override the defaults used for the test kernel.
# shellcheck disable=SC2086
logged "$mo/build.log" make -C "$kdir" M="$SHADOWVM_TOP" MO="$mo" \
	${KMAKEFLAGS:-LLVM=-$LLVM_VERSION RUSTC=/usr/bin/rustc BINDGEN=$BINDGEN RUST_LIB_SRC=/usr/lib/rustlib/src/rust/library} \
	-j"$(nproc)" modules
# Rust warnings do not fail Kbuild; they fail us.
if grep -E '^(warning|error)(\[|:)' "$mo/build.log" >/dev/null; then
	grep -E -A8 '^(warning|error)(\[|:)' "$mo/build.log" | head -n 60 >&2
	die "the module build printed warnings (full log: $mo/build.log)"
fi
# No panic reachable from the MMU engine, the emulator or the rest of what runs with
# interrupts off in VMX operation (clippy denies the source forms; this checks what was
# compiled).
if command -v "llvm-objdump-$LLVM_VERSION" >/dev/null; then
	python3 "$SHADOWVM_TOP/scripts/check-engine-panics.py" "$mo/shadowvm.o" "$LLVM_VERSION" \
		|| die "a panic is reachable from the MMU engine or the emulator in $mo/shadowvm.o (see above)"
fi
echo "$mo/shadowvm.ko"
