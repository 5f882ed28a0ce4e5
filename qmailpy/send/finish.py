"""Failures and finished messages: qmail-send.c's addbounce(), messdone(), injectbounce().

A permanent failure appends the recipient's paragraph to bounce/<id>. Once
no channel file is left: queue the bounce collected in bounce/<id>
(or discard it: triple bounce, doublebounce-trim), log "end msg", unlink
info/, then have qmail-clean remove intd/ and mess/. Every step can fail
and be retried later; a crash between steps redoes the remaining ones.

Unlike qmail, the bounce is not written to qmail-queue inside messdone():
injectbounce() starts an Injection (at most BOUNCES_AT_ONCE at a time) and
the loop feeds it while deliveries go on; bounce_exited() takes qmail-queue's
exit code and queues the message for messdone() again. A bounce that
qmail-queue refuses for good (a filter: exit 31) is sent once more without
the copy of the message; refused again, it is discarded as a triple bounce.
"""
import os
import time

from qmailpy import exitcodes
from qmailpy.proto import cleanwire as clean_wire
from qmailpy.queue import files as qf, layout
from qmailpy.send import bounce
from qmailpy.send.inject import permanent
from qmailpy.send.rewrite import bounce_sender
from qmailpy.send.todo import rel

DONE, RETRY, RUNNING, WAITING = "done", "retry", "running", "waiting"    # messdone()'s answers
BOUNCES_AT_ONCE = 4


class Bouncing:
    """A bounce on its way into qmail-queue: the injection, the files it reads, with the copy or not."""
    __slots__ = ("injection", "files", "copy")

    def __init__(self, injection, files, copy):
        self.injection, self.files, self.copy = injection, files, copy

    def finish(self):
        code = self.injection.finish()
        for f in self.files:
            f.close()
        return code


def addbounce(sched, msgid, recip, report):
    """Append the paragraph for a failed recipient (without its virtualdomains prefix)."""
    text = bounce.addbounce(sched.config.rewriter.strip_prefix(recip), report)
    def trouble():                  # as qmail: never drop a failure report
        sched.log.line("alert: unable to append to bounce message; HELP! sleeping...")
        time.sleep(10)
    qf.append_bounce(sched.home, msgid, text, trouble)


def messdone(sched, msgid, now):
    """DONE when finished (or a false alarm); RETRY after SLEEP_SYSFAIL; RUNNING while its
    bounce goes into qmail-queue (bounce_exited() brings it back); WAITING for a free slot
    (the scheduler gives each slot that frees to the message that has waited longest)."""
    home, split, log = sched.home, sched.split, sched.log
    for ch in sched.channels:
        got = qf.exists(sched.path(msgid, ch.index))
        if got:
            return DONE                        # false alarm: a channel is still going
        if got is None:
            log.line("warning: unable to stat %s; will try again later" % rel(ch.name, msgid, split))
            return RETRY
    todo = qf.exists(layout.todo_path(home, msgid))
    info = qf.exists(layout.info_path(home, msgid, split)) if todo is False else False
    if todo is None or info is None:
        log.line("warning: unable to stat %s; will try again later"
                 % rel("todo" if todo is None else "info", msgid, split))
        return RETRY
    if todo or not info:                       # qmail-todo is redoing it, or it is already gone
        return DONE
    got = injectbounce(sched, msgid, now)
    if got != DONE:
        return got
    log.line("end msg %d" % msgid)
    try:
        os.unlink(layout.info_path(home, msgid, split))
    except OSError:
        log.line("warning: unable to unlink %s; will try again later" % rel("info", msgid, split))
        return RETRY
    if sched.cleaner.request(clean_wire.FOOP, msgid) != clean_wire.OK:
        log.line("warning: qmail-clean unable to clean up foop/%d" % msgid)
    return DONE


def leftovers(sched, msgid):
    """info/ with neither todo/ nor mess/ (pqadd): mess/ is unlinked last, so the message was
    finished, its bounce queued, and a power loss brought back some of the unlinks before
    (docs/qmail-send.md). Deliver and bounce nothing of it: remove what is left. False when
    a file could not be unlinked (pqadd logs and tries again later)."""
    sched.log.line("warning: " + qf.FINISHED % (msgid, rel("mess", msgid, sched.split)))
    failed = qf.remove_finished(sched.home, msgid, sched.split)
    if failed is not None:
        sched.log.line("warning: unable to unlink %s; will try again later" % failed)
        return False
    if sched.cleaner.request(clean_wire.FOOP, msgid) != clean_wire.OK:
        sched.log.line("warning: qmail-clean unable to clean up foop/%d" % msgid)
    return True


def injectbounce(sched, msgid, now):
    """DONE when bounce/<id> is gone (none, discarded), else RETRY, RUNNING or WAITING."""
    home, log, settings = sched.home, sched.log, sched.config.bounce
    if msgid in sched.bounces:
        return RUNNING
    info = qf.getinfo(home, msgid, sched.split)
    if info is None:
        return RETRY
    sender = bounce_sender(info[0])
    path = layout.bounce_path(home, msgid)
    got = qf.exists(path)
    if got is False:
        return DONE
    if got is None:
        log.line("warning: unable to stat %s" % rel("bounce", msgid))
        return RETRY
    reason = bounce.discard_reason(sender, settings)
    if reason:
        log.line("%s %s" % (reason, rel("bounce", msgid)))
        return _unlink_bounce(sched, msgid)
    if sched.exitasap:
        return RETRY                           # bounce/<id> stays: the next qmail-send sends it
    if len(sched.bounces) >= BOUNCES_AT_ONCE:
        return WAITING
    files = []
    try:
        files.append(open(path, "rb"))
        files.append(open(layout.mess_path(home, msgid, sched.split), "rb"))
    except OSError:
        for f in files:
            f.close()
        unread = rel("mess", msgid, sched.split) if files else rel("bounce", msgid)
        log.line("warning: unable to read %s; will try again later" % unread)
        return RETRY
    copy = msgid not in sched.copy_refused
    chunks = bounce.chunks(now, sender, files[0], files[1], settings, copy)
    injection = sched.injector.start(chunks, *bounce.envelope(sender, settings))
    if injection is None:
        for f in files:
            f.close()
        log.line("warning: unable to start qmail-queue, will try later")
        return RETRY
    sched.bounces[msgid] = Bouncing(injection, files, copy)
    return RUNNING


def bounce_exited(sched, msgid, now):
    """qmail-queue has exited for the bounce of msgid: log, and hand the message back to messdone()."""
    log = sched.log
    b = sched.bounces.pop(msgid)
    qp = b.injection.pid
    code = b.finish()
    again = now
    if code == 0:
        log.line("bounce msg %d qp %d" % (msgid, qp))
        sched.copy_refused.discard(msgid)
        if _unlink_bounce(sched, msgid) != DONE:
            again = sched.sysfail(now)
    elif b.injection.trouble:
        log.line("warning: unable to read %s; will try again later" % rel("bounce", msgid))
        again = sched.sysfail(now)
    elif permanent(code) and b.copy:
        log.line("warning: qmail-queue refused the bounce of msg %d for good (%s); "
                 "sending it without the copy of the message" % (msgid, _why(code)))
        sched.copy_refused.add(msgid)
    elif permanent(code):
        log.line("triple bounce: discarding %s: qmail-queue refused the bounce of msg %d "
                 "without the copy of the message too (%s)" % (rel("bounce", msgid), msgid, _why(code)))
        sched.copy_refused.discard(msgid)
        if _unlink_bounce(sched, msgid) != DONE:
            again = sched.sysfail(now)
    else:
        log.line("warning: trouble injecting bounce message, will try later")
        again = sched.sysfail(now)
    sched.done_add(msgid, again)


def _why(code):
    return "exit %d: %s" % (code, exitcodes.qq_status(code)[1])


def _unlink_bounce(sched, msgid):
    try:
        os.unlink(layout.bounce_path(sched.home, msgid))
    except OSError:
        sched.log.line("warning: unable to unlink %s" % rel("bounce", msgid))
        return RETRY
    return DONE
