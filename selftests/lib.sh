# shellcheck shell=sh
# TAP helpers for the in-guest shell suites (busybox sh).
TAP_N=0
MOD=/lib/modules

plan() { echo "TAP version 13"; echo "1..$1"; }
ok() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
# not_ok <description> [diagnostic lines...]
not_ok() {
	TAP_N=$((TAP_N + 1)); echo "not ok $TAP_N - $1"; shift
	for d in "$@"; do echo "$d" | sed 's/^/# /'; done
}
# check <description> <command...>: passes when the command succeeds.
check() {
	desc=$1; shift
	if out=$("$@" 2>&1); then ok "$desc"; else not_ok "$desc" "command: $*" "$out"; fi
}
# check_fails <description> <expected text in its error output> <command...>
check_fails() {
	desc=$1 want=$2; shift 2
	if out=$("$@" 2>&1); then
		not_ok "$desc" "command: $*" "expected failure ($want), but it succeeded"
	else
		case $out in
		*"$want"*) ok "$desc" ;;
		*) not_ok "$desc" "command: $*" "expected: $want" "seen: $out" ;;
		esac
	fi
}
# dmesg_has <description> <fixed text>: the kernel log contains the text.
dmesg_has() {
	if dmesg | grep -qF -- "$2"; then ok "$1"; else not_ok "$1" "kernel log lacks: $2" "$(dmesg | tail -n 5)"; fi
}
load_shadowvm() { lsmod | grep -q '^shadowvm ' || insmod $MOD/shadowvm.ko; }
