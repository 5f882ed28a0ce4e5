"""The qmail-clean pipe: requests `todo/<id>\\0` or `foop/<id>\\0`, one answer byte each.

todo/<id>: remove intd/<id> then todo/<id> (qmail-todo has made info/local/remote).
foop/<id>: remove intd/<id> then mess/<split>/<id> (qmail-send has finished the message).
Answers: '+' done, '!' an unlink failed (try again later), 'x' bad request.
One codec for both ends: qmail-send and qmail-todo encode (qmailpy.send.cleanclient),
qmail-clean decodes (RequestDecoder, parse). Pure: no I/O.
"""
from qmailpy.proto.nulrecords import NulRecords

OK, TROUBLE, BAD = b"+", b"!", b"x"
TODO, FOOP = b"todo/", b"foop/"
LONGEST = 100           # qmail-clean reads at most this much of a request


def encode(kind, msgid):
    return kind + b"%d\0" % msgid


def parse(request):
    """(kind, id) for a request without its \\0, or None when malformed (qmail's checks)."""
    if not 7 <= len(request) + 1 <= LONGEST:
        return None
    kind, digits = request[:5], request[5:]
    if kind not in (TODO, FOOP) or not digits.isdigit():
        return None
    return kind, int(digits)


class RequestDecoder(NulRecords):
    """Incremental split of qmail-clean's input into requests (without their \\0); a request
    longer than LONGEST keeps only its start, so parse() refuses it."""
    __slots__ = ()

    def __init__(self):
        super().__init__(LONGEST)
