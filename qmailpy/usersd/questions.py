"""What qmail-usersd answers: who may ask what, and one handler per question word.

The handlers take the Answers object (qmailpy.users.answers: the database
behind the service) and the question's fields as the wire gave them
(qmailpy.proto.userswire), and return the answer line. A field that does not
parse is BAD; a database that cannot answer now is TEMP, never NO.
"""
from qmailpy.proto import userswire as W
from qmailpy.users.errors import NotShared, UsersUnavailable


class Peers:
    """Which uids may ask what: `everything` may ask every question, `addresses` only ADDR
    (qmail-queue's filter keys)."""

    def __init__(self, everything, addresses=()):
        self.everything, self.addresses = frozenset(everything), frozenset(addresses)

    def allows(self, uid, word):
        return uid in self.everything or (word == "ADDR" and uid in self.addresses)

    def knows(self, uid):
        """May `uid` ask anything at all?"""
        return uid in self.everything or uid in self.addresses


class Bad(ValueError):
    """A question whose fields do not parse: answered BAD with this text."""


def text(field):
    """A field as text (bytes that are not UTF-8 kept as surrogates)."""
    return field.decode("utf-8", "surrogateescape")


def _numbers(fields, kinds, what):
    try:
        return [kind(field) for kind, field in zip(kinds, fields)]
    except ValueError:
        raise Bad(what) from None


def _auth(answers, fields):
    verdict = answers.authenticate(*(text(f) for f in fields))
    if verdict is None:
        return W.encode_answer("TEMP", "users database unavailable")
    return W.encode_answer("YES" if verdict else "NO")


def _rcpt(answers, fields):
    return W.encode_answer(answers.check_recipient(text(fields[0])).upper())


def _relay(answers, fields):
    since, window = _numbers(fields[1:], (float, int), "RELAY wants a time and a number of seconds")
    return W.encode_answer("YES" if answers.relay_allowed(text(fields[0]), since, window) else "NO")


def _addr(answers, fields):
    found = answers.find_address(fields[0], fields[1])
    return W.encode_answer("FOUND", found) if found is not None else W.encode_answer("NONE")


def _srs(answers, fields):
    now, = _numbers(fields[1:], (float,), "SRS wants a time")
    status, error = answers.srs_reverse(text(fields[0]), now)
    return W.encode_answer("STATUS", status, error or "")


def _auth_begin(answers, fields):
    limit, window, now = _numbers(fields[1:], (int, int, float),
                                  "AUTHBEGIN wants a limit, a number of seconds and a time")
    got = answers.auth_begin(text(fields[0]), limit, window, now)
    return W.encode_answer("LOCKED") if got is None else W.encode_answer("COUNTED", str(got[0]), str(got[1]))


def _auth_forget(answers, fields):
    check, = _numbers(fields[1:], (int,), "AUTHFORGET wants a check number")
    answers.auth_forget(text(fields[0]), check)
    return W.encode_answer("OK")


HANDLERS = {"AUTH": _auth, "RCPT": _rcpt, "RELAY": _relay, "ADDR": _addr, "SRS": _srs,
            "AUTHBEGIN": _auth_begin, "AUTHFORGET": _auth_forget}


def answer(answers, word, fields):
    """The answer line to one decoded question (answers: qmailpy.users.answers.Answers)."""
    handler = HANDLERS[word]            # userswire.decode_question admits only its QUESTIONS, these
    try:
        return handler(answers, fields)
    except Bad as e:
        return W.encode_answer("BAD", str(e))
    except NotShared as e:
        return W.encode_answer("LOCAL", str(e))
    except UsersUnavailable as e:
        return W.encode_answer("TEMP", str(e)[:1000])
    except OSError as e:                # ctl.reader.ControlError: a control (the SRS keys) unreadable
        return W.encode_answer("TEMP", ("unable to read controls: %s" % e)[:1000])
