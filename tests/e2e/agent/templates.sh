#!/usr/bin/env bash
# e2e: snapshot templates through ember-agent, inside the shared nested
# host (tests/e2e/lib.sh's in_host).
#
#   templates.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# Create a source sandbox and write a file; CreateSnapshot (the source keeps
# running); spawn N (default 5, EMBER_AGENT_CLONES) sandboxes from it at
# once: each has the file, its own hostname, token and random bytes, and
# its own disk writes; DeleteSnapshot while they run keeps the files (and
# no new sandbox starts from it); a clone pauses and resumes; destroying the
# last clone removes the template's files; nothing is left.
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@" -- "${EMBER_AGENT_CLONES:-5}"
start_agent agent-tmpl

N=${INNER_ARGS[0]:-5}
SRC=e2e-tmpl-src
s=$(rpc CreateSandbox "{\"sandboxId\":\"$SRC\",\"vcpus\":1,\"memoryMib\":128}")
[ "$s" = 200 ] || { bad "CreateSandbox answered $s: $(cat "$T/out")"; ID=$SRC; dump_logs; exit 1; }
pass "CreateSandbox $SRC"
content=$(printf 'from the template\n' | base64 -w0)
s=$(rpc WriteFile "{\"sandboxId\":\"$SRC\",\"path\":\"/root/src.txt\",\"content\":\"$content\"}")
[ "$s" = 200 ] && pass "WriteFile on the source" || bad "WriteFile answered $s: $(cat "$T/out")"

s=$(rpc CreateSnapshot "{\"sandboxId\":\"$SRC\",\"name\":\"tmpl1\"}")
[ "$s" = 200 ] && pass "CreateSnapshot: $(cat "$T/out")" ||
	{ bad "CreateSnapshot answered $s: $(cat "$T/out")"; ID=$SRC; dump_logs; exit 1; }
s=$(rpc CreateSnapshot "{\"sandboxId\":\"$SRC\",\"name\":\"tmpl1\"}")
[ "$s" = 409 ] && pass "CreateSnapshot of a taken name: 409" ||
	bad "CreateSnapshot of a taken name answered $s: $(cat "$T/out")"
if exec_rpc "$SRC" '["sh","-c","echo source-alive"]' && grep -q source-alive "$T/exec"; then
	pass "the source keeps running"
else
	bad "the source does not answer: $(cat "$T/exec" 2>/dev/null)"
fi

# N clones at once.
for i in $(seq "$N"); do
	rpc CreateSandbox "{\"sandboxId\":\"e2e-clone-$i\",\"snapshotTemplate\":\"tmpl1\",\"vcpus\":4,\"memoryMib\":999}" \
		"$T/c$i" >"$T/s$i" &
done
wait $(jobs -p | grep -v "^$apid$")
kill -0 "$apid" 2>/dev/null || { bad "the agent died"; echo "--- agent log"; tail -n 60 "$T/agent.log"; exit 1; }
ok=0
for i in $(seq "$N"); do
	if [ "$(cat "$T/s$i")" = 200 ] && grep -q '"vcpus":1' "$T/c$i" && grep -q '"memoryMib":"128"' "$T/c$i"; then
		ok=$((ok + 1))
	else
		bad "clone $i answered $(cat "$T/s$i"): $(cat "$T/c$i")"
	fi
done
[ "$ok" = "$N" ] && pass "$N clones created at once, each with the template's 1 vCPU and 128 MiB" ||
	{ ID=e2e-clone-1; dump_logs; }

: >"$T/ids"
for i in $(seq "$N"); do
	id=e2e-clone-$i
	s=$(rpc ReadFile "{\"sandboxId\":\"$id\",\"path\":\"/root/src.txt\"}")
	[ "$s" = 200 ] && grep -q "\"content\":\"$content\"" "$T/out" || bad "$id: ReadFile answered $s: $(cat "$T/out")"
	own=$(printf 'written by %s\n' "$id" | base64 -w0)
	s=$(rpc WriteFile "{\"sandboxId\":\"$id\",\"path\":\"/root/own.txt\",\"content\":\"$own\"}")
	[ "$s" = 200 ] || bad "$id: WriteFile answered $s"
	if exec_rpc "$id" '["sh","-c","sync; hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d \" \\n\"; echo"]'; then
		grep -q "\"stdoutData\": \"$id" "$T/exec" || bad "$id: hostname: $(cat "$T/exec")"
		/usr/bin/python3 -c 'import json,sys
out = "".join(json.loads(l).get("stdoutData", "") for l in open(sys.argv[1]))
print(out.split()[-1])' "$T/exec" >>"$T/ids"
	else
		bad "$id: Exec failed"
	fi
	/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' \
		"$T/state/sandboxes/$id/state.json" >>"$T/tokens"
done
[ "$(sort -u "$T/ids" | wc -l)" = "$N" ] && pass "$N clones: the template's file, own hostname, different random bytes" ||
	bad "random bytes not all different: $(cat "$T/ids")"
[ "$(sort -u "$T/tokens" | wc -l)" = "$N" ] && pass "$N clones: $N different tokens" ||
	bad "tokens not all different"
s=$(rpc ReadFile "{\"sandboxId\":\"e2e-clone-1\",\"path\":\"/root/own.txt\"}")
own1=$(printf 'written by %s\n' e2e-clone-1 | base64 -w0)
[ "$s" = 200 ] && grep -q "\"content\":\"$own1\"" "$T/out" && pass "each clone keeps its own writes" ||
	bad "clone 1's own file: $s $(cat "$T/out")"
s=$(rpc ReadFile "{\"sandboxId\":\"$SRC\",\"path\":\"/root/own.txt\"}")
[ "$s" = 404 ] && pass "the source does not see the clones' writes" || bad "the source's ReadFile of own.txt answered $s"

s=$(rpc PauseSandbox '{"sandboxId":"e2e-clone-1"}')
[ "$s" = 200 ] && pass "a clone pauses (a diff on the template): $(cat "$T/out")" || bad "clone PauseSandbox answered $s: $(cat "$T/out")"

s=$(rpc DeleteSnapshot '{"name":"tmpl1"}')
[ "$s" = 200 ] && grep -q '"filesKept":true' "$T/out" && pass "DeleteSnapshot while clones run: files kept" ||
	bad "DeleteSnapshot answered $s: $(cat "$T/out")"
[ -d "$T/state/templates/tmpl1" ] && pass "the template's folder is still there" || bad "the template's folder is gone"
s=$(rpc CreateSandbox '{"sandboxId":"e2e-clone-x","snapshotTemplate":"tmpl1"}')
[ "$s" = 404 ] && pass "no new sandbox from a deleted template: 404" || bad "CreateSandbox from a deleted template answered $s"
s=$(rpc DeleteSnapshot '{"name":"tmpl1"}')
[ "$s" = 404 ] && pass "a second DeleteSnapshot: 404" || bad "a second DeleteSnapshot answered $s"

s=$(rpc ResumeSandbox '{"sandboxId":"e2e-clone-1"}')
[ "$s" = 200 ] && pass "the paused clone resumes after the template was deleted" || bad "clone ResumeSandbox answered $s: $(cat "$T/out")"
s=$(rpc ReadFile "{\"sandboxId\":\"e2e-clone-1\",\"path\":\"/root/own.txt\"}")
[ "$s" = 200 ] && grep -q "\"content\":\"$own1\"" "$T/out" && pass "its own file is still there" ||
	bad "clone 1 after resume: $s $(cat "$T/out")"

for i in $(seq "$N"); do
	s=$(rpc DestroySandbox "{\"sandboxId\":\"e2e-clone-$i\"}")
	[ "$s" = 200 ] || bad "DestroySandbox e2e-clone-$i answered $s"
	if [ "$i" -lt "$N" ] && [ ! -d "$T/state/templates/tmpl1" ]; then
		bad "the template's files went with clone $i of $N"
	fi
done
[ -d "$T/state/templates/tmpl1" ] && bad "the template's files stay after the last clone" ||
	pass "the template's files went with the last clone"
s=$(rpc DestroySandbox "{\"sandboxId\":\"$SRC\"}")
[ "$s" = 200 ] && pass "DestroySandbox $SRC" || bad "DestroySandbox $SRC answered $s"

left=$(ls "$T/state/sandboxes" "$RUN/vms" 2>/dev/null | grep -v ':$' | grep . | tr '\n' ' ')
pgrep -f "ember-vmm.*--id e2e-" >/dev/null && left="$left VMM-processes"
pgrep -f "ember-uffd.*--id e2e-" >/dev/null && left="$left page-servers"
[ -z "$left" ] && pass "nothing is left" || bad "left behind: $left"

if [ "$failures" -ne 0 ]; then ID=$SRC; dump_logs; fi
echo "$failures failed"
[ "$failures" -eq 0 ]
