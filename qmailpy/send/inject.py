"""Queue a message the way qmail's qmail_open()/qmail_close() do: through qmail-queue.

qmail-queue reads the message on its fd 0 and then the envelope on its fd 1,
so both are pipes we write to, the message first. The program is
$QMAILQUEUE, else qmail-queue beside our own launcher, else bin/qmail-queue
of the home (qmail-send runs as qmails, so qmail-queue's Received line says
"invoked for bounce").
"""
import os
import subprocess

from qmailpy.proto import qq
from qmailpy.spawn.programs import program_path


class Injector:
    __slots__ = ("program", "home", "environ")

    def __init__(self, home, environ):
        self.home, self.environ = home, environ
        self.program = program_path(environ, "qmail-queue", "QMAILQUEUE")

    def inject(self, message, sender, recipient):
        """(qmail-queue's exit code or None if it could not run, its pid)."""
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        env_r, env_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen([self.program], stdin=msg_r, stdout=env_r, cwd=self.home, env=self.environ)
        except OSError:
            for fd in (msg_r, msg_w, env_r, env_w):
                os.close(fd)
            return None, 0
        os.close(msg_r)
        os.close(env_r)
        try:
            _write_all(msg_w, message)
            os.close(msg_w)
            msg_w = None
            _write_all(env_w, qq.encode(sender, [recipient]))
        except OSError:
            pass                          # qmail-queue stopped reading: its exit code says why
        finally:
            if msg_w is not None:
                os.close(msg_w)
            os.close(env_w)
        return proc.wait(), proc.pid


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
