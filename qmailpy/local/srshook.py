"""Where SRS will rewrite the envelope sender of forwarded mail (a later issue).

qmail-srs calls srsforward(NEWSENDER) in qmail-local's mailforward() just
before qmail_from(), so forwards leave with SRS0=...@srs_domain. That patch
is not applied yet: the sender goes out unchanged. Replace this function
only; forward.py calls it with the sender that qmail-local would use and
the delivery environment (QMAILHOME for control/srs_*). Raise
errors.temp(...) for "unable to read controls" / libsrs2 trouble, as
sagredo's die_control()/die_srs() exit 111.
"""


def forward_sender(sender, environ):
    """The envelope sender for a forward: `sender` itself until SRS lands."""
    return sender
