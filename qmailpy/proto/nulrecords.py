"""NUL-terminated records read from a pipe in pieces, each cut at a length: the framing of
qmail-todo's records (qmailpy.proto.todowire) and qmail-clean's requests
(qmailpy.proto.cleanwire). Pure: no I/O; memory bounded by `limit`."""


class NulRecords:
    """feed(data) -> the complete records (bytes, without their NUL), each at most `limit` bytes:
    the rest of a longer one is dropped as it comes."""
    __slots__ = ("_buf", "limit")

    def __init__(self, limit):
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            nul = self._buf.find(b"\0")
            if nul < 0:
                if len(self._buf) > self.limit:
                    del self._buf[self.limit:]
                return out
            out.append(bytes(self._buf[:min(nul, self.limit)]))
            del self._buf[:nul + 1]
