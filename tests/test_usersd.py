"""qmail-usersd alone: its answers, whom it answers, and clients that stall, flood or talk nonsense.

The program (bin/qmail-usersd) in a scratch home, and the same Server in-process where a test
needs short time-outs or a database that hangs. qmail-smtpd over it: a service that is down,
refuses or cannot reach its database is 451/454, never 550/535.
"""
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Home, program
from qmailpy import paths
from qmailpy.ctl.reader import Controls
from qmailpy.proto import userswire as W
from qmailpy.queue.layout import create_queue
from qmailpy.srs import codec
from qmailpy.users import UsersUnavailable, admin, open_users
from qmailpy.users.chkuser import NOTOURS, NOUSER, OK
from qmailpy.users.service import UsersClient, open_answers
from qmailpy.usersd.questions import Peers
from qmailpy.usersd.server import Server
from asuid import AsUid
from test_dialogues import TCP_ENV
from usersd import UsersService

SECRET = "newest-key"


def make_home(root, usersdb=None):
    """A home with example.org (joe, "s3cret word"), its alias domain example.net and a relay row;
    usersdb: vpopmail's MySQL line for its users database (tests/mysql_fixture.py), else SQLite."""
    home = Home(root)
    if usersdb is not None:
        home.control("usersdb", usersdb + "\n")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\nsrs.example.org\n")
    home.control("userchk", "1\n")
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    home.control("srs/srs_domain", "srs.example.org\n")
    home.control("srs/revers_srs_secrets", SECRET + "\n")
    create_queue(home.root)
    users = open_users(home.root, Controls(home.root), create=True)
    admin.add_domain(users, "example.org")
    admin.add_alias_domain(users, "example.org", "example.net")
    admin.add_user(users, "joe@example.org", "s3cret word", clear=True)
    users.record_relay("192.0.2.9", time.time() - 60)
    users.close()
    return home


@pytest.fixture
def uhome(tmp_path):
    return make_home(tmp_path / "qmail")


@pytest.fixture
def service(uhome):
    with UsersService(uhome.root, uhome.env()) as svc:
        yield uhome, svc


def ask(path, *lines, timeout=10):
    """Send raw lines on one connection; the answer lines until the service closes or stops."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    with s:
        s.sendall(b"".join(lines))
        buf = b""
        want = len(lines)
        while buf.count(b"\n") < want:
            try:
                data = s.recv(4096)
            except socket.timeout:
                break
            if not data:
                break
            buf += data
    return buf.splitlines()


def test_every_question_answered_as_the_database_would(service):
    home, svc = service
    client = open_answers(home.root, Controls(home.root))
    assert isinstance(client, UsersClient)
    assert client.authenticate("PLAIN", "joe@example.org", "s3cret word", None) is True
    assert client.authenticate("LOGIN", "joe@example.net", "s3cret word", None) is True
    assert client.authenticate("LOGIN", "joe@example.org", "wrong", None) is False
    assert client.authenticate("PLAIN", "nobody@example.org", "s3cret word", None) is False
    challenge = "<1.2@test.example>"
    digest = hmac.new(b"s3cret word", challenge.encode(), "md5").hexdigest()
    assert client.authenticate("CRAM-MD5", "joe@example.org", digest, challenge) is True
    assert client.authenticate("CRAM-MD5", "joe@example.org", digest, "<other@x>") is False
    assert client.check_recipient("joe@example.org") == OK
    assert client.check_recipient("JOE@example.net") == OK
    assert client.check_recipient("ann@example.org") == NOUSER
    assert client.check_recipient("joe@elsewhere.test") == NOTOURS
    assert client.relay_allowed("192.0.2.9", time.time(), 1800) is True
    assert client.relay_allowed("192.0.2.9", time.time(), 30) is False
    assert client.relay_allowed("192.0.2.10", time.time(), 1800) is False
    assert client.find_address(b"joe", b"example.net") == b"joe@example.org"
    assert client.find_address(b"ann", b"example.org") is None
    now = time.time()
    good = codec.forward("alice@remote.example", "srs.example.org", [SECRET], now)
    forged = codec.forward("alice@remote.example", "srs.example.org", ["another-key"], now)
    assert client.srs_reverse(good, now) == ("ok", None)
    assert client.srs_reverse(forged, now)[0] == "bad-hash"
    client.close()
    log = svc.stop()
    assert "s3cret" not in log and digest not in log


def test_questions_sent_ahead_are_answered_in_order(service):
    home, _ = service
    path = paths.users_socket(home.root)
    got = ask(path, W.encode_question("RCPT", "ann@example.org"), W.encode_question("RCPT", "joe@example.org"),
              W.encode_question("ADDR", "joe", "example.net"), W.encode_question("RELAY", "192.0.2.9", str(time.time() + 3600), "10"))
    assert got == [b"NOUSER", b"OK", b"FOUND joe@example.org", b"NO"]


@pytest.mark.parametrize("garbage, reason", [
    (b"HELO there\n", b"BAD unknown%20word"),
    (b"RCPT a b\n", b"BAD RCPT%20takes%201%20fields"),
    (b"RELAY 1.2.3.4 soon 10\n", b"BAD RELAY%20wants%20a%20time%20and%20a%20number%20of%20seconds"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", b"BAD unknown%20word"),
    (b"RCPT " + b"a" * W.MAX_LINE, b"BAD line%20too%20long"),
])
def test_garbage_gets_bad_and_the_connection_closed(service, garbage, reason):
    home, svc = service
    path = paths.users_socket(home.root)
    assert ask(path, garbage, W.encode_question("RCPT", "joe@example.org")) == [reason]
    assert ask(path, W.encode_question("RCPT", "joe@example.org")) == [b"OK"]      # the next caller is served
    assert " bad uid=%d " % os.getuid() in svc.stop()


def test_a_stalled_client_blocks_nobody(service):
    home, _ = service
    path = paths.users_socket(home.root)
    stalled = []
    for part in (b"", b"RCPT joe@exa"):            # connected and silent; half a question
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(part)
        stalled.append(s)
    try:
        for _ in range(20):
            assert ask(path, W.encode_question("RCPT", "joe@example.org"), timeout=10) == [b"OK"]
    finally:
        for s in stalled:
            s.close()


def _server(make_answers, peers, wrap=lambda listener: listener, **kw):
    """An in-process Server on a fresh socket (wrapped by `wrap`): (server, thread, path, log lines)."""
    top = tempfile.mkdtemp(prefix="usersd-")
    path = os.path.join(top, "users")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    logged = []
    server = Server(wrap(listener), make_answers, peers, lambda event, **f: logged.append((event, f)), **kw)
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    return server, t, path, logged, top


class SlowAnswers:
    """Answers whose check_recipient for slow@ waits for `release`; everything else at once."""

    def __init__(self, release):
        self.release = release

    def stale(self):
        return False

    def check_recipient(self, address):
        if address.startswith("slow@"):
            self.release.wait(30)
        return OK

    def find_address(self, name, domain):
        return None

    def close(self):
        pass


def test_stalls_time_out_and_a_hanging_database_delays_only_its_own_question():
    release = threading.Event()
    server, t, path, logged, top = _server(lambda: SlowAnswers(release), Peers({os.getuid()}),
                                           workers=2, idle=0.5, partial=0.5)
    try:
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.connect(path)
        half.sendall(b"RCPT jo")
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(path)
        slow.sendall(W.encode_question("RCPT", "slow@example.org"))
        assert ask(path, W.encode_question("RCPT", "quick@example.org")) == [b"OK"]   # while slow@ hangs
        half.settimeout(20)
        assert half.recv(100) == b""                  # closed at its time-out, without an answer
        assert ("timeout", {"uid": os.getuid(), "pid": os.getpid()}) in logged
        release.set()
        slow.settimeout(20)
        assert slow.recv(100) == b"OK\n"              # a busy connection is never timed out
        half.close()
        slow.close()
    finally:
        release.set()
        server.stop()
        t.join(10)
        shutil.rmtree(top)


def test_a_wake_after_the_loop_ended_is_nothing():
    """stop() sets running and then wakes the loop; the loop may see running first, end and
    close its wake pipe before the wake is written (a worker can also finish after it). The
    late wake must neither fail (EBADF) nor write into a file that took the pipe's number."""
    server, t, path, logged, top = _server(lambda: SlowAnswers(threading.Event()), Peers({os.getuid()}))
    try:
        server.stop()
        t.join(10)
        assert not t.is_alive()
        r, w = os.pipe()                   # the lowest free numbers: the wake pipe's old ones
        try:
            server.stop()
            server._wake()
            os.set_blocking(r, False)
            with pytest.raises(BlockingIOError):
                os.read(r, 1)              # nothing was written into the pipe that took the number
        finally:
            os.close(r)
            os.close(w)
    finally:
        shutil.rmtree(top)


def test_kept_connection_closed_by_the_service_is_asked_again():
    server, t, path, logged, top = _server(lambda: SlowAnswers(threading.Event()), Peers({os.getuid()}),
                                           idle=0.2, partial=0.2)
    try:
        client = UsersClient(path, timeout=10)
        assert client.check_recipient("a@example.org") == OK
        deadline = time.monotonic() + 20
        while server.conns and time.monotonic() < deadline:      # the service drops it as idle
            time.sleep(0.05)
        assert not server.conns
        assert client.check_recipient("b@example.org") == OK
        client.close()
    finally:
        server.stop()
        t.join(10)
        shutil.rmtree(top)


class BuggyAnswers(SlowAnswers):
    """A database handle whose check_recipient fails with a bug for bug@, and that goes stale
    when told: every handle made is in `made`, its closing in `closed`."""

    def __init__(self, made, closed, stale):
        super().__init__(threading.Event())
        self.made, self.closed, self.is_stale = made, closed, stale
        made.append(self)

    def stale(self):
        return self.is_stale.is_set()

    def check_recipient(self, address):
        if address.startswith("bug@"):
            raise KeyError("a bug")
        return OK

    def close(self):
        self.closed.append(self)


def test_a_bug_answering_is_a_temporary_answer_and_a_fresh_handle():
    """An exception the answers do not expect (a bug) costs that question a TEMP, logged with
    the bug, never the connection's answer; the worker drops its handle and opens another for
    the next question, as it does for a handle gone stale (a control changed)."""
    made, closed, stale = [], [], threading.Event()
    server, t, path, logged, top = _server(lambda: BuggyAnswers(made, closed, stale), Peers({os.getuid()}),
                                           workers=1)
    try:
        assert ask(path, W.encode_question("RCPT", "bug@example.org"), W.encode_question("RCPT", "joe@example.org")) \
            == [b"TEMP internal%20error", b"OK"]
        [bug] = [f for e, f in logged if e == "error"]
        assert bug["reason"].startswith("internal bug: KeyError: 'a bug' at test_usersd.py:"), bug
        assert ("tempfail", {"question": "RCPT", "uid": os.getuid(), "reason": "internal error"}) in logged
        assert (len(made), closed) == (2, [made[0]])
        stale.set()
        assert ask(path, W.encode_question("RCPT", "joe@example.org")) == [b"OK"]
        assert (len(made), closed) == (3, made[:2])
    finally:
        server.stop()
        t.join(10)
        shutil.rmtree(top)
    deadline = time.monotonic() + 10       # the worker closes its handle as it ends (after serve())
    while closed != made and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == made


class ScriptedService:
    """A Unix socket that answers each question read with the next of `replies` (bytes as they
    are sent; None closes the connection unanswered; "hang" answers nothing)."""

    def __init__(self, replies):
        self.top = tempfile.mkdtemp(prefix="usersd-fake-")
        self.path = os.path.join(self.top, "users")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.replies, self.questions, self.held = list(replies), [], []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            buf = b""
            while self.replies:
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf and self.replies:
                    line, buf = buf.split(b"\n", 1)
                    self.questions.append(line)
                    reply = self.replies.pop(0)
                    if reply is None:
                        conn.close()
                        break
                    if reply != "hang":
                        conn.sendall(reply)
                if conn.fileno() < 0:
                    break

    def close(self):
        self.listener.close()
        for conn in self.held:
            conn.close()
        self.thread.join(10)
        shutil.rmtree(self.top)


def test_a_service_that_says_something_else_is_unavailable_never_an_answer():
    """What qmail-smtpd must take for 451/454 (UsersUnavailable), never for "no such user" or a
    wrong password: an answer that is not one of the question's, COUNTED without numbers, a
    service that closes without answering (on a new connection: no second try), one that
    answers nothing within the time-out, a line that is no answer, a question too long to send."""
    fake = ScriptedService([b"YES\n", b"OK\n", b"COUNTED one 2\n", None, "hang", b"\x00\x01\n"])
    try:
        client = UsersClient(fake.path, timeout=1)
        with pytest.raises(UsersUnavailable, match="^users service: unexpected answer YES$"):
            client.check_recipient("joe@example.org")
        assert client._sock is None              # an answer out of step: the connection is dropped
        assert client.check_recipient("joe@example.org") == OK
        with pytest.raises(UsersUnavailable, match="^users service: COUNTED without numbers$"):
            client.auth_begin("192.0.2.1", 3, 600, 1800000000)
        assert client._sock is None
        with pytest.raises(UsersUnavailable, match="^users service %s: connection closed$" % fake.path):
            client.check_recipient("joe@example.org")
        with pytest.raises(UsersUnavailable, match="^users service %s: timed out$" % fake.path):
            client.check_recipient("joe@example.org")
        with pytest.raises(UsersUnavailable, match="^users service %s: unknown word$" % fake.path):
            client.check_recipient("joe@example.org")
        with pytest.raises(UsersUnavailable, match="^users service: line too long$"):
            client.check_recipient("joe@" + "a" * W.MAX_LINE)
        assert fake.questions == [b"RCPT joe@example.org"] * 2 + [b"AUTHBEGIN 192.0.2.1 3 600 1800000000.0"] + \
            [b"RCPT joe@example.org"] * 3
        client.close()
    finally:
        fake.close()


class ShortOfFiles:
    """A listening socket whose next accept() fails with EMFILE (the service's fd limit)."""

    def __init__(self, listener):
        self.listener, self.failed = listener, False

    def fileno(self):
        return self.listener.fileno()

    def setblocking(self, flag):
        self.listener.setblocking(flag)

    def accept(self):
        import errno
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, "Too many open files")
        return self.listener.accept()


def test_a_connection_it_cannot_accept_now_is_taken_a_moment_later():
    """EMFILE while accepting is logged and the loop goes on: the caller waiting in the backlog
    is answered once a descriptor is free (accept() tried again after server.ACCEPT_PAUSE),
    never dropped and never the service ended."""
    server, t, path, logged, top = _server(lambda: SlowAnswers(threading.Event()), Peers({os.getuid()}),
                                           wrap=ShortOfFiles)
    try:
        assert ask(path, W.encode_question("RCPT", "joe@example.org")) == [b"OK"]
        assert ("error", {"reason": "accept: Too many open files"}) in logged
        assert t.is_alive()
    finally:
        server.stop()
        t.join(10)
        shutil.rmtree(top)


def test_become_without_the_account_changes_nothing():
    """qmail-usersd as root without a qmailu account: become() says so (None; run() then logs
    'no user qmailu: running as root') and leaves uid, gid and groups as they were."""
    from qmailpy.usersd.main import become
    before = (os.getresuid(), os.getresgid(), os.getgroups())
    assert become("no-such-user-here") is None
    assert (os.getresuid(), os.getresgid(), os.getgroups()) == before


def test_a_service_that_dribbles_an_answer_is_given_up_at_the_time_out():
    """One byte at a time and never a line end: every recv returns something, yet the client's
    time-out is for the whole answer (qmail-smtpd's 451 comes in time, never held by it)."""
    top = tempfile.mkdtemp(prefix="usersd-drip-")
    path = os.path.join(top, "users")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    stop = threading.Event()

    def drip():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            while not stop.wait(0.02):
                try:
                    conn.sendall(b"O")
                except OSError:
                    return
    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        client = UsersClient(path, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(UsersUnavailable, match="^users service %s: (no answer|timed out)$" % path):
            client.check_recipient("joe@example.org")
        assert time.monotonic() - started < 5          # 0.5 s and a loaded machine's scheduling
    finally:
        stop.set()
        t.join(10)
        listener.close()
        shutil.rmtree(top)


def test_a_caller_it_does_not_answer_is_refused():
    """The uid comes from SO_PEERCRED: here the test's own uid is not among the peers."""
    server, t, path, logged, top = _server(lambda: SlowAnswers(threading.Event()),
                                           Peers({os.getuid() + 1}, {os.getuid()}))
    try:
        got = ask(path, W.encode_question("RCPT", "joe@example.org"))
        assert got == [b"REFUSED uid%%20%d%%20may%%20not%%20ask%%20RCPT" % os.getuid()]
        assert ("refused", {"uid": os.getuid(), "pid": os.getpid(), "question": "RCPT"}) in logged
        with pytest.raises(UsersUnavailable, match="REFUSED"):
            UsersClient(path).check_recipient("joe@example.org")
        assert UsersClient(path).authenticate("PLAIN", "joe@example.org", "pw", None) is None
        # ADDR is what qmail-queue's users (qmailq, qmails) may ask
        assert ask(path, W.encode_question("ADDR", "joe", "example.org")) == [b"NONE"]
    finally:
        server.stop()
        t.join(10)
        shutil.rmtree(top)


def _silent(count):
    """work for AsUid: `count` connections that send nothing; how many of them the service
    closed at once (it keeps the others until its idle time-out)."""
    def work(connect):
        held = [connect() for _ in range(count)]
        closed = 0
        for s in held:
            s.settimeout(1)
            try:
                closed += s.recv(100) == b""
            except socket.timeout:
                pass
        return b"%d" % closed
    return work


def test_a_caller_it_does_not_answer_cannot_take_every_connection(monkeypatch):
    """sock/users is 0666: any local user may connect, and is refused only at its first question.
    Its silent connections must not fill MAX_CONNECTIONS (qmail-smtpd's AUTH and chkuser would get
    nothing but 454/451): a uid the service answers nothing holds at most MAX_STRANGERS of them."""
    from qmailpy.usersd import server as S
    monkeypatch.setattr(S, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(S, "MAX_STRANGERS", 2)
    server, t, path, logged, top = _server(lambda: SlowAnswers(threading.Event()), Peers({os.getuid()}))
    os.chmod(top, 0o755)                           # as sock/ is
    os.chmod(path, 0o666)                          # as qmailpy.unixsock.listen_at makes it
    try:
        with AsUid(65534, path, _silent(6)) as child:
            assert child.result == b"4"
            refused = [f["uid"] for e, f in logged if e == "refused" and f["reason"] == "too many connections"]
            assert refused == [65534] * 4
            assert ask(path, W.encode_question("RCPT", "joe@example.org")) == [b"OK"]
    finally:
        server.stop()
        t.join(10)
        shutil.rmtree(top)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: asks as another uid (setpriv)")
def test_another_uid_is_refused_by_the_program():
    """Another local user (here uid 54321, no account needed) gets REFUSED from bin/qmail-usersd."""
    top = tempfile.mkdtemp(prefix="usersd-peer-")
    os.chmod(top, 0o755)
    try:
        home = make_home(os.path.join(top, "qmail"))
        with UsersService(home.root, home.env()) as svc:
            code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
                    "s.sendall(b'AUTH PLAIN joe@example.org s3cret%20word \\n'); print(s.recv(200))")
            r = subprocess.run(["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", "/usr/bin/python3", "-c", code,
                                svc.path], capture_output=True, text=True, timeout=30)
            assert r.stdout.strip() == "b'REFUSED uid%2054321%20may%20not%20ask%20AUTH\\n'", r.stdout + r.stderr
        assert "refused uid=54321 " in svc.log()
    finally:
        shutil.rmtree(top)


def test_database_down_is_a_temporary_answer(uhome):
    uhome.control("usersdb", "127.0.0.1|1|root||vpopmail\n")       # MySQL at a port nobody listens on
    with UsersService(uhome.root, uhome.env()) as svc:
        path = paths.users_socket(uhome.root)
        got = ask(path, W.encode_question("RCPT", "joe@example.org"),
                  W.encode_question("AUTH", "PLAIN", "joe@example.org", "s3cret word", ""))
        assert [g.split(b" ")[0] for g in got] == [b"TEMP", b"TEMP"]
        client = UsersClient(path)
        with pytest.raises(UsersUnavailable):
            client.check_recipient("joe@example.org")
        with pytest.raises(UsersUnavailable):
            client.relay_allowed("192.0.2.9", time.time(), 1800)
        assert client.authenticate("PLAIN", "joe@example.org", "s3cret word", None) is None
        client.close()
    log = svc.log()
    assert "tempfail question=RCPT" in log and "s3cret" not in log


def test_the_service_sees_a_changed_control(service):
    """usersdb written while it runs (the database moved, here to a dead server): the next
    question goes there, without a restart."""
    home, _ = service
    path = paths.users_socket(home.root)
    assert ask(path, W.encode_question("RCPT", "joe@example.org")) == [b"OK"]
    home.control("usersdb", "127.0.0.1|1|root||vpopmail\n")
    assert ask(path, W.encode_question("RCPT", "joe@example.org"))[0].startswith(b"TEMP ")


def test_srs_keys_it_cannot_read_are_a_temporary_answer(service):
    """qmail-smtpd's 421 for the same fault: the keys cannot be read, so whether the address is
    ours cannot be told; never a "bad hash" (550) for a key the service did not see."""
    home, svc = service
    path = paths.users_socket(home.root)
    keys = os.path.join(home.root, "control", "srs", "revers_srs_secrets")
    os.unlink(keys)
    os.mkdir(keys)
    now = time.time()
    good = codec.forward("alice@remote.example", "srs.example.org", [SECRET], now)
    [got] = ask(path, W.encode_question("SRS", good, repr(now)))
    assert W.decode_answer(got + b"\n") == ("TEMP", [b"unable to read controls: control/srs/revers_srs_secrets: unable to read: "
                                                    b"Is a directory"])
    assert 'tempfail question=SRS uid=%d reason="unable to read controls: ' % os.getuid() in svc.stop()


def test_a_virtualdomains_it_cannot_read_is_a_temporary_answer_to_rcpt(service):
    """chkuser cannot tell where qmail-send would route the address: TEMP (451), never NOUSER."""
    home, svc = service
    path = paths.users_socket(home.root)
    os.mkdir(os.path.join(home.root, "control", "virtualdomains"))
    [got] = ask(path, W.encode_question("RCPT", "joe@example.org"))
    assert W.decode_answer(got + b"\n") == ("TEMP", [b"control/virtualdomains: unable to read: Is a directory"])


def smtpd(home, session):
    r = subprocess.run([program("qmail-smtpd")], input=session, capture_output=True, timeout=60,
                       env=home.env(AUTHFAILDELAY="0", **TCP_ENV))
    return r.stdout.decode().split("\r\n"), r.stderr.decode()


SESSION = (b"EHLO c.example\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<ann@example.org>\r\n"
           b"RCPT TO:<SRS0=abcd=AA=remote.example=alice@srs.example.org>\r\nQUIT\r\n"
           % __import__("base64").b64encode(b"\0joe@example.org\0s3cret word"))


def test_smtpd_without_its_service_answers_451_and_454(uhome):
    """The socket is there and nobody listens (the service died): temporary, never 550/535."""
    with UsersService(uhome.root, uhome.env()):
        lines, _ = smtpd(uhome, SESSION)
    assert "235 ok, go ahead (#2.0.0)" in lines and "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in lines
    assert os.path.exists(paths.users_socket(uhome.root))          # left behind, as by a killed service
    lines, err = smtpd(uhome, SESSION)
    assert "454 temporary authentication failure (#4.3.0)" in lines
    assert lines.count("451 system temporary unavailable, try again later (#4.3.0 - chkuser)") == 1
    assert "451 temporary failure reading the users database (#4.3.0)" in lines      # the SRS recipient
    assert not any(line[:3] in ("535", "550", "553") for line in lines), lines
    assert "tempfail rule=userchk" in err and "tempfail rule=srs" in err and "s3cret" not in err


def test_smtpd_with_the_database_down_behind_the_service(uhome):
    uhome.control("usersdb", "127.0.0.1|1|root||vpopmail\n")
    with UsersService(uhome.root, uhome.env()):
        lines, _ = smtpd(uhome, SESSION)
    assert "454 temporary authentication failure (#4.3.0)" in lines
    assert "451 system temporary unavailable, try again later (#4.3.0 - chkuser)" in lines


def test_a_home_deeper_than_sun_path_is_served(tmp_path):
    """A socket path longer than sun_path (108 bytes) used to stop qmail-usersd at bind():
    it is reached through its directory, as qmail-queued's (qmailpy/unixsock.py)."""
    home = make_home(tmp_path / ("d" * 15) / ("e" * 15) / "qmail")    # mailboxes stay under 160
    assert len(paths.users_socket(home.root)) > 108
    with UsersService(home.root, home.env()):
        lines, err = smtpd(home, SESSION)
    assert "235 ok, go ahead (#2.0.0)" in lines, err
    assert "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in lines, err


class LongAnswers(SlowAnswers):
    """ADDR is answered with a 4000-byte field: the answers outweigh the questions."""

    def find_address(self, name, domain):
        return b"k" * 4000


def test_a_client_that_asks_and_never_reads_its_answers_grows_nothing():
    # answers wait in the connection's buffer only while the client takes them: with one not yet
    # written the service reads no more questions, so a client that asks on and never reads is
    # held by its socket's buffers (and dropped at its time-out), never by the service's memory
    server, t, path, logged, top = _server(lambda: LongAnswers(threading.Event()), Peers({os.getuid()}))
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        client.setblocking(False)
        question, sent = W.encode_question("ADDR", "a", "b"), 0
        deadline = time.monotonic() + 3
        while sent < 5000 * len(question) and time.monotonic() < deadline:
            try:
                sent += client.send(question * 100)
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.5)                   # the workers answer what was read
        # default 0: a machine slow enough to spend the connection's time-out in the loop above
        # has dropped it already, which holds nothing either
        held = max((len(c.out) + sum(map(len, c.waiting)) for c in list(server.conns.values())), default=0)
        assert held <= 4096 // len(question) * 4010, (held, sent)     # one read's answers at most
    finally:
        client.close()
        server.stop()
        t.join(10)
        shutil.rmtree(top)


class HeldAnswers(LongAnswers):
    """LongAnswers whose `hold`-th ADDR waits for `release` (`held` is set once it waits)."""

    def __init__(self, hold, held, release):
        super().__init__(release)
        self.hold, self.held, self.count = hold, held, 0

    def find_address(self, name, domain):
        self.count += 1
        if self.count == self.hold:
            self.held.set()
            self.release.wait(30)
        return super().find_address(name, domain)


def test_a_client_gone_while_its_question_is_answered_costs_nothing():
    """A client that asked ahead, read nothing (its answers wait in the service) and closed while
    a worker had its next question: the write fails, the connection is closed, and the answer
    that comes after it is dropped; the service goes on answering others."""
    held, release = threading.Event(), threading.Event()
    server, t, path, logged, top = _server(lambda: HeldAnswers(100, held, release), Peers({os.getuid()}),
                                           workers=1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        client.sendall(W.encode_question("ADDR", "a", "b") * 150)
        assert held.wait(20)
        deadline = time.monotonic() + 10
        while not any(c.out for c in list(server.conns.values())) and time.monotonic() < deadline:
            time.sleep(0.01)
        [conn] = list(server.conns.values())
        assert conn.busy and conn.out                  # answers unread, a question in flight
        client.close()
        while server.conns and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server.conns                        # closed at the failed write, while busy
        release.set()
        assert ask(path, W.encode_question("ADDR", "c", "d")) == [b"FOUND " + b"k" * 4000]
        assert [e for e, _ in logged if e == "error"] == []
    finally:
        release.set()
        client.close()
        server.stop()
        t.join(10)
        shutil.rmtree(top)


def test_a_home_that_does_not_exist_is_exit_111(tmp_path):
    """docs/qmail-usersd.md: 111 when the socket cannot be made. A QMAILHOME that names no qmail
    home used to be made (os.makedirs of sock/'s whole path) and served; it is refused, as
    qmail-queued refuses it, and nothing is created."""
    home = str(tmp_path / "none" / "qmail")
    r = subprocess.run([program("qmail-usersd")], capture_output=True, timeout=30,
                       env=dict(os.environ, QMAILHOME=home, QMAILPY_SINGLEUSER="1"))
    assert r.returncode == 111
    assert r.stderr.decode().split(" ", 2)[2] == (
        'fatal reason="cannot listen on %s/sock/users: No such file or directory"\n' % home)
    assert os.listdir(str(tmp_path)) == []
