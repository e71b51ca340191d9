#!/usr/bin/env python3
"""Platform benchmarks through ember-agent and emberd: pause, resume, spawn, exec.

Runs where Linux guests run (inside the nested host here; bench/run.py
starts it there through in_host). Starts its own ember-agent on a free
localhost port (state under /var/lib/ember/bench-<pid>, run files under
/run/ember-bench-<pid>), drives it through its Connect RPC with JSON bodies
and measures, from this side of the RPC:

  pause_ms                  first PauseSandbox of a 256 MiB sandbox (wall)
  pause_bytes_first         memory layer bytes the agent reports for it
  pause_bytes_idle_second   the same for the second pause, after a resume
                            and an idle period (a diff layer)
  resume_ready_ms_lazy      ResumeSandbox (which waits for the guest agent)
                            plus one Exec of `true`, median of --resume-runs,
                            with prefetch OFF (resume_rpc_ms: the
                            ResumeSandbox call alone)
  resume_ready_ms_prefetch  the same with prefetch ON: the working set that
                            a first resume (RECORD, not counted) stored in
                            the sandbox's snap/ is installed before the vCPUs
                            run
  resume_ready_ms_eager     the same with prefetch EAGER: all guest memory
                            installed before the vCPUs run
  resume_faults_lazy        faults ember-uffd served until the guest agent
  resume_faults_prefetch    answered (the answer's RestoreStats), medians;
                            resume_prefetched_pages: pages the ON resumes
                            installed. The three modes alternate, rotating
                            their order each round, on one sandbox
  spawn_ready_ms            CreateSandbox from a snapshot template to a
                            ready clone, median of --spawn-runs (10), with the
                            agent's default prefetch (ON: the first clone
                            records the template's working set)
  spawn_parallel_10_ms      N clones at once until all are ready (N=10 when
                            the host's free memory allows; spawn_parallel_n)
  exec_rtt_ms               POST /v1/sandboxes/{id}/exec of `true` (buffered)
                            through emberd's REST, median of --exec-runs
                            (10) after one warm-up, on a 256 MiB sandbox
                            made with POST /v1/sandboxes. emberd runs first,
                            alone (its reconciler destroys agent sandboxes
                            it does not know), against this agent, with an
                            SQLite db and an API key of its own under
                            /var/lib/ember/bench-<pid>-emberd
  exec_rtt_ms_agent         Exec of `true` through the agent's RPC on the
                            same sandbox, alternated with the REST ones
                            (exec_rtt_ratio_emberd_agent: their ratio)
  file_write_mib_s          WriteFile of a --file-mib (32) MiB random file
  file_read_mib_s           ReadFile of it back (compared byte for byte);
                            both through the agent's RPC (JSON, base64) and
                            the guest agent over vsock, median of
                            --file-runs (3)

Everything it creates is destroyed at the end, also on errors, and emberd
and the agent are stopped. Progress goes to stderr; one JSON object is printed on
the last line of stdout.
"""
import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVC = "/ember.hostagent.v1.HostAgent/"


def log(msg):
    print(f"bench-platform: {msg}", file=sys.stderr, flush=True)


def ms(seconds):
    return round(seconds * 1000, 1)


class RpcError(RuntimeError):
    def __init__(self, method, status, body):
        super().__init__(f"{method} answered {status}: {body[:300]}")
        self.status = status


def http_request(port, method, path, body, headers, timeout):
    """One request on a new connection to 127.0.0.1:port; (status, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Agent:
    """A client of one ember-agent's Connect RPC (JSON)."""

    def __init__(self, port):
        self.port = port

    def _post(self, method, body, ctype, timeout):
        return http_request(self.port, "POST", SVC + method, body,
                            {"Content-Type": ctype}, timeout)

    def call(self, method, req, timeout=300):
        status, body = self._post(method, json.dumps(req).encode(),
                                  "application/json", timeout)
        if status != 200:
            raise RpcError(method, status, body.decode(errors="replace"))
        return json.loads(body) if body else {}

    def exec(self, sid, argv, timeout=120):
        """One Exec; returns (exit code, stdout bytes)."""
        body = json.dumps({"sandboxId": sid, "argv": argv}).encode()
        status, data = self._post("Exec", struct.pack(">BI", 0, len(body)) +
                                  body, "application/connect+json", timeout)
        if status != 200:
            raise RpcError("Exec", status, data.decode(errors="replace"))
        code, out = None, b""
        while data:
            flags, n = struct.unpack(">BI", data[:5])
            m = json.loads(data[5:5 + n] or b"{}")
            data = data[5 + n:]
            if flags & 2:
                if m.get("error"):
                    raise RpcError("Exec", status, json.dumps(m["error"]))
                break
            if "stdoutData" in m:
                out += base64.b64decode(m["stdoutData"])
            if "exit" in m:
                code = m["exit"].get("exitCode", 0)
        if code is None:
            raise RuntimeError(f"Exec in {sid}: the stream ended without an exit")
        return code, out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log_tail(path, what, n=30):
    """Logs the last n lines of the log file path of `what`."""
    try:
        with open(path, "rb") as f:
            tail = f.read().decode(errors="replace").splitlines()[-n:]
    except OSError as e:
        tail = [str(e)]
    log(f"{what}'s log ends:\n  " + "\n  ".join(tail))


class Emberd:
    """emberd on a free localhost port, against one agent, with an SQLite db
    and an API key of its own in folder; a client of its REST API."""

    def __init__(self, binary, folder, agent_port, artifacts):
        self.folder = folder
        self.sandboxes = set()   # created and not yet destroyed
        self.created = []        # every sandbox id it made (for cleanup)
        os.makedirs(folder, exist_ok=True)
        db = os.path.join(folder, "emberd.db")
        p = subprocess.run([binary, "keys", "create", "--name", "bench",
                            "--db", db], capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0 or not p.stdout.startswith("ember_"):
            raise RuntimeError(f"emberd keys create exited {p.returncode}: "
                               f"{p.stderr.strip()[-300:]}")
        self.key = p.stdout.strip()
        self.port = free_port()
        self.log_path = os.path.join(folder, "emberd.log")
        self.log_file = open(self.log_path, "wb")
        # The reconciler's first pass (at start) finds the agent up; later
        # passes (ListSandboxes on the agent) would only add noise.
        self.proc = subprocess.Popen(
            [binary, "--db", db, "--listen", f"127.0.0.1:{self.port}",
             "--agent", f"http://127.0.0.1:{agent_port}",
             "--kernel", os.path.join(artifacts, "vmlinux"),
             "--rootfs", os.path.join(artifacts, "rootfs.ext4"),
             "--default-vcpus", "1", "--default-memory", "256M",
             "--reconcile-interval", "60", "--log-level", "warn"],
            stdout=self.log_file, stderr=self.log_file,
            stdin=subprocess.DEVNULL)

    def api(self, method, path, req=None, timeout=300):
        headers = {"Authorization": "Bearer " + self.key}
        body = None
        if req is not None:
            body = json.dumps(req).encode()
            headers["Content-Type"] = "application/json"
        status, data = http_request(self.port, method, path, body, headers,
                                    timeout)
        if status not in (200, 201):
            raise RpcError(f"{method} {path}", status,
                           data.decode(errors="replace"))
        return json.loads(data) if data else {}

    def wait_host_up(self, timeout=90):
        deadline = time.monotonic() + timeout
        hosts = []
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emberd exited {self.proc.returncode}")
            try:
                hosts = self.api("GET", "/v1/hosts", timeout=5).get("hosts", [])
                if hosts and all(h.get("state") == "up" for h in hosts):
                    return
            except (OSError, RpcError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"emberd did not see the agent up: {hosts}")

    def create(self, req, timeout=600):
        """POST /v1/sandboxes; waits until the sandbox runs; its id."""
        s = self.api("POST", "/v1/sandboxes", req, timeout=timeout)
        sid = s["id"]
        self.sandboxes.add(sid)
        self.created.append(sid)
        deadline = time.monotonic() + timeout
        while s.get("state") != "running":
            if s.get("state") in ("error", "stopped") or \
                    time.monotonic() > deadline:
                raise RuntimeError(f"sandbox {sid} is {s.get('state')}: "
                                   f"{s.get('error')}")
            time.sleep(0.2)
            s = self.api("GET", f"/v1/sandboxes/{sid}")
        return sid

    def exec(self, sid, argv, timeout=120):
        """Buffered exec; returns (exit code, stdout)."""
        r = self.api("POST", f"/v1/sandboxes/{sid}/exec",
                     {"cmd": argv, "stream": False}, timeout=timeout)
        return r.get("exit_code"), r.get("stdout", "")

    def destroy(self, sid):
        self.api("DELETE", f"/v1/sandboxes/{sid}", timeout=120)
        self.sandboxes.discard(sid)

    def stop(self):
        """Destroys what it still has, stops emberd; returns the ids it could
        not destroy (for the agent to destroy directly)."""
        left = set()
        for sid in sorted(self.sandboxes):
            try:
                if self.proc.poll() is not None:
                    raise RuntimeError("emberd is not running")
                self.destroy(sid)
            except (OSError, RuntimeError) as e:
                if not (isinstance(e, RpcError) and e.status == 404):
                    log(f"cleanup: DELETE /v1/sandboxes/{sid}: {e}")
                    left.add(sid)
        self.sandboxes.clear()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("cleanup: emberd did not stop on SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return left


def procs_with_id(prefixes):
    """(pid, comm) of ember-vmm/ember-uffd processes whose --id starts with
    one of prefixes (a tuple): only what this run started."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) not in (b"ember-vmm",
                                                         b"ember-uffd"):
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"--id" and argv[i + 1].decode(errors="replace").startswith(prefixes):
                found.append((int(p), os.path.basename(argv[0]).decode()))
    return found


def exec_true(client, sid):
    """Exec of `true` in sid through client (an Agent or an Emberd)."""
    code, _ = client.exec(sid, ["true"])
    if code != 0:
        raise RuntimeError(f"`true` exited {code} in {sid}")


def exec_rtt(a, ag, folder, owned, ids):
    """Exec round trips of `true` on one 256 MiB sandbox that a new emberd
    (in folder, against agent ag) creates: through emberd's REST and through
    the agent's RPC, alternating which goes first each round, after one
    warm-up of each. Destroys the sandbox and stops emberd, also on errors;
    what emberd could not destroy goes into owned (destroyed through the
    agent later), every id it made into ids. Returns (REST median, RPC
    median, {side: [ms...]})."""
    ed = Emberd(a.emberd, folder, ag.port, a.artifacts)
    try:
        ed.wait_host_up()
        t0 = time.monotonic()
        sid = ed.create({"vcpus": 1, "memory_mib": 256, "timeout": 3600})
        log(f"sandbox {sid} through emberd: running after "
            f"{ms(time.monotonic() - t0)} ms")
        sides = {"emberd": ed, "agent": ag}
        for client in sides.values():
            exec_true(client, sid)
        times = {side: [] for side in sides}
        for i in range(a.exec_runs):
            for side in (("emberd", "agent") if i % 2 == 0
                         else ("agent", "emberd")):
                t0 = time.monotonic()
                exec_true(sides[side], sid)
                times[side].append(ms(time.monotonic() - t0))
        ed.destroy(sid)
    except BaseException:
        log_tail(ed.log_path, "emberd")
        raise
    finally:
        ids.extend(ed.created)
        owned.update(ed.stop())
    return (round(statistics.median(times["emberd"]), 2),
            round(statistics.median(times["agent"]), 2), times)


def file_throughput(ag, sid, mib, runs):
    """WriteFile then ReadFile of a random file of mib MiB in sandbox sid,
    through the agent's RPC (JSON bodies, content in base64) and on to the
    guest agent over vsock; each read is compared with what was written.
    Returns (write MiB/s, read MiB/s), medians of runs, and the per-run
    figures."""
    data = os.urandom(mib << 20)
    b64 = base64.b64encode(data).decode()
    path = "/root/bench-file"
    writes, reads = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        r = ag.call("WriteFile", {"sandboxId": sid, "path": path,
                                  "content": b64, "mode": 0o600})
        dt = time.monotonic() - t0
        if int(r.get("bytesWritten", 0)) != len(data):
            raise RuntimeError(f"WriteFile of {len(data)} bytes in {sid} "
                               f"answered {r}")
        writes.append(round(mib / dt, 2))
        t0 = time.monotonic()
        r = ag.call("ReadFile", {"sandboxId": sid, "path": path})
        dt = time.monotonic() - t0
        if base64.b64decode(r.get("content", "")) != data:
            raise RuntimeError(f"ReadFile of {path} in {sid}: not the bytes "
                               "written")
        reads.append(round(mib / dt, 2))
    code, _ = ag.exec(sid, ["rm", "-f", path])
    if code != 0:
        raise RuntimeError(f"rm {path} exited {code} in {sid}")
    return statistics.median(writes), statistics.median(reads), writes, reads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", default=os.path.join(
        ROOT, "build", "src", "ember-agent", "ember-agent"))
    ap.add_argument("--emberd", default=os.path.join(
        ROOT, "build", "src", "emberd", "emberd"))
    ap.add_argument("--artifacts", default=os.path.join(ROOT, "build",
                                                        "artifacts"))
    ap.add_argument("--resume-runs", type=int, default=3)
    ap.add_argument("--spawn-runs", type=int, default=10)
    ap.add_argument("--exec-runs", type=int, default=10)
    ap.add_argument("--file-mib", type=int, default=32)
    ap.add_argument("--file-runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--idle", type=float, default=5.0,
                    help="seconds the sandbox idles before each pause")
    a = ap.parse_args()

    # SIGTERM (ember-nested exec --timeout, the driver) still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    pid = os.getpid()
    prefix = f"bench{pid}-"
    state = f"/var/lib/ember/bench-{pid}"
    run = f"/run/ember-bench-{pid}"
    os.makedirs(state, exist_ok=True)
    os.makedirs(run, exist_ok=True)
    port = free_port()
    agent_log = open(os.path.join(state, "agent.log"), "wb")
    proc = subprocess.Popen(
        [a.agent, "--listen", f"127.0.0.1:{port}", "--state-dir", state,
         "--run-dir", run, "--kernel", os.path.join(a.artifacts, "vmlinux"),
         "--rootfs", os.path.join(a.artifacts, "rootfs.ext4"),
         "--boot-timeout", "240", "--log-level", "warn"],
        stdout=agent_log, stderr=agent_log, stdin=subprocess.DEVNULL)
    ag = Agent(port)
    sandboxes, templates = set(), set()
    emberd_dir = f"{state}-emberd"
    emberd_ids = []
    res, notes = {}, {}
    t_start = time.monotonic()
    try:
        for _ in range(100):
            if proc.poll() is not None:
                raise RuntimeError(f"ember-agent exited {proc.returncode}")
            try:
                info = ag.call("GetHostInfo", {}, timeout=5)
                break
            except (OSError, RpcError):
                time.sleep(0.1)
        else:
            raise RuntimeError("ember-agent did not answer")
        log(f"agent on port {port}: {info.get('freeMemoryMib')} MiB free, "
            f"{info.get('totalVcpus')} vCPUs")

        def create(sid, **kw):
            sandboxes.add(sid)
            return ag.call("CreateSandbox", dict(sandboxId=sid, **kw))

        def destroy(sid):
            ag.call("DestroySandbox", {"sandboxId": sid})
            sandboxes.discard(sid)

        def ready_exec(sid):
            exec_true(ag, sid)

        # ---- exec through emberd, first: emberd's reconciler destroys
        # agent sandboxes it does not know, so it runs alone ----
        try:
            (res["exec_rtt_ms"], res["exec_rtt_ms_agent"],
             rtts) = exec_rtt(a, ag, emberd_dir, sandboxes, emberd_ids)
            res["exec_rtt_ratio_emberd_agent"] = round(
                res["exec_rtt_ms"] / res["exec_rtt_ms_agent"], 2)
            res["exec_rtt_level"] = "emberd"
            res["exec_runs"] = a.exec_runs
            log(f"exec rtt: emberd {rtts['emberd']}, agent {rtts['agent']}")
        except Exception as e:  # the rest does not need emberd
            notes["exec_rtt_ms"] = f"failed through emberd: {e}"
            log(notes["exec_rtt_ms"])

        # ---- pause and resume: one 256 MiB sandbox ----
        sid = prefix + "pause"
        t0 = time.monotonic()
        create(sid, templateName="base", vcpus=1, memoryMib=256)
        ready_exec(sid)
        log(f"256 MiB sandbox up in {ms(time.monotonic() - t0)} ms")
        # One warm-up resume records the working set (RECORD); then rounds
        # of OFF, EAGER and ON, their order rotated each round.
        modes = ["RECORD"]
        for i in range(a.resume_runs):
            rnd = ["OFF", "EAGER", "ON"]
            modes += rnd[i % 3:] + rnd[:i % 3]
        pauses = []
        ready = {m: [] for m in ("OFF", "EAGER", "ON", "RECORD")}
        stats = {m: [] for m in ready}
        resume_rpc = []
        for i in range(1 + len(modes)):
            # The first two pauses after the full idle period (the second
            # is pause_bytes_idle_second); the later ones need less.
            time.sleep(a.idle if i < 2 else min(a.idle, 1.0))
            t0 = time.monotonic()
            p = ag.call("PauseSandbox", {"sandboxId": sid})
            dt = time.monotonic() - t0
            pauses.append((ms(dt), int(p.get("memoryBytesWritten", 0)),
                           int(p.get("generation", 0)),
                           int(p.get("pauseMs", 0))))
            log(f"pause {i}: {pauses[-1][0]} ms, generation {pauses[-1][2]}, "
                f"{pauses[-1][1]} memory bytes written")
            if i == len(modes):
                break
            mode = modes[i]
            t0 = time.monotonic()
            r = ag.call("ResumeSandbox", {"sandboxId": sid,
                                          "prefetch": "PREFETCH_MODE_" + mode})
            rpc_ms = ms(time.monotonic() - t0)
            ready_exec(sid)
            ready[mode].append(ms(time.monotonic() - t0))
            if mode == "OFF":
                resume_rpc.append(rpc_ms)
            rs = r.get("restore", {})
            got = rs.get("prefetch", "").replace("PREFETCH_MODE_", "")
            if got != mode:
                notes[f"resume_{mode.lower()}"] = (
                    f"resume {i} asked for {mode}, the agent did {got}")
            stats[mode].append((int(rs.get("faultsUntilReady", 0)),
                                int(rs.get("prefetchedPages", 0)),
                                int(rs.get("bytesCopied", 0))))
            log(f"resume {i} ({mode}): ready after {ready[mode][-1]} ms, "
                f"{stats[mode][-1][0]} faults, {stats[mode][-1][1]} "
                f"prefetched")
        res["pause_ms"] = pauses[0][0]
        res["pause_ms_agent"] = pauses[0][3]
        res["pause_bytes_first"] = pauses[0][1]
        if len(pauses) > 1:
            res["pause_bytes_idle_second"] = pauses[1][1]
            res["pause_ms_second"] = pauses[1][0]
        res["pause_guest_mib"] = 256
        for mode, key in (("OFF", "lazy"), ("EAGER", "eager"),
                          ("ON", "prefetch")):
            if ready[mode]:
                res[f"resume_ready_ms_{key}"] = statistics.median(ready[mode])
        res["resume_rpc_ms"] = statistics.median(resume_rpc)
        res["resume_runs"] = a.resume_runs
        if stats["OFF"] and stats["ON"]:
            res["resume_faults_lazy"] = int(statistics.median(f for f, _, _ in stats["OFF"]))
            res["resume_bytes_lazy"] = int(statistics.median(b for _, _, b in stats["OFF"]))
            res["resume_faults_prefetch"] = int(statistics.median(f for f, _, _ in stats["ON"]))
            res["resume_prefetched_pages"] = int(statistics.median(p for _, p, _ in stats["ON"]))
            res["resume_faults_eager"] = int(statistics.median(f for f, _, _ in stats["EAGER"]))
            res["resume_faults_record"] = stats["RECORD"][0][0]
        # File throughput on the sandbox, running again.
        ag.call("ResumeSandbox", {"sandboxId": sid})
        ready_exec(sid)
        (res["file_write_mib_s"], res["file_read_mib_s"], fw,
         fr) = file_throughput(ag, sid, a.file_mib, a.file_runs)
        res["file_mib"] = a.file_mib
        log(f"{a.file_mib} MiB file: write {fw} MiB/s, read {fr} MiB/s")
        destroy(sid)

        # ---- spawn from a snapshot template (128 MiB) ----
        src = prefix + "src"
        create(src, templateName="base", vcpus=1, memoryMib=128)
        ready_exec(src)
        tmpl = prefix + "tmpl"
        t0 = time.monotonic()
        ag.call("CreateSnapshot", {"sandboxId": src, "name": tmpl,
                                   "stopSource": True})
        templates.add(tmpl)
        sandboxes.discard(src)
        res["snapshot_ms"] = ms(time.monotonic() - t0)
        log(f"template {tmpl} in {res['snapshot_ms']} ms")
        spawns = []
        for i in range(a.spawn_runs):
            c = f"{prefix}clone{i}"
            t0 = time.monotonic()
            create(c, snapshotTemplate=tmpl)
            spawns.append(ms(time.monotonic() - t0))
            ready_exec(c)
            destroy(c)
            log(f"spawn {i}: {spawns[-1]} ms")
        res["spawn_ready_ms"] = round(statistics.median(spawns), 2)
        res["spawn_runs"] = len(spawns)
        res["spawn_guest_mib"] = 128

        free = int(ag.call("GetHostInfo", {}).get("freeMemoryMib", 0))
        # 128 MiB of guest memory each, plus VMM and page server overhead.
        n = max(1, min(a.parallel, free // 160))
        res["spawn_parallel_n"] = n
        if n < a.parallel:
            notes["spawn_parallel_10_ms"] = (f"{n} clones, not {a.parallel}: "
                                             f"{free} MiB free in the host")
        ids = [f"{prefix}par{i}" for i in range(n)]
        sandboxes.update(ids)

        def one(c):
            ag.call("CreateSandbox", {"sandboxId": c, "snapshotTemplate": tmpl},
                    timeout=600)
            return time.monotonic()

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            ends = list(ex.map(one, ids))
        res["spawn_parallel_10_ms"] = ms(max(ends) - t0)
        log(f"{n} clones at once: all ready after {res['spawn_parallel_10_ms']} ms")
        for c in ids:
            ready_exec(c)
        for c in ids:
            destroy(c)
    except BaseException:
        agent_log.flush()
        log("failed")
        log_tail(os.path.join(state, "agent.log"), "the agent")
        raise
    finally:
        for sid in sorted(sandboxes):
            try:
                ag.call("DestroySandbox", {"sandboxId": sid}, timeout=60)
            except (OSError, RpcError) as e:
                if not (isinstance(e, RpcError) and e.status == 404):
                    log(f"cleanup: DestroySandbox {sid}: {e}")
        for t in templates:
            try:
                ag.call("DeleteSnapshot", {"name": t}, timeout=60)
            except (OSError, RpcError) as e:
                log(f"cleanup: DeleteSnapshot {t}: {e}")
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        agent_log.close()
        # Whatever the agent could not stop: only processes of this run.
        for p, comm in procs_with_id((prefix, *emberd_ids)):
            log(f"cleanup: killing {comm} {p} left behind")
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if os.environ.get("EMBER_BENCH_KEEP") == "1":
            log(f"kept {state} and {emberd_dir}")
        else:
            shutil.rmtree(state, ignore_errors=True)
            shutil.rmtree(emberd_dir, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)

    if "resume_faults_lazy" not in res:
        notes.setdefault("resume_faults_lazy",
                         "the agent's answers carried no RestoreStats")
    res["platform_seconds"] = round(time.monotonic() - t_start, 1)
    if notes:
        res["_notes"] = notes
    print(json.dumps(res))


if __name__ == "__main__":
    main()
