"""authfaillimit under real tcpserver: 40 parallel connections from one IP try wrong passwords;
the limit holds over all of them, the right password is refused during the lockout, every
lockout is logged (issue 16)."""
import base64
import os
import threading

from test_smtpd_tls import Smtpd, make_home, read_lines
from test_smtpd import connect
from tlspeer import tls_certs  # noqa: F401  (fixture)

CONNECTIONS, TRIES = 40, 12         # more tries than the limit: each connection must meet the 421


def plain(user, password):
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + user + b"\0" + password) + b"\r\n"


def attack(port, results):
    """One connection: up to TRIES wrong passwords, until 421; the replies."""
    got = []
    s = connect(port)
    try:
        read_lines(s, 1)
        s.sendall(b"EHLO brute.example\r\n")
        read_lines(s, 5)
        for i in range(TRIES):
            s.sendall(plain(b"joe@example.org", b"guess%d" % i))
            reply = read_lines(s, 1)
            got += reply
            if not reply or reply[0].startswith("421"):
                break
    finally:
        s.close()
    results.append(got)


def test_forty_parallel_connections_share_the_limit(tmp_path, tls_certs):  # noqa: F811
    home = make_home(tmp_path / "qmail", tls_certs, cert=False)
    home.control("smtpauthplaintext", "1\n")
    home.control("authfaillimit", "10\n")
    home.control("authfailwindow", "600\n")
    server = Smtpd(home)
    try:
        results = []
        threads = [threading.Thread(target=attack, args=(server.port, results)) for _ in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        replies = [r for got in results for r in got]
        failed = replies.count("535 authentication failed (#5.7.1)")
        locked = replies.count("421 too many failed authentications from your IP address, try again later (#4.7.0)")
        # the right password now: refused, unchecked
        s = connect(server.port)
        read_lines(s, 1)
        s.sendall(b"EHLO joe.example\r\n")
        read_lines(s, 5)
        s.sendall(plain(b"joe@example.org", b"s3cret"))
        right = read_lines(s, 1)
        s.close()
    finally:
        log = server.stop()
    print("authfaillimit 10: %d connections, %d replies: %d x 535, %d x 421 (password checks made: %d)"
          % (len(results), len(replies), failed, locked, log.count(" auth-failed ")))
    assert len(results) == CONNECTIONS
    assert right == ["421 too many failed authentications from your IP address, try again later (#4.7.0)"]
    # ten password checks in all, over 40 connections: nine 535s, the tenth failure a 421
    assert log.count(" auth-failed ") == 10
    assert failed == 9
    assert locked == CONNECTIONS == len(replies) - failed, [g for g in results if not g or not g[-1].startswith("421")]
    assert log.count(" auth-lockout ") == locked + 1         # each connection's, and the right password's
    assert " auth mech=" not in log                         # the right password never checked
    with open(os.path.join(home.root, "sessions", "authfail", "127.0.0.0_8")) as f:     # loopback: one client
        assert len(f.read().splitlines()) == 10


def test_attempts_expire_and_successes_do_not_count(tmp_path):
    from qmailpy.smtpd.authlimit import Attempts
    a = Attempts(str(tmp_path / "authfail"), "192.0.2.7", 2, 100, 4242)
    assert a.begin(1000) == 1
    a.forget(1000)                          # it succeeded: not counted
    assert a.begin(1001) == 1 and a.begin(1002) == 2
    assert a.begin(1050) is None            # locked out: nothing recorded
    assert a.begin(1101) == 2               # the first failure expired, the second still counts
    assert a.begin(1300) == 1 and os.path.exists(tmp_path / "authfail" / "192.0.2.7")
    a.forget(1300)                          # nothing left: the file goes
    assert not os.path.exists(tmp_path / "authfail" / "192.0.2.7")


def test_checks_dated_a_window_ahead_of_a_clock_stepped_back_do_not_lock_the_ip_out(tmp_path):
    """A line counts while it is less than `window` old; lines written before the clock was
    stepped back two days were 'younger' than that for two days and kept the IP (its right
    password too) locked out until the clock caught up. A check dated `window` or more ahead
    of the clock counts no more; one dated less ahead still does (a lockout keeps on)."""
    from qmailpy.smtpd.authlimit import Attempts
    now = 1_800_000_000
    ahead = Attempts(str(tmp_path), "192.0.2.7", 3, 600, 1)
    assert [ahead.begin(now + 2 * 86400 + i) for i in range(4)] == [1, 2, 3, None]
    assert Attempts(str(tmp_path), "192.0.2.7", 3, 600, 2).begin(now) == 1
    near = Attempts(str(tmp_path), "192.0.2.8", 3, 600, 1)
    assert [near.begin(now + 599 - i) for i in range(3)] == [1, 2, 3]
    assert Attempts(str(tmp_path), "192.0.2.8", 3, 600, 2).begin(now) is None


def guess_from(port, source, password):
    """One AUTH PLAIN guess from the local address `source` (any of 127.0.0.0/8: a local user's
    process may bind it); the reply."""
    import socket
    s = socket.socket()
    s.settimeout(30)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    try:
        read_lines(s, 1)
        s.sendall(b"EHLO brute.example\r\n")
        read_lines(s, 5)
        s.sendall(plain(b"joe@example.org", password))
        return read_lines(s, 1)
    finally:
        s.close()


def test_a_local_user_cannot_reset_the_limit_by_another_loopback_address(tmp_path, tls_certs):  # noqa: F811
    """A local user (a hosting customer's shell or PHP script) reaches qmail-smtpd from any
    address of 127.0.0.0/8: counted per address, each of its 16 million gave `authfaillimit`
    more guesses, an unlimited password oracle. The loopback network counts as one client."""
    home = make_home(tmp_path / "qmail", tls_certs, cert=False)
    home.control("smtpauthplaintext", "1\n")
    home.control("authfaillimit", "3\n")
    server = Smtpd(home)
    try:
        got = [guess_from(server.port, "127.0.0.%d" % (2 + i), b"guess%d" % i) for i in range(5)]
    finally:
        log = server.stop()
    locked = ["421 too many failed authentications from your IP address, try again later (#4.7.0)"]
    assert got == [["535 authentication failed (#5.7.1)"]] * 2 + [locked] * 3
    assert log.count(" auth-failed ") == 3
    assert os.listdir(os.path.join(home.root, "sessions", "authfail")) == ["127.0.0.0_8"]


def test_the_client_counted_is_a_network_an_attacker_holds_whole():
    """authfaillimit counts a client, and a client's addresses together where one attacker holds
    them all: the loopback network, an IPv6 address's /64; an IPv4-mapped address is its IPv4 one."""
    from qmailpy.smtpd.authlimit import failure_key
    for ip, key in (("192.0.2.7", "192.0.2.7"), ("127.0.0.1", "127.0.0.0/8"), ("127.45.6.7", "127.0.0.0/8"),
                    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"), ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
                    ("2001:db8:1:3::9", "2001:db8:1:3::/64"), ("::1", "::1"), ("::ffff:198.51.100.4", "198.51.100.4"),
                    ("::ffff:127.0.0.9", "127.0.0.0/8"), ("", ""), ("junk", "junk"), ("1:2:junk", "1:2:junk")):
        assert failure_key(ip) == key, ip


def test_a_garbled_line_has_expired(tmp_path):
    """A line that does not start with a time (a crash cut it) counts as expired and is dropped."""
    from qmailpy.smtpd.authlimit import Attempts
    (tmp_path / "192.0.2.7").write_bytes(b"garbage\n1000 1\n")
    assert Attempts(str(tmp_path), "192.0.2.7", 3, 100, 2).begin(1001) == 2
    assert (tmp_path / "192.0.2.7").read_bytes() == b"1000 1\n1001 2\n"


def test_forget_takes_back_only_its_own_live_check(tmp_path):
    """A check that outlived the window (a slow checkpassword) has expired: forget() leaves the
    other sessions' checks as they are; a session locked out recorded nothing and takes nothing back."""
    from qmailpy.smtpd.authlimit import Attempts
    mine = Attempts(str(tmp_path), "192.0.2.7", 2, 100, 1)
    assert mine.begin(1000) == 1
    assert Attempts(str(tmp_path), "192.0.2.7", 2, 100, 2).begin(1050) == 2
    mine.forget(1100)
    assert (tmp_path / "192.0.2.7").read_bytes() == b"1050 2\n"
    assert Attempts(str(tmp_path), "192.0.2.7", 1, 100, 3).begin(1100) is None
    locked = Attempts(str(tmp_path), "192.0.2.7", 1, 100, 3)
    assert locked.begin(1101) is None
    locked.forget(1101)
    assert (tmp_path / "192.0.2.7").read_bytes() == b"1050 2\n"


def test_a_file_removed_while_waiting_for_its_lock_is_opened_again(tmp_path, monkeypatch):
    """Another session removed the file (all its checks expired) while this one waited for the
    lock: the check goes into the file at the path, not into the removed one, where no other
    session would count it."""
    import fcntl
    from qmailpy.smtpd import authlimit
    path = tmp_path / "192.0.2.7"
    path.write_bytes(b"1 9\n")
    removed = []

    class Racing:
        def __getattr__(self, name):
            return getattr(fcntl, name)

        @staticmethod
        def flock(fd, op):
            if not removed:
                removed.append(fd)
                os.unlink(path)             # the other session, holding the lock before us
            fcntl.flock(fd, op)
    monkeypatch.setattr(authlimit, "fcntl", Racing())
    assert authlimit.Attempts(str(tmp_path), "192.0.2.7", 3, 100, 2).begin(1000) == 1
    assert removed and path.read_bytes() == b"1000 2\n"


class _Log:
    def __init__(self):
        self.lines = []

    def __call__(self, event, **fields):
        self.lines.append((event, fields))


def test_a_check_that_cannot_be_taken_back_stays_counted_and_is_logged(home):
    """The right password, and its check cannot be taken off the count (the file cannot be
    opened, the users database is down): it stays counted, one failure too many rather than
    one too few, and the log says so; the session is not refused for it."""
    from qmailpy import paths
    from qmailpy.smtpd.main import Services
    from qmailpy.users.errors import UsersUnavailable
    log = _Log()
    services = Services(home.env(), [], log)
    assert services.auth_attempt("begin", "192.0.2.7", 3, 900) == 1
    path = os.path.join(paths.authfail_path(home.root), "192.0.2.7")
    os.unlink(path)
    os.mkdir(path)
    assert services.auth_attempt("forget", "192.0.2.7", 3, 900) is None
    assert log.lines == [("authfail-kept", {"ip": "192.0.2.7", "reason": "[Errno 21] Is a directory: %r" % path})]

    class Users:
        def auth_begin(self, ip, limit, window, now):
            return 1, 42

        def auth_forget(self, ip, check):
            raise UsersUnavailable("database down")
    log.lines.clear()
    services._users = Users()
    assert services.auth_attempt("begin", "192.0.2.7", 3, 900, shared=True) == 1
    assert services.auth_attempt("forget", "192.0.2.7", 3, 900, shared=True) is None
    assert log.lines == [("authfail-kept", {"ip": "192.0.2.7", "check": 42, "reason": "database down"})]
