"""qmail-inject's address rewriting (rwgeneric() of qmail-inject.c).

An address comes as its tokens in reverse order (see token822.addrlist) and
is edited in place, in this order:
- `<>` and `<foo@[]>` are left alone;
- a source route is dropped: `@a,@b:user@host` -> `user@host`;
- a trailing `.` or `@` is dropped (`user@host.`, `user@`);
- no `@`: `@defaulthost` is appended;
- a host ending in `+`: the `+` is replaced by `.plusdomain`;
- a host without a dot (and not a [literal]): `.defaultdomain` is appended.
"""
from qmailpy.inject import token822 as T
from qmailpy.proto.quote import quote2


class ControlTokens:
    """The tokens of `@defaulthost`, `.defaultdomain` and `.plusdomain`."""

    def __init__(self, defaulthost, defaultdomain, plusdomain):
        """Arguments are bytes; the first text that does not tokenize, in qmail's order
        (getcontrols(): `.defaultdomain`, `@defaulthost`, `.plusdomain`), raises
        token822.ParseError with that text as its argument."""
        self.defaultdomain = _parse(b"." + defaultdomain)
        self.defaulthost = _parse(b"@" + defaulthost)
        self.plusdomain = _parse(b"." + plusdomain)


def _parse(text):
    try:
        return T.parse(text)
    except T.ParseError:
        raise T.ParseError(text) from None


def _append(addr, tokens):
    """Add `tokens` (in order) at the end of a reversed address."""
    addr[0:0] = [T.Token(t.type, t.text) for t in reversed(tokens)]


def _route(addr):
    if addr[-1].type == T.AT:
        while addr:
            if addr.pop().type == T.COLON:
                return


def _plus(addr, tokens):
    last = addr[0]
    if last.type != T.ATOM or not last.text.endswith(b"+"):
        return
    addr[0] = T.Token(T.ATOM, last.text[:-1])
    _append(addr, tokens)


def _nodot(addr, tokens):
    for types in ((T.DOT,), (T.LITERAL,)):
        for tok in addr:
            if tok.type in types:
                return
            if tok.type == T.AT:
                break
    _append(addr, tokens)


def generic(addr, ctl):
    """rwgeneric(): rewrite the reversed address `addr` in place."""
    if not addr:
        return
    if len(addr) >= 2 and addr[1].type == T.AT and addr[0].type == T.LITERAL and not addr[0].text:
        return
    _route(addr)
    for drop in (T.DOT, T.AT):
        if not addr:
            return
        if addr[0].type == drop:
            del addr[0]
    # never empty here: an address the AT drop would empty was [@] or [@ .], whose first
    # token, @, had _route() take it whole (qmail's '<@> -> <>' check after rwextraat is dead too)
    if not any(t.type == T.AT for t in addr):
        _append(addr, ctl.defaulthost)
    _plus(addr, ctl.plusdomain)
    _nodot(addr, ctl.defaultdomain)


def envelope(addr):
    """The envelope form of a reversed address."""
    return T.unquote(reversed(addr))


def rewrite_text(text, ctl):
    """An address given as envelope text (-f, a recipient argument), rewritten: bytes.

    ParseError when it does not tokenize (qmail-inject: "unable to parse address").
    """
    addr = T.parse(quote2(text))
    addr.reverse()
    generic(addr, ctl)
    return envelope(addr)
