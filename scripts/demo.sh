#!/usr/bin/env bash
# make demo: build what is needed, boot Bochs (emulated VMX), load shadowvm and show what it
# found. Output streams from the guest's serial port as it boots.
source "$(dirname "$0")/lib.sh"

"$SHADOWVM_TOP/scripts/setup-host.sh"
images=$("$SHADOWVM_TOP/scripts/build-all.sh")
read -r bzimage initrd <<< "$images"
log=$SHADOWVM_OUT/logs/demo-serial.log
mkdir -p "$(dirname "$log")"
: > "$log"
step "Booting Linux in Bochs (emulated VT-x; about a minute to the demo output, then the guest)"
"$SHADOWVM_TOP/scripts/run-bochs.sh" "$bzimage" "$initrd" demo "$log" 900 &
bochs=$!
# Show the demo's own output as it arrives (not the markers around it).
tail -n +1 -F --pid=$bochs "$log" 2>/dev/null | sed -u -n '/^SHADOWVM-SUITE-BEGIN demo/,/^SHADOWVM-SUITE-END/{/^SHADOWVM-/!p}'
wait $bochs
grep -q '^SHADOWVM-SUITE-END demo rc=0' "$log" || die "the demo did not complete; serial log: $log"
step "Done. Full serial log: $log"
