#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""emberd's REST API and the ember CLI against a real emberd process with a
temporary SQLite database and no host agent: authentication, every
endpoint's errors (bad JSON, unknown fields, wrong types, missing or wrong
key, unknown ids, state conflicts, no host), and the CLI's --json output and
exit codes. Rows a host agent would have produced (a paused sandbox, a
snapshot template) are written into the database directly.

Usage: test_api.py EMBERD EMBER
"""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

EMBERD, EMBER = sys.argv[1], sys.argv[2]
checks = failures = 0


def check(cond, what):
    global checks, failures
    checks += 1
    if not cond:
        failures += 1
        print(f"check failed: {what}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, path, body=None, key=None, raw=None):
    """Returns (status, parsed JSON or text)."""
    data = raw if raw is not None else (
        json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def is_error(resp, code=None):
    """The one error shape: {"code": ..., "message": ...}."""
    _, j = resp
    ok = (isinstance(j, dict) and set(j) == {"code", "message"}
          and isinstance(j["message"], str) and j["message"] != "")
    return ok and (code is None or j["code"] == code)


def ember(*args, key=None, env_extra=None):
    env = dict(os.environ, EMBER_API_URL=BASE)
    env.pop("EMBER_API_KEY", None)
    if key:
        env["EMBER_API_KEY"] = key
    env.update(env_extra or {})
    p = subprocess.run([EMBER, *args], capture_output=True, text=True,
                       env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


tmp = tempfile.mkdtemp(prefix="ember-test-api.")
db_path = os.path.join(tmp, "emberd.db")
port = free_port()
BASE = f"http://127.0.0.1:{port}"

key = subprocess.run([EMBERD, "keys", "create", "--name", "test", "--db",
                      db_path], capture_output=True, text=True,
                     timeout=30).stdout.strip()
check(key.startswith("ember_"), "keys create prints the key")
# A host agent that does not answer: the host is marked down.
dead = f"http://127.0.0.1:{free_port()}"
log = open(os.path.join(tmp, "emberd.log"), "w")
proc = subprocess.Popen([EMBERD, "--db", db_path, "--listen",
                         f"127.0.0.1:{port}", "--kernel", "/k/vmlinux",
                         "--rootfs", "/k/rootfs.ext4", "--default-vcpus",
                         "1", "--default-memory", "128M", "--agent", dead,
                         "--reconcile-interval", "1"],
                        stdout=log, stderr=subprocess.STDOUT)
try:
    deadline = time.monotonic() + 20
    while True:
        try:
            if call("GET", "/healthz")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("emberd did not start")
        time.sleep(0.1)

    # --- health and authentication ---
    st, j = call("GET", "/healthz")
    check(st == 200 and j == {"status": "ok"}, "healthz without a key")
    endpoints = [
        ("GET", "/v1/sandboxes"), ("POST", "/v1/sandboxes"),
        ("GET", "/v1/sandboxes/x"), ("DELETE", "/v1/sandboxes/x"),
        ("POST", "/v1/sandboxes/x/pause"), ("POST", "/v1/sandboxes/x/resume"),
        ("POST", "/v1/sandboxes/x/timeout"), ("POST", "/v1/sandboxes/x/exec"),
        ("GET", "/v1/sandboxes/x/files?path=/a"),
        ("PUT", "/v1/sandboxes/x/files?path=/a"),
        ("DELETE", "/v1/sandboxes/x/files?path=/a"),
        ("POST", "/v1/snapshots"), ("GET", "/v1/snapshots"),
        ("GET", "/v1/snapshots/s"), ("DELETE", "/v1/snapshots/s"),
        ("GET", "/v1/templates"), ("GET", "/v1/hosts"), ("GET", "/metrics"),
    ]
    for m, p in endpoints:
        body = {} if m in ("POST", "PUT") else None
        r = call(m, p, body)
        check(r[0] == 401 and is_error(r, "unauthenticated"),
              f"{m} {p} without a key: {r}")
        r = call(m, p, body, key=key + "x")
        check(r[0] == 401 and is_error(r, "unauthenticated"),
              f"{m} {p} with a wrong key: {r}")
        r = call(m, p, body, key="ember_" + "0" * 40)
        check(r[0] == 401, f"{m} {p} with an unknown key")

    # --- listings ---
    st, j = call("GET", "/v1/templates", key=key)
    check(st == 200 and [t["name"] for t in j["templates"]] == ["base"],
          f"templates: the base template from the flags: {j}")
    base = j["templates"][0]
    check(base["kind"] == "base" and base["vcpus"] == 1 and
          base["memory_mib"] == 128 and base["kernel"] == "/k/vmlinux",
          f"base template sizes: {base}")
    st, j = call("GET", "/v1/sandboxes", key=key)
    check(st == 200 and j == {"sandboxes": []}, "no sandboxes yet")
    st, j = call("GET", "/v1/snapshots", key=key)
    check(st == 200 and j == {"snapshots": []}, "no snapshots yet")
    st, j = call("GET", "/metrics", key=key)
    check(st == 200 and 'emberd_sandboxes{state="running"} 0' in j,
          "metrics in Prometheus text")
    # The reconciler marks the dead agent down.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st, j = call("GET", "/v1/hosts", key=key)
        if j["hosts"] and j["hosts"][0]["state"] == "down":
            break
        time.sleep(0.2)
    check(len(j["hosts"]) == 1 and j["hosts"][0]["url"] == dead and
          j["hosts"][0]["state"] == "down" and j["hosts"][0]["last_error"],
          f"the unanswering host is down: {j}")

    # --- bad requests ---
    for p in ["/v1/sandboxes", "/v1/sandboxes/x/timeout",
              "/v1/sandboxes/x/exec", "/v1/snapshots"]:
        r = call("POST", p, raw=b'{"template": ', key=key)
        check(r[0] == 400 and is_error(r, "invalid_argument") and
              "bad JSON" in r[1]["message"], f"bad JSON on {p}: {r}")
        r = call("POST", p, raw=b'[1, 2]', key=key)
        check(r[0] == 400 and is_error(r), f"non-object body on {p}: {r}")
        r = call("POST", p, {"bogus": 1}, key=key)
        check(r[0] == 400 and is_error(r) and "bogus" in r[1]["message"],
              f"unknown field on {p}: {r}")
    wrong_types = [
        ("/v1/sandboxes", {"vcpus": "2"}),
        ("/v1/sandboxes", {"memory_mib": 1.5}),
        ("/v1/sandboxes", {"template": 3}),
        ("/v1/sandboxes", {"metadata": {"a": 1}}),
        ("/v1/sandboxes", {"env": ["A=1"]}),
        ("/v1/sandboxes", {"network": "yes"}),
        ("/v1/sandboxes", {"on_timeout": "explode"}),
        ("/v1/sandboxes", {"vcpus": 0}),
        ("/v1/sandboxes", {"timeout": -5}),
        ("/v1/sandboxes/x/timeout", {"timeout": "10"}),
        ("/v1/sandboxes/x/timeout", {}),
        ("/v1/sandboxes/x/exec", {"cmd": "ls"}),
        ("/v1/sandboxes/x/exec", {"cmd": []}),
        ("/v1/sandboxes/x/exec", {"cmd": [1]}),
        ("/v1/sandboxes/x/exec", {}),
        ("/v1/sandboxes/x/exec", {"cmd": ["ls"], "command": "ls"}),
        ("/v1/snapshots", {"sandbox_id": 1, "name": "a"}),
        ("/v1/snapshots", {"sandbox_id": "x"}),
        ("/v1/snapshots", {"sandbox_id": "x", "name": "../evil"}),
    ]
    for p, body in wrong_types:
        r = call("POST", p, body, key=key)
        check(r[0] == 400 and is_error(r, "invalid_argument"),
              f"wrong type on {p} {body}: {r}")
    r = call("GET", "/v1/sandboxes?state=frozen", key=key)
    check(r[0] == 400 and is_error(r), f"unknown state filter: {r}")
    r = call("GET", "/v1/sandboxes/x/files", key=key)
    check(r[0] == 400 and is_error(r), f"files without a path: {r}")
    r = call("PATCH", "/v1/sandboxes", {}, key=key)
    check(r[0] == 405 and is_error(r), f"wrong method: {r}")
    r = call("GET", "/v1/nothing", key=key)
    check(r[0] == 404 and is_error(r, "not_found"), f"unknown path: {r}")

    # --- unknown ids ---
    for m, p, body in [
            ("GET", "/v1/sandboxes/sbx-nope", None),
            ("DELETE", "/v1/sandboxes/sbx-nope", None),
            ("POST", "/v1/sandboxes/sbx-nope/pause", {}),
            ("POST", "/v1/sandboxes/sbx-nope/resume", {}),
            ("POST", "/v1/sandboxes/sbx-nope/timeout", {"timeout": 10}),
            ("POST", "/v1/sandboxes/sbx-nope/exec", {"cmd": ["true"]}),
            ("GET", "/v1/sandboxes/sbx-nope/files?path=/etc/hostname", None),
            ("PUT", "/v1/sandboxes/sbx-nope/files?path=/tmp/a", {}),
            ("DELETE", "/v1/sandboxes/sbx-nope/files?path=/tmp/a", None),
            ("GET", "/v1/snapshots/nope", None),
            ("DELETE", "/v1/snapshots/nope", None),
            ("GET", "/v1/snapshots/base", None),     # a base template
            ("POST", "/v1/snapshots", {"sandbox_id": "sbx-nope",
                                       "name": "s1"}),
            ("POST", "/v1/sandboxes", {"template": "nope"})]:
        r = call(m, p, body, key=key)
        check(r[0] == 404 and is_error(r, "not_found"),
              f"unknown id {m} {p}: {r}")

    # --- no host ---
    r = call("POST", "/v1/sandboxes", {"vcpus": 1, "memory_mib": 128,
                                       "metadata": {"a": "b"}}, key=key)
    check(r[0] == 503 and is_error(r, "unavailable"), f"no host: {r}")

    # --- rows a host agent would have made ---
    now = int(time.time() * 1000)
    db = sqlite3.connect(db_path, timeout=10)
    host_id = db.execute("SELECT id FROM hosts").fetchone()[0]
    db.execute("INSERT INTO templates (name, kind, vcpus, memory_mib, "
               "host_id, source_sandbox_id, created_at_ms) VALUES "
               "('snap', 'snapshot', 2, 256, ?, 'sbx-src', ?)",
               (host_id, now))
    for sid, state, meta in [("sbx-paused", "paused", '{"team":"a"}'),
                             ("sbx-stopped", "stopped", '{"team":"b"}'),
                             ("sbx-error", "error", '{"team":"b"}')]:
        db.execute("INSERT INTO sandboxes (id, template_name, host_id, "
                   "state, vcpus, memory_mib, timeout_s, on_timeout, "
                   "metadata, created_at_ms, updated_at_ms) VALUES "
                   "(?, 'base', ?, ?, 1, 128, 60, 'pause', ?, ?, ?)",
                   (sid, host_id, state, meta, now, now))
    db.commit()
    db.close()

    # A snapshot template fixes vCPUs and memory.
    r = call("POST", "/v1/sandboxes", {"template": "snap", "vcpus": 4},
             key=key)
    check(r[0] == 400 and is_error(r, "invalid_argument") and
          "vCPUs" in r[1]["message"], f"snapshot template, other vCPUs: {r}")
    r = call("POST", "/v1/sandboxes", {"template": "snap",
                                       "memory_mib": 1024}, key=key)
    check(r[0] == 400 and is_error(r), f"snapshot template, other memory: {r}")
    # The same sizes are fine; its host is down, so 503.
    r = call("POST", "/v1/sandboxes", {"template": "snap", "vcpus": 2},
             key=key)
    check(r[0] == 503 and is_error(r, "unavailable"),
          f"snapshot template on a down host: {r}")
    st, j = call("GET", "/v1/snapshots/snap", key=key)
    check(st == 200 and j["vcpus"] == 2 and j["memory_mib"] == 256 and
          j["source_sandbox"] == "sbx-src", f"snapshot get: {j}")

    # Conflicts: a paused sandbox cannot pause or run commands.
    for m, p, body in [("POST", "/v1/sandboxes/sbx-paused/pause", {}),
                       ("POST", "/v1/sandboxes/sbx-paused/exec",
                        {"cmd": ["true"]}),
                       ("GET", "/v1/sandboxes/sbx-paused/files?path=/a",
                        None),
                       ("POST", "/v1/snapshots",
                        {"sandbox_id": "sbx-paused", "name": "s2"}),
                       ("POST", "/v1/snapshots",
                        {"sandbox_id": "sbx-error", "name": "snap"}),
                       ("DELETE", "/v1/sandboxes/sbx-stopped", None),
                       ("POST", "/v1/sandboxes/sbx-stopped/timeout",
                        {"timeout": 5})]:
        r = call(m, p, body, key=key)
        check(r[0] == 409 and is_error(r), f"conflict {m} {p}: {r}")
    # A sandbox in error may resume (its host may hold a paused snapshot
    # of it); that host is down here: 503, and it stays in error.
    r = call("POST", "/v1/sandboxes/sbx-error/resume", {}, key=key)
    check(r[0] == 503 and is_error(r, "unavailable"),
          f"resume of an error sandbox on a down host: {r}")
    check(call("GET", "/v1/sandboxes/sbx-error", key=key)[1]["state"] ==
          "error", "it stays in error")
    # A paused sandbox's timeout is kept for when it resumes.
    st, j = call("POST", "/v1/sandboxes/sbx-paused/timeout",
                 {"timeout": 90, "on_timeout": "kill"}, key=key)
    check(st == 200 and j["timeout"] == 90 and j["on_timeout"] == "kill"
          and j["expires_at_ms"] is None and j["state"] == "paused",
          f"timeout of a paused sandbox: {j}")
    # Resuming goes to the host holding its files, which is down: 503,
    # and the sandbox stays paused.
    r = call("POST", "/v1/sandboxes/sbx-paused/resume", {}, key=key)
    check(r[0] == 503 and is_error(r, "unavailable"), f"resume, host down: {r}")
    st, j = call("GET", "/v1/sandboxes/sbx-paused", key=key)
    check(st == 200 and j["state"] == "paused" and j["timeout"] == 90,
          f"still paused after a failed resume: {j}")
    check([e["to"] for e in j["events"]][-2:] == ["resuming", "paused"],
          f"the failed resume is in the event log: {j['events']}")

    # Listing with filters.
    st, j = call("GET", "/v1/sandboxes", key=key)
    ids = sorted(s["id"] for s in j["sandboxes"])
    check("sbx-stopped" not in ids and "sbx-paused" in ids,
          f"stopped sandboxes are not listed by default: {ids}")
    st, j = call("GET", "/v1/sandboxes?metadata.team=b", key=key)
    check([s["id"] for s in j["sandboxes"]] == ["sbx-error"],
          f"metadata filter: {j}")
    st, j = call("GET", "/v1/sandboxes?state=stopped", key=key)
    check([s["id"] for s in j["sandboxes"]] == ["sbx-stopped"],
          f"state filter: {j}")

    # --- the CLI ---
    rc, out, err = ember("--json", "template", "list", key=key)
    check(rc == 0 and [t["name"] for t in json.loads(out)["templates"]] ==
          ["base", "snap"], f"ember --json template list: {rc} {out} {err}")
    rc, out, err = ember("template", "list", key=key)
    check(rc == 0 and out.startswith("NAME") and "snap" in out,
          f"ember template list table: {out}")
    rc, out, err = ember("--json", "sandbox", "get", "sbx-paused", key=key)
    check(rc == 0 and json.loads(out)["state"] == "paused",
          f"ember sandbox get --json: {rc} {out}")
    rc, out, err = ember("sandbox", "list", "--json", "--state", "error",
                         key=key)
    check(rc == 0 and [s["id"] for s in json.loads(out)["sandboxes"]] ==
          ["sbx-error"], f"ember sandbox list --state: {rc} {out} {err}")
    rc, out, err = ember("--json", "host", "list", key=key)
    check(rc == 0 and json.loads(out)["hosts"][0]["state"] == "down",
          f"ember host list: {rc} {out}")
    rc, out, err = ember("--json", "snapshot", "list", key=key)
    check(rc == 0 and json.loads(out)["snapshots"][0]["name"] == "snap",
          f"ember snapshot list: {rc} {out}")
    rc, out, err = ember("sandbox", "get", "sbx-nope", key=key)
    check(rc == 3 and "not found" in err, f"exit 3 for not found: {rc} {err}")
    rc, out, err = ember("sandbox", "pause", "sbx-paused", key=key)
    check(rc == 4, f"exit 4 for a conflict: {rc} {err}")
    rc, out, err = ember("sandbox", "exec", "sbx-paused", "--", "true",
                         key=key)
    check(rc == 4 and "paused" in err, f"exec on a paused sandbox: {rc} {err}")
    rc, out, err = ember("sandbox", "list")
    check(rc == 5, f"exit 5 without a key: {rc} {err}")
    rc, out, err = ember("sandbox", "list", key="wrong")
    check(rc == 5, f"exit 5 with a wrong key: {rc} {err}")
    rc, out, err = ember("sandbox", "create", "--memory", "256M", key=key)
    check(rc == 6 and "no host" in err, f"exit 6 for no host: {rc} {err}")
    rc, out, err = ember("--json", "sandbox", "create", "--vcpus", "9",
                         "--template", "snap", key=key)
    check(rc == 2 and out == "" and
          json.loads(err.strip().splitlines()[-1])["code"] ==
          "invalid_argument", f"--json error on stderr: {rc} {err}")
    rc, out, err = ember("sandbox", "frobnicate", key=key)
    check(rc == 2, f"exit 2 for a usage error: {rc}")
    rc, out, err = ember("sandbox", "create", "--vcpus", "x", key=key)
    check(rc == 2, f"exit 2 for a bad option value: {rc}")
    rc, out, err = ember("--json", "host", "list", key=key,
                         env_extra={"EMBER_API_URL":
                                    f"http://127.0.0.1:{free_port()}"})
    check(rc == 6 and "cannot reach" in err, f"exit 6 unreachable: {rc} {err}")
    rc, out, err = ember("--version")
    check(rc == 0 and out.startswith("ember "), "ember --version")
    rc, out, _ = ember("--help")
    check(rc == 0 and "Exit status" in out, "ember --help")
    p = subprocess.run([EMBERD, "--help"], capture_output=True, text=True)
    check(p.returncode == 0 and "--db" in p.stdout, "emberd --help")
    p = subprocess.run([EMBERD, "--bogus"], capture_output=True, text=True)
    check(p.returncode == 2, "emberd usage error exits 2")

    # TODO(emberd): the whole lifecycle (create, exec streaming, files,
    # pause, resume, snapshot, timeouts, reconciler with a killed VMM and
    # an orphan) needs the real ember-agent; it goes in tests/e2e/emberd.
finally:
    proc.terminate()
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    log.close()
    check(rc == 0, f"emberd exits 0 on SIGTERM (got {rc})")
    if failures:
        print(open(os.path.join(tmp, "emberd.log")).read()[-4000:],
              file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

print(f"emberd-api: {checks} checks, {failures} failed", file=sys.stderr)
sys.exit(1 if failures else 0)
