"""qmail-send's cleanup_do(): old mess/ files nobody owns any more go to qmail-clean.

A message file older than OSSIFIED (36 h) with neither info/ nor todo/ is
what a crash left (a killed qmail-queue, or a kill between "end msg" and
qmail-clean's foop). qmail-send can see info/ and todo/ (qmail-clean, as
qmailq, may not), so it decides and qmail-clean unlinks intd/ and mess/.
Runs at start and every SLEEP_CLEANUP seconds.
"""
import os

from qmailpy import paths
from qmailpy.clean import wire as clean_wire
from qmailpy.queue import layout
from qmailpy.send import queuefiles as qf


def stale_ids(home, now, split=layout.SPLIT, ossified=layout.OSSIFIED):
    """Ids of mess/ files unused for `ossified` seconds with no info/ nor todo/."""
    for n in range(split):
        try:
            names = os.listdir(paths.queue_path(home, "mess", str(n)))
        except OSError:
            continue
        for name in names:
            if not name.isdigit():
                continue
            msgid = int(name)
            try:
                st = os.stat(layout.mess_path(home, msgid, split))
            except OSError:
                continue                     # probably qmail-queue removed it
            if now <= max(st.st_atime, st.st_mtime) + ossified:
                continue
            if qf.exists(layout.info_path(home, msgid, split)) is not False:
                continue
            if qf.exists(layout.todo_path(home, msgid)) is not False:
                continue
            yield msgid


def cleanup(sched, now):
    """Have qmail-clean remove every stale message file."""
    for msgid in stale_ids(sched.home, now, sched.split):
        if sched.cleaner.request(clean_wire.FOOP, msgid) != clean_wire.OK:
            sched.log.line("warning: qmail-clean unable to clean up foop/%d" % msgid)
