#!/usr/bin/env bash
# e2e: ember-agent drives a real guest. Started outside, it re-runs itself
# inside the shared nested host (tests/e2e/lib.sh's in_host).
#
#   lifecycle.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#   (EMBER_AGENT_ROOTFS overrides ARTIFACTS-DIR/rootfs.ext4; the image must
#    hold /sbin/ember-init)
#
# Through the RPC with curl (application/json and connect+json):
# GetHostInfo, CreateSandbox from the base image, ListSandboxes, Exec
# (stdout, exit code, hostname), WriteFile/ReadFile round trip, ListFiles,
# DeleteFile, conflict and unimplemented answers, DestroySandbox; then that
# nothing is left: the VMM process, its sockets, its disk and folders.
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@"
start_agent agent

s=$(rpc GetHostInfo '{}')
[ "$s" = 200 ] && grep -q '"totalVcpus"' "$T/out" && pass "GetHostInfo: $(cat "$T/out")" ||
	bad "GetHostInfo answered $s: $(cat "$T/out")"

ID=e2e-agent-1
s=$(rpc CreateSandbox "{\"sandboxId\":\"$ID\",\"templateName\":\"base\",\"vcpus\":1,\"memoryMib\":256,\"env\":[{\"key\":\"EMBER_E2E\",\"value\":\"yes\"}]}")
if [ "$s" != 200 ]; then
	bad "CreateSandbox answered $s: $(cat "$T/out")"
	echo "--- agent log"; tail -n 30 "$T/agent.log"
	echo "--- console"; tail -n 30 "$T/state/sandboxes/$ID/console.log" 2>/dev/null
	echo "--- vmm log"; tail -n 30 "$T/state/sandboxes/$ID/vmm.log" 2>/dev/null
	exit 1
fi
pass "CreateSandbox: $(cat "$T/out")"
vmm_pid=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sandbox"]["vmmPid"])' "$T/out")

s=$(rpc CreateSandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 409 ] && grep -q already_exists "$T/out" && pass "CreateSandbox of a taken id: 409" ||
	bad "CreateSandbox of a taken id answered $s: $(cat "$T/out")"

s=$(rpc ListSandboxes '{}')
[ "$s" = 200 ] && grep -q "\"$ID\"" "$T/out" && grep -q SANDBOX_STATE_RUNNING "$T/out" &&
	pass "ListSandboxes lists it running" || bad "ListSandboxes: $s $(cat "$T/out")"

if exec_rpc "$ID" '["sh","-c","echo hello; echo oops >&2; echo $EMBER_E2E; hostname; exit 3"]'; then
	grep -q '"stdoutData": "hello' "$T/exec" && grep -q 'oops' "$T/exec" &&
	grep -q 'yes' "$T/exec" && grep -q "$ID" "$T/exec" &&
	grep -q '"exitCode": 3' "$T/exec" && tail -n1 "$T/exec" | grep -q '"_end": true' &&
		pass "Exec: stdout, stderr, env, hostname and exit code 3" ||
		bad "Exec stream: $(cat "$T/exec")"
else
	bad "Exec failed"
fi

content=$(printf 'line one\nline two\n' | base64 -w0)
s=$(rpc WriteFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/e2e/file.txt\",\"content\":\"$content\",\"makeParents\":true}")
[ "$s" = 200 ] && grep -q '"bytesWritten":"18"' "$T/out" && pass "WriteFile: 18 bytes" ||
	bad "WriteFile answered $s: $(cat "$T/out")"
s=$(rpc ReadFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/e2e/file.txt\"}")
[ "$s" = 200 ] && grep -q "\"content\":\"$content\"" "$T/out" && pass "ReadFile: same bytes back" ||
	bad "ReadFile answered $s: $(cat "$T/out")"
s=$(rpc ListFiles "{\"sandboxId\":\"$ID\",\"path\":\"/root/e2e\"}")
[ "$s" = 200 ] && grep -q '"name":"file.txt"' "$T/out" && pass "ListFiles: file.txt listed" ||
	bad "ListFiles answered $s: $(cat "$T/out")"
s=$(rpc WriteFile "{\"sandboxId\":\"$ID\",\"path\":\"/nope/x\",\"content\":\"\"}")
[ "$s" = 404 ] && pass "WriteFile without makeParents into a missing folder: 404" ||
	bad "WriteFile into a missing folder answered $s: $(cat "$T/out")"
s=$(rpc DeleteFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/e2e\",\"recursive\":true}")
s2=$(rpc ReadFile "{\"sandboxId\":\"$ID\",\"path\":\"/root/e2e/file.txt\"}")
[ "$s" = 200 ] && [ "$s2" = 404 ] && pass "DeleteFile: gone afterwards" ||
	bad "DeleteFile answered $s, then ReadFile $s2"

curl -sS "http://127.0.0.1:$(cat "$T/port")/metrics" | grep -q 'ember_agent_sandboxes{state="running"} 1' &&
	pass "/metrics counts 1 running sandbox" || bad "/metrics"

s=$(rpc DestroySandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 200 ] && pass "DestroySandbox" || bad "DestroySandbox answered $s: $(cat "$T/out")"
left=""
kill -0 "$vmm_pid" 2>/dev/null && left="$left VMM-pid-$vmm_pid"
[ -e "$T/state/sandboxes/$ID" ] && left="$left $T/state/sandboxes/$ID"
[ -e "$RUN/vms/$ID" ] && left="$left $RUN/vms/$ID"
pgrep -f "ember-vmm.*--id $ID" >/dev/null && left="$left a-VMM-process"
[ -z "$left" ] && pass "nothing of the sandbox is left" || bad "left behind:$left"
s=$(rpc ListSandboxes '{}')
grep -q "$ID" "$T/out" && bad "still listed after destroy" || pass "not listed after destroy"
s=$(rpc DestroySandbox "{\"sandboxId\":\"$ID\"}")
[ "$s" = 404 ] && pass "second DestroySandbox: 404" || bad "second DestroySandbox answered $s"

grep -q "ember-agent\[$ID\]" "$T/agent.log" && pass "log lines name the sandbox" ||
	bad "no log line names the sandbox"
if [ "$failures" -ne 0 ]; then echo "--- agent log"; tail -n 40 "$T/agent.log"; fi
echo "$failures failed"
[ "$failures" -eq 0 ]
