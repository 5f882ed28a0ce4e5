"""Shared fixtures: a scratch qmail home and the paths of the programs under test."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Nothing the suite starts may ask the machine's resolver (traffic stays on 127.0.0.1):
# programs that look up DNS without a test server of their own get a dead local one.
os.environ["DNSCACHEIP"] = "127.0.0.1:1"
os.environ.setdefault("DNSTIMEOUT", "0.2")
# The daemons stay the invoking user whether or not qmail's users exist on this
# machine (tests/test_production.py clears this to test privilege separation).
os.environ["QMAILPY_SINGLEUSER"] = "1"
BIN = os.path.join(ROOT, "bin")


def program(name):
    """Absolute path of a launcher in bin/ (made by `make`)."""
    path = os.path.join(BIN, name)
    assert os.access(path, os.X_OK), "%s missing: run make" % path
    return path


class Home:
    """A scratch qmail home: control files are written with .control()."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "control"), exist_ok=True)

    def control(self, name, text):
        path = os.path.join(self.root, "control", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def env(self, **extra):
        env = dict(os.environ, QMAILHOME=self.root)
        env.update(extra)
        return env

    def run(self, name, *args, input=None, env=None, **kw):
        return subprocess.run([program(name), *args], input=input, capture_output=True,
                              env=env or self.env(), timeout=60, **kw)


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "qmail")
