"""Every SMTP reply qmail-smtpd sends, as named constants (code and tests share them).

Texts are qmail 1.03's (what H-Sphere's qmail is built on) and spamcontrol's
where the feature comes from spamcontrol. Templates use str.format fields.
"""

GREETING = "220 {greeting} ESMTP"
HELO = "250 {greeting}"
QUIT = "221 {greeting}"
OK = "250 ok"
FLUSHED = "250 flushed"
VRFY = "252 send some mail, i'll try my best"
HELP = "214 qmail home page: http://pobox.com/~djb/qmail.html"
UNIMPLEMENTED = "502 unimplemented (#5.5.1)"
SYNTAX = "555 syntax error (#5.5.4)"
MAIL_FIRST = "503 MAIL first (#5.5.1)"
RCPT_FIRST = "503 RCPT first (#5.5.1)"
GO_AHEAD = "354 go ahead"
QUEUED = "250 ok {time} qp {qp}"
LOOPING = "554 too many hops, this message is looping (#5.4.6)"
TOO_BIG = "552 sorry, that message size exceeds my databytes limit (#5.3.4)"
QQT_FAILURE = "451 qqt failure (#4.3.0)"
STRAY_LF = "451 See http://pobox.com/~djb/docs/smtplf.html."
TIMEOUT = "451 timeout (#4.4.2)"
NO_CONTROLS = "421 unable to read controls (#4.3.0)"
LINE_TOO_LONG = "500 line too long (#5.5.2)"
NUL_IN_COMMAND = "500 NUL character in command (#5.5.2)"
SESSION_DEADLINE = "421 session time limit exceeded, closing connection (#4.4.2)"
TOO_SLOW = "421 you are sending too slowly, closing connection (#4.4.2)"
INTERNAL_ERROR = "421 internal error, closing connection (#4.3.0)"
TOO_MANY_SESSIONS = "421 too many connections from your IP address, try again later (#4.3.2)"

# relay and envelope
NOT_RCPTHOSTS = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
BADMAILFROM = "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)"
TOO_MANY_RCPTS = "452 sorry, too many recipients (#4.5.3)"
NOT_FQDN = "553 sorry, fully qualified address required (#5.5.4)"
NULL_RCPT = "553 sorry, empty recipient address (#5.1.3)"
USERS_TEMPFAIL = "451 temporary failure reading the users database (#4.3.0)"
SRS_INVALID = "550 sorry, this SRS bounce address is invalid or forged (#5.1.1)"
INVALID_SENDER = "553 sorry, invalid sender address specified (#5.7.1)"
SMTPUTF8_REFUSED = "555 SMTPUTF8 not offered (#5.5.4)"

# anti-spam policy (qmailpy/policy; sources and the wording decisions: docs/antispam.md,
# docs/dnschecks.md, docs/spf.md). spamcontrol 2.6+ writes "list " + $REPLY_x + " (#...)",
# i.e. two spaces when REPLY_x is unset; qmailpy keeps the one space of stock qmail.
BADRCPTTO = "553 sorry, your envelope recipient is in my badrcptto list (#5.7.1)"
BADHELO = "550 sorry, invalid HELO/EHLO greeting (#5.7.1)"
MFDNS_HARD = "553 sorry, your envelope sender must exist (#5.7.1)"
DNS_TEMPFAIL = "451 DNS temporary failure (#4.3.0)"
BMF_UNKNOWN = "553 sorry, your mail from a host [{ip}] without valid reverse DNS was administratively denied (#5.7.1)"
RBL_LISTED = "553 {text} (#5.7.1)"
RBL_DEFAULT_TEXT = "sorry, your IP address {ip} is listed at {zone}"
SPF_TEMPFAIL = "451 SPF lookup failure (#4.3.0)"

# SMTP AUTH (spamcontrol's texts)
AUTH_USERNAME = "334 VXNlcm5hbWU6"
AUTH_PASSWORD = "334 UGFzc3dvcmQ6"
AUTH_EMPTY = "334 "
AUTH_CHALLENGE = "334 {challenge}"
AUTH_OK = "235 ok, go ahead (#2.0.0)"
AUTH_FAILED = "535 authentication failed (#5.7.1)"
AUTH_NEEDS_TLS = "538 Encryption required for requested authentication mechanism (#5.7.11)"
AUTH_LOCKOUT = "421 too many failed authentications from your IP address, try again later (#4.7.0)"
AUTH_ALREADY = "503 you're already authenticated (#5.5.0)"
AUTH_IN_MAIL = "503 no auth during mail transaction (#5.5.0)"
AUTH_EHLO_FIRST = "503 EHLO first (#5.5.1)"
AUTH_TYPE = "504 auth type unimplemented (#5.5.1)"
AUTH_CANCELED = "501 auth exchange canceled (#5.0.0)"
AUTH_MALFORMED = "501 malformed auth input (#5.5.4)"
AUTH_TEMPFAIL = "454 temporary authentication failure (#4.3.0)"
AUTH_SENDER = "553 sorry, the sender domain must match your authenticated domain (#5.7.1)"

# STARTTLS (the qmail TLS patch's texts; RFC 3207)
TLS_READY = "220 ready for tls"
TLS_SYNTAX = "501 Syntax error (no parameters allowed) (#5.5.4)"
TLS_UNAVAILABLE = "454 TLS not available: missing certificate (#4.3.0)"
TLS_INIT_FAILED = "454 TLS unable to initialize ctx (#4.3.0)"     # the controls give no context: clear goes on
TLS_ACTIVE = "503 TLS already active (#5.5.1)"
