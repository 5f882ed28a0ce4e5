"""POP-before-SMTP with a real Dovecot: the generated configuration, the post-login hook,
and qmail-smtpd letting the POP3 client's IP relay (docs/pop3.md).

Real processes, started and stopped here: `dovecot -F -c <outdir>/dovecot.conf` on a free
port of 127.0.0.1 (nothing from /etc/dovecot, no system dovecot), tcpserver +
bin/qmail-smtpd + bin/qmail-queue. Clients connect from 127.0.0.2.. so that each test
has IPs of its own. The qmail homes live in a world-traversable temporary directory:
Dovecot's mail processes run as the mailbox owner, which cannot enter pytest's 0700
tmp_path when the suite runs as root.
"""
import grp
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

import services
from conftest import ROOT, Home, program
from mysql_fixture import MysqlDatabase, mysql_admin, usersdb_line
from test_dialogues import free_port, queued_messages, read_lines

from qmailpy.pop3 import dovecot as dc, dovecotconf as dconf

PYTHON = sys.executable
MAIL_UID = 40089            # the mailboxes' owner when the suite runs as root (vpopmail's 89, shifted)
PASSWORD = "s3cret pass"
# a message as qmail-local stores it: LF line ends, a leading dot, 8-bit bytes, trailing blanks
MESSAGE = (b"Return-Path: <alice@remote.example>\nDelivered-To: joe@example.org\n"
           b"Subject: pop me\nFrom: alice@remote.example\n\nfirst line \n.leading dot\n..two dots\n"
           b"caf\xc3\xa9 8bit\n\n.\nlast line\n")
REFUSED_RCPT = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"

DOVECOT = shutil.which("dovecot") or (os.path.exists("/usr/sbin/dovecot") and "/usr/sbin/dovecot")


def need_dovecot():
    if not DOVECOT or not os.path.exists("/usr/lib/dovecot/script-login"):
        services.missing("dovecot", "Dovecot is not installed (dovecot-core dovecot-pop3d dovecot-sqlite "
                                    "dovecot-mysql; make deps)")


@pytest.fixture
def needs_dovecot():
    need_dovecot()


def mysql_driver_present():
    return any(os.path.exists(os.path.join(d, "libdriver_mysql.so"))
               for d in ("/usr/lib/dovecot/modules", "/usr/lib/dovecot/modules/auth"))


# -- a qmail home with one domain and users, and a Dovecot serving it

class World:
    def __init__(self, base, usersdb=None):
        self.root = os.path.join(base, "qmail")
        self.outdir = os.path.join(base, "dovecot")
        subprocess.run([PYTHON, os.path.join(ROOT, "tools", "install.py"), self.root, ROOT, PYTHON],
                       check=True, capture_output=True)
        self.home = Home(self.root)
        self.home.control("me", "test.example\n")
        self.home.control("rcpthosts", "example.org\n")
        if usersdb:
            self.home.control("usersdb", usersdb + "\n")
        vdir = os.path.join(self.root, "vpopmail")
        os.makedirs(vdir)
        if os.geteuid() == 0:       # qmail-users gives new directories the owner of vpopmaildir
            os.chown(vdir, MAIL_UID, MAIL_UID)
        self.users("adddomain", "example.org")
        self.users("addaliasdomain", "example.org", "alias.example")
        self.users("adduser", "joe@example.org", "-p", PASSWORD)
        self.users("adduser", "nopop@example.org", "-p", PASSWORD)
        self.proc = None
        self.port = None

    def users(self, *args):
        r = self.home.run("qmail-users", *args)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def maildir(self, user):
        return os.path.join(self.root, "vpopmail", "domains", "example.org", user, "Maildir")

    def put_message(self, user, name, data):
        path = os.path.join(self.maildir(user), "new", name)
        with open(path, "wb") as f:
            f.write(data)
        st = os.stat(self.maildir(user))
        os.chown(path, st.st_uid, st.st_gid)
        return path

    def deliver(self, user, data, quota="NOQUOTA"):
        """bin/qmail-local into user's Maildir, run as qmail-lspawn runs it for a users-database
        mailbox (as its owner, $MAILDIRQUOTA from pw_shell): (exit code, report)."""
        path = os.path.join(os.path.dirname(self.root), "message")
        with open(path, "wb") as f:
            f.write(data)
        home = os.path.dirname(self.maildir(user))
        owner = dict(user=MAIL_UID, group=MAIL_UID) if os.geteuid() == 0 else {}
        with open(path, "rb") as m:
            r = subprocess.run([program("qmail-local"), user, home, user, "", "", "example.org",
                                "alice@remote.example", "./Maildir/"], stdin=m, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=self.home.env(MAILDIRQUOTA=quota), timeout=60,
                               **owner)          # fds 1 and 2 one pipe, as qmail-lspawn gives them
        return r.returncode, r.stdout.decode()

    def relays(self):
        out = self.users("relays")
        return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines() if line}

    def start(self):
        self.port = free_port()
        r = subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", self.root, self.outdir,
                            "--port", str(self.port)], capture_output=True, cwd=ROOT, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", os.path.join(self.outdir, "dovecot.conf")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while True:
            assert self.proc.poll() is None, "dovecot exited: %s\n%s" % (self.proc.stdout.read(), self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "dovecot did not listen:\n" + self.log()
                time.sleep(0.05)

    def log(self):
        try:
            with open(os.path.join(self.outdir, "dovecot.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.proc.stdout.close()
        self.proc = None


@pytest.fixture
def world_dir():
    base = tempfile.mkdtemp(prefix="qmailpy-pop3-")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def sqlite_world():
    need_dovecot()
    base = tempfile.mkdtemp(prefix="qmailpy-pop3-")
    os.chmod(base, 0o755)
    world = World(base)
    try:
        world.start()
        yield world
    finally:
        world.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mysql_world(world_dir, mariadb):
    need_dovecot()
    if not mysql_driver_present():
        services.missing("dovecot", "Dovecot's MySQL driver is not installed (dovecot-mysql; make deps)")
    conn = mysql_admin()
    if conn is None:
        services.missing("mariadb", "no MySQL/MariaDB at 127.0.0.1:3306")
    db = MysqlDatabase(conn)
    world = None
    try:
        world = World(world_dir, usersdb=usersdb_line(db.name))
        world.db = db
        world.start()
        yield world
    finally:
        if world is not None:
            world.stop()
        db.drop()


# -- a POP3 client speaking from a chosen source address

class Pop3:
    def __init__(self, port, source):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def line(self):
        raw = self.file.readline()
        assert raw.endswith(b"\r\n"), raw
        return raw[:-2].decode("utf-8", "surrogateescape")

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def login(self, user, password):
        assert self.cmd("USER " + user).startswith("+OK")
        return self.cmd("PASS " + password)

    def multiline(self):
        """The raw bytes of a multi-line answer, up to (without) the terminating '.' line."""
        data = b""
        while not (data == b".\r\n" or data.endswith(b"\r\n.\r\n")):
            chunk = self.file.readline()
            assert chunk, "connection closed in a multi-line answer"
            data += chunk
        return data[:-3]

    def close(self):
        try:
            self.cmd("QUIT")
        finally:
            self.file.close()
            self.sock.close()


def unstuff(wire):
    """A RETR answer back to the stored message: undo dot-stuffing, CRLF -> LF."""
    lines = wire.split(b"\r\n")[:-1]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\n" for line in lines)


# -- SMTP through tcpserver from a chosen source address

def smtp_relay_attempt(world, source, sender="joe@example.org", rcpt="friend@remote.example"):
    """Replies to MAIL/RCPT (and DATA when RCPT was accepted) from `source`."""
    port = free_port()
    cmd = ["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(port), program("qmail-smtpd")]
    server = subprocess.Popen(cmd, env=world.home.env(QMAILQUEUE=program("qmail-queue")))
    try:
        deadline = time.time() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
                break
            except ConnectionRefusedError:
                assert time.time() < deadline, "tcpserver did not start"
                time.sleep(0.05)
        replies = read_lines(sock, 1)[0]
        sock.sendall(b"HELO client.example\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (sender.encode(), rcpt.encode()))
        replies += read_lines(sock, 3)[0]
        if replies[-1].startswith("250"):
            sock.sendall(b"DATA\r\n")
            replies += read_lines(sock, 1)[0]
            sock.sendall(b"Subject: relayed\r\n\r\nafter POP3\r\n.\r\n")
            replies += read_lines(sock, 1)[0]
        sock.sendall(b"QUIT\r\n")
        replies += read_lines(sock, 1)[0]
        sock.close()
        return replies
    finally:
        server.terminate()
        server.wait()


# -- end to end

@pytest.mark.usefixtures("needs_dovecot")
def test_pop3_login_retrieves_and_opens_relay(sqlite_world):
    w = sqlite_world
    name = "1795000000.M1P1Q1.test.example,S=%d" % len(MESSAGE)
    w.put_message("joe", name, MESSAGE)
    before = int(time.time())
    pop = Pop3(w.port, "127.0.0.2")
    assert pop.greeting.startswith("+OK")
    assert pop.login("joe@example.org", PASSWORD) == "+OK Logged in.", w.log()
    # the post-login hook ran before pop3 answered
    assert "127.0.0.2" in w.relays()
    assert pop.cmd("STAT") == "+OK 1 %d" % (len(MESSAGE) + MESSAGE.count(b"\n"))
    assert pop.cmd("UIDL 1") == "+OK 1 " + name        # qmail-pop3d's UIDLs: the file names
    assert pop.cmd("RETR 1").startswith("+OK")
    wire = pop.multiline()
    assert b"\r\n..leading dot\r\n...two dots\r\n" in wire and b"\r\n..\r\n" in wire
    assert unstuff(wire) == MESSAGE
    pop.close()
    stamp = w.relays()["127.0.0.2"]
    assert before <= stamp <= time.time() + 1
    conn = sqlite3.connect(os.path.join(w.root, "users", "vpopmail.sqlite"))
    assert conn.execute("SELECT user, domain, remote_ip FROM lastauth").fetchall() == [
        ("joe", "example.org", "127.0.0.2")]
    conn.close()

    # the POP3 client's IP may now relay (local sender, remote recipient); another IP may not
    replies = smtp_relay_attempt(w, "127.0.0.2")
    assert replies[2:4] == ["250 ok", "250 ok"], replies
    assert replies[4] == "354 go ahead" and replies[5].startswith("250 ok "), replies
    assert ["Fjoe@example.org", "Tfriend@remote.example"] in [env for env, _ in queued_messages(w.home)]
    replies = smtp_relay_attempt(w, "127.0.0.3")
    assert replies[2:4] == ["250 ok", REFUSED_RCPT], replies


@pytest.mark.usefixtures("needs_dovecot")
def test_wrong_password_records_nothing(sqlite_world):
    w = sqlite_world
    pop = Pop3(w.port, "127.0.0.4")
    assert pop.login("joe@example.org", "wrong") == "-ERR [AUTH] Authentication failed."
    pop.close()
    assert "127.0.0.4" not in w.relays()
    assert smtp_relay_attempt(w, "127.0.0.4")[3] == REFUSED_RCPT


@pytest.mark.usefixtures("needs_dovecot")
def test_login_forms_aliases_and_no_pop(sqlite_world):
    w = sqlite_world
    # vpopmail's separators and an alias domain reach the same mailbox (and are lower-cased)
    for source, login in (("127.0.0.5", "JOE%example.org"), ("127.0.0.6", "joe/alias.example"),
                          ("127.0.0.7", "joe@Alias.Example")):
        pop = Pop3(w.port, source)
        assert pop.login(login, PASSWORD) == "+OK Logged in.", (login, w.log())
        pop.close()
        assert source in w.relays()
    # vpopmail's NO_POP flag (pw_gid 0x02) refuses POP3 logins
    conn = sqlite3.connect(os.path.join(w.root, "users", "vpopmail.sqlite"))
    conn.execute("UPDATE vpopmail SET pw_gid = pw_gid | 2 WHERE pw_name = 'nopop'")
    conn.commit()
    conn.close()
    pop = Pop3(w.port, "127.0.0.8")
    assert pop.login("nopop@example.org", PASSWORD).startswith("-ERR")
    pop.close()
    assert "127.0.0.8" not in w.relays()


DID = (0, "did 1+0+0\n")
OVER_QUOTA = (100, "User over quota. (#5.1.1)\n")


@pytest.mark.usefixtures("needs_dovecot")
def test_room_made_over_pop3_takes_the_next_message_at_once(sqlite_world):
    """A mailbox at its quota bounces the next message, and the recount that decided so leaves a
    fresh one-line maildirsize saying "over". Dovecot deletes without touching maildirsize (its
    quota plugin is off, docs/pop3.md): once the user has emptied the mailbox over POP3, the
    next message must be delivered, not bounced for the 15 minutes that file is "fresh"."""
    w = sqlite_world
    w.users("adduser", "full@example.org", "-p", PASSWORD, "-q", "3C")
    mail = b"Subject: fill\n\nbody\n"
    stored = len(b"Return-Path: <alice@remote.example>\nDelivered-To: full@example.org\n" + mail)
    for _ in range(3):
        assert w.deliver("full", mail, "3C") == DID
    assert w.deliver("full", mail, "3C") == OVER_QUOTA
    size = os.path.join(w.maildir("full"), "maildirsize")
    with open(size) as f:
        assert f.read().splitlines()[1:] == ["%d 3" % (3 * stored)]    # recounted: one line
    pop = Pop3(w.port, "127.0.0.12")
    assert pop.login("full@example.org", PASSWORD) == "+OK Logged in.", w.log()
    assert pop.cmd("STAT").startswith("+OK 3 ")
    for n in (1, 2, 3):
        assert pop.cmd("DELE %d" % n) == "+OK Marked to be deleted."
    pop.close()
    assert [os.listdir(os.path.join(w.maildir("full"), sub)) for sub in ("new", "cur")] == [[], []]
    assert w.deliver("full", mail, "3C") == DID
    assert len(os.listdir(os.path.join(w.maildir("full"), "new"))) == 1
    # the recount found no message among Dovecot's files (dovecot-uidlist, dovecot.index.log ...)
    assert {"dovecot-uidlist", "dovecot.index.log"} <= set(os.listdir(w.maildir("full")))
    with open(size) as f:
        assert f.read() == "3C\n0 0\n%d 1\n" % stored


@pytest.mark.usefixtures("needs_dovecot")
def test_mail_delivered_during_a_session_is_kept_and_shown_once(sqlite_world):
    """A session lists the messages it found at login: one delivered meanwhile is neither shown
    nor deleted by that session's DELEs, and the next session shows it once, with LIST sizes of
    the CRLF form RETR sends and UIDLs (file names, without the :2, Dovecot adds in cur/) that
    stay as they were."""
    w = sqlite_world
    w.users("adduser", "during@example.org", "-p", PASSWORD)
    head = b"Return-Path: <alice@remote.example>\nDelivered-To: during@example.org\n"
    first, second = b"Subject: one\n\nfirst\n", b"Subject: two\n\nsecond\nmessage\n"
    assert w.deliver("during", first) == DID
    pop = Pop3(w.port, "127.0.0.13")
    assert pop.login("during@example.org", PASSWORD) == "+OK Logged in.", w.log()
    uidl = pop.cmd("UIDL 1")[len("+OK 1 "):]
    assert w.deliver("during", second) == DID
    assert pop.cmd("STAT") == "+OK 1 %d" % (len(head + first) + (head + first).count(b"\n"))
    assert pop.cmd("DELE 1") == "+OK Marked to be deleted."
    pop.close()

    def names():
        box = w.maildir("during")
        return [n.split(":")[0] for sub in ("new", "cur") for n in os.listdir(os.path.join(box, sub))]
    [name] = names()                            # the message delivered during the session, alone
    assert name != uidl
    stored = head + second
    for source in ("127.0.0.13", "127.0.0.14"):
        pop = Pop3(w.port, source)
        assert pop.login("during@example.org", PASSWORD) == "+OK Logged in."
        assert pop.cmd("LIST") == "+OK 1 messages:"
        assert pop.multiline() == b"1 %d\r\n" % (len(stored) + stored.count(b"\n"))
        assert pop.cmd("UIDL 1") == "+OK 1 " + name
        assert pop.cmd("RETR 1").startswith("+OK")
        assert unstuff(pop.multiline()) == stored
        pop.close()
    assert names() == [name]


@pytest.mark.usefixtures("needs_dovecot")
def test_mysql_backend(mysql_world):
    w = mysql_world
    w.put_message("joe", "1795000001.M2P2Q1.test.example", MESSAGE)
    pop = Pop3(w.port, "127.0.0.9")
    assert pop.login("joe@example.org", PASSWORD) == "+OK Logged in.", w.log()
    assert pop.cmd("RETR 1").startswith("+OK")
    assert unstuff(pop.multiline()) == MESSAGE
    pop.close()
    rows = w.db.execute("SELECT ip_addr FROM relay")
    assert [r[0] for r in rows] == ["127.0.0.9"]
    pop = Pop3(w.port, "127.0.0.10")
    assert pop.login("joe@example.org", "wrong").startswith("-ERR")
    pop.close()
    assert [r[0] for r in w.db.execute("SELECT ip_addr FROM relay")] == ["127.0.0.9"]
    replies = smtp_relay_attempt(w, "127.0.0.9")
    assert replies[2:4] == ["250 ok", "250 ok"], replies
    # a table with a folding collation, as vpopmail makes it: auth_username_chars (the qmail-users
    # characters) keeps a look-alike from logging in as joe; JOE is joe (%Lu)
    w.db.execute("ALTER TABLE vpopmail CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    for login, answer in (("jóe@example.org", "-ERR"), ("JOE@Example.ORG", "+OK")):
        pop = Pop3(w.port, "127.0.0.11")
        assert pop.login(login, PASSWORD).startswith(answer), (login, w.log())
        pop.close()


# -- the hook on its own

@pytest.mark.usefixtures("needs_dovecot")
def test_postlogin_records_then_execs(world_dir):
    w = World(world_dir)
    subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", w.root, w.outdir, "--dovecot-version", "2.3",
                    "--port", "11000"], check=True, capture_output=True, cwd=ROOT)
    hook = os.path.join(w.outdir, "postlogin")
    env = {"IP": "::ffff:192.0.2.7", "USER": "joe@example.org", "USERDB_KEYS": "HOME "}
    r = subprocess.run([hook, "/bin/sh", "-c", 'echo "exec'"'"'d as $USER"'], env=env, capture_output=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout == b"exec'd as joe@example.org\n", r.stderr
    assert "192.0.2.7" in w.relays()            # IPv4-mapped stored as tcpserver spells it


@pytest.mark.usefixtures("needs_dovecot")
def test_postlogin_leaves_the_relay_shut_for_no_relay(world_dir):
    """vchkpw opens the relay only for accounts without vpopmail's NO_RELAY flag (pw_gid 0x20);
    the login itself goes on, and lastauth is written as for anybody."""
    w = World(world_dir)
    subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", w.root, w.outdir, "--dovecot-version", "2.3"],
                   check=True, capture_output=True, cwd=ROOT)
    conn = sqlite3.connect(os.path.join(w.root, "users", "vpopmail.sqlite"))
    conn.execute("UPDATE vpopmail SET pw_gid = pw_gid | 32 WHERE pw_name = 'nopop'")
    conn.commit()
    hook = os.path.join(w.outdir, "postlogin")
    for ip, user in (("127.0.0.21", "nopop@example.org"), ("127.0.0.22", "joe@example.org")):
        r = subprocess.run([hook, "/bin/echo", "pop3"], env={"IP": ip, "USER": user}, capture_output=True,
                           timeout=30)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"pop3\n", b"")
    assert list(w.relays()) == ["127.0.0.22"]
    assert conn.execute("SELECT user, remote_ip FROM lastauth ORDER BY user").fetchall() == [
        ("joe", "127.0.0.22"), ("nopop", "127.0.0.21")]
    conn.close()
    replies = smtp_relay_attempt(w, "127.0.0.21", sender="nopop@example.org")
    assert replies[3] == REFUSED_RCPT, replies


@pytest.mark.usefixtures("needs_dovecot")
def test_postlogin_execs_even_when_the_database_is_down(world_dir):
    w = World(world_dir)
    subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", w.root, w.outdir, "--dovecot-version", "2.3"],
                   check=True, capture_output=True, cwd=ROOT)
    w.home.control("usersdb", "127.0.0.1|%d|nobody|x|nodb\n" % free_port())   # nothing listens there
    r = subprocess.run([os.path.join(w.outdir, "postlogin"), "/bin/echo", "pop3"], env={"IP": "192.0.2.8"},
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"pop3\n"
    assert b"postlogin: cannot record 192.0.2.8" in r.stderr


@pytest.mark.usefixtures("needs_dovecot")
def test_postlogin_without_a_program_or_an_ip(world_dir):
    """Started without the program to exec it says so and exits 111 (Dovecot then ends the
    login); a program that cannot be exec'd is 111 too, after the IP was recorded; without
    IP nothing is recorded and the program runs; a usersdb control it cannot parse is said
    on stderr and the login goes on."""
    w = World(world_dir)
    subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", w.root, w.outdir, "--dovecot-version", "2.3"],
                   check=True, capture_output=True, cwd=ROOT)
    hook = os.path.join(w.outdir, "postlogin")

    def run(*argv, **env):
        r = subprocess.run([hook, *argv], env=env, capture_output=True, timeout=30)
        return r.returncode, r.stdout, r.stderr.decode()
    assert run(IP="192.0.2.31", USER="joe@example.org") == (
        111, b"", "postlogin: no program to exec (run me from Dovecot's script-login)\n")
    assert run(USER="joe@example.org") == (111, b"", "postlogin: no program to exec (run me from Dovecot's script-login)\n")
    assert "192.0.2.31" not in w.relays()
    assert run("/nonexistent/pop3", IP="192.0.2.32", USER="joe@example.org") == (
        111, b"", "postlogin: cannot exec /nonexistent/pop3: No such file or directory\n")
    assert "192.0.2.32" in w.relays()
    assert run("/bin/echo", "pop3", USER="joe@example.org") == (0, b"pop3\n", "")
    before = w.relays()
    w.home.control("usersdb", "not a usersdb line\n")
    code, out, err = run("/bin/echo", "pop3", IP="192.0.2.33", USER="joe@example.org")
    assert (code, out) == (0, b"pop3\n")
    assert err == ("postlogin: cannot record 192.0.2.33 for POP-before-SMTP: usersdb: "
                   "expected host|port|user|password|database\n")
    os.unlink(os.path.join(w.root, "control", "usersdb"))
    assert w.relays() == before


# -- the generated configuration (no Dovecot needed)

def fake_plan(**kw):
    base = dict(home="/var/qmail", outdir="/var/qmail/dovecot", port=110, listen="127.0.0.1",
                version=(2, 3), root=True, vpopmaildir="/var/qmail/vpopmail", aliasdomains=True,
                python="/venv/bin/python3", checkout="/src", sitedir="/venv/site", mysql=None,
                sqlite="/var/qmail/users/vpopmail.sqlite", internal_user="dovecot",
                internal_group="dovecot", login_user="dovenull", mail_uid=89, mail_gid=89,
                first_valid_uid=89, postlogin_user="root")
    base.update(kw)
    return dc.Plan(**base)


def test_rendered_conf_2_3():
    conf = dconf.render_dovecot_conf(fake_plan())
    for line in ("protocols = pop3", "listen = 127.0.0.1", "ssl = no", "disable_plaintext_auth = no",
                 "base_dir = /var/qmail/dovecot/run", "state_dir = /var/qmail/dovecot/state",
                 "log_path = /var/qmail/dovecot/dovecot.log", "mail_location = maildir:~/Maildir",
                 "mail_uid = 89", "mail_gid = 89", "default_internal_user = dovecot",
                 "default_login_user = dovenull", "  executable = pop3 postlogin",
                 "  executable = script-login /var/qmail/dovecot/postlogin", "    port = 110",
                 "  args = /var/qmail/dovecot/dovecot-sql.conf.ext", "pop3_uidl_format = %f"):
        assert line in conf.splitlines(), line
    assert "chroot" not in conf and "include" not in conf
    sql = dconf.render_sql_conf(fake_plan())
    assert "driver = sqlite" in sql and "connect = /var/qmail/users/vpopmail.sqlite" in sql
    assert "default_pass_scheme = CRYPT" in sql
    assert "(COALESCE(pw_gid, 0) & 2) = 0" in sql and "aliasdomains" in sql
    assert "aliasdomains" not in dconf.render_sql_conf(fake_plan(aliasdomains=False))


def test_single_user_mode_conf():
    conf = dconf.render_dovecot_conf(fake_plan(root=False, mail_uid=None, mail_gid=None, internal_user="joe",
                                            internal_group="joe", login_user="joe", postlogin_user=None))
    assert "mail_uid" not in conf and "  user = " not in conf
    assert conf.count("chroot =") == 2


@pytest.mark.parametrize("line,connect", [
    ("127.0.0.1|3306|vpop|pw|vpopmail", "host=127.0.0.1 port=3306 user=vpop password=pw dbname=vpopmail"),
    ("db.example|0|vpop|pw|vpopmail", "host=db.example port=3306 user=vpop password=pw dbname=vpopmail"),
    ("localhost|/run/mysqld/mysqld.sock|vpop||vp", "host=/run/mysqld/mysqld.sock user=vpop dbname=vp"),
    ("h|3307|u|p w|d", "host=h port=3307 user=u option_file=/o/mysql.cnf option_group=qmailpy dbname=d"),
])
def test_mysql_connect_string(line, connect):
    p = fake_plan(sqlite=None, mysql=dc.mysql_params(line), outdir="/o")
    assert dconf.connect_string(p) == connect
    sql = dconf.render_sql_conf(p)
    assert "driver = mysql" in sql
    cnf = dconf.render_mysql_cnf(p)
    assert (cnf is not None) == ("option_file" in connect)
    if cnf:
        assert cnf == '[qmailpy]\npassword="p w"\n'


def test_quoting():
    assert dconf.quote("/plain/path") == "/plain/path"
    assert dconf.quote("host=h password=a#b") == '"host=h password=a#b"'
    assert dconf.quote('a"b') == '"a\\"b"'


@pytest.mark.usefixtures("needs_dovecot")
def test_refusals(world_dir):
    w = World(world_dir)
    with pytest.raises(dc.ConfigError, match="2.4"):
        dc.plan(w.root, w.outdir, version=(2, 4))
    if os.geteuid() == 0:
        os.chown(os.path.join(w.root, "vpopmail"), 0, 0)
        with pytest.raises(dc.ConfigError, match="root"):
            dc.plan(w.root, w.outdir, version=(2, 3))
        p = dc.plan(w.root, w.outdir, version=(2, 3), mail_user="%d:%d" % (MAIL_UID, MAIL_UID))
        assert (p.mail_uid, p.postlogin_user) == (MAIL_UID, pwd.getpwuid(0).pw_name)
    empty = os.path.join(world_dir, "empty")
    os.makedirs(os.path.join(empty, "control"))
    with pytest.raises(dc.ConfigError, match="qmail-users adddomain"):
        dc.plan(empty, w.outdir, version=(2, 3))
    assert dc.parse_version("2.3.19.1 (9b53102964)") == (2, 3)
    assert dc.dovecot_version("/nonexistent/dovecot") is None      # plan() then writes for 2.3


def test_what_it_cannot_configure_is_said_with_exit_1(world_dir):
    """Each refusal of `python -m qmailpy.pop3.dovecot` is one line naming what to fix, exit 1,
    and nothing written."""
    w = World(world_dir)

    def run(*args, usersdb=None):
        if usersdb is not None:
            w.home.control("usersdb", usersdb)
        r = subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", w.root, w.outdir, "--dovecot-version", "2.3",
                            *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        return r.returncode, r.stdout, r.stderr
    said = "qmailpy.pop3.dovecot: %s\n"
    assert run(usersdb="db.example|3306|vpop\n") == (1, "", said % "usersdb: expected host|port|user|password|database")
    assert run(usersdb="db.example|3306|vp op|pw|vpopmail\n") == (
        1, "", said % "usersdb: the user 'vp op' cannot be given to Dovecot")
    os.unlink(os.path.join(w.root, "control", "usersdb"))
    os.mkdir(os.path.join(w.root, "control", "usersdb"))
    assert run() == (1, "", said % "control/usersdb: unable to read: Is a directory")
    os.rmdir(os.path.join(w.root, "control", "usersdb"))
    assert run("--python", "/nonexistent/python3") == (
        1, "", said % "cannot run /nonexistent/python3: No such file or directory")
    assert run("--python", "/bin/false") == (1, "", said % "cannot run /bin/false: ")
    if os.geteuid() == 0:
        assert run("--mail-user", "no-such-user-here") == (1, "", said % "no such user or group: no-such-user-here")
        assert run("--mail-user", "%d:no-such-group-here" % MAIL_UID) == (
            1, "", said % "no such user or group: %d:no-such-group-here" % MAIL_UID)
        os.chown(os.path.join(w.root, "users"), 54321, 54321)       # a uid without a name
        assert run() == (1, "", said % "the owner of %s/users has no name: pass --postlogin-user" % w.root)
        vdir = os.path.join(w.root, "vpopmail")
        os.rename(vdir, vdir + ".away")
        assert run() == (1, "", said % "%s does not exist: add a domain first (qmail-users adddomain)" % vdir)
    assert not os.path.exists(w.outdir)


def test_a_plan_for_a_user_who_is_not_root(world_dir):
    """Not root (a developer's Dovecot): every process is that user's, nothing chroots to
    another uid; a uid without a name cannot be given to Dovecot."""
    w = World(world_dir)
    nobody = pwd.getpwuid(65534)
    p = dc.plan(w.root, w.outdir, version=(2, 3), euid=65534)
    assert (p.root, p.internal_user, p.login_user, p.mail_uid, p.mail_gid, p.first_valid_uid, p.postlogin_user,
            p.auth_worker_user) == (False, nobody.pw_name, nobody.pw_name, None, None, 500, None, None)
    assert p.internal_group == grp.getgrgid(nobody.pw_gid).gr_name
    with pytest.raises(dc.ConfigError) as e:
        dc.plan(w.root, w.outdir, version=(2, 3), euid=54321)
    assert str(e.value) == "uid 54321 has no name: Dovecot needs one for its processes"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_root_plans_need_dovecots_users_and_a_usersdb_in_options_is_roots(world_dir, monkeypatch):
    """As root: without the dovecot and dovenull accounts (dovecot-core makes them) nothing is
    planned; a MySQL usersdb given in control/options (no control/usersdb file to take an owner
    from, and root alone reads control/options' password) has the hook run as root."""
    w = World(world_dir)
    w.home.control("options", "usersdb: 127.0.0.1|3306|vpop|pw|vpopmail\n")
    p = dc.plan(w.root, w.outdir, version=(2, 3), mail_user="%d:%d" % (MAIL_UID, MAIL_UID))
    assert (p.mysql["user"], p.postlogin_user, p.auth_worker_user) == ("vpop", "root", None)
    real = pwd.getpwnam

    def no_dovenull(name):
        if name == "dovenull":
            raise KeyError(name)
        return real(name)
    monkeypatch.setattr(pwd, "getpwnam", no_dovenull)
    with pytest.raises(dc.ConfigError) as e:
        dc.plan(w.root, w.outdir, version=(2, 3), mail_user="%d:%d" % (MAIL_UID, MAIL_UID))
    assert str(e.value) == "no system user 'dovenull': install dovecot-core (it creates dovecot and dovenull)"


@pytest.mark.skipif(os.geteuid() != 0, reason="as root")
def test_the_hook_and_auth_worker_run_as_the_owner_of_users_never_as_a_links_target(world_dir):
    """Dovecot's auth worker and post-login hook run as the owner of the SQLite users database:
    that owner (qmailu) owns users/ and so can put a link at users/vpopmail.sqlite; the owner was
    read through it, so a link to a root-owned file had the admin's next run put both Dovecot
    processes under root. The owner is users/'s, the directory's (as sqliteowner takes it)."""
    w = World(world_dir)
    users = os.path.join(w.root, "users")
    db = os.path.join(users, "vpopmail.sqlite")
    roots = os.path.join(world_dir, "roots.sqlite")
    shutil.copy(db, roots)
    os.unlink(db)
    os.symlink(roots, db)
    os.chown(users, 65534, 65534)
    p = dc.plan(w.root, w.outdir, version=(2, 3), mail_user="%d:%d" % (MAIL_UID, MAIL_UID))
    nobody = pwd.getpwuid(65534).pw_name
    assert (p.postlogin_user, p.auth_worker_user) == (nobody, nobody)
