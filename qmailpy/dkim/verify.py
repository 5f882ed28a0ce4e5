"""Verify a message's DKIM signatures and write its Authentication-Results field (RFC 8601).

Each DKIM-Signature (the first MAX_SIGNATURES) gets one result:
  pass       the signature verifies
  fail       it does not: the body hash or the signature does not match
  permerror  the signature cannot be used (a header line dkimpy cannot parse, a missing or bad tag, expired,
             i= outside d=), the selector has no key, or the key is unusable
             (revoked, malformed, under 1024 bits, past OpenSSL's RSA bounds: rsa_bounds())
  temperror  the key lookup failed softly (SERVFAIL, time-out): try later
and `dkim=none` stands for a message without signatures. Keys are looked up
with qmailpy's resolver ($DNSCACHEIP), all lookups of one message within
LOOKUP_TIME seconds.

SPF: qmail-smtpd writes the qmail-spf patch's `Received-SPF:` right after
its own `Received:` line, and qmail-queue puts its Received line above
both. Only a Received-SPF in that place is ours, and only when qmail-smtpd
says it checked SPF for this message: it sets $SPFRESULT (the result word)
for the queue program then, and only then (not for clients that may relay:
RELAYCLIENT, AUTH, relayclients, relaydomains, POP-before-SMTP; not with
spfbehavior 0). Otherwise the field has no spf= part: a Received-SPF the
client wrote itself (one where ours would be, when we wrote none) is never
taken.

The field, with authserv-id = control/me, goes on top of the message
(under qmail-queue's own Received line); Authentication-Results fields that
already carry our authserv-id are forgeries (RFC 8601 5) and are removed.
"""
from qmailpy.proto.headers import spans, unfold

MAX_SIGNATURES = 8
RSA_MAX_MODULUS_BITS, RSA_SMALL_MODULUS_BITS, RSA_MAX_PUBEXP_BITS = 16384, 3072, 64     # OpenSSL's
LOOKUP_TIME = 20
SPF_RESULTS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral", "none": "none",
               "unknown": "permerror", "error": "temperror",        # qmail-spf rc5's words
               "permerror": "permerror", "temperror": "temperror"}
SPECIALS = frozenset(b'()<>,;:\\"[] \t=')      # quoted in any property value
TSPECIALS = SPECIALS | frozenset(b"/?@")         # RFC 2045's, quoted in a value that is no address


class Result:
    """One method's result: method (dkim/spf), result word, reason, [(property, value)]."""
    __slots__ = ("method", "result", "reason", "props")

    def __init__(self, method, result, reason="", props=()):
        self.method, self.result, self.reason, self.props = method, result, reason, list(props)

    def __repr__(self):
        return "Result(%r, %r, %r, %r)" % (self.method, self.result, self.reason, self.props)

    def text(self):
        out = "%s=%s" % (self.method, self.result)
        if self.reason:
            out += " reason=" + quoted(self.reason)
        for prop, value in self.props:
            out += " %s=%s" % (prop, pvalue(value))
        return out


def quoted(text):
    """A quoted-string of printable ASCII."""
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pvalue(text):
    """A property value (RFC 8601 pvalue): as it is when it is an RFC 2045 token or an address
    without specials, else quoted ('/' is a tspecial: a header.b prefix may hold one)."""
    data = text.encode("utf-8", "replace")
    specials = SPECIALS if b"@" in data else TSPECIALS
    if data and all(0x20 < c < 0x7f and c not in specials for c in data):
        return text
    return quoted(text)


# -- DKIM
def _tags(value):
    """A DKIM-Signature's tags as {name: value} (bytes), best effort, for the result's properties."""
    out = {}
    for part in value.split(b";"):
        name, eq, val = part.partition(b"=")
        if eq:
            out[name.strip().lower()] = b"".join(val.split())
    return out


def _props(tags):
    props = []
    for tag, prop in ((b"d", "header.d"), (b"s", "header.s")):
        if tags.get(tag):
            props.append((prop, tags[tag].decode("ascii", "replace")))
    if tags.get(b"b"):
        props.append(("header.b", tags[b"b"][:8].decode("ascii", "replace")))
    return props


def key_record(resolver, name):
    """(status, record bytes or reason) for a selector's key: ok, hard (no key) or soft."""
    from qmailpy.dns.resolver import HARD, OK
    got = resolver.txt(name)
    if got.status == OK and got.values:
        return OK, got.values[0].encode("utf-8", "surrogateescape")
    if got.status in (HARD, OK):
        return HARD, "no key for signature"
    return got.status, "key lookup failed: %s" % (got.reason or "soft error")


def rsa_bounds(pk):
    """Why an RSA key is past what OpenSSL's RSA public operation takes, or None: a modulus of
    at most 16384 bits, an exponent below it and, over 3072 bits, of at most 64 bits (rsa.h's
    OPENSSL_RSA_MAX_MODULUS_BITS, _SMALL_MODULUS_BITS, _MAX_PUBEXP_BITS). dkimpy checks only a
    minimum, and its verification is Python's pow(): a key record of a 16384-bit modulus and
    exponent took 10 s of CPU per signature (with the GIL: all of qmail-queued), longer ones
    hours."""
    if not isinstance(pk, dict):            # ed25519
        return None
    n, e = pk["modulus"], pk["publicExponent"]
    if n.bit_length() > RSA_MAX_MODULUS_BITS:
        return "modulus too large"
    if e >= n or (n.bit_length() > RSA_SMALL_MODULUS_BITS and e.bit_length() > RSA_MAX_PUBEXP_BITS):
        return "bad e value"
    return None


def verify_signature(message, index, tags, resolver):
    """The Result of the DKIM-Signature at `index` (0: the topmost)."""
    from qmailpy.dkim.lib import dkimpy
    dkim = dkimpy()
    from qmailpy.dns.resolver import OK, SOFT
    props = _props(tags)
    try:
        signer = dkim.DKIM(message)          # MessageFormatError: a header line it cannot parse
        sig = signer.verify_headerprep(index)[0]
    except (dkim.DKIMException, KeyError, ValueError) as e:
        return Result("dkim", "permerror", "signature unusable: %s" % e, props)
    name = (sig[b"s"] + b"._domainkey." + sig[b"d"]).decode("ascii", "replace")
    status, record = key_record(resolver, name)
    if status != OK:
        return Result("dkim", "temperror" if status == SOFT else "permerror", record, props)
    try:
        pk = dkim.evaluate_pk(name, record)[0]
    except (dkim.DKIMException, ValueError, IndexError) as e:
        return Result("dkim", "permerror", "key unusable: %s" % e, props)
    problem = rsa_bounds(pk)
    if problem:
        return Result("dkim", "permerror", "key unusable: %s" % problem, props)
    try:
        ok = signer.verify(index, dnsfunc=lambda _name, timeout=5: record)
    except dkim.ValidationError as e:
        reason = "body hash did not verify" if "body hash" in str(e) else str(e)
        return Result("dkim", "fail", reason, props)
    except (dkim.DKIMException, ValueError, IndexError) as e:
        return Result("dkim", "permerror", str(e), props)
    if ok:
        return Result("dkim", "pass", "", props)
    return Result("dkim", "fail", "signature did not verify", props)


def signature_values(message):
    """The values of the DKIM-Signature fields of the message's header block (the message may be
    its header alone: proto.headers.head)."""
    return [unfold(message[start:end]) for name, start, end in spans(message) if name == b"dkim-signature"]


def dkim_results(message, resolver, unverified=None):
    """[Result] for the message's DKIM signatures ([dkim=none] without any). unverified: why the
    signatures are not verified (the message given is its header block only): dkim=policy each
    (RFC 8601 2.7.1: signed, not acceptable to our policy)."""
    sigs = signature_values(message)
    if not sigs:
        return [Result("dkim", "none")]
    if unverified:
        return [Result("dkim", "policy", unverified, _props(_tags(value))) for value in sigs[:MAX_SIGNATURES]]
    return [verify_signature(message, i, _tags(value), resolver)
            for i, value in enumerate(sigs[:MAX_SIGNATURES])]


# -- SPF
def smtpd_checked_spf(environ, controls, received):
    """Did qmail-smtpd check SPF for this message? Its mark says so: $SPFRESULT, which it sets
    for the queue program only when it wrote a Received-SPF (see the module docstring)."""
    return bool(environ.get("SPFRESULT"))


def spf_result(message, sender, checked):
    """The Result of qmail-smtpd's Received-SPF, or None when there is none of ours.

    message starts at qmail-smtpd's Received line (qmail-queue's is not part
    of it); checked(received field bytes) says whether qmail-smtpd checked SPF.
    """
    fields = []
    for name, start, end in spans(message):
        fields.append((name, message[start:end]))
        if len(fields) == 2:
            break
    if len(fields) < 2 or fields[0][0] != b"received" or fields[1][0] != b"received-spf":
        return None
    if not fields[0][1].startswith(b"Received: from ") or not checked(fields[0][1]):
        return None
    value = unfold(fields[1][1]).decode("ascii", "replace")
    word = value.split(None, 1)[0].lower() if value.split() else ""
    result = SPF_RESULTS.get(word)
    if result is None:
        return None
    if sender:
        return Result("spf", result, "", [("smtp.mailfrom", sender.decode("utf-8", "replace"))])
    at = value.rfind("helo=")
    helo = value[at + 5:].split(";")[0].strip() if at >= 0 else ""
    return Result("spf", result, "", [("smtp.helo", helo)] if helo else [])


# -- the field
def header_field(authserv_id, results):
    """The Authentication-Results field (LF line ends, folded one result a line)."""
    parts = ["Authentication-Results: " + authserv_id]
    parts += [r.text() for r in results]
    return (";\n\t".join(parts) + "\n").encode("utf-8", "replace")


def authserv_of(value):
    """The authserv-id of an Authentication-Results value (bytes), lower-cased, a quoted-string
    unquoted (RFC 8601 2.2)."""
    import re
    head = value.split(b";", 1)[0]
    # drop comments: each "(" through the next ")" (or the end) is a space, in one pass: a client's
    # field of a million "()" made a loop that cut one at a time quadratic
    head = re.sub(rb"\([^)]*\)?", b" ", head).strip()
    if head.startswith(b'"'):             # a quoted-string: authserv-id is an RFC 2045 value
        quoted = re.match(rb'"((?:[^"\\]|\\.)*)', head).group(1)
        return re.sub(rb"\\(.)", rb"\1", quoted).strip().lower()
    words = head.split()
    return words[0].lower() if words else b""


def without_ours(message, authserv_id):
    """message without the Authentication-Results fields that claim our authserv-id."""
    mine = authserv_id.encode("utf-8", "replace").lower()
    cut = [(start, end) for name, start, end in spans(message)
           if name == b"authentication-results" and authserv_of(unfold(message[start:end])) == mine]
    if not cut:
        return message
    out, pos = [], 0
    for start, end in cut:
        out.append(message[pos:start])
        pos = end
    out.append(message[pos:])
    return b"".join(out)


def authenticate(message, sender, authserv_id, resolver, checked, unverified=None):
    """(new message, [Result]): our Authentication-Results on top, forged ones of ours removed.
    Without DKIM signatures, or with `unverified` (why they are not verified: dkim_results), only
    the header block is read: given the message's first bytes through it (proto.headers.head),
    the answer is the new first bytes, the rest unchanged."""
    results = dkim_results(message, resolver, unverified)
    spf = spf_result(message, sender, checked)
    if spf is not None:
        results.append(spf)
    return header_field(authserv_id, results) + without_ours(message, authserv_id), results
