#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs the Multiboot test kernels under QEMU TCG, the reference: each as kernels.list
# says (command line, modules, input, expected end), on QEMU's `pc` machine with one CPU,
# 128 MiB, COM1 on stdio and isa-debug-exit at 0xf4.  Builds nothing (make -C
# samples/multiboot does).  A kernel passes when it printed one complete TAP stream with
# every test ok (skips allowed) and no "Bail out!", every `stdin` line came back as a
# line of output, and QEMU ended as expected: status CODE * 2 + 1 for `expect exit CODE`,
# status 0 (the reset, under -no-reboot) for `expect reset`.
#
# For each kernel it writes to OUTDIR: NAME.log (everything COM1 printed), NAME.out (the
# lines not starting with '#': what another platform's run must reproduce exactly),
# NAME.status (QEMU's exit status), NAME.stderr (QEMU's own messages).
#
# usage: run-qemu.sh [-o OUTDIR] [-n] BUILD_DIR [NAME...]
#   BUILD_DIR  where make put the kernels, their modules and kernels.list
#   -o OUTDIR  default: BUILD_DIR/qemu-ref
#   -n         print each kernel's QEMU command line, run nothing
#   NAME...    only these kernels (default: all of kernels.list)
# Environment: QEMU (default qemu-system-x86_64), QEMU_CPU (default max).
set -u

usage() { sed -n 's/^# \{0,1\}//; /^usage:/,/^Environment/p' "$0" >&2; exit 2; }
die() { echo "run-qemu.sh: $*" >&2; exit 2; }

out_dir="" dry_run=0
while getopts o:nh opt; do
	case $opt in
	o) out_dir=$OPTARG ;;
	n) dry_run=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
build=$(cd "$1" 2>/dev/null && pwd) || die "no build directory $1 (run make -C samples/multiboot first)"
shift
only=("$@")
list=$build/kernels.list
[ -f "$list" ] || die "no $list (run make -C samples/multiboot O=$1 first)"
out_dir=${out_dir:-$build/qemu-ref}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_CPU=${QEMU_CPU:-max}

# ---------------------------------------------------------------- kernels.list
# Entry i: NAME[i], IMAGE[i], EXPECT[i] ("exit N" or "reset"), APPEND[i] (HAS_APPEND[i]),
# MODULES[i] and STDIN[i] (newline-separated), TIMEOUT[i].
NAME=() IMAGE=() EXPECT=() APPEND=() HAS_APPEND=() MODULES=() STDIN=() TIMEOUT=()
n=-1 lineno=0
while IFS= read -r line || [ -n "$line" ]; do
	lineno=$((lineno + 1))
	case $line in '' | '#'*) continue ;; esac
	key=${line%% *}
	value=""
	[ "$key" != "$line" ] && value=${line#* }
	where="$list:$lineno"
	if [ "$key" != kernel ] && [ $n -lt 0 ]; then
		die "$where: '$key' before the first 'kernel' line"
	fi
	case $key in
	kernel)
		read -r name image extra <<<"$value"
		[ -n "${image:-}" ] && [ -z "${extra:-}" ] || die "$where: expected 'kernel NAME IMAGE'"
		n=$((n + 1))
		NAME[n]=$name IMAGE[n]=$image EXPECT[n]="" APPEND[n]="" HAS_APPEND[n]=0
		MODULES[n]="" STDIN[n]="" TIMEOUT[n]=20
		;;
	expect)
		case $value in
		reset) EXPECT[n]=reset ;;
		"exit "*)
			code=${value#exit }
			[[ $code =~ ^(0x[0-9a-fA-F]+|[0-9]+)$ ]] || die "$where: exit code '$code' is not a number"
			EXPECT[n]="exit $((code))"
			;;
		*) die "$where: expected 'expect exit CODE' or 'expect reset'" ;;
		esac
		;;
	append) APPEND[n]=$value HAS_APPEND[n]=1 ;;
	module)
		[ -n "$value" ] || die "$where: 'module' needs a file"
		MODULES[n]+="$value"$'\n'
		;;
	stdin) STDIN[n]+="$value"$'\n' ;;
	timeout)
		[[ $value =~ ^[0-9]+$ ]] || die "$where: timeout '$value' is not a number of seconds"
		TIMEOUT[n]=$value
		;;
	*) die "$where: unknown directive '$key'" ;;
	esac
done <"$list"
[ $n -ge 0 ] || die "$list lists no kernel"
for i in $(seq 0 $n); do
	[ -n "${EXPECT[i]}" ] || die "$list: kernel ${NAME[i]} has no 'expect' line"
done

# ---------------------------------------------------------------- one run
# qemu_args i: the QEMU command line of entry i, into the array ARGS.
qemu_args() {
	local i=$1 initrd="" mod file rest
	ARGS=("$QEMU" -nodefaults -machine pc -cpu "$QEMU_CPU" -m 128 -smp 1 -display none
		-no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=4
		-kernel "$build/${IMAGE[i]}")
	((HAS_APPEND[i])) && ARGS+=(-append "${APPEND[i]}")
	while IFS= read -r mod; do
		[ -n "$mod" ] || continue
		file=${mod%% *} rest=""
		[ "$file" != "$mod" ] && rest=" ${mod#* }"
		mod="$build/$file$rest"
		# -initrd separates modules with ',': a comma inside one is written twice.
		initrd+="${initrd:+,}${mod//,/,,}"
	done <<<"${MODULES[i]}"
	[ -n "$initrd" ] && ARGS+=(-initrd "$initrd")
	return 0
}

pass=0 fail=0
report() {	# report PASS|FAIL name text
	if [ "$1" = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
	echo "$1  $2: $3"
}

# check i log status: prints why entry i's run failed, or nothing.
check() {
	local i=$1 log=$2 status=$3 plan results notok versions want line
	if [ "$status" = 124 ]; then
		echo "timed out after ${TIMEOUT[i]} s"
		return
	fi
	versions=$(grep -c '^TAP version 13$' "$log")
	plan=$(sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p' "$log" | head -n 1)
	results=$(grep -cE '^(not )?ok [0-9]+ - ' "$log")
	notok=$(grep -cE '^not ok [0-9]+' "$log")
	if grep -q '^Bail out!' "$log"; then
		grep -m1 '^Bail out!' "$log"
		return
	fi
	[ "$versions" = 1 ] || { echo "$versions TAP headers (a reboot prints a second)"; return; }
	[ -n "$plan" ] || { echo "no TAP plan"; return; }
	[ "$notok" = 0 ] || { echo "$notok of $plan tests failed: $(grep -m3 '^not ok' "$log" | tr '\n' ';')"; return; }
	[ "$results" = "$plan" ] || { echo "plan 1..$plan but $results results"; return; }
	# Numbered 1..N in order.
	if ! grep -E '^(not )?ok [0-9]+ - ' "$log" | awk '{ n = ($1 == "not") ? $3 : $2; if (n != NR) exit 1 }'; then
		echo "results not numbered 1..$plan in order"
		return
	fi
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		grep -qxF -- "$line" "$log" || { echo "input line not echoed: $line"; return; }
	done <<<"${STDIN[i]}"
	case ${EXPECT[i]} in
	reset) want=0 ;;
	"exit "*) want=$(( ${EXPECT[i]#exit } * 2 + 1 )) ;;
	esac
	[ "$status" = "$want" ] || echo "QEMU exit status $status, expected $want (${EXPECT[i]})"
}

mkdir -p "$out_dir" || die "cannot create $out_dir"
ran=0
for i in $(seq 0 $n); do
	name=${NAME[i]}
	if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then
		continue
	fi
	ran=$((ran + 1))
	qemu_args "$i"
	if ((dry_run)); then
		printf '%s:' "$name"
		printf ' %q' timeout "${TIMEOUT[i]}" "${ARGS[@]}"
		if [ -n "${STDIN[i]}" ]; then printf ' < %q\n' "$out_dir/$name.stdin"; else echo ' < /dev/null'; fi
		continue
	fi
	[ -f "$build/${IMAGE[i]}" ] || { report FAIL "$name" "no image $build/${IMAGE[i]}"; continue; }
	input=/dev/null
	if [ -n "${STDIN[i]}" ]; then
		input=$out_dir/$name.stdin
		printf '%s' "${STDIN[i]}" >"$input"
	fi
	log=$out_dir/$name.log
	timeout "${TIMEOUT[i]}" "${ARGS[@]}" <"$input" 2>"$out_dir/$name.stderr" | tr -d '\r' >"$log"
	status=${PIPESTATUS[0]}
	echo "$status" >"$out_dir/$name.status"
	grep -v '^#' "$log" >"$out_dir/$name.out"
	why=$(check "$i" "$log" "$status")
	if [ -z "$why" ]; then
		report PASS "$name" "$(grep -cE '^ok [0-9]+ - ' "$log") tests ($(grep -cE '^ok [0-9]+ - .*# SKIP' "$log") skipped), QEMU status $status"
	else
		report FAIL "$name" "$why (log: $log)"
	fi
done
[ "$ran" -gt 0 ] || die "no kernel named ${only[*]} in $list"
((dry_run)) && exit 0
echo "multiboot-qemu: $pass passed, $fail failed (outputs in $out_dir)"
[ "$fail" -eq 0 ]
