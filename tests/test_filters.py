"""qmail-queue's clamd/spamd filters against real daemons started by this module.

clamd runs offline in the foreground with a temp config from
qmailpy.filters.runscripts and a one-signature database (EICAR as .ndb);
spamd runs with -L, per-user preferences from a scratch database
(qmailpy_spamd_<random>) on the MariaDB at 127.0.0.1:3306, and GTUBE. Both
are stopped by pid at the end of the module; the database is dropped. Each
test runs bin/qmail-queue on a fresh queue, as qmail-smtpd does.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import services
import clamd_payloads as payloads
from mysql_fixture import mysql_admin
from qmailpy import exitcodes as X
from qmailpy.filters import runscripts
from qmailpy.proto import qq
from qmailpy.queue import layout

ROOT = Path(__file__).resolve().parents[1]
QMAIL_QUEUE = str(ROOT / "bin" / "qmail-queue")
PYTHON = str(ROOT / ".venv" / "bin" / "python")

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
VIRUS = "Qmailpy-Test-EICAR.UNOFFICIAL"
HEADERS = (b"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: lunch\n"
           b"Date: Mon, 1 Jan 2024 12:00:00 +0000\nMessage-ID: <lunch-1@example.org>\n")
CLEAN = HEADERS + b"\nShall we have lunch on Tuesday? The usual place at noon.\n"
INFECTED = (HEADERS + b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\n"
            b"Content-Type: text/plain\n\nSee http://one.example/a and https://two.example/b?x=1,\n"
            b"also http://three.example/.\n--XX\nContent-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\n\n"
            b"WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNU\n"
            b"LUZJTEUhJEgrSCo=\n--XX--\n")
SPAM = HEADERS + b"\nBuy now!\n" + GTUBE + b"\n"
SENDER = b"alice@example.org"


def _stop(proc, grace=15):
    """SIGTERM the process we started, by its pid; SIGKILL if it does not go."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_ready(proc, probe, what, log, limit=60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError("%s exited %s:\n%s" % (what, proc.returncode, Path(log).read_text()[-3000:]))
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("%s not ready after %d s:\n%s" % (what, limit, Path(log).read_text()[-3000:]))


def _ask(family, addr, data, stop=None):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(addr)
        s.sendall(data)
        out = b""
        while True:
            got = s.recv(4096)
            out += got
            if not got or (stop and stop in out):
                return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clamd:
    """clamd with the clamd.conf `make install` writes (runscripts.from_controls over a qmail home's
    controls: clamdsocket, databytes, clamdalertencrypted), plus a TCP socket and a temp directory."""

    def __init__(self, root, controls=()):
        from qmailpy.ctl.reader import Controls
        self.root = root
        self.sock = os.path.join(root, "clamd.sock")
        self.port = _free_port()
        db = os.path.join(root, "db")
        os.mkdir(db)
        with open(os.path.join(db, "qmailpy-test.ndb"), "w") as f:
            f.write("Qmailpy-Test-EICAR:0:*:%s\n" % EICAR.hex())
        home = os.path.join(root, "qmail")
        os.makedirs(os.path.join(home, "control"))
        for name, value in dict(controls, clamdsocket=self.sock).items():
            with open(os.path.join(home, "control", name), "w") as f:
                f.write(value + "\n")
        conf = os.path.join(root, "clamd.conf")
        self.conf = runscripts.from_controls(Controls(home, {}), conf, database_dir=db, clamd_extra=[
            "TCPSocket %d" % self.port, "TCPAddr 127.0.0.1", "TemporaryDirectory %s" % root,
            "SelfCheck 3600"])["clamd.conf"]
        with open(conf, "w") as f:
            f.write(self.conf)
        self.log = os.path.join(root, "clamd.log")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(runscripts.clamd_command(conf), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            _wait_ready(self.proc, lambda: _ask(socket.AF_UNIX, self.sock, b"zPING\0", b"\0") == b"PONG\0",
                        "clamd", self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        _stop(self.proc)


class Spamd:
    USERS = [("low@example.net", "required_score", "3"),
             ("mark@example.net", "required_score", "10"),
             ("high@example.net", "required_score", "10"),
             ("high@example.net", "add_header", "all Reject-Score 20"),
             ("safe@example.net", "report_safe", "1"),
             ("safe@example.net", "add_header", "all Reject-Score 20"),
             ("y@example.com", "add_header", "all Reject-Score 20"),
             ("carol@example.com", "required_score", "4")]

    def __init__(self, conn):
        self.conn = conn
        self.db = "qmailpy_spamd_%s" % os.urandom(6).hex()
        self.proc = None
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE `%s`" % self.db)
            cur.execute("USE `%s`" % self.db)
            cur.execute(runscripts.USERPREF_TABLE)
            cur.executemany("INSERT INTO userpref (username, preference, value) VALUES (%s, %s, %s)", self.USERS)
        self.root = tempfile.mkdtemp(prefix="qmailpy-spamd-")
        os.chmod(self.root, 0o755)                      # spamd's children run as nobody
        with open(os.path.join(self.root, "init.pre"), "w") as f:
            f.write("loadplugin Mail::SpamAssassin::Plugin::Check\n")
        with open(os.path.join(self.root, "local.cf"), "w") as f:
            f.write("report_safe 0\n" + runscripts.spamd_sql_config(self.db, username="root"))
        self.sock = os.path.join(self.root, "spamd.sock")
        self.log = os.path.join(self.root, "spamd.log")
        argv = runscripts.spamd_command(self.sock, children=2, sanetcheck=0, user="nobody",
                                        siteconfigpath=self.root, extra=["--min-children=1"])
        assert "-L" in argv and "-q" in argv and "--max-children=2" in argv
        try:
            with open(self.log, "wb") as out:
                self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            _wait_ready(self.proc, lambda: b" 0 PONG" in _ask(socket.AF_UNIX, self.sock, b"PING SPAMC/1.5\r\n\r\n"),
                        "spamd", self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc is not None:
            _stop(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)
        with self.conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS `%s`" % self.db)
        self.conn.close()


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    if not shutil.which("clamd"):
        services.missing("clamd", "clamd is not installed (Debian clamav-daemon; make deps)")
    c = Clamd(str(tmp_path_factory.mktemp("clamd")))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def spamd(mariadb):
    if not shutil.which("spamd"):
        services.missing("spamd", "spamd is not installed (Debian spamd, spamassassin; make deps)")
    conn = mysql_admin()
    if conn is None:
        services.missing("mariadb", "no MariaDB at 127.0.0.1:3306 for spamd's user preferences")
    s = Spamd(conn)
    yield s
    s.stop()


class Home:
    def __init__(self, root):
        self.root = root
        layout.create_queue(str(root))
        (root / "control").mkdir()

    def control(self, name, text):
        (self.root / "control" / name).write_text(text if text.endswith("\n") else text + "\n")

    def clients(self, name, *keys):
        """control/NAME and NAME.cdb, built by qmail-newfilters."""
        self.control(name, "# test\n" + "".join(k + "\n" for k in keys))
        p = subprocess.run([PYTHON, "-m", "qmailpy.cli.newfilters", "-v", name], cwd=ROOT, capture_output=True,
                           env=dict(os.environ, QMAILHOME=str(self.root)), timeout=30)
        assert p.returncode == 0 and b"%d keys" % len(keys) in p.stdout, p

    def queue(self, message, recipients, sender=SENDER):
        """Run qmail-queue: (exit code, stderr)."""
        tmp = self.root.parent
        (tmp / "m").write_bytes(message)
        (tmp / "e").write_bytes(qq.encode(sender, [r.encode() for r in recipients]))
        with open(tmp / "m", "rb") as m, open(tmp / "e", "rb") as e:
            p = subprocess.run([QMAIL_QUEUE], stdin=m, stdout=e, stderr=subprocess.PIPE, timeout=60,
                               env=dict(os.environ, QMAILHOME=str(self.root)))
        return p.returncode, p.stderr.decode()

    def queued(self):
        """{recipient: message bytes without qmail-queue's Received line} of every queue entry."""
        q = self.root / "queue"
        out = {}
        for name in os.listdir(q / "todo"):
            records = (q / "todo" / name).read_bytes().split(b"\0")
            head, body = Path(layout.mess_path(str(self.root), int(name))).read_bytes().split(b"\n", 1)
            assert head.startswith(b"Received: (qmail ")
            for r in records:
                if r.startswith(b"T"):
                    out[r[1:].decode()] = body
        return out

    def files(self):
        q = self.root / "queue"
        return sorted(str(p.relative_to(q)) for p in q.rglob("*")
                      if p.is_file() and p.parts[len(q.parts)] != "lock")


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "qmail")


def header(message, name):
    """The unfolded value of a header of message (bytes), or None."""
    lines = message.split(b"\n\n", 1)[0].split(b"\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + b":"):
            value = line.split(b":", 1)[1]
            for more in lines[i + 1:]:
                if not more[:1].isspace():
                    break
                value += b" " + more.strip()
            return b" ".join(value.split())
    return None


# -- clamd

def test_clean_message_passes(home, clamd):
    home.control("clamglobal", "1")
    home.control("clamdsocket", clamd.sock)
    assert home.queue(CLEAN, ["bob@example.net", "carol@example.com"]) == (0, "")
    assert home.queued() == {"bob@example.net": CLEAN, "carol@example.com": CLEAN}


def test_virus_refused_for_everybody_is_31(home, clamd):
    home.control("clamglobal", "1")
    home.control("clamdsocket", clamd.sock)
    rc, err = home.queue(INFECTED, ["bob@example.net", "carol@example.com"])
    assert rc == X.QQ_PERM_REFUSED
    assert err == "qmail-queue: message refused: virus %s found\n" % VIRUS
    assert home.files() == []
    assert X.qq_reply(rc) == (554, "mail server permanently rejected message (#5.3.0)")


def test_virus_over_tcp(home, clamd):
    home.clients("clamavclients", "bob@example.net")
    home.control("clamdsocket", "127.0.0.1:%d" % clamd.port)
    rc, err = home.queue(INFECTED, ["Bob@Example.NET"])
    assert rc == X.QQ_PERM_REFUSED and VIRUS in err


def test_virus_mixed_recipients_split(home, clamd, tmp_path):
    """Only the recipients in clamavclients.cdb are refused; the others get the message."""
    home.clients("clamavclients", "@Filtered.example", "bob@other.example")
    home.control("clamdsocket", clamd.sock)
    home.control("badurls", "1")
    home.control("urlscnt", "2")
    report = tmp_path / "report"
    home.control("badurlscommand", "{ echo \"$VIRUS $SENDER\"; cat; } > %s" % report)
    rc, err = home.queue(INFECTED, ["a@filtered.example", "bob@other.example", "carol@other.example",
                                    "Dave@FILTERED.example"])
    assert rc == 0, err
    assert home.queued() == {"carol@other.example": INFECTED}
    assert err.splitlines() == ["qmail-queue: refused for %s: virus %s found" % (r, VIRUS) for r in (
        "a@filtered.example", "bob@other.example", "Dave@FILTERED.example")]
    assert report.read_text() == "%s alice@example.org\nhttp://one.example/a\nhttps://two.example/b?x=1\n" % VIRUS


def test_clean_message_for_filtered_and_unfiltered(home, clamd):
    home.clients("clamavclients", "@filtered.example")
    home.control("clamdsocket", clamd.sock)
    assert home.queue(CLEAN, ["a@filtered.example", "b@other.example"]) == (0, "")
    assert home.queued() == {"a@filtered.example": CLEAN, "b@other.example": CLEAN}
    assert len(os.listdir(home.root / "queue" / "todo")) == 1      # no copy: one queue entry


# -- whose key: the address as qmail-send will deliver it (qmailpy.addr.keys), through the real qmail-smtpd

QMAIL_SMTPD = str(ROOT / "bin" / "qmail-smtpd")
TCP_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost", "PROTO": "TCP"}
PERM = "554 mail server permanently rejected message (#5.3.0)"


def keyed_home(home):
    """mx.example.net's locals, virtual example.com with its alias domain (qmail-users, SQLite), percenthack."""
    for name, text in (("me", "mx.example.net"), ("locals", "mx.example.net\nlocalhost"),
                       ("rcpthosts", "mx.example.net\nlocalhost\nexample.com\nalias.example\nrelay.example.net"),
                       ("virtualdomains", "example.com:example.com\nalias.example:example.com"),
                       ("percenthack", "relay.example.net")):
        home.control(name, text)
    env = dict(os.environ, QMAILHOME=str(home.root))
    for args in (("adddomain", "example.com"), ("addaliasdomain", "example.com", "alias.example"),
                 ("adduser", "y@example.com", "-p", "pw"), ("adduser", "carol@example.com", "-p", "pw"),
                 ("adduser", "dave@example.com", "-p", "pw")):
        p = subprocess.run([str(ROOT / "bin" / "qmail-users"), *args], env=env, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr


def smtp(home, rcpt, message):
    """One transaction through bin/qmail-smtpd (and bin/qmail-queue) on pipes: (DATA's reply, log)."""
    data = (b"HELO client.example\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:" + rcpt + b"\r\nDATA\r\n"
            + message.replace(b"\n", b"\r\n") + b".\r\nQUIT\r\n")
    p = subprocess.run([QMAIL_SMTPD], input=data, capture_output=True, timeout=60,
                       env=dict(os.environ, QMAILHOME=str(home.root), QMAILQUEUE=QMAIL_QUEUE, **TCP_ENV))
    lines = p.stdout.decode().split("\r\n")
    assert lines[2:4] == ["250 ok", "250 ok"], (rcpt, lines)
    return lines[5], p.stderr.decode()


KEYED = [b"<bob>", b"<\"bob\">", b"bob", b"<@mx.example.net:bob>", b"<Bob@LocalHost>", b"<bob-list@localhost>",
         b"<carol@alias.example>", b"<carol%example.com@relay.example.net>", b"<carol%alias.example@relay.example.net>",
         b"<y-foo@example.com>", b"<y-foo-bar@alias.example>"]


@pytest.mark.parametrize("rcpt", KEYED, ids=[r.decode() for r in KEYED])
def test_virus_check_keys_on_the_delivered_mailbox(home, clamd, rcpt):
    """clamavclients lists bob@mx.example.net, carol@example.com and y@example.com: each way of
    writing them (no @, quoted, source route, another locals name, the alias domain, percenthack,
    an extension) is virus-checked exactly as the listed address, end to end through qmail-smtpd."""
    keyed_home(home)
    home.clients("clamavclients", "bob@mx.example.net", "carol@example.com", "y@example.com")
    home.control("clamdsocket", clamd.sock)
    reply, log = smtp(home, rcpt, INFECTED)
    assert reply == PERM, (rcpt, reply, log)
    assert "qmail-queue: message refused: virus %s found" % VIRUS in log
    assert home.files() == []


def test_unlisted_mailboxes_are_not_virus_checked(home, clamd):
    keyed_home(home)
    home.clients("clamavclients", "bob@mx.example.net", "carol@example.com", "y@example.com")
    home.control("clamdsocket", clamd.sock)
    for rcpt in (b"<dave@alias.example>", b"<bobby@localhost>", b"<carol@relay.example.net>", b"<x-y@example.com>"):
        reply, log = smtp(home, rcpt, INFECTED)
        assert reply.startswith("250 ok "), (rcpt, reply, log)
    assert len(os.listdir(home.root / "queue" / "todo")) == 4


def test_spamd_user_is_the_delivered_mailbox(home, spamd):
    """y-foo-bar@alias.example is y@example.com's mail: spamd applies y's preferences (reject 20)."""
    keyed_home(home)
    home.clients("spamdclients", "y@example.com", "carol@example.com")
    home.control("spamdsocket", spamd.sock)
    reply, log = smtp(home, b"<y-foo-bar@alias.example>", SPAM)
    assert reply == PERM and "reject score 20.0" in log, (reply, log)
    reply, log = smtp(home, b"<carol-x@alias.example>", SPAM)        # carol: no reject score of her own
    assert reply.startswith("250 ok "), (reply, log)
    [got] = home.queued().values()
    assert b"required=4.0" in header(got, b"X-Spam-Status")              # carol's required_score


# -- what clamd cannot scan in full is refused, never queued unscanned

LIMITS = [("mime 19 deep", lambda: payloads.nested_mime(19), "Heuristics.Limits.Exceeded.MaxRecursion"),
          ("zip 16 deep", lambda: payloads.nested_zip(16), "Heuristics.Limits.Exceeded.MaxRecursion"),
          ("10,001 files", lambda: payloads.many_files_zip(10001), "Heuristics.Limits.Exceeded.MaxFiles"),
          ("5 x 90 MiB of zeros", lambda: payloads.zeros_zip(5, 90 << 20), "Heuristics.Limits.Exceeded.MaxScanSize"),
          ("encrypted zip", payloads.encrypted_zip, "Heuristics.Encrypted.Zip")]


def test_clamd_runs_the_installed_config(clamd):
    """The suite's clamd runs what `make install` writes: alerts on, limits from databytes."""
    lines = clamd.conf.splitlines()
    for want in ("AlertExceedsMax yes", "AlertEncrypted yes", "StreamMaxLength 104857600",
                 "MaxFileSize 104857600", "MaxScanSize 419430400"):
        assert want in lines, want


@pytest.mark.parametrize("what, make, finding", LIMITS, ids=[x[0] for x in LIMITS])
def test_beyond_clamds_limits_is_refused(home, clamd, what, make, finding):
    """EICAR past a limit (19 MIME levels, a zip 16 deep, 10,001 files, 450 MiB unpacked) or in a
    password zip: refused as clamd's Heuristics finding, also with filterfailopen; within the
    limits the same EICAR is found."""
    home.clients("clamavclients", "bob@example.net")
    home.control("clamdsocket", clamd.sock)
    home.control("filterfailopen", "1")
    home.control("badurls", "1")
    home.control("badurlscommand", "cat > %s/reported" % home.root)
    rc, err = home.queue(make(), ["bob@example.net", "carol@example.com"])
    assert rc == 0, err
    assert err == "qmail-queue: refused for bob@example.net: virus %s found\n" % finding
    assert list(home.queued()) == ["carol@example.com"]
    assert not (home.root / "reported").exists()          # not known malware: no URLs reported


def test_within_clamds_limits_eicar_is_found(home, clamd):
    home.control("clamglobal", "1")
    home.control("clamdsocket", clamd.sock)
    for message in (payloads.nested_mime(17), payloads.nested_zip(15), payloads.many_files_zip(9999)):
        rc, err = home.queue(message, ["bob@example.net"])
        assert (rc, err) == (X.QQ_PERM_REFUSED, "qmail-queue: message refused: virus %s found\n" % VIRUS)


def test_message_above_streammaxlength_is_refused(home, clamd):
    """databytes 0 (unlimited) keeps clamd's StreamMaxLength of 100 MiB: a longer message is refused
    for the virus-checked recipient (clamd stops reading it), with or without filterfailopen."""
    home.clients("clamavclients", "bob@example.net")
    home.control("clamdsocket", clamd.sock)
    home.control("filterfailopen", "1")
    big = payloads.big_message(101 << 20).replace(EICAR, b"no virus here")
    rc, err = home.queue(big, ["bob@example.net"])
    assert (rc, err) == (X.QQ_PERM_REFUSED,
                         "qmail-queue: message refused: virus Heuristics.Limits.Exceeded.StreamMaxLength found\n")
    assert home.files() == []


@pytest.fixture(scope="module")
def clamd_200m(tmp_path_factory):
    """clamd installed for databytes 200 MiB and clamdalertencrypted 0."""
    if not shutil.which("clamd"):
        services.missing("clamd", "clamd is not installed (Debian clamav-daemon; make deps)")
    c = Clamd(str(tmp_path_factory.mktemp("clamd200m")), {"databytes": str(200 << 20), "clamdalertencrypted": "0"})
    yield c
    c.stop()


def test_databytes_raises_clamds_size_limits_together(home, clamd_200m):
    """With databytes 200 MiB, a 112 MB message with EICAR at its start is read and scanned in full."""
    lines = clamd_200m.conf.splitlines()
    stream = (200 << 20) + 65536
    for want in ("StreamMaxLength %d" % stream, "MaxFileSize %d" % stream, "MaxScanSize %d" % (4 * stream),
                 "AlertExceedsMax yes", "AlertEncrypted no"):
        assert want in lines, want
    home.control("clamglobal", "1")
    home.control("clamdsocket", clamd_200m.sock)
    rc, err = home.queue(payloads.big_message(112 * 10 ** 6), ["bob@example.net"])
    assert (rc, err) == (X.QQ_PERM_REFUSED, "qmail-queue: message refused: virus %s found\n" % VIRUS)
    assert home.files() == []


def test_clamdalertencrypted_0_lets_encrypted_archives_pass(home, clamd_200m):
    home.control("clamglobal", "1")
    home.control("clamdsocket", clamd_200m.sock)
    message = payloads.encrypted_zip()
    assert home.queue(message, ["bob@example.net"]) == (0, "")
    assert home.queued() == {"bob@example.net": message}


# -- spamd

def test_spam_marked_per_user_or_refused(home, spamd):
    """GTUBE: each filtered user gets his own copy with his X-Spam headers; high refuses it."""
    home.clients("spamdclients", "low@example.net", "mark@example.net", "high@example.net", "@default.example")
    home.control("spamdsocket", spamd.sock)
    rc, err = home.queue(SPAM, ["low@example.net", "plain@example.org", "high@example.net", "mark@example.net",
                                "joe@default.example"])
    assert rc == 0, err
    assert re.fullmatch(r"qmail-queue: refused for high@example.net: spam, score 10\d\d\.\d >= reject score 20\.0\n",
                        err), err
    got = home.queued()
    assert sorted(got) == ["joe@default.example", "low@example.net", "mark@example.net", "plain@example.org"]
    assert got["plain@example.org"] == SPAM                        # not filtered: untouched
    for rcpt, required in (("low@example.net", b"3.0"), ("mark@example.net", b"10.0"),
                           ("joe@default.example", b"5.0")):
        status = header(got[rcpt], b"X-Spam-Status")
        assert status.startswith(b"Yes, score=") and b"required=%s " % required in status, (rcpt, status)
        assert b"GTUBE" in status and header(got[rcpt], b"X-Spam-Flag") == b"YES"
        assert got[rcpt].endswith(b"\n\nBuy now!\n" + GTUBE + b"\n")
        assert header(got[rcpt], b"X-Spam-Reject-Score") is None
    assert len(os.listdir(home.root / "queue" / "todo")) == 4      # 3 copies and the untouched message
    assert len(home.files()) == 12                                 # and the staged file was reused


def test_spam_refused_for_everybody_is_31(home, spamd):
    home.control("spamglobal", "1")
    home.control("spamdsocket", spamd.sock)
    rc, err = home.queue(SPAM, ["high@example.net"])
    assert rc == X.QQ_PERM_REFUSED
    assert err.startswith("qmail-queue: message refused: spam, score 100") and "reject score 20.0" in err
    assert home.files() == []


@pytest.mark.parametrize("nl", [b"\n", b"\r\n"])
def test_senders_reject_score_lines_change_nothing(home, spamd, nl):
    """A folded ` X-Spam-Reject-Score: 99999` under Subject and one in the body (LF or CRLF mess
    files) do not lift high's reject score of 20: GTUBE is refused for him as without them."""
    trick = (HEADERS.replace(b"Subject: lunch\n", b"Subject: lunch\n X-Spam-Reject-Score: 99999\n")
             + b"\nBuy now!\n" + GTUBE + b"\nX-Spam-Reject-Score: 99999\n").replace(b"\n", nl)
    home.clients("spamdclients", "high@example.net", "low@example.net")
    home.control("spamdsocket", spamd.sock)
    rc, err = home.queue(trick, ["high@example.net", "low@example.net"])
    assert rc == 0, err
    assert re.fullmatch(r"qmail-queue: refused for high@example.net: spam, score 10\d\d\.\d >= reject score 20\.0\n",
                        err), err
    got = home.queued()
    assert list(got) == ["low@example.net"]
    assert nl + b" X-Spam-Reject-Score: 99999" + nl in got["low@example.net"]     # the sender's line stays his
    rc, err = home.queue(trick, ["high@example.net"])
    assert rc == X.QQ_PERM_REFUSED and "reject score 20.0" in err


def test_reject_score_with_report_safe(home, spamd):
    """report_safe 1 puts spamd's X-Spam-* fields under its Received line and the copied Subject
    (which carries the sender's folded line): the reject score is still spamd's, 20."""
    trick = (HEADERS.replace(b"Subject: lunch\n", b"Subject: lunch\n X-Spam-Reject-Score: 99999\n")
             + b"\nBuy now!\n" + GTUBE + b"\nX-Spam-Reject-Score: 99999\n")
    home.control("spamglobal", "1")
    home.control("spamdsocket", spamd.sock)
    rc, err = home.queue(trick, ["safe@example.net"])
    assert rc == X.QQ_PERM_REFUSED and "reject score 20.0" in err, err


def test_ham_gets_each_users_headers(home, spamd):
    home.control("spamglobal", "1")
    home.control("spamdsocket", spamd.sock)
    assert home.queue(CLEAN, ["low@example.net", "high@example.net"]) == (0, "")
    got = home.queued()
    assert b"required=3.0" in header(got["low@example.net"], b"X-Spam-Status")
    assert header(got["high@example.net"], b"X-Spam-Status").startswith(b"No, score=")
    assert b"required=10.0" in header(got["high@example.net"], b"X-Spam-Status")
    assert header(got["high@example.net"], b"X-Spam-Reject-Score") == b"20"
    assert got["low@example.net"].endswith(CLEAN.split(b"\n\n", 1)[1])


def test_virus_and_spam_together(home, clamd, spamd):
    home.clients("clamavclients", "a@example.net")
    home.clients("spamdclients", "low@example.net", "a@example.net")
    home.control("clamdsocket", clamd.sock)
    home.control("spamdsocket", spamd.sock)
    both = INFECTED.replace(b"also http", GTUBE + b"\nalso http")
    rc, err = home.queue(both, ["a@example.net", "low@example.net"])
    assert rc == 0 and "refused for a@example.net: virus" in err
    got = home.queued()
    assert list(got) == ["low@example.net"] and header(got["low@example.net"], b"X-Spam-Flag") == b"YES"


def test_spamdmaxsize_skips_big_messages(home, spamd):
    home.control("spamglobal", "1")
    home.control("spamdsocket", spamd.sock)
    home.control("spamdmaxsize", "100")
    rc, err = home.queue(SPAM, ["high@example.net"])
    assert rc == 0 and "above spamdmaxsize 100: not spam-checked" in err
    assert home.queued() == {"high@example.net": SPAM}


# -- trouble: temporary failures, nothing queued, or fail-open

class FakeServer:
    """A UNIX-socket server answering every connection with `answer` (None: never answers)."""

    def __init__(self, path, answer):
        self.path, self.answer = path, answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.held = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.answer is None:
                self.held.append(conn)
                continue
            conn.settimeout(5)
            try:
                conn.recv(65536)
                conn.sendall(self.answer)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.fixture
def fake(tmp_path):
    made = []

    def make(answer):
        s = FakeServer(str(tmp_path / ("fake%d.sock" % len(made))), answer)
        made.append(s)
        return s.path
    yield make
    for s in made:
        s.close()


@pytest.mark.parametrize("score, refused", [(b"20.0", True), (b"19.9", False), (b"20.1", True)])
def test_reject_score_is_at_or_above(home, fake, score, refused):
    """docs/filters.md: spam scoring at or above the user's reject score is refused; a hair
    below, it is queued with spamd's headers. The scores come from a fake spamd: the real one
    cannot be made to score exactly 20."""
    body = b"X-Spam-Flag: YES\nX-Spam-Reject-Score: 20\n" + CLEAN
    answer = b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; %s / 5.0\r\n\r\n" % (len(body), score)
    home.control("spamglobal", "1")
    home.control("spamdsocket", fake(answer + body))
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    if refused:
        assert (rc, err) == (X.QQ_PERM_REFUSED, "qmail-queue: message refused: spam, score %s >= reject score "
                                                "20.0\n" % score.decode())
        assert home.files() == []
    else:
        assert (rc, err) == (0, "")
        assert home.queued() == {"bob@example.net": body}


@pytest.mark.parametrize("which", ["clamd", "spamd"])
def test_service_down_is_56_and_nothing_queued(home, tmp_path, which):
    home.control(which[:4] + "global" if which == "clamd" else "spamglobal", "1")
    home.control(which + "socket", str(tmp_path / "no-such.sock"))
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert rc == X.QQ_NETWORK and err.startswith("qmail-queue: %s: cannot connect to " % which)
    assert home.files() == []
    assert X.qq_reply(rc) == (451, "qq trouble making network connection (#4.3.0)")
    home.control(which + "socket", "127.0.0.1:%d" % _free_port())           # nobody listening
    assert home.queue(CLEAN, ["bob@example.net"])[0] == X.QQ_NETWORK


@pytest.mark.parametrize("which", ["clamd", "spamd"])
def test_silent_service_times_out_72(home, fake, which):
    home.control("clamglobal" if which == "clamd" else "spamglobal", "1")
    home.control(which + "socket", fake(None))
    home.control("filtertimeout", "1")
    t0 = time.monotonic()
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert rc == X.QQ_CONN_TIMEOUT and "timeout" in err, err
    assert 0.9 < time.monotonic() - t0 < 10
    assert home.files() == []


@pytest.mark.parametrize("which, answer, code", [
    ("spamd", b"HTTP/1.0 400 Bad Request\r\n\r\n", X.QQ_COMM_FAILED),
    ("spamd", b"SPAMD/1.1 0 EX_OK\r\nContent-length: 99\r\nSpam: True ; 9.0 / 5.0\r\n\r\nshort", X.QQ_COMM_FAILED),
    ("spamd", b"SPAMD/1.0 76 Bad header line: (EOF)\r\n", X.QQ_TEMP_REFUSED),
    ("spamd", b"", X.QQ_COMM_FAILED),
    ("clamd", b"stream: something odd\0", X.QQ_COMM_FAILED),
    ("clamd", b"stream: lstat() failed: No such file or directory. ERROR\0", X.QQ_TEMP_REFUSED),
])
def test_garbage_is_temporary(home, fake, which, answer, code):
    home.control("clamglobal" if which == "clamd" else "spamglobal", "1")
    home.control(which + "socket", fake(answer))
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert rc == code, err
    assert err.startswith("qmail-queue: %s: " % which) and err.count("\n") == 1
    assert home.files() == []
    assert X.qq_reply(rc)[0] == 451


def test_filterfailopen_delivers_unfiltered(home, fake, tmp_path):
    home.control("clamglobal", "1")
    home.control("spamglobal", "1")
    home.control("clamdsocket", str(tmp_path / "no-such.sock"))
    home.control("spamdsocket", fake(b"garbage\r\n\r\n"))
    home.control("filterfailopen", "1")
    rc, err = home.queue(SPAM, ["bob@example.net", "carol@example.com"])
    assert rc == 0
    lines = err.splitlines()
    assert lines[0].startswith("qmail-queue: clamd: cannot connect") and "filterfailopen" in lines[0]
    assert len(lines) == 2 and "spamd: " in lines[1] and "filterfailopen" in lines[1]   # spamd asked once
    assert home.queued() == {"bob@example.net": SPAM, "carol@example.com": SPAM}


@pytest.mark.parametrize("controls,unreadable", [
    ({"dkimverify": None}, "dkimverify"),                         # read before any filter
    ({"spamglobal": "1", "virtualdomains": None}, "virtualdomains"),   # spamd's User: is the recipient's key
], ids=["dkimverify", "recipient-keys"])
def test_an_unreadable_filter_control_is_55_and_nothing_queued(home, controls, unreadable):
    for name, text in controls.items():
        if text is None:
            (home.root / "control" / name).mkdir()
        else:
            home.control(name, text)
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert (rc, err) == (X.QQ_CONFIG, "qmail-queue: unable to read controls: control/%s: unable to read: "
                                      "Is a directory\n" % unreadable)
    assert home.files() == []


def test_bad_controls_are_55(home, tmp_path):
    home.control("clamglobal", "1")
    home.control("clamdsocket", "no-port-here")
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert rc == X.QQ_CONFIG and "clamdsocket" in err
    home.control("clamglobal", "0")
    (home.root / "control" / "spamdclients.cdb").write_bytes(b"not a cdb")
    rc, err = home.queue(CLEAN, ["bob@example.net"])
    assert rc == X.QQ_CONFIG and "spamdclients.cdb" in err
    assert home.files() == []
