#!/usr/bin/env bash
# Guest agent benchmark without a VM: ember-init as a normal process on a
# Unix socket, measured by `ember-initctl bench` (exec round trip of
# `true`, file write and read throughput). Prints one JSON object.
#
#   bench/init/run.sh [BUILDDIR] [-- ember-initctl bench options]
# Through a VM, run `ember-initctl --socket <uds_path> --vsock-port 1024
# --token T bench` against a booted sandbox instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
shift || true
[ "${1:-}" = "--" ] && shift
init=$build/src/ember-init/ember-init
ctl=$build/src/ember-init/ember-initctl
[ -x "$init" ] && [ -x "$ctl" ] || { echo "bench/init: build $build first" >&2; exit 1; }
dir=$(mktemp -d /tmp/ember-bench-init.XXXXXX)
token=bench-$$
"$init" --no-pid1 --listen "unix:$dir/agent.sock" --token "$token" \
	--log-level warn >"$dir/out" 2>"$dir/err" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do
	grep -q 'ember-guest: ready' "$dir/out" 2>/dev/null && break
	sleep 0.1
done
grep -q 'ember-guest: ready' "$dir/out" || { echo "bench/init: ember-init did not start" >&2; cat "$dir/err" >&2; exit 1; }
"$ctl" --socket "$dir/agent.sock" --token "$token" --timeout 120 \
	bench --dir "$dir" "$@"
