#!/bin/sh
# e2e: a real Linux guest across pause, snapshot, kill, load and resume.
#
#   pause_resume.sh EMBER-VMM ARTIFACTS-DIR [EMBER-SNAP EMBER-UFFD]
#
# The guest appends a counter to /root/counter and prints it on the console
# every 100 ms. VMM A boots it, pauses (the console stops), writes a full
# snapshot and is killed; VMM B loads the snapshot (File backend) and
# resumes: the count goes on from exactly where it stopped. Then B goes
# through pause/resume cycles and a diff snapshot; every cycle the count
# goes on without a repeat or a gap. With EMBER-SNAP and EMBER-UFFD, VMM C
# loads A's snapshot again with the Uffd backend: generation 0 built from
# the memory file, served lazily by ember-uffd. EMBER_E2E_SNAPSHOT_VCPUS sets
# the guest's vCPUs (default 1), EMBER_E2E_SNAPSHOT_CYCLES the cycles (20).
# Exit 0: all passed; 77: skipped; 1: failed.
set -u

VMM=$1
ART=$2
SNAP=${3:-}
UFFD=${4:-}
BOOT_TIMEOUT=${EMBER_E2E_BOOT_TIMEOUT:-600}
CYCLES=${EMBER_E2E_SNAPSHOT_CYCLES:-20}
VCPUS=${EMBER_E2E_SNAPSHOT_VCPUS:-1}

for f in "$ART/vmlinux" "$ART/rootfs.ext4"; do
	[ -r "$f" ] || { echo "SKIP: $f is missing (make artifacts)"; exit 77; }
done
[ -c /dev/kvm ] || { echo "SKIP: no /dev/kvm here"; exit 77; }

T=$(mktemp -d "${TMPDIR:-/tmp}/ember-e2e-snap.XXXXXX") || exit 1
pids=""
trap 'for p in $pids; do kill -9 $p 2>/dev/null; done; rm -rf "$T"' EXIT
cp "$ART/rootfs.ext4" "$T/rootfs.ext4" || exit 1
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

api() { # SOCKET METHOD PATH BODY
	curl -sS --max-time 120 --unix-socket "$1" -X "$2" \
	     -H 'Content-Type: application/json' -o "$T/resp" \
	     -w '%{http_code}' "http://localhost$3" ${4:+-d "$4"}
}

# The last count on a console ("" when none).
last_count() { grep -a '^count=' "$1" | tail -n 1 | sed 's/^count=//' | tr -d '\r'; }
first_count() { grep -a '^count=' "$1" | head -n 1 | sed 's/^count=//' | tr -d '\r'; }

# wait_count CONSOLE N: until the console shows count N or more.
wait_count() {
	local end=$(( $(date +%s) + BOOT_TIMEOUT ))
	while [ "$(date +%s)" -lt "$end" ]; do
		c=$(last_count "$1")
		[ -n "$c" ] && [ "$c" -ge "$2" ] && return 0
		# No monitor left to print more: stop waiting.
		pgrep -x ember-vmm >/dev/null || { c=$(last_count "$1"); [ -n "$c" ] && [ "$c" -ge "$2" ]; return; }
		sleep 0.2
	done
	return 1
}

# Every count on a console follows the previous one by exactly 1.
contiguous() {
	grep -a '^count=' "$1" | sed 's/^count=//' | tr -d '\r' |
		awk 'NR > 1 && $1 != prev + 1 { bad = 1 } { prev = $1 } END { exit bad }'
}

start_vmm() { # NAME
	"$VMM" --api-sock "$T/$1.sock" --id "e2e-$1" >"$T/console-$1" \
		2>"$T/vmm-$1.log" &
	pid=$!
	pids="$pids $pid"
	for _ in $(seq 600); do [ -S "$T/$1.sock" ] && return 0; sleep 0.1; done
	echo "FAIL: ember-vmm $1 did not listen within 60 s"
	tail -n 30 "$T/vmm-$1.log"
	exit 1
}

cmd='i=0; while :; do i=$((i+1)); echo $i >> /root/counter; echo "count=$i"; sleep 0.1; done'
b64=$(printf '%s' "$cmd" | base64 -w0)
args="console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw quiet ember.run64=$b64"

# 1. VMM A boots the guest and counts.
start_vmm a
pid_a=$pid
s1=$(api "$T/a.sock" PUT /boot-source "{\"kernel_image_path\": \"$ART/vmlinux\", \"boot_args\": \"$args\"}")
# One vCPU by default: the nested host has one CPU (two made its emulated
# SVM fail: docs/vmm-machine.md, "One CPU for the nested host"), where this
# test passed twice with EMBER_E2E_SNAPSHOT_VCPUS=2 (142 s beside another
# test, 63 s alone). TODO(snapshot): the kvm tier's snapshot guests have one vCPU; a
# several-vCPU snapshot has no exact test there.
s2=$(api "$T/a.sock" PUT /machine-config '{"vcpu_count": '"$VCPUS"', "mem_size_mib": 256, "track_dirty_pages": true}')
s3=$(api "$T/a.sock" PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$T/rootfs.ext4\", \"is_root_device\": true, \"is_read_only\": false}")
s4=$(api "$T/a.sock" PUT /actions '{"action_type": "InstanceStart"}')
[ "$s1$s2$s3$s4" = 204204204204 ] || fail "boot: $s1 $s2 $s3 $s4: $(cat "$T/resp")"
if ! wait_count "$T/console-a" 20; then
	fail "boot: no count=20 on the console"
	tail -n 30 "$T/console-a"; tail -n 30 "$T/vmm-a.log"
	exit 1
fi
pass "boot: the guest counts"

# 2. Pause: the console stops; snapshot; kill A.
s=$(api "$T/a.sock" PATCH /vm '{"state": "Paused"}')
[ "$s" = 204 ] || fail "pause: $s $(cat "$T/resp")"
sleep 0.5
paused_at=$(last_count "$T/console-a")
sleep 1
[ "$(last_count "$T/console-a")" = "$paused_at" ] &&
	pass "pause: the count stays at $paused_at" ||
	fail "pause: the count went on from $paused_at to $(last_count "$T/console-a")"
s=$(api "$T/a.sock" PUT /snapshot/create "{\"snapshot_type\": \"Full\", \"snapshot_path\": \"$T/vmstate\", \"mem_file_path\": \"$T/mem\"}")
[ "$s" = 204 ] && pass "snapshot: created" || fail "snapshot: $s $(cat "$T/resp")"
kill -9 "$pid_a"
wait "$pid_a" 2>/dev/null

# 3. VMM B loads it and resumes: the count goes on from paused_at + 1.
start_vmm b
s=$(api "$T/b.sock" PUT /snapshot/load "{\"snapshot_path\": \"$T/vmstate\", \"mem_backend\": {\"backend_type\": \"File\", \"backend_path\": \"$T/mem\"}, \"track_dirty_pages\": true, \"resume_vm\": true}")
[ "$s" = 204 ] || fail "load: $s $(cat "$T/resp")"
if wait_count "$T/console-b" $((paused_at + 10)); then
	first=$(first_count "$T/console-b")
	[ "$first" = $((paused_at + 1)) ] &&
		pass "load: the count goes on at $first" ||
		fail "load: the count went on at $first, not $((paused_at + 1))"
else
	fail "load: the count did not go on"
	tail -n 30 "$T/console-b"; tail -n 30 "$T/vmm-b.log"
fi

# 4. Pause/resume cycles in B, a diff snapshot in the middle.
for n in $(seq "$CYCLES"); do
	before=$(last_count "$T/console-b")
	s=$(api "$T/b.sock" PATCH /vm '{"state": "Paused"}')
	[ "$s" = 204 ] || fail "cycle $n: pause $s $(cat "$T/resp")"
	if [ "$n" = 2 ]; then
		s=$(api "$T/b.sock" PUT /snapshot/create "{\"snapshot_type\": \"Diff\", \"snapshot_path\": \"$T/vmstate.diff\", \"mem_file_path\": \"$T/mem.diff\"}")
		[ "$s" = 204 ] || fail "cycle $n: diff snapshot $s $(cat "$T/resp")"
	fi
	s=$(api "$T/b.sock" PATCH /vm '{"state": "Resumed"}')
	[ "$s" = 204 ] || fail "cycle $n: resume $s $(cat "$T/resp")"
	wait_count "$T/console-b" $((before + 3)) ||
		fail "cycle $n: the count stopped at $before"
done
contiguous "$T/console-b" && pass "cycles: $CYCLES pause/resume cycles, every count once, in order" ||
	fail "cycles: the counts on the console skip or repeat"
s=$(api "$T/b.sock" GET / "")
grep -q '"state":"Running"' "$T/resp" || fail "state: $(cat "$T/resp")"
kill -9 "$pid"
wait "$pid" 2>/dev/null

# 5. VMM C: A's snapshot again, memory served by ember-uffd.
if [ -n "$SNAP" ] && [ -n "$UFFD" ]; then
	mkdir -p "$T/layers"
	hdr=$("$SNAP" build --base --mem "$T/mem" --out-dir "$T/layers" | tail -n 1)
	if [ ! -r "$hdr" ]; then
		fail "uffd: ember-snap build gave no header ($hdr)"
	else
		"$UFFD" --socket "$T/uffd.sock" --header "$hdr" \
			--accept-timeout 120 >"$T/uffd.log" 2>&1 &
		upid=$!
		pids="$pids $upid"
		for _ in $(seq 600); do [ -S "$T/uffd.sock" ] && break; sleep 0.1; done
		start_vmm c
		s=$(api "$T/c.sock" PUT /snapshot/load "{\"snapshot_path\": \"$T/vmstate\", \"mem_backend\": {\"backend_type\": \"Uffd\", \"backend_path\": \"$T/uffd.sock\"}, \"resume_vm\": true}")
		[ "$s" = 204 ] || fail "uffd: load $s $(cat "$T/resp")"
		if wait_count "$T/console-c" $((paused_at + 10)); then
			first=$(first_count "$T/console-c")
			[ "$first" = $((paused_at + 1)) ] &&
				pass "uffd: loaded through ember-uffd, the count goes on at $first" ||
				fail "uffd: the count went on at $first, not $((paused_at + 1))"
		else
			fail "uffd: the count did not go on"
			tail -n 20 "$T/console-c"; tail -n 20 "$T/vmm-c.log"
			tail -n 20 "$T/uffd.log"
		fi
	fi
fi

# On a failure: the monitors' errors (a crash dump names every vCPU), the
# consoles' last lines and the host kernel's (in the nested host, KVM's
# complaints and faults of the host itself).
if [ "$failures" -ne 0 ]; then
	for f in "$T"/vmm-*.log; do
		echo "--- $(basename "$f"), errors"; grep -a ' ERROR ' "$f" | tail -n 20
	done
	for f in "$T"/console-*; do
		echo "--- $(basename "$f"), last lines"; tail -n 15 "$f"
	done
	echo "--- host kernel log (last 20 lines)"; dmesg 2>/dev/null | tail -n 20
fi
echo "$failures failed"
[ "$failures" -eq 0 ]
