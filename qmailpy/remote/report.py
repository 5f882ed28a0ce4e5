"""Every report qmail-remote prints for qmail-rspawn, with notqmail's exact texts.

Framing (reference 3.3): zero or more recipient reports (`r`, or `h`/`s` +
text) then one message report (`K`/`Z`/`D` + text), each ended by "\\0".
Texts come from qmail-remote.c and keep its line breaks; the SMTP server's
last reply follows as "Remote host said: ..." with CRs removed and NULs
shown as "?". A run ends by raising Stop with the message report.
"""
from qmailpy.proto.dotstuff import PARTIAL_LINE


class Stop(Exception):
    """The message report that ends the run (without its "\\0")."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


USAGE = b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n"
CHDIR = b"ZUnable to switch to home directory. (#4.3.0)\n"
NOIP = b"Zinvalid ipaddr in control/outgoingip (#4.3.0)\n"      # outgoingip patch
READ = b"ZUnable to read message. (#4.3.0)\n"
OSERR = b"ZSystem resources temporarily unavailable. (#4.3.0)\n"
NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
DNS_SOFT = b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n"
NOMX = b"DSorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
AMBIGMX = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
           b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")
PARTIAL = b"D" + PARTIAL_LINE.encode("ascii") + b"\n"


def control(trouble):
    """CONTROL naming the file and line that could not be used (a ctl.reader.ControlError):
    qmail-remote's stderr is its report pipe, so the report is where the file is named."""
    from qmailpy.log import escape
    return b"ZUnable to read control files: %s (#4.3.0)\n" % escape(trouble).encode("utf-8", "surrogateescape")


def safe(text):
    """qmail's outsafe(): bytes outside 33..126 become '?'."""
    return bytes(c if 33 <= c <= 126 else 63 for c in text)


def perm_dns(host, looked_up=None):
    """NXDOMAIN/NODATA for host; an IDN adds the A-labels that were looked up (qmailpy.dns.idn)."""
    alabels = b" (" + looked_up + b")" if looked_up not in (None, host) else b""
    return b"DSorry, I couldn't find any host named " + safe(host) + alabels + b". (#5.1.2)\n"


def bad_idn(host):
    """A host name that IDNA 2008 refuses (RFC 5891): it can be neither looked up nor sent."""
    return (b"DSorry, the host name " + safe(host) + b" is not a valid internationalized domain name"
            b" (RFC 5891). (#5.1.3)\n")


def said(smtptext):
    """The "Remote host said: " tail; nothing when the server said nothing."""
    if not smtptext:
        return b""
    return b"Remote host said: " + smtptext.replace(b"\0", b"?")


def dropped(partner, critical):
    """The connection died or timed out; after the final dot the message may have arrived."""
    dup = b"Possible duplicate! " if critical else b""
    return b"ZConnected to " + partner + b" but connection died. " + dup + b"(#4.4.2)\n"


def finished(prepend, partner, append, smtptext, tls=b""):
    """qmail's quit(): e.g. K + "1.2.3.4" + " accepted message" + ".\\n" + the reply; a
    connection that used (or tried) TLS adds its "TLS: ..." line before the reply."""
    return prepend + partner + append + b".\n" + tls + said(smtptext)


# -- TLS (remote.tls): a required TLS that failed on one connection
def tls_not_offered(partner, dest):
    return (b"ZConnected to " + partner + b" but it does not offer STARTTLS, which control/tlsdestinations"
            b" requires for " + safe(dest) + b". (#4.7.10)\n")


def tls_refused(partner, dest, smtptext):
    return (b"ZConnected to " + partner + b" but STARTTLS was refused, and control/tlsdestinations"
            b" requires TLS for " + safe(dest) + b". (#4.7.10)\n" + said(smtptext))


def tls_handshake(partner, reason):
    return b"ZConnected to " + partner + b" but the TLS handshake failed: " + reason + b". (#4.7.5)\n"


def tls_unverified(partner, reason):
    return b"ZConnected to " + partner + b" but its TLS certificate did not verify: " + reason + b". (#4.7.5)\n"


def smtputf8(partner):
    """A non-ASCII envelope address and a peer without SMTPUTF8 (RFC 6531 3.4): a bounce."""
    return (b"DConnected to " + partner + b" but it does not support SMTPUTF8, which a non-ASCII"
            b" address needs. (#5.6.7)\n")


def recipient(code, partner, smtptext):
    """The report for one RCPT reply: r (accepted), h (5xx) or s (4xx) with the reply."""
    if code < 400:
        return b"r"
    kind = b"h" if code >= 500 else b"s"
    return kind + partner + b" does not like recipient.\n" + said(smtptext)
