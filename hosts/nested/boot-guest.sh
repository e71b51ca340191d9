#!/usr/bin/env bash
# Boots Ember's guest kernel and a copy-on-write copy of the base image with
# QEMU microvm on this machine's /dev/kvm: inside the nested host, or on a
# machine with real virtualization. Runs a command given on the guest's
# kernel command line (ember.run64, see guest/rootfs/init.sh), prints the
# guest's console, and exits with the command's status.
#
# Usage: hosts/nested/boot-guest.sh [options] [-- 'SHELL COMMAND']
#   --kernel FILE    guest kernel (default $EMBER_ARTIFACTS/bzImage)
#   --rootfs FILE    base image (default $EMBER_ARTIFACTS/rootfs.ext4)
#   --smp N          vCPUs (default 1)      --memory MB   (default 256)
#   --timeout S      give up after S seconds (default 120; exit 124)
#   --workdir DIR    where the disk overlay and console log go
#                    (default: a new folder under /var/lib/ember/guests)
# Without a command it stops the guest once the ready line appears.
# QEMU microvm does not exit on the guest's reboot here (no i8042 on the
# machine model), so this script ends QEMU itself after the last line.
# Exit: the command's status; 1 no ready line; 124 timeout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
art=${EMBER_ARTIFACTS:-$(cd "$here/../.." && pwd)/build/artifacts}
kernel=$art/bzImage rootfs=$art/rootfs.ext4 smp=1 mem=256 timeout=120 wd= cmd=
while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) kernel=$2; shift 2 ;;
	--rootfs) rootfs=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--memory) mem=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--workdir) wd=$2; shift 2 ;;
	--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	--) shift; cmd=$*; break ;;
	*) echo "boot-guest: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
for f in "$kernel" "$rootfs"; do
	[ -r "$f" ] || { echo "boot-guest: $f is missing: run scripts/artifacts.sh" >&2; exit 1; }
done
[ -w /dev/kvm ] || { echo "boot-guest: /dev/kvm is missing or not writable here" >&2; exit 1; }
if [ -z "$wd" ]; then
	base=/var/lib/ember/guests
	mkdir -p "$base" 2>/dev/null || base=${TMPDIR:-/tmp}
	wd=$(mktemp -d "$base/guest.XXXXXX")
fi
mkdir -p "$wd"
log=$wd/console.log
: >"$log"
qemu-img create -q -f qcow2 -b "$(realpath "$rootfs")" -F raw "$wd/disk.qcow2"

append="console=ttyS0 quiet reboot=k panic=-1 root=/dev/vda rw"
[ -n "$cmd" ] && append+=" ember.run64=$(printf '%s' "$cmd" | base64 -w0) ember.reboot=1"
ms() { echo $(( ($(date +%s%N) - t0) / 1000000 )); }
t0=$(date +%s%N)
qemu-system-x86_64 -M microvm,acpi=off -enable-kvm -cpu host -smp "$smp" -m "$mem" \
	-nodefaults -no-user-config -display none -no-reboot \
	-serial "file:$log" -kernel "$kernel" -append "$append" \
	-drive "id=root,file=$wd/disk.qcow2,format=qcow2,if=none" \
	-device virtio-blk-device,drive=root 2>"$wd/qemu.err" &
qemu=$!
trap 'kill $qemu 2>/dev/null || true; wait $qemu 2>/dev/null || true' EXIT

ready= status=
deadline=$(( $(date +%s) + timeout ))
while :; do
	if [ -z "$ready" ] && grep -q '^ember-guest: ready' "$log"; then
		ready=$(ms)
		[ -n "$cmd" ] || break
	fi
	if [ -n "$cmd" ] && grep -q '^ember-guest: exit ' "$log"; then
		# Both lines may have arrived since the last look.
		[ -n "$ready" ] || ! grep -q '^ember-guest: ready' "$log" || ready=$(ms)
		status=$(sed -n 's/^ember-guest: exit \([0-9]*\).*/\1/p' "$log" | head -n1)
		break
	fi
	kill -0 $qemu 2>/dev/null || break
	[ "$(date +%s)" -lt "$deadline" ] || break
	sleep 0.05
done
total=$(ms)
kill $qemu 2>/dev/null || true
wait $qemu 2>/dev/null || true
trap - EXIT
tr -d '\r' <"$log"
echo "boot-guest: ready line after ${ready:-?} ms, done after $total ms (wall, QEMU start to last line); log: $log" >&2
# QEMU's own words ("terminating on signal 15" when stopped here) only
# when something went wrong.
[ -n "$ready" ] || { cat "$wd/qemu.err" >&2; echo "boot-guest: no ready line" >&2; exit 1; }
if [ -n "$cmd" ] && [ -z "$status" ]; then
	echo "boot-guest: no exit line within ${timeout} s" >&2
	exit 124
fi
exit "${status:-0}"
