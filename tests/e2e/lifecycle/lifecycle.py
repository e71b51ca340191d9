#!/usr/bin/env python3
"""e2e: the sandbox lifecycle through the `ember` CLI, emberd (SQLite) and
a real ember-agent (tests/e2e/stack.py): the demo's steps and the ways they
go wrong.

  1. A from the base template: a file, a background counter;
  2. pause (the VMM gone), pause again (conflict), resume, resume again
     (conflict): the file and the counter are there;
  3. a snapshot template and two clones: the file, the counter, their own
     hostnames and random bytes;
  4. the template deleted: a spawn from it is not found, a clone made
     before keeps running, pauses and resumes;
  5. a layer file of paused A cut short: the resume fails with an error
     naming it, A stays paused; the layer mended, A resumes intact;
  6. the page server killed while A resumes;
  7. the agent killed (kill -9) while A pauses, and started again;
  8. the page server killed after A resumed: A in error, its VMM stopped;
each ends in a defined state, A keeps its file and counter, and at the
end nothing is left (processes, files, sockets, mounts). Exit 0 passed,
1 failed, 77 skipped.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
import stack  # noqa: E402  (tests/e2e/stack.py)

NOTE = "written before everything\n"
COUNTER = ('setsid sh -c "i=0; while :; do i=\\$((i+1)); echo \\$i > '
           '/root/ticks.new; mv /root/ticks.new /root/ticks; sleep 1; done" '
           '</dev/null >/dev/null 2>&1 &')
DEFINED = ("running", "paused", "error")


def intact(st, check, sid, when):
    """SID has the note and a counter that still counts."""
    rc, out, err = st.ember("sandbox", "exec", sid, "--", "sh", "-c",
                            "cat /root/note.txt; a=$(cat /root/ticks); "
                            "sleep 2.5; b=$(cat /root/ticks); "
                            "[ \"$b\" -gt \"$a\" ] && echo counting")
    return check(rc == 0 and out == NOTE + "counting\n",
                 f"{when}: {sid} has its file and its counter counts "
                 f"(rc {rc}, {out!r}, {err.strip()!r})")


def settle(st, sid, timeout=120):
    """Waits until no operation is in flight on SID; returns it."""
    return st.wait_state(sid, DEFINED + ("stopped",), timeout=timeout)


def recover(st, check, sid, when):
    """From a defined state back to running; checks nothing was lost."""
    sb = settle(st, sid)
    check(sb["state"] in DEFINED,
          f"{when}: {sid} is in a defined state: {sb['state']} "
          f"({sb.get('error')!r})")
    if sb["state"] == "error":
        check(sb.get("error"), f"{when}: the error has a reason")
        # Its host may still run it (the reconciler then says running)
        # or hold a paused snapshot of it (resume takes an error).
        sb = st.wait_state(sid, ("running",), timeout=5 *
                           st.reconcile_interval + 5)
        if sb["state"] == "error":
            rc, _, err = st.ember("-q", "sandbox", "resume", sid)
            stack.log(f"{when}: resume of {sid} in error: {rc} {err}")
            sb = settle(st, sid)
        check(sb["state"] == "running",
              f"{when}: {sid} is running again ({sb['state']})")
    if sb["state"] == "paused":
        rc, _, err = st.ember("-q", "sandbox", "resume", sid)
        check(rc == 0, f"{when}: paused {sid} resumes ({err.strip()})")
    return intact(st, check, sid, when)


def host_layers(st, sid):
    """(path, size) of SID's layer files where the agent runs, largest
    first."""
    out = st.in_host(f"for f in {st.agent_state}/sandboxes/{sid}/snap/"
                     f"*.layer; do [ -f $f ] && echo $(stat -c %s $f) $f; "
                     f"done | sort -rn")[1]
    return [(p, int(n)) for n, p in (l.split() for l in out.splitlines())]


def lifecycle(st, check):
    ember, ej = st.ember, st.ember_json

    # 1. A, a file and a counter.
    stack.log("1. creating A")
    a = st.ember_ok("sandbox", "create")
    st.ember_ok("sandbox", "cp", "-", f"{a}:/root/note.txt", stdin=NOTE)
    st.ember_ok("sandbox", "exec", a, "--", "sh", "-c", COUNTER)
    time.sleep(1.5)
    intact(st, check, a, "after create")

    # 2. Pause twice, resume twice.
    stack.log("2. pause and resume A")
    vmm = st.vmm_pid(a)
    sb = ej("sandbox", "pause", a)
    check(sb["state"] == "paused", f"pause: {sb['state']}")
    check(vmm and st.vmm_pid(a) is None and
          st.in_host(f"kill -0 {vmm}")[0] != 0,
          f"the VMM ({vmm}) is gone while A is paused")
    rc, _, err = ember("sandbox", "pause", a)
    check(rc == 4 and "paused" in err,
          f"pause of a paused sandbox: exit 4, says paused ({err.strip()})")
    check(ej("sandbox", "get", a)["state"] == "paused",
          "still paused after the second pause")
    sb = ej("sandbox", "resume", a)
    check(sb["state"] == "running", f"resume: {sb['state']}")
    rc, _, err = ember("sandbox", "resume", a)
    check(rc == 4 and "running" in err,
          f"resume of a running sandbox: exit 4, says running "
          f"({err.strip()})")
    intact(st, check, a, "after pause and resume")

    # 3. A template and two clones.
    stack.log("3. template and clones")
    st.ember_ok("snapshot", "create", a, "life-tpl")
    clones = [st.ember_ok("sandbox", "create", "--template", "life-tpl")
              for _ in range(2)]
    seen = []
    for c in clones:
        intact(st, check, c, "a clone")
        out = st.ember_ok("sandbox", "exec", c, "--", "sh", "-c",
                          "hostname; head -c 16 /dev/urandom | od -An -tx1")
        seen.append(tuple(out.split("\n", 1)))
    check(seen[0][0] == clones[0] and seen[1][0] == clones[1] and
          seen[0][1] != seen[1][1],
          f"each clone has its own hostname and random bytes ({seen})")

    # 4. The template deleted.
    stack.log("4. template deleted")
    st.ember_ok("snapshot", "delete", "life-tpl")
    rc, _, err = ember("sandbox", "create", "--template", "life-tpl")
    check(rc == 3, f"spawn from a deleted template: exit 3 ({err.strip()})")
    c = clones[0]
    check(ej("sandbox", "pause", c)["state"] == "paused",
          "a clone of the deleted template pauses")
    check(ej("sandbox", "resume", c)["state"] == "running",
          "and resumes")
    intact(st, check, c, "clone after the template's deletion")
    for c in clones:
        st.ember_ok("-q", "sandbox", "kill", c)

    # 5. A layer cut short.
    stack.log("5. a layer file cut short")
    check(ej("sandbox", "pause", a)["state"] == "paused", "A paused again")
    layers = host_layers(st, a)
    if check(layers, f"A's layer files are where the agent keeps them "
                     f"({layers})"):
        path, size = layers[0]
        cut = 4096
        st.in_host_ok(f"tail -c {cut} {path} >{path}.tail && "
                      f"truncate -s {size - cut} {path}")
        rc, _, err = ember("sandbox", "resume", a)
        check(rc != 0 and os.path.basename(path) in err,
              f"the resume fails naming the layer "
              f"{os.path.basename(path)} (rc {rc}: {err.strip()})")
        sb = settle(st, a)
        check(sb["state"] == "paused",
              f"A stays paused after the failed resume ({sb['state']})")
        check(st.vmm_pid(a) is None, "no VMM is left of the failed resume")
        st.in_host_ok(f"cat {path}.tail >>{path} && rm {path}.tail")
        recover(st, check, a, "the layer mended")

    # 6. The page server killed during a resume.
    stack.log("6. page server killed during a resume")
    check(ej("sandbox", "pause", a)["state"] == "paused", "A paused")
    env = dict(os.environ, EMBER_API_URL=st.url, EMBER_API_KEY=st.key)
    p = subprocess.Popen([stack.EMBER, "sandbox", "resume", a], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    st_, out = st.in_host(
        "i=0; while [ $i -lt 600 ]; do for p in $(pgrep -x ember-uffd); do "
        f"tr '\\0' ' ' </proc/$p/cmdline | grep -q -- '--id {a}' && "
        "{ kill -9 $p; echo $p; exit 0; }; done; sleep 0.05; i=$((i+1)); "
        "done; exit 1", timeout=60)
    out_, err_ = p.communicate(timeout=400)
    check(st_ == 0, f"the page server ({out.strip()}) was killed during "
                    f"the resume (the resume said {p.returncode}: "
                    f"{err_.strip()!r})")
    if not recover(st, check, a, "after the page server died"):
        return

    # 7. The agent killed during a pause, and started again.
    stack.log("7. agent killed during a pause")
    # The kill comes from inside the host once the VMM says the guest is
    # paused: the agent is then writing the snapshot.
    vlog = f"{st.agent_state}/sandboxes/{a}/vmm.log"
    watcher = st.in_host_popen(
        f"n=$(grep -c 'microVM paused' {vlog}); echo watching; i=0; "
        f"while [ $i -lt 1500 ]; do [ $(grep -c 'microVM paused' {vlog}) "
        f"-gt $n ] && {{ kill -9 $(cat {st.agent_run}/agent.pid); "
        f"echo killed; exit 0; }}; sleep 0.02; i=$((i+1)); done; exit 1")
    check(watcher.stdout.readline() == "watching\n", "the watcher runs")
    p = subprocess.Popen([stack.EMBER, "sandbox", "pause", a], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    out_, err_ = p.communicate(timeout=400)
    w_out, _ = watcher.communicate(timeout=60)
    check(w_out.strip() == "killed" and p.returncode != 0,
          f"the agent was killed during the pause (the pause said "
          f"{p.returncode}: {err_.strip()!r})")
    st.kill_agent("KILL")
    st.start_agent()
    check(st.wait_host_up(), "emberd sees the restarted agent up")
    recover(st, check, a, "after the agent's kill -9 during a pause")
    # 8. The page server killed after a resume: the guest can no longer get
    # the memory it has not touched yet, so the agent stops its VMM (rather
    # than leave its vCPUs hanging on the next fault) and A is in error.
    stack.log("8. page server killed after a resume")
    check(ej("sandbox", "pause", a)["state"] == "paused", "A paused again")
    check(ej("sandbox", "resume", a)["state"] == "running", "A resumed")
    _, out = st.in_host(
        "for p in $(pgrep -x ember-uffd); do tr '\\0' ' ' </proc/$p/cmdline "
        f"| grep -q -- '--id {a}' && {{ kill -9 $p; echo $p; }}; done; true")
    check(out.strip(), "A's page server was killed after the resume")
    sb = st.wait_state(a, ("error",), timeout=5 * st.reconcile_interval + 10)
    check(sb["state"] == "error" and sb.get("error"),
          f"A is in error after its page server died ({sb['state']}, "
          f"{sb.get('error')!r})")
    with open(os.path.join(st.work, "agent.log"), errors="replace") as f:
        said = [l for l in f if "the page server (pid" in l]
    check(said and f"[{a}]" in said[-1],
          f"the agent's log says why, naming A ({said[-1:]!r})")
    check(st.vmm_pid(a) is None, "A's VMM was stopped")

    # Whatever state A is in now, it can be killed and nothing is left.
    rc, _, err = ember("-q", "sandbox", "kill", a)
    check(rc == 0 and ej("sandbox", "get", a)["state"] == "stopped",
          f"A is killed ({err.strip()})")


if __name__ == "__main__":
    sys.exit(stack.run("lifecycle", lifecycle))
