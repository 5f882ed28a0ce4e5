"""spamd's PROCESS command (SPAMC/1.5): the message back with the user's X-Spam headers.

Request:  PROCESS SPAMC/1.5\\r\\n Content-length: <n>\\r\\n User: <recipient>\\r\\n \\r\\n <message>
Answer:   SPAMD/1.1 0 EX_OK\\r\\n Content-length: <n>\\r\\n Spam: True ; 15.2 / 5.0\\r\\n \\r\\n <message>

spamd -q (--sql-config) reads the preferences of the User from SQL
(required_score, add_header, ...), so each recipient gets his own verdict.
A reject threshold is the header X-Spam-Reject-Score that spamd adds when the
user's (or the site's) preferences say `add_header all Reject-Score <score>`.
It is read only from the block of X-Spam-* fields spamd added (spamd_fields()),
the message's header block read as RFC 5322 fields: SpamAssassin strips the
X-Spam-* fields the message came with, and a folded line or a line of the
body is never a field, so nothing the sender wrote is read as spamd's.
"""
from qmailpy import exitcodes as X
from qmailpy.filters.net import Connection, ServiceError
from qmailpy.proto.headers import fields

REJECT_HEADER = b"x-spam-reject-score"
SPAMD_PREFIX = b"x-spam-"
SENDERS_PREFIX = b"x-spam-prev-"        # SpamAssassin keeps these (rewrite_header copies): not its verdict


class Verdict:
    """spamd's answer for one user."""
    __slots__ = ("spam", "score", "required", "reject", "message")

    def __init__(self, spam, score, required, reject, message):
        self.spam, self.score, self.required = spam, score, required
        self.reject, self.message = reject, message

    def refused(self):
        """Spam at or above the user's reject score (none configured: never)."""
        return self.spam and self.reject is not None and self.score >= self.reject


def request(message, user=None):
    head = b"PROCESS SPAMC/1.5\r\nContent-length: %d\r\n" % len(message)
    if user:
        head += b"User: " + user + b"\r\n"
    return head + b"\r\n" + message


def _garbage(why):
    return ServiceError(X.QQ_COMM_FAILED, "spamd: %s" % why)


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise _garbage("not a score: %r" % text[:40]) from None


def _spamds(name):
    return name.startswith(SPAMD_PREFIX) and not name.startswith(SENDERS_PREFIX)


def spamd_fields(message):
    """The fields spamd added, as RFC 5322 fields: the first run of X-Spam-* fields of the header
    block. SpamAssassin writes them on top (after a Return-Path it keeps first), or with
    report_safe below its own Received line and the From/To/Cc/Subject/Date/Message-Id it copies;
    the sender's X-Spam-* fields it strips (report_safe 0) or leaves in the attached original."""
    started = False
    for name, value in fields(message):
        if _spamds(name):
            started = True
            yield name, value
        elif started:
            return


def reject_score(message):
    """The first X-Spam-Reject-Score spamd added, as a number; None without one (or unreadable)."""
    for name, value in spamd_fields(message):
        if name == REJECT_HEADER:
            try:
                return float(value.split()[0])
            except (ValueError, IndexError):
                return None
    return None


def parse_answer(answer):
    """A Verdict from spamd's whole answer; ServiceError when it is not one."""
    first = answer.split(b"\r\n", 1)[0]
    status = first.split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"SPAMD/") or not status[1].isdigit():
        raise _garbage("bad status line %r" % first[:80])
    if status[1] != b"0":               # spamd's own error (EX_PROTOCOL...): no header block follows
        raise ServiceError(X.QQ_TEMP_REFUSED, "spamd: error %s" % b" ".join(status[1:]).decode("ascii", "replace"))
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        raise _garbage("answer without a header block (%d bytes)" % len(answer))
    lines = head.split(b"\r\n")
    protocol = {}
    for line in lines[1:]:
        key, sep, val = line.partition(b":")
        if not sep:
            raise _garbage("bad header line %r" % line[:80])
        protocol.setdefault(key.strip().lower(), val.strip())      # the first one counts
    length = protocol.get(b"content-length", b"")
    if not length.isdigit():
        raise _garbage("no Content-length")
    if int(length) != len(body):
        raise _garbage("Content-length %d, got %d bytes" % (int(length), len(body)))
    spam = protocol.get(b"spam")
    if spam is None:
        raise _garbage("no Spam header")
    flag, sep, scores = spam.partition(b";")
    score, sep2, required = scores.partition(b"/")
    flag = flag.strip().lower()
    if not sep or not sep2 or flag not in (b"true", b"false", b"yes", b"no"):
        raise _garbage("bad Spam header %r" % spam[:80])
    return Verdict(flag in (b"true", b"yes"), _number(score.strip().decode("ascii", "replace")),
                   _number(required.strip().decode("ascii", "replace")), reject_score(body), body)


def process(message, user, address, timeout):
    """Verdict of spamd for `message` with the preferences of `user` (bytes, or None: spamd's default)."""
    with Connection("spamd", address, timeout) as conn:
        conn.send(request(message, user))
        conn.shutdown_write()
        answer = conn.read(2 * len(message) + (1 << 20))
    if not answer:
        raise _garbage("connection closed without an answer")
    return parse_answer(answer)
