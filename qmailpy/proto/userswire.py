"""The qmail-usersd socket protocol: one question, one answer, each a line. One codec for both ends.

A line is a word and its fields, separated by single spaces, ended by LF:

  client -> service   AUTH <mech> <login> <secret> <challenge>   (CRAM-MD5: secret is the hex digest)
                      RCPT <address>                              (chkuser)
                      RELAY <ip> <since> <window>                 (POP-before-SMTP)
                      ADDR <name> <domain>                        (the mailbox an address goes to)
                      SRS <address> <now>                         (an SRS recipient's status)
                      AUTHBEGIN <ip> <limit> <window> <now>       (authfailshared: count a password check)
                      AUTHFORGET <ip> <check>                     (authfailshared: it does not count)
  service -> client   YES | NO                                    (AUTH, RELAY)
                      OK | NOUSER | NOTOURS                       (RCPT)
                      FOUND <address> | NONE                      (ADDR)
                      STATUS <status> <error>                     (SRS)
                      COUNTED <checks> <check> | LOCKED           (AUTHBEGIN: counted, or limit reached)
                      LOCAL <reason>                              (AUTHBEGIN/AUTHFORGET: count per host)
                      OK                                          (AUTHFORGET)
                      TEMP <reason>                               (cannot tell now: 451/454)
                      REFUSED <reason>                            (not a caller it answers; then closed)
                      BAD <reason>                                (not a question; then closed)

Fields are bytes; every byte outside printable ASCII, the space and '%' are
written %XX, so a field holds anything (a password with spaces, NUL, 8-bit)
and an empty field is simply empty. A line is at most MAX_LINE bytes with its
LF: longer is a protocol error at both ends, and the reader never keeps more
than that. Pure: no I/O.
"""
MAX_LINE = 8192
QUESTIONS = {"AUTH": 4, "RCPT": 1, "RELAY": 3, "ADDR": 2, "SRS": 2,     # word -> number of fields
             "AUTHBEGIN": 4, "AUTHFORGET": 2}
ANSWERS = {"YES": 0, "NO": 0, "OK": 0, "NOUSER": 0, "NOTOURS": 0, "FOUND": 1, "NONE": 0, "STATUS": 2,
           "COUNTED": 2, "LOCKED": 0, "LOCAL": 1, "TEMP": 1, "REFUSED": 1, "BAD": 1}
_PLAIN = frozenset(range(0x21, 0x7F)) - {0x25}
_HEX = b"0123456789ABCDEF"


class WireError(ValueError):
    """A line that is not one of this protocol's (too long, unknown word, wrong fields, bad escape)."""


def escape(field):
    """A field (bytes or str) as it goes on the wire."""
    if isinstance(field, str):
        field = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    for b in bytes(field):
        if b in _PLAIN:
            out.append(b)
        else:
            out += b"%" + _HEX[b >> 4:(b >> 4) + 1] + _HEX[b & 15:(b & 15) + 1]
    return bytes(out)


def unescape(data):
    """The field's bytes; WireError for a '%' not followed by two hex digits, or a byte never sent."""
    if b"%" not in data:
        if any(b not in _PLAIN for b in data):
            raise WireError("unescaped byte in field")
        return bytes(data)
    out = bytearray()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x25:
            pair = data[i + 1:i + 3]
            if len(pair) != 2 or any(c not in b"0123456789ABCDEFabcdef" for c in pair):
                raise WireError("bad escape in field")
            out.append(int(pair, 16))
            i += 3
            continue
        if b not in _PLAIN:
            raise WireError("unescaped byte in field")
        out.append(b)
        i += 1
    return bytes(out)


def _encode(table, word, fields):
    if table.get(word) != len(fields):
        raise ValueError("%s takes %s fields, not %d" % (word, table.get(word), len(fields)))
    line = b" ".join([word.encode("ascii")] + [escape(f) for f in fields]) + b"\n"
    if len(line) > MAX_LINE:
        raise WireError("line too long")
    return line


def _decode(table, line):
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise WireError("line too long" if len(line) > MAX_LINE else "line not ended")
    parts = line[:-1].split(b" ")
    try:
        word = parts[0].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("unknown word") from None
    if table.get(word) is None:
        raise WireError("unknown word")
    if len(parts) - 1 != table[word]:
        raise WireError("%s takes %d fields" % (word, table[word]))
    return word, [unescape(p) for p in parts[1:]]


def encode_question(word, *fields):
    return _encode(QUESTIONS, word, fields)


def decode_question(line):
    """(word, [field bytes]) of one line with its LF; WireError when it is not a question."""
    return _decode(QUESTIONS, line)


def encode_answer(word, *fields):
    return _encode(ANSWERS, word, fields)


def decode_answer(line):
    """(word, [field bytes]) of one line with its LF; WireError when it is not an answer."""
    return _decode(ANSWERS, line)


class LineBuffer:
    """Bytes in, whole lines out; never holds more than MAX_LINE bytes."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        """The complete lines (each with its LF) now in the buffer; WireError when a line
        grows past MAX_LINE."""
        self.buf += data
        lines = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            lines.append(self.buf[:i + 1])
            self.buf = self.buf[i + 1:]
        if len(self.buf) >= MAX_LINE or any(len(line) > MAX_LINE for line in lines):
            raise WireError("line too long")
        return lines
