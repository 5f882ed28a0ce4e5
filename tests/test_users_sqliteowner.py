"""Root and the SQLite users database in another owner's users/ (qmailu's in production).

Root (qmail-lspawn, qmail-users, the clearopensmtp cron job) never opens the file itself:
a child that has become the owner of users/ does (qmailpy.users.sqliteowner), so a link
the owner puts there reaches only what the owner could open. Root only.
"""
import os
import pathlib
import select
import shutil
import signal
import sqlite3
import sys
import tempfile
import time

import pytest

from conftest import Home
from qmailpy.ctl.reader import Controls
from qmailpy.users import UsersUnavailable, open_users
from qmailpy.users.schema import create_statements

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root: the database is opened as another uid")
OWNER = (40094, 40095)      # no account needed: root becomes numeric ids


@pytest.fixture
def top():
    """A directory everyone may search, as /var/qmail's parents are (SQLite opens by absolute
    path, so the owner of users/ must pass every directory above; pytest's tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="qmailpy-sqliteowner-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def owned_home(top):
    os.chmod(top, 0o755)
    home = Home(top / "qmail")
    users = os.path.join(home.root, "users")
    os.mkdir(users, 0o700)
    os.chown(users, *OWNER)
    return home, users


def opened(home):
    return open_users(home.root, Controls(home.root, {}))


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


def status(pid):
    """/proc/PID/status as {field: [values]}, or None once the process is gone (or a zombie)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = {k: v.split() for k, _, v in (line.partition(":") for line in f)}
    except OSError:
        return None
    return None if fields["State"][0] == "Z" else fields


def gone(pid, deadline=30.0):
    end = time.monotonic() + deadline
    while status(pid) is not None:
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_root_makes_and_uses_the_database_as_the_owner_of_users(top):
    home, users = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    ok(home.run("qmail-users", "adduser", "joe@v.test", "-p", "secret"))
    st = os.lstat(os.path.join(users, "vpopmail.sqlite"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (OWNER[0], OWNER[1], 0o600)
    assert sorted(n for n in os.listdir(users) if os.stat(os.path.join(users, n)).st_uid != OWNER[0]) == []
    with opened(home) as db:
        assert db.lookup("joe", "v.test").address == "joe@v.test"
        assert db.verify_password("joe@v.test", "secret")
        child = db.db._conn.child_pid
        ids = status(child)
        # the owner's uid and gid, every one of them, and no supplementary group
        assert ids["Uid"] == [str(OWNER[0])] * 4 and ids["Gid"] == [str(OWNER[1])] * 4 and ids["Groups"] == []
    assert gone(child)              # closed: the child read EOF and ended
    ok(home.run("qmail-users", "deluser", "joe@v.test"))
    with opened(home) as db:
        assert db.lookup("joe", "v.test") is None


def root_database(path):
    """A users database of root's own, 0600, with one mailbox in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for stmt in create_statements():
        conn.execute(stmt)
    conn.execute("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                 "pw_shell, pw_clear_passwd) VALUES ('joe', 'v.test', 'x', 0, 0, '', '/root', 'NOQUOTA', '')")
    conn.execute("INSERT INTO dir_control (domain) VALUES ('v.test')")
    conn.close()
    os.chmod(path, 0o600)
    with open(path, "rb") as f:
        return f.read()


def test_root_never_opens_what_a_link_in_the_owners_users_points_to(top):
    """users/vpopmail.sqlite -> a database of root's: root used to read it (a mailbox of the
    owner's choosing, delivered as the uid of its row) and write it (qmail-users adduser)."""
    home, users = owned_home(top)
    theirs = str(top / "root-only.sqlite")
    before = root_database(theirs)
    os.symlink(theirs, os.path.join(users, "vpopmail.sqlite"))
    with opened(home) as db:
        with pytest.raises(UsersUnavailable) as e:
            db.lookup("joe", "v.test")
        assert str(e.value) == "%s/vpopmail.sqlite: unable to open database file (as uid %d, the owner of %s)" % (
            users, OWNER[0], users)
    r = home.run("qmail-users", "adduser", "ann@v.test", "-p", "secret")
    assert r.returncode == 111, (r.stdout, r.stderr)
    with open(theirs, "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(top)) == ["qmail", "root-only.sqlite"]      # no journal of it either


def test_a_database_its_owner_cannot_reach_is_unavailable_never_empty(top):
    """The owner of users/ cannot search a directory above (a chmod 700 on the way): its child
    cannot tell whether vpopmail.sqlite is there. That is a database that is down (deferral,
    451), never a database not made yet, where every mailbox is unknown (bounce, 550)."""
    home, users = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    ok(home.run("qmail-users", "adduser", "joe@v.test", "-p", "secret"))
    os.chmod(top, 0o700)
    try:
        with opened(home) as db:
            with pytest.raises(UsersUnavailable) as e:
                db.lookup("joe", "v.test")
        assert str(e.value) == "%s/vpopmail.sqlite: Permission denied (as uid %d, the owner of %s)" % (
            users, OWNER[0], users)
    finally:
        os.chmod(top, 0o755)
    with opened(home) as db:
        assert db.lookup("joe", "v.test").address == "joe@v.test"


def test_a_caller_that_cannot_search_users_gets_unavailable_never_empty(top):
    """The same for a caller that is not root (qmail-smtpd's chkuser as qmaild, without the
    users service): users/ it may not search is no answer, not "no such user"."""
    import subprocess
    from conftest import ROOT
    home, users = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    ok(home.run("qmail-users", "adduser", "joe@v.test", "-p", "secret"))
    code = ("import sys; from qmailpy.ctl.reader import Controls; from qmailpy.users import UsersUnavailable, open_users\n"
            "try:\n  print(open_users(sys.argv[1], Controls(sys.argv[1], {})).lookup('joe', 'v.test'))\n"
            "except UsersUnavailable as e:\n  print('unavailable:', e)\n")
    r = subprocess.run(["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups", "/usr/bin/env", "-i",
                        sys.executable, "-c", code, home.root], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (r.stdout, r.stderr) == ("unavailable: %s/vpopmail.sqlite: Permission denied\n" % users, "")


def test_the_child_holds_no_fd_of_its_callers(top):
    """qmail-send waits for EOF on qmail-lspawn's pipes: a child that kept a copy of one open
    would hold qmail-send up after qmail-lspawn ended."""
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    r, w = os.pipe()
    try:
        with opened(home) as db:
            assert db.lookup("joe", "v.test") is None           # the child is started here
            os.close(w)
            w = None
            assert select.select([r], [], [], 10.0)[0] == [r]
            assert os.read(r, 1) == b""
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def forked_caller(home, hold, without_stderr=False):
    """A forked process that opens the database (starting its child), reports (pid, the child's
    pid, the fd of its end of the pair), then sleeps (hold) or exits."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            if without_stderr:
                os.close(2)
            db = opened(home)
            db.lookup("joe", "v.test")
            conn = db.db._conn
            os.write(wfd, b"%d %d\n" % (conn.child_pid, conn.sock.fileno()))
            if hold:
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        child, fd = map(int, f.readline().split())
    return pid, child, fd


def test_the_child_ends_with_its_caller(top):
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    pid, child, _ = forked_caller(home, hold=True)
    assert status(child) is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert gone(child)


def test_the_child_of_a_caller_without_stderr_ends_with_its_caller(top):
    """A caller started with fd 2 closed gets its own end of the socket pair at fd 2: the
    child kept fd 2 as the caller's stderr, so it held that end itself, never read EOF and
    stayed (with any transaction the caller left open, the database's write lock) for ever."""
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    pid, child, mine = forked_caller(home, hold=False, without_stderr=True)
    os.waitpid(pid, 0)
    try:
        assert mine == 2 and gone(child, 10.0)
    finally:
        if status(child) is not None:
            os.kill(child, signal.SIGKILL)


def test_a_lost_child_takes_its_transaction_and_nothing_runs_without_it(top):
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    with opened(home) as users:
        db = users.db
        db.begin()
        db.execute("INSERT INTO dir_control (domain) VALUES ('w.test')")
        child = db._conn.child_pid
        os.kill(child, signal.SIGKILL)
        assert gone(child)
        for _ in range(2):      # no second child under what was an open transaction
            with pytest.raises(UsersUnavailable) as e:
                db.execute("INSERT INTO dir_control (domain) VALUES ('x.test')")
            assert "the users database's child (uid %d) is gone" % OWNER[0] in str(e.value)
        db.rollback()
    with opened(home) as users:        # a new child once closed; the killed one's insert is gone
        assert [r[0] for r in users.rows("SELECT domain FROM dir_control ORDER BY domain")] == ["v.test"]


def test_a_statement_interrupted_before_its_reply_leaves_no_reply_for_the_next(top, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) or a signal handler's exception between a statement and its
    reply left the reply in the socket: the next statement on the connection (atomic()'s
    ROLLBACK, a query) was answered with it. The connection is lost instead."""
    from qmailpy.users import sqliteowner
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    with opened(home) as users:
        db = users.db
        assert db.query("SELECT domain FROM dir_control") == [("v.test",)]
        real = sqliteowner._recv

        def interrupted(sock):
            monkeypatch.setattr(sqliteowner, "_recv", real)
            raise KeyboardInterrupt
        monkeypatch.setattr(sqliteowner, "_recv", interrupted)
        with pytest.raises(KeyboardInterrupt):
            db.query("SELECT 'an answer for nobody'")
        with pytest.raises(UsersUnavailable) as e:
            db.query("SELECT domain FROM dir_control")
        assert "the users database's child (uid %d) is gone" % OWNER[0] in str(e.value)


def test_a_database_its_owner_may_not_make_is_exit_111(top):
    """users/ its owner may not write in (mode 0500): the child cannot make vpopmail.sqlite,
    qmail-users says why and as whom, exit 111, and root makes nothing there either."""
    home, users = owned_home(top)
    os.chmod(users, 0o500)
    r = home.run("qmail-users", "adddomain", "v.test")
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-users: database unavailable: %s/vpopmail.sqlite: "
                                                      "Permission denied (as uid %d, the owner of %s)\n"
                                                      % (users, OWNER[0], users))
    assert os.listdir(users) == []


def test_the_childs_errors_are_the_callers(top):
    """What SQLite refuses in the child is what it would refuse here: a duplicate key is
    UsersError (qmail-users says it, exit 100), a table not made yet is no rows and is made by
    the first write, a statement SQLite cannot parse is unavailable."""
    from qmailpy.users import UsersError
    home, users = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    with opened(home) as db:
        with pytest.raises(UsersError) as e:
            db.write("INSERT INTO dir_control (domain) VALUES (?)", "v.test")
        assert str(e.value) == "UNIQUE constraint failed: dir_control.domain"
        db.db.execute("DROP TABLE relay")
        assert db.rows("SELECT ip_addr FROM relay") == []
        assert db.write("INSERT INTO relay (ip_addr, timestamp) VALUES (?, ?)", "192.0.2.1", 7) == 1
        assert db.rows("SELECT ip_addr, timestamp FROM relay") == [("192.0.2.1", 7)]
        with pytest.raises(UsersUnavailable) as e:
            db.rows("SELEKT 1")
        assert str(e.value) == '%s/vpopmail.sqlite: near "SELEKT": syntax error' % users
        assert db.rows("SELECT domain FROM dir_control") == [("v.test",)]     # the child goes on


def test_a_child_that_cannot_become_the_owner_or_start_is_unavailable(top, monkeypatch):
    """setuid refused (a kernel or seccomp policy), fork refused (EAGAIN: the process limit), a
    child that ends before it says anything: each is UsersUnavailable naming why, never an
    empty database and never the file opened as root."""
    import errno
    from qmailpy.users import sqliteowner
    home, users = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    path = os.path.join(users, "vpopmail.sqlite")

    def refused(uid):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    with monkeypatch.context() as m:
        m.setattr(os, "setuid", refused)               # in the forked child
        with opened(home) as db:
            with pytest.raises(UsersUnavailable) as e:
                db.lookup("joe", "v.test")
    assert str(e.value) == "%s: cannot become uid %d: Operation not permitted" % (path, OWNER[0])

    def no_fork():
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    with monkeypatch.context() as m:
        m.setattr(os, "fork", no_fork)
        with opened(home) as db:
            with pytest.raises(UsersUnavailable) as e:
                db.lookup("joe", "v.test")
    assert str(e.value) == ("%s: cannot start the child that opens it: Resource temporarily unavailable"
                            % path)

    def gone_at_once(*args):
        raise SystemExit(0)
    with monkeypatch.context() as m:
        m.setattr(sqliteowner, "connect_file", gone_at_once)
        with opened(home) as db:
            with pytest.raises(UsersUnavailable) as e:
                db.lookup("joe", "v.test")
    assert str(e.value) == "%s: the child that opens it as uid %d did not start" % (path, OWNER[0])


def test_a_database_gone_before_the_child_looks_is_not_made_yet(top):
    """Removed between the caller's look and the child's (an admin moving the file aside):
    the child says MissingTable, as the caller would have said it."""
    from qmailpy.users import sqliteowner
    from qmailpy.users.errors import MissingTable
    home, users = owned_home(top)
    with pytest.raises(MissingTable) as e:
        sqliteowner.connect_as(os.path.join(users, "vpopmail.sqlite"), OWNER, 5, False)
    assert str(e.value) == os.path.join(users, "vpopmail.sqlite")


def test_no_child_for_a_database_not_made_yet(top, monkeypatch):
    home, _ = owned_home(top)
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("a child was started"))
    with opened(home) as db:
        assert db.lookup("joe", "v.test") is None


def test_a_caller_that_ignores_sigchld_still_gets_its_child(top):
    """A spawner started with SIGCHLD ignored (kept, as exec keeps it) has no child to wait for."""
    home, _ = owned_home(top)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with opened(home) as db:
            assert db.is_real_domain("v.test")
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_showctl_check_names_a_database_root_cannot_open_as_the_owner(top):
    """A file of root's in qmailu's users/ (chown -R forgotten): qmail-lspawn would defer every
    virtual delivery; --check says so, and why."""
    home, users = owned_home(top)
    os.chown(users, 0, 0)
    ok(home.run("qmail-users", "adddomain", "v.test"))
    os.chown(users, *OWNER)
    r = home.run("qmail-showctl", "--check")
    assert ("users database: cannot list the hosted domains: %s/vpopmail.sqlite: unable to open database "
            "file (as uid %d, the owner of %s)\n" % (users, OWNER[0], users)) in r.stdout.decode(), r.stdout
