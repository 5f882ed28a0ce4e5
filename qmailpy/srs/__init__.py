"""Sender Rewriting Scheme: `codec` (pure SRS0/SRS1 arithmetic, Mail::SRS and
libsrs2 compatible), `rewrite` (the policy over control/srs/*) and `keys`
(the key files setsrssecret maintains). See docs/srs.md.

Nothing is imported here: qmail-smtpd imports qmailpy.srs.codec on SRS
recipients only, and must not pay for the rest.
"""
