#!/usr/bin/env python3
"""Ember's benchmarks: one table, one JSON file.

Each figure is the median of several runs; every comparison runs both sides
alternately in one run (same machine, same nested host) and reports their
ratio, because these machines are shared and noisy. Absolute times from here
are rough sizes only.

Results go to bench/results/latest.json as {"key": value, ...} plus
"_notes" (what was not measured, or not as asked, and why) and "_machine".
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
RESULTS = os.path.join(ROOT, "bench", "results", "latest.json")

results = {}
notes = {}
targets = []   # (description, ok: bool or None)


def run_json(cmd, timeout=600, env=None):
    """Runs a benchmark program that prints one JSON object on stdout."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {out.returncode}: "
                           f"{out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_uffd():
    prog = os.path.join(BUILD, "bench", "uffd", "bench-uffd")
    uffd = os.path.join(BUILD, "src", "ember-uffd", "ember-uffd")
    if not (os.path.exists(prog) and os.path.exists(uffd)):
        notes["fault_p50_us"] = "bench-uffd or ember-uffd not built"
        return
    r = run_json([prog, uffd])
    for k in ("fault_p50_us", "fault_p99_us", "fault_floor_us"):
        if k in r:
            results[k] = r[k]
    if "fault_p50_us" in r and "fault_floor_us" in r:
        targets.append(("fault_p50_us within 2x of fault_floor_us",
                        r["fault_p50_us"] <= 2 * r["fault_floor_us"]))


def bench_init():
    r = run_json([os.path.join(ROOT, "bench", "init", "run.sh"), BUILD])
    for k, v in r.items():
        results["guest_agent_" + k] = v


def in_host(env, cmd, timeout=1800):
    """Runs cmd where Linux guests run: inside the shared nested host when
    this machine needs one, else directly."""
    if env.get("EMBER_NESTED_STATE"):
        cmd = [env["EMBER_NESTED"], "exec", "--state-dir",
               env["EMBER_NESTED_STATE"], "--"] + cmd
    return run_json(cmd, timeout=timeout, env=env)


def bench_boot(env):
    vmm = os.path.join(BUILD, "src", "ember-vmm", "ember-vmm")
    art = os.path.join(BUILD, "artifacts")
    r = in_host(env, ["python3", os.path.join(ROOT, "bench", "boot.py"),
                      "--vmm", vmm, "--kernel", os.path.join(art, "bzImage"),
                      "--rootfs", os.path.join(art, "rootfs.ext4"),
                      "--runs", os.environ.get("EMBER_BENCH_RUNS", "5")])
    results.update(r)
    targets.append(("boot_ms_ember / boot_ms_qemu at most 0.8",
                    r["boot_ratio_ember_qemu"] <= 0.8))
    targets.append(("vmm_rss_overhead_kib at most 3072",
                    r["vmm_rss_overhead_kib"] <= 3072))
    if r.get("vmm_rss_overhead_kib_api") is not None:
        targets.append(("vmm_rss_overhead_kib_api (the API served, as "
                        "ember-agent runs it) at most 3072",
                        r["vmm_rss_overhead_kib_api"] <= 3072))


def bench_platform(env):
    """Pause, resume and spawn through ember-agent, exec through emberd
    (bench/platform_bench.py)."""
    r = in_host(env, ["python3", os.path.join(ROOT, "bench", "platform_bench.py"),
                      "--agent", os.path.join(BUILD, "src", "ember-agent",
                                              "ember-agent"),
                      "--emberd", os.path.join(BUILD, "src", "emberd",
                                               "emberd"),
                      "--artifacts", os.path.join(BUILD, "artifacts")])
    for k, v in r.pop("_notes", {}).items():
        notes[k] = v
    results.update(r)
    if "pause_bytes_idle_second" in r:
        limit = 0.05 * r["pause_guest_mib"] * 1024 * 1024
        targets.append(("pause_bytes_idle_second under 5% of guest memory",
                        r["pause_bytes_idle_second"] < limit))
    if "resume_faults_lazy" not in r:
        notes.setdefault("resume_faults_lazy", "not read from ember-uffd")
    if "resume_faults_prefetch" in r:
        targets.append(("resume_faults_prefetch at most a tenth of "
                        "resume_faults_lazy",
                        r["resume_faults_prefetch"] * 10 <= r["resume_faults_lazy"]))
    if r.get("spawn_runs", 10) < 10:
        notes["spawn_ready_ms"] = (f"median of {r['spawn_runs']}, not 10 "
                                   "(--spawn-runs)")
    if r.get("exec_rtt_level") != "emberd":
        notes.setdefault("exec_rtt_ms", "not measured through emberd")


def bench_snapshot(env):
    """Snapshot create and load against QEMU's save and restore
    (bench/snapshot.py)."""
    art = os.path.join(BUILD, "artifacts")
    r = in_host(env, ["python3", os.path.join(ROOT, "bench", "snapshot.py"),
                      "--vmm", os.path.join(BUILD, "src", "ember-vmm",
                                            "ember-vmm"),
                      "--snap", os.path.join(BUILD, "src", "ember-snap",
                                             "ember-snap"),
                      "--uffd", os.path.join(BUILD, "src", "ember-uffd",
                                             "ember-uffd"),
                      "--kernel", os.path.join(art, "bzImage"),
                      "--rootfs", os.path.join(art, "rootfs.ext4"),
                      "--runs", os.environ.get("EMBER_BENCH_RUNS", "3")])
    results.update(r)
    targets.append(("restore_first_insn_ms_uffd / restore_ms_qemu at most 0.1",
                    r["restore_ratio_uffd_qemu"] <= 0.1))


HOST_BENCHES = [bench_uffd, bench_init]
GUEST_BENCHES = [bench_boot, bench_platform, bench_snapshot]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run only bench_NAME (e.g. snapshot, boot); "
                         "repeatable; writes bench/results/only-NAME.json")
    only = ap.parse_args().only
    names = [b.__name__[len("bench_"):] for b in HOST_BENCHES + GUEST_BENCHES]
    for n in only or []:
        if n not in names:
            ap.error(f"no benchmark {n}; there are: {', '.join(names)}")
    t0 = time.time()

    def attempt(b, *args):
        name = b.__name__
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            b(*args)
        except Exception as e:  # one failing benchmark does not stop the rest
            notes[name] = f"failed: {e}"
            print(f"bench: {name} failed: {e}", file=sys.stderr)

    def chosen(benches):
        return [b for b in benches
                if not only or b.__name__[len("bench_"):] in only]

    for b in chosen(HOST_BENCHES):
        attempt(b)
    if chosen(GUEST_BENCHES):
        sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
        import nested_session  # noqa: E402
        with nested_session.session(ROOT) as env:
            for b in chosen(GUEST_BENCHES):
                attempt(b, env)
    doc = dict(results)
    doc["_notes"] = notes
    doc["_targets"] = {d: ok for d, ok in targets}
    doc["_machine"] = {"host": platform.node(), "cpus": os.cpu_count(),
                       "kernel": platform.release(),
                       "seconds": round(time.time() - t0, 1)}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    out = RESULTS
    if only:  # a partial run keeps latest.json whole
        out = os.path.join(os.path.dirname(RESULTS),
                           "only-" + "-".join(only) + ".json")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, out)

    print(f"{'key':32} value")
    for k in sorted(results):
        v = results[k]
        print(f"{k:32} {v:.3f}" if isinstance(v, float) else f"{k:32} {v}")
    for d, ok in targets:
        print(f"target: {d}: {'met' if ok else 'MISSED'}")
    for k, v in sorted(notes.items()):
        print(f"note: {k}: {v}")
    print(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
