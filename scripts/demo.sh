#!/usr/bin/env bash
# make demo: build what is needed, boot Bochs (emulated VMX), load shadowvm and show what it
# found. Output streams from the guest's serial port as it boots.
# demo.sh [suite]: the in-guest script to run (default demo; make demo-linux: demo-linux).
source "$(dirname "$0")/lib.sh"
suite=${1:-demo}

"$SHADOWVM_TOP/scripts/setup-host.sh"
images=$("$SHADOWVM_TOP/scripts/build-all.sh")
read -r bzimage initrd <<< "$images"
log=$SHADOWVM_OUT/logs/$suite-serial.log
mkdir -p "$(dirname "$log")"
: > "$log"
step "Booting Linux in Bochs (emulated VT-x; about a minute to the demo output, then the guest)"
"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$initrd" "$suite" "$log" 1800 &
bochs=$!
# Show the demo's own output as it arrives (not the markers around it).
tail -n +1 -F --pid=$bochs "$log" 2>/dev/null | sed -u -n "/^SHADOWVM-SUITE-BEGIN $suite /,/^SHADOWVM-SUITE-END/{/^SHADOWVM-/!p}"
wait $bochs
grep -q "^SHADOWVM-SUITE-END $suite rc=0" "$log" || die "the demo did not complete; serial log: $log"
step "Done. Full serial log: $log"
