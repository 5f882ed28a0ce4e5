"""Hand a message to the queue, as qmail.c's qmail_open/qmail_close do.

Where the home has qmail-queued's socket and $QMAILQUEUE is unset, the job
talks to the service directly (qmailpy.queue.sockclient.SocketJob: same
write/finish/abort/qp, no process started; `qp` is the service's number for
the insertion). Otherwise the queue program ($QMAILQUEUE, else $QMAILHOME/bin/qmail-queue) gets the
message on fd 0 and then the envelope on fd 1. It is started before the 354
reply (its pid is the `qp` of the 250 reply), as qmail.c's qmail_open()
starts it: forked, in the qmail home (qmailpy.forkexec). A child that cannot
get there or exec the program is qmail's child exiting 61 or 120: the job
is still opened (354), takes the message and finishes with that code ("qq
trouble in home directory", "unable to exec qq"), as qmail_close() reports
it (a forked child whose descriptors cannot be moved exits 120 too, as qmail.c's child; a
failing waitpid() is "qq waitpid surprise"). Only a pipe or fork that fails stops the job from opening.

When $QMAILQUEUE is unset and bin/qmail-queue is qmailpy's own launcher, the
queue program is not exec'd: a forked child runs qmailpy.queue.main.run() on
the same pipes and exits with its code. Same uid, same fds, same exit codes,
no second interpreter start (~10 ms per message). Any other program
(a QMAILQUEUE wrapper, a C qmail-queue) is exec'd as qmail would.
"""
import os

from qmailpy import paths
from qmailpy.exitcodes import QQ_BUG, QQ_EXEC_FAILED, QQ_READ_ERROR, QQ_WAIT_SURPRISE, qq_not_started
from qmailpy.proto.qq import encode


LAUNCHER_MARK = b"qmailpy.queue.main import main"


def queue_program(environ):
    return environ.get("QMAILQUEUE") or paths.bin_path(paths.qmailhome(environ), "qmail-queue")


def is_own_queue(path):
    """Is `path` qmailpy's launcher for qmail-queue (so a fork can stand in for the exec)?"""
    try:
        with open(path, "rb") as f:
            return LAUNCHER_MARK in f.read(512)
    except OSError:
        return False


def start_job(environ, controls=None):
    """A running queue job for one message (see the module docstring); `controls` (the
    caller's, else read here) give the time limit of a job through qmail-queued.
    OSError when no pipe or process can be had."""
    if "QMAILQUEUE" not in environ:
        from qmailpy.queue.sockclient import service_job
        job = service_job(environ, controls)
        if job is not None:
            return job
    program = queue_program(environ)
    if "QMAILQUEUE" not in environ and is_own_queue(program):
        return QueueJob(None, environ)
    try:
        return QueueJob(program, environ)
    except OSError as e:
        if e.filename is None:                  # pipe() or fork()
            raise
        return NotStarted(qq_not_started(e, paths.qmailhome(environ)))


class NotStarted:
    """The job of a queue program whose child could not chdir to the home or exec it: qmail's
    child exits 61 or 120, and qmail_close() reports that once the message is written."""

    def __init__(self, code):
        self.code, self.qp = code, 0

    def write(self, data):
        pass

    def finish(self, sender, recipients):
        return self.code

    def abort(self):
        pass


def _fork_queue(msg_r, env_r, closing, environ):
    """Run qmail-queue's work in a child on the two pipes; the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = QQ_BUG
    try:
        try:
            os.dup2(msg_r, 0)
            os.dup2(env_r, 1)
        except OSError:              # qmail.c's child: fd_move() failing is _exit(120)
            code = QQ_EXEC_FAILED
        else:
            _close(*closing)
            from qmailpy.ctl.reader import Controls
            from qmailpy.queue.main import run
            code = run(0, 1, environ, Controls(paths.qmailhome(environ), environ))
    finally:
        os._exit(code)


def _close(*fds):
    """Close pipe ends; a failing close() is ignored, as qmail ignores it: Linux frees the
    descriptor all the same, and the queue program's exit code is the answer."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _wait(pid):
    """The queue program's exit code; a waitpid() that fails is qmail_close()'s "qq waitpid
    surprise" (QQ_WAIT_SURPRISE, temporary)."""
    from qmailpy.forkexec import wait
    try:
        return wait(pid)
    except OSError:
        return QQ_WAIT_SURPRISE


class QueueJob:
    """One running queue program; write() the message, then finish() with the envelope."""

    def __init__(self, program, environ):
        """program None: fork and run qmail-queue's code (see start_job)."""
        msg_r, self.msg_w = os.pipe()
        try:
            env_r, self.env_w = os.pipe()
        except OSError:                 # no fd left (EMFILE): the first pipe's must not stay open
            os.close(msg_r)
            os.close(self.msg_w)
            raise
        try:
            if program is None:
                self.qp = _fork_queue(msg_r, env_r, (msg_r, env_r, self.msg_w, self.env_w), environ)
            else:
                from qmailpy import forkexec
                self.qp = forkexec.start([program], {0: msg_r, 1: env_r}, environ, paths.qmailhome(environ))
        except OSError:
            _close(msg_r, env_r, self.msg_w, self.env_w)
            raise
        _close(msg_r, env_r)
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
        _close(self.msg_w)
        self.msg_w = None
        if not self.failed:
            try:
                data = memoryview(encode(sender, recipients))
                while data:
                    data = data[os.write(self.env_w, data):]
            except OSError:
                self.failed = True
        _close(self.env_w)
        self.env_w = None
        code = _wait(self.qp)
        if code == 0 and self.failed:
            return QQ_READ_ERROR
        return code

    def abort(self):
        """Close without an envelope: the queue program exits without queueing anything.
        A job gets finish() or abort(), once (the Conversation lets go of it first)."""
        _close(self.msg_w, self.env_w)
        self.msg_w = self.env_w = None
        _wait(self.qp)
