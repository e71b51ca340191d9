#!/usr/bin/env bash
# e2e: networking per sandbox through ember-agent, inside the shared nested
# host (tests/e2e/lib.sh's in_host).
#
#   network.sh EMBER-AGENT EMBER-VMM EMBER-UFFD ARTIFACTS-DIR
#
# The test makes its own "internet": a network namespace behind a veth
# from the host, 198.51.100.2 (TEST-NET-2; no real external address is
# ever used), serving HTTP. It also serves HTTP on the host itself. Two
# networked sandboxes: each guest has 172.31.0.2 on eth0 and fetches a
# page from the internet namespace; neither reaches the host's service
# (on the host's end of its veth, on the host's address towards the
# internet, on the nested host's own address) nor the other sandbox's
# namespace; a sandbox without networking has no eth0. Pause and resume
# one: its network still works. A snapshot template of it spawns a
# networked clone that fetches the page too, and refuses a clone without
# networking. Destroy all: `ip link`, `ip netns` and
# the iptables rules are as they were before.
# Exit 0: passed; 77: skipped; 1: failed.
set -uo pipefail
. "$(dirname "$0")/common.sh"
agent_e2e_init "$@"
for t in ip iptables curl; do
	command -v $t >/dev/null || skip "$t is missing (scripts/deps.sh installs it)"
done
agent_scratch agent-net
INET=ember-e2e-inet
inet_pid= host_pid=
on_exit() { # the internet namespace and the two test servers
	local p
	for p in $inet_pid $host_pid; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	ip netns del $INET 2>/dev/null
	ip link del e2einet0 2>/dev/null
}
net_state() { # what a destroy must give back
	ip -o link show | sed 's/^[0-9]*: //; s/[:@].*//' | sort
	ip netns list | sort
	iptables -w -S
	iptables -w -t nat -S
}

# The internet: a namespace behind veth e2einet0, with an HTTP server.
mkdir -p "$T/www" "$T/www-host"
echo "hello from the internet namespace" >"$T/www/index.html"
echo "a host service" >"$T/www-host/index.html"
ip netns add $INET &&
	ip link add e2einet0 type veth peer name eth0 netns $INET &&
	ip addr add 198.51.100.1/24 dev e2einet0 && ip link set e2einet0 up &&
	ip -n $INET addr add 198.51.100.2/24 dev eth0 &&
	ip -n $INET link set eth0 up && ip -n $INET link set lo up &&
	ip -n $INET route add default via 198.51.100.1 ||
	fail "cannot make the internet namespace"
# (The host's busybox is static glibc: its wget and httpd crash on NSS
# lookups. Python and curl instead.)
ip netns exec $INET /usr/bin/python3 -m http.server --bind 198.51.100.2 \
	--directory "$T/www" 8080 >/dev/null 2>&1 &
inet_pid=$!
/usr/bin/python3 -m http.server --bind 0.0.0.0 --directory "$T/www-host" \
	8081 >/dev/null 2>&1 &
host_pid=$!
HOST_IP=$(ip -4 -o addr show scope global | awk '$2 != "e2einet0" {sub("/.*", "", $4); print $4; exit}')

start_agent agent-net
# A server that answers from the host, so that a refusal below is the
# rules' doing and not a dead server's.
for _ in $(seq 100); do
	curl -sf --max-time 2 http://127.0.0.1:8081/ >/dev/null 2>&1 &&
		ip netns exec $INET curl -sf --max-time 2 http://198.51.100.2:8080/ >/dev/null 2>&1 &&
		break
	sleep 0.2
done
curl -sf --max-time 2 http://127.0.0.1:8081/ | grep -q "host service" &&
	pass "the host's own server answers on the host" ||
	bad "the host's own server does not answer"
ip netns exec $INET curl -sf --max-time 2 http://198.51.100.2:8080/ | grep -q internet ||
	bad "the internet namespace's server does not answer"
before=$(net_state)

A=e2e-net-a B=e2e-net-b C=e2e-net-off
for id in $A $B; do
	s=$(rpc CreateSandbox "{\"sandboxId\":\"$id\",\"vcpus\":1,\"memoryMib\":128,\"network\":true}")
	[ "$s" = 200 ] && pass "CreateSandbox $id with networking" ||
		{ bad "CreateSandbox $id answered $s: $(cat "$T/out")"; dump_logs $id; exit 1; }
done
s=$(rpc CreateSandbox "{\"sandboxId\":\"$C\",\"vcpus\":1,\"memoryMib\":128}")
[ "$s" = 200 ] && pass "CreateSandbox $C without networking" ||
	bad "CreateSandbox $C answered $s: $(cat "$T/out")"

slot() { field "$T/state/sandboxes/$1/state.json" 'j["net_slot"]'; }
sa=$(slot $A) sb=$(slot $B)
ns_ip() { echo "10.200.$(($1 * 4 / 256)).$(($1 * 4 % 256 + $2))"; }
A_HOST=$(ns_ip "$sa" 1) B_NS=$(ns_ip "$sb" 2)
ip netns list | grep -q "ember-$A" && ip link show "emv$sa" >/dev/null 2>&1 &&
	pass "$A: namespace ember-$A, veth emv$sa ($A_HOST)" ||
	bad "$A: no namespace or veth: $(ip netns list) / $(ip -o link show | grep emv)"
[ "$(iptables -w -S | grep -c "ember:$A")" = 4 ] &&
	[ "$(iptables -w -t nat -S | grep -c "ember:$A")" = 1 ] &&
	pass "$A: its 4 filter rules and 1 NAT rule" ||
	bad "$A: rules: $(iptables -w -S; iptables -w -t nat -S)"

out=$(exec_out $A '["sh","-c","ip -4 addr show eth0"]')
grep -q "172.31.0.2/30" <<<"$out" && pass "$A: the guest has 172.31.0.2/30 on eth0" ||
	bad "$A: guest address: $out $(cat "$T/exec")"
out=$(exec_out $C '["sh","-c","ip link show eth0 2>&1 || echo NO-ETH0"]')
grep -q NO-ETH0 <<<"$out" && pass "$C: no network interface without networking" ||
	bad "$C: eth0 without networking: $out"

# fetch ID HOST PORT: an HTTP/1.0 GET from the guest, with nc (the
# guest's static busybox wget crashes in its name service lookups).
fetch() {
	exec_out "$1" "[\"sh\",\"-c\",\"(echo 'GET / HTTP/1.0'; echo) | nc -w 4 $2 $3 2>&1 || echo BLOCKED\"]"
}
check_internet() { # ID WHEN
	out=$(fetch "$1" 198.51.100.2 8080)
	grep -q "hello from the internet namespace" <<<"$out" &&
		pass "$1$2: the guest fetches a page from the internet namespace" ||
		{ bad "$1$2: internet fetch: $out"; dump_logs "$1"; }
}
check_internet $A ""
check_internet $B ""
for target in "$A_HOST" 198.51.100.1 ${HOST_IP:+"$HOST_IP"}; do
	out=$(fetch $A "$target" 8081)
	! grep -q "host service" <<<"$out" &&
		pass "$A: the host's server at $target:8081 is out of reach" ||
		bad "$A: reached the host's server at $target: $out"
done
# ping: without the rules the other sandbox's namespace would answer.
out=$(exec_out $A '["sh","-c","ping -c 1 -W 2 198.51.100.2 >/dev/null && echo PONG"]')
grep -q PONG <<<"$out" && pass "$A: ping reaches the internet namespace" ||
	bad "$A: ping to the internet: $out"
out=$(exec_out $A "[\"sh\",\"-c\",\"ping -c 1 -W 2 $B_NS >/dev/null && echo PONG || echo BLOCKED\"]")
grep -q BLOCKED <<<"$out" && pass "$A: $B's namespace ($B_NS) is out of reach" ||
	bad "$A: reached $B's namespace at $B_NS: $out"

s=$(rpc PauseSandbox "{\"sandboxId\":\"$A\"}")
[ "$s" = 200 ] && pass "PauseSandbox $A" || { bad "PauseSandbox answered $s: $(cat "$T/out")"; dump_logs $A; }
ip netns list | grep -q "ember-$A" && pass "$A: its namespace stays while paused" ||
	bad "$A: the namespace went with the pause"
s=$(rpc ResumeSandbox "{\"sandboxId\":\"$A\"}")
[ "$s" = 200 ] && pass "ResumeSandbox $A" || { bad "ResumeSandbox answered $s: $(cat "$T/out")"; dump_logs $A; }
check_internet $A " after pause and resume"

# A template of a networked sandbox: a networked clone gets a network of
# its own (same tap name and guest address, another veth); a clone without
# networking is refused, never given a host tap.
D=e2e-net-clone E=e2e-net-clone-off
s=$(rpc CreateSnapshot "{\"sandboxId\":\"$A\",\"name\":\"nettmpl\"}")
[ "$s" = 200 ] && pass "CreateSnapshot nettmpl of $A" ||
	bad "CreateSnapshot answered $s: $(cat "$T/out")"
s=$(rpc CreateSandbox "{\"sandboxId\":\"$D\",\"snapshotTemplate\":\"nettmpl\",\"network\":true}")
if [ "$s" = 200 ]; then
	pass "CreateSandbox $D from nettmpl with networking (veth emv$(slot $D))"
	check_internet $D " (a clone)"
else
	bad "CreateSandbox $D answered $s: $(cat "$T/out")"; dump_logs $D
fi
s=$(rpc CreateSandbox "{\"sandboxId\":\"$E\",\"snapshotTemplate\":\"nettmpl\"}")
[ "$s" != 200 ] && grep -q "tap0" "$T/out" &&
	pass "CreateSandbox $E from nettmpl without networking: $s, $(cat "$T/out")" ||
	bad "CreateSandbox $E without networking answered $s: $(cat "$T/out")"
check_internet $A " (the template's source, after the snapshot)"
rpc DestroySandbox "{\"sandboxId\":\"$D\"}" >/dev/null
rpc DeleteSnapshot "{\"name\":\"nettmpl\"}" >/dev/null

for id in $A $B $C; do
	s=$(rpc DestroySandbox "{\"sandboxId\":\"$id\"}")
	[ "$s" = 200 ] && pass "DestroySandbox $id" || bad "DestroySandbox $id answered $s: $(cat "$T/out")"
done
after=$(net_state)
if [ "$before" = "$after" ]; then
	pass "links, namespaces and iptables rules are as before"
else
	bad "links, namespaces or rules differ after destroy:"
	diff <(echo "$before") <(echo "$after")
fi

if [ "$failures" -ne 0 ]; then dump_logs $A; fi
echo "$failures failed"
[ "$failures" -eq 0 ]
