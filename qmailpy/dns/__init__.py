"""The one DNS resolver of qmailpy (qmail-remote now, qmail-smtpd's checks later).

`servers` finds the name servers ($DNSCACHEIP, else /etc/resolv.conf),
`resolver` asks them and classifies answers as qmail's dns.c does, `mxip`
turns a mail domain into the ordered address list qmail-remote tries.
Nothing here imports dnspython at module import: only a Resolver's methods
do, so qmail-smtpd pays for it only on the connections that ask DNS.
"""
