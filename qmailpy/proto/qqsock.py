"""The qmail-queued socket protocol: qmail-queue's two pipes on one Unix stream socket.

One codec for both ends (the queue clients in qmailpy.queue.sockclient and
the service in qmailpy.queued). Pure: no I/O.

  client -> service:  the message as netstrings  <len>:<bytes>,  (each 1 to
                      MAX_CHUNK bytes; their concatenation is what qmail-queue
                      reads on fd 0), then the empty netstring  0:,  (end of
                      message), then the envelope exactly as qmail-queue reads it
                      on fd 1: F<sender>\\0 T<recipient>\\0 ... \\0 (qmailpy.proto.qq).
  service -> client:  one netstring  <code> <qp>[ <reason>]  in ASCII: qmail-queue's
                      exit code, the number of the insertion (the `qp` of
                      qmail-smtpd's 250 reply and of the Received line; 0 when
                      nothing was queued) and, on failure, the text qmail-queue
                      would have written to fd 2.

A request may begin with a mark, sent as soon as the client has connected so that the
service knows at once how to number the insertion (the number comes before the mess file):
`P` (BY_PID), the client is an exec'd qmail-queue, whose caller (qmail.c's qmail_qp())
prints that process's pid as the message's qp, so the service numbers the insertion by the
connecting process's pid as the kernel gives it (SO_PEERCRED), never by anything the client
sends; `S` (BY_SERVICE), or no mark, a number of the service's own. Next may come one
origin frame,  o<len>:NAME=value\0NAME=value,  : the facts qmail-smtpd gives an exec'd
qmail-queue in its environment and the filter step reads (ORIGIN_NAMES: $TCPREMOTEIP,
the mail came in over SMTP; $SPFRESULT, qmail-smtpd checked SPF). The service takes them
only from qmail-smtpd's user (qmailpy.queued.conn): anyone else's are dropped, as any
local user may connect.

The message is framed because its length is not known when it starts (qmail-
smtpd streams DATA as it arrives) and because a connection that breaks before
`0:,` must be told from a complete message: nothing is queued then. The
envelope needs no frame: it ends at its own final \\0. The caller's uid is not
in the protocol: the service takes it from the kernel (SO_PEERCRED).
"""
from qmailpy import exitcodes as X

MAX_CHUNK = 1 << 20            # longest netstring of the message a service accepts
MAX_ORIGIN = 1024              # longest origin frame
ORIGIN_NAMES = ("TCPREMOTEIP", "SPFRESULT")
MAX_ANSWER = 1000              # longest answer a client accepts
END = b"0:,"                   # the end of the message
BY_PID = b"P"                  # first byte: number the insertion by the connecting process's pid
BY_SERVICE = b"S"              # first byte: the service numbers the insertion itself
_DIGITS = len(str(MAX_CHUNK))


class FrameError(ValueError):
    """A malformed stream (exit 91, qmail-queue's code for input it cannot parse)."""
    code = X.QQ_ENVELOPE_FORMAT


def encode_chunk(data):
    """One netstring of the message; empty data encodes to nothing (END is the only empty frame)."""
    data = bytes(data)
    if not data:
        return b""
    if len(data) > MAX_CHUNK:
        return b"".join(encode_chunk(data[i:i + MAX_CHUNK]) for i in range(0, len(data), MAX_CHUNK))
    return b"%d:%s," % (len(data), data)


def encode_origin(environ):
    """The origin frame of the ORIGIN_NAMES set (non-empty) in `environ`; b"" when none is."""
    fields = ["%s=%s" % (name, environ[name]) for name in ORIGIN_NAMES
              if environ.get(name) and "\0" not in environ[name]]
    data = "\0".join(fields).encode("utf-8", "surrogateescape")[:MAX_ORIGIN]
    return b"o%d:%s," % (len(data), data) if data else b""


def decode_origin(data):
    """{NAME: value} of an origin frame's payload; FrameError for anything else."""
    origin = {}
    for field in bytes(data).split(b"\0"):
        name, eq, value = field.decode("utf-8", "surrogateescape").partition("=")
        if not eq or name not in ORIGIN_NAMES or name in origin or not value:
            raise FrameError("bad origin field")
        origin[name] = value
    return origin


def encode_request(message, envelope, origin=b""):
    """A whole request: the origin frame (encode_origin()), the message bytes, then END, then
    the envelope bytes (qq.encode())."""
    return origin + encode_chunk(message) + END + bytes(envelope)


class MessageDecoder:
    """The service's side of the message frames: feed() bytes, get message bytes back.

    feed() returns the message bytes found in `data`; once END has been read,
    `done` is True and `rest` holds the bytes that followed it (the start of
    the envelope); feeding more after that is an error. Raises FrameError on
    anything that is not a netstring of 1..MAX_CHUNK bytes or END (leading
    zeros, no length, a missing comma). `origin` is the {NAME: value} of the
    origin frame once read ({} without one); `by_pid` is True when the stream began with
    BY_PID, final once `numbered` (the first byte has been read).
    """
    __slots__ = ("done", "rest", "origin", "by_pid", "numbered", "_origin_next", "_head", "_left", "_comma",
                 "_last", "_in_origin", "_origin_bytes")

    def __init__(self):
        self.done = False
        self.rest = b""
        self.origin = {}
        self.by_pid = False
        self.numbered = False        # the first byte has been read: a mark, or not
        self._origin_next = True     # the origin frame may come (nothing but a mark read yet)
        self._head = bytearray()     # digits of the length being read
        self._left = 0               # payload bytes still to come in this frame
        self._comma = False          # the frame's closing comma is next
        self._last = False           # ... and that frame was END
        self._in_origin = False      # the frame being read is the origin frame
        self._origin_bytes = bytearray()

    def feed(self, data):
        if self.done:
            raise FrameError("data after the end of the message")
        out = []
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                (self._origin_bytes.extend if self._in_origin else out.append)(data[pos:pos + take])
                pos += take
                self._left -= take
                self._comma = not self._left
                continue
            ch = data[pos]
            pos += 1
            if not self.numbered:
                self.numbered = True
                if ch in (0x50, 0x53):                    # 'P' (BY_PID), 'S' (BY_SERVICE): the very first byte
                    self.by_pid = ch == 0x50
                    continue
            if self._origin_next:
                self._origin_next = False
                if ch == 0x6F:                            # 'o': the origin frame
                    self._in_origin = True
                    continue
            if self._comma:
                if ch != 0x2C:                            # ','
                    raise FrameError("netstring without its comma")
                self._comma = False
                if self._in_origin:
                    self._in_origin = False
                    self.origin = decode_origin(self._origin_bytes)
                elif self._last:
                    self.done = True
                    self.rest = bytes(data[pos:])
                    break
            elif 0x30 <= ch <= 0x39:
                if self._head[:1] == b"0" or len(self._head) >= _DIGITS:
                    raise FrameError("bad netstring length")
                self._head.append(ch)
            elif ch == 0x3A and self._head:               # ':'
                length = int(self._head)
                self._head.clear()
                if self._in_origin:
                    if not 0 < length <= MAX_ORIGIN:
                        raise FrameError("bad origin length")
                    self._left = length
                    continue
                if length > MAX_CHUNK:
                    raise FrameError("message chunk longer than %d bytes" % MAX_CHUNK)
                self._left = length
                self._last = self._comma = not length
            else:
                raise FrameError("bad netstring length")
        return b"".join(out)


def encode_answer(code, qp=0, reason=""):
    """The service's one answer."""
    text = "%d %d" % (code, qp) + (" " + reason if reason else "")
    data = text.encode("utf-8", "replace")[:MAX_ANSWER - 8]
    return b"%d:%s," % (len(data), data)


class AnswerDecoder:
    """The client's side: feed() what the service sent until it returns (code, qp, reason).

    None while the answer is incomplete; FrameError when it is not an answer.
    """
    __slots__ = ("_buf",)

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        colon = self._buf.find(b":")
        if colon < 0:
            if len(self._buf) > 4 or (self._buf and not self._buf.isdigit()):
                raise FrameError("bad answer")
            return None
        head = bytes(self._buf[:colon])
        if (not head.isdigit() or (head[:1] == b"0" and head != b"0") or len(head) > len(b"%d" % MAX_ANSWER)
                or int(head) > MAX_ANSWER):
            raise FrameError("bad answer")
        stop = colon + 1 + int(head)
        if len(self._buf) <= stop:
            return None
        if self._buf[stop] != 0x2C:
            raise FrameError("bad answer")
        return decode_answer_text(bytes(self._buf[colon + 1:stop]))


def decode_answer_text(text):
    """`<code> <qp>[ <reason>]` -> (code, qp, reason)."""
    parts = text.split(b" ", 2)
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]) or int(parts[0]) > 255:
        raise FrameError("bad answer")
    reason = parts[2].decode("utf-8", "replace") if len(parts) > 2 else ""
    return int(parts[0]), int(parts[1]), reason
