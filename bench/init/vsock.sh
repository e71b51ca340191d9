#!/usr/bin/env bash
# Guest agent benchmark through a real guest: boots the base image with
# ember-vmm and a virtio-vsock device (in the nested host when this machine
# needs one) and runs `ember-initctl bench` through the VMM's vsock socket:
# exec round trip of `true`, file write and read throughput. Prints one JSON
# object on stdout.
#
#   bench/init/vsock.sh [BUILDDIR [ARTIFACTS-DIR]]
# BUILDDIR (default <repo>/build) must not be under /tmp when a nested host
# is used (the host has its own /tmp); ARTIFACTS-DIR (default
# BUILDDIR/artifacts) needs vmlinux and a rootfs.ext4 holding ember-init.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
art=${2:-$build/artifacts}
nested=$root/build/hosts/nested/ember-nested
[ -x "$build/hosts/nested/ember-nested" ] && nested=$build/hosts/nested/ember-nested
args=(/bin/sh "$root/tests/e2e/init/agent.sh" "$build/src/ember-vmm/ember-vmm"
      "$build/src/ember-init/ember-initctl" "$art" --bench-only)
if [ -x "$nested" ] && "$nested" need 2>/dev/null | grep -q '^yes'; then
	exec "$nested" run -q --timeout 900 -- "${args[@]}" | grep '^{'
fi
exec "${args[@]}" | grep '^{'
