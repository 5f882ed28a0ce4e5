"""qmail-usersd: the users service. qmail-smtpd asks it about AUTH, chkuser, POP-before-SMTP and
SRS recipients over a Unix socket and gets answers, never the table (docs/qmail-usersd.md)."""
