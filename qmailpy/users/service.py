"""The users service's client: qmailpy.users.answers' questions, asked over sock/users.

open_answers(home, controls) is what qmail-smtpd (and qmail-queue's filter keys)
call: the client when the home has the service's socket, else the database read
in-process (qmailpy.users.answers.Answers). A service that is not running (the
socket is there, nobody listens), does not answer within TIMEOUT, refuses us or
says something that is not an answer is UsersUnavailable, as a database that is
down: 451 or 454, never "no such user" nor "wrong password". Only os is imported
until a question is asked (qmail-smtpd's start-up).
"""
from qmailpy import paths
from qmailpy.users.base import UsersUnavailable
from qmailpy.users.errors import absent

TIMEOUT = 15.0          # seconds for one question: the service's database has 5 to answer


def open_answers(home, controls):
    """The users service's client where it runs for this home, else the database itself."""
    path = paths.users_socket(home)
    if not absent(path):            # a socket that cannot be looked at (EIO): UsersUnavailable
        return UsersClient(path)
    from qmailpy.users.answers import Answers
    from qmailpy.users.base import open_users
    return Answers(lambda: open_users(home, controls), controls)


def _text(field):
    return field.decode("utf-8", "surrogateescape")


class UsersClient:
    def __init__(self, path, timeout=TIMEOUT):
        self.path, self.timeout = path, timeout
        self._sock = None
        self._lines = None

    def _connect(self):
        from qmailpy.proto.userswire import LineBuffer
        from qmailpy.unixsock import client
        self._sock, self._lines = client(self.path, self.timeout), LineBuffer()

    def _exchange(self, line, deadline):
        import time
        self._sock.sendall(line)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer")
            self._sock.settimeout(left)
            data = self._sock.recv(4096)
            if not data:
                return None             # closed: idle too long, or the service restarted
            got = self._lines.feed(data)
            if got:
                return got[0]

    def ask(self, word, *fields):
        """(answer word, [field bytes]); UsersUnavailable when there is no usable answer."""
        import time
        from qmailpy.proto.userswire import WireError, decode_answer, encode_question
        deadline = time.monotonic() + self.timeout
        try:
            line = encode_question(word, *fields)
        except WireError as e:          # longer than anything SMTP can carry
            raise UsersUnavailable("users service: %s" % e) from None
        for attempt in (0, 1):
            reused = self._sock is not None
            try:
                if not reused:
                    self._connect()
                answer = self._exchange(line, deadline)
                if answer is None:
                    raise ConnectionResetError("connection closed")
                got = decode_answer(answer)
            except (OSError, WireError) as e:
                self.close()
                if reused and attempt == 0 and isinstance(e, (BrokenPipeError, ConnectionResetError)):
                    continue            # a kept connection the service had closed: ask once more
                raise UsersUnavailable("users service %s: %s" % (self.path, _reason(e))) from None
            if got[0] in ("TEMP", "REFUSED", "BAD"):
                if got[0] != "TEMP":
                    self.close()
                raise UsersUnavailable("users service: %s %s" % (got[0], _text(got[1][0])))
            return got
        # not reached: the second attempt is on a new connection (reused False), so it answers or raises

    def _expect(self, got, *words):
        if got[0] not in words:
            self.close()
            raise UsersUnavailable("users service: unexpected answer %s" % got[0])
        return got

    # -- qmailpy.users.answers' questions
    def authenticate(self, mech, login, secret, challenge):
        try:
            got = self._expect(self.ask("AUTH", mech or "", login or "", secret or "", challenge or ""), "YES", "NO")
        except UsersUnavailable:
            return None
        return got[0] == "YES"

    def check_recipient(self, address):
        from qmailpy.users.chkuser import NOTOURS, NOUSER, OK
        got = self._expect(self.ask("RCPT", address), "OK", "NOUSER", "NOTOURS")
        return {"OK": OK, "NOUSER": NOUSER, "NOTOURS": NOTOURS}[got[0]]

    def relay_allowed(self, ip, since, window):
        got = self._expect(self.ask("RELAY", ip, repr(float(since)), str(int(window))), "YES", "NO")
        return got[0] == "YES"

    def find_address(self, name, domain):
        got = self._expect(self.ask("ADDR", name, domain), "FOUND", "NONE")
        return got[1][0] if got[0] == "FOUND" else None

    def srs_reverse(self, address, now):
        got = self._expect(self.ask("SRS", address, repr(float(now))), "STATUS")
        status, error = (_text(f) for f in got[1])
        return status, error or None

    def auth_begin(self, ip, limit, window, now):
        got = self._expect(self.ask("AUTHBEGIN", ip, str(int(limit)), str(int(window)), repr(float(now))),
                           "COUNTED", "LOCKED", "LOCAL")
        if got[0] == "LOCAL":
            from qmailpy.users.errors import NotShared
            raise NotShared(_text(got[1][0]))
        if got[0] == "LOCKED":
            return None
        try:
            return int(got[1][0]), int(got[1][1])
        except ValueError:
            self.close()
            raise UsersUnavailable("users service: COUNTED without numbers") from None

    def auth_forget(self, ip, check):
        got = self._expect(self.ask("AUTHFORGET", ip, str(int(check))), "OK", "LOCAL")
        if got[0] == "LOCAL":
            from qmailpy.users.errors import NotShared
            raise NotShared(_text(got[1][0]))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = self._lines = None


def _reason(e):
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
