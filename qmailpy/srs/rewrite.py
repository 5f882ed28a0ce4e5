"""SRS policy over a qmail home's controls: which senders to rewrite, how to read SRS recipients.

forward(sender, controls, now)   -> the envelope sender for a forward
reverse(recipient, controls, now) -> Reversed(status, original), status one of
                                     OK, BAD_HASH, EXPIRED, NOT_SRS

Controls (control/srs/, see docs/srs.md): srs_domain (default: me),
srs_secrets (newest first; the first signs), revers_srs_secrets (newest
first; all are tried on the way back), srs_max_age (seconds, default
2592000 = 30 days, rounded up to whole days because SRS timestamps count
days). No secrets = SRS is off: forward() returns the sender unchanged and
reverse() says NOT_SRS, without logging anything. An unreadable control file
raises qmailpy.ctl.reader.ControlError (the caller's temporary failure).

The qmail-srs patch's srs_hashlength, srs_hashmin, srs_separator and
srs_alwaysrewrite are not among H-Sphere's controls: their libsrs2 defaults
(4, 4, '=', 0) are the codec's own (docs/srs.md).
"""
from qmailpy.ctl import rcpthosts
from qmailpy.srs import codec

OK, BAD_HASH, EXPIRED, NOT_SRS = "ok", "bad-hash", "expired", "not-srs"


class Reversed(tuple):
    """(status, original address or None); .error is the libsrs2 text when not OK."""

    def __new__(cls, status, address=None, error=None):
        self = tuple.__new__(cls, (status, address))
        self.error = error
        return self

    @property
    def status(self):
        return self[0]

    @property
    def address(self):
        return self[1]


def _fold(s):
    return codec.lower(s)


def is_local(address, controls):
    """True when the domain of `address` is ours: rcpthosts and morercpthosts.cdb (qmail's
    rcpthosts(), qmailpy.ctl.rcpthosts: the rule qmail-smtpd's relay control uses), locals,
    or virtualdomains (the address, the domain, a parent '.domain'; an empty prefix means
    "not virtual"; the catch-all ':prefix' line is not taken to make every domain ours).
    A missing rcpthosts lists nothing here (qmail-smtpd reads it as "accept all", which
    would turn SRS off), and then morercpthosts.cdb is not read, as qmail does not."""
    domain = _fold(address.rpartition("@")[2])
    if domain in {_fold(d) for d in controls.value("locals")}:
        return True
    hosts = rcpthosts.hosts(controls)
    if hosts is not None and rcpthosts.ours(hosts, controls.value("morercpthosts.cdb"), address):
        return True
    vdoms = {}
    for line in controls.value("virtualdomains"):
        key, colon, prefix = line.partition(":")
        if colon and key:
            vdoms[_fold(key)] = prefix        # constmap: the last line wins
    if vdoms:
        keys = [_fold(address), domain] + [domain[i:] for i, ch in enumerate(domain) if ch == "."]
        for key in keys:
            if key in vdoms:
                return bool(vdoms[key])
    return False


def needs_rewrite(sender, controls):
    """False for what forward() leaves alone: <>, #@[], VERP/[] senders, no '@',
    and local senders that are not already SRS."""
    if not sender or sender == "#@[]":
        return False
    local, at, host = sender.rpartition("@")
    if not at or not host or host == "[]":
        return False
    if not codec.is_srs(local) and is_local(sender, controls):
        return False
    return True


def forward(sender, controls, now):
    """The sender a forward leaves with: SRS0 (or SRS1 for an SRS sender) at srs_domain.

    Unchanged when SRS is off (no srs_secrets), for senders needs_rewrite()
    refuses, for senders already at srs_domain, and for senders SRS cannot
    express (a local part with '@').
    """
    secrets = controls.value("srs/srs_secrets")
    if not secrets or not needs_rewrite(sender, controls):
        return sender
    domain = controls.value("srs/srs_domain")
    if not domain:
        return sender
    try:
        return codec.forward(sender, domain, secrets, now)
    except codec.SRSError:
        return sender


def reverse(recipient, controls, now):
    """Reversed(status, original) for an SRS recipient, trying every revers_srs_secrets key.

    OK: original is the address to deliver to (for SRS1, the inner SRS0 address
    at its first host). EXPIRED: the hash is ours but older than srs_max_age.
    BAD_HASH: it is SRS-shaped but not ours (forged, mangled, no key fits or a
    field is missing). NOT_SRS: the local part is not SRS0/SRS1, or SRS is off
    (no revers_srs_secrets). The domain part is not looked at: the caller
    decides which domains carry SRS recipients.
    """
    local = recipient.rpartition("@")[0] if "@" in recipient else recipient
    if not codec.is_srs(local):
        return Reversed(NOT_SRS, None, codec.NOT_SRS)
    secrets = controls.value("srs/revers_srs_secrets")
    if not secrets:
        return Reversed(NOT_SRS, None, codec.NO_SECRETS)
    days = codec.max_age_days(controls.value("srs/srs_max_age"))
    try:
        original = codec.reverse(recipient, secrets, now, max_age_days=days)
    except codec.SRSError as e:
        return Reversed(EXPIRED if e.expired else BAD_HASH, None, str(e))
    return Reversed(OK, original)
