"""qmail-send's and qmail-todo's end of the qmail-clean pipe (codec: qmailpy.proto.cleanwire).

A blocking round trip, as in qmail (qmail-clean answers from the disk at once);
request_many() pipelines several (qmail-clean answers them in order, one byte
each, so the answers never fill the pipe while the requests go out).
"""
import os

from qmailpy.fileio import write_all
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
        return self.request_many(kind, [msgid])[0]

    def request_many(self, kind, msgids):
        """Send one request per id, then read their answers: [answer byte per id]; CleanDied as request()."""
        if self.dead:
            raise CleanDied("qmail-clean is gone")
        if not msgids:
            return []
        data = b"".join(encode(kind, msgid) for msgid in msgids)
        answers, why = b"", "end of file"
        try:
            write_all(self.fd_out, data)
            while len(answers) < len(msgids):
                got = os.read(self.fd_in, len(msgids) - len(answers))
                if not got:
                    break
                answers += got
        except OSError as e:
            why = str(e)
        if len(answers) < len(msgids):
            self.dead = True
            raise CleanDied(why)
        return [answers[i:i + 1] for i in range(len(answers))]
