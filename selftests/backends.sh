# shellcheck shell=sh
# Running guest images under the launcher's backends, for the in-guest suites guests-kvm,
# bench and bench-check (busybox sh; source after lib.sh).
#
# Backend names: shadowvm (/dev/shadowvm), shadowvm-gnp (the same with the module parameter
# gnp_bypass=1, off by default), kvm-ept0 and kvm-ept1 (kvm-intel with ept=0 or ept=1). shadowvm and kvm-intel cannot both hold VMX, so backend_use unloads whichever
# hypervisor the backend does not need before loading its own.
RUN=/bin/shadowvm-run
GUESTS=/guests
# The rows every benchmark image reports, one BENCH line each (workload and param); the
# full-size images add more address spaces, and the large-page rows depend on the paging
# mode (bench_expected).
BENCH_EXPECTED="compute:loops first_touch:pages hidden_fault:pages cr3_pingpong:spaces=2
cr3_pingpong:spaces=4 cr3_pingpong:spaces=8 cr3_pingpong:spaces=16 cr3_pingpong:spaces=32
kpti_pingpong:pairs=16 invlpg:pages pt_storm:pages pt_reuse:tables cow_fork:pages
random_access:pages"
# bench_expected <image>: BENCH_EXPECTED plus, for a full-size image, 64 spaces and 32
# pairs, plus the image's large-page rows (2 MiB pages in long mode and PAE, 4 MiB with
# 32-bit paging, 1 GiB in long mode; a BENCH-SKIP line stands for the 1 GiB row when the
# CPU has no 1 GiB pages).
bench_expected() {
	rows=$BENCH_EXPECTED
	case $1 in *-quick*) ;; *) rows="$rows cr3_pingpong:spaces=64 kpti_pingpong:pairs=32" ;; esac
	case $1 in
	*bench-lm*) echo "$rows large_page:kib=2048 large_page:kib=1048576" ;;
	*bench-pae*) echo "$rows large_page:kib=2048" ;;
	*) echo "$rows large_page:kib=4096" ;;
	esac
}

BACKEND_ERR=
unload_kvm() {
	for m in kvm_intel kvm irqbypass; do
		if lsmod | grep -q "^$m "; then rmmod "$m" || return 1; fi
	done
}
unload_shadowvm() { if lsmod | grep -q '^shadowvm '; then rmmod shadowvm; fi; }

# backend_use <backend>: makes it usable; on failure returns 1 with BACKEND_ERR set.
backend_use() {
	BACKEND_ERR=
	case $1 in
	shadowvm)
		out=$( { unload_kvm && load_shadowvm; } 2>&1) || { BACKEND_ERR="loading shadowvm: $out"; return 1; }
		;;
	shadowvm-gnp)
		out=$( { unload_shadowvm && unload_kvm && insmod $MOD/shadowvm.ko gnp_bypass=1; } 2>&1) ||
			{ BACKEND_ERR="loading shadowvm gnp_bypass=1: $out"; return 1; }
		;;
	kvm-ept0 | kvm-ept1)
		ept=${1#kvm-ept}
		out=$( { unload_shadowvm && unload_kvm && insmod $MOD/irqbypass.ko && insmod $MOD/kvm.ko &&
			insmod $MOD/kvm-intel.ko ept=$ept; } 2>&1) || { BACKEND_ERR="loading kvm-intel ept=$ept: $out"; return 1; }
		want=N; [ "$ept" = 1 ] && want=Y
		seen=$(cat /sys/module/kvm_intel/parameters/ept 2>&1)
		[ "$seen" = "$want" ] || { BACKEND_ERR="kvm-intel ept is '$seen', wanted $want"; return 1; }
		;;
	*) BACKEND_ERR="unknown backend $1"; return 1 ;;
	esac
}
# The launcher's --backend for a backend name.
launcher_backend() { case $1 in kvm-*) echo kvm ;; shadowvm-*) echo shadowvm ;; *) echo "$1" ;; esac; }
backend_done() { unload_kvm; unload_shadowvm; }

# guest_run <backend> <image> <timeout s> <serial file> <json file>: runs the image with
# --json (and $GUEST_RUN_OPTS); returns the launcher's exit status. Launcher messages go to
# <json file>.err.
GUEST_RUN_OPTS=
guest_run() {
	$RUN --backend "$(launcher_backend "$1")" --json --timeout "$3" --serial-log "$4" \
		$GUEST_RUN_OPTS "$GUESTS/$2.elf" > "$5" 2> "$5.err"
}

# One line of the launcher's JSON without the zero-valued backend statistics (the names
# with a dot) and without the counters of the benchmark marks that open a timed part
# (even values; what changed since the previous row's end is set-up and printing): they
# are most of its length, and the serial port is slow in Bochs.
json_compact() {
	sed -e 's/"[a-z0-9_]*\.[a-z0-9_.]*":0,//g' -e 's/,"[a-z0-9_]*\.[a-z0-9_.]*":0}/}/g' \
		-e 's/\("mark":[0-9]*[02468],[^{}]*"delta":{\)[^{}]*}/\1}/g' "$1" | tr -d '\n'
}

# bench_run <backend> <image> <run number> <timeout>: one benchmark run, printed as
#   BENCHRUN-BEGIN backend=B image=I run=N [$BENCH_RUN_TAGS]
#   BENCH ..., BENCH-SKIP ..., BENCH-SCALE ..., BENCH-TOTAL ... (the guest's lines)
#   BENCHRUN-JSON {...launcher statistics...}
#   BENCHRUN-END backend=B image=I run=N rc=<launcher status> seconds=<guest clock>
# (plus "BENCHRUN-ERROR <text>" lines when the launcher complained); seconds is the whole
# launcher process by the booted kernel's clock (VM creation and memory set-up included).
# Returns the status. $BENCH_RUN_OPTS: more launcher options (scale_run sets them).
bench_run() {
	s=/tmp/bench.serial j=/tmp/bench.json
	rm -f $s $j $j.err
	t0=$(cut -d' ' -f1 /proc/uptime)
	# Both backends on allocated, locked guest memory (shadowvm's always is).
	GUEST_RUN_OPTS="--prefault${BENCH_RUN_OPTS:+ $BENCH_RUN_OPTS}"
	guest_run "$1" "$2" "$4" $s $j
	rc=$?
	GUEST_RUN_OPTS=
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "BENCHRUN-BEGIN backend=$1 image=$2 run=$3${BENCH_RUN_TAGS:+ $BENCH_RUN_TAGS}"
	grep -E '^BENCH(-SKIP|-TOTAL|-SCALE)? ' $s 2>/dev/null
	[ -s $j ] && echo "BENCHRUN-JSON $(json_compact $j)"
	[ "$rc" != 0 ] && [ -s $j.err ] && head -n 3 $j.err | sed 's/^/BENCHRUN-ERROR /'
	echo "BENCHRUN-END backend=$1 image=$2 run=$3 rc=$rc seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
	return "$rc"
}

# The Linux guest's benchmark (samples/linux/lbench.c): its kernel and initramfs, and its
# command line: run-qemu.sh's, quiet (the boot log would cost one I/O exit a byte on the
# console, inside the boot row).
LINUX_BENCH_KERNEL=/linux/bzImage
LINUX_BENCH_INITRD=/linux/initramfs.cpio
LINUX_BENCH_APPEND="console=ttyS0 earlyprintk=serial,ttyS0,115200 pti=on panic=-1 oops=panic quiet"

# linux_bench_run <backend> <run number> <timeout> <rows> <scale>: one boot of the Linux
# guest with LINUXTEST_BENCH=<rows> LINUXTEST_SCALE=<scale>, printed as a BENCHRUN record
# with image=linux: the guest's BENCH lines, its BENCH-INIT line (the TSC at the end of the
# boot, mark 1; the launcher marks the kernel's entry, mark 0, with the guest's TSC) and
# BENCH-INFO lines (what the kernel did, e.g. the huge pages it made),
# "BENCHRUN-ERROR guest: ..." for each failed TAP test point, then the launcher's JSON and
# status as bench_run does. Its status is 0 when /init ended through the exit device with 0
# (every test point of the run passed). Returns the status.
linux_bench_run() {
	s=/tmp/bench.serial j=/tmp/bench.json
	rm -f $s $j $j.err
	echo "BENCHRUN-BEGIN backend=$1 image=linux run=$2"
	if [ ! -f $LINUX_BENCH_KERNEL ] || [ ! -f $LINUX_BENCH_INITRD ]; then
		echo "BENCHRUN-ERROR no $LINUX_BENCH_KERNEL or $LINUX_BENCH_INITRD in the initramfs (make linux-guest, then rebuild the initramfs)"
		echo "BENCHRUN-END backend=$1 image=linux run=$2 rc=255"
		return 255
	fi
	t0=$(cut -d' ' -f1 /proc/uptime)
	$RUN --backend "$(launcher_backend "$1")" --json --prefault --timeout "$3" --serial-log $s \
		--kernel $LINUX_BENCH_KERNEL --initrd $LINUX_BENCH_INITRD \
		--append "$LINUX_BENCH_APPEND LINUXTEST_BENCH=$4 LINUXTEST_SCALE=$5" < /dev/null > $j 2> $j.err
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	# The guest's console has CR LF line ends.
	tr -d '\r' < $s 2>/dev/null | grep -E '^BENCH(-SKIP|-INIT|-INFO)? '
	tr -d '\r' < $s 2>/dev/null | grep -E '^ *not ok |^Bail out!|Kernel panic' | head -n 5 |
		sed 's/^ */BENCHRUN-ERROR guest: /'
	[ -s $j ] && echo "BENCHRUN-JSON $(json_compact $j)"
	[ "$rc" != 0 ] && [ -s $j.err ] && head -n 3 $j.err | sed 's/^/BENCHRUN-ERROR /'
	echo "BENCHRUN-END backend=$1 image=linux run=$2 rc=$rc seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
	return "$rc"
}

# scale_run <backend> <image> <run number> <timeout> <memory MiB> <spaces a,b,...>: one run
# of a scale image (bench-scale-*) with that much guest memory and those address-space
# counts (the guest reads them from its command line); the record's BENCHRUN-BEGIN line
# also says memory_mib=<MiB>. Returns the launcher's status.
scale_run() {
	BENCH_RUN_OPTS="--memory $5M --append spaces=$6"
	BENCH_RUN_TAGS="memory_mib=$5"
	bench_run "$1" "$2" "$3" "$4"
	rc=$?
	BENCH_RUN_OPTS= BENCH_RUN_TAGS=
	return $rc
}
