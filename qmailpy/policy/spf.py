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
  lines, as rc5) wins over control/spfexp; qmail-spf's macro extensions %{xr}
  (this host, TCPLOCALHOST), %{xs} ("SPF record at DOMAIN" or "local policy")
  and %{xe} (the error text); control/spfexp is read as leniently as rc5 did;
- Received-SPF: `<result> (<comment>) client-ip=<ip>; envelope-from=<sender>;`
  (helo=<helo>; for the HELO identity) with rc5's comments.

What is RFC 7208's (docs/spf.md lists where qmailpy differs from the test suite):
- the record goes to pyspf as published; only where local rules are inserted
  is it cut into terms, at spaces only (a CR or LF inside a term stays there
  and makes the record a permerror);
- one macro expander (parse() and render() below) serves pyspf's mechanisms
  and modifiers (Query.expand), the domain's exp= text and spfexp, with the
  macro values of pyspf's query (RFC 7208 7.2: %{i} of an IPv6 client is
  dotted nibbles, %{c} the address as written, %{s} of the HELO identity is
  postmaster@HELO), so they cannot disagree;
- an exp= text that is not ASCII or not valid macro-string is ignored
  (spfexp is used);
- limits: pyspf's (10 DNS mechanisms, 2 void lookups, 10 MX/PTR names) and
  QUERYTIME for the whole check: every lookup of the check, %{p} of the
  explanation included, ends by then (then error).

pyspf's own DNS function uses a deprecated dnspython call and no test
resolver, so its module-level DNSLookup is pointed at _lookup(), which asks
the resolver of the query being evaluated (qmailpy.dns.resolver or
StaticResolver). The Query subclass relies on pyspf 2.0.14's internals
(dns(), expand(), get_explanation(), exps, mechanism, prob, mech): setup.cfg
pins that version. dnspython and pyspf are imported only when a check runs.
"""
import contextvars

RESULT_WORDS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral",
                "none": "none", "permerror": "unknown", "temperror": "error"}
QUERYTIME = 20                  # seconds for one whole SPF check (RFC 7208 4.6.4), then temperror
COMMENTS = {
    "pass": "%{xr}: %{xs} designates %{c} as permitted sender",
    "softfail": "%{xr}: transitioning %{xs} does not designate %{c} as permitted sender",
    "fail": "%{xr}: %{xs} does not designate %{c} as permitted sender",
    "neutral": "%{xr}: %{c} is neither permitted nor denied by %{xs}",
    "none": "%{xr}: domain at %{d} does not designate permitted sender hosts",
    "unknown": "%{xr}: %{xe}",
    "error": "%{xr}: error in processing during lookup of %{d}: %{xe}",
}
IDENTITY = {"mailfrom": " client-ip=%{c}; envelope-from=%{s};", "helo": " client-ip=%{c}; helo=%{h};"}


# -- macros (RFC 7208 section 7), the one expander

DOMAIN, EXPLAIN, LOCAL = "domain", "explain", "local"      # the three readings of a macro-string
LETTERS = {DOMAIN: "slodiphv", EXPLAIN: "slodiphvcrt", LOCAL: "slodiphvcrt"}
EXTENSIONS = "rse"              # qmail-spf's %{xr} %{xs} %{xe}
DELIMITERS = ".-+,/_="
UNRESERVED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")   # RFC 3986


class MacroError(ValueError):
    """A macro-string that is not RFC 7208's (a permerror in a record; an exp= text is ignored)."""


class Macro:
    """One %{...}: letter (upper case for qmail-spf's x extensions), digits, reverse, delimiters, url."""
    __slots__ = ("letter", "digits", "reverse", "delims", "url")

    def __init__(self, letter, digits, reverse, delims, url):
        self.letter, self.digits, self.reverse, self.delims, self.url = letter, digits, reverse, delims, url


def parse(spec, mode):
    """The literal strings and Macros of a macro-string.

    DOMAIN: a domain-spec of a record (RFC 7208 7.1: letters s l o d i p h v);
    EXPLAIN: a domain's exp= text (c r t too, spaces, and qmail-spf's %{x.});
    both raise MacroError on anything else. LOCAL: control/spfexp and the header
    comments as qmail-spf's spfexpand() reads them: a '%' that starts nothing is
    itself, an unknown letter expands to nothing.
    """
    strict = mode != LOCAL
    out, lit, i, n = [], [], 0, len(spec)
    while i < n:
        c = spec[i]
        if c != "%":
            if strict and not ("!" <= c <= "~" or (c == " " and mode == EXPLAIN)):
                raise MacroError("invalid character %r" % c)
            lit.append(c)
            i += 1
            continue
        nxt = spec[i + 1:i + 2]
        end = spec.find("}", i + 2) if nxt == "{" else -1
        if nxt in ("%", "_", "-") and nxt:
            lit.append({"%": "%", "_": " ", "-": "%20"}[nxt])
            i += 2
        elif end >= 0:
            macro = _macro(spec[i + 2:end], mode)
            if macro is not None:
                if lit:
                    out.append("".join(lit))
                    lit = []
                out.append(macro)
            i = end + 1
        elif strict:
            raise MacroError("invalid macro at %r" % spec[i:i + 8])
        else:
            lit.append("%")
            i += 1
    if lit:
        out.append("".join(lit))
    return out


def _macro(body, mode):
    """The Macro of one %{body}; None for one that expands to nothing (LOCAL only)."""
    strict = mode != LOCAL
    extension = mode != DOMAIN and body[:1] in ("x", "X") and body[1:2].lower() in EXTENSIONS
    if extension:
        body = body[1:]
    letter = body[:1]
    if not letter or not letter.isalpha() or not letter.isascii() or (
            not extension and letter.lower() not in LETTERS[mode]):
        if strict:
            raise MacroError("unknown macro letter in %%{%s}" % body)
        return None
    url = letter.isupper()
    letter = letter.upper() if extension else letter.lower()
    i, n = 1, len(body)
    while i < n and body[i] in "0123456789":
        i += 1
    digits = int(body[1:i]) if i > 1 else None
    if strict and digits == 0:
        raise MacroError("zero parts in %%{%s}" % body)
    reverse = False
    if strict:
        if body[i:i + 1] in ("r", "R"):
            reverse, i = True, i + 1
        if any(c not in DELIMITERS for c in body[i:]):
            raise MacroError("invalid delimiter in %%{%s}" % body)
    else:
        while i < n and body[i].isalpha():       # rc5: letters after the digits, 'r' among them
            reverse = reverse or body[i] in ("r", "R")
            i += 1
    return Macro(letter, digits or None, reverse, body[i:], url)


def render(parts, value, mode=LOCAL):
    """The text of parsed parts; value(letter) gives a macro's value. A DOMAIN result loses
    a final dot and, beyond 253 characters, its leftmost labels (RFC 7208 7.3)."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
            continue
        text = value(part.letter)
        if part.digits or part.reverse or part.delims:
            pieces = _split(text, part.delims or ".")
            if part.reverse:
                pieces.reverse()
            if part.digits:
                pieces = pieces[-part.digits:]
            text = ".".join(pieces)
        out.append(_url(text) if part.url else text)
    text = "".join(out)
    if mode == DOMAIN:
        if text.endswith("."):
            text = text[:-1]
        while len(text) > 253 and "." in text:
            text = text[text.index(".") + 1:]
    return text


def _split(text, delims):
    pieces, cur = [], []
    for c in text:
        if c in delims:
            pieces.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    pieces.append("".join(cur))
    return pieces


def _url(text):
    """RFC 3986 percent-encoding of everything but the unreserved characters, upper-case hex."""
    return "".join(c if c in UNRESERVED else "".join("%%%02X" % b for b in c.encode("utf-8", "surrogateescape"))
                   for c in text)


def query_value(q, letter, domain):
    """An RFC macro letter's value from pyspf's query `q` (its s l o i c v h r t, getp() for p);
    `domain` is %{d}. pyspf's DNS errors of %{p} propagate."""
    if letter == "d":
        return domain
    if letter == "p":
        return q.getp()
    return str(getattr(q, letter, "") or "")


class Context:
    """The macro values of one check: pyspf's query for the RFC letters, qmail-spf's extensions."""
    __slots__ = ("sender", "helo", "ip", "receiver", "query", "expdomain", "error")

    def __init__(self, sender, helo, ip, receiver, query=None):
        self.sender, self.helo, self.ip, self.receiver = sender or "", helo or "", ip, receiver
        self.query = query          # the pyspf Query of the check (values, %{p}), if one ran
        self.expdomain = None       # domain whose record decided; "" = local policy
        self.error = ""

    def value(self, letter, domain):
        if letter == "R":
            return self.receiver
        if letter == "S":
            return ("SPF record at " + self.expdomain) if self.expdomain else "local policy"
        if letter == "E":
            return self.error
        q = self.query
        if q is None:                   # no check ran (local policy, no domain, an unusable IP)
            return {"d": domain, "s": self.sender, "i": self.ip, "c": self.ip, "h": self.helo,
                    "p": "unknown", "r": self.receiver}.get(letter, "")
        if letter == "p":
            import spf as pyspf
            try:
                return q.getp()
            except (pyspf.TempError, pyspf.PermError, pyspf.AmbiguityWarning):
                return "unknown"
        return query_value(q, letter, domain)


def expand(spec, ctx, domain, mode=LOCAL):
    """A macro-string expanded with ctx's values, %{d} being `domain` (MacroError: see parse())."""
    return render(parse(spec, mode), lambda letter: ctx.value(letter, domain), mode)


def printable(text):
    return "".join(c if " " <= c <= "~" or c == "\n" else "?" for c in text)


class Explanation:
    """A domain's exp= text as fetched: its TXT records (valid, ASCII) and the domain whose
    record named it (%{d}); expanded only when a reply needs it (%{p} costs lookups)."""
    __slots__ = ("lines", "domain")

    def __init__(self, lines, domain):
        self.lines, self.domain = lines, domain


class SpfResult:
    """One SPF check: the result word, where it came from, and the texts derived from it."""
    __slots__ = ("result", "domain", "identity", "error", "ctx", "exp", "spfexp", "mechanism")

    def __init__(self, result, domain, identity, ctx, error="", exp=None, mechanism=None, spfexp=""):
        self.result, self.domain, self.identity, self.ctx = result, domain, identity, ctx
        self.error, self.exp, self.mechanism = error, exp, mechanism
        self.spfexp = spfexp if isinstance(exp, Explanation) else exp     # the fallback of a domain's text
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
        """The explanation: the domain's exp= text if it expands to ASCII, else control/spfexp."""
        self.ctx.error = self.error
        exp = self.exp
        if isinstance(exp, Explanation):
            text = "\n".join(render(parse(line, EXPLAIN), lambda letter: self.ctx.value(letter, exp.domain))
                             for line in exp.lines)
            if text.isascii():
                return printable(text)
            exp = self.spfexp
        return printable(expand(exp, self.ctx, self._expdomain()))

    def reject_reply(self):
        """`550 <explanation> (#5.7.1)`, one 550- line per line of a multi-line explanation."""
        lines = self.explanation().split("\n")
        head = ["550-" + line for line in lines[:-1]]
        return "\r\n".join(head + ["550 %s (#5.7.1)" % lines[-1]])

    def summary(self):
        where = "local policy" if self.ctx.expdomain == "" else (self.domain or "-")
        extra = (": " + self.error) if self.error else ""
        return "%s (%s, %s%s)" % (self.result, self.identity, where, extra)


_resolver = contextvars.ContextVar("spf_resolver")   # the resolver of the Query asking (see Query.dns)


def _lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNSLookup: [((name, qtype), value), ...] through the query's resolver, each
    lookup ending within `timeout` (what is left of the check's QUERYTIME); soft -> TempError."""
    import time

    import spf as pyspf
    from qmailpy.dns.resolver import SOFT
    r = _resolver.get()
    if timeout:
        r = r.until(time.monotonic() + timeout)       # never past the check's own deadline either
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
    elif qtype == "TXT":
        got = r.txt(name)
    else:
        got = None                      # type SPF (99): RFC 7208 4.4, TXT only
    if got is None:
        return []
    if got.status == SOFT:
        raise pyspf.TempError("DNS %s" % (got.reason or "error"))
    values = got.values
    if qtype == "TXT":
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
        """pyspf's query asking our resolver, expanding macros with our expander, and keeping
        the domain's exp= text for later (every TXT record a line, as rc5)."""
        resolver = None

        def dns(self, name, qtype, cnames=None, ignore_void=False):
            token = _resolver.set(self.resolver)
            try:
                return super().dns(name, qtype, cnames=cnames, ignore_void=ignore_void)
            finally:
                _resolver.reset(token)

        def expand(self, s, stripdot=True):
            mode = DOMAIN if stripdot else EXPLAIN
            try:
                parts = parse(s, mode)
            except MacroError as e:
                raise pyspf.PermError(str(e))
            return render(parts, lambda letter: query_value(self, letter, self.d), mode)

        def get_explanation(self, spec):
            try:
                texts = [t.decode("ascii") for t in self.dns_txt(spec, ignore_void=True)]
                for text in texts:
                    parse(text, EXPLAIN)
            except (pyspf.TempError, pyspf.PermError, UnicodeError, MacroError):
                return None                 # RFC 7208 6.2: as if there were no exp=
            return Explanation(texts, self.d) if texts else None

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


def with_local(record, rules):
    """(record with spfrules inserted, the inserted terms): the record is cut into terms at
    spaces only (RFC 7208 4.6.1), and left as published when nothing is inserted."""
    if not rules:
        return record, ()
    version, *rest = record.split(" ")
    terms = [t for t in rest if t]
    placed = insert_local(terms, rules)
    if placed is terms:
        return record, ()
    own = set(terms)
    return " ".join([version] + placed), [t for t in rules if t not in own]


def attach_query(ctx, resolver):
    """Give ctx the pyspf Query that checks its client, sender and HELO through `resolver`,
    every lookup of it ending within QUERYTIME from now (PermError: an unusable IP)."""
    global _Query
    import time
    if _Query is None:
        _Query = _query_class()
    sender = ctx.sender if "@" in ctx.sender else ""
    q = _Query(i=ctx.ip, s=sender, h=ctx.helo, receiver=ctx.receiver or None, strict=True, querytime=QUERYTIME)
    q.resolver = resolver.until(time.monotonic() + QUERYTIME)     # %{p} of the explanation too
    ctx.query = q
    return ctx


def evaluate(policy, env):
    """The SpfResult of the session's client, sender and HELO."""
    ip = policy.peer.ip
    sender = env.sender or ""
    helo = env.helo or ""
    receiver = policy.peer.local_host
    if "@" in sender:
        domain, identity = sender[sender.rfind("@") + 1:], "mailfrom"
    else:
        domain, identity = helo[helo.rfind("@") + 1:], "helo"
    spfexp = policy.value("spfexp") or ""
    ctx = Context(sender, helo, ip, receiver)
    if ip == "127.0.0.1" or ip in policy.my_ips:
        ctx.expdomain = ""              # rc5: "local policy designates 127.0.0.1 ..."
        return SpfResult("pass", domain, identity, ctx, exp=spfexp)
    if not domain:
        return SpfResult("none", domain, identity, ctx, exp=spfexp)
    import spf as pyspf
    try:
        attach_query(ctx, policy.resolver())
    except pyspf.PermError as e:
        return SpfResult("unknown", domain, identity, ctx, error=str(e.msg), exp=spfexp)
    q = ctx.query
    rules = (policy.value("spfrules") or "").split()
    guess = [t for t in (policy.value("spfguess") or "").split() if t.lower() != "v=spf1"]
    q.set_default_explanation(SENTINEL)
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
        local = set(guess + rules)
        record = " ".join(["v=spf1"] + guess + rules)
    else:
        record, local = with_local(record, rules)
    try:
        res, _, _ = q.check(spf=record)
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
    exp = raw if isinstance(raw, Explanation) else spfexp
    return SpfResult(word, domain, identity, ctx, error=error, exp=exp, mechanism=q.mechanism, spfexp=spfexp)
