"""qmail-usersd for a test's qmail home: started as the program (bin/qmail-usersd), stopped by pid."""
import os
import subprocess
import time

from conftest import program
from qmailpy import paths


def ready(path):
    """Does something accept on the Unix socket at `path` (however long the path)?"""
    from qmailpy.unixsock import client
    try:
        client(path, 5).close()
    except OSError:
        return False
    return True


class UsersService:
    """with UsersService(home_root, env) as svc: ... svc.log() (its stderr) after the block."""

    def __init__(self, home, env=None):
        self.home = str(home)
        self.env = dict(env if env is not None else os.environ, QMAILHOME=self.home)
        self.path = paths.users_socket(self.home)
        self.proc = None
        self.err = b""

    def start(self):
        self.proc = subprocess.Popen([program("qmail-usersd")], env=self.env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not ready(self.path):
            assert self.proc.poll() is None, "qmail-usersd exited: %s" % self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, "qmail-usersd did not listen on %s" % self.path
            time.sleep(0.02)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        if self.proc is not None:
            _, self.err = self.proc.communicate(timeout=30)
        return self.err.decode("utf-8", "replace")

    def log(self):
        return self.err.decode("utf-8", "replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
