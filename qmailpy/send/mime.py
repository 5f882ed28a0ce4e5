"""A message's MIME structure read in blocks, in bounded memory: lines, header fields, boundaries.

Lines cuts blocks into lines (a line longer than LINE_MAX becomes a Long: its
first HEAD bytes), ContentType follows a header's Content-Type field (at most
FIELD_MAX bytes of it), HeaderScan finds where a header ends and its multipart
boundary. Only an RFC 2046 boundary (1-70 bchars) is ever returned. Used by the
bounce copy (qmailpy.send.bouncecopy).
"""

LINE_MAX = 65536          # longest line looked at (RFC 5322 allows 998)
FIELD_MAX = 16384         # longest Content-Type value looked at
HEAD = 64                 # bytes of a longer line kept to recognise its field name
BOUNDARY_MAX = 70
BCHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? ")
FTEXT = bytes(c for c in range(33, 127) if c != 58)          # a field name's bytes (not ':')


def valid_boundary(value):
    """RFC 2046: 1-70 bchars, the last not a space (so no CR, LF, NUL, quote or backslash)."""
    return 0 < len(value) <= BOUNDARY_MAX and value[-1:] != b" " and BCHARS.issuperset(value)


def multipart_boundary(content_type):
    """The boundary of a multipart Content-Type value when it is a valid one, else None."""
    value = boundary_param(content_type)
    return value if value is not None and valid_boundary(value) else None


def boundary_param(content_type):
    """The boundary parameter of a multipart Content-Type value as written (unchecked), or None."""
    if content_type is None:
        return None
    media, _, params = content_type.partition(b";")
    if not media.strip().lower().startswith(b"multipart/"):
        return None
    rest = params
    while rest:
        rest = rest.lstrip(b" \t;")
        name, eq, rest = rest.partition(b"=")
        if not eq:
            return None
        rest = rest.lstrip(b" \t")
        if rest[:1] == b'"':
            end = 1
            value = bytearray()
            while end < len(rest) and rest[end:end + 1] != b'"':
                if rest[end:end + 1] == b"\\" and end + 1 < len(rest):
                    end += 1
                value += rest[end:end + 1]
                end += 1
            value, rest = bytes(value), rest[end + 1:]
        else:
            value, _, rest = rest.partition(b";")
            value = value.strip()
        if name.strip().lower() == b"boundary":
            return value or None
    return None


class Long:
    """A line longer than LINE_MAX: its first HEAD bytes, and whether it is all CR (blank)."""
    __slots__ = ("head", "blank")

    def __init__(self, head, blank):
        self.head, self.blank = head, blank


def blank(line):
    """An empty line: nothing but CRs before its LF."""
    if type(line) is Long:
        return line.blank
    return not line.rstrip(b"\r\n")


class Lines:
    """Cuts blocks into lines (each with its LF; the last may lack it), a Long for longer ones.

    With `dashes` set, lines not starting with "--" may be skipped unseen (a
    multipart body: only delimiters matter). `at` is the offset just past the
    last line handed out.
    """
    __slots__ = ("pend", "size", "long", "offset", "at", "dashes")

    def __init__(self):
        self.pend, self.size, self.long = [], 0, None
        self.offset = self.at = 0
        self.dashes = False

    def _add(self, piece):
        """More of the unfinished line."""
        if self.long is not None:
            if self.long.blank and piece.strip(b"\r"):
                self.long.blank = False
            return
        self.size += len(piece)
        if self.size > LINE_MAX:
            whole = b"".join(self.pend) + piece
            self.long, self.pend = Long(whole[:HEAD], not whole.strip(b"\r")), []
        else:
            self.pend.append(piece)

    def _end(self, nl):
        line = self.long if self.long is not None else b"".join(self.pend) + nl
        self.pend, self.size, self.long = [], 0, None
        return line

    def feed(self, data):
        """Yield the lines this block completes (a generator: `dashes` may change between lines)."""
        base, n, pos = self.offset, len(data), 0
        self.offset += n
        if self.size or self.long is not None:
            nl = data.find(b"\n")
            if nl < 0:
                self._add(data)
                return
            self._add(data[:nl])
            self.at = base + nl + 1
            yield self._end(b"\n")
            pos = nl + 1
        while pos < n:
            if self.dashes and not data.startswith(b"--", pos):
                k = data.find(b"\n--", pos)
                if k >= 0:
                    pos = k + 1
                else:
                    last = data.rfind(b"\n", pos)
                    if last >= 0:
                        pos = last + 1
                    self.at = base + pos
                    if pos == n:
                        return
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._add(data[pos:])
                return
            self.at = base + nl + 1
            if nl - pos <= LINE_MAX:
                yield data[pos:nl + 1]
            else:
                self._add(data[pos:nl])
                yield self._end(b"\n")
            pos = nl + 1

    def finish(self):
        """The last line when the data did not end with LF."""
        if self.size or self.long is not None:
            self.at = self.offset
            yield self._end(b"")


class ContentType:
    """The unfolded value of the first Content-Type field, fed one header line at a time."""
    __slots__ = ("value", "state")
    WANT = b"content-type:"

    def __init__(self):
        self.value, self.state = None, 0          # 0 not seen, 1 in it, 2 over

    def line(self, line):
        if self.state == 2:
            return
        if type(line) is Long:                    # too long to be honest: no boundary
            if self.state == 1:
                self.state = 2
                if line.head[:1] in (b" ", b"\t"):
                    self.value = None
            elif line.head[:len(self.WANT)].lower() == self.WANT:
                self.value, self.state = None, 2
            return
        if self.state == 1:
            if line[:1] in (b" ", b"\t"):
                self.value += b" " + line.strip()
                if len(self.value) > FIELD_MAX:
                    self.value, self.state = None, 2
                return
            self.state = 2
        elif line[:len(self.WANT)].lower() == self.WANT:
            self.value, self.state = line[len(self.WANT):].strip(), 1
            if len(self.value) > FIELD_MAX:
                self.value, self.state = None, 2

    def boundary(self):
        return multipart_boundary(self.value)


class HeaderScan:
    """Reads the message's header: `end` (offset past its empty line, None when it has none)
    and the multipart `boundary` (valid, and only when the header has an end)."""
    __slots__ = ("lines", "ctype", "end", "done")

    def __init__(self):
        self.lines, self.ctype = Lines(), ContentType()
        self.end, self.done = None, False

    def feed(self, data):
        self._take(self.lines.feed(data))

    def finish(self):
        self._take(self.lines.finish())
        self.done = True

    def _take(self, lines):
        for line in lines:
            if blank(line):
                self.end, self.done = self.lines.at, True
                return
            self.ctype.line(line)

    @property
    def boundary(self):
        return self.ctype.boundary() if self.end is not None else None


def field_line(line, continued):
    """A header field line (name: value) or, after one, a continuation; no bare CR, no NUL."""
    if line[:1] in (b" ", b"\t"):
        if not continued:
            return False
    else:
        name = line[:max(line.find(b":"), 0)].rstrip(b" \t")
        if not name or name.translate(None, FTEXT):
            return False
    body = line[:-1] if line[-1:] == b"\n" else line
    if body[-1:] == b"\r":
        body = body[:-1]
    return b"\r" not in body and b"\0" not in body
