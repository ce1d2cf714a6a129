#!/usr/bin/env bash
# Boots the test kernel in Bochs (which emulates VMX) from an isolinux ISO and runs the
# named in-guest suites; the serial log is the result. Bochs' own log goes beside it.
# Usage: run-bochs.sh <bzImage> <initrd> <suites,comma,separated> <serial log> [timeout s] [cpus]
# CPU count: the sixth argument or SHADOWVM_BOCHS_CPUS (default 1).
# The Bochs: SHADOWVM_BOCHS, or the one scripts/build-bochs.sh builds into the cache (about
# 2.8 times faster than Debian's); if that cannot be built, Debian's Bochs 2.7 with a
# warning.
# SHADOWVM_BOCHS_APPEND: more words for the kernel command line (suite parameters such as
# shadowvm.linux_scale=1).
# SHADOWVM_BOOT_MEGS: the machine's memory in MiB (default 512; Bochs takes at most 2048).
# make bench raises it for its 1 GiB scale guests; make check's boots keep the default.
# SHADOWVM_BOOT_BAUD: the serial console's speed (default: the kernel's, 9600 baud, which
# Bochs emulates: about a millisecond of emulated time per byte written).
# The timeout counts the CPU time Bochs uses (one host core at most), so a boot on a busy
# machine is not cut short; the wall clock limit is SHADOWVM_BOCHS_WALL_FACTOR (default 4)
# times that.
source "$(dirname "$0")/lib.sh"

kernel=$1 initrd=$2 suites=$3 log=$4 timeout=${5:-1800} cpus=${6:-${SHADOWVM_BOCHS_CPUS:-1}}
bochs=${SHADOWVM_BOCHS:-}
if [ -z "$bochs" ] && ! bochs=$("$SHADOWVM_TOP/scripts/build-bochs.sh"); then
	echo "WARNING: using Debian's Bochs 2.7, about 2.8 times slower (build-bochs.sh failed)" >&2
	bochs=/usr/bin/bochs
fi
# Debian's build has the internal debugger, which must be told to continue, and a GUI
# library to choose; the cache's build has neither.
debugger=0
"$bochs" --help 2>&1 | grep -q -- '-rc' && debugger=1
work=$(mktemp -d "$SHADOWVM_OUT/bochs.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/iso/isolinux"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$work/iso/isolinux/"
cp "$kernel" "$work/iso/bzImage"
cp "$initrd" "$work/iso/initrd"
# pty.legacy_count=0: no BSD ptys (nothing here uses them); creating their 512 devices took
# 4 s of guest time (800M Bochs instructions) in each boot of the debug kernel.
cat > "$work/iso/isolinux/isolinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /bzImage
  APPEND initrd=/initrd console=ttyS0${SHADOWVM_BOOT_BAUD:+,$SHADOWVM_BOOT_BAUD} quiet panic=-1 oops=panic pty.legacy_count=0 shadowvm.suites=$suites${SHADOWVM_BOCHS_APPEND:+ $SHADOWVM_BOCHS_APPEND}
CFG
genisoimage -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table -R "$work/iso"
rm -f "$log"
cat > "$work/bochsrc" <<RC
megs: ${SHADOWVM_BOOT_MEGS:-512}
cpu: model=corei7_haswell_4770, count=$cpus, ips=200000000, ignore_bad_msrs=1
# fastboot: no 3 s wait for the F12 boot menu (600M instructions of BIOS busy-waiting).
romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot
vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$log
clock: sync=none
log: $log.bochs
speaker: enabled=0
RC
rc_args=()
if ((debugger)); then
	echo c > "$work/cmds"
	rc_args=(-rc "$work/cmds")
	cat >> "$work/bochsrc" <<RC
display_library: rfb, options="timeout=0"
# Without a sound card on the host the ALSA driver makes Bochs 2.7 abort at start.
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
RC
else
	echo "display_library: nogui" >> "$work/bochsrc"
fi
# Guest poweroff ends Bochs with a "soft power off" panic: expected.
(
	ulimit -t "$timeout" -c 0
	timeout --foreground "$((timeout * ${SHADOWVM_BOCHS_WALL_FACTOR:-4}))" \
		"$bochs" -q -f "$work/bochsrc" "${rc_args[@]}" </dev/null >"$log.bochs-stdout" 2>&1
) || true
