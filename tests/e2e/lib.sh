# Shell helpers for e2e tests. Source it first:
#   . "$(dirname "$0")/../lib.sh"      (from tests/e2e/<area>/<test>.sh)
#
# The environment comes from tests/e2e/nested_session.py (EMBER_ROOT,
# EMBER_BUILD, EMBER_ARTIFACTS, EMBER_NESTED, EMBER_NESTED_STATE); run
# directly, the defaults below find the checkout.
#
#   in_host CMD ARGS...   runs CMD in the shared nested host (or here when
#                         this machine needs none), streaming its output;
#                         returns its status. EMBER_ROOT, EMBER_BUILD and
#                         EMBER_ARTIFACTS are passed along.
#   host_scratch NAME     makes a per-test folder on the host's scratch disk
#                         (/var/lib/ember/e2e/NAME.PID) and prints it; it is
#                         removed when the test exits
#   fail MSG              prints "FAIL: MSG" and exits 1
#   skip MSG              prints "SKIP: MSG" and exits 77 (meson's skip)
#   step MSG              prints a timestamped progress line on stderr
#   expect_line PATTERN TEXT   fails unless a line of TEXT matches the
#                         extended regex PATTERN
set -uo pipefail

: "${EMBER_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${EMBER_BUILD:=$EMBER_ROOT/build}"
: "${EMBER_ARTIFACTS:=$EMBER_BUILD/artifacts}"
: "${EMBER_NESTED:=$EMBER_BUILD/hosts/nested/ember-nested}"
export EMBER_ROOT EMBER_BUILD EMBER_ARTIFACTS EMBER_NESTED

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
step() { echo "[$(date +%T)] $*" >&2; }

in_host() {
	if [ -n "${EMBER_NESTED_STATE:-}" ]; then
		"$EMBER_NESTED" exec -n --state-dir "$EMBER_NESTED_STATE" \
			--env "EMBER_ROOT=$EMBER_ROOT" --env "EMBER_BUILD=$EMBER_BUILD" \
			--env "EMBER_ARTIFACTS=$EMBER_ARTIFACTS" -- "$@"
	else
		"$@" </dev/null
	fi
}

_scratch_dirs=()
_scratch_cleanup() {
	local d
	for d in "${_scratch_dirs[@]}"; do
		in_host rm -rf "$d" >/dev/null 2>&1 || true
	done
}
trap _scratch_cleanup EXIT

host_scratch() {
	local d="/var/lib/ember/e2e/$1.$$"
	if [ -z "${EMBER_NESTED_STATE:-}" ] && ! mkdir -p "$d" 2>/dev/null; then
		d=$(mktemp -d "${TMPDIR:-/tmp}/ember-e2e-$1.XXXXXX")
	fi
	in_host mkdir -p "$d" || fail "cannot make the scratch folder $d in the host"
	_scratch_dirs+=("$d")
	echo "$d"
}

expect_line() {
	printf '%s\n' "$2" | grep -Eq -- "$1" || fail "no line matches '$1'"
}
