"""Split the SMTP command stream into lines, with qmail's line-ending rules.

A command line ends at LF; one CR before it is dropped. While control/newline
is 0 a bare LF (no CR before it) is refused with qmail's smtplf reply, and a
CR anywhere else in a command line is refused in every mode: both are what
SMTP smuggling is made of. NUL bytes and lines over MAX_LINE octets get
their own errors; an overlong line is discarded unparsed, whatever its ending
(it may arrive across reads, so its ending cannot decide its reply).
"""
MAX_LINE = 1000     # octets of a command line, without its line ending


class Line:
    __slots__ = ("text", "bare_lf", "error")

    def __init__(self, text="", bare_lf=False, error=None):
        self.text, self.bare_lf, self.error = text, bare_lf, error

    def __repr__(self):
        return "Line(%r, bare_lf=%r, error=%r)" % (self.text, self.bare_lf, self.error)


class LineReader:
    def __init__(self, allow_bare_lf=False):
        self.allow_bare_lf = allow_bare_lf
        self.discarding = False     # inside an overlong line

    def next_line(self, buf):
        """(Line or None, unconsumed bytes). None means: need more input."""
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > MAX_LINE + 1:
                self.discarding = True
                return None, b""
            return None, buf
        raw, rest = buf[:i], buf[i + 1:]
        if self.discarding:
            self.discarding = False
            return Line(error="toolong"), rest
        bare = not raw.endswith(b"\r")
        if not bare:
            raw = raw[:-1]
        if len(raw) > MAX_LINE:           # judged before its ending, as a line discarded
            return Line(error="toolong"), rest      # across reads must be: same reply either way
        if (bare and not self.allow_bare_lf) or b"\r" in raw:
            return Line(bare_lf=bare, error="straylf"), rest
        if b"\0" in raw:
            return Line(error="nul"), rest
        return Line(raw.decode("utf-8", "surrogateescape"), bare), rest
