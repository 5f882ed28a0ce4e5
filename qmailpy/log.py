"""The one home of log lines: what may go into a line, and how a line is written.

Every program logs to stderr, one line per event, in qmail's style: words
separated by spaces. Whatever comes from outside (client input, addresses,
file contents, error texts) can never split a line or forge one: escape()
writes control characters (C0, DEL, C1, the Unicode line and paragraph
separators, anything not printable) as \\n \\r \\t \\0, \\xHH (C0 and DEL; from
\\x80 up: a byte that is not UTF-8) or \\uHHHH, and a backslash as \\\\; every
other character, spaces included, stays as it is. Nothing is lost or ambiguous.

Shapes of line:
  Logger        `program: pid event key=value ...` (qmail-smtpd). A value
                with a space or a '"' is written "quoted" (with \\" inside),
                so one field can never pose as another: helo="x ip=1.2.3.4".
  write_line    a free-text line: qmail-queue's `qmail-queue: reason`, the
                alerts of qmail-todo, qmail-lspawn and qmail-remote.
  Log           qmail-send's log (its lines, and qmail-todo's L records); a line
                of qmail's built with qmail_safe() is written as it is (Log.qmail).
  qmail_safe    qsutil.c logsafe(), for the parts of qmail-send's lines that
                qmail writes that way (`did_0+0+1/`), byte for byte as qmail.
  ucspi_safe    tcpserver.c safecats(), for the fields of qmail-tcpserver's
                `tcpserver: ok ...` lines, byte for byte as tcpserver.
  bug_text      an exception nobody expected (a bug), never a multi-line traceback
                (multilog would make each of its lines an event of its own):
                `TYPE: TEXT at FILE:LINE:FUNCTION < FILE:LINE:FUNCTION ...`, the
                innermost frames first, each called from the next.
  guard         the one rule for every program's main(): a bug is the line
                `PROGRAM: internal bug: <bug_text>` on fd 2 and the program's
                exit code for trouble (exitcodes.EXIT_TROUBLE, 111, for most).
"""
import os

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", "\\": "\\\\"}
_QSUTIL = bytes((0x2F if b == 0x0A else b if 33 <= b <= 126 and b != 0x25 else 0x5F) for b in range(256))


def _char(c):
    short = _SHORT.get(c)
    if short is not None:
        return short
    if c == " " or c.isprintable():
        return c
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:            # a byte that was not UTF-8 (surrogateescape): \x80-\xff
        return "\\x%02x" % (n - 0xDC00)
    if n < 0x80:                         # C0 and DEL: the character and the byte are the same
        return "\\x%02x" % n
    return "\\u%04x" % n if n < 0x10000 else "\\U%08x" % n


def escape(text):
    """`text` (str, bytes or anything str() takes) with control characters and '\\' escaped."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "surrogateescape")
    else:
        text = str(text)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_char(c) for c in text)


def field(value):
    """One key=value value: escaped, and quoted when it holds a space or a quote."""
    text = escape(value)
    if " " in text or '"' in text:
        return '"%s"' % text.replace('"', '\\"')
    return text


def fields(event, items):
    """`event key=value ...` for (key, value) pairs."""
    return event + "".join(" %s=%s" % (k, field(v)) for k, v in items)


def _write(fd, line):
    """One line that is already safe, in as few writes as the pipe allows; never raises."""
    data = (line + "\n").encode("utf-8", "surrogateescape")
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass                 # a log that cannot be written must not stop mail


def write_line(fd, text):
    """Write `text` as one line: escaped, newline added."""
    _write(fd, escape(text))


def write_safe_line(fd, text):
    """Write a line that is safe as it is (tcpserver's `ok`/`deny` line, its fields through
    ucspi_safe: bytes 33..126 only), newline added; a '\\' stays one, as tcpserver writes it."""
    _write(fd, text)


def qmail_safe(text):
    """qsutil.c logsafe(): newline -> '/', '%' and bytes outside 33..126 (space too) -> '_'."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return bytes(text).translate(_QSUTIL).decode("ascii")


def ucspi_safe(text, colons=False):
    """tcpserver.c safecats(): at most 100 bytes, each outside 33..126 or '%' or ':' as '?';
    a longer text ends in "..." (tcpserver adds it after 100 bytes even when nothing follows).
    colons: the IPv6 patch's safecats (Debian's ucspi-tcp-ipv6), which leaves ':' alone."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    text = bytes(text)
    odd = (0x25,) if colons else (0x25, 0x3A)
    out = "".join("?" if b < 33 or b > 126 or b in odd else chr(b) for b in text[:100])
    return out + "..." if len(text) >= 100 else out


class Logger:
    """qmail-smtpd's log: `program: pid event key=value ...`, one write per line."""
    __slots__ = ("prefix", "fd")

    def __init__(self, program, pid, fd=2):
        self.prefix = "%s: %d " % (program, pid)
        self.fd = fd

    def __call__(self, event, **kw):
        _write(self.fd, self.prefix + fields(event, kw.items()))


class Log:
    """qmail-send's log on one fd: whole lines, never raises."""
    __slots__ = ("fd",)

    def __init__(self, fd=2):
        self.fd = fd

    def line(self, text):
        write_line(self.fd, text[:-1] if text.endswith("\n") else text)

    def qmail(self, text):
        """A line of qmail's whose outside values went through qmail_safe() (`info msg`,
        `starting delivery`, `delivery N:`): written as qmail writes it, so a '\\' stays
        one for qmailanalog and greps; a line that is not all printable ASCII (no such
        line is) is escaped as line() does. A newline at the end (qmail-todo.c ends its
        L records with one) is the line's own."""
        text = text[:-1] if text.endswith("\n") else text
        _write(self.fd, text if text.isascii() and text.isprintable() else escape(text))

    def raw(self, data):
        """A line qmail-todo made (its L records): as qmail() does."""
        self.qmail(bytes(data).decode("utf-8", "surrogateescape"))


BUG_FRAMES = 4                  # the innermost frames a bug line names


def _where(tb):
    """FILE:LINE:FUNCTION of the innermost BUG_FRAMES frames of a traceback, innermost first;
    a file of qmailpy as qmailpy/..., any other by its base name. Read from the frames
    themselves: no `traceback` module (qmail-smtpd's session imports nothing heavy)."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    out = []
    for filename, line, function in reversed(frames[-BUG_FRAMES:]):
        cut = filename.rfind(os.sep + "qmailpy" + os.sep)
        out.append("%s:%s:%s" % (filename[cut + 1:] if cut >= 0 else os.path.basename(filename), line, function))
    return out


def bug_text(exc):
    """`TYPE: TEXT at FILE:LINE:FUNCTION < ...` for an exception nobody expected (one line
    once escaped); never raises."""
    try:
        text = str(exc)
    except Exception:               # noqa: BLE001 - a __str__ that fails is one more bug
        text = "(unprintable)"
    try:
        where = _where(exc.__traceback__)
    except Exception:               # noqa: BLE001 - the type and text are worth writing anyway
        where = []
    return "%s: %s%s" % (type(exc).__name__, text, " at " + " < ".join(where) if where else "")


def write_bug(program, exc, fd=2):
    """Write `PROGRAM: internal bug: <bug_text>` as one line; never raises."""
    try:
        write_line(fd, "%s: internal bug: %s" % (program, bug_text(exc)))
    except BaseException:           # noqa: BLE001 - the caller's exit code must still be reached
        pass


def guard(program, code):
    """Decorate a program's main(): an Exception that escapes it (a bug) is one line on fd 2
    (write_bug) and `code` returned, the program's exit code for trouble. SystemExit and
    KeyboardInterrupt pass through with their meaning."""
    def wrap(main):
        def guarded(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a bug: one log line, the trouble exit code
                write_bug(program, e.with_traceback(e.__traceback__.tb_next))     # from main() in
                return code
        guarded.__name__, guarded.__qualname__ = main.__name__, main.__qualname__
        guarded.__doc__, guarded.__module__, guarded.__wrapped__ = main.__doc__, main.__module__, main
        guarded.trouble = code
        return guarded
    return wrap
