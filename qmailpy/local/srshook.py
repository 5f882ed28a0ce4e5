"""SRS for forwards: qmail-local's mailforward() sends with an SRS sender.

As qmail-srs's srsforward(NEWSENDER) just before qmail_from(): forward.py
calls forward_sender() with the sender qmail-local would use and the delivery
environment; the qmail home comes from $QMAILHOME (else /var/qmail) and
control/srs/ decides (qmailpy.srs.rewrite.forward, docs/srs.md). No secrets
in control/srs/srs_secrets = SRS off: the sender goes out unchanged, and
nothing is logged. A control file that exists but cannot be read is a
temporary failure, "Unable to read controls (#4.3.0)" (exit 111), as the
qmail-srs qmail-local's die_control().
"""
from qmailpy.local import errors

CONTROLS_UNREADABLE = "Unable to read controls (#4.3.0)"


def forward_sender(sender, environ, now=None):
    """The envelope sender for a forward: SRS-rewritten when control/srs/ says so."""
    if not sender or sender == "#@[]":
        return sender                       # bounces stay bounces; nothing to read
    import time
    from qmailpy import paths
    from qmailpy.ctl.reader import ControlError, Controls
    from qmailpy.srs import rewrite
    controls = Controls(paths.qmailhome(environ))
    try:
        return rewrite.forward(sender, controls, time.time() if now is None else now)
    except ControlError:
        raise errors.temp(CONTROLS_UNREADABLE) from None
