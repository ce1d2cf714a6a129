#!/usr/bin/env bash
# make check: every test of every tier, then one summary line "N passed, N failed, N skipped".
# make check-quick (check.sh --quick): the development loop: host tests, the build and one
# Bochs boot of the suites touched most often (QUICK_BOOTS).
#
# Tiers:
#   host:  cargo test (MMU engine against its reference model, emulator against the host
#          CPU, uapi layout, launcher)
#   qemu:  TCG boot, no VMX: the module refuses to load cleanly
#   multiboot-qemu: the Multiboot test kernels (samples/multiboot) under QEMU TCG, the
#          reference outputs for the other platforms
#   bochs*: the Bochs boots (emulated VMX) of BOOTS below: the regular test kernel, and the
#      debug kernel (kernel-config/debug.config: lockdep, KMEMLEAK, SLUB/page-alloc
#      debugging) with the hardening suites
# Jobs run side by side, SHADOWVM_JOBS at a time (default: the number of CPUs), each as soon
# as what it needs is built: the host tests beside the build, the debug kernel's module
# beside the test build, the Bochs boots (one host core each) beside each other. One line
# when a job starts, one when it ends; the wall time of every job and the total at the end.
# Exits non-zero if anything failed or a tier did not run (that counts as one failure).
# Logs: out/logs/ (<job>.log for each job, <boot>-serial.log and <boot>.times for each boot).
source "$(dirname "$0")/lib.sh"
set +e
# Read whole before it runs: editing this file during a make check does not disturb it.
{

QUICK=0
[ "${1:-}" = --quick ] && QUICK=1

QEMU_SUITES=noload
# Backends of the short benchmark comparison (suite bench-check), and those of its one
# cheap boot of the Linux guest's benchmark.
BENCH_CHECK_BACKENDS="shadowvm kvm-ept0 kvm-ept1"
BENCH_CHECK_LINUX_BACKENDS="shadowvm"
# The Bochs boots: name, kernel (test or debug), emulated CPUs, timeout (CPU seconds of
# Bochs; see run-bochs.sh), suites, and kernel command-line words for the suites if any.
# Two run at a time, each on one host core, so the check takes about half their CPU time:
# the boots are cut so that two cores stay busy to the end (Documentation/testing.md has
# each boot's CPU time). Listed longest first: when two boots are ready at once, the
# earlier one starts first.
# Each boot costs its kernel's boot again (Bochs CPU: test kernel ~10 s, debug kernel ~40 s
# on one emulated CPU), and a 2-CPU Bochs runs ~1.6 times slower than a 1-CPU one: only
# what needs two CPUs (lifecycle's CPU migration) runs on two.
# Debug boots begin with leakbase (the memory and kmemleak baseline, module not loaded) and
# end with leakcheck (unload, kmemleak, a second round of lifecycle, fuzz and hostile work
# that must not lose memory; in the boot with reload, which measures its bound) or, where
# that second round would only repeat itself, leakscan (unload and kmemleak only).
# reload (module load/unload cycles) measures one VM's bookkeeping for leakcheck's bound.
# cpu (the CPU-hostile guests, on shadowvm and on KVM as the reference) runs on the test
# kernel: what it checks is the host CPU given back, which the heartbeat measures the same
# on either kernel. linux (the unmodified Linux guest) runs its backends in two boots.
BOOTS=(
	"bochs-debug-up     debug 1 1500 leakbase,hostile,fuzz,leakscan"
	"bochs-debug-smp    debug 2 1500 leakbase,lifecycle,leakscan"
	"bochs-debug-leak   debug 1 1500 leakbase,reload,memcg,leakcheck"
	"bochs-linux-shadow test  1 1500 linux shadowvm.linux_backends=shadowvm,shadowvm-reclaim"
	"bochs-linux-kvm    test  1 1500 linux shadowvm.linux_backends=kvm-ept0,kvm-ept1"
	"bochs-cpu          test  1 1500 cpu"
	"bochs              test  1 1500 module,api,guests,platform,bench-check"
)
QUICK_BOOTS=(
	"bochs-quick       test  1 1200 module,api,guests"
)
((QUICK)) && BOOTS=("${QUICK_BOOTS[@]}")

LOGS=$SHADOWVM_OUT/logs
COUNTS=$SHADOWVM_OUT/counts
JOBS=$SHADOWVM_OUT/jobs
DBG=$SHADOWVM_OUT/debug
SLOTS=${SHADOWVM_JOBS:-$(nproc)}
((SLOTS >= 1)) || SLOTS=1
mkdir -p "$LOGS"
rm -rf "$JOBS"
mkdir -p "$JOBS"
: > "$COUNTS"
start=$(date +%s)
TTY=0 COLS=100
if [ -t 2 ]; then
	TTY=1
	COLS=$(tput cols 2>/dev/null || echo 100)
fi

# Job bodies. Each runs in the background with its output in $LOGS/<job>.log. Exit status
# 0: the job ran (its tests may have failed; their counts are in $COUNTS); non-zero: it
# could not run, and whatever needs it does not run either. A job writes its result line
# to $JOBS/<job>.result.

job_setup() {
	"$SHADOWVM_TOP/scripts/setup-host.sh" &&
		# Fetched once here: the kernel builds that follow run side by side.
		"$SHADOWVM_TOP/scripts/fetch-kernel.sh" >/dev/null
}

job_kernel() { "$SHADOWVM_TOP/scripts/build-kernel.sh" > "$JOBS/kernel.path"; }

# The Bochs the boots run on (built once into the cache; run-bochs.sh falls back to
# Debian's, slower, when it cannot be built).
job_bochs_emu() {
	local bin
	if bin=$("$SHADOWVM_TOP/scripts/build-bochs.sh"); then
		echo "$bin" > "$JOBS/bochs.path"
		echo "$bin" > "$JOBS/bochs-emu.result"
	else
		echo "/usr/bin/bochs" > "$JOBS/bochs.path"
		echo "WARNING: build-bochs.sh failed: the boots use Debian's Bochs 2.7, about 2.8 times slower" |
			tee "$JOBS/bochs-emu.result"
	fi
}

job_host() {
	(cd "$SHADOWVM_TOP" && cargo test --workspace --release 2>&1) > "$LOGS/cargo-test.log"
	local rc=$? p f i
	read -r p f i < <(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p+0, f+0, i+0 }' \
		"$LOGS/cargo-test.log")
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		tail -n 20 "$LOGS/cargo-test.log"
		echo "  FAIL host: cargo test failed to build or run (see $LOGS/cargo-test.log)"
		return 1
	fi
	grep -E '^test .* FAILED$' "$LOGS/cargo-test.log" | sed 's/^/  FAIL host: /'
	echo "host $p $f $i" >> "$COUNTS"
	# The benchmark report's own tests (Python, no Bochs): counted with the host tests.
	if python3 "$SHADOWVM_TOP/scripts/test-bench-report.py" > "$LOGS/bench-report-test.log" 2>&1; then
		echo "bench-report 1 0 0" >> "$COUNTS"
	else
		echo "bench-report 0 1 0" >> "$COUNTS"
		echo "  FAIL host: scripts/test-bench-report.py (see $LOGS/bench-report-test.log)"
	fi
	# The lint entry point (also `make lint`): clippy with the deny lists of the engine and
	# the emulator (a panicking form is an error), rustfmt on the host and kernel crates.
	local lint lrc=0
	"$SHADOWVM_TOP/scripts/lint.sh" > "$LOGS/lint.log" 2>&1 || lrc=$?
	case $lrc in
	0)
		echo "lint 1 0 0" >> "$COUNTS"
		lint="lint clean" ;;
	3)
		echo "lint 0 0 1" >> "$COUNTS"
		lint="lint skipped ($(head -n 1 "$LOGS/lint.log"))" ;;
	*)
		echo "lint 0 1 0" >> "$COUNTS"
		echo "  FAIL lint: scripts/lint.sh (clippy, rustfmt; see $LOGS/lint.log)"
		grep -E -A8 '^(error|Diff in)' "$LOGS/lint.log" | head -n 40
		lint="lint FAILED" ;;
	esac
	echo "$p passed, $f failed, $i ignored; $lint" > "$JOBS/host.result"
}

job_build() {
	mkdir -p "$SHADOWVM_OUT/tests"
	printf 'BENCH_CHECK_BACKENDS="%s"\nBENCH_CHECK_LINUX_BACKENDS="%s"\n' "$BENCH_CHECK_BACKENDS" \
		"$BENCH_CHECK_LINUX_BACKENDS" > "$SHADOWVM_OUT/tests/bench-check.conf"
	"$SHADOWVM_TOP/scripts/build-all.sh" > "$JOBS/images.test"
}

# The debug kernel (cached like the test kernel) and the module built against it.
job_debug_build() {
	local kdbg
	kdbg=$("$SHADOWVM_TOP/scripts/build-kernel.sh" "$SHADOWVM_TOP/kernel-config/test.config" \
		"$SHADOWVM_TOP/kernel-config/debug.config") || return 1
	mkdir -p "$DBG"
	# The kernel's clippy pass ran over the same source in the test build.
	KCLIPPY=0 SHADOWVM_OUT=$DBG KDIR=$kdbg "$SHADOWVM_TOP/scripts/build-module.sh" > "$JOBS/debug.ko" ||
		return 1
	echo "$kdbg" > "$JOBS/debug.kernel"
}

# The debug initramfs: the debug module with the selftests, launcher and guests of the
# test build.
job_debug_initramfs() {
	local kdbg
	kdbg=$(cat "$JOBS/debug.kernel")
	rm -rf "$DBG/tests" "$DBG/guests" "$DBG/bin" "$DBG/multiboot"
	cp -r "$SHADOWVM_OUT/tests" "$SHADOWVM_OUT/guests" "$SHADOWVM_OUT/bin" "$SHADOWVM_OUT/multiboot" "$DBG/" &&
		SHADOWVM_OUT=$DBG "$SHADOWVM_TOP/scripts/build-initramfs.sh" "$kdbg" "$(cat "$JOBS/debug.ko")" \
			"$DBG/initramfs.cpio" &&
		echo "$kdbg/arch/x86/boot/bzImage $DBG/initramfs.cpio" > "$JOBS/images.debug"
}

# summarize <tier> <serial log> <suites>: judges the log, prints FAIL lines, writes the result.
summarize() {
	python3 "$SHADOWVM_TOP/scripts/tap-summary.py" "$1" "$2" "$3" "$COUNTS" > "$JOBS/$1.tap"
	grep '^  FAIL' "$JOBS/$1.tap"
	sed -n "s/^  $1: \(.*\) (log: .*/\1/p" "$JOBS/$1.tap" > "$JOBS/$1.result"
}

job_qemu() {
	local bzimage initrd
	read -r bzimage initrd < "$JOBS/images.test"
	"$SHADOWVM_TOP/scripts/run-qemu.sh" "$bzimage" "$initrd" "$QEMU_SUITES" "$LOGS/qemu-serial.log" 300
	summarize qemu "$LOGS/qemu-serial.log" "$QEMU_SUITES"
}

# The Multiboot test kernels under QEMU TCG (samples/multiboot/run-qemu.sh, run by the
# build: their outputs are the platform suite's reference): each kernel is one result; the
# outputs (<kernel>.out, .status, .log) are in out/multiboot/qemu-ref/.
job_multiboot_qemu() {
	local ref=$SHADOWVM_OUT/multiboot/qemu-ref log=$LOGS/multiboot-qemu-run.log p f
	read -r p f < <(sed -n 's/^multiboot-qemu: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' "$log")
	if [ -z "${p:-}" ]; then
		tail -n 20 "$log"
		echo "  FAIL multiboot-qemu: run-qemu.sh did not run (see $log)"
		return 1
	fi
	sed -n 's/^FAIL  /  FAIL multiboot-qemu: /p' "$log"
	echo "multiboot-qemu $p $f 0" >> "$COUNTS"
	echo "$p passed, $f failed (kernels; outputs in $ref)" > "$JOBS/multiboot-qemu.result"
}

# job_boot <name> <kernel> <cpus> <timeout> <suites> [kernel command-line words]: one Bochs
# boot. The host time of each marker line goes to $LOGS/<name>.times (the guest prints the
# markers; see scripts/initramfs/init): where a boot spends its time, and the progress line.
job_boot() {
	local name=$1 kernel=$2 cpus=$3 timeout=$4 suites=$5 append bzimage initrd pid t0 n=0
	shift 5
	append="$*"
	local log=$LOGS/$name-serial.log times=$LOGS/$name.times
	read -r bzimage initrd < "$JOBS/images.$kernel"
	t0=$(date +%s)
	echo "$t0 START" > "$times"
	SHADOWVM_BOCHS=$(cat "$JOBS/bochs.path") SHADOWVM_BOCHS_APPEND=$append \
		"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$initrd" "$suites" "$log" "$timeout" "$cpus" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		n=$(boot_markers "$log" "$times" "$n")
	done
	wait "$pid"
	n=$(boot_markers "$log" "$times" "$n")
	echo "$(date +%s) END" >> "$times"
	summarize "$name" "$log" "$suites"
	grep -h -E '^# (FUZZ|HOSTILE|LIFECYCLE|RELOAD)-TOTAL' "$log" | sed 's/^# /    /'
	# Where the time went: boot, then each suite.
	awk 'NR == 1 { t0 = $1; last = t0 }
		$2 == "SHADOWVM-BOOTED" { printf "boot %ds", $1 - t0; last = $1 }
		$2 == "SHADOWVM-SUITE-END" { printf ", %s %ds", $3, $1 - last; last = $1 }
		$2 == "SHADOWVM-SUITE-BEGIN" { last = $1 }
		END { print "" }' "$times" > "$JOBS/$name.split"
}

# boot_markers <serial log> <times file> <markers seen>: appends the new marker lines with
# the host time; prints the new count.
boot_markers() {
	local lines now
	# Whole lines only: the guest may be in the middle of writing one.
	mapfile -t lines < <(head -n "$({ wc -l < "$1"; } 2>/dev/null || echo 0)" "$1" 2>/dev/null |
		grep -a -E '^SHADOWVM-(BOOTED|SUITE-BEGIN|SUITE-END|DONE)')
	now=$(date +%s)
	for ((i = $3; i < ${#lines[@]}; i++)); do echo "$now ${lines[i]}" >> "$2"; done
	echo "${#lines[@]}"
}

# The job graph: name, what it needs (space-separated job names), description, body.
declare -A NEEDS DESC BODY STATE PID T0 T1
ORDER=()
job() {
	ORDER+=("$1")
	NEEDS[$1]=$2 DESC[$1]=$3 BODY[$1]=$4 STATE[$1]=pending
}
job setup "" "host packages and tools" job_setup
job host "setup" "cargo test --workspace --release" job_host
job kernel "setup" "test kernel (cached after the first run)" job_kernel
job bochs-emu "setup" "Bochs for the VMX tests (cached after the first run)" job_bochs_emu
job build "kernel" "module, selftests, launcher, guests, initramfs" job_build
TIERS=(host)
if ! ((QUICK)); then
	job qemu "build" "TCG boot, no VMX: suites $QEMU_SUITES" job_qemu
	job multiboot-qemu "build" "Multiboot test kernels under QEMU TCG" job_multiboot_qemu
	TIERS+=(qemu multiboot-qemu)
fi
for b in "${BOOTS[@]}"; do
	read -r name kernel cpus timeout suites append <<< "$b"
	if [ "$kernel" = debug ] && [ -z "${STATE[debug-build]:-}" ]; then
		# After the test kernel: on a fresh machine the two kernel builds do not share the
		# cores, and the test boots run while the debug kernel builds.
		job debug-build "kernel" "debug kernel (cached after the first run) and its module" job_debug_build
		job debug-initramfs "build debug-build" "debug initramfs" job_debug_initramfs
	fi
	need="build bochs-emu"
	[ "$kernel" = debug ] && need="debug-initramfs bochs-emu"
	job "$name" "$need" "Bochs, $kernel kernel, $cpus CPU(s): $suites${append:+ ($append)}" \
		"job_boot $name $kernel $cpus $timeout $suites $append"
	TIERS+=("$name")
done

# Output: one line per job start and end, with the FAIL lines of a job after its end line.
# On a terminal, a status line at the bottom shows the running jobs.
clear_status() { ((TTY)) && printf '\r\033[K' >&2; }
say() { clear_status; printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
status() {
	((TTY)) || return 0
	local n s=""
	for n in "${ORDER[@]}"; do
		[ "${STATE[$n]}" = running ] || continue
		local cur="" t=$(($(date +%s) - T0[$n]))
		if [ -f "$LOGS/$n.times" ]; then
			cur=$(awk '$2 == "START" { c = "boot" } $2 == "SHADOWVM-SUITE-BEGIN" { c = $3 }
				$2 == "SHADOWVM-DONE" { c = "poweroff" } END { print c }' "$LOGS/$n.times")
		fi
		s+="  $n ${t}s${cur:+ [$cur]}"
	done
	printf '\r\033[K[%ds]%s' $(($(date +%s) - start)) "${s:0:$((COLS - 8))}" >&2
}

# cpu_s <job>: the CPU seconds of a finished job: the shell's times, whose second line is
# what the job's processes used.
cpu_s() {
	[ -f "$JOBS/$1.cpu" ] || return 0
	awk 'NR == 2 { for (i = 1; i <= NF; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } }
		END { printf "%d", t + 0.5 }' "$JOBS/$1.cpu"
}

tier_broken() { echo "$1 0 1 0" >> "$COUNTS"; say "  FAIL $1: $2"; }

finish() {
	local n=$1 rc
	rc=$(cat "$JOBS/$n.rc")
	T1[$n]=$(date +%s)
	local secs=$((T1[$n] - T0[$n])) res=""
	[ -f "$JOBS/$n.result" ] && res=": $(cat "$JOBS/$n.result")"
	[ -f "$JOBS/$n.split" ] && res+=" ($(cat "$JOBS/$n.split"))"
	if [ "$rc" = 0 ]; then
		STATE[$n]=done
		say "done  $n in ${secs}s (CPU $(cpu_s "$n")s)$res"
		grep -h -E '^  FAIL|^    (FUZZ|HOSTILE|LIFECYCLE|RELOAD)-TOTAL' "$LOGS/$n.log" >&2
	else
		STATE[$n]=failed
		say "FAIL  $n in ${secs}s (exit status $rc; log: $LOGS/$n.log)"
		grep -v '^  FAIL' "$LOGS/$n.log" | tail -n 15 | sed 's/^/    /' >&2
		# A test tier that could not run, or a build step that failed, counts as one failure.
		echo "$n 0 1 0" >> "$COUNTS"
	fi
}

launch() {
	local n=$1
	T0[$n]=$(date +%s)
	STATE[$n]=running
	say "start $n: ${DESC[$n]}"
	# shellcheck disable=SC2086 # BODY is a function name and its arguments
	# The status file is written however the body ends (also on an unset variable), with
	# the CPU time the job used (user + system of its processes): on a shared machine
	# that says more about a job's cost than its wall time.
	( trap 'rc=$?; times > "$JOBS/$n.cpu"; echo $rc > "$JOBS/$n.rc"' EXIT
		${BODY[$n]} ) > "$LOGS/$n.log" 2>&1 < /dev/null &
	PID[$n]=$!
}

say "make check$( ((QUICK)) && echo -quick): ${#ORDER[@]} jobs, $SLOTS at a time; logs in $LOGS"
while :; do
	running=0 waiting=0
	for n in "${ORDER[@]}"; do
		if [ "${STATE[$n]}" = running ]; then
			if [ -f "$JOBS/$n.rc" ]; then
				wait "${PID[$n]}" 2>/dev/null
				finish "$n"
			else
				running=$((running + 1))
			fi
		fi
	done
	for n in "${ORDER[@]}"; do
		[ "${STATE[$n]}" = pending ] || continue
		ready=1
		for d in ${NEEDS[$n]}; do
			case ${STATE[$d]} in
			done) ;;
			failed | skipped)
				ready=-1
				break
				;;
			*) ready=0 ;;
			esac
		done
		if [ "$ready" = -1 ]; then
			STATE[$n]=skipped
			if [[ " ${TIERS[*]} " == *" $n "* ]]; then tier_broken "$n" "not run: $d failed"; fi
		elif [ "$ready" = 1 ] && ((running < SLOTS)); then
			launch "$n"
			running=$((running + 1))
		else
			waiting=$((waiting + 1))
		fi
	done
	((running + waiting)) || break
	status
	sleep 1
done
clear_status

total=$(($(date +%s) - start))
read -r P F S < <(awk '{ p += $2; f += $3; s += $4 } END { print p+0, f+0, s+0 }' "$COUNTS")
echo
echo "make check$( ((QUICK)) && echo -quick): $total s wall time; per job (jobs overlap):"
printf '  %-16s %6s %6s  %s\n' job wall CPU result
for n in "${ORDER[@]}"; do
	t="-" c="-"
	[ -n "${T1[$n]:-}" ] && t="$((T1[$n] - T0[$n]))s" c="$(cpu_s "$n")s"
	res=$(awk -v n="$n" '$1 == n { printf "%d passed, %d failed, %d skipped", $2, $3, $4 }' "$COUNTS")
	printf '  %-16s %6s %6s  %s\n' "$n" "$t" "$c" "${res:-${STATE[$n]}}"
done
echo "Logs: $LOGS"
[ "$F" = 0 ] || echo "Something failed: the FAIL lines above name it; the logs hold the details."
echo "$P passed, $F failed, $S skipped"
[ "$F" = 0 ]
exit
}
