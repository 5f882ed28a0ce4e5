"""qmail-send's and qmail-todo's end of the qmail-clean pipe (codec: qmailpy.proto.cleanwire).

A blocking round trip, as in qmail (qmail-clean answers from the disk at once).
"""
import os

from qmailpy.proto.cleanwire import encode


class CleanDied(Exception):
    """qmail-clean is gone: the caller stops as qmail does ("lost qmail-clean connection")."""


class CleanClient:
    """Round trips to one qmail-clean over a pair of blocking pipe fds."""
    __slots__ = ("fd_out", "fd_in", "dead")

    def __init__(self, fd_out, fd_in):
        self.fd_out, self.fd_in = fd_out, fd_in
        self.dead = False

    def request(self, kind, msgid):
        """Send one request and return the answer byte; raise CleanDied (then on every call)."""
        if self.dead:
            raise CleanDied("qmail-clean is gone")
        data = encode(kind, msgid)
        try:
            while data:
                data = data[os.write(self.fd_out, data):]
            answer = os.read(self.fd_in, 1)
        except OSError as e:
            answer, why = b"", str(e)
        else:
            why = "end of file"
        if not answer:
            self.dead = True
            raise CleanDied(why)
        return answer
