#!/usr/bin/env bash
# Builds the test kernel (bzImage + modules), or the Linux guest's (bzImage), from the Linux 7.2 source in the cache and the
# config fragment(s) in kernel-config/. The build directory is keyed by the source version
# and a hash of the fragments, so a second run with the same inputs reuses it.
# Usage: build-kernel.sh [fragment...]   (default: kernel-config/test.config;
#        kernel-config/guest.config builds the Linux guest)
# Prints the build directory on stdout.
source "$(dirname "$0")/lib.sh"

fragments=("$@")
((${#fragments[@]})) || fragments=("$SHADOWVM_TOP/kernel-config/test.config")
# merge_config.sh runs in the build directory: relative paths must be made absolute.
for i in "${!fragments[@]}"; do
	[ -f "${fragments[$i]}" ] || die "no kernel config fragment ${fragments[$i]}"
	fragments[i]=$(realpath "${fragments[$i]}")
done
src=$("$SHADOWVM_TOP/scripts/fetch-kernel.sh")
version=$(basename "$src")
key=$(cat "${fragments[@]}" | sha256sum | cut -c1-12)
build=$SHADOWVM_CACHE/build/$version-$key

BINDGEN=$SHADOWVM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen
KMAKE=(make -C "$src" O="$build" LLVM=-$LLVM_VERSION RUSTC=/usr/bin/rustc BINDGEN="$BINDGEN"
	RUST_LIB_SRC=/usr/lib/rustlib/src/rust/library -j"$(nproc)")

mkdir -p "$SHADOWVM_CACHE/build"
# One build per key at a time (several checkouts share the cache): wait for the other.
exec 9>"$build.lock"
flock 9
if [ -f "$build/.shadowvm-done" ]; then
	echo "$build"
	exit 0
fi
mkdir -p "$build"
step "Configuring kernel $version ($(basename "${fragments[@]}" | tr '\n' ' ')) in $build"
logged "$build/config.log" "${KMAKE[@]}" tinyconfig
logged "$build/config.log" env -C "$build" "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "${fragments[@]}"
logged "$build/config.log" "${KMAKE[@]}" olddefconfig
# Every fragment line must have survived olddefconfig; a silently dropped option would
# make a later step fail in a confusing way.
missing=$(cat "${fragments[@]}" | grep -E '^CONFIG_[A-Z0-9_]+=' | while read -r line; do
	grep -qx "$line" "$build/.config" || echo "$line"; done)
[ -z "$missing" ] || die "kernel config lost these options (unmet dependencies?): $missing"
# A fragment without modules or Rust (the Linux guest's) builds the bzImage alone.
targets=(bzImage)
if grep -qx 'CONFIG_RUST=y' "$build/.config"; then
	logged "$build/rustavailable.log" "${KMAKE[@]}" rustavailable
fi
grep -qx 'CONFIG_MODULES=y' "$build/.config" && targets+=(modules)

step "Building kernel $version: ${targets[*]} (about 6 min on 2 cores; log: $build/build.log)"
logged "$build/build.log" "${KMAKE[@]}" "${targets[@]}"
touch "$build/.shadowvm-done"
echo "$build"
