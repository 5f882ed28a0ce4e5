"""Failures and finished messages: qmail-send.c's addbounce(), messdone(), injectbounce().

A permanent failure appends the recipient's paragraph to bounce/<id>. Once
no channel file is left: queue the bounce collected in bounce/<id>
(or discard it: triple bounce, doublebounce-trim), log "end msg", unlink
info/, then have qmail-clean remove intd/ and mess/. Every step can fail
and be retried later; a crash between steps redoes the remaining ones.
"""
import os
import time

from qmailpy.clean import wire as clean_wire
from qmailpy.queue import layout
from qmailpy.send import bounce, queuefiles as qf
from qmailpy.send.rewrite import bounce_sender
from qmailpy.send.todo import rel


def addbounce(sched, msgid, recip, report):
    """Append the paragraph for a failed recipient (without its virtualdomains prefix)."""
    text = bounce.addbounce(sched.config.rewriter.strip_prefix(recip), report)
    while True:                     # as qmail: never drop a failure report
        try:
            qf.append_bounce(sched.home, msgid, text)
            return
        except OSError:
            sched.log.line("alert: unable to append to bounce message; HELP! sleeping...")
            time.sleep(10)


def messdone(sched, msgid, now):
    """True when finished (or a false alarm); False to try again after SLEEP_SYSFAIL."""
    home, split, log = sched.home, sched.split, sched.log
    for ch in sched.channels:
        got = qf.exists(sched.path(msgid, ch.index))
        if got:
            return True                        # false alarm: a channel is still going
        if got is None:
            log.line("warning: unable to stat %s; will try again later" % rel(ch.name, msgid, split))
            return False
    todo = qf.exists(layout.todo_path(home, msgid))
    info = qf.exists(layout.info_path(home, msgid, split)) if todo is False else False
    if todo is None or info is None:
        log.line("warning: unable to stat %s; will try again later"
                 % rel("todo" if todo is None else "info", msgid, split))
        return False
    if todo or not info:                       # qmail-todo is redoing it, or it is already gone
        return True
    if not injectbounce(sched, msgid, now):
        return False
    log.line("end msg %d" % msgid)
    try:
        os.unlink(layout.info_path(home, msgid, split))
    except OSError:
        log.line("warning: unable to unlink %s; will try again later" % rel("info", msgid, split))
        return False
    if sched.cleaner.request(clean_wire.FOOP, msgid) != clean_wire.OK:
        log.line("warning: qmail-clean unable to clean up foop/%d" % msgid)
    return True


def injectbounce(sched, msgid, now):
    """Queue (or discard) bounce/<id>; True when bounce/<id> is gone."""
    home, log, settings = sched.home, sched.log, sched.config.bounce
    info = qf.getinfo(home, msgid, sched.split)
    if info is None:
        return False
    sender = bounce_sender(info[0])
    path = layout.bounce_path(home, msgid)
    got = qf.exists(path)
    if got is False:
        return True
    if got is None:
        log.line("warning: unable to stat %s" % rel("bounce", msgid))
        return False
    reason = bounce.discard_reason(sender, settings)
    if reason:
        log.line("%s %s" % (reason, rel("bounce", msgid)))
    else:
        try:
            with open(path, "rb") as f:
                text = f.read()
            with open(layout.mess_path(home, msgid, sched.split), "rb") as f:
                mess = f.read()
        except OSError:
            log.line("warning: unable to read %s; will try again later" % rel("bounce", msgid))
            return False
        message = bounce.compose(now, sender, text, mess, settings)
        code, qp = sched.injector.inject(message, *bounce.envelope(sender, settings))
        if code is None:
            log.line("warning: unable to start qmail-queue, will try later")
            return False
        if code != 0:
            log.line("warning: trouble injecting bounce message, will try later")
            return False
        log.line("bounce msg %d qp %d" % (msgid, qp))
    try:
        os.unlink(path)
    except OSError:
        log.line("warning: unable to unlink %s" % rel("bounce", msgid))
        return False
    return True
