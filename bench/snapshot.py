#!/usr/bin/env python3
"""Snapshot create and load: ember-vmm against QEMU microvm's save and restore.

Runs where Linux guests run (inside the nested host here; bench/run.py
starts it there). Both monitors run the same kernel (bzImage), read-only
root filesystem, 1 vCPU, memory size and command line. The guest's command
fills a 16 MiB file in /dev/shm once, then rewrites it every 0.5 s and
prints "ember-bench: touched N" after each round.

Create (per memory size; one booted VM per monitor, each runs only during
its own turn; turns alternate ember, qemu, ember, ...):
  ember: resume, wait for the next round, pause, PUT /snapshot/create Full
  (timed: the HTTP request), resume, wait for the next round, pause,
  PUT /snapshot/create Diff (timed). Both files are fsynced by ember-vmm.
  qemu: cont, wait for the next round, stop, QMP migrate to an fd on the
  save file (timed: from the command to the MIGRATION "completed" event,
  plus an fsync of the file, so both sides end with the data on disk).

Load (the 128 MiB snapshots of the last create turn; turns alternate File,
Uffd, qemu), each into a fresh, already listening monitor:
  ember File / Uffd: from the start of the PUT /snapshot/load request (with
  resume_vm) to vCPU 0's first KVM_RUN, from ember-vmm's own log line. Uffd
  memory is served by ember-uffd (started and listening beforehand) from a
  generation built by ember-snap.
  qemu: from QMP migrate-incoming (fd on the save file; QEMU started with
  -incoming defer) through the MIGRATION "completed" event and `cont` (the
  saved VM was stopped, and QEMU restores that run state) to the RESUME
  event: all of memory read, the vCPUs about to run. Also from QEMU's exec
  to RESUME.
Every restored guest must print a new round on its console before the
turn counts.

Prints one JSON object on its last line.
"""
import argparse
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from monitors import Console, EmberApi, Qmp, kill, wait_path

CMDLINE = ("console=ttyS0 quiet reboot=k panic=-1 pci=off root=/dev/vda ro "
           "ember.init=0")
GUEST_CMD = ("cd /dev/shm && printf ember-bench-page > s && i=0 && "
             "while [ $i -lt 20 ]; do cat s s > s2; mv s2 s; i=$((i+1)); done; "
             "n=0; while :; do n=$((n+1)); "
             "dd if=s of=t bs=1M conv=notrunc 2>/dev/null; "
             "echo \"ember-bench: touched $n\"; sleep 0.5; done")
TOUCHED = rb"ember-bench: touched (\d+)"
FIRST_RUN = re.compile(r"vCPU 0 entered KVM_RUN (\d+) us after the load request")


def cmdline():
    b64 = base64.b64encode(GUEST_CMD.encode()).decode()
    return f"{CMDLINE} ember.run64={b64}"


def qemu_argv(a, mem, console, qmp, incoming=False):
    argv = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm",
            "-cpu", "host", "-smp", "1", "-m", str(mem),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", f"file:{console}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-kernel", a.kernel, "-append", cmdline(),
            "-drive", f"id=root,file={a.rootfs_copy},format=raw,if=none,"
                      "readonly=on",
            "-device", "virtio-blk-device,drive=root"]
    return argv + (["-incoming", "defer"] if incoming else [])


def allocated(path):
    return os.stat(path).st_blocks * 512


def rm(*paths):
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


class EmberGuest:
    """An ember-vmm booted from a config file, API on a socket."""

    def __init__(self, a, work, mem):
        self.sock = os.path.join(work, f"ember-{mem}.sock")
        self.console = Console(os.path.join(work, f"ember-{mem}.console"))
        cfg = {
            "boot-source": {"kernel_image_path": a.kernel,
                            "boot_args": cmdline()},
            "drives": [{"drive_id": "rootfs", "path_on_host": a.rootfs_copy,
                        "is_root_device": True, "is_read_only": True}],
            "machine-config": {"vcpu_count": 1, "mem_size_mib": mem,
                               "track_dirty_pages": True},
        }
        cfg_path = os.path.join(work, f"ember-{mem}.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        with open(self.console.path, "wb") as out:
            self.proc = subprocess.Popen(
                [a.vmm, "--api-sock", self.sock, "--config-file", cfg_path,
                 "--id", f"bench-snap-{mem}",
                 "--log-path", os.path.join(work, f"ember-{mem}.log")],
                stdout=out, stderr=subprocess.DEVNULL)
        self.api = EmberApi(self.sock)
        self.api.wait(self.proc)
        self.round = self.console.wait_above(TOUCHED, 0, self.proc, 300)
        self.api.call("PATCH", "/vm", {"state": "Paused"})

    def next_round(self):
        """Lets the guest run until it has rewritten its file once more."""
        self.api.call("PATCH", "/vm", {"state": "Resumed"})
        self.round = self.console.wait_above(TOUCHED, self.round, self.proc)
        self.api.call("PATCH", "/vm", {"state": "Paused"})

    def create(self, kind, state, mem_file):
        rm(state, mem_file)
        t0 = time.monotonic()
        self.api.call("PUT", "/snapshot/create",
                      {"snapshot_type": kind, "snapshot_path": state,
                       "mem_file_path": mem_file})
        return time.monotonic() - t0


class QemuGuest:
    def __init__(self, a, work, mem):
        self.console = Console(os.path.join(work, f"qemu-{mem}.console"))
        open(self.console.path, "wb").close()
        qmp = os.path.join(work, f"qemu-{mem}.qmp")
        self.proc = subprocess.Popen(qemu_argv(a, mem, self.console.path, qmp),
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.qmp = Qmp(qmp, self.proc)
        self.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "events", "state": True}])
        # Unlimited in effect (the default is 32 MiB/s); the VM is
        # stopped, so one pass over memory completes the migration.
        self.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        self.round = self.console.wait_above(TOUCHED, 0, self.proc, 300)
        self.qmp.cmd("stop")

    def next_round(self):
        self.qmp.cmd("cont")
        self.round = self.console.wait_above(TOUCHED, self.round, self.proc)
        self.qmp.cmd("stop")

    def save(self, path):
        """Seconds to the completed migration, and to it plus fsync."""
        rm(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.qmp.cmd("getfd", fd=fd, fdname="snap")
            t0 = time.monotonic()
            self.qmp.cmd("migrate", uri="fd:snap")
            data, t1 = self.qmp.wait_event(
                "MIGRATION", lambda d: d.get("status") in
                ("completed", "failed", "cancelled"))
            if data["status"] != "completed":
                raise RuntimeError(f"QEMU migration to {path}: "
                                   f"{data['status']}")
            os.fsync(fd)
            t2 = time.monotonic()
        finally:
            os.close(fd)
        return t1 - t0, t2 - t0


def bench_create(a, work, mem, runs):
    out = {"full": [], "diff": [], "qemu": [], "qemu_nosync": [],
           "full_bytes": [], "diff_bytes": [], "qemu_bytes": []}
    ember = qemu = None
    try:
        ember = EmberGuest(a, work, mem)
        qemu = QemuGuest(a, work, mem)
        st, mf = (os.path.join(work, f"ember-{mem}.vmstate"),
                  os.path.join(work, f"ember-{mem}.mem"))
        dst, dmf = st + ".diff", mf + ".diff"
        qf = os.path.join(work, f"qemu-{mem}.mig")
        for _ in range(runs):
            ember.next_round()
            out["full"].append(ember.create("Full", st, mf))
            out["full_bytes"].append(allocated(mf) + os.path.getsize(st))
            ember.next_round()
            out["diff"].append(ember.create("Diff", dst, dmf))
            out["diff_bytes"].append(allocated(dmf) + os.path.getsize(dst))
            qemu.next_round()
            nosync, synced = qemu.save(qf)
            out["qemu_nosync"].append(nosync)
            out["qemu"].append(synced)
            out["qemu_bytes"].append(os.path.getsize(qf))
    finally:
        for g in (ember, qemu):
            if g is not None:
                kill(g.proc)
    return out


def load_ember(a, work, n, backend, backend_path, state):
    """One load into a fresh ember-vmm: (first KVM_RUN s, request s)."""
    sock = os.path.join(work, f"load-{n}.sock")
    log = os.path.join(work, f"load-{n}.log")
    console = Console(os.path.join(work, f"load-{n}.console"))
    with open(console.path, "wb") as out:
        proc = subprocess.Popen([a.vmm, "--api-sock", sock, "--id",
                                 f"bench-load-{n}", "--log-path", log,
                                 "--level", a.vmm_level],
                                stdout=out, stderr=subprocess.DEVNULL)
    try:
        api = EmberApi(sock)
        api.wait(proc)
        t0 = time.monotonic()
        api.call("PUT", "/snapshot/load",
                 {"snapshot_path": state,
                  "mem_backend": {"backend_type": backend,
                                  "backend_path": backend_path},
                  "resume_vm": True})
        request = time.monotonic() - t0
        end = time.monotonic() + 30
        while True:
            with open(log) as f:
                m = FIRST_RUN.search(f.read())
            if m:
                break
            if time.monotonic() > end:
                raise RuntimeError(f"no KVM_RUN line in {log}")
            time.sleep(0.01)
        console.wait_above(TOUCHED, 0, proc, 60)  # the guest goes on
        return int(m.group(1)) / 1e6, request
    finally:
        kill(proc)


def load_uffd(a, work, n, header, state):
    sock = os.path.join(work, f"uffd-{n}.sock")
    with open(os.path.join(work, f"uffd-{n}.log"), "wb") as log:
        uffd = subprocess.Popen([a.uffd, "--socket", sock, "--header", header,
                                 "--accept-timeout", "120"],
                                stdout=log, stderr=log)
    try:
        wait_path(sock, uffd, 60)
        return load_ember(a, work, n, "Uffd", sock, state)
    finally:
        try:
            uffd.wait(10)  # it ends with its VMM
        except subprocess.TimeoutExpired:
            kill(uffd)


def load_qemu(a, work, n, mem, path):
    """(migrate-incoming to RESUME s, exec to RESUME s)."""
    console = Console(os.path.join(work, f"qemu-load-{n}.console"))
    open(console.path, "wb").close()
    qmp_path = os.path.join(work, f"qemu-load-{n}.qmp")
    fd = os.open(path, os.O_RDONLY)
    qmp = None
    t_exec = time.monotonic()
    proc = subprocess.Popen(qemu_argv(a, mem, console.path, qmp_path, True),
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        qmp = Qmp(qmp_path, proc)
        qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "events", "state": True}])
        qmp.cmd("getfd", fd=fd, fdname="snap")
        t0 = time.monotonic()
        qmp.cmd("migrate-incoming", uri="fd:snap")
        data, _ = qmp.wait_event(
            "MIGRATION", lambda d: d.get("status") in
            ("completed", "failed", "cancelled"))
        if data["status"] != "completed":
            raise RuntimeError(f"QEMU restore from {path}: {data['status']}")
        # The save was of a stopped VM, and QEMU keeps that run state.
        qmp.cmd("cont")
        _, t1 = qmp.wait_event("RESUME")
        console.wait_above(TOUCHED, 0, proc, 60)
        return t1 - t0, t1 - t_exec
    finally:
        os.close(fd)
        if qmp is not None:
            qmp.close()
        kill(proc)


def bench_load(a, work, mem, runs):
    st = os.path.join(work, f"ember-{mem}.vmstate")
    mf = os.path.join(work, f"ember-{mem}.mem")
    qf = os.path.join(work, f"qemu-{mem}.mig")
    layers = os.path.join(work, "layers")
    os.makedirs(layers, exist_ok=True)
    built = subprocess.run([a.snap, "build", "--base", "--mem", mf,
                            "--out-dir", layers], capture_output=True,
                           text=True, check=True)
    header = built.stdout.strip().splitlines()[-1]
    out = {k: [] for k in ("file", "uffd", "qemu", "qemu_exec",
                           "file_request", "uffd_request")}
    for i in range(runs):
        first, req = load_ember(a, work, f"file-{i}", "File", mf, st)
        out["file"].append(first)
        out["file_request"].append(req)
        first, req = load_uffd(a, work, f"uffd-{i}", header, st)
        out["uffd"].append(first)
        out["uffd_request"].append(req)
        q, q_exec = load_qemu(a, work, i, mem, qf)
        out["qemu"].append(q)
        out["qemu_exec"].append(q_exec)
    return out


def ms(values):
    return round(statistics.median(values) * 1000, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--snap", required=True, help="ember-snap")
    ap.add_argument("--uffd", required=True, help="ember-uffd")
    ap.add_argument("--kernel", required=True, help="bzImage")
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mems", default="128,512",
                    help="guest sizes in MiB for create (default 128,512); "
                         "the load uses the first")
    ap.add_argument("--vmm-level", default="Info",
                    help="ember-vmm's log level for the loads")
    ap.add_argument("--show-logs", action="store_true",
                    help="print the loads' ember-vmm and ember-uffd logs "
                         "on stderr at the end")
    a = ap.parse_args()
    mems = [int(m) for m in a.mems.split(",")]

    work = tempfile.mkdtemp(prefix="ember-bench-snap.",
                            dir="/var/lib/ember" if os.access(
                                "/var/lib/ember", os.W_OK) else None)
    r = {"snapshot_runs": a.runs}
    try:
        a.rootfs_copy = os.path.join(work, "rootfs.ext4")
        shutil.copyfile(a.rootfs, a.rootfs_copy)
        for mem in mems:
            c = bench_create(a, work, mem, a.runs)
            q = ms(c["qemu"])
            r[f"snapshot_create_full_ms_{mem}"] = ms(c["full"])
            r[f"snapshot_create_diff_ms_{mem}"] = ms(c["diff"])
            r[f"snapshot_save_ms_qemu_{mem}"] = q
            r[f"snapshot_save_ms_qemu_nosync_{mem}"] = ms(c["qemu_nosync"])
            r[f"snapshot_create_ratio_full_qemu_{mem}"] = round(
                ms(c["full"]) / q, 3)
            r[f"snapshot_create_ratio_diff_qemu_{mem}"] = round(
                ms(c["diff"]) / q, 3)
            r[f"snapshot_full_bytes_{mem}"] = int(
                statistics.median(c["full_bytes"]))
            r[f"snapshot_diff_bytes_{mem}"] = int(
                statistics.median(c["diff_bytes"]))
            r[f"snapshot_save_bytes_qemu_{mem}"] = int(
                statistics.median(c["qemu_bytes"]))
        ld = bench_load(a, work, mems[0], a.runs)
        q = ms(ld["qemu"])
        r.update({
            "restore_first_insn_ms_file": ms(ld["file"]),
            "restore_first_insn_ms_uffd": ms(ld["uffd"]),
            "restore_request_ms_file": ms(ld["file_request"]),
            "restore_request_ms_uffd": ms(ld["uffd_request"]),
            "restore_ms_qemu": q,
            "restore_ms_qemu_from_exec": ms(ld["qemu_exec"]),
            "restore_ratio_file_qemu": round(ms(ld["file"]) / q, 4),
            "restore_ratio_uffd_qemu": round(ms(ld["uffd"]) / q, 4),
            "restore_mem_mib": mems[0],
        })
        print(json.dumps(r))
    finally:
        for name in sorted(os.listdir(work)) if a.show_logs else []:
            if name.endswith(".log"):
                with open(os.path.join(work, name), errors="replace") as f:
                    sys.stderr.write(f"--- {name}\n{f.read()}")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
