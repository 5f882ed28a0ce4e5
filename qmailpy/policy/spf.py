"""SPF as the qmail-spf patch (Jana Saout, rc5) does it, with pyspf evaluating records.

What comes from qmail-spf (reference section 8; sagredo-dev/qmail spf.c and
qmail-smtpd.c, whose logic is rc5's with renamed result words):
- the identity: the MAIL FROM domain, or the HELO name for MAIL FROM:<>;
- 127.0.0.1 and this host's own addresses always pass;
- spfrules (local rules) are inserted before the record's first run of
  '-', '~' or '?' mechanisms that ends in 'all' (not at all when that run is
  the record's first mechanism), in a redirect= target's record too; a domain without a record is judged by
  spfguess followed by spfrules, and when nothing there matches the result is
  none (so is a DNS problem in spfguess; one in spfrules is an error); mechanisms of these local rules are attributed to "local policy";
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
- one macro expander (qmailpy.policy.spfmacro) serves pyspf's mechanisms
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
(dns(), dns_spf(), check1(), expand(), get_explanation(),
exps, mechanism, prob, mech): setup.cfg pins that version. dnspython and pyspf
are imported only when a check runs.
The result and its texts (Received-SPF, the explanation): qmailpy.policy.spfresult.
"""
import contextvars

from qmailpy.policy.spfmacro import DOMAIN, EXPLAIN, Context, MacroError, parse, query_value, render
from qmailpy.policy.spfresult import Explanation, SpfResult

RESULT_WORDS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral",
                "none": "none", "permerror": "unknown", "temperror": "error"}
QUERYTIME = 20                  # seconds for one whole SPF check (RFC 7208 4.6.4), then temperror
# pyspf's permerror texts that rc5 words otherwise in Received-SPF: a mechanism it does not
# know (hdr_ext), a term that does not parse (hdr_syntax), two records (spfget()).
EXT_ERRORS = frozenset(("Unknown mechanism found", "Unknown qualifier, RFC 4408 para 4.6.1, found in"))
SYNTAX_ERRORS = frozenset((
    "Invalid IP4 CIDR length", "Invalid IP6 CIDR length", "Dual CIDR not allowed", "Invalid IP4 address",
    "Invalid IP6 address", "CIDR not allowed", "Missing IP4", "implicit exists not allowed", "empty domain:",
    "include mechanism missing domain", "Invalid all mechanism format - only qualifier allowed with all",
    "syntax error", "Invalid domain found (use FQDN)", "Do not separate mechnisms with commas",
    "Unknown Macro Encountered"))
RC5_TEXTS = {"Two or more type TXT spf records found.": "Multiple SPF records returned"}


def unknown_form(msg, term):
    """(form, term, error) of a permerror as rc5 reports it (spfresult.UNKNOWN_FORMS)."""
    if msg in EXT_ERRORS and term:
        return "ext", term, "%s: %s" % (msg, term)
    if msg in SYNTAX_ERRORS:
        return "syntax", "", ("%s: %s" % (msg, term)) if term else msg
    return None, "", RC5_TEXTS.get(msg, msg)


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
        the domain's exp= text for later (every TXT record a line, as rc5). attach_query()
        sets `resolver`."""

        def dns(self, *args, **kwargs):
            token = _resolver.set(self.resolver)
            try:
                return super().dns(*args, **kwargs)
            finally:
                _resolver.reset(token)

        def check(self, spf=None):
            self.records = 0        # records judged at the top level (the domain's, its redirect targets)
            return super().check(spf)

        def check1(self, spf, domain, recursion):
            """A redirect= target of the checked domain gets spfrules as its record would: rc5's
            spflookup() keeps `main` set across redirect= (an include: target's do not)."""
            if recursion == 0 and spf:
                if self.records and self.local_rules:
                    spf, inserted = with_local(spf, self.local_rules)
                    self.local_terms.update(inserted)
                self.records += 1
            return super().check1(spf, domain, recursion)

        def dns_spf(self, domain):
            """The domain's record; a final dot is no empty label (RFC 7208 4.3, and rc5's
            dns_txt() asks for the name as written): pyspf's dns_spf() made it none, so
            'joe@fail.example.' escaped a fail."""
            return super().dns_spf(domain[:-1] if domain.endswith(".") else domain)

        def expand(self, s):
            """A record's domain-spec or modifier (RFC 7208 7.1). pyspf asks for an explanation's
            reading (stripdot=False) only in its get_explanation(), which ours replaces."""
            try:
                parts = parse(s, DOMAIN)
            except MacroError as e:
                raise pyspf.PermError(str(e))
            return render(parts, lambda letter: query_value(self, letter, self.d), DOMAIN)

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


def guess_check(q, guess, rules):
    """pyspf's result for a domain without record: spfguess's terms, then (when none of them
    matched) spfrules'. As rc5's spflookup() (spf.c, case SPF_ERROR while guessing), a DNS
    problem in a spfguess mechanism ends the check as no record at all (none), one in a
    spfrules mechanism stays an error."""
    if guess:
        res = q.check(spf=" ".join(["v=spf1"] + guess))[0]
        if res == "temperror":
            return "none"
        if res != "neutral" or q.mechanism is not None or not rules:
            return res
    return q.check(spf=" ".join(["v=spf1"] + rules))[0]


def has_domain(sender):
    """Does the MAIL FROM address name a domain (something after its last '@')? If not
    ('joe', 'joe@', <>) the HELO identity is checked, as rc5's spfcheck()."""
    return sender.rfind("@") + 1 not in (0, len(sender))


def attach_query(ctx, resolver):
    """Give ctx the pyspf Query that checks its client, sender and HELO through `resolver`,
    every lookup of it ending within QUERYTIME from now (PermError: an unusable IP)."""
    global _Query
    import time
    if _Query is None:
        _Query = _query_class()
    sender = ctx.sender if has_domain(ctx.sender) else ""
    # pyspf's default strict=True: RFC 7208's limits and syntax errors are permerrors
    q = _Query(i=ctx.ip, s=sender, h=ctx.helo, receiver=ctx.receiver or None, querytime=QUERYTIME)
    q.resolver = resolver.until(time.monotonic() + QUERYTIME)     # %{p} of the explanation too
    q.local_rules, q.local_terms, q.records = (), set(), 0     # spfrules for redirect targets (evaluate())
    ctx.query = q
    return ctx


def _as_mine(ip):
    """The client's address as my_ips spell theirs (RFC 5952, ::ffff:a.b.c.d as a.b.c.d): qmail-spf
    compares the bytes, so tcpserver -6's ::ffff:127.0.0.1 is 127.0.0.1, ip6_fmt's 2001:db8::1:2:3:4:5
    is TCPLOCALIP's 2001:db8:0:1:2:3:4:5."""
    if ":" not in ip:
        return ip
    from qmailpy.proto.grammar import ipv6_text
    return ipv6_text(ip) or ip


def evaluate(policy, env):
    """The SpfResult of the session's client, sender and HELO."""
    ip = policy.peer.ip
    sender = env.sender or ""
    helo = env.helo or ""
    receiver = policy.peer.local_host
    if has_domain(sender):
        domain, identity = sender[sender.rfind("@") + 1:], "mailfrom"
    else:
        domain, identity = helo, "helo"          # RFC 7208 2.3: the HELO name as given
    spfexp = policy.value("spfexp") or ""
    ctx = Context(sender, helo, ip, receiver)
    mine = _as_mine(ip)
    if mine == "127.0.0.1" or mine in policy.my_ips:
        ctx.expdomain = ""              # rc5: "local policy designates 127.0.0.1 ..."
        return SpfResult("pass", domain, identity, ctx, exp=spfexp)
    if not domain:
        return SpfResult("none", domain, identity, ctx, exp=spfexp)
    try:
        import spf as pyspf
    except (ImportError, OSError) as e:  # pyspf cannot be loaded now (its files unreadable): no check
        from qmailpy.lazyload import forget
        forget()                        # the next check tries again (qmailpy.lazyload)
        return SpfResult("error", domain, identity, ctx, error="unable to load pyspf: %s" % (e,), exp=spfexp)
    try:
        attach_query(ctx, policy.resolver())
    except pyspf.PermError as e:
        return SpfResult("unknown", domain, identity, ctx, error=str(e.msg), exp=spfexp)
    q = ctx.query
    rules = (policy.value("spfrules") or "").split()
    guess = [t for t in (policy.value("spfguess") or "").split() if t.lower() != "v=spf1"]
    try:
        record = q.dns_spf(domain)
    except pyspf.TempError:
        return SpfResult("error", domain, identity, ctx, error="DNS problem", exp=spfexp)
    except pyspf.PermError as e:
        form, term, error = unknown_form(e.msg, e.mech)
        return SpfResult("unknown", domain, identity, ctx, error=error, exp=spfexp, form=form, term=term)
    guessing = record is None
    if guessing:
        if not guess and not rules:
            return SpfResult("none", domain, identity, ctx, exp=spfexp)
    else:
        record, local = with_local(record, rules)
        q.local_rules = rules
    try:
        res = guess_check(q, guess, rules) if guessing else q.check(spf=record)[0]
    except Exception as e:          # pyspf bugs must not end the session
        return SpfResult("unknown", domain, identity, ctx, error="%s: %s" % (type(e).__name__, e), exp=spfexp)
    word = RESULT_WORDS.get(res, "unknown")
    if guessing:
        ctx.expdomain = ""
        if word == "neutral" and q.mechanism is None:
            word = "none"
        if word == "none":
            ctx.expdomain = None
    elif q.mechanism is not None and (q.mechanism in local or q.mechanism in q.local_terms):
        ctx.expdomain = ""
    error, form, term = "", None, ""
    if word == "error":
        error = "DNS problem"
    elif word == "unknown":             # pyspf's check() starts q.mech as []
        form, term, error = unknown_form(getattr(q, "prob", None) or "permanent error",
                                         q.mech[-1] if q.mech else None)
    raw = q.exps.get("fail")
    exp = raw if isinstance(raw, Explanation) else spfexp
    return SpfResult(word, domain, identity, ctx, error=error, exp=exp, spfexp=spfexp, form=form, term=term)
