"""qmail-send's cleanup_do(): old mess/ files nobody owns any more go to qmail-clean.

A message file older than OSSIFIED (36 h) with neither info/ nor todo/ is
what a crash left (a killed qmail-queue, or a kill between "end msg" and
qmail-clean's foop). qmail-send can see info/ and todo/ (qmail-clean, as
qmailq, may not), so it decides and qmail-clean unlinks intd/ and mess/.
Runs at start and every SLEEP_CLEANUP seconds; the rule is qmailpy.queue.clean's.
"""
from qmailpy.proto import cleanwire as clean_wire
from qmailpy.queue import clean


def cleanup(sched, now):
    """Have qmail-clean remove every stale message file."""
    for msgid in clean.stale_mess_ids(sched.home, now, sched.split):
        if sched.cleaner.request(clean_wire.FOOP, msgid) != clean_wire.OK:
            sched.log.line("warning: qmail-clean unable to clean up foop/%d" % msgid)
