#!/usr/bin/env bash
# make bench: one boot of the test kernel runs every benchmark image under every backend,
# several runs each, then scripts/bench-report.py writes out/bench/{results.json,
# results.md,ratios.svg}. Bochs (emulated VT-x) here; QEMU with KVM (nested VT-x) where
# /dev/kvm is usable on an Intel host, which also makes the wall times meaningful.
#
# Settings (environment):
#   BENCH_BACKENDS     backends, in order (default "shadowvm kvm-ept0 kvm-ept1")
#   BENCH_RUNS         runs per image and backend (default 3); the report uses the median
#   BENCH_IMAGES       benchmark images (default "bench-lm bench-pae bench-32"; the quick
#                      variants are bench-<mode>-quick)
#   BENCH_EXIT_CYCLES  modelled cost of one VM exit round trip in cycles (default 1500)
#   BENCH_ISOLATE      1 (default): also run each workload alone, once per backend and
#                      mode, to count VM exits and MMU events per workload; 0: skip
#   BENCH_TIMEOUT      seconds for the whole boot (default 3600)
# Exits non-zero when the boot did not finish or no backend produced a result; a backend
# that fails or cannot run shows as "missing" in the report.
source "$(dirname "$0")/lib.sh"

BENCH_BACKENDS=${BENCH_BACKENDS:-shadowvm kvm-ept0 kvm-ept1}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_IMAGES=${BENCH_IMAGES:-bench-lm bench-pae bench-32}
BENCH_EXIT_CYCLES=${BENCH_EXIT_CYCLES:-1500}
BENCH_ISOLATE=${BENCH_ISOLATE:-1}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-3600}
out=$SHADOWVM_OUT/bench
log=$out/serial.log
start=$(date +%s)
mkdir -p "$out"

step "Building kernel, module, tests, launcher, guests and initramfs"
images=$("$SHADOWVM_TOP/scripts/build-all.sh") || die "build failed"
read -r bzimage initrd <<< "$images"

# Extra files for this boot go in a second cpio archive appended to the initramfs (the
# kernel unpacks concatenated archives), so out/tests and out/guests stay as make check
# uses them: the settings, and the isolation images.
extra=$(mktemp -d "$SHADOWVM_OUT/bench-extra.XXXXXX")
trap 'rm -rf "$extra"' EXIT
mkdir -p "$extra/tests" "$extra/guests/iso"
isolate=
if [ "$BENCH_ISOLATE" = 1 ]; then
	# Isolation images: one workload at its normal count, every other count at 1, plus
	# "min" with all counts at 1. A workload's exits = its image's minus min's.
	step "Building the isolation images"
	declare -A knob=([compute]=COMPUTE_LOOPS [first_touch]=TOUCH_PAGES
		[cr3_pingpong]=PINGPONG_SWITCHES [invlpg]=INVLPG_LOOPS [pt_storm]=STORM_FLIPS
		[cow_fork]=COW_PAGES [random_access]=RANDOM_READS)
	for w in min "${!knob[@]}"; do
		flags=
		for k in "${!knob[@]}"; do [ "$k" = "$w" ] || flags+=" -D${knob[$k]}=1"; done
		logged "$out/iso-build.log" make -C "$SHADOWVM_TOP/samples/guests" \
			O="$out/guests-iso/$w" BENCH_FLAGS="$flags"
		for img in $BENCH_IMAGES; do
			[ -f "$out/guests-iso/$w/$img.elf" ] && cp "$out/guests-iso/$w/$img.elf" "$extra/guests/iso/$img-$w.elf"
		done
		isolate+=" $w"
	done
fi
cat > "$extra/tests/bench.conf" <<CONF
BENCH_BACKENDS="$BENCH_BACKENDS"
BENCH_IMAGES="$BENCH_IMAGES"
BENCH_RUNS=$BENCH_RUNS
BENCH_ISOLATE="${isolate# }"
CONF
(cd "$extra" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$extra/extra.cpio.gz"
cat "$initrd" "$extra/extra.cpio.gz" > "$out/initramfs.cpio.gz"

platform=bochs
if [ -w /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then platform=qemu-kvm; fi
step "Booting ($platform): suite bench, backends: $BENCH_BACKENDS; $BENCH_RUNS run(s) each (log: $log)"
boot_start=$(date +%s)
if [ $platform = bochs ]; then
	"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$out/initramfs.cpio.gz" bench "$log" "$BENCH_TIMEOUT"
else
	"$SHADOWVM_TOP/scripts/run-qemu.sh" "$bzimage" "$out/initramfs.cpio.gz" bench "$log" "$BENCH_TIMEOUT"
fi
boot_s=$(( $(date +%s) - boot_start ))
note "boot took $boot_s s"

step "Report: $out/results.md, results.json, ratios.svg"
python3 "$SHADOWVM_TOP/scripts/bench-report.py" --log "$log" --out "$out" --platform "$platform" \
	--exit-cycles "$BENCH_EXIT_CYCLES" --boot-seconds "$boot_s" \
	--commit "$(git -C "$SHADOWVM_TOP" describe --always --dirty 2>/dev/null || echo unknown)"
rc=$?
echo "make bench: $(( $(date +%s) - start )) s"
exit $rc
