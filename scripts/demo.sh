#!/usr/bin/env bash
# Ember's demo, for now: a real Linux guest boots with QEMU microvm and runs
# a command. On a machine without real virtualization (see ENVIRONMENT.md)
# the guest runs inside the nested host, which this script starts and stops.
# Each step prints how long it took. A later issue replaces this with the
# full demo (emberd, sandboxes, pause and resume).
#
# Usage: scripts/demo.sh      (after `make build`; `make demo` does both)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nested=$root/build/hosts/nested/ember-nested
export EMBER_ARTIFACTS=$root/build/artifacts
state=/tmp/ember-demo-$$

now() { date +%s%N; }
step() { step_name=$1; step_t0=$(now); echo; echo "==> $1"; }
done_step() { echo "    ok: $step_name ($(( ($(now) - step_t0) / 1000000 )) ms)"; }
die() { echo "demo: FAILED at '$step_name': $*" >&2; exit 1; }

step "check the build (guest kernel, base image, nested host launcher)"
for f in "$EMBER_ARTIFACTS/bzImage" "$EMBER_ARTIFACTS/rootfs.ext4" "$nested"; do
	[ -e "$f" ] || die "$f is missing: run make build"
done
done_step

step "does this machine need the nested host?"
answer=$("$nested" need)
echo "    $answer"
done_step

in_host() { "$@"; }
if [ "${answer%%:*}" = yes ]; then
	step "start the nested host (QEMU TCG with AMD SVM; KVM inside it)"
	trap '"$nested" stop --quiet --state-dir "$state"; rm -rf "$state"' EXIT
	"$nested" start --state-dir "$state" || die "see $state/console.log"
	in_host() { "$nested" exec -n --state-dir "$state" --env "EMBER_ARTIFACTS=$EMBER_ARTIFACTS" -- "$@"; }
	done_step

	step "the nested host's KVM"
	in_host sh -c 'uname -sr; ls -l /dev/kvm' | sed 's/^/    /'
	done_step
fi

step "boot a guest with QEMU microvm and run a command in it"
# The command runs as soon as the guest's init is up; /proc/uptime then
# says how long the guest took from kernel start to init.
in_host "$root/hosts/nested/boot-guest.sh" -- \
	'echo "guest uptime at init: $(cut -d" " -f1 /proc/uptime) s"; uname -a; echo "hello from the guest"' |
	sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || die "the guest did not run the command"
done_step

echo
echo "demo: all steps passed"
