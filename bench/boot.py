#!/usr/bin/env python3
"""Boot to init: ember-vmm against QEMU microvm, and ember-vmm's own memory.

Runs where Linux guests run (inside the nested host here; bench/run.py
starts it there). Both monitors boot the same kernel, root filesystem,
vCPUs, memory and command line; runs alternate ember, qemu, ember, ...
Each run is timed from the monitor's exec to the guest's ready line on the
serial console ("ember-guest: ready", printed by guest/rootfs/init.sh).

vmm_rss_overhead_kib: ember-vmm's resident memory (the sum of Rss over
every mapping of /proc/PID/smaps, shared library pages included) minus the
Rss of its guest-memory mapping, once the guest is up, for 1 vCPU and
128 MiB, started as the boot runs are (--no-api --config-file).
vmm_rss_overhead_kib_api: the same with the API socket served (how
ember-agent runs it), which adds libevent's evhttp (src/lib/http_server.c).
The guest memory is the mapping named [anon:ember-guest-memory] where the
kernel names mappings (CONFIG_ANON_VMA_NAME), else the one mapping of
exactly the guest's size; ember-vmm marks it MADV_DONTDUMP, so the kernel
never merges it with a neighbouring mapping.

Prints one JSON object on its last line.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

READY = b"ember-guest: ready"
CMDLINE = "console=ttyS0 quiet reboot=k panic=-1 pci=off ember.init=0"


def wait_ready(proc, log_path, timeout):
    """Polls the console file until the ready line; returns seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"monitor exited {proc.returncode} before ready; "
                               f"see {log_path}")
        with open(log_path, "rb") as f:
            if READY in f.read():
                return time.monotonic() - t0
        time.sleep(0.005)
    raise RuntimeError(f"no ready line after {timeout} s; see {log_path}")


def stop(proc):
    proc.kill()
    proc.wait()


def boot_ember(vmm, kernel, rootfs, work, vcpus, mem, keep=None, api=False):
    cfg = {
        "boot-source": {"kernel_image_path": kernel,
                        "boot_args": CMDLINE + " root=/dev/vda ro"},
        "drives": [{"drive_id": "rootfs", "path_on_host": rootfs,
                    "is_root_device": True, "is_read_only": True}],
        "machine-config": {"vcpu_count": vcpus, "mem_size_mib": mem},
    }
    cfg_path = os.path.join(work, "vm.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    log = os.path.join(work, "ember-console.log")
    with open(log, "wb") as out:
        t0 = time.monotonic()
        how = (["--api-sock", os.path.join(work, "api.sock")] if api
               else ["--no-api"])
        proc = subprocess.Popen([vmm] + how + ["--config-file", cfg_path,
                                               "--id", "bench"], stdout=out,
                                stderr=subprocess.DEVNULL)
        try:
            wait_ready(proc, log, 120)
            dt = time.monotonic() - t0
            if keep is not None:
                keep(proc.pid, mem)
        finally:
            stop(proc)
    return dt


def boot_qemu(kernel, rootfs, work, vcpus, mem):
    log = os.path.join(work, "qemu-console.log")
    open(log, "wb").close()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm",
         "-cpu", "host", "-smp", str(vcpus), "-m", str(mem),
         "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
         "-serial", f"file:{log}", "-kernel", kernel,
         "-append", CMDLINE + " root=/dev/vda ro",
         "-drive", f"id=root,file={rootfs},format=raw,if=none,readonly=on",
         "-device", "virtio-blk-device,drive=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(proc, log, 120)
        return time.monotonic() - t0
    finally:
        stop(proc)


GUEST_NAME = "[anon:ember-guest-memory]"


def rss_overhead_kib(pid, mem_mib):
    """RSS of the process minus the RSS of its guest-memory mapping."""
    maps = []  # (name, size KiB, rss KiB)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                maps.append([" ".join(parts[5:]), 0, 0])
            elif parts[0] == "Size:":
                maps[-1][1] = int(parts[1])
            elif parts[0] == "Rss:":
                maps[-1][2] = int(parts[1])
    total = sum(m[2] for m in maps)
    named = [m for m in maps if m[0] == GUEST_NAME]
    # Unnamed: the one mapping of exactly its size (128 MiB is below the
    # MMIO hole, so one slot).
    guest = named or [m for m in maps if m[1] == mem_mib * 1024]
    if len(guest) != 1 and not named:
        raise RuntimeError(f"{len(guest)} mappings of {mem_mib} MiB in "
                           f"/proc/{pid}/smaps: cannot tell guest memory")
    return total - sum(m[2] for m in guest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--vcpus", type=int, default=1)
    ap.add_argument("--mem", type=int, default=128)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ember-bench-boot.",
                            dir="/var/lib/ember" if os.access(
                                "/var/lib/ember", os.W_OK) else None)
    try:
        rootfs = os.path.join(work, "rootfs.ext4")
        shutil.copyfile(a.rootfs, rootfs)
        ember, qemu = [], []
        for _ in range(a.runs):
            ember.append(boot_ember(a.vmm, a.kernel, rootfs, work,
                                    a.vcpus, a.mem))
            qemu.append(boot_qemu(a.kernel, rootfs, work, a.vcpus, a.mem))
        overhead = []

        def keep(pid, mem):
            time.sleep(0.5)  # let the console settle
            overhead.append(rss_overhead_kib(pid, mem))

        boot_ember(a.vmm, a.kernel, rootfs, work, 1, 128, keep=keep)
        boot_ember(a.vmm, a.kernel, rootfs, work, 1, 128, keep=keep, api=True)
        e = statistics.median(ember) * 1000
        q = statistics.median(qemu) * 1000
        print(json.dumps({
            "boot_ms_ember": round(e, 1), "boot_ms_qemu": round(q, 1),
            "boot_ratio_ember_qemu": round(e / q, 3),
            "boot_runs": a.runs,
            # Every run, in order (ember and QEMU alternate): the spread.
            "boot_ms_ember_runs": [round(x * 1000) for x in ember],
            "boot_ms_qemu_runs": [round(x * 1000) for x in qemu],
            "vmm_rss_overhead_kib": overhead[0],
            "vmm_rss_overhead_kib_api": overhead[1],
        }))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
