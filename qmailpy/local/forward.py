"""`&address` lines: one qmail-queue run for all forwards, as qmail-local's mailforward().

Message = our Delivered-To line + the message; envelope sender = NEWSENDER
(after the SRS hook), recipients in .qmail order. The queue program is
$QMAILQUEUE, else bin/qmail-queue, started in the qmail home like qmail.c's
qmail_open(); its exit code is read with qmail_close()'s table and failures
say "Unable to forward message: <qq text>." (D -> 100, Z -> 111).
Where the home has qmail-queued's socket and $QMAILQUEUE is unset, the
message goes to the service directly (no qmail-queue process; the `qp` is
the service's number for the insertion): qmail-local holds only the mailbox
owner's uid and gid, and the service is what may write the queue.

queue() is the part without qmail-local's words: the forward and condredirect
programs (local/helpers/) put their messages into the queue with it and say
qmail_close()'s text their own way.
"""
import os

from qmailpy.exitcodes import PERMANENT
from qmailpy.fileio import write_all
from qmailpy.local import errors, message


class NoFork(OSError):
    """qmail_open() failed: no child to run the queue program (its pipe or fork refused)."""


class Refused(Exception):
    """The queue did not take the message: qmail_close()'s kind ('D' or 'Z') and text."""

    def __init__(self, kind, text):
        super().__init__(kind, text)
        self.kind, self.text = kind, text


def _program(environ):
    prog = environ.get("QMAILQUEUE") or "bin/qmail-queue"
    return prog if "/" in prog else "./" + prog       # execv(), never a $PATH search


def _feed(proc_stdin, env_w, chunks, dtline, envelope):
    """Message then envelope; False if anything went wrong (qmail's flagerr)."""
    try:
        write_all(proc_stdin, dtline)
        for data in chunks:
            write_all(proc_stdin, data)
    except OSError:
        return False                 # no envelope: qmail-queue fails, nothing is queued
    finally:
        os.close(proc_stdin)
    try:
        write_all(env_w, envelope)
    except OSError:
        return False
    return True


def forward(recipients, fd0, dtline, sender, environ):
    """Queue the message for `recipients`; return qmail-queue's pid (the 'qp')."""
    message.rewind(fd0)
    try:
        return queue(recipients, message.read_chunks(fd0), dtline, sender, environ)
    except Refused as r:
        raise errors.Die(errors.PERM if r.kind == PERMANENT else errors.TEMP,
                         "Unable to forward message: %s." % r.text) from None
    except NoFork as e:                 # qmail-local.c's temp_fork()
        raise errors.temp("Unable to fork: %s. (#4.3.0)" % errors.error_str(e)) from None


def queue(recipients, chunks, dtline, sender, environ):
    """Queue dtline + chunks (the message) from `sender` for `recipients`; return the 'qp'
    (qmail-queue's pid, or the service's number). Refused: what qmail_close() says;
    NoFork: qmail_open()'s -1."""
    from qmailpy import exitcodes, forkexec, paths
    from qmailpy.proto import qq

    # The SRS sender is not set here: qmail-send rewrites the sender of every remote
    # delivery whose sender is not ours (send/srsmap.py), forwards included.
    home = paths.qmailhome(environ)
    if "QMAILQUEUE" not in environ:
        from qmailpy.queue.sockclient import service_job
        job = service_job(environ)
        if job is not None:
            return _through_service(job, recipients, chunks, dtline, sender)
    envelope = qq.encode(os.fsencode(sender), [os.fsencode(r) for r in recipients])
    try:
        env_r, env_w = os.pipe()
    except OSError as e:                # qmail_open()'s pipe() failing is its -1 too
        raise NoFork(e.errno, e.strerror) from None
    try:
        msg_r, msg_w = os.pipe()
    except OSError as e:
        os.close(env_r)
        os.close(env_w)
        raise NoFork(e.errno, e.strerror) from None
    try:
        pid = forkexec.start([_program(environ)], {0: msg_r, 1: env_r}, environ, home)
    except OSError as e:
        for fd in (env_r, env_w, msg_r, msg_w):
            os.close(fd)
        if e.filename is None:          # no child got to exec
            raise NoFork(e.errno, e.strerror) from None
        raise Refused(*exitcodes.qq_status(exitcodes.qq_not_started(e, home))) from None
    os.close(env_r)
    os.close(msg_r)
    try:
        ok = _feed(msg_w, env_w, chunks, dtline, envelope)
    finally:
        os.close(env_w)
    code = forkexec.wait(pid)
    if code == 0 and not ok:
        code = exitcodes.QQ_READ_ERROR
    return _result(code, pid)


def _through_service(job, recipients, chunks, dtline, sender):
    from qmailpy import exitcodes
    try:
        job.write(dtline)
        for data in chunks:
            job.write(data)
    except OSError:
        job.abort()                  # nothing is queued
        return _result(exitcodes.QQ_READ_ERROR, None)
    code = job.finish(os.fsencode(sender), [os.fsencode(r) for r in recipients])
    return _result(code, job.qp)


def _result(code, qp):
    """qp for exit code 0, else Refused as qmail_close()'s table says (negative: killed)."""
    from qmailpy import exitcodes
    if code == 0:
        return qp
    raise Refused(*(exitcodes.QQ_CRASHED if code < 0 else exitcodes.qq_status(code)))
