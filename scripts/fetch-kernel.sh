#!/usr/bin/env bash
# Fetches the newest Linux 7.2 source Debian offers (trixie-backports or forky) through a
# private apt state directory, without touching the system's apt sources, and unpacks it
# into the cache. Prints the source directory on stdout.
source "$(dirname "$0")/lib.sh"

APT_DIR=$SHADOWVM_CACHE/apt
PKG=linux-source-$KERNEL_SERIES
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$SHADOWVM_CACHE/src"
cat > "$APT_DIR/sources.list" <<LIST
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian forky main
LIST
APT_OPTS=(-o Dir::Etc::sourcelist="$APT_DIR/sources.list" -o Dir::Etc::sourceparts=/dev/null
	-o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache"
	-o Dir::State::status=/var/lib/dpkg/status -o APT::Architecture=amd64)

# Reuse an unpacked source while the package lists are less than a week old (or offline).
existing=$(ls -d "$SHADOWVM_CACHE"/src/linux-source-$KERNEL_SERIES.*/ 2>/dev/null | sort -V | tail -n 1 || true)
existing=${existing%/}
fresh_lists=$(find "$APT_DIR/lists" -maxdepth 1 -name '*Packages*' -mtime -7 2>/dev/null | head -n 1)
if [ -n "$existing" ] && { [ -n "$fresh_lists" ] || [ "${SHADOWVM_OFFLINE:-0}" = 1 ]; }; then
	echo "$existing"
	exit 0
fi

step "Looking up $PKG in Debian trixie-backports and forky"
logged "$SHADOWVM_CACHE/logs/apt-kernel-update.log" apt-get "${APT_OPTS[@]}" update
version=$(apt-cache "${APT_OPTS[@]}" madison "$PKG" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -V | tail -n 1)
if [ -z "$version" ]; then
	[ -n "$existing" ] && { note "no $PKG in Debian now; using cached $existing"; echo "$existing"; exit 0; }
	die "Debian package $PKG is in neither trixie-backports nor forky; get a Linux $KERNEL_SERIES source tree and run with KDIR=<its build dir>"
fi
dest=$SHADOWVM_CACHE/src/linux-source-$version
if [ ! -f "$dest/Makefile" ]; then
	step "Downloading $PKG $version (about 160 MB)"
	(cd "$APT_DIR/cache/archives" && logged "$SHADOWVM_CACHE/logs/apt-kernel-download.log" \
		apt-get "${APT_OPTS[@]}" download "$PKG=$version")
	deb=$(ls "$APT_DIR/cache/archives/${PKG}_"*.deb | sort -V | tail -n 1)
	step "Unpacking $PKG $version"
	tmp=$(mktemp -d "$SHADOWVM_CACHE/src/unpack.XXXXXX")
	dpkg-deb -x "$deb" "$tmp"
	tar -C "$tmp" -xf "$tmp/usr/src/$PKG.tar.xz"
	rm -rf "$dest"; mv "$tmp/$PKG" "$dest"; rm -rf "$tmp" "$deb"
fi
echo "$dest"
