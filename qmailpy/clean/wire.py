"""The qmail-clean pipe: requests `todo/<id>\\0` or `foop/<id>\\0`, one answer byte each.

todo/<id>: remove intd/<id> then todo/<id> (qmail-todo has made info/local/remote).
foop/<id>: remove intd/<id> then mess/<split>/<id> (qmail-send has finished the message).
Answers: '+' done, '!' an unlink failed (try again later), 'x' bad request.
The client side is used by qmail-send and qmail-todo: a blocking round trip,
as in qmail (qmail-clean answers from the disk at once).
"""
import os

OK, TROUBLE, BAD = b"+", b"!", b"x"
TODO, FOOP = b"todo/", b"foop/"


def encode(kind, msgid):
    return kind + b"%d\0" % msgid


def parse(request):
    """(kind, id) for a request without its \\0, or None when malformed (qmail's checks)."""
    if not 7 <= len(request) + 1 <= 100:
        return None
    kind, digits = request[:5], request[5:]
    if kind not in (TODO, FOOP) or not digits.isdigit():
        return None
    return kind, int(digits)


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
