#!/usr/bin/env bash
# e2e: working-set prefetch through ember-agent, inside the shared nested
# host (tests/e2e/lib.sh's in_host).
#
#   prefetch.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# A source sandbox with a file and a background process becomes a template
# (stopSource). The first clone records the template's working set; the
# second runs with it prefetched and must fault at most a tenth as many
# pages until its guest agent answers; both have the file and the process.
# A clone with prefetch OFF faults like the first; an EAGER one installs
# all memory first. A corrupt working-set file is ignored (the clone runs
# lazily, records anew), a later clone prefetches again. A clone paused and
# resumed twice: the second resume prefetches its own chain's working set.
# /metrics counts restores by mode. Fault counts, not times, are compared.
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@"
start_agent agent-prefetch

# restore FILE -> "MODE FAULTS PREFETCHED" of a CreateSandbox/ResumeSandbox answer
restore() {
	/usr/bin/python3 -c 'import json,sys
r = json.load(open(sys.argv[1])).get("restore", {})
print(r.get("prefetch", "none").replace("PREFETCH_MODE_", ""),
      int(r.get("faultsUntilReady", 0)), int(r.get("prefetchedPages", 0)))' "$1"
}
# check_guest ID: the template's file and background process are there.
check_guest() {
	local out
	out=$(exec_out "$1" "[\"sh\",\"-c\",\"cat /root/keep.txt; kill -0 $bgpid && echo process-alive\"]")
	if [ "$out" = "$(printf 'kept in the template\nprocess-alive')" ]; then
		pass "$1: the file and the background process (guest pid $bgpid) are there"
	else
		bad "$1: guest state: '$out'"
	fi
}
WS=$T/state/templates/tmpl/working-set.ws
wait_ws() { # FILE: the recording ends a second after the guest answered
	for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
	return 1
}
# clone ID [MODE]: CreateSandbox from the template; sets mode faults pref
clone() {
	local extra=""
	[ -n "${2:-}" ] && extra=",\"prefetch\":\"PREFETCH_MODE_$2\""
	s=$(rpc CreateSandbox "{\"sandboxId\":\"$1\",\"snapshotTemplate\":\"tmpl\"$extra}")
	if [ "$s" != 200 ]; then
		bad "CreateSandbox $1 answered $s: $(cat "$T/out")"; dump_logs "$1"
		return 1
	fi
	read -r mode faults pref <<<"$(restore "$T/out")"
	step "$1: prefetch $mode, $faults faults until ready, $pref pages prefetched"
}

SRC=e2e-pf-src
s=$(rpc CreateSandbox "{\"sandboxId\":\"$SRC\",\"vcpus\":1,\"memoryMib\":128}")
[ "$s" = 200 ] || { bad "CreateSandbox answered $s: $(cat "$T/out")"; dump_logs $SRC; exit 1; }
content=$(printf 'kept in the template\n' | base64 -w0)
s=$(rpc WriteFile "{\"sandboxId\":\"$SRC\",\"path\":\"/root/keep.txt\",\"content\":\"$content\"}")
[ "$s" = 200 ] || bad "WriteFile answered $s: $(cat "$T/out")"
bgpid=$(exec_out $SRC '["sh","-c","setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!"]')
[ -n "$bgpid" ] || bad "no background pid"
# Written back now, not by a flusher timer that would fire in one clone and
# not in another: the clones' fault counts then differ by what the working
# set is about, not by the guest's background writeback.
exec_out $SRC '["sync"]' >/dev/null || bad "sync failed"
s=$(rpc CreateSnapshot "{\"sandboxId\":\"$SRC\",\"name\":\"tmpl\",\"stopSource\":true}")
[ "$s" = 200 ] && pass "template from a source with a file and a process" ||
	{ bad "CreateSnapshot answered $s: $(cat "$T/out")"; dump_logs $SRC; exit 1; }

# 1. The first clone records; the second prefetches.
clone e2e-pf-1 || exit 1
mode1=$mode faults1=$faults
[ "$mode1" = RECORD ] && [ "$faults1" -gt 0 ] &&
	pass "first clone: no working set yet, recorded ($faults1 faults until ready)" ||
	bad "first clone: prefetch $mode1, $faults1 faults"
check_guest e2e-pf-1
wait_ws "$WS" && pass "the working set is stored with the template ($(stat -c %s "$WS") bytes)" ||
	bad "no $WS"
rpc DestroySandbox '{"sandboxId":"e2e-pf-1"}' >/dev/null

clone e2e-pf-2 || exit 1
if [ "$mode" = ON ] && [ "$pref" -gt 0 ] && [ $((faults * 10)) -le "$faults1" ]; then
	pass "second clone: $pref pages prefetched, $faults faults until ready (first: $faults1; at most a tenth)"
else
	bad "second clone: prefetch $mode, $pref prefetched, $faults faults until ready (first: $faults1)"
	dump_logs e2e-pf-2
fi
check_guest e2e-pf-2

# 2. Per-request modes: OFF is lazy again, EAGER installs everything.
clone e2e-pf-off OFF || exit 1
[ "$mode" = OFF ] && [ "$pref" = 0 ] && [ $((faults * 2)) -ge "$faults1" ] &&
	pass "prefetch OFF: lazy, $faults faults until ready" ||
	bad "prefetch OFF: $mode, $faults faults, $pref prefetched (first: $faults1)"
rpc DestroySandbox '{"sandboxId":"e2e-pf-off"}' >/dev/null
clone e2e-pf-eager EAGER || exit 1
# 128 MiB is 32768 pages; a few the VMM touched while loading are there
# already and not counted.
[ "$mode" = EAGER ] && [ "$pref" -ge 32000 ] && [ $((faults * 10)) -le "$faults1" ] &&
	pass "prefetch EAGER: $pref of 32768 pages first, $faults faults until ready" ||
	bad "prefetch EAGER: $mode, $faults faults, $pref prefetched"
check_guest e2e-pf-eager
rpc DestroySandbox '{"sandboxId":"e2e-pf-eager"}' >/dev/null

# 3. A corrupt working set is ignored (with a warning) and recorded anew.
/usr/bin/python3 -c 'import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[80] ^= 0xff
open(p, "wb").write(b)' "$WS"
clone e2e-pf-bad || exit 1
if [ "$mode" = RECORD ] && grep -q "working-set.ws: bad checksum; ignored" "$T/state/sandboxes/e2e-pf-bad/uffd.log"; then
	pass "a corrupt working set is ignored with a warning, the clone runs lazily"
else
	bad "corrupt working set: prefetch $mode; uffd.log: $(grep -i prefetch "$T/state/sandboxes/e2e-pf-bad/uffd.log")"
fi
check_guest e2e-pf-bad
sleep 2 # the recording's tail
rpc DestroySandbox '{"sandboxId":"e2e-pf-bad"}' >/dev/null
clone e2e-pf-3 || exit 1
[ "$mode" = ON ] && [ $((faults * 10)) -le "$faults1" ] &&
	pass "after it was recorded anew, a clone prefetches again ($faults faults)" ||
	bad "after the re-recording: prefetch $mode, $faults faults"
rpc DestroySandbox '{"sandboxId":"e2e-pf-3"}' >/dev/null

# 4. Pause and resume twice: the second resume prefetches the set the
# first recorded into the sandbox's own snap/.
# TODO(agent): in one of two runs here this section hung (no answer before
# meson's 900 s timeout; the clones before it had all passed); its cause
# was not found in time: the agent's and the sandbox's logs will say.
ID=e2e-pf-2
for i in 1 2; do
	s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
	[ "$s" = 200 ] || { bad "PauseSandbox $i answered $s: $(cat "$T/out")"; dump_logs $ID; break; }
	s=$(rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}")
	[ "$s" = 200 ] || { bad "ResumeSandbox $i answered $s: $(cat "$T/out")"; dump_logs $ID; break; }
	read -r mode faults pref <<<"$(restore "$T/out")"
	step "resume $i: prefetch $mode, $faults faults until ready, $pref prefetched"
	if [ "$i" = 1 ]; then
		rmode=$mode rfaults=$faults
		wait_ws "$T/state/sandboxes/$ID/snap/working-set.ws" || bad "no working set in $ID's snap/"
	fi
	check_guest $ID
done
[ "$rmode" = RECORD ] && [ "$mode" = ON ] && [ $((faults * 10)) -le "$rfaults" ] &&
	pass "second resume: $faults faults until ready with its working set (first resume: $rfaults)" ||
	bad "resumes: first $rmode $rfaults faults, second $mode $faults faults"

m=$(curl -sS "$BASE/metrics")
echo "$m" | grep -Eq '^ember_agent_restores_total\{prefetch="on"\} [1-9]' &&
	echo "$m" | grep -Eq '^ember_agent_restore_faults_total\{prefetch="record"\} [1-9]' &&
	echo "$m" | grep -Eq '^ember_agent_restore_prefetched_pages_total\{prefetch="eager"\} [1-9]' &&
	pass "/metrics counts restores, faults and prefetched pages by mode" ||
	bad "/metrics: $(echo "$m" | grep restore)"

s=$(rpc DestroySandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] || bad "DestroySandbox $ID answered $s"
s=$(rpc DeleteSnapshot '{"name":"tmpl"}')
[ "$s" = 200 ] || bad "DeleteSnapshot answered $s: $(cat "$T/out")"
left=$(ls "$T/state/sandboxes" "$T/state/templates" "$RUN/vms" 2>/dev/null | grep -v ':$' | grep . | tr '\n' ' ')
pgrep -f "ember-vmm.*--id e2e-pf" >/dev/null && left="$left VMM-processes"
pgrep -f "ember-uffd.*--id e2e-pf" >/dev/null && left="$left page-servers"
[ -z "$left" ] && pass "nothing is left" || bad "left behind: $left"

echo "$failures failed"
[ "$failures" -eq 0 ]
