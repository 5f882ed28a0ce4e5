"""STARTTLS for qmail-remote: control/tlsdestinations, the TLS context, what the report says.

Levels (Postfix's words), per destination (qmail-remote's host argument:
the recipients' domain, or the IP literal):
  may      (default) STARTTLS when the peer offers it; the certificate is
           checked against the system CAs and the MX host's name, and the
           result goes into the report. A certificate that does not verify:
           the delivery is made again over a new connection with TLS but
           without the check (the report says why it did not verify). A
           handshake that fails otherwise: again over a new connection,
           without TLS (the report says so), where a 530 (RFC 3207's "Must
           issue a STARTTLS command first") to MAIL or RCPT is a deferral,
           not a bounce: the next try may get TLS through, and the TLS patch
           would have deferred at the handshake. Not offered: plaintext, as qmail.
  verify   TLS is required and the certificate must verify (system CAs, or
           the CA file of the line) for the host name qmail-remote connected
           to (the MX host, the smtproutes relay, or the literal's address).
  encrypt  TLS is required, any certificate (checked and reported as `may`).
  none     no STARTTLS even when offered.
A required TLS that cannot be had is never a plaintext fall-back: that
address fails with a Z report and the next address is tried; the last such
report is the message report when no address delivers (a deferral).

control/tlsdestinations, one destination a line ('#' comments as lists):
  example.com                  verify, system CAs
  example.com:/etc/ssl/ca.pem  verify, with the CAs of that file
  -example.com                 encrypt
  !example.com                 none
  .example.com                 every host below example.com (prefixes as above)
  example.com.                 the same as example.com (a final '.' is dropped, here and from the host)
  [IPv6:2001:db8::25]          an IP-literal destination (its colons are not the CA file's)
  *                            every destination not listed otherwise
Lookup as smtproutes' (routes.lookup): the whole host (a final '.' dropped:
`example.com.` is example.com to DNS), then each '.'-suffix, then '*'; the first key found decides; an IDN key may be written with U-labels
or A-labels (routes.table_key). The qmail TLS patch's other controls:
control/tlsclientciphers (an OpenSSL cipher string) and control/clientcert.pem
(certificate and key shown to servers that ask). ssl is imported only when a
peer offers STARTTLS or a destination requires TLS.
"""
from qmailpy.remote import report as R
from qmailpy.remote.routes import lookup, split_colon, table_key

MAY, VERIFY, ENCRYPT, NONE = "may", "verify", "encrypt", "none"
REQUIRED = (VERIFY, ENCRYPT)


class Policy:
    """One destination's level, the CA file of a `verify` line (None: the system CAs)."""
    __slots__ = ("level", "cafile")

    def __init__(self, level=MAY, cafile=None):
        self.level, self.cafile = level, cafile

    def __eq__(self, other):
        return isinstance(other, Policy) and (self.level, self.cafile) == (other.level, other.cafile)

    def __repr__(self):
        return "Policy(%r, %r)" % (self.level, self.cafile)


DEFAULT = Policy()


def destination(line):
    """(level, destination as written, CA file) of one control/tlsdestinations entry (a str, as
    the control reader gives it), as bytes; the destination is b"" for a line that names none. qmail-showctl --check reads
    the lines with it too."""
    line = line.encode("utf-8", "surrogateescape").strip()
    level = {b"!": NONE, b"-": ENCRYPT}.get(line[:1])
    if level is not None:
        line = line[1:]
    dest, colon, cafile = split_colon(line)          # [IPv6:...]: its colons are the address's
    if dest.endswith(b".") and dest.strip(b"."):     # an absolute name: the domain (policy_for)
        dest = dest[:-1]
    if level is None:
        level = VERIFY
    return level, dest, cafile.strip() if level == VERIFY else b""


def parse_destinations(lines):
    """{lower-case destination: Policy} from control/tlsdestinations' entries (str)."""
    table = {}
    for line in lines:
        level, dest, cafile = destination(line)
        if dest:
            table[b"" if dest == b"*" else table_key(dest)] = Policy(level, cafile.decode("utf-8", "surrogateescape") or None)
    return table


def policy_for(table, host):
    """The Policy for a destination (MAY when nothing matches). A final '.' (an absolute name,
    the same domain to DNS) does not count: `example.com.` is held to `example.com`'s line."""
    if not table:
        return DEFAULT
    if host.endswith(b".") and host.strip(b"."):
        host = host[:-1]
    return lookup(table, host) or DEFAULT


class Trouble(Exception):
    """TLS did not work out on one connection: kind is 'verify' (the certificate), 'handshake'
    (anything else in the handshake) or 'policy' (a required TLS not offered or refused); report
    is the Z text for when TLS was required."""

    def __init__(self, kind, reason, report):
        super().__init__(reason)
        self.kind, self.reason, self.report = kind, reason, report


class Plan:
    """How one connection uses TLS: use it or not, check the certificate or not, the notes
    of the earlier connections to the same address for the report."""
    __slots__ = ("policy", "hostname", "settings", "use", "verify", "note")

    def __init__(self, policy, hostname, settings, use=None, verify=True, note=b""):
        self.policy, self.hostname, self.settings = policy, hostname, settings
        self.use = policy.level != NONE if use is None else use
        self.verify, self.note = verify, note

    @property
    def required(self):
        return self.policy.level in REQUIRED

    @property
    def fell_back(self):
        """Without TLS only because a handshake failed (after()), not by policy."""
        return not self.use and self.policy.level != NONE

    def after(self, trouble):
        """The plan for a new connection after `trouble`, or None: a required TLS failed."""
        if trouble.kind == "verify" and self.policy.level != VERIFY and self.verify:
            return Plan(self.policy, self.hostname, self.settings, True, False,
                        b"certificate not verified: " + text(trouble.reason))
        if trouble.kind == "handshake" and not self.required:
            return Plan(self.policy, self.hostname, self.settings, False, False,
                        b"handshake failed (" + text(trouble.reason) + b"), sent without TLS")
        return None

    def context(self):
        """The ssl.SSLContext for this connection (R.Stop on a control that cannot be used)."""
        from qmailpy.ctl.reader import ControlError
        try:
            return client_context(self.settings, self.verify, self.policy.cafile if self.verify else None)
        except ControlError as e:
            raise R.Stop(R.control(e)) from None


def text(reason):
    """A reason (str: an exception's text, a host name) as report bytes: printable ASCII only,
    at most 200 characters, no final '.'."""
    out = "".join(c if " " <= c <= "~" else "?" for c in str(reason))[:200]
    return out.rstrip(". ").encode("ascii")


def client_context(settings, verify, cafile):
    """An SSLContext: the CAs (cafile, else the system's) and host name checked when verify;
    control/tlsclientciphers and control/clientcert.pem applied. A control that cannot be used is a
    ControlError naming it (qmail-remote's Z report; qmail-showctl --check asks the same)."""
    import ssl
    from qmailpy.ctl.reader import ControlError
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    where = "control/tlsdestinations"
    try:
        if verify:
            if cafile:
                ctx.load_verify_locations(cafile)
            else:
                ctx.load_default_certs()
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        where = "control/tlsclientciphers"
        if settings.get("tlsclientciphers"):
            ctx.set_ciphers(settings["tlsclientciphers"])
        where = "control/clientcert.pem"
        if settings.get("clientcert"):
            ctx.load_cert_chain(settings["clientcert"])
    except (OSError, ssl.SSLError, ValueError) as e:
        detail = "%s: %s" % (cafile, e) if where == "control/tlsdestinations" else e
        raise ControlError(where, 0, "unusable: %s" % detail) from None
    return ctx


def handshake_trouble(e, conn, plan):
    """Trouble for an exception of the handshake (ssl.SSLError, OSError)."""
    import ssl
    if isinstance(e, ssl.SSLCertVerificationError):
        reason = e.verify_message or e.reason or str(e)
        return Trouble("verify", reason, R.tls_unverified(conn.partner, text(reason)))
    reason = getattr(e, "reason", None) or e.strerror or str(e) or type(e).__name__
    return Trouble("handshake", reason, R.tls_handshake(conn.partner, text(reason)))


def describe(sock, plan):
    """The report line for a connection now under TLS."""
    version = (sock.version() or "TLS").encode("ascii", "replace")
    cipher = (sock.cipher() or ("?",))[0].encode("ascii", "replace")
    if plan.verify:
        check = b"certificate verified for " + text(plan.hostname)
    else:
        check = plan.note or b"certificate not verified"
    return b"TLS: " + version + b" " + cipher + b", " + check + b".\n"
