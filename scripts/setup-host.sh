#!/usr/bin/env bash
# Installs what building and testing shadowvm needs on a Debian bookworm host:
# Debian packages (kernel Rust toolchain and its clippy, LLVM, QEMU, Bochs, ISO tools) and
# a pinned bindgen-cli in the cache. Idempotent: a second run only checks.
source "$(dirname "$0")/lib.sh"

PACKAGES=(
	rustc-web rust-web-src rust-web-clippy
	clang-$LLVM_VERSION lld-$LLVM_VERSION llvm-$LLVM_VERSION libclang-$LLVM_VERSION-dev
	flex bison bc libelf-dev libssl-dev cpio xz-utils lz4 busybox-static
	qemu-system-x86 bochs bochsbios vgabios isolinux syslinux-common genisoimage
	g++ make curl
	python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	[ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
	step "Installing Debian packages: ${missing[*]}"
	logged "$SHADOWVM_CACHE/logs/apt-update.log" apt-get update
	DEBIAN_FRONTEND=noninteractive logged "$SHADOWVM_CACHE/logs/apt-install.log" \
		apt-get install -y --no-install-recommends "${missing[@]}"
fi

[ -x /usr/bin/rustc ] || die "/usr/bin/rustc missing: the Debian package rustc-web did not install it"
[ -d /usr/lib/rustlib/src/rust/library ] || die "Rust library source missing: install rust-web-src"

BINDGEN=$SHADOWVM_CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen
if [ ! -x "$BINDGEN" ]; then
	command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) to build bindgen-cli"
	step "Building bindgen-cli $BINDGEN_VERSION (about 1 min)"
	LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VERSION/lib logged "$SHADOWVM_CACHE/logs/bindgen.log" \
		cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION" \
		--root "$SHADOWVM_CACHE/bindgen-$BINDGEN_VERSION"
fi
note "host tools ready (rustc $(/usr/bin/rustc --version | cut -d' ' -f2), bindgen $BINDGEN_VERSION)"
