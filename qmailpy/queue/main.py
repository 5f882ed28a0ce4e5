"""qmail-queue: fd 0 = message, fd 1 = envelope; the exit code is the only answer.

Nothing is ever written to fd 1 (it is the envelope pipe). A failure is one
line `qmail-queue: <reason>` on fd 2. run() holds all the work so that a
pre-forked launcher can call it in a fresh child instead of exec'ing us.
"""
import os
import time

import _signal as signal   # the C module itself: signal.py imports enum, ~3 ms per message

from qmailpy.log import write_line

# qmail-queue's sig_pipeignore() + sig_miscignore(): none of these may stop an insertion
IGNORED = ("SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGQUIT", "SIGINT", "SIGHUP", "SIGXCPU", "SIGXFSZ")


def _say(reason):
    write_line(2, "qmail-queue: %s" % reason)


def _time_limit(controls, layout):
    """control/timeoutqueue, kept below OSSIFIED so clean_stale never takes a live insertion."""
    limit = controls.value("timeoutqueue") or layout.DEATH
    return min(limit, layout.OSSIFIED - 3600)


def _enter(path, code, QueueError):
    try:
        os.chdir(path)
    except OSError as e:
        raise QueueError(code, "unable to chdir to %s: %s" % (path, e.strerror)) from None


def _content_filter(controls):
    """The H-Sphere clamd/spamd step (docs/filters.md), given to enqueue().

    Only qmailpy.filters.select (a cdb lookup) is imported for every message;
    the network code is imported when some recipient is filtered.
    """
    def content_filter(staged):
        from qmailpy.filters.select import content_filter
        return content_filter(staged, controls)
    return content_filter


def run(fd0, fd1, environ, controls):
    """Queue the message on fd0 with the envelope on fd1; return the exit code.

    Changes process state as qmail-queue does (umask 033, cwd = queue/,
    ignored signals, SIGALRM), so call it in the process that will exit.
    """
    from qmailpy import exitcodes as X
    from qmailpy import paths
    from qmailpy.queue import layout
    from qmailpy.queue.enqueue import QueueError, enqueue

    def on_alarm(signum, frame):
        raise QueueError(X.QQ_TIMEOUT, "timeout")

    try:
        os.umask(0o033)
        home = os.path.abspath(paths.qmailhome(environ))
        _enter(home, X.QQ_HOME, QueueError)
        _enter(paths.queue_path(home), X.QQ_QUEUE_DIR, QueueError)
        try:
            controls.require("qmail-queue")     # a bad number: exit 55 before the message is read
            limit = _time_limit(controls, layout)
        except OSError as e:
            raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
        for name in IGNORED:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(limit)
        try:
            enqueue(home, fd0, fd1, os.getuid(), os.getpid(), time.time(),
                    content_filter=_content_filter(controls))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        return X.QQ_OK
    except QueueError as e:
        _say(e.reason)
        return e.code
    except MemoryError:
        _say("out of memory")
        return X.QQ_NO_MEMORY
    except Exception as e:            # an internal bug: qmail's sigbug() exit
        _say("internal bug: %s: %s" % (type(e).__name__, e))
        return X.QQ_BUG


USAGE = """usage: qmail-queue
Queues the message on fd 0 with the envelope on fd 1 (F sender, T recipients);
the exit code is the only answer (0: queued). See docs/qmail-queue.md."""


def main():
    from qmailpy.progstart import start
    start(USAGE)
    environ = os.environ
    try:
        from qmailpy import paths
        from qmailpy.ctl.reader import Controls
        controls = Controls(os.path.abspath(paths.qmailhome(environ)), environ)
    except Exception as e:
        _say("internal bug: %s: %s" % (type(e).__name__, e))
        return 81
    return run(0, 1, environ, controls)
