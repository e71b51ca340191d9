# Helpers for the agent's e2e tests that talk to its RPC; source after
# setting T (a scratch folder) and U (the agent's base URL).
#
#   rpc METHOD JSON [OUT]   unary call; the body in OUT (default $T/out);
#                           prints the HTTP status
#   exec_rpc ID ARGV-JSON   an Exec; its stream decoded into $T/exec, one
#                           JSON object a line (stdoutData, stderrData
#                           decoded, _end on the last)
#   exec_out ID ARGV-JSON   an Exec; prints its stdout
#   field FILE PY-EXPR      a value of a JSON file (j is the document)

rpc() {
	curl -sS --max-time 300 -H 'Content-Type: application/json' \
	     -o "${3:-$T/out}" -w '%{http_code}' -d "$2" "$U/$1"
}

exec_rpc() {
	local body="{\"sandboxId\":\"$1\",\"argv\":$2}"
	printf '00%08x' "${#body}" | xxd -r -p >"$T/req"
	printf '%s' "$body" >>"$T/req"
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
