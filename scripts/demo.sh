#!/usr/bin/env bash
# make demo: Ember's main job, end to end, through the `ember` CLI.
#
# Starts emberd (SQLite) here and one ember-agent where Linux guests run
# (inside the nested host on machines without hardware virtualization,
# directly otherwise), then:
#   1. creates a sandbox from the base template and runs a command in it;
#   2. writes a file into it and starts a background process;
#   3. pauses it (bytes written, memory freed) and resumes it (memory served
#      lazily by the page server); the file and the process are still there;
#   4. makes a snapshot template of it and spawns three sandboxes from it,
#      each with the file and the process, its own hostname and random
#      bytes, and the template's vCPUs and memory;
#   5. destroys everything and shows that nothing of the demo is left;
#   6. prints the time of every step.
# Exits non-zero if any step fails. Work files: $EMBER_DEMO_DIR (default a
# new folder under /var/tmp), removed at the end unless EMBER_DEMO_KEEP=1.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
art=$build/artifacts
nested=$build/hosts/nested/ember-nested
ember=$build/src/ember/ember
emberd=$build/src/emberd/emberd
agent=$build/src/ember-agent/ember-agent

bold= plain=
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true) plain=$(tput sgr0 2>/dev/null || true); fi
# Commands are shown as a user would type them: `ember ...`.
export PATH=$build/src/ember:$PATH
ember=ember
say() { printf '%s\n' "$*"; }
fail() { printf '\n%sdemo failed:%s %s\n' "$bold" "$plain" "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

for f in "$nested" "$build/src/ember/ember" "$emberd" "$agent" "$art/vmlinux" "$art/rootfs.ext4"; do
	[ -e "$f" ] || fail "$f is missing: run 'make build' first"
done

work=${EMBER_DEMO_DIR:-$(mktemp -d /var/tmp/ember-demo.XXXXXX)}
mkdir -p "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nstate=$work/nested
stack_pid=
use_nested=0

# host_sh CMD: a shell command where the agent and the guests run.
host_sh() {
	if [ "$use_nested" = 1 ]; then
		"$nested" exec --state-dir "$nstate" -- sh -c "$1"
	else
		sh -c "$1"
	fi
}

# stop_stack: stops emberd and the agent; fails if anything was left.
stop_stack() {
	[ -n "$stack_pid" ] || return 0
	kill "$stack_pid" 2>/dev/null
	wait "$stack_pid"
	local rc=$?
	stack_pid=
	return $rc
}
cleanup() {
	stop_stack
	if [ "$use_nested" = 1 ]; then
		"$nested" stop --quiet --state-dir "$nstate" 2>/dev/null
	fi
	[ "${EMBER_DEMO_KEEP:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Step bookkeeping: step "title" starts one, done_step ends it.
names=() times=()
step_t0=0
step() {
	step_t0=$(now_ms)
	printf '\n%s== %s%s\n' "$bold" "$1" "$plain"
	names+=("$1")
}
done_step() {
	local dt=$(( $(now_ms) - step_t0 ))
	times+=("$dt")
	printf '   (%d.%03d s)\n' $((dt / 1000)) $((dt % 1000))
}
# show CMD...: prints a command the way it could be pasted into a shell.
show() {
	local a
	printf '   $'
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+-]+$ ]]; then printf ' %s' "$a"; else printf ' %s' "${a@Q}"; fi
	done
	printf '\n'
}
# run CMD...: shows a command, then runs it; its failure ends the demo.
run() {
	show "$@"
	"$@" 2>"$work/last.err" | sed 's/^/     /'
	local rc=${PIPESTATUS[0]}
	[ "$rc" = 0 ] || { sed 's/^/     /' "$work/last.err" >&2; fail "'$*' exited $rc"; }
}
# capture VAR CMD...: like run, keeping stdout in VAR.
capture() {
	local _var=$1 _out _rc
	shift
	if [ "$1" = host_sh ]; then
		printf '   (inside the host) %s\n' "${HOST_SH_SAYS:-a check}"
	else
		show "$@"
	fi
	_out=$("$@" 2>"$work/last.err")
	_rc=$?
	[ "$_rc" = 0 ] || { sed 's/^/     /' "$work/last.err" >&2; fail "'$*' exited $_rc"; }
	printf -v "$_var" '%s' "$_out"
}
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k] if not k.isdigit() else d[int(k)]
print(d)' "$1"; }

step "Start Ember: emberd (SQLite) and one ember-agent"
if "$nested" need | grep -q '^yes'; then
	use_nested=1
	say "   This machine cannot run Linux guests with its own KVM at a useful speed,"
	say "   so the agent runs inside a nested host (QEMU with emulated AMD SVM)."
	say "   Starting it takes from about ten seconds to a minute, with the load."
	agent_port=$(free_port)
	"$nested" start --state-dir "$nstate" --forward "$agent_port:7070" >/dev/null ||
		fail "the nested host did not start; see $nstate/console.log"
	export EMBER_NESTED_STATE=$nstate EMBER_NESTED_AGENT_PORT=$agent_port
else
	say "   This machine has hardware virtualization: the agent runs directly."
fi
# tests/e2e/stack.py starts the agent, emberd on a new SQLite database and
# an API key the way the e2e tests do, and at the end stops them and checks
# that nothing of them is left.
python3 "$root/tests/e2e/stack.py" serve "$work" 2>"$work/stack.log" &
stack_pid=$!
for _ in $(seq 900); do
	[ -s "$work/stack.env" ] && break
	kill -0 "$stack_pid" 2>/dev/null || break
	sleep 0.2
done
[ -s "$work/stack.env" ] || { tail -20 "$work/stack.log" >&2; fail "emberd and the agent did not start"; }
. "$work/stack.env"
export EMBER_API_URL EMBER_API_KEY
agent_state=$AGENT_STATE agent_run=$AGENT_RUN agent_url=$AGENT_URL
say "   emberd: $EMBER_API_URL (API key in \$EMBER_API_KEY); agent: $agent_url"
run "$ember" host list
done_step

step "1. Create a sandbox from the base template and run a command in it"
capture sb "$ember" sandbox create --template base --vcpus 1 --memory 256M
say "     sandbox id: $sb"
run "$ember" sandbox exec "$sb" -- sh -c 'echo "hello from $(hostname)"; uname -sr; nproc'
done_step

step "2. Write a file and start a background process"
printf 'written by the Ember demo at %s\n' "$(date -u +%FT%TZ)" >"$work/note.txt"
run "$ember" sandbox cp "$work/note.txt" "$sb:/root/note.txt"
run "$ember" sandbox exec "$sb" -- sh -c \
	'setsid sh -c "i=0; while :; do i=\$((i+1)); echo \$i > /root/ticks.new; mv /root/ticks.new /root/ticks; sleep 1; done" </dev/null >/dev/null 2>&1 & echo "background counter started, pid $!"'
sleep 2
say "     the counter after two seconds:"
run "$ember" sandbox exec "$sb" -- cat /root/ticks
done_step

step "3. Pause the sandbox (frozen to disk, memory freed), then resume it"
HOST_SH_SAYS="the VMM's resident memory" capture vmm_rss host_sh "for p in \$(pgrep -x ember-vmm); do grep -q '$sb' /proc/\$p/cmdline && awk '/VmRSS/ {print \$2}' /proc/\$p/status; done | head -1"
[ -n "$vmm_rss" ] && say "     $((vmm_rss / 1024)) MiB (the guest's memory it touched and the VMM's own)"
capture pause_json "$ember" --json sandbox pause "$sb"
say "$pause_json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
p = d.get("pause") or {}
print("     state:", d.get("state"), "| generation", p.get("generation"),
      "| memory written: %.1f MiB" % (p.get("memory_bytes_written", 0) / 1048576),
      "| disk: %.0f MiB" % (p.get("disk_bytes", 0) / 1048576))
'
HOST_SH_SAYS="is a VMM of the sandbox still running?" capture left host_sh "n=0; for p in \$(pgrep -x ember-vmm); do grep -q '$sb' /proc/\$p/cmdline && n=\$((n+1)); done; echo \$n"
[ "$left" = 0 ] || fail "a VMM of $sb still runs while paused"
say "     no: memory freed${vmm_rss:+: $((vmm_rss / 1024)) MiB}; the paused sandbox is only files on disk"
run "$ember" sandbox resume "$sb"
run "$ember" sandbox exec "$sb" -- cat /root/note.txt
run "$ember" sandbox exec "$sb" -- sh -c 'a=$(cat /root/ticks); sleep 2; b=$(cat /root/ticks); echo "counter: $a, two seconds later $b"; [ "$b" -gt "$a" ]'
done_step

step "4. Make a snapshot template and spawn three sandboxes from it"
run "$ember" snapshot create "$sb" demo-template
run "$ember" snapshot get demo-template
clones=()
for i in 1 2 3; do
	capture c "$ember" sandbox create --template demo-template
	clones+=("$c")
	say "     clone $i: $c"
done
seen_hosts="" seen_rand=""
for c in "${clones[@]}"; do
	capture out "$ember" sandbox exec "$c" -- sh -c \
		'echo "hostname=$(hostname) vcpus=$(nproc) mem_kib=$(awk "/MemTotal/ {print \$2}" /proc/meminfo) random=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d " \n") file=$(cat /root/note.txt | wc -c)B counter=$(cat /root/ticks)"; sleep 1.5; cat /root/ticks'
	say "     $c: $(echo "$out" | head -1) then $(echo "$out" | tail -1)"
	h=$(echo "$out" | sed -n 's/.*hostname=\([^ ]*\).*/\1/p')
	r=$(echo "$out" | sed -n 's/.*random=\([^ ]*\).*/\1/p')
	case " $seen_hosts " in *" $h "*) fail "two clones share the hostname $h" ;; esac
	case " $seen_rand " in *" $r "*) fail "two clones gave the same random bytes $r" ;; esac
	seen_hosts="$seen_hosts $h" seen_rand="$seen_rand $r"
	echo "$out" | grep -q 'file=[1-9]' || fail "clone $c lacks /root/note.txt"
	a=$(echo "$out" | sed -n 's/.*counter=\([0-9]*\).*/\1/p'); b=$(echo "$out" | tail -1)
	[ "${b:-0}" -gt "${a:-0}" ] || fail "the background counter does not run in clone $c"
done
say "     every clone has the file and the running counter, its own hostname and random bytes"
run "$ember" sandbox list
done_step

step "5. Destroy everything and check that nothing is left"
for c in "$sb" "${clones[@]}"; do
	run "$ember" -q sandbox kill "$c"
done
run "$ember" snapshot delete demo-template
HOST_SH_SAYS="look for leftover processes, files, sockets, mounts and network devices" capture leftover host_sh "# look for processes, files, sockets, mounts and network devices left
n=0
for p in \$(pgrep -x ember-vmm) \$(pgrep -x ember-uffd); do echo \"process left: \$p\"; n=1; done
for d in $agent_state/sandboxes $agent_state/templates $agent_run/vms; do
	[ -d \$d ] && [ -n \"\$(ls -A \$d)\" ] && { echo \"files left in \$d: \$(ls \$d)\"; n=1; }
done
grep -q ' $agent_run' /proc/mounts && { echo 'a mount is left under $agent_run'; n=1; }
ip -o link | grep -qE 'tap|veth' && { echo 'a network device is left'; n=1; }
[ \$n = 0 ] && echo 'no VMM or page server process, no sandbox or template file, no socket, mount or network device left'
exit \$n"
say "     $leftover"
stop_stack || { tail -20 "$work/stack.log" >&2; fail "stopping emberd and the agent left something behind"; }
say "     emberd and the agent stopped; nothing of them is left"
done_step

printf '\n%sSummary%s\n' "$bold" "$plain"
printf '   %-72s %9s\n' "step" "seconds"
for i in "${!names[@]}"; do
	t=${times[$i]}
	printf '   %-72s %5d.%03d\n' "${names[$i]}" $((t / 1000)) $((t % 1000))
done
say ""
say "The demo succeeded."
