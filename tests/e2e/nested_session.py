"""One shared nested host for an e2e run.

session(root) yields the environment the e2e tests run with. The nested host
launcher (hosts/nested) fills this in; until it does, tests run directly.
"""
import contextlib
import os


@contextlib.contextmanager
def session(root):
    env = dict(os.environ)
    env["EMBER_ROOT"] = root
    yield env
