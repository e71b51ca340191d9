#!/bin/sh
# e2e: ember-vmm boots the guest kernel and base image (a Linux guest, so it
# runs where KVM can run Linux: the nested host, or real virtualization).
#
#   boot.sh EMBER-VMM ARTIFACTS-DIR
#
# 1. Through the API: write a file to the root disk, reboot (the VMM exits 0).
# 2. Through --config-file --no-api: boot the same disk again, read it back.
# 3. 1, 2 and 4 vCPUs: nproc inside says so. These boot the bzImage (as
#    the benchmark does), the others the vmlinux.
# Each boot must print the base image's ready line on the serial console.
# Exit 0: all passed; 77: skipped (no artifacts or no /dev/kvm); 1: failed.
set -u

VMM=$1
ART=$2
BOOT_TIMEOUT=${EMBER_E2E_BOOT_TIMEOUT:-600}

for f in "$ART/vmlinux" "$ART/bzImage" "$ART/rootfs.ext4"; do
	[ -r "$f" ] || { echo "SKIP: $f is missing (make artifacts)"; exit 77; }
done
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm here"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/ember-e2e-vmm.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cp "$ART/rootfs.ext4" "$T/rootfs.ext4" || exit 1
KERNEL=$ART/vmlinux
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Kernel command line: a command for the guest's init (base64, so that any
# character passes), then a reboot that ends the VMM.
cmdline() {
	b64=$(printf '%s' "$1" | base64 -w0)
	echo "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw quiet" \
	     "ember.run64=$b64 ember.reboot=1"
}

api() { # METHOD PATH BODY
	curl -sS --max-time 60 --unix-socket "$T/api.sock" -X "$1" \
	     -H 'Content-Type: application/json' -o "$T/resp" \
	     -w '%{http_code}' "http://localhost$2" ${3:+-d "$3"}
}

# expect NAME STATUS: the VMM exited with 0 and the console shows the ready
# line; prints the console log on failure.
check_boot() {
	name=$1 status=$2 console=$3
	if [ "$status" -ne 0 ]; then
		fail "$name: ember-vmm exited with $status"
	elif ! grep -q '^ember-guest: ready' "$console"; then
		fail "$name: no ready line on the console"
	else
		pass "$name: booted, ready line seen, VMM exited 0"
		return 0
	fi
	echo "--- console of $name"; tail -n 40 "$console"
	echo "--- log of $name"; tail -n 40 "$T/vmm.log"
	return 1
}

# 1. Boot through the API and write a file to the root disk.
"$VMM" --api-sock "$T/api.sock" --id e2e-api >"$T/console1" \
	2>"$T/vmm.log" &
pid=$!
for _ in $(seq 100); do [ -S "$T/api.sock" ] && break; sleep 0.1; done
args=$(cmdline 'echo persisted-by-ember > /root/e2e-marker; sync')
s1=$(api PUT /boot-source "{\"kernel_image_path\": \"$KERNEL\", \"boot_args\": \"$args\"}")
s2=$(api PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 256}')
s3=$(api PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$T/rootfs.ext4\", \"is_root_device\": true, \"is_read_only\": false}")
s4=$(api PUT /actions '{"action_type": "InstanceStart"}')
if [ "$s1$s2$s3$s4" != 204204204204 ]; then
	fail "api: configuration answered $s1 $s2 $s3 $s4: $(cat "$T/resp")"
	kill "$pid"
fi
api GET / "" >/dev/null
grep -q '"state":"Running"' "$T/resp" || fail "api: GET / said $(cat "$T/resp")"
timeout "$BOOT_TIMEOUT" sh -c "while kill -0 $pid 2>/dev/null; do sleep 0.2; done" ||
	{ fail "api: the guest did not end within ${BOOT_TIMEOUT}s"; kill -9 "$pid"; }
wait "$pid"
check_boot api $? "$T/console1"
[ -e "$T/api.sock" ] && fail "api: the socket is left behind"

# 2. Boot through a config file, read the file back.
boot_file() { # NAME VCPUS COMMAND [KERNEL]
	args=$(cmdline "$3")
	kernel=${4:-$KERNEL}
	cat >"$T/$1.json" <<EOF
{
  "boot-source": {"kernel_image_path": "$kernel", "boot_args": "$args"},
  "machine-config": {"vcpu_count": $2, "mem_size_mib": 256},
  "drives": [{"drive_id": "rootfs", "path_on_host": "$T/rootfs.ext4",
              "is_root_device": true, "is_read_only": false}]
}
EOF
	timeout "$BOOT_TIMEOUT" "$VMM" --no-api --config-file "$T/$1.json" \
		--id "e2e-$1" >"$T/console-$1" 2>"$T/vmm.log"
	check_boot "$1" $? "$T/console-$1"
}

if boot_file file 1 'echo "marker=$(cat /root/e2e-marker)"'; then
	if grep -q '^marker=persisted-by-ember' "$T/console-file"; then
		pass "file: the file written before the reboot is there"
	else
		fail "file: the file written before the reboot is missing"
	fi
fi

# 3. nproc for 1, 2 and 4 vCPUs, from the bzImage.
for n in 1 2 4; do
	if boot_file "vcpus$n" "$n" 'echo "nproc=$(nproc)"' "$ART/bzImage"; then
		if grep -q "^nproc=$n" "$T/console-vcpus$n"; then
			pass "vcpus$n: nproc says $n"
		else
			fail "vcpus$n: nproc says $(grep '^nproc=' "$T/console-vcpus$n")"
		fi
	fi
done

echo "$failures failed"
[ "$failures" -eq 0 ]
