"""qmail-send's own sender rewriting (VERP, bounces) and its Rewriter with SRS.

The recipient rewriting itself is qmailpy.addr.rewrite (shared with
qmail-queue's filter keys and qmail-lspawn).
"""
from qmailpy.addr.rewrite import Rewriter


def rewriter(controls):
    """qmail-todo's and qmail-send's Rewriter: the controls' rewriting, with SRS reversal when SRS is on."""
    from qmailpy.send import srsmap
    return Rewriter.from_controls(controls, srsmap.from_controls(controls))


def verp_sender(sender, recip):
    """senderadd(): a VERP sender `owner-@host-@[]` becomes `owner-box=host@host` per recipient."""
    sender, recip = bytes(sender), bytes(recip)
    if sender.endswith(b"-@[]"):
        i = len(sender)
        j = sender.rfind(b"@", 0, i - 4)
        k = recip.rfind(b"@")
        if k >= 0 and j >= 0 and j + 5 <= i:
            return sender[:j] + recip[:k] + b"=" + recip[k + 1:] + b"@" + sender[j + 1:i - 4]
    return sender


def bounce_sender(sender):
    """injectbounce(): a VERP sender `owner-@host-@[]` is bounced to `owner-@host`."""
    sender = bytes(sender)
    if sender.endswith(b"-@[]"):
        return sender[:-4]
    return sender
