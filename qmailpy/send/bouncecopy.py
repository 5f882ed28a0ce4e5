"""What of the bounced message goes into a bounce (H-Sphere's Painceira/Lindberg patch), streamed.

H-Sphere's qmail carries Jose Luis Painceira's patch, which deletes the body
of the bounced message, built on Fred Lindberg's patch, which keeps a MIME
message's structure. So the copy keeps the message's header and, for a
multipart message, each part's delimiter line and header fields (nested
multiparts too), dropping every body, preamble and epilogue. The multipart
boundary is returned so the bounce can declare itself multipart with it and
read as the original's (now empty) parts.

The message is read in blocks (qmailpy.send.mime), once for its header
(HeaderScan: where it ends, its boundary) and once for the copy
(copy_chunks), in time linear in its size and memory bounded by a constant:
a line of at most LINE_MAX bytes
(a longer one is never a delimiter nor a part-header field), a stack of at
most DEPTH_MAX boundaries with a dict from boundary to its places in the
stack, and a Content-Type value of at most FIELD_MAX bytes. Only an RFC 2046
boundary (1-70 bchars) is followed or returned, so nothing from the message
but such a boundary ever leaves the copy; a part header keeps only header
fields (name: value, continuations), its first other line starts the body.
"""
import io
from collections import namedtuple

from qmailpy.send.mime import ContentType, HeaderScan, Long, Lines, blank, field_line

BLOCK = 65536             # bytes read at a time
DEPTH_MAX = 64            # most nested multiparts followed
STRIPPED = b"\n\n--- End of message stripped.\n"

Skeleton = namedtuple("Skeleton", "copy boundary")


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
        elif field_line(line, self.fields > 0):
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
