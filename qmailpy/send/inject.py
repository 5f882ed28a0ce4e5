"""Queue a message the way qmail's qmail_open()/qmail_close() do, without blocking qmail-send.

qmail-queue reads the message on its fd 0 and then the envelope on its fd 1,
so both are pipes we write to, the message first. The program is
$QMAILQUEUE, else qmail-queue beside our own launcher, else bin/qmail-queue
of the home (qmail-send runs as qmails, so qmail-queue's Received line says
"invoked for bounce").

An Injection writes only what the pipe takes, pulling the message chunk by
chunk from an iterator, a few chunks per step(), so qmail-send's loop calls
step() whenever the pipe is writable and keeps scheduling deliveries in
between; a pidfd tells the loop when qmail-queue has exited.
"""
import os
import subprocess

from qmailpy import exitcodes
from qmailpy.proto import qq
from qmailpy.paths import program_path

STEPS = 4            # chunks pulled per step(): bounds the work of one turn of the loop


class Injector:
    __slots__ = ("program", "home", "environ")

    def __init__(self, home, environ):
        self.home, self.environ = home, environ
        self.program = program_path(environ, "qmail-queue", "QMAILQUEUE")

    def start(self, chunks, sender, recipient):
        """An Injection of the message `chunks` makes, or None when qmail-queue did not start."""
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        env_r, env_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen([self.program], stdin=msg_r, stdout=env_r, cwd=self.home, env=self.environ)
        except OSError:
            for fd in (msg_r, msg_w, env_r, env_w):
                os.close(fd)
            return None
        os.close(msg_r)
        os.close(env_r)
        try:
            return Injection(proc, msg_w, env_w, chunks, qq.encode(sender, [recipient]))
        except OSError:                   # no pidfd (Linux before 5.3): qmail-queue must not queue
            os.close(msg_w)
            os.close(env_w)
            proc.kill()
            proc.wait()
            return None


class Injection:
    """One message on its way into qmail-queue."""
    __slots__ = ("proc", "pidfd", "msg_w", "env_w", "chunks", "pending", "envelope", "trouble", "broken")

    def __init__(self, proc, msg_w, env_w, chunks, envelope):
        self.proc, self.msg_w, self.env_w = proc, msg_w, env_w
        self.chunks, self.envelope = iter(chunks), envelope
        self.pending, self.trouble, self.broken = b"", False, False
        os.set_blocking(msg_w, False)
        os.set_blocking(env_w, False)
        self.pidfd = os.pidfd_open(proc.pid)

    @property
    def pid(self):
        return self.proc.pid

    def fileno(self):
        """The pipe to wait for (message, then envelope), None when both are written and closed."""
        return self.msg_w if self.msg_w is not None else self.env_w

    def step(self):
        """Write what the pipes take now, pulling at most STEPS chunks of the message.

        A closed pipe (qmail-queue gave up) ends the writing: its exit code
        says why (finish()). A message that cannot be read (OSError from the chunks)
        closes both pipes without an envelope, so qmail-queue queues nothing.
        """
        pulled = 0
        try:
            while self.msg_w is not None:
                if not self.pending:
                    if pulled == STEPS:
                        return
                    pulled += 1
                    try:
                        chunk = next(self.chunks, None)
                    except OSError:
                        self.trouble = True
                        self._close_pipes()
                        return
                    if chunk is None:
                        self._close("msg_w")
                        break
                    self.pending = memoryview(chunk)
                    continue
                self.pending = self.pending[os.write(self.msg_w, self.pending):]
            while self.env_w is not None:
                self.envelope = self.envelope[os.write(self.env_w, self.envelope):]
                if not self.envelope:
                    self._close("env_w")
        except BlockingIOError:
            return
        except OSError:
            self.broken = True
            self._close_pipes()

    def _close(self, name):
        fd = getattr(self, name)
        setattr(self, name, None)
        if fd is not None:
            os.close(fd)

    def _close_pipes(self):
        self._close("msg_w")
        self._close("env_w")

    def finish(self):
        """qmail-queue's exit code once it has exited (negative: killed by that signal); closes all.
        Exit 0 before it was given the whole message and envelope (a write failed, or it exited
        while some was still to write) counts as 54, as qmail_close() says 'qq read error' when a
        write failed: it did not read everything, so it has not queued it."""
        unfinished = self.broken or self.fileno() is not None
        self._close_pipes()
        code = self.proc.wait()
        if code == 0 and unfinished:
            code = exitcodes.QQ_READ_ERROR
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
        return code


def permanent(code):
    """qmail-queue's map calls this exit code permanent (31, 11, 1x-4x...): no point trying again."""
    return code > 0 and exitcodes.qq_status(code)[0] == exitcodes.PERMANENT
