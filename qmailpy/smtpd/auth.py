"""SMTP AUTH exchanges (LOGIN, PLAIN, CRAM-MD5) as a small state machine.

The exchange only collects credentials; the driver decides them (the action
Authenticate: True, False, or None for "cannot tell now"), so the same code
serves the users database and a checkpassword program. A failure is answered
after a Sleep (AUTHFAILDELAY) and never logs the secret. With authfaillimit, each
password check is first counted against the client IP over all its connections
(AuthAttempt, qmailpy.smtpd.authlimit): past the limit, 421 and the session
ends (`lockout`), the password unchecked. start() and step()
are generators: they yield actions and return the reply.
"""
import binascii
import os

from qmailpy.proto import replies as R
from qmailpy.smtpd.actions import AuthAttempt, Authenticate, Log, Sleep

MECHANISMS = ("LOGIN", "PLAIN", "CRAM-MD5")


def b64decode(text):
    """Decoded bytes, or None when `text` is not strict base64."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def b64encode(data):
    return binascii.b2a_base64(data, newline=False).decode("ascii")


class AuthExchange:
    def __init__(self, arg, cfg, pid, now):
        mech, _, initial = arg.strip().partition(" ")
        self.mech = mech.upper()
        self.initial = initial.strip() or None
        self.cfg, self.pid, self.now = cfg, pid, now
        self.done = False
        self.user = None          # set on success
        self.login_user = None
        self.challenge = None
        self.lockout = False      # 421: the session ends

    def start(self):
        if self.mech not in MECHANISMS:
            return self._end(R.AUTH_TYPE)
        if self.mech == "CRAM-MD5":
            # qmail's <pid.time@host> was unique per exec'd qmail-smtpd, a pid per connection;
            # a qmail-tcpserver worker's sessions share one pid, so a random part makes each
            # challenge the session's own (an answer seen on the wire is good for no other)
            self.challenge = "<%d.%d.%d@%s>" % (self.pid, int(self.now()), int.from_bytes(os.urandom(8), "big"),
                                                self.cfg.peer.local_host)
            return R.AUTH_CHALLENGE.format(challenge=b64encode(self.challenge.encode()))
        if self.initial is not None:
            return (yield from self.step(self.initial))
        return R.AUTH_USERNAME if self.mech == "LOGIN" else R.AUTH_EMPTY

    def step(self, text):
        if text.strip() == "*":
            return self._end(R.AUTH_CANCELED)
        raw = b64decode(text.strip())
        if raw is None:
            return self._end(R.AUTH_MALFORMED)
        value = raw.decode("utf-8", "surrogateescape")
        if self.mech != "PLAIN" and "\0" in value:
            # checkpassword reads user\0secret\0challenge\0 on fd 3: a NUL in a LOGIN or
            # CRAM-MD5 field would let the client write the fields, the challenge included
            # (a sniffed CRAM-MD5 exchange replayed). PLAIN's fields are split at NUL.
            return self._end(R.AUTH_MALFORMED)
        if self.mech == "LOGIN":
            if self.login_user is None:         # an empty one too: the patch asks for the password
                self.login_user = value
                return R.AUTH_PASSWORD
            if not self.login_user or not value:
                return self._end(R.AUTH_MALFORMED)
            return (yield from self._check(self.login_user, value))
        if self.mech == "PLAIN":
            parts = value.split("\0")
            if len(parts) != 3 or not parts[1] or not parts[2]:
                return self._end(R.AUTH_MALFORMED)
            return (yield from self._check(parts[1], parts[2]))
        user, _, digest = value.rpartition(" ")
        if not user or not digest:
            return self._end(R.AUTH_MALFORMED)
        return (yield from self._check(user, digest))

    def _attempt(self, op):
        cfg = self.cfg
        return AuthAttempt(op, cfg.peer.ip, cfg.authfail_limit, cfg.authfail_window, bool(cfg.authfail_shared))

    def _locked_out(self, user, attempts):
        self.lockout = True
        yield Log("auth-lockout", {"ip": self.cfg.peer.ip, "user": user, "failures": attempts,
                                   "limit": self.cfg.authfail_limit, "window": self.cfg.authfail_window})
        return self._end(R.AUTH_LOCKOUT)

    def _check(self, user, secret):
        limited = bool(self.cfg.authfail_limit)
        attempts = None
        if limited:
            attempts = yield self._attempt("begin")
            if attempts is None:
                return (yield from self._locked_out(user, self.cfg.authfail_limit))
            if attempts is False:           # it cannot be counted (a full disk): not made
                yield Log("auth-tempfail", {"mech": self.mech, "user": user})
                return self._end(R.AUTH_TEMPFAIL)
        verdict = yield Authenticate(self.mech, user, secret, self.challenge)
        if limited and verdict is not False:
            yield self._attempt("forget")
        if verdict is None:
            yield Log("auth-tempfail", {"mech": self.mech, "user": user})
            return self._end(R.AUTH_TEMPFAIL)
        if not verdict:
            yield Log("auth-failed", {"mech": self.mech, "user": user})
            yield Sleep(self.cfg.auth_delay, "auth")
            if limited and attempts >= self.cfg.authfail_limit:
                return (yield from self._locked_out(user, attempts))
            return self._end(R.AUTH_FAILED)
        self.user = user
        yield Log("auth", {"mech": self.mech, "user": user})
        return self._end(R.AUTH_OK)

    def _end(self, reply):
        self.done = True
        return reply
