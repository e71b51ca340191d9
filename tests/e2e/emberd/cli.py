#!/usr/bin/env python3
"""e2e: the control plane through the `ember` CLI against a real
ember-agent (tests/e2e/stack.py), on SQLite or PostgreSQL.

    cli.py sqlite|postgres

One sandbox A from the base template carries most checks: list filters,
get, exec (streaming, exit status, signal), cp both ways, every
endpoint's errors on a real sandbox, pause and resume and their
conflicts, a snapshot template (create, list, get, a taken name, spawns
asking for other sizes), a timeout that pauses (and the user's timeout
back on resume), a paused sandbox the reconciler leaves alone. Clones of
the template: B, whose VMM is killed behind emberd's back (error with a
reason), and D, created with a timeout that kills. An orphan the agent
runs but emberd never made is destroyed by the reconciler. Exit 0
passed, 1 failed, 77 skipped.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
import stack  # noqa: E402  (tests/e2e/stack.py)

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH = 2, 3, 4, 5


def is_error(resp, status, code):
    st, j = resp
    return (st == status and isinstance(j, dict) and j.get("code") == code
            and isinstance(j.get("message"), str) and j["message"] != "")


def events_to(sb, state):
    return [e for e in sb.get("events", []) if e.get("to") == state]


def lifecycle(st, check):
    tmp = tempfile.mkdtemp(prefix="ember-e2e-cli.")
    try:
        run_all(st, check, tmp)
    finally:
        subprocess.run(["rm", "-rf", tmp], timeout=30)


def run_all(st, check, tmp):
    ember, ej = st.ember, st.ember_json

    # --- hosts and templates --------------------------------------------
    hosts = ej("host", "list")["hosts"]
    check(len(hosts) == 1 and hosts[0]["state"] == "up" and
          hosts[0].get("vcpus_total", 1) >= 1,
          f"host list: one host, up ({hosts})")
    rc, out, _ = ember("host", "list")
    check(rc == 0 and st.agent_url in out and "up" in out,
          "host list (table) names the agent and says up")
    tpl = ej("template", "list")["templates"]
    check([t["name"] for t in tpl] == ["base"] and tpl[0]["kind"] == "base",
          f"template list: the base template ({tpl})")

    # --- sandbox A ------------------------------------------------------
    stack.log("creating sandbox A")
    rc, a, err = ember("sandbox", "create", "--meta", "team=e2e", "--meta",
                       "role=a", "--env", "GREETING=hi from env")
    a = a.strip()
    if not check(rc == 0 and a, f"sandbox create: {a} ({err.strip()})"):
        return
    sb = ej("sandbox", "get", a)
    check(sb["state"] == "running" and sb["template"] == "base" and
          sb["metadata"] == {"team": "e2e", "role": "a"} and
          sb["vcpus"] == 1 and sb["memory_mib"] == 256 and
          sb["host"] and sb["expires_at_ms"],
          f"sandbox get: running, base, metadata, sizes, host ({sb})")
    check([e["to"] for e in sb["events"]][:2] == ["starting", "running"],
          f"sandbox get: events starting, running ({sb['events']})")

    def listed(*args):
        return [s["id"] for s in ej("sandbox", "list", *args)["sandboxes"]]
    check(a in listed(), "sandbox list has A")
    check(a in listed("--state", "running", "--meta", "team=e2e"),
          "sandbox list --state running --meta team=e2e has A")
    check(a in listed("--meta", "team=e2e", "--meta", "role=a"),
          "sandbox list with two metadata filters has A")
    check(a not in listed("--meta", "team=other"),
          "sandbox list --meta team=other has not A")
    check(a not in listed("--state", "paused"),
          "sandbox list --state paused has not A")
    rc, _, err = ember("sandbox", "list", "--state", "sleepy")
    check(rc == EXIT_USAGE, f"sandbox list --state sleepy: exit 2 ({err})")
    rc, out, _ = ember("sandbox", "list")
    check(rc == 0 and a in out and "running" in out,
          "sandbox list (table) shows A running")

    # --- exec -------------------------------------------------------------
    rc, out, err = ember("sandbox", "exec", a, "--", "sh", "-c",
                         'echo "out $GREETING"; echo err >&2; exit 7')
    check(rc == 7 and out == "out hi from env\n" and "err" in err,
          f"exec: stdout, stderr, env, exit 7 (rc {rc}, {out!r}, {err!r})")
    rc, out, _ = ember("sandbox", "exec", a, "--cwd", "/etc", "--env",
                       "X=1", "--", "sh", "-c", 'pwd; echo "X=$X"')
    check(rc == 0 and out == "/etc\nX=1\n", f"exec --cwd --env ({out!r})")
    rc, _, _ = ember("sandbox", "exec", a, "--", "sh", "-c", "kill -9 $$")
    check(rc == 128 + 9, f"exec killed by SIGKILL: exit 137 ({rc})")
    rc, out, _ = ember("sandbox", "exec", a, "--timeout", "2", "--",
                       "sleep", "30")
    check(rc != 0, f"exec --timeout 2 of sleep 30 ends non-zero ({rc})")
    # Streaming: the first line arrives while the command still runs.
    env = dict(os.environ, EMBER_API_URL=st.url, EMBER_API_KEY=st.key)
    p = subprocess.Popen([stack.EMBER, "sandbox", "exec", a, "--", "sh",
                          "-c", "echo first; sleep 6; echo second"],
                         stdout=subprocess.PIPE, text=True, env=env)
    first = p.stdout.readline()
    running = p.poll() is None
    rest = p.stdout.read()
    p.wait(timeout=60)
    check(first == "first\n" and running and rest == "second\n" and
          p.returncode == 0,
          f"exec streams: the first line came before the end "
          f"({first!r}, still running {running}, then {rest!r})")
    s, j = st.api("POST", f"/v1/sandboxes/{a}/exec",
                  {"cmd": ["sh", "-c", "echo a; exit 3"], "stream": True})
    lines = j.splitlines() if isinstance(j, str) else []
    check(s == 200 and len(lines) >= 2 and '"exit_code":3' in
          lines[-1].replace(" ", "") and '"stdout"' in lines[0],
          f"POST exec stream:true: ndjson ending in the exit event ({j!r})")

    # --- cp both ways -----------------------------------------------------
    data = os.urandom(200 * 1024) + b"\0\n\xff"
    src = os.path.join(tmp, "in.bin")
    with open(src, "wb") as f:
        f.write(data)
    rc, _, err = ember("sandbox", "cp", src, f"{a}:/root/dir/in.bin")
    check(rc == 0, f"cp LOCAL ID:PATH (parents made) ({err.strip()})")
    rc, out, _ = ember("sandbox", "exec", a, "--", "sh", "-c",
                       "wc -c </root/dir/in.bin")
    check(out.strip() == str(len(data)), f"the guest sees {len(data)} bytes")
    back = os.path.join(tmp, "out.bin")
    rc, _, err = ember("sandbox", "cp", f"{a}:/root/dir/in.bin", back)
    with open(back, "rb") as f:
        check(rc == 0 and f.read() == data,
              f"cp ID:PATH LOCAL gives the same bytes ({err.strip()})")
    rc, _, _ = ember("sandbox", "cp", "-", f"{a}:/root/note.txt",
                     stdin="kept across everything\n")
    check(rc == 0, "cp - ID:PATH from stdin")
    rc, out, _ = ember("sandbox", "cp", f"{a}:/root/note.txt", "-")
    check(rc == 0 and out == "kept across everything\n",
          f"cp ID:PATH - to stdout ({out!r})")
    rc, out, _ = ember("sandbox", "exec", a, "--", "hostname")
    check(rc == 0 and out.strip() == a, f"the hostname is the id ({out!r})")
    rc, _, err = ember("sandbox", "cp", f"{a}:/no/such/file", "-")
    check(rc == EXIT_NOT_FOUND, f"cp of a missing file: exit 3 ({rc}, {err})")

    # --- errors of every endpoint, on a real sandbox --------------------
    errors(st, check, a)

    # --- pause and resume -------------------------------------------------
    stack.log("pausing A")
    p1 = ej("sandbox", "pause", a)
    check(p1["state"] == "paused" and p1["pause"]["generation"] == 0 and
          p1["pause"]["memory_bytes_written"] > 0 and
          p1["expires_at_ms"] is None,
          f"pause: paused, generation 0, bytes written ({p1.get('pause')})")
    check(st.vmm_pid(a) is None, "no VMM of A runs while it is paused")
    rc, _, err = ember("sandbox", "pause", a)
    check(rc == EXIT_CONFLICT, f"pause a paused sandbox: exit 4 ({err})")
    check(is_error(st.api("POST", f"/v1/sandboxes/{a}/pause"), 409,
                   "conflict"), "POST pause of a paused sandbox: 409")
    rc, _, _ = ember("sandbox", "exec", a, "--", "true")
    check(rc == EXIT_CONFLICT, f"exec in a paused sandbox: exit 4 ({rc})")
    rc, _, _ = ember("sandbox", "cp", f"{a}:/root/note.txt", "-")
    check(rc == EXIT_CONFLICT, f"cp from a paused sandbox: exit 4 ({rc})")
    check(a in listed("--state", "paused"), "sandbox list --state paused")
    stack.log("resuming A")
    r1 = ej("sandbox", "resume", a)
    check(r1["state"] == "running" and r1["expires_at_ms"],
          f"resume: running, with a deadline again ({r1['state']})")
    rc, _, err = ember("sandbox", "resume", a)
    check(rc == EXIT_CONFLICT, f"resume a running sandbox: exit 4 ({err})")
    rc, out, _ = ember("sandbox", "cp", f"{a}:/root/note.txt", "-")
    check(out == "kept across everything\n", "the file survived the pause")

    # --- snapshot templates ---------------------------------------------
    stack.log("snapshot of A")
    t = ej("snapshot", "create", a, "snapa")
    check(t["name"] == "snapa" and t["kind"] == "snapshot" and
          t["vcpus"] == 1 and t["memory_mib"] == 256,
          f"snapshot create: a 1-vCPU 256 MiB snapshot template ({t})")
    check(ej("sandbox", "get", a)["state"] == "running",
          "the source keeps running after the snapshot")
    check([x["name"] for x in ej("snapshot", "list")["snapshots"]] ==
          ["snapa"], "snapshot list has snapa")
    check(ej("snapshot", "get", "snapa")["name"] == "snapa", "snapshot get")
    check("snapa" in [x["name"] for x in ej("template", "list")["templates"]],
          "template list has snapa")
    rc, _, err = ember("snapshot", "create", a, "snapa")
    check(rc == EXIT_CONFLICT, f"a taken snapshot name: exit 4 ({err})")
    check(is_error(st.api("POST", "/v1/snapshots",
                          {"sandbox_id": a, "name": "snapa"}), 409,
                   "already_exists"), "POST snapshots, taken: 409")
    check(is_error(st.api("POST", "/v1/snapshots",
                          {"sandbox_id": a, "name": "bad/name"}), 400,
                   "invalid_argument"), "POST snapshots, bad name: 400")
    rc, _, err = ember("sandbox", "create", "--template", "snapa",
                       "--vcpus", "2")
    check(rc == EXIT_USAGE, f"spawn of snapa with 2 vCPUs: exit 2 ({err})")
    check(is_error(st.api("POST", "/v1/sandboxes",
                          {"template": "snapa", "memory_mib": 512}), 400,
                   "invalid_argument"), "spawn of snapa with 512 MiB: 400")
    check(is_error(st.api("POST", "/v1/sandboxes", {"template": "nope"}),
                   404, "not_found"), "spawn of an unknown template: 404")
    stack.log("spawning B from snapa")
    rc, b, err = ember("sandbox", "create", "--template", "snapa",
                       "--meta", "team=e2e")
    b = b.strip()
    if check(rc == 0 and b, f"spawn B from snapa ({err.strip()})"):
        rc, out, _ = ember("sandbox", "exec", b, "--", "sh", "-c",
                           "cat /root/note.txt; hostname")
        check(out == f"kept across everything\n{b}\n",
              f"B has A's file and its own hostname ({out!r})")
        check(sorted(listed("--meta", "team=e2e")) == sorted([a, b]),
              "list --meta team=e2e: A and B")
        reconcile_vmm_killed(st, check, b)

    # --- reconciler: an orphan ------------------------------------------
    reconcile_orphan(st, check)

    # --- timeouts -------------------------------------------------------
    timeouts(st, check, a)

    # --- kill and delete ------------------------------------------------
    rc, _, err = ember("-q", "sandbox", "kill", a)
    check(rc == 0, f"sandbox kill A ({err.strip()})")
    sb = ej("sandbox", "get", a)
    check(sb["state"] == "stopped", f"A is stopped ({sb['state']})")
    check(a not in listed() and a in listed("--state", "stopped"),
          "list: A only with --state stopped")
    check(st.vmm_pid(a) is None, "no VMM of A is left")
    rc, _, _ = ember("sandbox", "kill", a)
    check(rc in (0, EXIT_CONFLICT), f"kill of a stopped sandbox: {rc}")
    rc, _, err = ember("snapshot", "delete", "snapa")
    check(rc == 0, f"snapshot delete ({err.strip()})")
    rc, _, _ = ember("snapshot", "get", "snapa")
    check(rc == EXIT_NOT_FOUND, "snapshot get after delete: exit 3")
    rc, _, _ = ember("snapshot", "delete", "snapa")
    check(rc == EXIT_NOT_FOUND, "snapshot delete twice: exit 3")
    rc, _, _ = ember("sandbox", "create", "--template", "snapa")
    check(rc == EXIT_NOT_FOUND, "spawn from a deleted template: exit 3")
    check(ej("template", "list")["templates"][0]["name"] == "base" and
          len(ej("template", "list")["templates"]) == 1,
          "template list: base only again")


def errors(st, check, a):
    """Every endpoint's 400s, 401s and 404s, with a real sandbox A."""
    api = st.api
    for path, body in ((f"/v1/sandboxes", None),
                       (f"/v1/sandboxes/{a}/exec", None),
                       (f"/v1/sandboxes/{a}/timeout", None),
                       ("/v1/snapshots", None)):
        check(is_error(api("POST", path, raw=b'{"cmd": ['), 400,
                       "invalid_argument"), f"POST {path}: bad JSON: 400")
        check(is_error(api("POST", path, raw=b'[1, 2]'), 400,
                       "invalid_argument"), f"POST {path}: not an object")
    bad = [("/v1/sandboxes", {"template": "base", "colour": "red"}),
           ("/v1/sandboxes", {"vcpus": "two"}),
           ("/v1/sandboxes", {"memory_mib": 1}),
           ("/v1/sandboxes", {"on_timeout": "explode"}),
           ("/v1/sandboxes", {"metadata": {"k": 5}}),
           (f"/v1/sandboxes/{a}/exec", {"cmd": ["true"], "shell": True}),
           (f"/v1/sandboxes/{a}/exec", {"cmd": "true"}),
           (f"/v1/sandboxes/{a}/exec", {}),
           (f"/v1/sandboxes/{a}/exec", {"cmd": ["true"], "command": "true"}),
           (f"/v1/sandboxes/{a}/timeout", {"timeout": "soon"}),
           (f"/v1/sandboxes/{a}/timeout", {"timeout": 0}),
           (f"/v1/sandboxes/{a}/timeout", {"timeout": 5, "x": 1}),
           ("/v1/snapshots", {"sandbox_id": a}),
           ("/v1/snapshots", {"sandbox_id": a, "name": 3}),
           ("/v1/snapshots", {"sandbox_id": a, "name": "n", "keep": 1})]
    for path, body in bad:
        check(is_error(api("POST", path, body), 400, "invalid_argument"),
              f"POST {path} {body}: 400 invalid_argument")
    check(api("GET", f"/v1/sandboxes/{a}")[1]["state"] == "running",
          "A still runs after the bad requests")
    check(is_error(api("GET", "/v1/sandboxes?state=sleepy"), 400,
                   "invalid_argument"), "GET sandboxes?state=sleepy: 400")
    check(is_error(api("GET", f"/v1/sandboxes/{a}/files"), 400,
                   "invalid_argument"), "GET files without a path: 400")
    # 401: no key and a wrong key, on the real sandbox's endpoints.
    for m, p in (("GET", f"/v1/sandboxes/{a}"), ("DELETE", f"/v1/sandboxes/{a}"),
                 ("POST", f"/v1/sandboxes/{a}/pause"),
                 ("POST", f"/v1/sandboxes/{a}/exec"),
                 ("GET", f"/v1/sandboxes/{a}/files?path=/etc/hostname"),
                 ("POST", "/v1/snapshots"), ("GET", "/v1/hosts")):
        body = {} if m == "POST" else None
        check(is_error(api(m, p, body, key=None), 401, "unauthenticated"),
              f"{m} {p} without a key: 401")
        check(is_error(api(m, p, body, key=st.key[:-1] + "0"), 401,
                       "unauthenticated"), f"{m} {p} with a wrong key: 401")
    rc, _, err = st.ember("sandbox", "get", a, key=False)
    check(rc == EXIT_AUTH and "EMBER_API_KEY" in err,
          f"CLI without a key: exit 5, naming EMBER_API_KEY ({err.strip()})")
    rc, _, _ = st.ember("sandbox", "exec", a, "--", "true", key="ember_" +
                        "1" * 40)
    check(rc == EXIT_AUTH, "CLI exec with a wrong key: exit 5")
    check(st.api("GET", f"/v1/sandboxes/{a}")[1]["state"] == "running",
          "A still runs after the unauthenticated calls")
    # 404: unknown ids, through the CLI and the API.
    for args in (("sandbox", "get", "sb-nope"), ("sandbox", "pause", "sb-nope"),
                 ("sandbox", "resume", "sb-nope"), ("sandbox", "kill", "sb-nope"),
                 ("sandbox", "timeout", "sb-nope", "5"),
                 ("sandbox", "exec", "sb-nope", "--", "true"),
                 ("sandbox", "cp", "sb-nope:/etc/hostname", "-"),
                 ("snapshot", "create", "sb-nope", "x"),
                 ("snapshot", "get", "nope"), ("snapshot", "delete", "nope")):
        rc, _, err = st.ember(*args)
        check(rc == EXIT_NOT_FOUND, f"ember {' '.join(args)}: exit 3 ({rc})")
    for m, p in (("GET", "/v1/sandboxes/sb-nope"),
                 ("POST", "/v1/sandboxes/sb-nope/resume"),
                 ("GET", "/v1/sandboxes/sb-nope/files?path=/a"),
                 ("DELETE", "/v1/snapshots/nope")):
        check(is_error(api(m, p, {} if m == "POST" else None), 404,
                       "not_found"), f"{m} {p}: 404")


def reconcile_vmm_killed(st, check, b):
    pid = st.vmm_pid(b)
    if not check(pid, f"B has a VMM ({pid})"):
        return
    stack.log(f"killing B's VMM {pid} behind emberd's back")
    st.in_host(f"kill -9 {pid}")
    sb = st.wait_state(b, ("error",), timeout=60)
    check(sb["state"] == "error" and sb.get("error"),
          f"the reconciler marks B error with a reason ({sb['state']}, "
          f"{sb.get('error')!r})")
    check(events_to(sb, "error") and events_to(sb, "error")[-1].get("reason"),
          "B's events end in error with a reason")
    rc, _, _ = st.ember("sandbox", "exec", b, "--", "true")
    check(rc == EXIT_CONFLICT, f"exec in an error sandbox: exit 4 ({rc})")
    rc, _, err = st.ember("-q", "sandbox", "kill", b)
    check(rc == 0 and st.ember_json("sandbox", "get", b)["state"] ==
          "stopped", f"an error sandbox can be killed ({err.strip()})")


def reconcile_orphan(st, check):
    oid = f"orphan-{os.getpid()}"
    stack.log(f"starting {oid} through the agent, unknown to emberd")
    try:
        st.agent_rpc("CreateSandbox", {"sandboxId": oid, "vcpus": 1,
                                       "memoryMib": 128})
    except RuntimeError as e:
        # The reconciler may destroy it while it starts: fine too.
        stack.log(f"CreateSandbox of the orphan: {e}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ids = [s.get("sandboxId") for s in
               st.agent_rpc("ListSandboxes", {}).get("sandboxes", [])]
        if oid not in ids:
            break
        time.sleep(1)
    check(oid not in ids, f"the reconciler destroyed the orphan ({ids})")
    check(st.vmm_pid(oid) is None, "the orphan's VMM is gone")
    check(oid not in [s["id"] for s in st.ember_json(
        "sandbox", "list")["sandboxes"]], "emberd did not adopt the orphan")


def timeouts(st, check, a):
    ej = st.ember_json
    # A times out and is paused; resuming restores the user's timeout.
    sb = ej("sandbox", "timeout", a, "4", "--on-timeout", "pause")
    check(sb["timeout"] == 4 and sb["on_timeout"] == "pause",
          f"sandbox timeout A 4 --on-timeout pause ({sb['timeout']})")
    stack.log("waiting for A's timeout to pause it")
    sb = st.wait_state(a, ("paused", "error", "stopped"), timeout=120)
    check(sb["state"] == "paused", f"A paused at its timeout ({sb['state']})")
    ev = events_to(sb, "pausing")
    check(ev and "timeout" in (ev[-1].get("reason") or ""),
          f"the pause's event names the timeout ({ev[-1:] if ev else ev})")
    # A paused sandbox is left alone by the reconciler.
    time.sleep(4 * st.reconcile_interval)
    sb = ej("sandbox", "get", a)
    check(sb["state"] == "paused", "the reconciler left paused A alone")
    # Setting a timeout while paused keeps it for the resume.
    sb = ej("sandbox", "timeout", a, "900")
    check(sb["state"] == "paused" and sb["timeout"] == 900 and
          sb["expires_at_ms"] is None,
          f"timeout on a paused sandbox: kept, no deadline ({sb})")
    t0 = time.time() * 1000
    sb = ej("sandbox", "resume", a)
    left = (sb["expires_at_ms"] or 0) - t0
    check(sb["state"] == "running" and sb["timeout"] == 900 and
          800_000 < left <= 901_000 + 60_000,
          f"resume restores the user's timeout: 900 s ({left:.0f} ms left)")
    rc, out, _ = st.ember("sandbox", "cp", f"{a}:/root/note.txt", "-")
    check(out == "kept across everything\n", "A's file survived the timeout")

    # D is created with a timeout that kills it.
    stack.log("spawning D with --timeout 4 --on-timeout kill")
    rc, d, err = st.ember("sandbox", "create", "--template", "snapa",
                          "--timeout", "4", "--on-timeout", "kill")
    d = d.strip()
    if not check(rc == 0 and d, f"spawn D with a kill timeout ({err})"):
        return
    sb = st.wait_state(d, ("stopped", "error", "paused"), timeout=120)
    check(sb["state"] == "stopped" and sb["on_timeout"] == "kill",
          f"D was killed at its timeout ({sb['state']})")
    check(st.vmm_pid(d) is None, "D's VMM is gone")


if __name__ == "__main__":
    db = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    sys.exit(stack.run(f"emberd-cli-{db}", lifecycle, db=db))
