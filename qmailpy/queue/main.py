"""qmail-queue: fd 0 = message, fd 1 = envelope; the exit code is the only answer.

Nothing is ever written to fd 1 (it is the envelope pipe). A failure is one
line `qmail-queue: <reason>` on fd 2.

Where the home has qmail-queued's socket (sock/qmail-queue: the production
install, `make run`), qmail-queue is only its client: it streams fd 0 and
fd 1 to the service, which writes the queue as its owner and takes the
caller's uid from the kernel, and exits with the service's answer. Without
the socket (development, tests on a bare home) it writes the queue itself,
as the caller, in this process; started as root outside single-user mode it
first becomes qmailq, the queue's owner (setuid qmailq in qmail). run() holds
all the work so that a pre-forked launcher can call it in a fresh child
instead of exec'ing us; the service calls the same pieces (time_limit,
content_filter, attempt) for each connection.
"""
import os
import time

import _signal as signal   # the C module itself: signal.py imports enum, ~3 ms per message

from qmailpy.exitcodes import QQ_BUG
from qmailpy.log import bug_text, guard, write_line

# qmail-queue's sig_pipeignore() + sig_miscignore(): none of these may stop an insertion
IGNORED = ("SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGQUIT", "SIGINT", "SIGHUP", "SIGXCPU", "SIGXFSZ")


def _say(reason):
    write_line(2, "qmail-queue: %s" % reason)


def time_limit(controls):
    """control/timeoutqueue (qmail's DEATH), kept below OSSIFIED so clean_stale never takes a
    live insertion. Reading the controls qmail-queue needs comes first: QueueError 55."""
    from qmailpy import exitcodes as X
    from qmailpy.queue import layout
    from qmailpy.queue.enqueue import QueueError
    try:
        controls.require("qmail-queue")     # a bad number: exit 55 before the message is read
        limit = controls.value("timeoutqueue")
    except OSError as e:
        raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
    return layout.time_limit(limit)


def _enter(path, code, QueueError):
    try:
        os.chdir(path)
    except OSError as e:
        raise QueueError(code, "unable to chdir to %s: %s" % (path, e.strerror)) from None


def content_filter(controls, log=None):
    """The H-Sphere clamd/spamd step (docs/filters.md), given to enqueue().

    Only qmailpy.filters.select (a cdb lookup) is imported for every message;
    the network code is imported when some recipient is filtered. log: where
    the filters' lines go (None: qmail-queue's stderr; qmail-queued's log
    names the insertion).
    """
    def content_filter(staged):
        from qmailpy.filters.select import content_filter
        if log is None:
            return content_filter(staged, controls)
        return content_filter(staged, controls, log)
    return content_filter


def attempt(work):
    """(exit code, reason) of work(): 0 and "" when it returned, qmail-queue's code when it failed."""
    from qmailpy import exitcodes as X
    from qmailpy.queue.enqueue import QueueError
    try:
        work()
        return X.QQ_OK, ""
    except QueueError as e:
        return e.code, e.reason
    except MemoryError:
        return X.QQ_NO_MEMORY, "out of memory"
    except Exception as e:            # an internal bug: qmail's sigbug() exit
        return X.QQ_BUG, "internal bug: " + bug_text(e)


def run(fd0, fd1, environ, controls):
    """Queue the message on fd0 with the envelope on fd1; return the exit code.

    Through qmail-queued when its socket exists, else in this process (see the
    module docstring). In-process it changes process state as qmail-queue does
    (umask 033, cwd = queue/, ignored signals, SIGALRM, and as root the user),
    so call it in the process that will exit.
    """
    from qmailpy import paths
    from qmailpy.queue.sockclient import service_job
    job = service_job(environ, controls, by_pid=True)
    if job is not None:
        return relay(fd0, fd1, job)
    home = os.path.abspath(paths.qmailhome(environ))
    code, reason = attempt(lambda: _in_process(fd0, fd1, home, environ, controls))
    if code:
        _say(reason)
    return code


def _in_process(fd0, fd1, home, environ, controls):
    from qmailpy import exitcodes as X
    from qmailpy import paths
    from qmailpy.privs import QUEUE_USER, become, drops_privileges
    from qmailpy.queue.enqueue import QueueError, enqueue

    def on_alarm(signum, frame):
        raise QueueError(X.QQ_TIMEOUT, "timeout")

    uid = os.getuid()
    if drops_privileges(environ):
        become(QUEUE_USER)            # the queue's owner writes it; the Received line says root
    os.umask(0o033)
    _enter(home, X.QQ_HOME, QueueError)
    _enter(paths.queue_path(home), X.QQ_QUEUE_DIR, QueueError)
    limit = time_limit(controls)
    for name in IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        enqueue(home, fd0, fd1, uid, os.getpid(), time.time(), content_filter=content_filter(controls))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def relay(fd0, fd1, job):
    """qmail-queue as qmail-queued's client: fd 0 then fd 1 to the socket; the service's code.

    A message or envelope we cannot read, or an envelope qmail-queue would
    refuse, ends the connection before the end of the message, so the service
    queues nothing; the code is the one qmail-queue gives for it.
    """
    from qmailpy import exitcodes as X
    from qmailpy.queue.enqueue import CHUNK, QueueError, read_envelope
    if job.code is not None:
        _say(job.reason)
        return job.code
    for name in IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    try:
        while True:
            data = os.read(fd0, CHUNK)
            if not data:
                break
            job.write(data)
        sender, recipients = read_envelope(fd1)
    except OSError as e:
        job.abort()
        _say("unable to read message: %s" % e.strerror)
        return X.QQ_READ_ERROR
    except QueueError as e:          # the envelope: unreadable, cut short, or not qmail-queue's format
        job.abort()
        _say(e.reason)
        return e.code
    code = job.finish(sender, recipients)
    if code:
        _say(job.reason)
    return code


USAGE = """usage: qmail-queue
Queues the message on fd 0 with the envelope on fd 1 (F sender, T recipients);
the exit code is the only answer (0: queued). Through qmail-queued when the home
has its socket. See docs/qmail-queue.md."""


@guard("qmail-queue", QQ_BUG)
def main():
    from qmailpy.progstart import start
    start(USAGE)
    environ = os.environ
    from qmailpy import paths
    from qmailpy.ctl.reader import Controls
    controls = Controls(os.path.abspath(paths.qmailhome(environ)), environ)
    return run(0, 1, environ, controls)
