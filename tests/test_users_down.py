"""A database that cannot answer is UsersUnavailable (451 / defer), quickly, never "no such user"."""
import socket
import sqlite3
import threading
import time

import pytest

from mysql_fixture import backend, mysql_backend  # noqa: F401 (fixtures)
from qmailpy.ctl.reader import Controls
from qmailpy.users import admin
from qmailpy.users.auth import authenticate
from qmailpy.users.base import UsersUnavailable, open_users
from qmailpy.users.chkuser import check_recipient


def users_at(home, line, timeout=5.0):
    home.control("usersdb", line + "\n")
    return open_users(home.root, Controls(home.root, {}), timeout=timeout)


QUESTIONS = [
    lambda u: u.has_domain("example.org"),
    lambda u: u.domain_of("example.org"),
    lambda u: u.lookup("joe", "example.org"),
    lambda u: u.verify_password("joe@example.org", "pw"),
    lambda u: u.verify_cram_md5("joe@example.org", "<1.2@x>", "0" * 32),
    lambda u: u.relay_allowed("192.0.2.1", time.time(), 1800),
    lambda u: u.record_relay("192.0.2.1", time.time()),
    lambda u: check_recipient(u, "joe@example.org"),
]


@pytest.mark.parametrize("ask", QUESTIONS)
def test_refused_port_is_unavailable_at_once(home, ask):
    users = users_at(home, "127.0.0.1|1|root||vpopmail")     # opening does not connect
    started = time.monotonic()
    with pytest.raises(UsersUnavailable):
        ask(users)
    assert time.monotonic() - started < 2


def test_authenticate_says_cannot_tell(home):
    users = users_at(home, "127.0.0.1|1|root||vpopmail")
    assert authenticate(users, "LOGIN", "joe@example.org", "pw", None) is None
    assert authenticate(users, "CRAM-MD5", "joe@example.org", "0" * 32, "<1.2@x>") is None


def test_silent_server_times_out(home):
    """A server that accepts and never speaks: bounded by the time-out, then unavailable."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        users = users_at(home, "127.0.0.1|%d|root||vpopmail" % srv.getsockname()[1], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(UsersUnavailable):
            users.lookup("joe", "example.org")
        assert 0.5 < time.monotonic() - started < 4
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


@pytest.mark.parametrize("line", ["localhost", "127.0.0.1|x|root||db", "127.0.0.1|3306|root||"])
def test_malformed_usersdb_is_unavailable(home, line):
    with pytest.raises(UsersUnavailable):
        users_at(home, line).has_domain("example.org")


def test_unknown_database_is_unavailable(home, mariadb):
    from mysql_fixture import mysql_admin
    mysql_admin().close()
    with pytest.raises(UsersUnavailable):
        users_at(home, "127.0.0.1|3306|root||qmailpy_no_such_db_%d" % time.time_ns()).lookup("a", "b.c")


def test_locked_sqlite_is_unavailable(home):
    users = open_users(home.root, Controls(home.root, {}), create=True)
    admin.add_domain(users, "example.org")
    users.close()
    locker = sqlite3.connect(users.db.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        reader = open_users(home.root, Controls(home.root, {}), timeout=0.2)
        started = time.monotonic()
        with pytest.raises(UsersUnavailable):
            reader.has_domain("example.org")
        assert time.monotonic() - started < 2
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert open_users(home.root, Controls(home.root, {})).has_domain("example.org")


def test_unreadable_control_is_unavailable(home):
    import os
    os.mkdir(os.path.join(home.root, "control", "usersdb"))     # reading it fails, even as root
    with pytest.raises(UsersUnavailable):
        open_users(home.root, Controls(home.root, {}))


def test_mysql_connection_dropped_while_idle_is_reopened(mysql_backend):  # noqa: F811
    """vmysql.c's rebuild after MySQL's wait_timeout: a killed idle connection is reopened once."""
    users = mysql_backend.open(create=True)
    admin.add_domain(users, "example.org")
    (conn_id,), = users.db.query("SELECT CONNECTION_ID()")
    mysql_backend.mysql.execute("KILL %s" % int(conn_id))
    assert users.has_domain("example.org")
    (new_id,), = users.db.query("SELECT CONNECTION_ID()")
    assert new_id != conn_id


def test_mysql_connection_lost_inside_a_transaction_is_not_reopened(mysql_backend):  # noqa: F811
    """A connection lost between two statements of one admin operation (the server restarted,
    KILL): the server rolled the first back, and the second was run again on a new connection,
    in autocommit, and kept: deldomain could take the domain away and leave its users. The
    operation is now UsersUnavailable and nothing of it is kept."""
    users = mysql_backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "secret")
    (conn_id,), = users.db.query("SELECT CONNECTION_ID()")
    with pytest.raises(UsersUnavailable):
        with admin.atomic(users):
            users.write("DELETE FROM vpopmail WHERE pw_domain = ?", "example.org")
            mysql_backend.mysql.execute("KILL %s" % int(conn_id))
            users.write("DELETE FROM dir_control WHERE domain = ?", "example.org")
    assert users.lookup("joe", "example.org") is not None
    assert users.is_real_domain("example.org")
    # a caller that goes on inside the lost transaction is refused, never given a new connection
    users.db.begin()
    (conn_id,), = users.db.query("SELECT CONNECTION_ID()")
    users.write("DELETE FROM vpopmail WHERE pw_domain = ?", "example.org")
    mysql_backend.mysql.execute("KILL %s" % int(conn_id))
    with pytest.raises(UsersUnavailable):
        users.write("DELETE FROM dir_control WHERE domain = ?", "example.org")
    with pytest.raises(UsersUnavailable) as e:
        users.write("DELETE FROM dir_control WHERE domain = ?", "example.org")
    assert str(e.value) == "usersdb: the connection of an open transaction was lost"
    users.db.rollback()
    assert users.lookup("joe", "example.org") is not None
    assert admin.del_domain(users, "example.org", keep_files=True) == "domain"     # reopened after it
    assert not users.is_real_domain("example.org")


def test_mysql_database_not_made_yet_is_made_by_the_first_change(home, mariadb):
    """vpopmail creates its database when it is not there; qmail-users adddomain does too
    (a question, not allowed to create, finds it unavailable: see above)."""
    from mysql_fixture import mysql_admin, usersdb_line
    name = "qmailpy_made_%d" % time.time_ns()
    admin_conn = mysql_admin()
    try:
        home.control("usersdb", usersdb_line(name) + "\n")
        r = home.run("qmail-users", "adddomain", "example.org")
        assert r.returncode == 0, r.stderr
        with admin_conn.cursor() as cur:
            cur.execute("SELECT domain FROM `%s`.dir_control" % name)
            assert cur.fetchall() == (("example.org",),)
    finally:
        with admin_conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS `%s`" % name)
        admin_conn.close()


def lost_after(mysql_backend, statement, table, runs):  # noqa: F811
    """A work that sends `statement`, then (its first run) loses its connection (KILL), then
    counts `table`'s rows; each run noted in `runs`."""
    def work(cur):
        runs.append(1)
        cur.execute(statement)
        if len(runs) == 1:
            cur.execute("SELECT CONNECTION_ID()")
            mysql_backend.mysql.execute("KILL %s" % int(cur.fetchone()[0]))
        cur.execute("SELECT COUNT(*) FROM " + table)
        return cur.fetchone()[0]
    return work


def test_mysql_connection_lost_after_a_change_was_sent_is_not_run_again(mysql_backend):  # noqa: F811
    """The connection lost after an INSERT was sent (its answer, or the next statement's, never
    came): the server may have made the change, so the work is not run again on a new connection
    (authfailshared's check counted twice: a client locked out one check early, for a good
    password too). UsersUnavailable, and the one row the server kept; a lost connection before
    any change is still reopened and the work done once, and one after a REPLACE run again."""
    from qmailpy.users.authfail import CREATE
    users = mysql_backend.open(create=True)
    users.db.run(lambda cur: cur.execute(CREATE))
    runs = []
    work = lost_after(mysql_backend, "INSERT INTO qmailpy_authfail (ip_addr, stamp) VALUES ('192.0.2.7', 1)",
                      "qmailpy_authfail", runs)
    with pytest.raises(UsersUnavailable):
        users.db.run(work)
    assert len(runs) == 1 and mysql_backend.sql("SELECT COUNT(*) FROM qmailpy_authfail") == ((1,),)
    (conn_id,), = users.db.query("SELECT CONNECTION_ID()")
    mysql_backend.mysql.execute("KILL %s" % int(conn_id))
    assert users.db.run(work) == 2 and len(runs) == 2
    # a REPLACE (POP-before-SMTP's relay row) leaves the same row when made twice: run again
    replaced = []
    record = lost_after(mysql_backend, "REPLACE INTO relay (ip_addr, timestamp) VALUES ('192.0.2.7', 1)", "relay",
                        replaced)
    assert users.db.run(record) == 1 and len(replaced) == 2


def test_mysql_connect_failing_after_its_socket_was_made_leaves_none_open(mysql_backend, monkeypatch):  # noqa: F811
    """pymysql's connect() failing between making its socket and keeping it (setsockopt: EIO) left
    the socket to the cycle collector (the exception's frames held it): each failed question of a
    long-running qmail-usersd worker kept one MariaDB connection open for a while."""
    import gc
    import os
    users = mysql_backend.open(create=True)
    users.close()

    def sockets():
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
            except OSError:             # the listing's own fd
                pass
        return n
    real = socket.socket.setsockopt

    def failing(sock, level, option, value):
        if option == socket.SO_KEEPALIVE:
            raise OSError(5, "Input/output error")
        return real(sock, level, option, value)
    gc.collect()
    before = sockets()
    gc.disable()
    try:
        monkeypatch.setattr(socket.socket, "setsockopt", failing)
        for _ in range(3):
            with pytest.raises(UsersUnavailable):
                users.has_domain("example.org")
        assert sockets() == before
    finally:
        gc.enable()
