"""The whole of Ember for an e2e test: emberd here, one ember-agent where
Linux guests run, and the `ember` CLI.

    with Stack("emberd-cli", db="sqlite") as st:    # or db="postgres"
        sid = st.ember_ok("sandbox", "create")
        ...

Stack.start():
  - a work folder here (/var/tmp/ember-e2e-NAME.XXXX): emberd's log, the
    agent's log, the SQLite database, the PostgreSQL cluster;
  - with db="postgres" a throwaway PostgreSQL cluster (Debian's
    postgresql-15, as user postgres, on a Unix socket in the work folder,
    stopped by stop());
  - one ember-agent inside the shared nested host (tests/e2e/
    nested_session.py; listening on 0.0.0.0:7070, reached here through
    EMBER_NESTED_AGENT_PORT), or here when this machine runs guests itself;
    its state and run folders are new ones (/var/lib/ember/e2e/NAME.PID,
    /run/ember-e2e-NAME.PID);
  - emberd on a free port with that agent, the base template and
    --reconcile-interval 1, and an API key (`emberd keys create`).

Stack.stop() (also on an exception: __exit__) destroys every sandbox and
snapshot emberd still has, stops emberd and the agent, then checks that
nothing is left: no process of emberd, the agent, a VMM or a page server
started by this stack, no file in the agent's sandboxes/, templates/ and
vms/ folders, no mount under its run folder, emberd's port closed. It
returns what it found (and removes it by force); run() turns that into a
failure. EMBER_E2E_KEEP=1 keeps the work folder.

The CLI and the API are used as a user would: ember() runs `ember` with
EMBER_API_URL and EMBER_API_KEY set; api() sends raw HTTP. in_host() runs a
shell command where the agent runs; agent_rpc() calls the agent's Connect
RPC directly (what emberd does not know about).
"""
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.environ.get("EMBER_ROOT") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("EMBER_BUILD") or os.path.join(ROOT, "build")
ART = os.environ.get("EMBER_ARTIFACTS") or os.path.join(BUILD, "artifacts")
# EMBER_NESTED is the launcher in tests/e2e's environment, but 0 or 1 (run
# guests here or in a nested host) for a user.
NESTED = os.environ.get("EMBER_NESTED", "")
if not os.access(NESTED, os.X_OK):
    NESTED = os.path.join(BUILD, "hosts", "nested", "ember-nested")
EMBER = os.path.join(BUILD, "src", "ember", "ember")
EMBERD = os.path.join(BUILD, "src", "emberd", "emberd")
AGENT = os.path.join(BUILD, "src", "ember-agent", "ember-agent")
VMM = os.path.join(BUILD, "src", "ember-vmm", "ember-vmm")
UFFD = os.path.join(BUILD, "src", "ember-uffd", "ember-uffd")
PG_BIN = "/usr/lib/postgresql/15/bin"
AGENT_GUEST_PORT = 7070


class Skip(Exception):
    """The test cannot run here (exit 77)."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr,
          flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    def __init__(self, name, db="sqlite", reconcile_interval=1,
                 default_timeout=600, work=None, agent_timeout=120):
        self.name = name
        # A create takes ~15 s here, a resume ~5 s: a hung agent or host
        # fails the call after agent_timeout rather than emberd's 300 s.
        self.agent_timeout = agent_timeout
        self.own_work = work is None
        self.db_kind = db
        self.reconcile_interval = reconcile_interval
        self.default_timeout = default_timeout
        self.nested_state = os.environ.get("EMBER_NESTED_STATE") or None
        self.work = work
        self.emberd = None
        self.emberd_log = None
        self.agent_client = None      # the local process: agent or exec
        self.agent_log = None
        self.pg_dir = None
        self.key = None
        self.url = None
        self.port = None
        self.db = None
        self.baseline = set()         # VMM and page server pids before us
        self.failing = False          # set by run(): keep the guests' logs
        self.agent_starts = 0

    # ---------------------------------------------------------- start
    def check_prereqs(self):
        for f in (EMBER, EMBERD, AGENT, VMM, UFFD,
                  os.path.join(ART, "vmlinux"),
                  os.path.join(ART, "rootfs.ext4")):
            if not os.path.exists(f):
                raise Skip(f"{f} is missing (make build)")
        if not self.nested_state:
            need = subprocess.run([NESTED, "need"], capture_output=True,
                                  text=True, timeout=30).stdout
            if need.startswith("yes"):
                raise Skip("this machine needs a nested host: run through "
                           "tests/run.py --suite e2e")
        elif not os.environ.get("EMBER_NESTED_AGENT_PORT"):
            raise Skip("the nested host forwards no agent port "
                       "(EMBER_NESTED_AGENT_PORT; tests/e2e/nested_session.py)")
        if self.db_kind == "postgres":
            for b in ("initdb", "pg_ctl"):
                if not os.access(os.path.join(PG_BIN, b), os.X_OK):
                    raise Skip(f"{PG_BIN}/{b} is missing (scripts/deps.sh "
                               "installs postgresql)")

    def start(self):
        self.check_prereqs()
        if self.own_work:
            self.work = tempfile.mkdtemp(prefix=f"ember-e2e-{self.name}.",
                                         dir="/var/tmp")
        tag = f"{self.name}.{os.getpid()}"
        self.agent_state = f"/var/lib/ember/e2e/{tag}"
        self.agent_run = f"/run/ember-e2e-{tag}"
        self.baseline = set(self.host_pids())
        self.in_host_ok(f"mkdir -p {self.agent_state} {self.agent_run}")
        self.start_agent()
        if self.db_kind == "postgres":
            self.db = self.start_postgres()
        else:
            self.db = os.path.join(self.work, "emberd.db")
        p = subprocess.run([EMBERD, "keys", "create", "--name", "e2e",
                            "--db", self.db], capture_output=True,
                           text=True, timeout=60)
        if p.returncode != 0 or not p.stdout.startswith("ember_"):
            raise RuntimeError(f"emberd keys create: {p.stderr.strip()}")
        self.key = p.stdout.strip()
        self.start_emberd()
        if not self.wait_host_up():
            raise RuntimeError("emberd never saw the agent up")
        log(f"stack up: emberd {self.url} ({self.db_kind}), agent "
            f"{self.agent_url}, work {self.work}")

    def start_postgres(self):
        self.pg_dir = tempfile.mkdtemp(prefix="ember-e2e-pg.", dir="/tmp")
        os.chmod(self.pg_dir, 0o755)
        as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 \
            else []
        sock = os.path.join(self.pg_dir, "sock")
        os.mkdir(sock)
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "postgres:", self.pg_dir],
                           check=True, timeout=30)
        data = self.pg_data = os.path.join(self.pg_dir, "data")
        port = free_port()
        subprocess.run(as_pg + [f"{PG_BIN}/initdb", "-D", data, "-A",
                                "trust", "-U", "postgres"],
                       check=True, timeout=120, stdout=subprocess.DEVNULL)
        subprocess.run(as_pg + [f"{PG_BIN}/pg_ctl", "-D", data, "-l",
                                os.path.join(self.pg_dir, "pg.log"), "-w",
                                "-t", "60", "-o",
                                f"-k {sock} -p {port} -c listen_addresses=''",
                                "start"], check=True, timeout=90,
                       stdout=subprocess.DEVNULL)
        return f"postgresql:///postgres?host={sock}&port={port}&user=postgres"

    def stop_postgres(self):
        if not self.pg_dir:
            return []
        left = []
        as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 \
            else []
        r = subprocess.run(as_pg + [f"{PG_BIN}/pg_ctl", "-D", self.pg_data,
                                    "-w", "-t", "60", "-m", "fast", "stop"],
                           timeout=90, capture_output=True, text=True)
        if r.returncode != 0:
            left.append(f"pg_ctl stop failed: {r.stderr.strip()}")
        if os.path.exists(os.path.join(self.pg_data, "postmaster.pid")):
            left.append("PostgreSQL still runs (postmaster.pid)")
        if os.environ.get("EMBER_E2E_KEEP") != "1":
            shutil.rmtree(self.pg_dir, ignore_errors=True)
        return left

    def start_agent(self):
        """Starts (or restarts) the agent on its folders; waits until it
        answers."""
        self.agent_starts += 1
        pidfile = f"{self.agent_run}/agent.pid"
        args = [AGENT, "--state-dir", self.agent_state, "--run-dir",
                self.agent_run, "--vmm-bin", VMM, "--uffd-bin", UFFD,
                "--kernel", os.path.join(ART, "vmlinux"), "--rootfs",
                os.path.join(ART, "rootfs.ext4"), "--boot-timeout", "240"]
        self.agent_log = open(os.path.join(self.work, "agent.log"), "a")
        if self.nested_state:
            port = int(os.environ["EMBER_NESTED_AGENT_PORT"])
            args += ["--listen", f"0.0.0.0:{AGENT_GUEST_PORT}"]
            cmd = [NESTED, "exec", "-n", "--state-dir", self.nested_state,
                   "--", "sh", "-c",
                   f"echo $$ >{pidfile}; exec " + shlex.join(args)]
        else:
            # A restarted agent keeps its address: emberd knows it.
            port = getattr(self, "agent_port", None) or free_port()
            self.agent_port = port
            args += ["--listen", f"127.0.0.1:{port}"]
            cmd = ["sh", "-c", f"echo $$ >{pidfile}; exec " +
                   shlex.join(args)]
        self.agent_url = f"http://127.0.0.1:{port}"
        self.agent_client = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.agent_log,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.agent_rpc("GetHostInfo", {}, timeout=5)
                return
            except (OSError, RuntimeError):
                pass
            if self.agent_client.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"ember-agent did not answer at {self.agent_url}; "
                           f"see {self.work}/agent.log")

    def agent_pid(self):
        out = self.in_host(f"cat {self.agent_run}/agent.pid 2>/dev/null")[1]
        return int(out) if out.strip().isdigit() else None

    def kill_agent(self, sig="KILL"):
        """Kills the agent (not its VMMs: they run in their own sessions)
        and waits for it to be gone."""
        pid = self.agent_pid()
        if pid:
            self.in_host(f"kill -{sig} {pid}; i=0; while kill -0 {pid} "
                         f"2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; "
                         f"i=$((i+1)); done")
        if self.agent_client:
            try:
                self.agent_client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent_client.pid, signal.SIGKILL)
                self.agent_client.wait(timeout=10)
            self.agent_client = None

    def start_emberd(self, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.emberd_log = open(os.path.join(self.work, "emberd.log"), "a")
        self.emberd = subprocess.Popen(
            [EMBERD, "--db", self.db, "--listen", f"127.0.0.1:{self.port}",
             "--agent", self.agent_url, "--kernel",
             os.path.join(ART, "vmlinux"), "--rootfs",
             os.path.join(ART, "rootfs.ext4"), "--default-vcpus", "1",
             "--default-memory", "256M", "--default-timeout",
             str(self.default_timeout), "--reconcile-interval",
             str(self.reconcile_interval), "--agent-timeout",
             str(self.agent_timeout), *extra],
            stdin=subprocess.DEVNULL, stdout=self.emberd_log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.api("GET", "/healthz", key=None)[0] == 200:
                    return
            except OSError:
                pass
            if self.emberd.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"emberd did not start; see {self.work}/emberd.log")

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.leftovers = self.stop()
        return False

    # ----------------------------------------------------------- stop
    def stop(self):
        """Tears everything down; returns what was left behind."""
        left = []
        if self.failing and getattr(self, "agent_run", None):
            self.dump_sandbox_logs()
        if self.emberd and self.emberd.poll() is None and self.key:
            left += self.destroy_all()
        if self.emberd:
            if self.emberd.poll() is None:
                self.emberd.terminate()
                try:
                    self.emberd.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    left.append("emberd did not stop on SIGTERM")
                    self.emberd.kill()
                    self.emberd.wait(timeout=10)
            if self.port and port_open(self.port):
                left.append(f"emberd's port {self.port} is still open")
            self.emberd = None
        if self.work and getattr(self, "agent_run", None):
            self.kill_agent("TERM")
            left += self.host_leftovers()
        left += self.stop_postgres()
        for f in (self.emberd_log, self.agent_log):
            if f:
                f.close()
        if self.work:
            if left or os.environ.get("EMBER_E2E_KEEP") == "1":
                self.show_logs()
            if self.own_work and os.environ.get("EMBER_E2E_KEEP") != "1":
                shutil.rmtree(self.work, ignore_errors=True)
            self.work = None
        for x in left:
            log(f"left behind: {x}")
        return left

    def destroy_all(self):
        left = []
        try:
            for s in self.ember_json("sandbox", "list").get("sandboxes", []):
                left.append(f"sandbox {s['id']} ({s['state']}) was still "
                            "in emberd")
                self.ember("-q", "sandbox", "kill", s["id"])
            for t in self.ember_json("snapshot", "list").get("snapshots", []):
                left.append(f"snapshot {t['name']} was still in emberd")
                self.ember("snapshot", "delete", t["name"])
        except Exception as e:  # noqa: BLE001 (teardown goes on)
            left.append(f"could not list what emberd holds: {e}")
        return left

    def host_pids(self):
        """VMM and page server processes where the agent runs."""
        out = self.in_host("pgrep -x ember-vmm; pgrep -x ember-uffd; true")[1]
        return [int(x) for x in out.split() if x.isdigit()]

    def host_leftovers(self):
        left = []
        pids = [p for p in self.host_pids() if p not in self.baseline]
        if pids:
            left.append(f"VMM or page server processes: {pids}")
        # The script ends in `true`: another status is the channel's.
        st, out = self.in_host(
            f"p=$(cat {self.agent_run}/agent.pid 2>/dev/null) && "
            f"kill -0 $p 2>/dev/null && echo agent $p;"
            f"for d in {self.agent_state}/sandboxes {self.agent_state}/"
            f"templates {self.agent_run}/vms; do [ -d $d ] && "
            f"[ -n \"$(ls -A $d)\" ] && echo files in $d: $(ls $d); done;"
            f"grep ' {self.agent_run}' /proc/mounts; true")
        left += [x for x in out.splitlines() if x.strip()]
        if st != 0:
            left.append(f"the host could not be checked (exec said {st})")
        # By force, so that the next test starts clean.
        kill = " ".join(str(p) for p in pids)
        self.in_host(
            (f"kill -9 {kill} 2>/dev/null; " if kill else "") +
            f"p=$(cat {self.agent_run}/agent.pid 2>/dev/null) && "
            f"kill -9 $p 2>/dev/null; "
            f"grep -o ' {self.agent_run}[^ ]*' /proc/mounts | "
            f"xargs -r -n1 umount -l; "
            f"rm -rf {self.agent_state} {self.agent_run}")
        return left

    def dump_sandbox_logs(self):
        """The tails of every sandbox's VMM, page server and console logs
        where the agent runs, before teardown removes them."""
        out = self.in_host(
            f"for f in {self.agent_state}/sandboxes/*/*.log; do "
            f"[ -f $f ] || continue; echo \"--- $f\"; tail -n 25 $f; "
            f"done; true")[1]
        with open(os.path.join(self.work, "sandboxes.log"), "w") as f:
            f.write(out)

    def show_logs(self):
        for f in ("emberd.log", "agent.log", "sandboxes.log"):
            p = os.path.join(self.work, f)
            if os.path.exists(p):
                with open(p, errors="replace") as fh:
                    lines = fh.readlines()[-(200 if f == "sandboxes.log"
                                         else 40):]
                print(f"--- {f} (last {len(lines)} lines)", file=sys.stderr)
                sys.stderr.writelines(lines)

    # ----------------------------------------------------------- use
    def ember(self, *args, key=True, stdin=None, timeout=400):
        """Runs the CLI; returns (exit status, stdout, stderr)."""
        env = dict(os.environ, EMBER_API_URL=self.url or "")
        env.pop("EMBER_API_KEY", None)
        if key is True:
            env["EMBER_API_KEY"] = self.key
        elif key:
            env["EMBER_API_KEY"] = key
        p = subprocess.run([EMBER, *args], capture_output=True, env=env,
                           input=stdin, timeout=timeout,
                           text=not isinstance(stdin, bytes))
        return p.returncode, p.stdout, p.stderr

    def ember_ok(self, *args, **kw):
        rc, out, err = self.ember(*args, **kw)
        if rc != 0:
            raise RuntimeError(f"ember {' '.join(args)} exited {rc}: "
                               f"{err.strip()}")
        return out.strip() if isinstance(out, str) else out

    def ember_json(self, *args, **kw):
        return json.loads(self.ember_ok("--json", *args, **kw))

    def api(self, method, path, body=None, key=True, raw=None,
            headers=None, timeout=400):
        """Raw HTTP to emberd; returns (status, parsed JSON or text)."""
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method)
        if key is True:
            req.add_header("Authorization", "Bearer " + self.key)
        elif key:
            req.add_header("Authorization", "Bearer " + key)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def agent_rpc(self, method, body, timeout=300):
        """A unary call of the agent's Connect RPC in JSON; returns the
        answer, raises RuntimeError with the Connect error otherwise."""
        req = urllib.request.Request(
            f"{self.agent_url}/ember.hostagent.v1.HostAgent/{method}",
            data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method}: {e.code} {e.read().decode()}")

    def in_host(self, script, timeout=120):
        """Runs a shell script where the agent runs; returns (status,
        stdout)."""
        if self.nested_state:
            cmd = [NESTED, "exec", "-n", "--state-dir", self.nested_state,
                   "--", "sh", "-c", script]
        else:
            cmd = ["sh", "-c", script]
        p = subprocess.run(cmd, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        return p.returncode, p.stdout

    def in_host_popen(self, script):
        """Starts a shell script where the agent runs; its stdout is a
        pipe."""
        cmd = ([NESTED, "exec", "-n", "--state-dir", self.nested_state,
                "--"] if self.nested_state else []) + ["sh", "-c", script]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, text=True)

    def in_host_ok(self, script, timeout=120):
        st, out = self.in_host(script, timeout)
        if st != 0:
            raise RuntimeError(f"in the host: {script!r} exited {st}")
        return out

    def vmm_pid(self, sid):
        """The pid of sandbox SID's VMM where the agent runs, or None."""
        out = self.in_host(
            f"for p in $(pgrep -x ember-vmm); do tr '\\0' ' ' "
            f"</proc/$p/cmdline | grep -q -- '--id {sid}\\b' && echo $p; "
            f"done; true")[1].split()
        return int(out[0]) if out else None

    def wait_host_up(self, timeout=60):
        """Waits until emberd has seen every host up again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hosts = self.ember_json("host", "list").get("hosts", [])
            if hosts and all(h.get("state") == "up" for h in hosts):
                return True
            time.sleep(0.5)
        return False

    def wait_state(self, sid, states, timeout=120):
        """Polls `ember sandbox get` until its state is one of STATES;
        returns the sandbox (or the last one seen)."""
        deadline = time.monotonic() + timeout
        while True:
            j = self.ember_json("sandbox", "get", sid)
            if j.get("state") in states or time.monotonic() > deadline:
                return j
            time.sleep(0.5)


class Checks:
    """Counts checks; a failed one is printed and the test goes on."""

    def __init__(self):
        self.n = 0
        self.failed = []

    def __call__(self, cond, what):
        self.n += 1
        if cond:
            print(f"ok: {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"FAIL: {what}", flush=True)
        return bool(cond)


def run(name, body, **stack_args):
    """Runs body(stack, check) on a new Stack; exits 0, 1 or 77."""
    check = Checks()
    try:
        with Stack(name, **stack_args) as st:
            try:
                body(st, check)
            except Exception as e:  # noqa: BLE001 (reported as a failure)
                check(False, f"the test stopped: {type(e).__name__}: {e}")
            st.failing = bool(check.failed)
        check(not st.leftovers, f"nothing left behind ({st.leftovers})")
    except Skip as e:
        print(f"SKIP: {e}")
        return 77
    print(f"{check.n - len(check.failed)} of {check.n} checks passed")
    for f in check.failed:
        print(f"failed: {f}")
    return 1 if check.failed else 0


def serve(argv):
    """stack.py serve WORKDIR: starts a stack with emberd's defaults (make
    demo), writes WORKDIR/stack.env (shell assignments: EMBER_API_URL,
    EMBER_API_KEY, AGENT_URL, AGENT_STATE, AGENT_RUN) and waits for
    SIGTERM or SIGINT; then stops it, exiting 1 if anything was left."""
    if len(argv) != 1:
        print("usage: stack.py serve WORKDIR", file=sys.stderr)
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    st = Stack("demo", reconcile_interval=5, default_timeout=300,
               work=argv[0], agent_timeout=300)
    try:
        st.start()
        env = os.path.join(argv[0], "stack.env")
        with open(env + ".tmp", "w") as f:
            f.write(f"EMBER_API_URL={st.url}\nEMBER_API_KEY={st.key}\n"
                    f"AGENT_URL={st.agent_url}\n"
                    f"AGENT_STATE={st.agent_state}\n"
                    f"AGENT_RUN={st.agent_run}\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(env + ".tmp", env)
        while not stop:
            time.sleep(0.2)
    except Exception as e:  # noqa: BLE001 (said, then torn down)
        print(f"stack.py: {e}", file=sys.stderr)
        st.stop()
        return 1
    return 1 if st.stop() else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve(sys.argv[2:]))
    print("usage: stack.py serve WORKDIR", file=sys.stderr)
    sys.exit(2)
