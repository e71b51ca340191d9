#!/usr/bin/env python3
"""Runs Ember's test tiers and prints one closing line: `N passed, N failed`.

  unit, kvm  from build-asan/ (AddressSanitizer + UBSan), directly here
  e2e        from build/, with one shared nested host for the whole run when
             this machine needs one (see hosts/nested/README.md)

Usage: tests/run.py [--suite unit|kvm|e2e ...] [meson test args...]

  --suite S      run only tier S (may repeat; default all three)
  NAME ...       only these tests (e.g. `--suite e2e agent-cycles`)
  other options  passed to `meson test` (e.g. --no-rebuild)
"""
import json
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def meson_test(builddir, suites, logbase, extra, env=None, watch=None,
               poll_s=60):
    """Runs meson test. watch, if given, is called every poll_s seconds
    while the tests run; when it answers False three times in a row the
    tests are stopped (their results then count as failed)."""
    cmd = ["meson", "test", "-C", builddir, "--print-errorlogs",
           "--logbase", logbase, "--num-processes", "1"]
    for s in suites:
        cmd += ["--suite", s]
    cmd += extra
    print("+", " ".join(cmd), flush=True)
    log = os.path.join(builddir, "meson-logs", logbase + ".json")
    if os.path.exists(log):
        os.unlink(log)
    p = subprocess.Popen(cmd, env=env, start_new_session=watch is not None)
    misses = 0
    while True:
        try:
            p.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        if watch is None:
            continue
        misses = 0 if watch() else misses + 1
        if misses >= 3:
            print("run: the nested host has not answered three checks in a "
                  "row; stopping the test", flush=True)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            c = read_results(log)
            c["failed"] += 1  # the test that was stopped
            return c
    return read_results(log)


def read_results(path):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                r = json.loads(line).get("result", "")
                if r in ("OK", "EXPECTEDFAIL"):
                    counts["passed"] += 1
                elif r == "SKIP":
                    counts["skipped"] += 1
                else:
                    counts["failed"] += 1
    except FileNotFoundError:
        # meson wrote no log: it failed before running any test.
        counts["failed"] += 1
    return counts


def has_tests(builddir, suite):
    out = subprocess.run(["meson", "test", "-C", builddir, "--list",
                          "--suite", suite],
                         capture_output=True, text=True)
    return out.returncode == 0 and any(l.strip() for l in out.stdout.splitlines())


def list_tests(builddir, suite):
    out = subprocess.run(["meson", "test", "-C", builddir, "--list",
                          "--suite", suite], capture_output=True, text=True)
    # Lines read "project:suite / name".
    return [l.split(" / ", 1)[1].strip() for l in out.stdout.splitlines()
            if " / " in l]


def run_e2e(nested_session, builddir, extra):
    """Runs the e2e tests one by one in one shared nested host. The nested
    host is QEMU emulating AMD SVM in software, and it has frozen now and
    then under load (docs/vmm-machine.md, "Guests with several vCPUs in the
    nested host"). When a test fails and the host no longer runs even
    `true`, the failure is the host's: that test runs once more in a new
    host, and the run says so. A test that fails in a host that still
    answers, or fails twice, counts as failed."""
    names = [a for a in extra if not a.startswith("-")]
    opts = [a for a in extra if a.startswith("-")]
    pending = names or list_tests(builddir, "e2e")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    retried = []
    while pending:
        with nested_session.session(ROOT) as env:
            while pending:
                name = pending[0]
                c = meson_test(builddir, ["e2e"], "testlog-e2e-" + name,
                               opts + [name], env=env,
                               watch=lambda: nested_session.alive(env, 60))
                if (c["failed"] and name not in retried
                        and not nested_session.alive(env)):
                    print(f"run: the nested host stopped answering during "
                          f"{name}; running {name} once more in a new host",
                          flush=True)
                    retried.append(name)
                    break  # leaving the session stops the frozen host
                for k in counts:
                    counts[k] += c[k]
                pending.pop(0)
    if retried:
        print("run: tests retried after the nested host froze: "
              + ", ".join(retried), flush=True)
    return counts


def main():
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    suites = []
    extra = []
    i = 0
    while i < len(args):
        if args[i] == "--suite" and i + 1 < len(args):
            suites.append(args[i + 1])
            i += 2
        else:
            extra.append(args[i])
            i += 1
    if not suites:
        suites = ["unit", "kvm", "e2e"]

    total = {"passed": 0, "failed": 0, "skipped": 0}

    def add(c):
        for k in total:
            total[k] += c[k]

    direct = [s for s in suites if s in ("unit", "kvm")]
    if direct:
        add(meson_test(os.path.join(ROOT, "build-asan"), direct,
                       "testlog-direct", extra))

    if "e2e" in suites and has_tests(os.path.join(ROOT, "build"), "e2e"):
        sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
        import nested_session  # noqa: E402  (tests/e2e/nested_session.py)
        add(run_e2e(nested_session, os.path.join(ROOT, "build"), extra))

    line = f"{total['passed']} passed, {total['failed']} failed"
    if total["skipped"]:
        line += f", {total['skipped']} skipped"
    print(line)
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
