"""authfailshared: the AUTH-failure count of every MX host in the MariaDB users database
(qmailpy/users/authfail.py), asked through qmail-usersd or in-process, and this host's
files again when the database cannot answer. The machine's MariaDB, a database of our own."""
import base64
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, Home, program
from qmailpy import paths
from qmailpy.ctl.reader import Controls
from qmailpy.proto import userswire as W
from qmailpy.queue.layout import create_queue
from qmailpy.users import UsersUnavailable, admin, open_users
from qmailpy.users import authfail
from qmailpy.users.errors import NotShared
from qmailpy.users.mysql import MysqlDB
from qmailpy.users.service import UsersClient
from test_dialogues import TCP_ENV
from test_usersd import ask
from usersd import UsersService

LOCKOUT = "421 too many failed authentications from your IP address, try again later (#4.7.0)"
FAILED = "535 authentication failed (#5.7.1)"
IP = "192.0.2.77"


@pytest.fixture
def usersdb(mariadb):
    """control/usersdb's line for a database of this test's own, dropped afterwards."""
    import pymysql
    host, port = mariadb
    name = "qmailpy_authfail_%d" % os.getpid()
    conn = pymysql.connect(host=host, port=port, user="root", password="", autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS `%s`" % name)
        cur.execute("CREATE DATABASE `%s`" % name)
    try:
        yield "%s|%d|root||%s" % (host, port, name)
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS `%s`" % name)
        conn.close()


def rows(line, sql="SELECT ip_addr, stamp FROM qmailpy_authfail ORDER BY id"):
    db = MysqlDB(line, 5)
    try:
        return db.run(lambda cur: (cur.execute(sql), cur.fetchall())[1])
    finally:
        db.close()


def test_table_made_on_first_use_counts_to_the_limit_and_forgets(usersdb):
    shared = authfail.SharedFailures(MysqlDB(usersdb, 5))
    now = 1_800_000_000
    first, second, third = (shared.begin(IP, 3, 100, now + i) for i in range(3))
    assert [first[0], second[0], third[0]] == [1, 2, 3]
    assert shared.begin(IP, 3, 100, now + 3) is None                # locked out: nothing recorded
    assert shared.begin("192.0.2.78", 3, 100, now + 3)[0] == 1      # another IP has its own count
    shared.forget(IP, second[1])                                    # succeeded: does not count
    assert shared.begin(IP, 3, 100, now + 4)[0] == 3
    assert rows(usersdb) == ((IP, now), (IP, now + 2), ("192.0.2.78", now + 3), (IP, now + 4))
    # the lockout ends when the oldest check is `window` old, one check at a time
    assert shared.begin(IP, 3, 100, now + 99) is None
    assert shared.begin(IP, 3, 100, now + 100)[0] == 3
    create = rows(usersdb, "SHOW CREATE TABLE qmailpy_authfail")[0][1]
    assert "`ip_addr` varchar(64) NOT NULL" in create and "KEY `ip_stamp` (`ip_addr`,`stamp`)" in create
    shared.db.close()


def test_every_begin_removes_expired_rows_of_every_ip(usersdb):
    shared = authfail.SharedFailures(MysqlDB(usersdb, 5))
    now = 1_800_000_000
    shared.begin("192.0.2.1", 5, 100, now - 150)
    shared.begin("192.0.2.2", 5, 100, now - 100)
    shared.begin("192.0.2.3", 5, 100, now - 99)
    shared.begin(IP, 5, 100, now)
    assert rows(usersdb) == (("192.0.2.3", now - 99), (IP, now))
    shared.db.close()


def _race(usersdb, n, limit):
    got = []

    def one():
        db = MysqlDB(usersdb, 10)
        try:
            got.append(authfail.SharedFailures(db).begin(IP, limit, 600, time.time()))
        finally:
            db.close()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return got


def test_forty_connections_at_once_check_ten_passwords(usersdb):
    """One database connection each (as every qmail-usersd worker and every host has its own):
    GET_LOCK serialises them, so the limit holds exactly."""
    authfail.SharedFailures(MysqlDB(usersdb, 5)).db.run(lambda cur: cur.execute(authfail.CREATE))
    got = _race(usersdb, 40, 10)
    assert len(got) == 40
    assert sorted(g[0] for g in got if g is not None) == list(range(1, 11))
    assert got.count(None) == 30
    assert len(rows(usersdb)) == 10


def test_a_lock_held_too_long_is_unavailable(usersdb, monkeypatch):
    import pymysql
    monkeypatch.setattr(authfail, "LOCK_WAIT", 1)
    params = MysqlDB(usersdb, 5).params
    holder = pymysql.connect(autocommit=True, **params)
    with holder.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 1)", (authfail.lock_name(IP),))
        assert cur.fetchone()[0] == 1
    db = MysqlDB(usersdb, 5)
    with pytest.raises(UsersUnavailable, match="GET_LOCK"):
        authfail.SharedFailures(db).begin(IP, 3, 100, time.time())
    holder.close()                                  # its lock goes with its connection
    assert authfail.SharedFailures(db).begin(IP, 3, 100, time.time())[0] == 1
    db.close()


# -- qmail-usersd and qmail-smtpd

def make_home(root, usersdb=None):
    home = Home(root)
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")
    home.control("authfaillimit", "2\n")
    home.control("authfailshared", "1\n")
    if usersdb:
        home.control("usersdb", usersdb + "\n")
    create_queue(home.root)
    users = open_users(home.root, Controls(home.root), create=True)
    try:
        if not users.has_domain("example.org"):
            admin.add_domain(users, "example.org")
            admin.add_user(users, "joe@example.org", "right", clear=True)
    finally:
        users.close()
    return home


def auth(*passwords):
    return b"EHLO c.example\r\n" + b"".join(
        b"AUTH PLAIN %s\r\n" % base64.b64encode(b"\0joe@example.org\0" + p) for p in passwords) + b"QUIT\r\n"


def smtpd(home, session, *argv):
    r = subprocess.run([program("qmail-smtpd"), *argv], input=session, capture_output=True, timeout=60,
                       env=home.env(AUTHFAILDELAY="0", **dict(TCP_ENV, TCPREMOTEIP=IP)))
    return [line for line in r.stdout.decode().split("\r\n") if line[:3] in ("235", "421", "454", "535")], r.stderr.decode()


def test_usersd_answers_authbegin_and_authforget(tmp_path, usersdb):
    home = make_home(tmp_path / "qmail", usersdb)
    with UsersService(home.root, home.env()) as svc:
        path = paths.users_socket(home.root)
        got = ask(path, W.encode_question("AUTHBEGIN", IP, "2", "600", "1800000000.5"),
                  W.encode_question("AUTHBEGIN", IP, "2", "600", "1800000001"),
                  W.encode_question("AUTHBEGIN", IP, "2", "600", "1800000002"))
        assert [g.split(b" ")[:2] for g in got] == [[b"COUNTED", b"1"], [b"COUNTED", b"2"], [b"LOCKED"]]
        check = int(got[1].split(b" ")[2])
        assert ask(path, W.encode_question("AUTHFORGET", IP, str(check))) == [b"OK"]
        client = UsersClient(path)
        count, third = client.auth_begin(IP, 2, 600, 1800000003)
        assert count == 2
        assert client.auth_forget(IP, third) is None                # a check that succeeded
        assert client.auth_begin(IP, 2, 600, 1800000004)[0] == 2     # ... did not count
        assert client.auth_begin(IP, 2, 600, 1800000005) is None
        client.close()
        assert ask(path, W.encode_question("AUTHBEGIN", IP, "two", "600", "0")) == \
            [b"BAD AUTHBEGIN%20wants%20a%20limit,%20a%20number%20of%20seconds%20and%20a%20time"]
    assert rows(usersdb) == ((IP, 1800000000), (IP, 1800000004))
    assert "bad uid=" in svc.log()


def test_sqlite_users_database_is_counted_on_this_host(tmp_path):
    home = make_home(tmp_path / "qmail")
    with pytest.raises(NotShared):
        authfail.shared_failures(open_users(home.root, Controls(home.root)).db)
    with UsersService(home.root, home.env()):
        path = paths.users_socket(home.root)
        assert ask(path, W.encode_question("AUTHBEGIN", IP, "2", "600", "1800000000")) == \
            [b"LOCAL the%20users%20database%20is%20not%20MySQL/MariaDB"]
        client = UsersClient(path)
        with pytest.raises(NotShared, match="^the users database is not MySQL/MariaDB$"):
            client.auth_begin(IP, 2, 600, 1800000000)
        with pytest.raises(NotShared, match="^the users database is not MySQL/MariaDB$"):
            client.auth_forget(IP, 7)
        client.close()
        lines, err = smtpd(home, auth(b"wrong", b"wrong", b"right"))
    assert lines == [FAILED, LOCKOUT]
    assert "authfail-local ip=%s reason=\"the users database is not MySQL/MariaDB\"" % IP in err
    with open(os.path.join(paths.authfail_path(home.root), IP)) as f:
        assert len(f.read().splitlines()) == 2


def test_two_hosts_share_one_count_through_usersd_and_in_process(tmp_path, usersdb):
    """Host A asks its qmail-usersd; host B (no service) reads the database itself; one count."""
    a, b = make_home(tmp_path / "a", usersdb), make_home(tmp_path / "b", usersdb)
    with UsersService(a.root, a.env()):
        assert smtpd(a, auth(b"wrong"))[0] == [FAILED]
        assert smtpd(b, auth(b"right"))[0] == ["235 ok, go ahead (#2.0.0)"]     # does not count
        lines, err = smtpd(b, auth(b"wrong", b"right"))
        assert lines == [LOCKOUT]                                   # the second failure, on B
        assert "auth-lockout ip=%s user=joe@example.org failures=2 limit=2" % IP in err
        assert smtpd(a, auth(b"right"))[0] == [LOCKOUT]             # unchecked, on A too
    assert [r[0] for r in rows(usersdb)] == [IP, IP]
    for home in (a, b):
        assert not os.path.exists(os.path.join(paths.authfail_path(home.root), IP))


def test_database_down_counts_on_this_host_and_logs_it(tmp_path, usersdb):
    """With AUTH checked by a checkpassword program, a database that is down still lets
    passwords be checked: the limit is then this host's (never none, never a 4xx/5xx of its own)."""
    home = make_home(tmp_path / "qmail", usersdb)
    home.control("usersdb", "127.0.0.1|1|root||vpopmail\n")        # nobody listens there
    checkpw = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    good = b"EHLO c.example\r\nAUTH PLAIN %s\r\nQUIT\r\n" % base64.b64encode(b"\0good@example.org\0secret")
    with UsersService(home.root, home.env()) as svc:
        assert smtpd(home, good, *checkpw)[0] == ["235 ok, go ahead (#2.0.0)"]
        lines, err = smtpd(home, auth(b"wrong", b"wrong"), *checkpw)
        assert lines == [FAILED, LOCKOUT]
        assert err.count(" authfail-local ip=%s reason=\"users service: TEMP usersdb 127.0.0.1: " % IP) == 2
        assert smtpd(home, good, *checkpw)[0] == [LOCKOUT]
    assert "tempfail question=AUTHBEGIN" in svc.log()
    with open(os.path.join(paths.authfail_path(home.root), IP)) as f:
        assert len(f.read().splitlines()) == 2


def test_checkpassword_reads_fd3_while_another_fd3_is_open():
    """authfailshared keeps the users service's socket (or a database connection) open while the
    checkpassword program runs: it still gets the secret on its fd 3, and only there."""
    from qmailpy.smtpd.checkpassword import checkpassword
    argv = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    held = []
    while True:                                 # fd 3 is something else's (and 4: our pipe gets 4 or more)
        fd = os.open(os.devnull, os.O_RDONLY)
        held.append(fd)
        if fd >= 4:
            break
    try:
        assert checkpassword(argv, "good@example.org", "secret", None, os.environ) is True
        assert checkpassword(argv, "good@example.org", "wrong", None, os.environ) is False
    finally:
        for fd in held:
            os.close(fd)
    assert checkpassword(argv, "good@example.org", "secret", None, os.environ) is True


def test_showctl_check_says_an_sqlite_users_database_is_not_shared(tmp_path, usersdb):
    finding = ("control/authfailshared: the users database is SQLite (control/usersdb is empty): "
               "the AUTH-failure count is kept on this host only")
    home = make_home(tmp_path / "qmail")
    assert finding in home.run("qmail-showctl", "--check").stdout.decode().splitlines()
    home.control("usersdb", usersdb + "\n")
    assert finding not in home.run("qmail-showctl", "--check").stdout.decode()


def test_checks_dated_a_window_ahead_of_a_clock_stepped_back_do_not_lock_the_ip_out(usersdb):
    """As this host's files: a row `window` or more ahead of the clock (written before a step
    back, or by a host whose clock ran that far ahead) neither counts nor stays; one less
    ahead counts."""
    shared = authfail.SharedFailures(MysqlDB(usersdb, 5))
    now = 1_800_000_000
    assert [shared.begin(IP, 3, 100, now + 86400 + i) for i in range(4)][3] is None
    assert shared.begin("192.0.2.78", 3, 100, now + 99)[0] == 1
    assert shared.begin(IP, 3, 100, now)[0] == 1
    assert shared.begin("192.0.2.78", 3, 100, now)[0] == 2
    assert rows(usersdb) == (("192.0.2.78", now + 99), (IP, now), ("192.0.2.78", now))
    shared.db.close()
