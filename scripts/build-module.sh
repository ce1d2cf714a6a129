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
BINDGEN=$SHADOWVM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen
# KMAKEFLAGS lets a user with another toolchain override the defaults used for the test kernel.
kmakeflags=${KMAKEFLAGS:-LLVM=-$LLVM_VERSION RUSTC=/usr/bin/rustc BINDGEN=$BINDGEN RUST_LIB_SRC=/usr/lib/rustlib/src/rust/library}

# The kernel's own clippy pass (CLIPPY=1: the kernel's lint flags, rust_common_flags in its
# top Makefile). It needs a clippy-driver built from the very rustc that builds the module.
# It runs as a second build of its own, in $SHADOWVM_OUT/module-clippy, whose objects are
# not used: clippy-driver compiles with MIR optimisations off (mir_opt_level=0, and the
# CheckNull/CheckAlignment passes off; src/tools/clippy/src/driver.rs), so its object is
# not the module rustc builds. KCLIPPY=0 skips it.
rustc_bin=/usr/bin/rustc
[[ $kmakeflags =~ (^|[[:space:]])RUSTC=([^[:space:]]+) ]] && rustc_bin=${BASH_REMATCH[2]}
clippy_driver=${CLIPPY_DRIVER:-/usr/bin/clippy-driver}
clippy_skip=
if [ "${KCLIPPY:-1}" = 0 ]; then
	clippy_skip="KCLIPPY=0"
elif [ ! -x "$clippy_driver" ]; then
	clippy_skip="$clippy_driver is not installed (Debian package rust-web-clippy: make setup)"
else
	# `clippy-driver --rustc` is the compiler inside it: same version and commit as ours?
	clippy_rustc=$("$clippy_driver" --rustc --version --verbose 2>&1 || true)
	if [ "$clippy_rustc" != "$("$rustc_bin" --version --verbose 2>&1 || true)" ]; then
		clippy_skip="$clippy_driver is not built from $rustc_bin ($(head -n1 <<<"$clippy_rustc")"
		clippy_skip+=" vs $("$rustc_bin" --version 2>&1 || true))"
	fi
fi

# Rust warnings do not fail Kbuild; they fail us. A build that warned loses its Rust
# object, so that the next run compiles it again and shows the warnings again.
fail_on_warnings() { # <log> <MO dir> <what>
	if grep -E '^(warning|error)(\[|:)' "$1" >/dev/null; then
		grep -E -A8 '^(warning|error)(\[|:)' "$1" | head -n 60 >&2
		rm -f "$2/rust/shadowvm.o"
		die "$3 printed warnings (full log: $1)"
	fi
}

step "Building shadowvm.ko against $kdir"
clippy_pid=
if [ -z "$clippy_skip" ]; then
	mkdir -p "$SHADOWVM_OUT/module-clippy"
	# shellcheck disable=SC2086
	logged "$mo/clippy.log" make -C "$kdir" M="$SHADOWVM_TOP" MO="$SHADOWVM_OUT/module-clippy" \
		$kmakeflags CLIPPY=1 CLIPPY_DRIVER="$clippy_driver" -j"$(nproc)" modules &
	clippy_pid=$!
	# Whatever fails first, leave no build writing behind us.
	trap 'wait "$clippy_pid" 2>/dev/null || true' EXIT
else
	note "the kernel's clippy pass (CLIPPY=1) is skipped: $clippy_skip"
fi
# shellcheck disable=SC2086
logged "$mo/build.log" make -C "$kdir" M="$SHADOWVM_TOP" MO="$mo" $kmakeflags -j"$(nproc)" modules
fail_on_warnings "$mo/build.log" "$mo" "the module build"
if [ -n "$clippy_pid" ]; then
	wait "$clippy_pid" || die "the kernel's clippy pass failed (log: $mo/clippy.log)"
	fail_on_warnings "$mo/clippy.log" "$SHADOWVM_OUT/module-clippy" \
		"the kernel's clippy pass (CLIPPY=1)"
fi
# No panic reachable from the MMU engine, the emulator or the rest of what runs with
# interrupts off in VMX operation (clippy denies the source forms; this checks what was
# compiled).
if command -v "llvm-objdump-$LLVM_VERSION" >/dev/null; then
	python3 "$SHADOWVM_TOP/scripts/check-engine-panics.py" "$mo/shadowvm.o" "$LLVM_VERSION" \
		|| die "a panic is reachable from the MMU engine or the emulator in $mo/shadowvm.o (see above)"
fi
echo "$mo/shadowvm.ko"
