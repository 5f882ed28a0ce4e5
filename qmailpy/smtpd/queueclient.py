"""Hand a message to the queue program, as qmail.c's qmail_open/qmail_close do.

The queue program ($QMAILQUEUE, else $QMAILHOME/bin/qmail-queue) gets the
message on fd 0 and then the envelope on fd 1. It is started before the 354
reply (its pid is the `qp` of the 250 reply). posix_spawn keeps the start
cheap and needs no subprocess module.
"""
import os

from qmailpy import paths
from qmailpy.exitcodes import QQ_READ_ERROR
from qmailpy.proto.qq import encode


def queue_program(environ):
    return environ.get("QMAILQUEUE") or paths.bin_path(paths.qmailhome(environ), "qmail-queue")


class QueueJob:
    """One running queue program; write() the message, then finish() with the envelope."""

    def __init__(self, program, environ):
        msg_r, self.msg_w = os.pipe()
        env_r, self.env_w = os.pipe()
        try:
            self.qp = os.posix_spawn(program, [program], environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, msg_r, 0), (os.POSIX_SPAWN_DUP2, env_r, 1)])
        except OSError:
            for fd in (msg_r, env_r, self.msg_w, self.env_w):
                os.close(fd)
            raise
        finally:
            if hasattr(self, "qp"):
                os.close(msg_r)
                os.close(env_r)
        self.failed = False

    def write(self, data):
        """Stream message bytes; a dead queue program is noticed here and reported at finish()."""
        if self.failed:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.msg_w, view):]
        except OSError:
            self.failed = True

    def finish(self, sender, recipients):
        """Close the message, send the envelope, wait: the queue's exit code (negative: killed by a signal)."""
        os.close(self.msg_w)
        self.msg_w = None
        if not self.failed:
            try:
                data = memoryview(encode(sender, recipients))
                while data:
                    data = data[os.write(self.env_w, data):]
            except OSError:
                self.failed = True
        os.close(self.env_w)
        self.env_w = None
        code = self._wait()
        if code == 0 and self.failed:
            return QQ_READ_ERROR
        return code

    def abort(self):
        """Close without an envelope: the queue program exits without queueing anything."""
        for fd in (self.msg_w, self.env_w):
            if fd is not None:
                os.close(fd)
        self.msg_w = self.env_w = None
        self._wait()

    def _wait(self):
        while True:
            try:
                _, status = os.waitpid(self.qp, 0)
                break
            except InterruptedError:
                continue
        return os.waitstatus_to_exitcode(status)
