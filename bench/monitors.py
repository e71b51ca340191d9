"""Small clients for the two monitors the benchmarks compare.

EmberApi: ember-vmm's Firecracker-style HTTP API on its Unix socket.
Qmp: QEMU's machine protocol on a Unix socket, with events and fd passing.
Console: a guest's serial console written to a file, read as it grows.
"""
import array
import http.client
import json
import os
import re
import socket
import time


def wait_path(path, proc, timeout):
    """Until path exists; fails when proc (a Popen) ends first."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited {proc.returncode} "
                               f"before creating {path}")
        if time.monotonic() > end:
            raise RuntimeError(f"{path} did not appear in {timeout} s")
        time.sleep(0.005)


def kill(proc):
    if proc is not None and proc.poll() is None:
        proc.kill()
    if proc is not None:
        proc.wait()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class EmberApi:
    def __init__(self, path, timeout=300):
        self.path = path
        self.timeout = timeout

    def wait(self, proc, timeout=60):
        """Until the API answers: the socket file appears at bind(),
        before listen()."""
        wait_path(self.path, proc, timeout)
        end = time.monotonic() + timeout
        while True:
            try:
                return self.call("GET", "/")
            except ConnectionRefusedError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise
                time.sleep(0.005)

    def call(self, method, url, body=None):
        """One request on a new connection; raises on a status >= 300."""
        conn = _UnixHTTPConnection(self.path, self.timeout)
        try:
            data = json.dumps(body) if body is not None else None
            conn.request(method, url, body=data,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
        finally:
            conn.close()
        if r.status >= 300:
            raise RuntimeError(f"{method} {url}: {r.status} {text}")
        return text


class Qmp:
    """A QMP connection: commands wait for their answer; events that
    arrive meanwhile are kept for wait_event."""

    def __init__(self, path, proc, timeout=60):
        wait_path(path, proc, timeout)
        end = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(path)
                break
            except ConnectionRefusedError:  # bound, not yet listening
                self.sock.close()
                if proc.poll() is not None or time.monotonic() > end:
                    raise
                time.sleep(0.005)
        self.file = self.sock.makefile("rb")
        self.events = []
        self._read()  # the greeting
        self.cmd("qmp_capabilities")

    def close(self):
        self.file.close()
        self.sock.close()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise RuntimeError("QMP: QEMU closed the connection")
        return json.loads(line)

    def cmd(self, name, fd=None, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        data = (json.dumps(msg) + "\n").encode()
        if fd is None:
            self.sock.sendall(data)
        else:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", [fd]))])
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
            elif "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error'].get('desc')}")
            elif "return" in r:
                return r["return"]

    def wait_event(self, name, pred=lambda e: True, timeout=300):
        """Until an event name (with pred(data) true); returns its data and
        the monotonic time it was read."""
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name and pred(e.get("data", {})):
                    del self.events[:i + 1]
                    return e.get("data", {}), time.monotonic()
            self.events.clear()
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"QMP: no {name} event in {timeout} s")
            self.sock.settimeout(left)
            self.events.append(self._read())


class Console:
    """A serial console file: waits for lines matching a pattern."""

    def __init__(self, path):
        self.path = path

    def last(self, pattern):
        """The last integer group of pattern on the console, or 0."""
        with open(self.path, "rb") as f:
            found = re.findall(pattern, f.read())
        return int(found[-1]) if found else 0

    def wait_above(self, pattern, n, proc, timeout=120):
        """Until pattern's integer group exceeds n; returns it."""
        end = time.monotonic() + timeout
        while True:
            v = self.last(pattern)
            if v > n:
                return v
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited {proc.returncode};"
                                   f" see {self.path}")
            if time.monotonic() > end:
                raise RuntimeError(f"{pattern!r} stayed at {v} for "
                                   f"{timeout} s; see {self.path}")
            time.sleep(0.01)
