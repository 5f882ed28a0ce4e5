"""qmail-smtpd as a real program: queue hand-off failures, time-outs, lost clients,
CRAM-MD5, swaks end to end, and the import budget of a plain session."""
import base64
import errno
import hashlib
import hmac
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, Home, program
from qmailpy.ctl import registry as R
from qmailpy.proto import replies as R_
from qmailpy.ctl.reader import Controls
from qmailpy.queue.layout import create_queue
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation
from test_dialogues import TCP_ENV, FakeServices, free_port, queued_messages, read_lines

TRANSACTION = (b"HELO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
               b"DATA\r\nSubject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n")


def smtpd(home, data, **env):
    """Run bin/qmail-smtpd on a pipe the way tcpserver would; (stdout lines, stderr)."""
    environ = home.env(**dict(TCP_ENV, **env))
    r = subprocess.run([program("qmail-smtpd")], input=data, capture_output=True, env=environ, timeout=30)
    return r.stdout.decode().split("\r\n")[:-1], r.stderr.decode(), r.returncode


@pytest.fixture
def qhome(home):
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    create_queue(home.root)
    return home


def fake_queue(tmp_path, code):
    path = tmp_path / "fakeqq"
    path.write_text("#!/bin/sh\ncat >/dev/null\nexit %d\n" % code)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("code,reply", [
    (53, "451 qq write error or disk full (#4.3.0)"),
    (31, "554 mail server permanently rejected message (#5.3.0)"),
    (71, "451 mail server temporarily rejected message (#4.3.0)"),
    (91, "451 qq internal bug (#4.3.0)"),
    (11, "554 envelope address too long for qq (#5.1.3)"),
    (25, "554 qq permanent problem (#5.3.0)"),
    (99, "451 qq temporary problem (#4.3.0)"),
])
def test_queue_exit_codes_map_to_qmail_replies(qhome, tmp_path, code, reply):
    lines, _, _ = smtpd(qhome, TRANSACTION, QMAILQUEUE=fake_queue(tmp_path, code))
    assert lines[-2:] == [reply, "221 test.example"]


def test_queue_killed_by_signal(qhome, tmp_path):
    path = tmp_path / "killer"
    path.write_text("#!/bin/sh\ncat >/dev/null\nkill -9 $$\n")
    path.chmod(0o755)
    lines, _, _ = smtpd(qhome, TRANSACTION, QMAILQUEUE=str(path))
    assert lines[-2] == "451 qq crashed (#4.3.0)"


def test_queue_program_that_does_not_read_the_envelope(qhome, tmp_path):
    """qmail_close(): an envelope that cannot be written (the program closed fd 1) and exit 0
    is not a queued message: case 0 with flagerr falls through to 54, "qq read error"."""
    path = tmp_path / "deafqq"
    path.write_text("#!/bin/sh\nexec 1>&-\ncat >/dev/null\nexit 0\n")
    path.chmod(0o755)
    big = TRANSACTION.replace(b"body\r\n", (b"x" * 998 + b"\r\n") * 300)   # more than a pipe holds:
    lines, _, _ = smtpd(qhome, big, QMAILQUEUE=str(path))       # the envelope comes after the close
    assert lines[-2:] == ["451 qq read error (#4.3.0)", "221 test.example"]


class _Faulty:
    """The os module of one module, with one call that fails."""

    def __init__(self, name, code):
        self.name, self.code = name, code

    def __getattr__(self, name):
        if name == self.name:
            def fail(*args):
                raise OSError(self.code, os.strerror(self.code))
            return fail
        return getattr(os, name)


@pytest.mark.parametrize("module,call,code", [("qmailpy.smtpd.queueclient", "pipe", errno.EMFILE),
                                               ("qmailpy.forkexec", "fork", errno.EAGAIN)])
def test_queue_that_cannot_be_started_is_qqt_failure(qhome, tmp_path, capfd, monkeypatch, module, call, code):
    """qmail_open() == -1 (no pipe, no fork: EMFILE, EAGAIN): qmail-smtpd's err_qqt(), 451
    before the 354, and the session goes on; no fd of the attempt is left open."""
    import importlib
    monkeypatch.setattr(importlib.import_module(module), "os", _Faulty(call, code))
    before = sorted(os.listdir("/proc/self/fd"))
    replies, rc, _ = serve_in_process(qhome, TRANSACTION.replace(b"QUIT", b"NOOP\r\nQUIT"), capfd,
                                      QMAILQUEUE=fake_queue(tmp_path, 0))
    assert (replies.decode().split("\r\n")[2:], rc) == (
        ["250 ok", "250 ok", "451 qqt failure (#4.3.0)"] + ["502 unimplemented (#5.5.1)"] * 4    # the message's lines
        + ["250 ok", "221 test.example", ""], 0)
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_queue_program_missing_exact(qhome):
    """qmail_open() forks: the child's failed exec is its exit 120 after 354, which
    qmail_close() reports once the message is in; not qmail-smtpd's qqt failure, which is
    for a pipe or fork that fails."""
    lines, _, _ = smtpd(qhome, TRANSACTION, QMAILQUEUE="/nonexistent/qmail-queue")
    assert lines == ["220 test.example ESMTP", "250 test.example", "250 ok", "250 ok", "354 go ahead",
                     "451 unable to exec qq (#4.3.0)", "221 test.example"]


def test_queue_program_runs_in_the_qmail_home(qhome, tmp_path):
    """qmail_open()'s child changes to the qmail home before the exec, so a $QMAILQUEUE
    wrapper may name its files relative to it; one that cannot get there is exit 61."""
    path = tmp_path / "pwdqq"
    path.write_text("#!/bin/sh\ncat >/dev/null\npwd > %s/cwd\nexit 31\n" % tmp_path)
    path.chmod(0o755)
    lines, _, _ = smtpd(qhome, TRANSACTION, QMAILQUEUE=str(path))
    assert lines[-2] == "554 mail server permanently rejected message (#5.3.0)"
    assert (tmp_path / "cwd").read_text() == os.path.realpath(qhome.root) + "\n"
    lines, _, _ = smtpd(qhome, TRANSACTION, QMAILQUEUE=str(path), QMAILHOME=str(tmp_path / "gone"))
    assert lines[-2] == "451 qq trouble in home directory (#4.3.0)"


def test_queue_program_environment_after_auth(qhome, tmp_path):
    """qmail's AUTH patches set TCPREMOTEINFO to the user and RELAYCLIENT to "" in qmail-smtpd's
    environment when AUTH succeeds (smtp_auth(): env_put2), so the queue program (a scanner
    wrapper) sees the client as authenticated; before AUTH it sees tcpserver's."""
    path = tmp_path / "envqq"
    # the envelope (fd 1) is read too, as qmail-queue does: a program that exits without it may
    # be gone before qmail-smtpd writes it, and that is qmail_close()'s "qq read error" (above)
    path.write_text("#!/bin/sh\ncat >/dev/null\ncat <&1 >/dev/null\n"
                    "echo \"${TCPREMOTEINFO-unset}|${RELAYCLIENT-unset}\" >>%s/env\nexit 0\n" % tmp_path)
    path.chmod(0o755)
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    data = (b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\n"
            b"AUTH PLAIN AGdvb2RAZXhhbXBsZS5vcmcAc2VjcmV0\r\n"
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
    environ = qhome.env(**dict(TCP_ENV, QMAILQUEUE=str(path), TCPREMOTEINFO="ident"))
    r = subprocess.run([program("qmail-smtpd"), sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")],
                       input=data, capture_output=True, env=environ, timeout=30)
    lines = r.stdout.decode().split("\r\n")
    assert [x[:6] for x in lines[-8:-2]] == ["250 ok", "235 ok", "250 ok", "250 ok", "354 go", "250 ok"], (
        lines[-8:-2], r.stderr.decode())
    assert (tmp_path / "env").read_text() == "ident|unset\ngood@example.org|\n"


def test_real_queue_and_log_line(qhome):
    lines, err, rc = smtpd(qhome, TRANSACTION, QMAILQUEUE=program("qmail-queue"))
    assert lines[-2].startswith("250 ok ") and rc == 0
    [(env, body)] = queued_messages(qhome)
    assert env == ["Fa@example.com", "Tb@example.org"]
    assert body.endswith(b"\nSubject: t\n\nbody\n")
    assert " accept sender=<a@example.com> rcpts=1 bytes=" in err
    assert "secret" not in err


def test_client_gone_mid_data_queues_nothing(qhome):
    data = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: half\r\n\r\nhalf a mess"
    lines, _, rc = smtpd(qhome, data, QMAILQUEUE=program("qmail-queue"))
    assert lines[-1] == "354 go ahead" and rc == 1
    assert queued_messages(qhome) == []
    assert os.listdir(os.path.join(qhome.root, "queue", "intd")) == []


def test_timeout_mid_data_queues_nothing(qhome):
    qhome.control("timeoutsmtpd", "1\n")
    environ = qhome.env(**dict(TCP_ENV, QMAILQUEUE=program("qmail-queue")))
    proc = subprocess.Popen([program("qmail-smtpd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=environ)
    proc.stdin.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: slow\r\n")
    proc.stdin.flush()
    start = time.time()
    out = proc.stdout.read()          # stdin stays open: the client is silent, not gone
    err = proc.stderr.read()
    proc.wait(timeout=20)
    proc.stdin.close()
    assert out.decode().split("\r\n")[-2] == "451 timeout (#4.4.2)"
    assert 0.9 < time.time() - start < 10 and proc.returncode == 1
    assert b" timeout" in err
    assert queued_messages(qhome) == []


def test_users_database_controls_are_not_read_at_connect(qhome):
    """usersdb (the MySQL password: qmailu's, 0400, in production) and vpopmaildir are read when
    the users database is opened, by qmail-usersd in production: qmail-smtpd (qmaild) could not
    read them, and answered every connection 421 when control/usersdb existed. Without the
    service an unreadable one is a temporary failure of the users database, as a database down."""
    for name in ("usersdb", "vpopmaildir"):
        os.makedirs(os.path.join(qhome.root, "control", name))
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    plain = base64.b64encode(b"\0joe@example.org\0secret").decode()
    lines, err, rc = smtpd(qhome, ("EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
                                   "RSET\r\nAUTH PLAIN %s\r\nQUIT\r\n" % plain).encode(), AUTHFAILDELAY="0")
    assert (lines[0], lines[-5:], rc) == ("220 test.example ESMTP", [
        "250 ok", "250 ok", "250 flushed", "454 temporary authentication failure (#4.3.0)", "221 test.example"], 0), err


SMTPD_NUMBERS = [c for c in R.CONTROLS if c.kind in (R.NUMBER, R.BOOL) and "qmail-smtpd" in c.readers]


def serve_in_process(home, data, capfd, **env):
    """serve() itself (the whole program) on pipes: (reply bytes, exit code, log lines)."""
    from qmailpy.smtpd.main import serve
    rd, wr = os.pipe()
    os.write(wr, data)
    os.close(wr)
    out_r, out_w = os.pipe()
    try:
        rc = serve(rd, out_w, dict(TCP_ENV, QMAILHOME=home.root, **env))
    finally:
        os.close(rd)
        os.close(out_w)
    with os.fdopen(out_r, "rb") as f:
        replies = f.read()
    log = [line.split(" ", 2)[2] for line in capfd.readouterr().err.splitlines()]
    return replies, rc, log


@pytest.mark.parametrize("control,source", [(c, s) for c in SMTPD_NUMBERS for s in ("file", "options", "env")
                                            if s != "env" or c.env], ids=lambda x: getattr(x, "name", x))
def test_malformed_number_is_421_at_connect_naming_the_file(qhome, capfd, control, source):
    """Never a guess (databytes 'abc' used to mean 'no size limit'): 421 and a log line naming the source."""
    env = {}
    if source == "file":
        qhome.control(control.name, "abc\n")
        where = "control/%s:1" % control.name
        problem = "not a number: 'abc'"
    elif source == "options":
        qhome.control("options", "# gathered\n%s: abc\n" % control.name)
        where = "control/options:2"
        problem = "%s: not a number: 'abc'" % control.name
    else:
        env = {control.env: "abc"}
        where = "$" + control.env
        problem = "not a number: 'abc'"
    replies, rc, log = serve_in_process(qhome, b"EHLO x\r\nQUIT\r\n", capfd, **env)
    assert (replies, rc) == (b"421 unable to read controls (#4.3.0)\r\n", 1)
    assert log == ['error reason="unable to read controls" file=%s problem="%s"' % (where, problem)]


def test_unreadable_controls(home):
    os.makedirs(os.path.join(home.root, "control", "databytes"))
    lines, err, rc = smtpd(home, b"QUIT\r\n")
    assert lines == ["421 unable to read controls (#4.3.0)"] and rc == 1
    assert err.endswith(' error reason="unable to read controls" file=control/databytes '
                        'problem="unable to read: Is a directory"\n')


@pytest.mark.parametrize("data,last", [
    (b"QUIT\r\n", "221 test.example"),
    (b"HELO c.example\n", R_.STRAY_LF),
    (b"HELO a\rb\r\n", R_.STRAY_LF),
    (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nbare\nLF\r\n.\r\n", R_.STRAY_LF),
], ids=["quit", "lf-command", "cr-command", "lf-data"])
def test_exit_code_is_qmails(qhome, capfd, data, last):
    """qmail-smtpd exits 0 only after QUIT (smtp_quit); straynewline() is `_exit(1)`
    (reference 1.1: "then _exit(1)"), which tcpserver logs as "status 256"."""
    replies, rc, _ = serve_in_process(qhome, data, capfd)
    assert replies.decode().split("\r\n")[-2] == last
    assert rc == (0 if last.startswith("221") else 1)


def test_control_unreadable_mid_session_exits_1(qhome, capfd):
    """die_control(): 421 and `_exit(1)`, also when a list is read at its first use."""
    os.makedirs(os.path.join(qhome.root, "control", "badmailfrom"))
    data = b"HELO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nNOOP\r\n"
    replies, rc, _ = serve_in_process(qhome, data, capfd)
    assert (replies.decode().split("\r\n")[-2], rc) == ("421 unable to read controls (#4.3.0)", 1)


# Every list or cdb qmail-smtpd reads on first use, and a transaction that makes it read it.
LATE = ["badmailfrom", "badmailpatterns", "badmailfrom-unknown", "badhelo", "badrcptto",
        "badrcptpatterns", "blackholedsender", "nomfdnscheck", "rblhosts", "relaymailfrom",
        "morercpthosts.cdb", "srs/revers_srs_secrets", "locals", "virtualdomains", "percenthack"]
KEYS = ("locals", "virtualdomains", "percenthack")      # read for badrcptto's recipient keys


def test_late_controls_cover_every_list_qmail_smtpd_reads():
    at_connect = {"rcpthosts", "relayclients", "relaydomains"}
    lists = {c.name for c in R.CONTROLS if "qmail-smtpd" in c.readers
             and c.kind in (R.LIST, R.PATTERNS, R.CDB, R.SECRETS)}
    assert lists - at_connect == set(LATE)


@pytest.mark.parametrize("name", LATE)
def test_unreadable_list_read_mid_session_is_421_naming_the_file(qhome, capfd, name):
    """It used to drop the connection with no reply and log 'Permission denied' without the file."""
    if name == "nomfdnscheck":
        qhome.control("mfdnscheck", "1\n")
    if name in KEYS:
        qhome.control("badrcptto", "nobody@example.net\n")
    qhome.control("rcpthosts", "example.org\ntest.example\n")     # srs_domain: me
    os.makedirs(os.path.join(qhome.root, "control", name))
    rcpt = "SRS0=abcd=ZZ=example.com=a@test.example" if name.startswith("srs/") else "b@elsewhere.example"
    data = ("HELO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<%s>\r\nNOOP\r\n" % rcpt).encode()
    replies, rc, log = serve_in_process(qhome, data, capfd, TCPREMOTEHOST="", DNSTIMEOUT="0.05")
    assert replies.decode().split("\r\n")[-2] == "421 unable to read controls (#4.3.0)", (replies, log)
    assert log[1:] == ['error reason="unable to read controls" file=control/%s '
                       'problem="unable to read: Is a directory"' % name], log


# -- CRAM-MD5 needs the server's challenge, so it is driven here rather than by a dialogue

def cram_response(challenge_line, user=b"good@example.org", secret=b"secret"):
    challenge = base64.b64decode(challenge_line[4:])
    digest = hmac.new(secret, challenge, hashlib.md5).hexdigest().encode()
    return base64.b64encode(user + b" " + digest) + b"\r\n", challenge


def test_cram_md5_in_process(qhome):
    env = dict(TCP_ENV)
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    session = Conversation(SmtpdConfig(Controls(qhome.root, env), env), FakeServices(checkpassword=True))
    session.start()
    session.feed(b"EHLO c\r\n")
    challenge_line = session.feed(b"AUTH CRAM-MD5\r\n").decode().strip()
    assert challenge_line.startswith("334 ")
    answer, challenge = cram_response(challenge_line)
    assert challenge.startswith(b"<4242.") and challenge.endswith(b"@localhost>")
    # FakeServices accepts only the plain secret, so check the wire format and the decoded user.
    reply = session.feed(answer).decode()
    assert reply in ("235 ok, go ahead (#2.0.0)\r\n", "535 authentication failed (#5.7.1)\r\n")


@pytest.mark.parametrize("answer", [b"good@example.org", b"good@example.org ", b" 0123abcd"],
                         ids=["no-space", "no-digest", "no-user"])
def test_cram_md5_answer_without_user_or_digest_is_malformed(qhome, answer):
    """The CRAM-MD5 answer is "user digest": without either part it is 501, and no password
    check is made (nothing counted, nothing logged as a failure)."""
    env = dict(TCP_ENV)
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    services = FakeServices(checkpassword=True)
    session = Conversation(SmtpdConfig(Controls(qhome.root, env), env), services)
    session.start()
    session.feed(b"EHLO c\r\n")
    assert session.feed(b"AUTH CRAM-MD5\r\n").startswith(b"334 ")
    assert session.feed(base64.b64encode(answer) + b"\r\n") == b"501 malformed auth input (#5.5.4)\r\n"
    assert services.attempts == 0 and not [e for e, _ in services.logged if e.startswith("auth")]


def test_cram_md5_through_tcpserver(qhome):
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    port = free_port()
    cmd = ["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(port), program("qmail-smtpd"),
           sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    server = subprocess.Popen(cmd, env=qhome.env(AUTHFAILDELAY="0"))
    try:
        sock = connect(port)
        read_lines(sock, 1)
        sock.sendall(b"EHLO c\r\nAUTH CRAM-MD5\r\n")
        lines, _ = read_lines(sock, 6)
        answer, challenge = cram_response(lines[-1])
        assert challenge.startswith(b"<") and challenge.endswith(b"@localhost>")
        sock.sendall(answer)
        assert read_lines(sock, 1)[0] == ["235 ok, go ahead (#2.0.0)"]
        sock.sendall(b"AUTH CRAM-MD5\r\n")
        assert read_lines(sock, 1)[0] == ["503 you're already authenticated (#5.5.0)"]
        sock.close()
        sock = connect(port)
        read_lines(sock, 1)
        sock.sendall(b"EHLO c\r\nAUTH CRAM-MD5\r\n")
        lines, _ = read_lines(sock, 6)
        sock.sendall(cram_response(lines[-1], secret=b"wrong")[0])
        assert read_lines(sock, 1)[0] == ["535 authentication failed (#5.7.1)"]
        sock.close()
    finally:
        server.terminate()
        server.wait()


def connect(port):
    deadline = time.time() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            assert time.time() < deadline
            time.sleep(0.05)


def test_swaks_end_to_end(qhome, tmp_path):
    """swaks -> tcpserver -> qmail-smtpd -> qmail-queue: the queued message is byte-exact."""
    port = free_port()
    cmd = ["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(port), program("qmail-smtpd")]
    server = subprocess.Popen(cmd, env=qhome.env(QMAILQUEUE=program("qmail-queue")))
    body = "Subject: swaks test\nX-Test: 1\n\n.leading dot\nline two"   # swaks adds the last CRLF
    msg = tmp_path / "msg.txt"
    msg.write_text(body)
    try:
        connect(port).close()
        r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "alice@example.com",
                            "--to", "bob@example.org", "--data", "@" + str(msg), "--helo", "swaks.example"],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    finally:
        server.terminate()
        server.wait()
    [(env, stored)] = queued_messages(qhome)
    assert env == ["Falice@example.com", "Tbob@example.org"]
    head, rest = stored.split(b"\n", 2)[:2], stored.split(b"\n", 2)[2]
    assert head[0] == b"Received: from unknown (HELO swaks.example) (127.0.0.1)"
    assert head[1].startswith(b"  by localhost with ESMTP; ")
    assert rest == body.encode() + b"\n"


PLAIN_SESSION_MODULES = 24          # 33 on main before issue 14


def test_plain_session_imports_nothing_heavy(qhome):
    code = ("import sys; sys.argv=['qmail-smtpd']; sys.path.insert(0, %r); import os;" % ROOT +
            "from qmailpy.smtpd.main import serve;"
            "r, w = os.pipe(); os.write(w, b'HELO x\\r\\nQUIT\\r\\n'); os.close(w);"
            "serve(r, os.open(os.devnull, os.O_WRONLY), dict(os.environ));"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('click', 'dns', 'spf', 'pymysql', 'cdblib', 'subprocess', 'socket', 're', 'typing', 'email'));"
            "ours = sorted(m for m in sys.modules if m.startswith('qmailpy'));"
            "print(','.join(bad)); print(','.join(ours))")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                       env=qhome.env(), cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    bad, ours = r.stdout.decode().split("\n")[:2]
    assert bad == ""
    # the budget: what a HELO/QUIT session loads of qmailpy (the decisions, DATA, the checks,
    # DNS and the users database load on first use); raise it only for something every session needs
    assert len(ours.split(",")) <= PLAIN_SESSION_MODULES, ours


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(TRANSACTION) - 1), max_size=8))
def test_any_chunking_gives_the_same_replies_and_message(cuts):
    home_env = dict(TCP_ENV)

    def run(chunks):
        ctl = Controls(os.path.join(ROOT, "tests", "no-such-home"), home_env)
        services = FakeServices(ctl)
        services.now = lambda: 1796534357.0          # the "250 ok <time> qp" reply: one clock for both runs
        session = Conversation(SmtpdConfig(ctl, home_env), services)
        out = session.start()
        for c in chunks:
            out += session.feed(c)
        return out, services.queued

    points = sorted(set(cuts))
    chunks = [TRANSACTION[a:b] for a, b in zip([0] + points, points + [len(TRANSACTION)])]
    assert run(chunks) == run([TRANSACTION])


def test_periplimit_counts_sessions_across_processes(qhome):
    qhome.control("periplimit", "2\n")
    port = free_port()
    cmd = ["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(port), program("qmail-smtpd")]
    server = subprocess.Popen(cmd, env=qhome.env())
    socks = []
    try:
        for _ in range(2):
            s = connect(port)
            assert read_lines(s, 1)[0] == ["220 test.example ESMTP"]
            socks.append(s)
        third = connect(port)
        assert read_lines(third, 1)[0] == ["421 too many connections from your IP address, try again later (#4.3.2)"]
        third.close()
        socks.pop().close()                  # a session ends without QUIT
        deadline = time.time() + 10
        while True:                          # its slot frees as soon as the process is gone
            s = connect(port)
            line = read_lines(s, 1)[0]
            if line == ["220 test.example ESMTP"] or time.time() > deadline:
                break
            s.close()
            time.sleep(0.1)
        assert line == ["220 test.example ESMTP"]
        socks.append(s)
        for s in socks:
            s.sendall(b"QUIT\r\n")
            assert read_lines(s, 1)[0] == ["221 test.example"]
            s.close()
    finally:
        server.terminate()
        server.wait()


def test_periplimit_stale_slot_of_killed_session_is_ignored(qhome):
    from qmailpy import paths
    from qmailpy.smtpd.periplimit import acquire
    d = paths.sessions_path(qhome.root)
    os.makedirs(d)
    open(os.path.join(d, "127.0.0.1.99999999"), "w").close()     # left by a kill -9
    slot = acquire(d, "127.0.0.1", 1, os.getpid())
    assert slot is not None
    assert os.listdir(d) == ["127.0.0.1.%d" % os.getpid()]
    assert acquire(d, "127.0.0.1", 1, os.getpid() + 1) is None
    other = acquire(d, "127.0.0.2", 1, os.getpid() + 1)
    assert other is not None
    other.release()
    slot.release()


def test_periplimit_slot_is_locked_before_another_session_can_count_it(qhome, monkeypatch):
    """A session counting the IP's slots takes each file's lock for a moment to see whether its
    session lives. One that looked while this session had made its file and not locked it yet
    took it for a dead session's and removed it: this session went uncounted (periplimit + 1
    sessions); and when it was that look's lock this session's flock met (a file of a killed
    session with our pid), qmail-smtpd died of BlockingIOError. The slot file now appears
    under its name already locked."""
    import fcntl
    from qmailpy import paths
    from qmailpy.smtpd import periplimit
    d = paths.sessions_path(qhome.root)
    os.makedirs(d)
    mine = "127.0.0.1.%d" % os.getpid()
    real_flock = fcntl.flock
    looked = []

    def flock(fd, op):          # another session counts just before this one locks its file
        if not looked:
            looked.append(True)
            for n in os.listdir(d):
                if n.startswith("127.0.0.1."):
                    periplimit._held(os.path.join(d, n))
        return real_flock(fd, op)
    monkeypatch.setattr(fcntl, "flock", flock)
    slot = periplimit.acquire(d, "127.0.0.1", 1, os.getpid())
    monkeypatch.setattr(fcntl, "flock", real_flock)
    assert slot is not None and os.listdir(d) == [mine] and periplimit._held(os.path.join(d, mine))
    assert periplimit.acquire(d, "127.0.0.1", 1, os.getpid() + 1) is None
    slot.release()

    open(os.path.join(d, mine), "w").close()        # left by a killed session of our pid...
    look = os.open(os.path.join(d, mine), os.O_RDONLY)
    fcntl.flock(look, fcntl.LOCK_SH | fcntl.LOCK_NB)     # ...and another session looking at it now
    try:
        slot = periplimit.acquire(d, "127.0.0.1", 1, os.getpid())
    finally:
        os.close(look)
    assert slot is not None and os.listdir(d) == [mine] and periplimit._held(os.path.join(d, mine))
    slot.release()
    assert os.listdir(d) == []


def test_periplimit_slot_that_cannot_be_made_leaves_nothing_and_the_session_goes_on(qhome, capfd, monkeypatch):
    """The slot file cannot be put in place (EIO from rename): its temporary name is removed, the
    session is not counted and goes on, and the log says why (as for a full disk)."""
    from qmailpy import paths
    from qmailpy.smtpd import periplimit
    qhome.control("periplimit", "1\n")
    d = paths.sessions_path(qhome.root)
    os.makedirs(d)
    monkeypatch.setattr(periplimit, "os", _Faulty("rename", errno.EIO))
    replies, rc, log = serve_in_process(qhome, b"QUIT\r\n", capfd)
    assert (replies, rc) == (b"220 test.example ESMTP\r\n221 test.example\r\n", 0)
    assert log[0] == 'periplimit-unavailable ip=127.0.0.1 reason="[Errno 5] Input/output error"'
    assert not any(line.startswith("refused") for line in log)
    assert os.listdir(d) == []


def test_periplimit_files_gone_under_a_count(qhome):
    """A session ends while another counts: its slot file, listed and gone before it is opened,
    is no live session; a slot whose file an admin removed is still given back without an error."""
    from qmailpy import paths
    from qmailpy.smtpd import periplimit
    d = paths.sessions_path(qhome.root)
    os.makedirs(d)
    assert periplimit._held(os.path.join(d, "127.0.0.1.77")) is False
    slot = periplimit.acquire(d, "127.0.0.1", 1, 76)
    os.unlink(slot.path)
    slot.release()
    with pytest.raises(OSError):
        os.fstat(slot.fd)                   # closed
    assert os.listdir(d) == []


def test_users_database_down_gives_temporary_replies(qhome):
    """A dead MySQL users database: 451/454, never a wrong 'no such user' or a relay."""
    qhome.control("usersdb", "127.0.0.1|1|root||nodb\n")
    qhome.control("userchk", "1\n")
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    plain = base64.b64encode(b"\0joe@example.org\0pw").decode()
    data = ("EHLO c\r\nAUTH PLAIN %s\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<joe@example.org>\r\n"
            "RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n" % plain).encode()
    lines, err, _ = smtpd(qhome, data, AUTHFAILDELAY="0")
    assert lines[6:] == ["454 temporary authentication failure (#4.3.0)", "250 ok",
                         "451 system temporary unavailable, try again later (#4.3.0 - chkuser)",
                         "451 temporary failure reading the users database (#4.3.0)",
                         "221 test.example"]
    assert "tempfail rule=userchk" in err and "pw" not in err.replace("popbeforesmtp", "")


def test_own_queue_runs_in_a_forked_child(tmp_path):
    """No QMAILQUEUE and bin/qmail-queue is ours: the queue runs forked, with the same result."""
    from test_install import install
    home = Home(tmp_path / "qmail")
    install(home.root)
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    env = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
    env.update(TCP_ENV, QMAILHOME=home.root)
    r = subprocess.run([os.path.join(home.root, "bin", "qmail-smtpd")], input=TRANSACTION, env=env,
                       capture_output=True, timeout=30)
    lines = r.stdout.decode().split("\r\n")
    assert lines[5].startswith("250 ok ") and lines[6] == "221 test.example"
    qp = int(lines[5].split(" qp ")[1])
    [(envelope, body)] = queued_messages(home)
    assert envelope == ["Fa@example.com", "Tb@example.org"]
    todo = os.listdir(os.path.join(home.root, "queue", "todo"))[0]
    with open(os.path.join(home.root, "queue", "intd", todo), "rb") as f:
        assert f.read().split(b"\0")[1] == b"p%d" % qp
    mess = os.path.join(home.root, "queue", "mess", str(int(todo) % 23), todo)
    with open(mess, "rb") as f:
        assert f.readline().startswith(b"Received: (qmail %d invoked by uid %d); " % (qp, os.getuid()))


def test_queue_wrapper_is_execed_not_forked(qhome, tmp_path):
    from qmailpy.smtpd.queueclient import is_own_queue
    assert is_own_queue(program("qmail-queue"))
    assert not is_own_queue(fake_queue(tmp_path, 0))
    assert not is_own_queue("/nonexistent")


# -- morercpthosts.cdb: rcpthosts.c tries the domain, then each suffix from a dot

MORE_RCPTS = [("a@more.example", "250 ok"), ("a@MORE.Example", "250 ok"),
              ("a@x.more.example", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
              ("a@x.deep.example", "250 ok"), ("a@y.x.deep.example", "250 ok"),
              ("a@deep.example", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
              ("a@example.org", "250 ok"), ("a@else.example", "553 sorry, that domain isn't in my list of "
                                                               "allowed rcpthosts (#5.7.1)")]


def write_morercpthosts(home, *keys):
    import cdblib
    with open(os.path.join(home.root, "control", "morercpthosts.cdb"), "wb") as f, cdblib.Writer(f) as w:
        for key in keys:
            w.put(key, b"")


def test_morercpthosts_exact_domains_and_dot_suffixes_in_process(qhome):
    """An exact key is that domain only (its subdomains relay nowhere); a `.deep.example`
    key takes every subdomain but not deep.example itself."""
    write_morercpthosts(qhome, b"more.example", b".deep.example")
    env = dict(TCP_ENV)
    controls = Controls(qhome.root, env)
    session = Conversation(SmtpdConfig(controls, env), FakeServices(controls))
    session.start()
    session.feed(b"HELO c.example\r\n")
    for rcpt, reply in MORE_RCPTS:
        assert session.feed(b"MAIL FROM:<s@example.com>\r\n") == b"250 ok\r\n"
        assert session.feed(b"RCPT TO:<%s>\r\n" % rcpt.encode()).decode() == reply + "\r\n", rcpt
        assert session.feed(b"RSET\r\n") == b"250 flushed\r\n"


def test_morercpthosts_through_the_program(qhome):
    write_morercpthosts(qhome, b"more.example", b".deep.example")
    data = b"HELO c.example\r\n" + b"".join(b"MAIL FROM:<s@example.com>\r\nRCPT TO:<%s>\r\nRSET\r\n" % r.encode()
                                            for r, _ in MORE_RCPTS) + b"QUIT\r\n"
    lines, _, _ = smtpd(qhome, data)
    assert lines[3::3][:len(MORE_RCPTS)] == [reply for _, reply in MORE_RCPTS]


@pytest.mark.parametrize("name", ["AUTHFAILDELAY", "DNSTIMEOUT"])
@pytest.mark.parametrize("value", ["soon", "nan", "-1", "5s"])
def test_malformed_environment_seconds_are_421_at_connect(qhome, capfd, name, value):
    """AUTHFAILDELAY "soon" used to crash the session at the first failed AUTH; DNSTIMEOUT was ignored."""
    replies, rc, log = serve_in_process(qhome, b"QUIT\r\n", capfd, **{name: value})
    assert (replies, rc) == (b"421 unable to read controls (#4.3.0)\r\n", 1)
    assert log == ['error reason="unable to read controls" file=$%s problem="not a number of seconds: %r"'
                   % (name, value)]


def test_a_bug_in_a_session_is_one_log_line_and_a_421(qhome, capfd, monkeypatch):
    """An exception the session did not expect (a bug) ends the session with 421 and one log
    line, never a traceback: qmail-smtpd's stderr is multilog's input (the run script's
    exec 2>&1, qmail-tcpserver's too), which would split a traceback into many lines."""
    def bug(self, data):
        raise KeyError("oops\nsecond line")
    monkeypatch.setattr(Conversation, "feed", bug)
    replies, rc, log = serve_in_process(qhome, b"HELO c.example\r\n", capfd)
    assert (replies, rc) == (b"220 test.example ESMTP\r\n421 internal error, closing connection (#4.3.0)\r\n", 1)
    assert log[0] == "connect ip=127.0.0.1 host=unknown" and len(log) == 2
    assert re.fullmatch(r"error reason=\"internal bug: KeyError: 'oops\\\\nsecond line' "
                        r"at test_smtpd\.py:\d+:bug < qmailpy/smtpd/main\.py:\d+:_converse\"", log[1]), log[1]


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), TimeoutError(110, "Connection timed out")],
                         ids=["EIO", "timeout"])
def test_an_os_error_of_a_session_action_is_a_421_not_a_client_gone(qhome, capfd, monkeypatch, error):
    """Only the channel's own reads and writes mean the client went away (or stopped reading):
    an OSError that escapes a session action (a file it did not expect to fail) is the
    session's, so the client gets the 421 and the log says what failed, not "the client left"."""
    def action(self, data):
        raise error
    monkeypatch.setattr(Conversation, "feed", action)
    replies, rc, log = serve_in_process(qhome, b"HELO c.example\r\n", capfd)
    assert (replies, rc) == (b"220 test.example ESMTP\r\n421 internal error, closing connection (#4.3.0)\r\n", 1)
    assert len(log) == 2 and log[1].startswith('error reason="internal bug: %s: ' % type(error).__name__), log


def test_a_client_gone_while_we_write_is_one_log_line_and_no_421(qhome, capfd, monkeypatch):
    """A write to the client that fails is the client's end: nothing more is written."""
    from qmailpy.smtpd import main
    real_write = main.PlainChannel.write

    def write(self, data):
        if data.startswith(b"250"):
            raise BrokenPipeError(32, "Broken pipe")
        real_write(self, data)
    monkeypatch.setattr(main.PlainChannel, "write", write)
    replies, rc, log = serve_in_process(qhome, b"HELO c.example\r\nQUIT\r\n", capfd)
    assert (replies, rc, log[1:]) == (b"220 test.example ESMTP\r\n", 1, ['error reason="Broken pipe"']), log


def test_a_bug_whose_421_cannot_be_written_is_still_one_log_line(qhome, capfd, monkeypatch):
    """The channel may be what failed (a TLS channel in a bad state, a client gone): the 421
    is given up, the bug's log line and exit 1 remain."""
    from qmailpy.smtpd import main

    def bug(self, data):
        raise KeyError("oops")
    real_write = main.PlainChannel.write

    def write(self, data):
        if data.startswith(b"421 internal"):
            raise BrokenPipeError(32, "Broken pipe")
        real_write(self, data)
    monkeypatch.setattr(Conversation, "feed", bug)
    monkeypatch.setattr(main.PlainChannel, "write", write)
    replies, rc, log = serve_in_process(qhome, b"HELO c.example\r\n", capfd)
    assert (replies, rc, len(log)) == (b"220 test.example ESMTP\r\n", 1, 2)
    assert log[1].startswith('error reason="internal bug: KeyError: \'oops\' at '), log


def test_abandon_lets_go_of_a_job_whose_abort_fails(qhome):
    """A session over in DATA (a bug) whose queue job cannot be aborted cleanly (the service's
    connection already gone): abandon() does not raise, and the job is let go of once."""
    from test_dialogues import FakeJob
    aborts = []

    class Gone(FakeJob):
        def abort(self):
            aborts.append(1)
            raise ConnectionResetError(104, "Connection reset by peer")

    class Services(FakeServices):
        def start_queue(self, spf=None, auth=None):
            return Gone(self.queued, 999)
    env = qhome.env(**TCP_ENV)
    conversation = Conversation(SmtpdConfig(Controls(qhome.root, env), env), Services())
    conversation.start()
    assert conversation.feed(TRANSACTION.split(b"Subject")[0]).endswith(b"354 go ahead\r\n")
    conversation.abandon()
    conversation.abandon()
    assert aborts == [1]


def test_a_conversation_not_made_has_no_attributes():
    """Its attributes are the session's: before there is one, an AttributeError (copy, pickle
    and hasattr ask so), not a recursion through __getattr__."""
    half = Conversation.__new__(Conversation)
    assert not hasattr(half, "state")


def test_a_bug_in_data_leaves_no_queue_program_or_pipe_behind(qhome, capfd, monkeypatch, tmp_path):
    """A bug while the message is being read (the queue program started, the 354 sent) ends
    the session as any bug does, and the job is abandoned as a lost client's is: the pipes
    closed, the queue program ended without queueing and reaped. An exec'd qmail-smtpd's exit
    did that; a qmail-tcpserver worker goes on to other sessions, and kept the two pipes and
    a queue program waiting for the rest of the message until it retired (100 sessions)."""
    from qmailpy.smtpd import message

    def bug(session):
        raise KeyError("oops")
        yield
    monkeypatch.setattr(message, "feed", bug)
    before = sorted(os.listdir("/proc/self/fd"))
    replies, rc, log = serve_in_process(qhome, TRANSACTION, capfd, QMAILQUEUE=fake_queue(tmp_path, 0))
    assert rc == 1 and replies.endswith(b"\r\n421 internal error, closing connection (#4.3.0)\r\n")
    assert "internal bug: KeyError" in log[-1]
    assert sorted(os.listdir("/proc/self/fd")) == before
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_the_users_database_is_closed_when_the_session_ends(qhome, capfd):
    """The users database a session opened (AUTH here) is closed when serve() returns, not
    when the collector happens to find it: a qmail-tcpserver worker goes on to other sessions,
    and kept each AUTH session's connection (a MySQL connection, the sqlite file) open."""
    import gc
    from qmailpy.users import admin, open_users
    users = open_users(qhome.root, Controls(qhome.root), create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "s3cret", clear=True)
    users.close()
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    plain = base64.b64encode(b"\0joe@example.org\0s3cret")

    def open_files():
        return [os.readlink("/proc/self/fd/" + fd) for fd in os.listdir("/proc/self/fd")
                if os.path.exists("/proc/self/fd/" + fd)]
    gc.disable()
    try:
        replies, rc, log = serve_in_process(qhome, b"EHLO c.example\r\nAUTH PLAIN " + plain + b"\r\nQUIT\r\n",
                                            capfd, AUTHFAILDELAY="0")
        assert b"235 ok, go ahead (#2.0.0)\r\n" in replies and rc == 0, log
        # this session's database only: an earlier test's, not yet collected, is not ours to judge
        assert not [f for f in open_files() if f.endswith(".sqlite") and f.startswith(str(qhome.root))]
    finally:
        gc.enable()


def test_a_bug_at_the_session_s_start_gives_back_its_periplimit_slot(qhome, capfd, monkeypatch):
    """periplimit's slot is released however the session ends, a bug before its greeting
    included: a qmail-tcpserver worker goes on to other sessions, and one holding the slot's
    lock counted as a live session of that IP until it retired."""
    from qmailpy.smtpd import main
    qhome.control("periplimit", "1\n")

    def bug(*args):
        raise KeyError("oops")
    with monkeypatch.context() as m:
        m.setattr(main, "Conversation", bug)
        with pytest.raises(KeyError):
            serve_in_process(qhome, b"QUIT\r\n", capfd)
    replies, rc, log = serve_in_process(qhome, b"QUIT\r\n", capfd)
    assert (replies, rc) == (b"220 test.example ESMTP\r\n221 test.example\r\n", 0), log


def test_root_never_counts_in_a_sessions_directory_it_does_not_own(qhome, tmp_path):
    """sessions/ is qmaild's. Root runs qmail-smtpd's serve() too (`sendmail -bs`): opening its
    slot there (O_TRUNC) and reading others' went through whatever qmaild had put at those names,
    a link to /etc/shadow say, and truncated it; the AUTH count's file was rewritten the same way,
    and a sessions/authfail/ root made first locked qmaild out of its own count (454 for every
    AUTH). Root, like any user who does not own sessions/, now counts nothing there (the caller
    logs periplimit-unavailable / authfail-unavailable and goes on, as for a full disk)."""
    from qmailpy import paths
    from qmailpy.smtpd.authlimit import Attempts
    from qmailpy.smtpd.periplimit import acquire
    d = paths.sessions_path(qhome.root)
    os.makedirs(d)
    victim = tmp_path / "shadow"
    victim.write_bytes(b"root:$6$secret:19000::::::\n")
    os.symlink(victim, os.path.join(d, ".127.0.0.1.77.new"))
    os.symlink(victim, os.path.join(d, "127.0.0.1.78"))
    os.chown(d, 4242, 4242)
    with pytest.raises(PermissionError):
        acquire(d, "127.0.0.1", 5, 77)
    attempts = Attempts(paths.authfail_path(qhome.root), "127.0.0.0/8", 3, 900, 77)
    with pytest.raises(PermissionError):
        attempts.begin(1_800_000_000)
    assert not os.path.exists(paths.authfail_path(qhome.root))
    assert victim.read_bytes() == b"root:$6$secret:19000::::::\n"
    assert sorted(os.listdir(d)) == [".127.0.0.1.77.new", "127.0.0.1.78"]
