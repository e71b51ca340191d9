"""One shared nested host for an e2e run.

tests/run.py calls session(root) once per run. When `ember-nested need`
says this machine needs a nested host (no real vmx/svm; EMBER_NESTED=0|1
overrides), it starts ONE host with its state in /tmp/ember-e2e-<pid> and
stops it afterwards, also when the tests fail or are interrupted. The tests
get this environment:

  EMBER_ROOT          the checkout
  EMBER_BUILD         <root>/build
  EMBER_ARTIFACTS     <root>/build/artifacts (kernel, rootfs, nested host)
  EMBER_NESTED        the launcher, <root>/build/hosts/nested/ember-nested
  EMBER_NESTED_STATE  the running host's state folder; unset when the tests
                      run directly on this machine (tests/e2e/lib.sh's
                      in_host handles both)
  EMBER_NESTED_AGENT_PORT  a port on 127.0.0.1 here forwarded to port 7070
                      in the host, where a test's ember-agent listens so
                      that emberd here reaches it (tests/e2e/stack.py)
"""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time


def _say(msg):
    print(f"nested-session: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def session(root):
    build = os.path.join(root, "build")
    launcher = os.path.join(build, "hosts", "nested", "ember-nested")
    env = dict(os.environ)
    env.pop("EMBER_NESTED_STATE", None)
    env.update(EMBER_ROOT=root, EMBER_BUILD=build,
               EMBER_ARTIFACTS=os.path.join(build, "artifacts"),
               EMBER_NESTED=launcher)

    if not os.access(launcher, os.X_OK):
        _say(f"{launcher} is missing (ninja -C build); tests run directly")
        yield env
        return
    need = subprocess.run([launcher, "need"], capture_output=True, text=True,
                          timeout=30)
    answer = need.stdout.strip()
    if not answer.startswith("yes"):
        _say(f"no nested host: {answer}")
        yield env
        return

    state = f"/tmp/ember-e2e-{os.getpid()}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        agent_port = s.getsockname()[1]
    _say(f"starting the shared nested host ({answer}); state {state}")
    t0 = time.monotonic()
    started = False
    try:
        r = subprocess.run([launcher, "start", "--state-dir", state,
                            "--forward", f"{agent_port}:7070"], timeout=600)
        if r.returncode == 0:
            started = True
            env["EMBER_NESTED_STATE"] = state
            env["EMBER_NESTED_AGENT_PORT"] = str(agent_port)
            _say(f"host up after {time.monotonic() - t0:.1f} s")
        else:
            # Tests see no host and say so; the start error is above.
            _say(f"the nested host did not start; see {state}/console.log")
        yield env
    finally:
        if started:
            subprocess.run([launcher, "stop", "--quiet", "--state-dir", state],
                           timeout=60)
            shutil.rmtree(state, ignore_errors=True)


def alive(env, timeout=90):
    """Whether the session's nested host still runs commands. True when the
    tests run directly on this machine (there is no host to lose)."""
    state = env.get("EMBER_NESTED_STATE")
    if not state:
        return True
    try:
        r = subprocess.run([env["EMBER_NESTED"], "exec", "--state-dir", state,
                            "--", "true"], capture_output=True,
                           timeout=timeout)
        return r.returncode == 0
    except subprocess.TimeoutExpired:
        return False
