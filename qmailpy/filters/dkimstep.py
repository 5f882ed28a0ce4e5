"""qmail-queue's DKIM step (control/dkimverify): verify, add Authentication-Results, in place.

It runs first in the filter step (filters.select.content_filter), for mail
that came in over SMTP (qmail-queue started by qmail-smtpd: $TCPREMOTEIP
set; a local injection or a forward has nothing to verify against). The
staged mess file is rewritten in place (qmail-queue's Received line kept,
then the new field, then the message) and fsynced again before intd/ is
made, so clamd, spamd (which sees the field) and the queue entry all get
the same bytes; a failure here is qmail-queue's write error (53) and the
usual rollback. One log line per message: `dkim: dkim=pass ... spf=...`.
"""
import os
import time

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError


def _read(staged):
    try:
        with open(staged.mess_path, "rb") as f:
            f.seek(len(staged.head))
            return f.read()
    except OSError as e:
        raise QueueError(X.QQ_READ_ERROR, "unable to read mess: %s" % (e.strerror or e)) from None


def _rewrite(staged, data):
    """The mess file from after qmail-queue's Received line on becomes data; fsynced."""
    fd, offset = staged.mess_fd, len(staged.head)
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
        os.ftruncate(fd, offset)
        os.fsync(fd)
    except OSError as e:
        raise QueueError(X.QQ_WRITE_ERROR, "unable to write mess: %s" % (e.strerror or e)) from None


def came_over_smtp(controls):
    """Was qmail-queue started by qmail-smtpd under tcpserver ($TCPREMOTEIP)?"""
    return bool((controls.environ or {}).get("TCPREMOTEIP"))


def run(staged, controls, log):
    """Verify the staged message and put the Authentication-Results field into it."""
    from qmailpy.dkim import verify
    from qmailpy.dns.resolver import Resolver
    environ = controls.environ or {}
    try:
        me = controls.value("me")
        resolver = Resolver(environ).until(time.monotonic() + verify.LOOKUP_TIME)

        def checked(received):
            return verify.smtpd_checked_spf(environ, controls, received)
        message, results = verify.authenticate(_read(staged), staged.sender, me, resolver, checked)
    except OSError as e:                 # ctl.reader.ControlError (spfbehavior, me), resolv.conf
        raise QueueError(X.QQ_CONFIG, "unable to read controls: %s" % e) from None
    _rewrite(staged, message)
    log("dkim: " + "; ".join(r.text() for r in results))
