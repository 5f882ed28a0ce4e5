"""qmail's RFC 822 tokens (token822.c): parse, address lists, print back.

Bytes in, bytes out (qmail is 8-bit clean). The rules are qmail 1.03's, not
the email package's:
- parse(): white space (space, tab, CR, LF) separates tokens; `.,@<>:;` are
  one-character tokens; `(...)` a comment (nested parentheses are dropped,
  `\\x` is x), `"..."` a quoted string, `[...]` a domain literal, anything
  else an atom (`\\x` inside is x); an atom with a byte outside 32..126 or a
  `)`, `]` or `\\` in it is taken as a quoted string (atomcheck()), so it is
  written back in quotes. An unclosed comment, quote or literal, or a `)` or
  `]` where a token starts, does not parse.
- addrlist(): an address list read from right to left, as qmail does:
  `phrase <addr>`, `group: a, b;`, bare addresses; comments stay where they
  are (a comment inside a bare address ends up after it); two words in a row
  outside angle brackets are two addresses (a comma is put between them),
  and so are `<a> b` and `g: a; b`. A `>` without `<`, a `:` outside a group
  and a group inside a group do not parse; a `<` without `>` is part of an
  address. Each address is given to a callback in
  reverse token order (qmail's rewriting rules are written for that order);
  `<>` is given too, empty.
- unparse(): tokens back to text with qmail's spacing, folded after commas
  so that lines stay within 80 columns where they can (continuation lines
  start with two spaces), ending with a newline.
- unquote(): the envelope form of an address (quotes and comments dropped).
The other way, an envelope address as RFC 822 text, is qmailpy.proto.quote's.
"""

ATOM, QUOTE, LITERAL, COMMENT, LEFT, RIGHT, AT, COMMA, SEMI, COLON, DOT = range(1, 12)
SPECIALS = {ord("."): DOT, ord(","): COMMA, ord("@"): AT, ord("<"): LEFT, ord(">"): RIGHT,
            ord(":"): COLON, ord(";"): SEMI}
CHARS = {DOT: b".", COMMA: b",", AT: b"@", LEFT: b"<", RIGHT: b">", COLON: b":", SEMI: b";"}
WHITE = frozenset(b" \t\r\n")
NOT_ATOM = frozenset(b' \t\r\n(["<>;:@,.')
WORDS = (ATOM, QUOTE, LITERAL)
PHRASE = (COMMENT, ATOM, QUOTE, AT, DOT)     # what may stand before '<' or ':'
ESCAPED = frozenset(b'"[]()\\\r\n')
NOT_IN_ATOM = frozenset(b")]\\").union(range(32), range(127, 256))     # atomcheck()
LINELEN = 80


class ParseError(ValueError):
    """The text does not tokenize, or the address list does not parse."""


class Token:
    __slots__ = ("type", "text")

    def __init__(self, type, text=b""):
        self.type, self.text = type, text

    def __eq__(self, other):
        return isinstance(other, Token) and (self.type, self.text) == (other.type, other.text)

    def __repr__(self):
        return "Token(%d, %r)" % (self.type, self.text)


def _enclosed(data, i, close, nests):
    """(text, index after the closing char) of a comment, quote or literal opened at data[i]."""
    n = len(data)
    out = bytearray()
    level = 1
    while True:
        i += 1
        if i >= n:
            raise ParseError("unclosed %s" % chr(close))
        ch = data[i]
        if ch == close:
            level -= 1
            if not level:
                return bytes(out), i + 1
        elif nests and ch == 0x28:          # '(' inside a comment: nesting, dropped
            level += 1
        elif ch == 0x5C:                    # backslash: the next byte as it is
            i += 1
            if i >= n:
                raise ParseError("backslash at the end")
            out.append(data[i])
        else:
            out.append(ch)


def parse(data):
    """The tokens of `data` (bytes); ParseError when it does not tokenize."""
    tokens = []
    i, n = 0, len(data)
    while i < n:
        ch = data[i]
        if ch in WHITE:
            i += 1
        elif ch in SPECIALS:
            tokens.append(Token(SPECIALS[ch]))
            i += 1
        elif ch in (0x29, 0x5D):            # ')' or ']' where a token starts
            raise ParseError("unexpected %s" % chr(ch))
        elif ch == 0x28:
            text, i = _enclosed(data, i, 0x29, True)
            tokens.append(Token(COMMENT, text))
        elif ch == 0x22:
            text, i = _enclosed(data, i, 0x22, False)
            tokens.append(Token(QUOTE, text))
        elif ch == 0x5B:
            text, i = _enclosed(data, i, 0x5D, False)
            tokens.append(Token(LITERAL, text))
        else:
            out = bytearray()
            while True:
                if data[i] == 0x5C:
                    i += 1
                    if i >= n:
                        break
                out.append(data[i])
                i += 1
                if i >= n or data[i] in NOT_ATOM:
                    break
            tokens.append(Token(QUOTE if NOT_IN_ATOM.intersection(out) else ATOM, bytes(out)))
    return tokens


def addrlist(tokens, callback):
    """The tokens of a whole header field (name, ':', list) with each address replaced
    by what callback(address tokens, reversed, edited in place) leaves of it.

    token822_addrlist(), right to left: a ';' opens a group (ParseError inside one),
    its ':' closes it (ParseError outside one) and takes everything back to a comma
    as the group's name; a '>' takes the address back to its '<' (ParseError without
    one) and the phrase before it; a '<' anywhere else is part of an address; a word
    after a word (or after `<...>`) starts another address, with a comma put between."""
    out, addr = [], []

    def got():
        callback(addr)
        out.extend(addr)
        del addr[:]

    def flush(comma=False):
        if addr:
            got()
            if comma:
                out.append(Token(COMMA))

    ingroup, wordok = False, True
    beginning = 2
    t = len(tokens) - 1
    while t >= beginning:
        tok = tokens[t]
        if tok.type == SEMI:
            flush(comma=True)
            if ingroup:
                raise ParseError("';' inside a group")
            ingroup = wordok = True
        elif tok.type == COLON:
            flush()
            if not ingroup:
                raise ParseError("':' outside a group")
            ingroup = False
            while t >= beginning and tokens[t].type != COMMA:
                out.append(tokens[t])
                t -= 1
            if t >= beginning:
                out.append(tokens[t])
                t -= 1
            wordok = True
            continue
        elif tok.type == RIGHT:
            flush(comma=True)
            out.append(tok)
            t -= 1
            while t >= beginning and tokens[t].type != LEFT:
                addr.append(tokens[t])
                t -= 1
            got()                           # even for <>: Return-Path: <> is the null sender
            if t < beginning:
                raise ParseError("'>' without '<'")
            out.append(tokens[t])           # the '<'
            t -= 1
            while t >= beginning and tokens[t].type in PHRASE:
                out.append(tokens[t])
                t -= 1
            wordok = False
            continue
        elif tok.type in WORDS:
            if not wordok:
                flush(comma=True)
            wordok = False
            addr.append(tok)
            t -= 1
            continue
        elif tok.type == COMMA:
            flush()
            wordok = True
        elif tok.type != COMMENT:           # '@', '.', a '<' without '>': part of the address
            wordok = True
            addr.append(tok)
            t -= 1
            continue
        out.append(tok)                     # ';', ',', a comment (lexically a space)
        t -= 1
    flush()
    out.extend(reversed(tokens[:beginning]))
    out.reverse()
    return out


def _needspace(t1, t2):
    if not t1:
        return False
    if t1 in (COLON, COMMA) or t2 == LEFT:
        return True
    return t1 in (ATOM, LITERAL, QUOTE, COMMENT) and t2 in (ATOM, LITERAL, QUOTE, COMMENT)


_OPEN = {QUOTE: b'"', LITERAL: b"[", COMMENT: b"("}
_CLOSE = {QUOTE: b'"', LITERAL: b"]", COMMENT: b")"}


def escape(text):
    if not ESCAPED.intersection(text):
        return text
    return b"".join(b"\\" + bytes((c,)) if c in ESCAPED else bytes((c,)) for c in text)


def unparse(tokens, linelen=LINELEN):
    """Text of `tokens` with a final newline, folded after commas as token822_unparse()."""
    s = bytearray()
    state = [0, None]                       # start of the current line, pending break

    def fold():
        lineb, linee = state
        if linee is not None and (not linelen or len(s) - lineb <= linelen):
            del s[linee:linee + 2]          # the line fits: take the previous break back
            s.extend(b"\n ")
            state[1] = len(s) - 2
        else:
            if linee is not None:
                state[0] = linee + 1
            state[1] = len(s)
            s.extend(b"\n ")

    last = 0
    for tok in tokens:
        if _needspace(last, tok.type):
            s.append(0x20)
        last = tok.type
        if tok.type == COMMA:
            s.append(0x2C)
            fold()
        elif tok.type in CHARS:
            s.extend(CHARS[tok.type])
        else:
            s.extend(_OPEN.get(tok.type, b""))
            s.extend(escape(tok.text))
            s.extend(_CLOSE.get(tok.type, b""))
    fold()
    del s[-1]
    return bytes(s)


def unquote(tokens):
    """The plain address of `tokens` (in order): quotes dropped, literals bracketed, comments skipped."""
    out = bytearray()
    for tok in tokens:
        if tok.type in CHARS:
            out.extend(CHARS[tok.type])
        elif tok.type == LITERAL:
            out.extend(b"[" + tok.text + b"]")
        elif tok.type in (ATOM, QUOTE):
            out.extend(tok.text)
    return bytes(out)
