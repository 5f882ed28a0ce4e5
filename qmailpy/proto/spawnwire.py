"""The qmail-send <-> qmail-lspawn/qmail-rspawn pipe protocol, big-concurrency form.

One codec for both ends. Delivery numbers are 2 bytes little-endian
(Johannes Erdfelt's big-concurrency patch), everywhere:

  spawn -> send, once at start:  <limit, 2 bytes>        (its largest concurrency)
  send -> spawn, per delivery:   <delnum><messid>\\0<sender>\\0<recipient>\\0
  spawn -> send, per delivery:   <delnum><K|Z|D><text>\\0

messid is `<split>/<id>`, relative to queue/mess. K = delivered, Z = try
again later, D = permanent failure (bounce). qmail-send trusts no report
longer than REPORTMAX bytes (qmail-send.c). Pure: no I/O.
"""
from collections import namedtuple

WIDTH = 2                      # bytes per delivery number
MAX_DELNUM = (1 << (8 * WIDTH)) - 1
REPORTMAX = 10000              # qmail-send.c: longest report line kept
SUCCESS, DEFERRAL, FAILURE = b"K", b"Z", b"D"

Command = namedtuple("Command", "delnum messid sender recipient")
Report = namedtuple("Report", "delnum kind text")
Command.__doc__ = "One delivery for a spawn: fields are bytes except delnum."
Report.__doc__ = "One answer from a spawn: kind is b'K', b'Z', b'D' (or a mangled byte)."


def encode_delnum(n):
    if not 0 <= n <= MAX_DELNUM:
        raise ValueError("delivery number out of range: %r" % (n,))
    return n.to_bytes(WIDTH, "little")


def decode_delnum(b):
    return int.from_bytes(b[:WIDTH], "little")


def encode_limit(n):
    """What a spawn writes first: how many deliveries it can run at once."""
    return encode_delnum(min(n, MAX_DELNUM))


def _nul_free(field, name):
    b = field.encode("utf-8", "surrogateescape") if isinstance(field, str) else bytes(field)
    if b"\0" in b:
        raise ValueError("%s cannot contain NUL" % name)
    return b


def encode_command(delnum, messid, sender, recipient):
    return b"".join((encode_delnum(delnum), _nul_free(messid, "messid"), b"\0",
                     _nul_free(sender, "sender"), b"\0", _nul_free(recipient, "recipient"), b"\0"))


def encode_report(delnum, kind, text=b""):
    """A report (kind and text bytes); text stops at its first NUL, as qmail-lspawn's report() copies it."""
    text = bytes(text).split(b"\0", 1)[0]
    return encode_delnum(delnum) + bytes(kind) + text + b"\0"


class CommandDecoder:
    """Incremental decoder of qmail-send's commands (spawn.c getcmd's stages)."""
    __slots__ = ("_buf", "_fields")

    def __init__(self):
        self._buf = bytearray()
        self._fields = []

    def feed(self, data):
        """Consume bytes; return the list of complete Commands."""
        out = []
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if not self._fields:
                if len(buf) - pos < WIDTH:
                    break
                self._fields.append(decode_delnum(buf[pos:pos + WIDTH]))
                pos += WIDTH
            nul = buf.find(b"\0", pos)
            if nul < 0:
                break
            self._fields.append(bytes(buf[pos:nul]))
            pos = nul + 1
            if len(self._fields) == 4:
                out.append(Command(*self._fields))
                self._fields = []
        del buf[:pos]
        return out

    @property
    def pending(self):
        """True in the middle of a command (end of input there loses it)."""
        return bool(self._fields or self._buf)


class ReportDecoder:
    """Incremental decoder of a spawn's output, as qmail-send reads it.

    The first WIDTH bytes are the spawn's limit (`limit`, None until read);
    then each \\0 ends a report. A line is cut to REPORTMAX bytes, so a
    misbehaving spawn cannot make qmail-send hold unbounded text.
    """
    __slots__ = ("limit", "_buf", "_skipping")

    def __init__(self, expect_limit=True):
        self.limit = None if expect_limit else 0
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data):
        """Consume bytes; return the list of complete Reports."""
        out = []
        pos, end = 0, len(data)
        if self.limit is None:
            take = min(WIDTH - len(self._buf), end)
            self._buf += data[:take]
            pos = take
            if len(self._buf) < WIDTH:
                return out
            self.limit = decode_delnum(self._buf)
            self._buf.clear()
        while pos < end:
            # a NUL among the delivery number's bytes is part of the number, not the end
            nul = data.find(b"\0", pos + max(0, WIDTH - len(self._buf)))
            stop = end if nul < 0 else nul
            if not self._skipping:
                room = REPORTMAX - len(self._buf)
                self._buf += data[pos:min(stop, pos + room)]
                if stop - pos > room:
                    self._skipping = True
            if nul < 0:
                break
            pos = nul + 1
            line, self._skipping = bytes(self._buf), False
            self._buf.clear()               # WIDTH bytes at least: a NUL among them is no end (above)
            out.append(Report(decode_delnum(line), line[WIDTH:WIDTH + 1], line[WIDTH + 1:]))
        return out
