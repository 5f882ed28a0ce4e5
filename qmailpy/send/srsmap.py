"""SRS in qmail-send: forwards leave with an SRS sender; bounces to SRS addresses come home.

SrsForwarder (qmail-send, remote deliveries): a sender that is not one of
ours (rcpthosts, locals, virtualdomains) and not null is rewritten to
SRS0/SRS1 under srs_domain with the newest srs_secrets key, for the remote
delivery only: local deliveries and the bounce keep the original sender.
That covers .qmail forwards and aliases to remote addresses. setsrssecret
replaces srs/srs_secrets from cron, with no SIGHUP: when that file has changed
(one stat per remote delivery) the controls are read again, so the newest key
signs, as in qmail-srs, whose qmail-local (a new process per forward) read the
keys each time; a key setsrssecret has since dropped never signs.

SrsReverser (qmail-todo):
A recipient SRS0=/SRS1=...@srs_domain that reverses with a key of
revers_srs_secrets is replaced by the original address (qmail-smtpd already
refused forged ones at RCPT). An expired one is dropped without a bounce, as
the H-Sphere spec says ("dropped without ceremony"), and logged. So is one
that comes with a sender (NOT_BOUNCE): an SRS address is a bounce path, and
qmail-srs's srsfilter drops such mail ("SENDER must be empty", exit 0), or
anyone holding one of our SRS addresses could relay through us to the
original sender with any sender. Anything else is left alone.
"""
import time

from qmailpy.ctl.reader import Controls
from qmailpy.ctl.watch import stamp
from qmailpy.srs.codec import at_domain
from qmailpy.srs.rewrite import EXPIRED, OK, forward, reverse

NOT_BOUNCE = "not-bounce"          # ours, but the message has a sender: dropped as srsfilter does
KEYS = "srs/srs_secrets"


class SrsForwarder:
    def __init__(self, controls, clock=time.time):
        self.controls, self.clock = controls, clock
        self.keys = stamp(controls.path(KEYS))

    def __call__(self, sender):
        """The envelope sender (bytes) for a remote delivery."""
        keys = stamp(self.controls.path(KEYS))
        if keys != self.keys:           # setsrssecret made a new key: read the controls again
            self.keys, self.controls = keys, Controls(self.controls.home, self.controls.environ)
        text = sender.decode("utf-8", "surrogateescape")
        return forward(text, self.controls, self.clock()).encode("utf-8", "surrogateescape")


class SrsReverser:
    def __init__(self, controls, clock=time.time):
        self.controls, self.clock = controls, clock
        self.domain = controls.value("srs/srs_domain")

    def __call__(self, recip, sender):
        """(OK, original bytes), (EXPIRED, None), (NOT_BOUNCE, None) or (None, None) for one
        recipient of a message from `sender` (bytes)."""
        text = recip.decode("utf-8", "surrogateescape")
        if not at_domain(text, self.domain):          # the rule qmail-smtpd's RCPT uses
            return None, None
        got = reverse(text, self.controls, self.clock())
        if sender and got.status in (OK, EXPIRED):
            return NOT_BOUNCE, None
        if got.status == OK:
            return OK, got.address.encode("utf-8", "surrogateescape")
        if got.status == EXPIRED:
            return EXPIRED, None
        return None, None


def from_controls(controls):
    """An SrsReverser when SRS is configured (revers_srs_secrets has keys), else None."""
    return SrsReverser(controls) if controls.value("srs/revers_srs_secrets") else None


def forwarder(controls):
    """The SrsForwarder; srs_secrets is read now, so a key file qmail-send cannot read stops
    it at start. Without keys it leaves every sender alone until setsrssecret makes one.
    The file is stamped before it is read: one replaced in between counts as changed."""
    forward = SrsForwarder(controls)
    controls.value(KEYS)
    return forward
