"""SPF macros (RFC 7208 section 7) and qmail-spf's extensions: the one expander.

parse() and render() serve pyspf's mechanisms and modifiers (qmailpy.policy.spf's
Query.expand), the domain's exp= text and control/spfexp (qmailpy.policy.spfresult),
with the macro values of pyspf's query (RFC 7208 7.2: %{i} of an IPv6 client is
dotted nibbles, %{c} the address as written, %{s} of the HELO identity is
postmaster@HELO), so they cannot disagree. qmail-spf's extensions: %{xr} (this
host, TCPLOCALHOST), %{xs} ("SPF record at DOMAIN" or "local policy"), %{xe}
(the error text). Pure: pyspf is imported only for %{p}'s errors.
"""

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
    # a transformer's number keeps that many parts; 128 or more (a name has fewer) keep them
    # all, so any larger number reads as 128: a record's 5000 digits made int() raise
    number = body[1:i].lstrip("0") or "0"
    digits = (min(int(number), 128) if len(number) <= 3 else 128) if i > 1 else None
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
        text = _keep_right(text)
    return text


def _keep_right(text):
    """`text` without the leftmost labels that make it longer than 253 characters (the last
    label alone when even that is longer), cut in one slice: a record's thousands of
    macros made a label-by-label cut quadratic (seconds per MAIL FROM)."""
    if len(text) <= 253:
        return text
    dot = text.find(".", len(text) - 254)       # the first cut that leaves at most 253
    if dot < 0:
        dot = text.rfind(".")
    return text[dot + 1:] if dot >= 0 else text


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
