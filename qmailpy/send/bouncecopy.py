"""What of the bounced message goes into a bounce (H-Sphere's Painceira/Lindberg patch), streamed.

H-Sphere's qmail carries Jose Luis Painceira's patch, which deletes the body
of the bounced message, built on Fred Lindberg's patch, which keeps a MIME
message's structure. So the copy keeps the message's header and, for a
multipart message, each part's delimiter line and header fields (nested
multiparts too), dropping every body, preamble and epilogue. The multipart
boundary is returned so the bounce can declare itself multipart with it and
read as the original's (now empty) parts.

The message is read in blocks, once for its header (HeaderScan: where it
ends, its boundary) and once for the copy (copy_chunks), in time linear in
its size and memory bounded by a constant: a line of at most LINE_MAX bytes
(a longer one is never a delimiter nor a part-header field), a stack of at
most DEPTH_MAX boundaries with a dict from boundary to its places in the
stack, and a Content-Type value of at most FIELD_MAX bytes. Only an RFC 2046
boundary (1-70 bchars) is followed or returned, so nothing from the message
but such a boundary ever leaves the copy; a part header keeps only header
fields (name: value, continuations), its first other line starts the body.
"""
import io
from collections import namedtuple

BLOCK = 65536             # bytes read at a time
LINE_MAX = 65536          # longest line looked at (RFC 5322 allows 998)
FIELD_MAX = 16384         # longest Content-Type value looked at
DEPTH_MAX = 64            # most nested multiparts followed
HEAD = 64                 # bytes of a longer line kept to recognise its field name
BOUNDARY_MAX = 70
BCHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=? ")
FTEXT = bytes(c for c in range(33, 127) if c != 58)          # a field name's bytes (not ':')
STRIPPED = b"\n\n--- End of message stripped.\n"

Skeleton = namedtuple("Skeleton", "copy boundary")


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


def _field(line, continued):
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


class SkeletonBody:
    """The MIME skeleton of a multipart body (what follows the header), fed in blocks."""
    __slots__ = ("lines", "stack", "where", "ctype", "inpart", "fields", "done")

    def __init__(self, top):
        self.lines = Lines()
        self.lines.dashes = True
        self.stack, self.where = [top], {top: [0]}
        self.ctype, self.inpart, self.fields, self.done = ContentType(), False, 0, False

    def feed(self, data):
        return self._take(self.lines.feed(data))

    def finish(self):
        return self._take(self.lines.finish())

    def _take(self, lines):
        out = []
        for line in lines:
            self._line(line, out)
            if self.done:
                break
        return b"".join(out)

    def _line(self, line, out):
        if type(line) is Long:                   # never a delimiter nor a header field
            if self.inpart:
                self._end_part()
            return
        dashes = line[:2] == b"--"
        if dashes and self._delimit(line, out):
            return
        if not self.inpart:
            return                               # a body, preamble or epilogue line
        if blank(line):
            out.append(line)
            self._end_part()
        elif _field(line, self.fields > 0):
            out.append(line)
            self.fields += 1
            self.ctype.line(line)
        else:                                    # not a header field: the part's body starts here
            self._end_part()
            if dashes:
                self._delimit(line, out)

    def _delimit(self, line, out):
        """Take the line when it delimits an open boundary: True."""
        hit = self._delimiter(line)
        if hit is None:
            return False
        if self.inpart:
            self._end_part()
        k, closing = hit
        self._cut(k + 1)
        out.append(line if line[-1:] == b"\n" else line + b"\n")
        if closing:
            self._cut(k)
            self.done = not self.stack
        else:
            self.inpart, self.fields = True, 0
            self.ctype.__init__()
            self.lines.dashes = False
        return True

    def _delimiter(self, line):
        """(stack index, closing?) of the innermost open boundary the line delimits, or None."""
        text = line.rstrip(b" \t\r\n")
        got = self.where.get(text[2:])
        k, closing = (got[-1], False) if got else (-1, False)
        if text[-2:] == b"--":
            got = self.where.get(text[2:-2])
            if got and got[-1] > k:
                k, closing = got[-1], True
        return None if k < 0 else (k, closing)

    def _cut(self, depth):
        while len(self.stack) > depth:
            b = self.stack.pop()
            places = self.where[b]
            places.pop()
            if not places:
                del self.where[b]

    def _end_part(self):
        inner = self.ctype.boundary()
        self.inpart = False
        self.lines.dashes = True
        if inner is not None and len(self.stack) < DEPTH_MAX:
            self.where.setdefault(inner, []).append(len(self.stack))
            self.stack.append(inner)


class Limit:
    """bouncemaxbytes: at most maxbytes of the copy (0 = all), then STRIPPED if there was more."""
    __slots__ = ("left", "full")

    def __init__(self, maxbytes):
        self.left, self.full = (maxbytes or None), False

    def take(self, data):
        if self.left is None or self.full:
            return b"" if self.full else data
        if len(data) <= self.left:
            self.left -= len(data)
            return data
        self.full = True
        return data[:self.left] + STRIPPED


def scan_chunks(mess, scan):
    """Feed the message's header to `scan`, a block at a time; yields b"" after each (work done)."""
    while not scan.done:
        data = mess.read(BLOCK)
        if not data:
            scan.finish()
            return
        scan.feed(data)
        yield b""


def copy_chunks(mess, scan, maxbytes, whole=False):
    """The copy for the bounce in chunks of about a block: the header as it is, then the
    skeleton of a multipart body (scan: a finished HeaderScan), or the whole message."""
    mess.seek(0)
    limit = Limit(maxbytes)
    body = None if whole or scan.boundary is None else SkeletonBody(scan.boundary)
    end = None if whole else scan.end
    pos = 0
    while not limit.full:
        data = mess.read(BLOCK)
        if not data:
            if body is not None:
                yield limit.take(body.finish())
            return
        if end is None or pos + len(data) <= end:
            out = data
        else:
            cut = max(end - pos, 0)
            out = data[:cut]
            if body is None:
                yield limit.take(out)
                return
            out += body.feed(data[cut:])
            if body.done:
                yield limit.take(out)
                return
        pos += len(data)
        yield limit.take(out)


def skeleton(mess):
    """The header and MIME skeleton of a message (bytes), and its boundary (or None)."""
    f = io.BytesIO(mess)
    scan = HeaderScan()
    for _ in scan_chunks(f, scan):
        pass
    return Skeleton(b"".join(copy_chunks(f, scan, 0)), scan.boundary)


def limit(copy, maxbytes):
    """bouncemaxbytes on a whole copy: at most maxbytes (0 = all), marked when cut."""
    return Limit(maxbytes).take(copy)
