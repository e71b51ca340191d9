#!/usr/bin/env bash
# e2e: twenty pause/resume cycles of one sandbox through ember-agent, with
# a change to its files between each (e2b lost changes after the second
# cycle). Runs inside the shared nested host (tests/e2e/lib.sh's in_host).
#
#   cycles.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# A background counter starts in the guest. Then, each cycle N: one exec
# appends N to /root/cycles.log, writes 4 KiB of the guest's random bytes
# to /root/cycle-N and prints what the guest has (the log, the checksum of
# every cycle file, the counter); PauseSandbox (generation N-1: a full
# snapshot first, diffs after); ResumeSandbox (ember-uffd serves the whole
# chain of generations lazily). What every exec prints must hold every
# earlier change, byte for byte, and a counter that went on. Destroy, and
# nothing of the sandbox is left. EMBER_E2E_CYCLES sets the count (20).
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@" -- "${EMBER_E2E_CYCLES:-20}"
CYCLES=${INNER_ARGS[0]:-20}
start_agent agent-cycles

ID=e2e-cycles-1
s=$(rpc CreateSandbox "{\"sandboxId\":\"$ID\",\"vcpus\":1,\"memoryMib\":128}")
[ "$s" = 200 ] || { bad "CreateSandbox answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
pass "CreateSandbox"
exec_rpc "$ID" '["sh","-c","setsid sh -c '"'"'i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.2; done'"'"' </dev/null >/dev/null 2>&1 & sleep 0.5; cat /root/counter"]' ||
	{ bad "Exec of the counter failed"; dump_logs; exit 1; }

# What the guest prints, after cycle N's change (N = 0: none).
report='echo log $(cat /root/cycles.log 2>/dev/null); for f in $(ls /root | grep ^cycle- | sort -t- -k2 -n); do echo sum $f $(md5sum < /root/$f); done; echo counter $(cat /root/counter)'

sums=$T/sums  # "cycle-N SUM" of every change made so far
: >"$sums"
last_counter=0
first_counter=
# check_report N WHEN: the guest's report holds cycles 1..N, every sum as
# recorded (the sum of cycle N itself is recorded now), and a counter not
# behind the one seen before.
check_report() {
	local n=$1 when=$2 want got counter
	want="log $(seq -s ' ' 1 "$n" 2>/dev/null)"
	[ "$n" = 0 ] && want="log"
	got=$(grep '^log' "$T/report" | sed 's/ *$//')
	if [ "$got" != "$want" ]; then
		bad "$when: /root/cycles.log reads '$got', expected '$want'"
		return 1
	fi
	if [ "$n" -gt 0 ] && ! grep -q "^cycle-$n " "$sums"; then
		grep "^sum cycle-$n " "$T/report" | cut -d' ' -f2- >>"$sums"
	fi
	got=$(grep '^sum ' "$T/report" | cut -d' ' -f2-)
	if [ "$got" != "$(cat "$sums")" ] || [ "$(wc -l <"$sums")" != "$n" ]; then
		bad "$when: the cycle files differ: $(echo "$got" | tr '\n' ' ') against $(tr '\n' ' ' <"$sums")"
		return 1
	fi
	# The guest's clock stops while it is paused: between two reports
	# the counter may not have ticked, but it never goes back.
	counter=$(grep '^counter' "$T/report" | cut -d' ' -f2)
	if [ -z "$counter" ] || [ "$counter" -lt "$last_counter" ]; then
		bad "$when: the counter reads '$counter', was $last_counter"
		return 1
	fi
	[ -n "$first_counter" ] || first_counter=$counter
	last_counter=$counter
	return 0
}

ok=0
for n in $(seq "$CYCLES"); do
	if ! exec_out "$ID" "[\"sh\",\"-c\",\"echo $n >> /root/cycles.log; head -c 4096 /dev/urandom > /root/cycle-$n; $report\"]" >"$T/report"; then
		bad "cycle $n: Exec failed"; dump_logs; break
	fi
	check_report "$n" "cycle $n, before its pause" || { dump_logs; break; }
	s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
	gen=$(field "$T/out" 'j.get("generation", 0)' 2>/dev/null)
	if [ "$s" != 200 ] || [ "$gen" != $((n - 1)) ]; then
		bad "cycle $n: PauseSandbox answered $s (generation '$gen'): $(cat "$T/out")"
		dump_logs; break
	fi
	s=$(rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}")
	if [ "$s" != 200 ]; then
		bad "cycle $n: ResumeSandbox answered $s: $(cat "$T/out")"
		dump_logs; break
	fi
	ok=$n
done
if [ "$ok" = "$CYCLES" ]; then
	if exec_out "$ID" "[\"sh\",\"-c\",\"$report\"]" >"$T/report" &&
	   check_report "$CYCLES" "after the last resume"; then
		if [ "$last_counter" -gt "$first_counter" ]; then
			pass "$CYCLES pause/resume cycles (generations 0 to $((CYCLES - 1))): every change of every cycle is there, the counter went from $first_counter to $last_counter"
		else
			bad "the counter stayed at $first_counter through $CYCLES cycles"
		fi
	else
		bad "after the last resume: Exec failed or the report differs"
		dump_logs
	fi
fi

vmm=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("vmm_pid", 0))' "$T/state/sandboxes/$ID/state.json" 2>/dev/null)
s=$(rpc DestroySandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && pass "DestroySandbox" || bad "DestroySandbox answered $s: $(cat "$T/out")"
left=""
[ -n "$vmm" ] && [ "$vmm" != 0 ] && kill -0 "$vmm" 2>/dev/null && left="$left VMM-pid-$vmm"
[ -e "$T/state/sandboxes/$ID" ] && left="$left $T/state/sandboxes/$ID"
[ -e "$RUN/vms/$ID" ] && left="$left $RUN/vms/$ID"
pgrep -f "ember-vmm.*--id $ID" >/dev/null && left="$left a-VMM-process"
pgrep -f "ember-uffd.*--id $ID" >/dev/null && left="$left a-page-server"
[ -z "$left" ] && pass "nothing of the sandbox is left" || bad "left behind:$left"

echo "$failures failed"
[ "$failures" -eq 0 ]
