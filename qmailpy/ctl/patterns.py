"""One matching engine for every list control, each list compiled once from
already-cleaned lines (plus optional parallel source line numbers); matches()
returns None or the deciding Match, so policy can log "control/NAME:LINE".

AddressList  literal, qmail constmap semantics (qmail-smtpd.c bmfcheck): the
             whole address, or an '@domain' line against the part from the LAST
             '@'; ASCII case folding. '[', '*', '?' are plain characters.
PatternList  spamcontrol wildmat (badmailpatterns, badrcptpatterns, badhelo,
             blackholedsender): whole string, case-sensitive, '!' exceptions.
HostList     rcpthosts.c: 'a.com' only itself, '.a.com' any subdomain.
IPPrefixList relayclients: '1.2.3.4:' exact, '192.168.1.:' textual prefix.

'!' semantics, from sources rather than a guess (spamcontrol's own bmcheck was
not in the code index; what it is built on was):
- badmailpatterns is Mark Delany's 1997 wildmat patch, which spamcontrol took
  over; fehcom ships its README as sqmail doc/Old/README.wildmat
  (fehcom.de/cgit/sqmail; also ftp.pl.vim.org/pub/unix/mail/qmail/man/misc/
  README.wildmat.txt): it "uses the wildmat() routine out of INN and evaluates
  in the same way ... the envelope sender is pushed thru all patterns and the
  final match or non-match is used", example '*@earthlink.net' then
  '!fred@earthlink.net' = all of Earthlink except fred.
- INN innd/site.c SITEwantsgroup (read in the code index): match = FALSE; per
  line: subvalue = line[0] != '!' (the '!' is skipped); if (match != subvalue
  && wildmat(name, pat)) match = subvalue.  So, top to bottom, the LAST
  matching line decides: a '!' line before any positive match does nothing, a
  positive line after an exception blocks again, and lines that cannot change
  the verdict are not tried. Match names the line that last changed the
  verdict; exception=True means a '!' line overrode a positive one (not listed).
- wildmat (Rich Salz, INN 1.x): '*' any string incl. empty, '?' exactly one
  char, '[a-z]' sets with ranges, ']' or '-' first and '-' last are members,
  '[!...]'/'[^...]' negate; a backslash makes the next char literal outside a
  set (inside one it is a member), so a literal leading '!' is '\\!'. The
  H-Sphere page's "one or more preceding"/"zero or one preceding" wording is
  regex-speak; the code is followed.
- Malformed patterns (unclosed '[', a dangling final backslash) never match:
  Salz's C returns no match for the latter and reads past the end for the
  former. Their line numbers are in PatternList.malformed for checkers.
"""


class Match(tuple):
    """(line_number, line, exception): the deciding control line. A tuple subclass
    because collections/typing cost more to import than this whole module."""
    __slots__ = ()
    line_number, line, exception = (property(lambda self, k=k: self[k]) for k in range(3))

    def __new__(cls, line_number, line, exception=False):
        return tuple.__new__(cls, (line_number, line, exception))

    def __getnewargs__(self):  # pickle/copy
        return tuple(self)

    def __repr__(self):
        return "Match(line_number=%r, line=%r, exception=%r)" % self


_LOWER = {c: c + 32 for c in range(65, 91)}


def fold(s):
    """ASCII-only lower case, as qmail's case_lowerb/case_diffb (non-ASCII untouched)."""
    return s.translate(_LOWER)


class _Lines:
    """The original lines and the numbers reported for them (1-based positions by default)."""

    def __init__(self, lines, linenos=None):
        self.lines = tuple(lines)
        self.linenos = tuple(range(1, len(self.lines) + 1) if linenos is None else linenos)
        if len(self.linenos) != len(self.lines):
            raise ValueError("linenos must be parallel to lines")

    def _hit(self, i, exception=False):
        return None if i is None else Match(self.linenos[i], self.lines[i], exception)

    @staticmethod
    def _index(keys):
        """key -> index of its first line (duplicates report the first)."""
        m = {}
        for i, k in enumerate(keys):
            m.setdefault(k, i)
        return m

    def __len__(self):
        return len(self.lines)


class AddressList(_Lines):
    """badmailfrom, badrcptto, relaymailfrom, nomfdnscheck, badmailfrom-unknown."""

    def __init__(self, lines, linenos=None):
        super().__init__(lines, linenos)
        self._map = self._index(map(fold, self.lines))

    def matches(self, addr):
        i = self._map.get(fold(addr))
        at = addr.rfind("@")
        if i is None and at >= 0:
            i = self._map.get(fold(addr[at:]))
        return self._hit(i)


class _Any:
    __slots__ = ()
    __contains__ = lambda self, c: True  # noqa: E731  '?': any one character


class _Set:
    __slots__ = ("members", "ranges", "negate")

    def __init__(self, members, ranges, negate):
        self.members, self.ranges, self.negate = frozenset(members), tuple(ranges), negate

    def __contains__(self, c):
        return (c in self.members or any(lo <= c <= hi for lo, hi in self.ranges)) != self.negate


_STAR, _ANY = object(), _Any()


def compile_wildmat(p):
    """`p` itself when it has no special character (a plain compare), else a token
    list (1-char str = literal, _ANY, _Set, _STAR), or None when malformed."""
    if not any(c in "*?[\\" for c in p):
        return p
    toks, i, n = [], 0, len(p)
    while i < n:
        c = p[i]
        i += 1
        if c == "*":
            if not toks or toks[-1] is not _STAR:  # a run of stars is one star
                toks.append(_STAR)
        elif c == "?":
            toks.append(_ANY)
        elif c == "\\":
            if i >= n:
                return None
            toks.append(p[i])
            i += 1
        elif c == "[":
            negate = i < n and p[i] in "!^"
            i += negate
            members, ranges, last = [], [], None
            if i < n and p[i] in "]-":  # Salz: ']' or '-' first is a member
                last = p[i]
                members.append(last)
                i += 1
            while i < n and p[i] != "]":
                if p[i] == "-" and last is not None and i + 1 < n and p[i + 1] != "]":
                    ranges.append((last, p[i + 1]))  # 'a-c-e' is a-c then c-e, as in C
                    last = p[i + 1]
                    i += 2
                else:
                    last = p[i]
                    members.append(last)
                    i += 1
            if i >= n:
                return None
            toks.append(_Set(members, ranges, negate))
            i += 1
        else:
            toks.append(c)
    return toks


def wildmat(text, pat):
    """Does compiled `pat` match the WHOLE of `text`? Iterative star backtracking:
    O(len(text) * len(pat)) at worst, no recursion, never raises."""
    if pat is None or isinstance(pat, str):
        return pat == text
    ti = si = 0
    star_t, star_s = -1, 0
    nt, ns = len(pat), len(text)
    while si < ns:
        if ti < nt:
            t = pat[ti]
            if t is _STAR:
                star_t, star_s = ti, si
                ti += 1
                continue
            if text[si] in t:
                ti += 1
                si += 1
                continue
        if star_t < 0:
            return False
        star_s += 1  # let the last star swallow one more character
        si, ti = star_s, star_t + 1
    while ti < nt and pat[ti] is _STAR:
        ti += 1
    return ti == nt


class PatternList(_Lines):
    """badmailpatterns, badrcptpatterns, badhelo, blackholedsender ('!': module doc)."""

    def __init__(self, lines, linenos=None):
        super().__init__(lines, linenos)
        self._rules = [(x[:1] == "!", compile_wildmat(x[1:] if x[:1] == "!" else x))
                       for x in self.lines]
        self.malformed = tuple(n for n, (_, p) in zip(self.linenos, self._rules) if p is None)
        self._literals = None

    def literal(self, s):
        """The first line equal to `s` as a whole, ASCII case folded (constmap), or None: how
        spamcontrol's bhelocheck asks its badhelo lines before wildmat (a hit is bad whatever
        the '!' lines say)."""
        if self._literals is None:
            self._literals = self._index(map(fold, self.lines))
        return self._hit(self._literals.get(fold(s)))

    def matches(self, s):
        listed, who = False, None
        for i, (neg, pat) in enumerate(self._rules):
            if neg != listed:  # same sense as the verdict so far: cannot change it
                continue
            if wildmat(s, pat):
                listed, who = not neg, i
        return self._hit(who, exception=not listed)


class HostList(_Lines):
    """rcpthosts, relaydomains: exact host, or '.suffix' for any subdomain."""

    def __init__(self, lines, linenos=None):
        super().__init__(lines, linenos)
        self._map = self._index(map(self.key, self.lines))

    @staticmethod
    def key(line):
        """The host a (stripped) line lists, case folded: a final ':' (tcprules style) is dropped.
        The admin tools that edit rcpthosts find a domain's line by it (users.domaincontrols)."""
        return fold(line[:-1] if line.endswith(":") else line)

    def matches(self, host):
        h = fold(host)
        i, j = self._map.get(h), h.find(".")
        while i is None and j >= 0:  # every suffix starting at a '.', longest first
            i, j = self._map.get(h[j:]), h.find(".", j + 1)
        return self._hit(i)


def _ip6(s):
    """RFC 5952 text of an IPv6 address (a.b.c.d if IPv4-mapped), or None.
    ipaddress is imported only once an IPv6 address shows up."""
    import ipaddress
    try:
        a = ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return str(a if a.ipv4_mapped is None else a.ipv4_mapped)


_IP4_PREFIX_CHARS, _IP6_PREFIX_CHARS = frozenset("0123456789."), frozenset("0123456789abcdef:.")


def _ip_text(text):
    """Is `text` an address as tcpserver writes a client's (dotted quad, RFC 5952 IPv6)?"""
    import ipaddress
    try:
        return str(ipaddress.ip_address(text)) == text
    except ValueError:
        return False


def _ip_prefix(p):
    """Can a client address as tcpserver writes it start with the prefix `p`? (a rough
    test: digits and dots for IPv4, hex digits and colons for IPv6)"""
    if ":" in p:
        return _IP6_PREFIX_CHARS.issuperset(p) and ":::" not in p
    return bool(p) and _IP4_PREFIX_CHARS.issuperset(p) and ".." not in p and not p.startswith(".") \
        and p.count(".") <= 3


class IPPrefixList(_Lines):
    """relayclients. The tcprules ':' terminator is optional; without it an entry
    ending in '.' (IPv4) or ':' (IPv6) is a textual prefix, else an exact address.

    IPv6 ambiguity ('2001:db8::': prefix '2001:db8:' + terminator, or an address?):
    the last ':' is the terminator only when what precedes it is a complete
    address not ending in ':' ('2001:db8::1:' = exactly 2001:db8::1); otherwise
    the entry is a prefix as written ('2001:db8:' and '2001:db8::' are prefixes).
    Client and exact IPv6 entries are compared in RFC 5952 form (inet_ntop's; not always
    TCPREMOTEIP's: ip6_fmt writes a lone zero group as '::'), so IPv6 prefixes must be
    written that way; IPv4-mapped ::ffff:a.b.c.d = a.b.c.d.
    An entry no client address can match (a CIDR '10.0.0.0/8', a tcprules line
    '1.2.3.4:allow', a name) lets nobody relay; its line numbers are in `malformed`
    for checkers."""

    def __init__(self, lines, linenos=None):
        super().__init__(lines, linenos)
        self._exact, self._prefixes = {}, []
        entries = []
        for i, line in enumerate(self.lines):
            e, full = fold(line), None
            if ":" in e[:-1]:
                if e.endswith(":"):
                    full = None if e.endswith("::") else _ip6(e[:-1])
                else:
                    full = _ip6(e) or e
            else:
                e = e[:-1] if e.endswith(":") else e
                full = None if e.endswith(".") else e
            if full is None:
                self._prefixes.append((e, i))
            else:
                self._exact.setdefault(full, i)
            entries.append((e, full))
        self._entries = entries

    @property
    def malformed(self):
        """Line numbers of the entries no client address can match (asked by checkers only:
        sessions do not pay for the test)."""
        return tuple(n for n, (e, full) in zip(self.linenos, self._entries)
                     if not (_ip_prefix(e) if full is None else _ip_text(full)))

    def matches(self, ip):
        ip = fold(ip)
        if ":" in ip:
            ip = _ip6(ip) or ip
        i = self._exact.get(ip)
        if i is None:
            i = next((k for p, k in self._prefixes if ip.startswith(p)), None)
        return self._hit(i)
