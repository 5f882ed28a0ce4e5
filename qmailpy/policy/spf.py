"""SPF as the qmail-spf patch (Jana Saout, rc5) does it, with pyspf evaluating records.

What comes from qmail-spf (reference section 8; sagredo-dev/qmail spf.c and
qmail-smtpd.c, whose logic is rc5's with renamed result words):
- the identity: the MAIL FROM domain, or the HELO name for MAIL FROM:<>;
- 127.0.0.1 and this host's own addresses always pass;
- spfrules (local rules) are inserted before the record's first run of
  '-', '~' or '?' mechanisms that ends in 'all' (not at all when that run is
  the record's first mechanism); a domain without a record is judged by
  spfguess followed by spfrules, and when nothing there matches the result is
  none; mechanisms of these local rules are attributed to "local policy";
- results: pass fail softfail neutral none unknown (pyspf's permerror) error
  (pyspf's temperror) -- rc5's words, which H-Sphere's qmail wrote;
- explanation: the domain's own exp= text (several TXT records make several
  lines) wins over control/spfexp; both are expanded with qmail-spf's macros
  (%{d} is the checked domain, also when local rules decided: rc5 left it empty):
  the RFC ones (%{s l o d i p v h t}, digits, 'r', delimiters, upper case =
  URL-encoded) plus %{xr} (this host, TCPLOCALHOST), %{xs} ("SPF record at
  DOMAIN" or "local policy") and %{xe} (the error text);
- Received-SPF: `<result> (<comment>) client-ip=<ip>; envelope-from=<sender>;`
  (helo=<helo>; for the HELO identity) with rc5's comments.

pyspf's own DNS function uses a deprecated dnspython call and no test
resolver, so its module-level DNSLookup is pointed at _lookup(), which asks
the resolver qmail-smtpd was given (qmailpy.dns.resolver or StaticResolver).
pyspf's processing limits (10 DNS mechanisms, 2 void lookups, 20 s per check)
apply. dnspython and pyspf are imported only when a check runs.
"""
from qmailpy.policy.lookup import validated_name

RESULT_WORDS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral",
                "none": "none", "permerror": "unknown", "temperror": "error"}
QUERYTIME = 20                  # seconds for one whole SPF check (RFC 7208 4.6.4), then temperror
COMMENTS = {
    "pass": "%{xr}: %{xs} designates %{i} as permitted sender",
    "softfail": "%{xr}: transitioning %{xs} does not designate %{i} as permitted sender",
    "fail": "%{xr}: %{xs} does not designate %{i} as permitted sender",
    "neutral": "%{xr}: %{i} is neither permitted nor denied by %{xs}",
    "none": "%{xr}: domain at %{d} does not designate permitted sender hosts",
    "unknown": "%{xr}: %{xe}",
    "error": "%{xr}: error in processing during lookup of %{d}: %{xe}",
}
IDENTITY = {"mailfrom": " client-ip=%{i}; envelope-from=%{s};", "helo": " client-ip=%{i}; helo=%{h};"}
# qmail-spf's urlchr_table: these pass unencoded, everything else becomes %xx (lower-case hex)
URL_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$'()*,-._")


class Context:
    """The values SPF macros expand to, for one check."""
    __slots__ = ("sender", "helo", "ip", "receiver", "resolver", "expdomain", "error", "_p")

    def __init__(self, sender, helo, ip, receiver, resolver):
        self.sender, self.helo, self.ip, self.receiver = sender or "", helo or "", ip, receiver
        self.resolver = resolver
        self.expdomain = None       # domain whose record decided; "" = local policy
        self.error = ""
        self._p = None

    def value(self, letter, domain):
        s = self.sender
        at = s.rfind("@")
        if letter == "s":
            return s
        if letter == "l":
            return s[:at] if at >= 0 else "postmaster"
        if letter == "o":
            return s[at + 1:] if at >= 0 else ""
        if letter == "d":
            return domain
        if letter == "i":
            return self.ip
        if letter == "t":
            import time
            return str(int(time.time()))
        if letter == "p":
            if self._p is None:
                self._p = validated_name(self.resolver, self.ip, domain) if self.resolver else "unknown"
            return self._p
        if letter == "v":
            return "ip6" if ":" in self.ip else "in-addr"
        if letter == "h":
            return self.helo[self.helo.rfind("@") + 1:]
        if letter == "E":
            return self.error
        if letter == "R":
            return self.receiver
        if letter == "S":
            return ("SPF record at " + self.expdomain) if self.expdomain else "local policy"
        return ""


def _url(text):
    return "".join(c if c in URL_SAFE else "".join("%%%02x" % b for b in c.encode("utf-8", "surrogateescape"))
                   for c in text)


def _subst(spec, ctx, domain):
    """One %{...} body, as qmail-spf's spfsubst()."""
    special = spec[:1] == "x"
    if special:
        spec = spec[1:]
    if not spec:
        return ""
    letter, i = spec[0], 1
    encode = "A" <= letter <= "Z"
    letter = letter.lower()
    if special:
        letter = letter.upper()
    digits = None
    while i < len(spec) and spec[i].isdigit():
        digits = (digits or 0) * 10 + int(spec[i])
        i += 1
    reverse = False
    while i < len(spec) and spec[i].isalpha():
        reverse = reverse or spec[i] == "r"
        i += 1
    delims = spec[i:] or "."
    value = ctx.value(letter, domain)
    parts, cur = [], []
    for c in value:
        if c in delims:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    if reverse:
        if digits == 0:
            parts = []
        elif digits is not None:
            parts = parts[:digits]
        parts.reverse()
    elif digits:
        parts = parts[-digits:]
    out = ".".join(parts)
    return _url(out) if encode else out


def expand(spec, ctx, domain):
    """qmail-spf's spfexpand(): %% %_ %- and %{...}; a stray '%' stays as it is."""
    out, i, n = [], 0, len(spec)
    while i < n:
        c = spec[i]
        i += 1
        if c != "%" or i >= n:
            out.append(c)
            continue
        nxt = spec[i]
        if nxt == "%":
            out.append("%")
            i += 1
        elif nxt == "_":
            out.append(" ")
            i += 1
        elif nxt == "-":
            out.append("%20")
            i += 1
        elif nxt == "{" and spec.find("}", i) >= 0:
            end = spec.find("}", i)
            out.append(_subst(spec[i + 1:end], ctx, domain))
            i = end + 1
        else:
            out.append("%")
    return "".join(out)


def printable(text):
    return "".join(c if " " <= c <= "~" or c == "\n" else "?" for c in text)


class SpfResult:
    """One SPF check: the result word, where it came from, and the texts derived from it."""
    __slots__ = ("result", "domain", "identity", "error", "ctx", "exp", "mechanism")

    def __init__(self, result, domain, identity, ctx, error="", exp=None, mechanism=None):
        self.result, self.domain, self.identity, self.ctx = result, domain, identity, ctx
        self.error, self.exp, self.mechanism = error, exp, mechanism
        if ctx.expdomain is None:
            ctx.expdomain = domain

    def _expdomain(self):
        # %{d}: the domain checked. rc5 expands with the domain whose record decided, which
        # is empty for spfguess/spfrules ("local policy"); the checked domain is more useful.
        return self.domain

    def comment(self):
        self.ctx.error = self.error
        return expand(COMMENTS[self.result], self.ctx, self._expdomain())

    def header(self):
        """The Received-SPF line (LF-terminated), written after qmail-smtpd's Received line."""
        self.ctx.error = self.error
        text = expand("%s (%s)%s" % (self.result, COMMENTS[self.result], IDENTITY[self.identity]),
                      self.ctx, self._expdomain())
        return "Received-SPF: %s\n" % printable(text).replace("\n", " ")

    def explanation(self):
        self.ctx.error = self.error
        return printable(expand(self.exp, self.ctx, self._expdomain()))

    def reject_reply(self):
        """`550 <explanation> (#5.7.1)`, one 550- line per line of a multi-line explanation."""
        lines = self.explanation().split("\n")
        head = ["550-" + line for line in lines[:-1]]
        return "\r\n".join(head + ["550 %s (#5.7.1)" % lines[-1]])

    def summary(self):
        where = "local policy" if self.ctx.expdomain == "" else (self.domain or "-")
        extra = (": " + self.error) if self.error else ""
        return "%s (%s, %s%s)" % (self.result, self.identity, where, extra)


_resolver = None        # the resolver of the check in progress (pyspf's DNSLookup has no context)


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup: [((name, qtype), value), ...] through our resolver; soft -> TempError."""
    import spf as pyspf
    from qmailpy.dns.resolver import SOFT
    r = _resolver
    name = str(name).rstrip(".")
    if qtype == "A":
        got = r.a(name)
    elif qtype == "AAAA":
        got = r.aaaa(name)
    elif qtype == "MX":
        got = r.mx(name)
    elif qtype == "PTR":
        ip = _arpa_to_ip(name)
        got = r.ptr(ip) if ip else None
    elif qtype in ("TXT", "SPF"):
        got = r.txt(name) if qtype == "TXT" else None
    else:
        got = None
    if got is None:
        return []
    if got.status == SOFT:
        raise pyspf.TempError("DNS %s" % (got.reason or "error"))
    values = got.values
    if qtype in ("TXT", "SPF"):
        values = [[v.encode("utf-8", "surrogateescape")] for v in values]
    return [((name, qtype), v) for v in values]


def _arpa_to_ip(name):
    labels = name.lower().split(".")
    if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
        return ".".join(reversed(labels[:4]))
    if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
        import ipaddress
        nibbles = "".join(reversed(labels[:32]))
        try:
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
        except ValueError:
            return None
    return None


def _query_class():
    import spf as pyspf

    class Query(pyspf.query):
        """pyspf's query keeping the domain's exp= text unexpanded, every TXT record a line (rc5)."""

        def get_explanation(self, spec):
            try:
                texts = self.dns_txt(spec, ignore_void=True)
            except (pyspf.TempError, pyspf.PermError):
                return None
            lines = [t.decode("utf-8", "replace") for t in texts]
            return "\n".join(lines) if lines else None

    pyspf.DNSLookup = _lookup
    return Query


_Query = None
SENTINEL = "\0spfexp\0"


def insert_local(tokens, local):
    """rc5's placement of spfrules: before the first run of -/~/? mechanisms ending in 'all',
    unless that run starts the record. `tokens` are the record's terms after 'v=spf1'."""
    p = None
    for idx, tok in enumerate(tokens):
        if p is not None and tok[:1] != tokens[p][:1]:
            p = None
        if p is None and tok[:1] in ("-", "~", "?"):
            p = idx
        if p is not None and p > 0 and tok[1:].lower() == "all":
            return tokens[:p] + local + tokens[p:]
    return tokens


def evaluate(policy, env):
    """The SpfResult of the session's client, sender and HELO."""
    global _resolver, _Query
    ip = policy.peer.ip
    sender = env.sender or ""
    helo = env.helo or ""
    receiver = policy.peer.local_host
    resolver = policy.resolver()
    ctx = Context(sender, helo, ip, receiver, resolver)
    if "@" in sender:
        domain, identity = sender[sender.rfind("@") + 1:], "mailfrom"
    else:
        domain, identity = helo[helo.rfind("@") + 1:], "helo"
    spfexp = policy.value("spfexp") or ""
    if ip == "127.0.0.1" or ip in policy.my_ips:
        ctx.expdomain = ""              # rc5: "local policy designates 127.0.0.1 ..."
        return SpfResult("pass", domain, identity, ctx, exp=spfexp)
    if not domain:
        return SpfResult("none", domain, identity, ctx, exp=spfexp)
    rules = (policy.value("spfrules") or "").split()
    guess = [t for t in (policy.value("spfguess") or "").split() if t.lower() != "v=spf1"]
    if _Query is None:
        _Query = _query_class()
    import spf as pyspf
    saved, _resolver = _resolver, resolver
    try:
        try:
            q = _Query(i=ip, s=sender if identity == "mailfrom" else "", h=helo, receiver=receiver,
                       strict=True, querytime=QUERYTIME)
        except pyspf.PermError as e:
            return SpfResult("unknown", domain, identity, ctx, error=str(e.msg), exp=spfexp)
        q.set_default_explanation(SENTINEL)
        local = set()
        try:
            record = q.dns_spf(domain)
        except pyspf.TempError:
            return SpfResult("error", domain, identity, ctx, error="DNS problem", exp=spfexp)
        except pyspf.PermError as e:
            return SpfResult("unknown", domain, identity, ctx, error=str(e), exp=spfexp)
        guessing = record is None
        if guessing:
            if not guess and not rules:
                return SpfResult("none", domain, identity, ctx, exp=spfexp)
            terms = guess + rules
            local.update(terms)
        else:
            terms = record.split()[1:]
            if rules:
                own = set(terms)
                terms = insert_local(terms, rules)
                local.update(t for t in rules if t not in own)
        try:
            res, _, _ = q.check(spf=" ".join(["v=spf1"] + terms))
        except Exception as e:          # pyspf bugs must not end the session
            return SpfResult("unknown", domain, identity, ctx, error="%s: %s" % (type(e).__name__, e), exp=spfexp)
        word = RESULT_WORDS.get(res, "unknown")
        if guessing:
            ctx.expdomain = ""
            if word == "neutral" and q.mechanism is None:
                word = "none"
            elif word == "error" and not rules:
                word = "none"
            if word == "none":
                ctx.expdomain = None
        elif q.mechanism is not None and q.mechanism in local:
            ctx.expdomain = ""
        error = ""
        if word == "error":
            error = "DNS problem"
        elif word == "unknown":
            error = getattr(q, "prob", "") or "permanent error"
            if getattr(q, "mech", None):
                error = "%s: %s" % (error, q.mech[-1])
        raw = q.exps.get("fail")
        exp = spfexp if raw == SENTINEL or raw is None else raw
        return SpfResult(word, domain, identity, ctx, error=error, exp=exp, mechanism=q.mechanism)
    finally:
        _resolver = saved
