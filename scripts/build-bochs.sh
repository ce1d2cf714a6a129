#!/usr/bin/env bash
# Builds the Bochs the VMX tests run on, once, into the cache, and prints its path.
#
# Debian's Bochs package is built for interactive use: its internal debugger, the
# instrumentation hooks and the x86 debugger are compiled in and run on every emulated
# instruction, and handlers chaining and trace linking are off. Built without them (and
# with no GUI, which a test boot does not use), Bochs runs the same boots about 2.8 times
# faster: module, api and guests in 42 s of Bochs CPU instead of 116 s (scripts/run-bochs.sh
# with each binary on the same images). The source is Debian's (trixie, Bochs 3.0), pinned
# by its SHA-256; the BIOS images stay those of the bochsbios package.
#
# Usage: build-bochs.sh     prints the bochs binary's path (builds it first if needed)
# Fails with a message when the source cannot be fetched or the build fails; run-bochs.sh
# then falls back to Debian's Bochs 2.7 (slower, same results).
source "$(dirname "$0")/lib.sh"

BOCHS_VERSION=3.0
BOCHS_TARBALL=bochs_${BOCHS_VERSION}+dfsg.orig.tar.xz
BOCHS_SHA256=78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b
BOCHS_URL=http://deb.debian.org/debian/pool/main/b/bochs/$BOCHS_TARBALL
# What the test boots need: x86-64 with VMX (and the Haswell CPU model's AVX), SMP for the
# 2-CPU boot, PCI and the ATAPI CD-ROM the ISO boots from. The speed-ups; nothing else.
BOCHS_CONFIGURE=(
	--enable-x86-64 --enable-vmx=2 --enable-cpu-level=6 --enable-avx --enable-evex --enable-fpu
	--enable-smp --enable-pci --enable-cdrom --enable-a20-pin
	--enable-all-optimizations --enable-handlers-chaining --enable-trace-linking
	--enable-repeat-speedups --enable-fast-function-calls
	--disable-debugger --disable-plugins --with-nogui --with-term=no --disable-docbook
	# Its SIGALRM handler logs through the log's mutex: a signal that lands while Bochs is
	# writing its log deadlocks Bochs (seen in a make check, in a boot whose guest logged
	# many unknown-MSR reads).
	--disable-show-ips
)

# Compiled for this host's CPU: 14 % less Bochs CPU time than -O2 for generic x86-64 (the
# module, api and guests suites, 39.6 s against 45.9 s, both binaries side by side). The
# CPU the compiler picked is part of the cache key, so another host builds its own.
BOCHS_CFLAGS="-O3 -march=native -pipe"
march=$(gcc -march=native -Q --help=target 2>/dev/null | awk '$1 == "-march=" { print $2 }')
key=$(printf '%s\n' "$BOCHS_SHA256" "${BOCHS_CONFIGURE[@]}" "$BOCHS_CFLAGS" "$march" |
	sha256sum | cut -c1-12)
prefix=$SHADOWVM_CACHE/bochs-$BOCHS_VERSION-$key
bin=$prefix/bin/bochs
# The stamp is written last: a build cut short is built again.
if [ -f "$prefix/.built" ]; then
	echo "$bin"
	exit 0
fi

# Several boots may ask at once: one builds, the others wait for it.
mkdir -p "$SHADOWVM_CACHE/logs"
exec 9> "$SHADOWVM_CACHE/bochs-$BOCHS_VERSION.lock"
flock 9
if [ -f "$prefix/.built" ]; then
	echo "$bin"
	exit 0
fi

command -v g++ >/dev/null || die "g++ not found: install the Debian package g++ (scripts/setup-host.sh does)"
tarball=$SHADOWVM_CACHE/src/$BOCHS_TARBALL
mkdir -p "$SHADOWVM_CACHE/src"
if ! { [ -f "$tarball" ] && echo "$BOCHS_SHA256  $tarball" | sha256sum -c --quiet; }; then
	step "Fetching the Bochs $BOCHS_VERSION source ($BOCHS_URL)"
	curl -fsSL --retry 3 -o "$tarball.part" "$BOCHS_URL" ||
		die "could not download $BOCHS_URL; check the network, or put the file in $SHADOWVM_CACHE/src/"
	echo "$BOCHS_SHA256  $tarball.part" | sha256sum -c --quiet ||
		die "$BOCHS_TARBALL does not have the pinned SHA-256 $BOCHS_SHA256"
	mv "$tarball.part" "$tarball"
fi

step "Building Bochs $BOCHS_VERSION for the VMX tests (about 2 min, once)"
work=$(mktemp -d "$SHADOWVM_CACHE/bochs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xf "$tarball"
src=$(echo "$work"/bochs-*)
log=$SHADOWVM_CACHE/logs/bochs-build.log
rm -rf "$prefix"
(cd "$src" && CFLAGS=$BOCHS_CFLAGS CXXFLAGS=$BOCHS_CFLAGS logged "$log" \
	./configure --prefix="$prefix" "${BOCHS_CONFIGURE[@]}")
(cd "$src" && logged "$log.make" make -j"$(nproc)" && logged "$log.install" make install)
[ -x "$bin" ] || die "the Bochs build left no $bin (see $log*)"
touch "$prefix/.built"
note "Bochs $BOCHS_VERSION built: $bin"
echo "$bin"
