#!/usr/bin/env bash
# e2e: a real Linux guest boots. The guest kernel and a copy-on-write copy
# of the base image boot with QEMU microvm on the shared nested host's KVM
# (or this machine's, with real virtualization); the guest prints its ready
# line and runs a command given on its kernel command line, whose output
# and exit status come back; boot-ready (the boot-timer port write) works.
. "$(dirname "$0")/../lib.sh"

for f in bzImage rootfs.ext4; do
	[ -e "$EMBER_ARTIFACTS/$f" ] || fail "$EMBER_ARTIFACTS/$f is missing: run scripts/artifacts.sh (make artifacts)"
done
in_host test -c /dev/kvm || fail "the host has no /dev/kvm"

dir=$(host_scratch guest-boot)
step "booting a guest with QEMU microvm in $dir"
out=$(in_host "$EMBER_ROOT/hosts/nested/boot-guest.sh" --workdir "$dir" \
	--timeout 240 -- 'echo "answer $((6 * 7)) from $(hostname)";
		/sbin/boot-ready && echo "boot-ready: ok"; exit 7' 2>&1)
status=$?
printf '%s\n' "$out"

expect_line '^ember-guest: ready$' "$out"
expect_line '^answer 42 from ember-guest$' "$out"
expect_line '^boot-ready: ok$' "$out"
expect_line '^ember-guest: exit 7$' "$out"
[ "$status" = 7 ] || fail "boot-guest.sh returned $status, not the command's 7"
echo "PASS: the guest booted, ran the command and reported its status"
