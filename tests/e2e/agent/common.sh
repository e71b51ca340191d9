# Shared by the agent's e2e scripts, each called by meson as
#
#   SCRIPT EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# (EMBER_AGENT_ROOTFS overrides ARTIFACTS-DIR/rootfs.ext4, which must hold
# /sbin/ember-init). A script sources this file, then:
#
#   agent_e2e_init "$@" [-- EXTRA...]
#                           outside the nested host: checks the inputs and
#                           re-runs the script inside it with EXTRA after
#                           --inner (values from this side's environment),
#                           then exits with its status; inside: sets AGENT,
#                           VMM, UFFD, ART, ROOTFS and INNER_ARGS (EXTRA)
#   agent_scratch NAME      a scratch folder T in the host and a run folder
#                           RUN; the EXIT trap stops the agent, calls the
#                           script's on_exit if it defines one, and removes
#                           them
#   start_agent NAME        agent_scratch NAME unless T is set, then an
#                           ember-agent in the background (apid; its log
#                           appended to $T/agent.log); waits for its port,
#                           sets BASE and U
#   pass MSG / bad MSG      a passed check / a failed one (counted in
#                           $failures)
#   rpc METHOD JSON [OUT]   unary call; the body in OUT (default $T/out);
#                           prints the HTTP status
#   exec_request ID ARGV-JSON FILE
#                           writes an Exec request, Connect-framed, to FILE
#                           (for curl --data-binary @FILE to $U/Exec)
#   exec_rpc ID ARGV-JSON   an Exec; its stream decoded into $T/exec, one
#                           JSON object a line (stdoutData, stderrData
#                           decoded, _end on the last)
#   exec_out ID ARGV-JSON   an Exec; prints its stdout
#   field FILE PY-EXPR      a value of a JSON file (j is the document)
#   dump_logs [ID]          the agent's log and the last lines of sandbox
#                           ID's (default $ID) VMM, page server and console

. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

agent_e2e_init() {
	AGENT=$1 VMM=$2 UFFD=$3 ART=$4
	ROOTFS=${EMBER_AGENT_ROOTFS:-$ART/rootfs.ext4}
	shift 4
	if [ "${1:-}" != --inner ]; then
		[ "${1:-}" = -- ] && shift
		for f in "$AGENT" "$VMM" "$UFFD" "$ART/vmlinux" "$ROOTFS"; do
			[ -r "$f" ] || skip "$f is missing"
		done
		if command -v debugfs >/dev/null &&
		   ! debugfs -R 'stat /sbin/ember-init' "$ROOTFS" 2>/dev/null | grep -q Inode; then
			skip "$ROOTFS has no /sbin/ember-init (build ember-init before the rootfs)"
		fi
		in_host /bin/bash "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" \
			"$AGENT" "$VMM" "$UFFD" "$ART" --inner "$@"
		exit $?
	fi
	shift
	INNER_ARGS=("$@")
	[ -c /dev/kvm ] || skip "no /dev/kvm here"
	failures=0
}

pass() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; failures=$((failures + 1)); }

apid=
RUN=
_agent_exit() {
	if [ -n "$apid" ]; then
		kill "$apid" 2>/dev/null
		wait "$apid" 2>/dev/null
	fi
	if declare -F on_exit >/dev/null; then
		on_exit
	fi
	[ -n "$RUN" ] && rm -rf "$RUN"
	_scratch_cleanup
}

agent_scratch() {
	T=$(host_scratch "$1")
	RUN=$(mktemp -d /run/ember-e2e-agent.XXXXXX)
	trap _agent_exit EXIT
}

start_agent() {
	[ -n "${T:-}" ] || agent_scratch "$1"
	rm -f "$T/port"
	"$AGENT" --listen 127.0.0.1:0 --port-file "$T/port" --state-dir "$T/state" \
		--run-dir "$RUN" --vmm-bin "$VMM" --uffd-bin "$UFFD" \
		--kernel "$ART/vmlinux" --rootfs "$ROOTFS" \
		--boot-timeout ${EMBER_AGENT_BOOT_TIMEOUT:-240} 2>>"$T/agent.log" &
	apid=$!
	for _ in $(seq 100); do [ -s "$T/port" ] && break; sleep 0.1; done
	[ -s "$T/port" ] || { tail -n 40 "$T/agent.log"; fail "the agent did not start"; }
	BASE="http://127.0.0.1:$(cat "$T/port")"
	U="$BASE/ember.hostagent.v1.HostAgent"
}

rpc() {
	curl -sS --max-time 300 -H 'Content-Type: application/json' \
	     -o "${3:-$T/out}" -w '%{http_code}' -d "$2" "$U/$1"
}

exec_request() {
	local body="{\"sandboxId\":\"$1\",\"argv\":$2}"
	printf '00%08x' "${#body}" | xxd -r -p >"$3"
	printf '%s' "$body" >>"$3"
}

exec_rpc() {
	exec_request "$1" "$2" "$T/req"
	curl -sS --max-time 120 -H 'Content-Type: application/connect+json' \
	     --data-binary @"$T/req" -o "$T/stream" "$U/Exec" || return 1
	/usr/bin/python3 - "$T/stream" >"$T/exec" <<'PY'
import sys, json, base64
b = open(sys.argv[1], 'rb').read()
while b:
    flags, n = b[0], int.from_bytes(b[1:5], 'big')
    m = json.loads(b[5:5 + n]); b = b[5 + n:]
    for k in ('stdoutData', 'stderrData'):
        if k in m: m[k] = base64.b64decode(m[k]).decode()
    m['_end'] = bool(flags & 2)
    print(json.dumps(m))
PY
}

exec_out() {
	exec_rpc "$1" "$2" || return 1
	/usr/bin/python3 -c '
import sys, json
for line in open(sys.argv[1]):
    sys.stdout.write(json.loads(line).get("stdoutData", ""))' "$T/exec"
}

field() {
	/usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"
}

dump_logs() {
	local id=${1:-${ID:-}}
	echo "--- agent log"; tail -n 40 "$T/agent.log"
	for f in vmm.log uffd.log console.log; do
		echo "--- $id/$f"; tail -n 20 "$T/state/sandboxes/$id/$f" 2>/dev/null
	done
}
