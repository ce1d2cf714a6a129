# shellcheck shell=bash
# Common helpers for shadowvm scripts: logging, failure, cache locations.
# Sourced, not run.

set -euo pipefail

SHADOWVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Everything expensive (packages lists, kernel source, kernel builds, bindgen) lives
# outside the repo so a fresh clone reuses it.
SHADOWVM_CACHE=${SHADOWVM_CACHE:-/var/cache/shadowvm}
# Where one run's logs, images and results go (inside the repo, ignored by git).
SHADOWVM_OUT=${SHADOWVM_OUT:-$SHADOWVM_TOP/out}

# Pinned tool versions.
KERNEL_SERIES=7.2
BINDGEN_VERSION=0.72.1
LLVM_VERSION=19

step() { printf '==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Runs "$@" with its output in a log file; on failure prints the tail and the log path.
logged() {
	local log=$1; shift
	mkdir -p "$(dirname "$log")"
	if ! "$@" >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		die "'$*' failed; full log: $log"
	fi
}

mkdir -p "$SHADOWVM_CACHE" "$SHADOWVM_OUT"
