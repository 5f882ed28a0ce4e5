"""The message on fd 0 into the queue, behind $DTLINE: forward's and condredirect's qmail_open().

The queue is reached as qmail-local's forwards reach it (local.forward.queue:
qmail-queued's socket, else $QMAILQUEUE or bin/qmail-queue). fd 0 is read from
where it stands. qmail_close()'s answer ends the program: `<fatal><text>`, 100
for a permanent refusal, 111 for a temporary one; a fork refused is `<fatal>unable to
fork: <error>`, 111.
"""
import os

from qmailpy.exitcodes import PERMANENT
from qmailpy.local.helpers.strerr import die, die_sys


def resend(fatal, recipients, sender_variable):
    """Queue $DTLINE + the rest of fd 0 from $`sender_variable` (SENDER, NEWSENDER) to
    `recipients`; the qp (an int). Either variable unset: `<fatal><NAME> not set`, 100."""
    from qmailpy.local.forward import NoFork, Refused, queue
    from qmailpy.local.message import read_chunks
    sender, dtline = (os.environ.get(name) for name in (sender_variable, "DTLINE"))
    for name, value in ((sender_variable, sender), ("DTLINE", dtline)):
        if value is None:
            die(100, fatal, name + " not set")
    try:
        return queue(recipients, read_chunks(0), os.fsencode(dtline), sender, os.environ)
    except Refused as r:
        die(100 if r.kind == PERMANENT else 111, fatal, r.text)
    except NoFork as e:
        die_sys(111, fatal, "unable to fork: ", error=e)
