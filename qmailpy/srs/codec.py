"""SRS0/SRS1 addresses, byte for byte as Mail::SRS (the Debian `srs` command) writes them.

Pure: no I/O, no clock (callers pass `now`), stdlib only; hmac is imported on
the first hash, so parsing an address costs nothing but this module.

The scheme (Mail::SRS::Guarded, which `srs` and libsrs2's srs_forward() use):

  forward  local@host  ->  SRS0=HHHH=TT=host=local@alias
           SRS0=HHHH=TT=host=local@hostA  ->  SRS1=GGGG=hostA==HHHH=TT=host=local@alias
           SRS1=GGGG=hostA==...@hostB      ->  SRS1=gggg=hostA==...@alias
  reverse  SRS0=HHHH=TT=host=local@...     ->  local@host     (hash, then time checked)
           SRS1=GGGG=hostA==HHHH...@...    ->  SRS0=HHHH...@hostA (hash checked)

TT is the day number (unix time // 86400) in two base32 characters
(A-Z2-7, 10 bits, so it wraps every 1024 days); HHHH is HMAC-SHA1(secret) over
the ASCII-lower-cased fields concatenated without separators (TT+host+local for
SRS0, hostA+"=HHHH=TT=host=local" for SRS1), in base64 (A-Za-z0-9+/), cut to
`hashlength` characters. Only the separator right after the tag is configurable
(= - +); every other separator is '='.

Strings are str; bytes outside ASCII travel as surrogate escapes (os.fsdecode)
and are hashed as the original bytes, unchanged by lower-casing, as Perl's lc
and libsrs2's tolower() leave them.
"""

SRS0, SRS1 = "SRS0", "SRS1"
SEPARATORS = "=-+"
SEP = "="                       # every separator but the one after the tag
HASH_LENGTH = 4                 # Mail::SRS, libsrs2 and `srs --hashlength` default
MAX_HASH = 27                   # characters of an unpadded base64 HMAC-SHA1
DAY = 86400                     # timestamp precision, seconds
SLOTS = 1024                    # 32 * 32: two base32 characters
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B32 = {c: i for i, c in enumerate(BASE32)}
_LOWER = {c: c + 32 for c in range(65, 91)}

# libsrs2 srs_strerror() texts (qmail-srs prints them after "SRS: ").
NOT_SRS = "Not an SRS address."
NO_SECRETS = "No secrets in SRS configuration."
BAD_SEPARATOR = "Invalid separator suggested."
NO_AT_SIGN = "No at sign in sender address"
NO_SRS0_HOST = "No host in SRS0 address."
NO_SRS0_USER = "No user in SRS0 address."
NO_SRS0_HASH = "No hash in SRS0 address."
NO_SRS0_STAMP = "No timestamp in SRS0 address."
NO_SRS1_HOST = "No host in SRS1 address."
NO_SRS1_USER = "No user in SRS1 address."
NO_SRS1_HASH = "No hash in SRS1 address."
BAD_TIMESTAMP_CHAR = "Bad base32 character in timestamp."
HASH_TOO_SHORT = "Hash too short in SRS address."
TIMESTAMP_OUT_OF_DATE = "Time stamp out of date."
HASH_INVALID = "Hash invalid in SRS address."
# Mail::SRS only (libsrs2 would split such a sender at its first '@').
AT_IN_USER = "Sender username may not contain an @"
# Mail::SRS::Guarded without AllowUnsafeSrs (libsrs2 has no hashless SRS1).
HASHLESS_SRS1 = "Hashless SRS1 address received when AllowUnsafeSrs is not set"


class SRSError(ValueError):
    """An address SRS cannot rewrite or reverse; str() is the libsrs2 text."""

    @property
    def expired(self):
        return self.args[0] == TIMESTAMP_OUT_OF_DATE


def lower(s):
    """ASCII-only lower case, as Perl's lc on byte strings and libsrs2's tolower()."""
    return s.translate(_LOWER)


def _bytes(s):
    return s.encode("utf-8", "surrogateescape")


def tag(local):
    """SRS0 or SRS1 when `local` starts with that tag (any case) and a separator, else None."""
    if len(local) > 4 and local[4] in SEPARATORS:
        t = local[:4].upper()
        if t == SRS0 or t == SRS1:
            return t
    return None


def is_srs(address):
    """True when the local part of `address` (or `address` itself, without '@') is SRS0/SRS1."""
    return tag(address) is not None


def at_domain(address, srs_domain):
    """Is `address` an SRS0/SRS1 address at `srs_domain` (ASCII case folded, as qmail compares
    domains)? The one rule for "an SRS address of ours": qmail-smtpd checks such a recipient
    at RCPT, qmail-todo reverses it."""
    local, at, domain = address.rpartition("@")
    return bool(at) and tag(local) is not None and lower(domain) == lower(srs_domain)


# -- timestamps

def days(now):
    """The day number of unix time `now`."""
    return int(now) // DAY


def timestamp(now):
    """Two base32 characters for the day of `now` (10 bits: wraps every 1024 days)."""
    d = days(now)
    return BASE32[(d >> 5) & 31] + BASE32[d & 31]


def timestamp_value(stamp):
    """The day counter a timestamp encodes (any case); SRSError for other characters."""
    then = 0
    for ch in stamp.upper():
        v = _B32.get(ch)
        if v is None:
            raise SRSError(BAD_TIMESTAMP_CHAR)
        then = then * 32 + v
    return then


def timestamp_ok(stamp, now, max_age_days):
    """True while `stamp` is at most `max_age_days` days old at `now`, counting across the wrap.

    As libsrs2 and Mail::SRS: now = day mod 1024, raised by 1024 until it is not
    before the stamp, so a stamp "from the future" is read as ~1024 days old.
    """
    then = timestamp_value(stamp)
    today = days(now) % SLOTS
    while today < then:
        today += SLOTS
    return today <= then + max_age_days


def max_age_days(seconds):
    """srs_max_age (seconds) as whole days, rounded up: an address lives at least that long."""
    return -(-int(seconds) // DAY)


# -- hashes

def digest(secret, *fields):
    """The full base64 HMAC-SHA1 (27 characters) of the lower-cased fields under `secret`."""
    import binascii
    import hmac
    mac = hmac.new(_bytes(secret), digestmod="sha1")
    for f in fields:
        mac.update(_bytes(lower(f)))
    return binascii.b2a_base64(mac.digest(), newline=False).decode("ascii").rstrip("=")


def make_hash(secret, fields, hashlength=HASH_LENGTH):
    return digest(secret, *fields)[:hashlength]


def hash_match(hash_, secrets, fields, hashmin=HASH_LENGTH):
    """Index of the first secret whose HMAC starts with `hash_` (case-insensitively), or -1.

    As Mail::SRS: the whole given hash is compared (so a longer hash must match
    more of the HMAC); shorter than `hashmin` never matches. Every candidate is
    compared with hmac.compare_digest on case-folded values.
    """
    import hmac
    n = len(hash_)
    if n < hashmin or n > MAX_HASH:
        return -1
    want = _bytes(lower(hash_))
    for i, secret in enumerate(secrets):
        got = digest(secret, *fields)[:n]
        if hmac.compare_digest(want, lower(got).encode("ascii")):
            return i
    return -1


# -- forward

def _check_separator(separator):
    if len(separator) != 1 or separator not in SEPARATORS:
        raise SRSError(BAD_SEPARATOR)


def split_sender(sender):
    """(local, host) split at the last '@', as Mail::SRS; SRSError when there is none."""
    local, at, host = sender.rpartition("@")
    if not at or not host:
        raise SRSError(NO_AT_SIGN)
    if "@" in local:
        raise SRSError(AT_IN_USER)
    return local, host


def alias_host(alias):
    """The domain of the alias: what follows its last '@', or the whole alias."""
    return alias.rpartition("@")[2] or alias


def forward(sender, alias, secrets, now, hashlength=HASH_LENGTH, separator=SEP,
            always_rewrite=False):
    """The SRS address for `sender` forwarded by `alias` (a domain or an address).

    `secrets` newest first; the first signs. A sender already at the alias
    host comes back unchanged unless always_rewrite. An SRS0 sender becomes
    SRS1 (no timestamp), an SRS1 sender is re-signed keeping its first host.
    An SRS1 sender without its three fields is treated as a plain local part
    (Mail::SRS would emit a broken address with warnings).
    """
    _check_separator(separator)
    if not secrets:
        raise SRSError(NO_SECRETS)
    if hashlength < 1:
        raise ValueError("hash length must be at least 1")
    local, host = split_sender(sender)
    ahost = alias_host(alias)
    if not always_rewrite and lower(ahost) == lower(host):
        return sender
    secret = secrets[0]
    t = tag(local)
    if t == SRS1:
        parts = local[5:].split(SEP, 2)
        if len(parts) == 3:
            _, srshost, srsuser = parts
            h = make_hash(secret, (srshost, srsuser), hashlength)
            return "%s%s%s%s%s%s%s@%s" % (SRS1, separator, h, SEP, srshost, SEP, srsuser, ahost)
    elif t == SRS0:
        srsuser = local[4:]                 # keeps the separator: "=HHHH=TT=host=user"
        h = make_hash(secret, (host, srsuser), hashlength)
        return "%s%s%s%s%s%s%s@%s" % (SRS1, separator, h, SEP, host, SEP, srsuser, ahost)
    ts = timestamp(now)
    h = make_hash(secret, (ts, host, local), hashlength)
    return "%s%s%s%s%s%s%s%s%s@%s" % (SRS0, separator, h, SEP, ts, SEP, host, SEP, local, ahost)


# -- reverse

def parse(address):
    """The fields of an SRS address, unchecked.

    ("SRS0", hash, stamp, host, user) or ("SRS1", hash, hostA, rest); SRSError
    when it is not SRS or a field is missing. The domain after the last '@' is
    ignored (an address without '@' is taken as a local part).
    """
    local = address.rpartition("@")[0] if "@" in address else address
    t = tag(local)
    if t is None:
        raise SRSError(NOT_SRS)
    parts = local[5:].split(SEP, 3 if t == SRS0 else 2)
    if t == SRS0:
        errors = (NO_SRS0_HASH, NO_SRS0_STAMP, NO_SRS0_HOST, NO_SRS0_USER)
    else:
        errors = (NO_SRS1_HASH, NO_SRS1_HOST, NO_SRS1_USER)
    if not parts[0]:
        raise SRSError(errors[0])
    if len(parts) < len(errors):
        raise SRSError(errors[len(parts)])
    return (t,) + tuple(parts)


def reverse(address, secrets, now, max_age_days=21, hashmin=HASH_LENGTH):
    """The address an SRS address stands for; SRSError (libsrs2 text) when it does not check.

    SRS0 -> local@host after the hash (against every secret, newest first) and
    then the timestamp (`max_age_days`, Mail::SRS/libsrs2 default 21) check out;
    SRS1 -> "SRS0<rest>@hostA" after its hash checks out. The hash is checked
    first (as Mail::SRS; libsrs2 checks the time first) so "out of date" is
    only ever said of an address we did sign.
    """
    fields = parse(address)
    if not secrets:
        raise SRSError(NO_SECRETS)
    if fields[0] == SRS1:
        _, h, srshost, srsuser = fields
        if "." in h:
            raise SRSError(HASHLESS_SRS1)
        _check_hash(h, secrets, (srshost, srsuser), hashmin)
        return SRS0 + srsuser + "@" + srshost
    _, h, stamp, host, user = fields
    _check_hash(h, secrets, (stamp, host, user), hashmin)
    if not timestamp_ok(stamp, now, max_age_days):
        raise SRSError(TIMESTAMP_OUT_OF_DATE)
    return user + "@" + host


def _check_hash(h, secrets, fields, hashmin):
    if len(h) < hashmin:
        raise SRSError(HASH_TOO_SHORT)
    if hash_match(h, secrets, fields, hashmin) < 0:
        raise SRSError(HASH_INVALID)
