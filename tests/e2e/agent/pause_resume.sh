#!/usr/bin/env bash
# e2e: PauseSandbox and ResumeSandbox through ember-agent, inside the shared
# nested host (tests/e2e/lib.sh's in_host).
#
#   pause_resume.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# Create a sandbox, write a file, start a background process; pause (full
# snapshot: the VMM is gone, exec is refused); two resumes at once (one
# wins, the other gets a conflict); the file and the process are still
# there and the guest answers with its new token; pause again (a diff) and
# resume again; pause while an exec streams output over vsock and resume;
# kill -9 the agent during a fourth pause and restart it: the
# sandbox is running or paused (then it resumes), with its state; destroy,
# and nothing is left (VMM, page server, files).
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@"
start_agent agent-pause

ID=e2e-pause-1
s=$(rpc CreateSandbox "{\"sandboxId\":\"$ID\",\"vcpus\":1,\"memoryMib\":128}")
[ "$s" = 200 ] || { bad "CreateSandbox answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
pass "CreateSandbox"
vmm1=$(field "$T/out" 'j["sandbox"]["vmmPid"]')

content=$(printf 'kept across pause\n' | base64 -w0)
s=$(rpc WriteFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/state.txt\",\"content\":\"$content\"}")
[ "$s" = 200 ] && pass "WriteFile" || bad "WriteFile answered $s: $(cat "$T/out")"
exec_rpc "$ID" '["sh","-c","setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!"]' || bad "Exec failed"
bgpid=$(grep -o '"stdoutData": "[0-9]*' "$T/exec" | grep -o '[0-9]*$')
[ -n "$bgpid" ] && pass "background process started, guest pid $bgpid" ||
	bad "no background pid: $(cat "$T/exec")"

s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
if [ "$s" = 200 ]; then
	pass "PauseSandbox (full): $(cat "$T/out")"
else
	bad "PauseSandbox answered $s: $(cat "$T/out")"; dump_logs; exit 1
fi
kill -0 "$vmm1" 2>/dev/null && bad "the VMM (pid $vmm1) still runs while paused" ||
	pass "no VMM while paused"
s=$(rpc ReadFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/state.txt\"}")
[ "$s" = 400 ] && grep -q failed_precondition "$T/out" &&
	pass "ReadFile while paused: 400 failed_precondition" ||
	bad "ReadFile while paused answered $s: $(cat "$T/out")"
s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 400 ] && pass "a second PauseSandbox of a paused sandbox: 400" ||
	bad "a second PauseSandbox answered $s: $(cat "$T/out")"

# Two resumes at once: one resumes, the other is told another is in flight.
rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}" "$T/r1" >"$T/s1" &
p1=$!
sleep 0.3
rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}" "$T/r2" >"$T/s2" &
p2=$!
wait $p1 $p2
s1=$(cat "$T/s1") s2=$(cat "$T/s2")
if [ "$s1" = 200 ] && [ "$s2" = 409 ] && grep -q aborted "$T/r2"; then
	pass "ResumeSandbox: $(cat "$T/r1"); the one in parallel: 409 aborted"
elif [ "$s2" = 200 ] && [ "$s1" = 409 ]; then
	pass "ResumeSandbox: $(cat "$T/r2"); the one in parallel: 409 aborted"
else
	bad "two ResumeSandbox answered $s1 ($(cat "$T/r1")) and $s2 ($(cat "$T/r2"))"
	dump_logs; exit 1
fi

check_state() { # WHEN
	s=$(rpc ReadFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/state.txt\"}")
	[ "$s" = 200 ] && grep -q "\"content\":\"$content\"" "$T/out" &&
		pass "$1: the file is still there" || bad "$1: ReadFile answered $s: $(cat "$T/out")"
	if exec_rpc "$ID" "[\"sh\",\"-c\",\"kill -0 $bgpid && echo alive; hostname\"]"; then
		grep -q '"stdoutData": "alive' "$T/exec" && grep -q "$ID" "$T/exec" &&
			pass "$1: the background process $bgpid is alive, hostname $ID" ||
			bad "$1: exec: $(cat "$T/exec")"
	else
		bad "$1: Exec failed"
	fi
}
check_state "after the first resume"

s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && [ "$(field "$T/out" 'j.get("generation", 0)')" = 1 ] &&
	pass "PauseSandbox (diff): $(cat "$T/out")" ||
	{ bad "second PauseSandbox answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
s=$(rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && pass "second ResumeSandbox: $(cat "$T/out")" ||
	{ bad "second ResumeSandbox answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
vmm3=$(field "$T/out" 'j["sandbox"]["vmmPid"]')
check_state "after the second resume"

# A pause while the guest streams output to the host over vsock: the
# snapshot is taken during vsock traffic (a known Firecracker failure).
# The stream ends with the VMM; the sandbox resumes and answers.
exec_request "$ID" '["sh","-c","while :; do cat /bin/busybox; done"]' "$T/req-stream"
curl -sS --max-time 240 -H 'Content-Type: application/connect+json' \
     --data-binary @"$T/req-stream" -o "$T/stream-bg" "$U/Exec" 2>/dev/null &
cpid=$!
streamed() { stat -c %s "$T/stream-bg" 2>/dev/null || echo 0; }
for _ in $(seq 300); do [ "$(streamed)" -gt 262144 ] && break; sleep 0.1; done
before=$(streamed)
s=$(rpc PauseSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && [ "$before" -gt 262144 ] &&
	pass "PauseSandbox during a streaming exec ($before bytes streamed before it)" ||
	{ bad "PauseSandbox during a streaming exec ($before bytes before it) answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
for _ in $(seq 300); do kill -0 $cpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $cpid 2>/dev/null; then
	bad "the streaming exec did not end with the paused VMM"
	kill $cpid 2>/dev/null
fi
wait $cpid 2>/dev/null
s=$(rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && pass "ResumeSandbox after a pause during vsock traffic" ||
	{ bad "ResumeSandbox after a pause during vsock traffic answered $s: $(cat "$T/out")"; dump_logs; exit 1; }
check_state "after a pause during vsock traffic"

# kill -9 the agent while it pauses; a restarted agent finds the sandbox
# either running or paused, never lost.
rpc PauseSandbox "{\"sandboxId\":\"$ID\"}" "$T/p9" >/dev/null 2>&1 &
sleep 0.5
kill -9 "$apid"
wait "$apid" 2>/dev/null
wait
start_agent agent-pause
st=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$T/state/sandboxes/$ID/state.json")
case $st in
running) pass "after kill -9 during a pause and a restart: running" ;;
paused)
	s=$(rpc ResumeSandbox "{\"sandboxId\":\"$ID\"}")
	[ "$s" = 200 ] && pass "after kill -9 during a pause and a restart: paused, and it resumes" ||
		bad "resume after the restart answered $s: $(cat "$T/out")" ;;
*) bad "after kill -9 during a pause and a restart: $st" ;;
esac
vmm3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vmm_pid"])' "$T/state/sandboxes/$ID/state.json")
check_state "after the agent's restart"

s=$(rpc DestroySandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && pass "DestroySandbox" || bad "DestroySandbox answered $s: $(cat "$T/out")"
left=""
kill -0 "$vmm3" 2>/dev/null && left="$left VMM-pid-$vmm3"
[ -e "$T/state/sandboxes/$ID" ] && left="$left $T/state/sandboxes/$ID"
[ -e "$RUN/vms/$ID" ] && left="$left $RUN/vms/$ID"
pgrep -f "ember-vmm.*--id $ID" >/dev/null && left="$left a-VMM-process"
pgrep -f "ember-uffd.*--id $ID" >/dev/null && left="$left a-page-server"
[ -z "$left" ] && pass "nothing of the sandbox is left" || bad "left behind:$left"

if [ "$failures" -ne 0 ]; then dump_logs; fi
echo "$failures failed"
[ "$failures" -eq 0 ]
