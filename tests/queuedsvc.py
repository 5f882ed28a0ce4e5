"""qmail-queued for the tests: the real program started in a qmail home, stopped by pid.

Tests whose homes are laid out as an installed server's (tests/test_e2e_support.World, the
`queued` fixture of tests/conftest.py) queue through it, as `make run` and the production
install do; unit tests of the queue code write the queue in-process (no socket in the home).
"""
import os
import signal
import subprocess
import time

from qmailpy import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUED = os.path.join(ROOT, "bin", "qmail-queued")


def accepting(home):
    """Does something accept connections on the home's qmail-queued socket?

    The probe sends nothing and reads until the service closes: qmail-queued makes a mess
    file for a connection only once its first byte came (qmailpy's clients send their mark
    on connecting), and answers one that sends none without one, so a test starts with
    nothing of the probe's in the queue (a mess/ listing taken meanwhile would name an id
    the next message may reuse)."""
    import _socket
    from qmailpy.unixsock import client
    try:
        sock = client(paths.queue_socket(str(home)), 5)
    except OSError:
        return False
    try:
        sock.shutdown(_socket.SHUT_WR)
        while sock.recv(1024):
            pass
    except OSError:
        pass
    finally:
        sock.close()
    return True


class Queued:
    """One bin/qmail-queued process for `home`; its stderr goes to `log` (a path) or is kept."""

    def __init__(self, home, env, log=None, argv=None):
        self.home, self.env, self.log = str(home), dict(env, QMAILHOME=str(home)), log
        self.argv = argv or [QUEUED]
        self.proc = None

    def start(self, timeout=30):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        finally:
            if self.log:
                out.close()
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "qmail-queued exited with %s" % self.proc.returncode
            if accepting(self.home):          # a killed one's socket refuses: this is ours
                return self
            assert time.monotonic() < deadline, "qmail-queued did not listen in %s" % self.home
            time.sleep(0.01)

    def stop(self, timeout=15):
        """SIGTERM and wait; the exit code (SIGKILL after `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
