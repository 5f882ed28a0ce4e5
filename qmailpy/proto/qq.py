"""The qmail-queue envelope (fd 1): F<sender>\\0, T<rcpt>\\0 per recipient, then \\0.

The one codec for this format: qmail-smtpd encodes, qmail-queue decodes.
Pure: no I/O. Addresses are bytes (qmail is 8-bit clean); encode() also
takes str. Errors are detected in the order qmail-queue.c reads the bytes,
so the exit code is the one qmail would give for the same input.
"""
from qmailpy import exitcodes

ADDR = 1003                    # qmail-queue.c: an address and its \0 must fit in ADDR bytes
MAX_ADDRESS = ADDR - 1         # so 1002 bytes is the longest address accepted


class EnvelopeError(ValueError):
    """A bad envelope; `code` is qmail-queue's exit code for it."""
    code = exitcodes.QQ_ENVELOPE_FORMAT


class EnvelopeFormatError(EnvelopeError):
    """First byte not 'F', or a record not starting with 'T' (exit 91)."""
    code = exitcodes.QQ_ENVELOPE_FORMAT


class EnvelopeTruncated(EnvelopeError):
    """End of input before the final \\0 (exit 54, like a read error)."""
    code = exitcodes.QQ_READ_ERROR


class AddressTooLong(EnvelopeError):
    """An address of ADDR bytes or more (exit 11)."""
    code = exitcodes.QQ_ADDR_TOO_LONG


def _bytes(addr):
    b = addr.encode("utf-8", "surrogateescape") if isinstance(addr, str) else bytes(addr)
    if b"\0" in b:
        raise ValueError("an envelope address cannot contain NUL: %r" % (addr,))
    return b


def encode_records(sender, recipients):
    """F<sender>\\0 T<rcpt>\\0 ... without the final \\0 (also the tail of an intd/ file)."""
    parts = [b"F", _bytes(sender), b"\0"]
    for r in recipients:
        parts += (b"T", _bytes(r), b"\0")
    return b"".join(parts)


def encode(sender, recipients):
    """The whole envelope as qmail-smtpd writes it to qmail-queue's fd 1."""
    return encode_records(sender, recipients) + b"\0"


class Decoder:
    """Incremental decoder: feed() chunks until it returns True; eof() at end of input.

    Bytes after the final \\0 are ignored (qmail-queue never reads them).
    """
    __slots__ = ("sender", "recipients", "done", "_buf", "_in_record")

    def __init__(self):
        self.sender = None
        self.recipients = []
        self.done = False
        self._buf = bytearray()
        self._in_record = False

    def feed(self, data):
        """Consume bytes; True once the envelope is complete. Raises EnvelopeError."""
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if not self._in_record:
                ch = data[pos]
                pos += 1
                if self.sender is None:
                    if ch != 0x46:                  # 'F'
                        raise EnvelopeFormatError("envelope does not start with F")
                elif ch == 0:
                    self.done = True
                    break
                elif ch != 0x54:                    # 'T'
                    raise EnvelopeFormatError("envelope record does not start with T")
                self._in_record = True
                continue
            nul = data.find(b"\0", pos)
            stop = end if nul < 0 else nul
            self._buf += data[pos:stop]
            if len(self._buf) >= ADDR:
                raise AddressTooLong("envelope address longer than %d bytes" % MAX_ADDRESS)
            if nul < 0:
                break
            pos = nul + 1
            addr = bytes(self._buf)
            self._buf.clear()
            self._in_record = False
            if self.sender is None:
                self.sender = addr
            else:
                self.recipients.append(addr)
        return self.done

    def eof(self):
        """End of input: raise EnvelopeTruncated unless the envelope was complete."""
        if not self.done:
            raise EnvelopeTruncated("envelope ends before its final NUL")
        return self.sender, self.recipients


def decode(data):
    """Whole-buffer decode: (sender, [recipients]) as bytes."""
    d = Decoder()
    d.feed(data)
    return d.eof()
