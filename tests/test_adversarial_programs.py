"""Adversarial clients against the real programs: tcpserver + bin/qmail-smtpd + bin/qmail-queue.

Clients that stop mid-DATA, slow clients (timeoutsmtpd), a client that never reads its
replies, pipelining floods (order, loss, the process's peak memory), AUTH brute force
(the real failure delay, secrets never logged) and the open-relay list with the real
queue on disk. In-process versions of these attacks: test_adversarial.py.
"""
import base64
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, Home, program
from dialogue import check_lines
from test_adversarial import FAKE_ENDS, HOSTS, RELAY_CASES, SMUGGLED, SMUGGLED_STORED, flood, plain
from test_dialogues import TCP_ENV, free_port, queued_messages, read_lines
from qmailpy.proto import replies as R
from qmailpy.queue.layout import create_queue

ENVELOPE = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
QUEUED = "250 ok * qp *"
SMTPD_RECEIVED = 2          # lines of qmail-smtpd's Received header in a stored message


@pytest.fixture
def qhome(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", HOSTS)
    create_queue(home.root)
    return home


def environ(home, **extra):
    env = home.env(QMAILQUEUE=program("qmail-queue"), AUTHFAILDELAY="0", **extra)
    env.pop("RELAYCLIENT", None)
    return env


def queue_files(home):
    """Every file in the queue except lock/: what a message (or its debris) leaves."""
    found = []
    queue = os.path.join(home.root, "queue")
    for top in sorted(os.listdir(queue)):
        if top == "lock":
            continue
        for dirpath, _, files in os.walk(os.path.join(queue, top)):
            found += [os.path.join(dirpath, f) for f in files]
    return found


def messages(home):
    """[(envelope records, message without qmail-queue's and qmail-smtpd's Received lines)]."""
    return [(env, body.split(b"\n", SMTPD_RECEIVED)[SMTPD_RECEIVED]) for env, body in queued_messages(home)]


class TcpServer:
    """tcpserver -v running bin/qmail-smtpd; counts the connections that ended."""

    def __init__(self, home, env, argv=()):
        self.port = free_port()
        cmd = ["tcpserver", "-v", "-H", "-R", "-l", "localhost", "127.0.0.1", str(self.port),
               program("qmail-smtpd"), *argv]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        self.ended, self.log = [], []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.log.append(line)
                if line.startswith("tcpserver: end "):
                    self.ended.append(line)
                self._cond.notify_all()

    def connect(self, rcvbuf=None):
        deadline = time.time() + 10
        while True:
            sock = socket.socket()
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(10)
            try:
                sock.connect(("127.0.0.1", self.port))
                return sock
            except ConnectionRefusedError:
                sock.close()
                assert time.time() < deadline, "tcpserver did not start"
                time.sleep(0.05)

    def wait_ended(self, count, timeout=10):
        """Have `count` qmail-smtpd processes exited (tcpserver's "end" lines)?"""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.ended) >= count, timeout)

    def smtpd_log(self):
        with self._cond:
            return [line for line in self.log if line.startswith("qmail-smtpd: ")]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def expect(sock, expected):
    got, rest = read_lines(sock, len(expected))
    check_lines(got, expected, "replies")
    assert rest == b""


def read_all(sock, timeout=10):
    """Everything until the server closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


# -- SMTP smuggling through the real programs -------------------------------------------------

def smtpd(home, data, **extra):
    """bin/qmail-smtpd on pipes (as tcpserver runs it) with the real queue: (reply lines, stderr)."""
    r = subprocess.run([program("qmail-smtpd")], input=data, capture_output=True,
                       env=environ(home, **dict(TCP_ENV, **extra)), timeout=60)
    return r.stdout.decode("utf-8", "surrogateescape").split("\r\n")[:-1], r.stderr


@pytest.mark.parametrize("newline", [0, 1])
def test_smuggling_through_the_real_programs(qhome, newline):
    """Every fake end-of-data, one transaction each, in one session: each message is queued
    whole, with the smuggled commands as text; with newline 0 a bare LF ends the session."""
    qhome.control("newline", "%d\n" % newline)
    kept = [f for f in FAKE_ENDS if newline or not f[3]]
    data = b"".join(ENVELOPE + b"DATA\r\nSubject: %d\r\n\r\nbody" % i + fake + SMUGGLED + b".\r\n"
                    for i, (_, fake, _, _) in enumerate(kept))
    lines, _ = smtpd(qhome, data + b"QUIT\r\n")
    check_lines(lines, ["220 test.example ESMTP"] + ["250 ok", "250 ok", "354 go ahead", QUEUED] * len(kept)
                + ["221 test.example"], "replies")
    assert messages(qhome) == [(["Fa@example.com", "Tb@example.org"],
                                b"Subject: %d\n\nbody" % i + stored + SMUGGLED_STORED)
                               for i, (_, _, stored, _) in enumerate(kept)]
    if newline:
        return
    for name, fake, _, _ in (f for f in FAKE_ENDS if f[3]):
        lines, err = smtpd(qhome, ENVELOPE + b"DATA\r\nbody" + fake + SMUGGLED + b".\r\nQUIT\r\n")
        assert lines == ["220 test.example ESMTP", "250 ok", "250 ok", "354 go ahead", R.STRAY_LF], name
        assert b'refused reason="bare LF in DATA"' in err
    assert len(messages(qhome)) == len(kept) and len(queue_files(qhome)) == 3 * len(kept)   # mess, intd, todo


# -- a client that stops mid-DATA ------------------------------------------------------------

STOPS = {
    "close-mid-line": (b"Subject: half\r\n\r\nhalf a li", "close"),
    "close-after-CRLF.": (b"Subject: x\r\n\r\nbody\r\n.", "close"),
    "close-after-CRLF.CR": (b"Subject: x\r\n\r\nbody\r\n.\r", "close"),
    "close-after-smuggled-LF.LF": (b"Subject: x\r\n\r\nbody\n.\nQUIT\n", "close"),
    "half-close": (b"Subject: x\r\n\r\nbody\r\n", "shutdown"),
    "reset": (b"Subject: x\r\n\r\nbody\r\n" * 1000, "reset"),
}


@pytest.mark.parametrize("newline", [0, 1])
@pytest.mark.parametrize("name", sorted(STOPS))
def test_client_stops_mid_data_nothing_queued(qhome, name, newline):
    qhome.control("newline", "%d\n" % newline)
    body, how = STOPS[name]
    with TcpServer(qhome, environ(qhome)) as server:
        sock = server.connect()
        expect(sock, ["220 test.example ESMTP"])
        sock.sendall(ENVELOPE + b"DATA\r\n")
        expect(sock, ["250 ok", "250 ok", "354 go ahead"])
        sock.sendall(body)
        time.sleep(0.1)                       # let qmail-smtpd pass it to qmail-queue
        if how == "shutdown":
            sock.shutdown(socket.SHUT_WR)     # our end of the stream, then read what comes
            assert read_all(sock) == b""
        elif how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert server.wait_ended(1), "qmail-smtpd did not exit after its client left"
        assert queue_files(qhome) == []       # nothing queued, no debris (pid/, mess/, intd/)
        # qmail-smtpd saw the client go, unless it dropped the session itself at a bare LF
        dropped = not newline and b"\n" in body.replace(b"\r\n", b"")
        ending = ' refused reason="bare LF in DATA" ip=127.0.0.1' if dropped else " eof"
        assert any(line.endswith(ending) for line in server.smtpd_log()), server.smtpd_log()
        # the next client is served normally
        sock = server.connect()
        sock.sendall(ENVELOPE + b"DATA\r\nSubject: next\r\n\r\nok\r\n.\r\nQUIT\r\n")
        expect(sock, ["220 test.example ESMTP", "250 ok", "250 ok", "354 go ahead", QUEUED, "221 test.example"])
        sock.close()
        assert server.wait_ended(2)
    assert messages(qhome) == [(["Fa@example.com", "Tb@example.org"], b"Subject: next\n\nok\n")]


# -- slow clients ----------------------------------------------------------------------------

SLOW = {
    "silent": (b"", []),
    "partial-command": (b"MAIL FROM:<a@exa", []),
    "mid-data": (ENVELOPE + b"DATA\r\nSubject: slow\r\n\r\nbod", ["250 ok", "250 ok", "354 go ahead"]),
    "mid-auth": (b"EHLO x\r\nAUTH LOGIN\r\n", ["250-test.example", "250-PIPELINING", "250-8BITMIME",
                                             "250-AUTH LOGIN PLAIN CRAM-MD5", "250 SIZE 0", R.AUTH_USERNAME]),
    "after-pipelined-flood": (b"NOOP\r\n" * 2000, ["250 ok"] * 2000),
}


@pytest.mark.parametrize("name", sorted(SLOW))
def test_slow_client_gets_451_timeout(qhome, name):
    qhome.control("timeoutsmtpd", "1\n")
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    data, replies = SLOW[name]
    with TcpServer(qhome, environ(qhome), [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]) as server:
        sock = server.connect()
        expect(sock, ["220 test.example ESMTP"])
        sock.sendall(data)
        start = time.time()
        got, rest = read_lines(sock, len(replies) + 1, timeout=10)
        elapsed = time.time() - start
        assert got == replies + [R.TIMEOUT] and rest == b""
        assert read_all(sock) == b""                  # then the connection is closed
        sock.close()
        assert 0.9 < elapsed < 6, elapsed
        assert server.wait_ended(1)
        assert " timeout" in "\n".join(server.smtpd_log())
    assert queue_files(qhome) == []


def test_client_that_never_reads_is_dropped_after_timeoutsmtpd(qhome):
    qhome.control("timeoutsmtpd", "1\n")
    with TcpServer(qhome, environ(qhome)) as server:
        sock = server.connect(rcvbuf=4096)
        flood_bytes = b"\r\n" * (1 << 20)             # 2 MB in, 28 MB of replies never read

        def send():
            try:
                sock.sendall(flood_bytes)
            except OSError:
                pass
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            gone = server.wait_ended(1, timeout=4)    # qmail: exit 1 second after a write blocks
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)       # frees the blocked writer either way
            except OSError:                           # the server already closed it
                pass
            sender.join(timeout=10)
            sock.close()
        assert gone, "qmail-smtpd still blocked writing to a client that does not read"


# -- pipelining floods -----------------------------------------------------------------------

def test_pipelining_flood_through_tcpserver(qhome):
    """Thousands of commands in one write: every reply, in order; the messages exactly."""
    data, replies, expected = flood(12000, max_messages=3)
    data += b"QUIT\r\n"
    replies = [QUEUED if r.startswith("250 ok * qp") else r for r in replies] + ["221 test.example"]
    with TcpServer(qhome, environ(qhome)) as server:
        sock = server.connect()
        expect(sock, ["220 test.example ESMTP"])
        received = []
        reader = threading.Thread(target=lambda: received.append(read_all(sock, 60)), daemon=True)
        reader.start()
        sock.sendall(data)                            # one write
        reader.join(timeout=60)
        sock.close()
    lines = received[0].decode("utf-8", "surrogateescape").split("\r\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(replies)
    check_lines(lines[:-1], replies, "flood replies")
    assert messages(qhome) == [([r.decode() for r in env], body) for env, body in expected]


def vm_peak_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    pytest.skip("no VmHWM in /proc")


def test_flood_memory_of_the_real_process_is_bounded(qhome):
    """1 MB of empty lines makes 14 MB of replies: qmail-smtpd's peak memory must not grow with
    the flood (it writes each read's replies before the next read). Measured: ~6 MB above the
    idle process for 1 MB and for 4 MB floods alike."""
    proc = subprocess.Popen([program("qmail-smtpd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=environ(qhome, **TCP_ENV))
    try:
        assert proc.stdout.readline() == b"220 test.example ESMTP\r\n"
        idle = vm_peak_kb(proc.pid)
        count = 1 << 19
        writer = threading.Thread(target=lambda: (proc.stdin.write(b"\r\n" * count), proc.stdin.flush()),
                                  daemon=True)
        writer.start()
        got = 0
        while got < count:
            chunk = proc.stdout.read1(1 << 20)
            assert chunk
            got += chunk.count(b"\r\n")
        writer.join(timeout=10)
        peak = vm_peak_kb(proc.pid)
        assert got == count
        assert peak - idle < 16 * 1024, (idle, peak)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


# -- AUTH brute force ------------------------------------------------------------------------

def test_auth_brute_force_real_delay_and_no_secrets(qhome):
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    secrets = [b"hunter2-%d" % i for i in range(5)]
    data = b"EHLO x\r\n" + b"".join(b"AUTH PLAIN " + plain(b"good@example.org", s) + b"\r\n" for s in secrets)
    data += b"AUTH LOGIN " + base64.b64encode(b"good@example.org") + b"\r\n" + base64.b64encode(b"hunter2-L")
    data += b"\r\nAUTH PLAIN " + plain(b"good@example.org", b"secret") + b"\r\nQUIT\r\n"
    env = environ(qhome, **TCP_ENV)
    env["AUTHFAILDELAY"] = "0.2"
    start = time.time()
    r = subprocess.run([program("qmail-smtpd"), sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")],
                       input=data, capture_output=True, env=env, timeout=60)
    elapsed = time.time() - start
    lines = r.stdout.decode().split("\r\n")[:-1]
    assert lines[6:] == [R.AUTH_FAILED] * 5 + [R.AUTH_PASSWORD, R.AUTH_FAILED, R.AUTH_OK, "221 test.example"]
    assert elapsed >= 6 * 0.2                       # six failures, each after the delay
    err = r.stderr
    assert err.count(b" auth-failed mech=") == 6 and b" auth mech=PLAIN user=good@example.org" in err
    for secret in secrets + [b"hunter2-L", b"secret"]:
        assert secret not in err and base64.b64encode(secret) not in err
    assert plain(b"good@example.org", b"secret") not in err


def test_default_auth_failure_delay_goes_through_services(qhome):
    """The session's Sleep after a failed AUTH: AUTHFAILDELAY, default 5 s, slept by Services."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.smtpd.config import AUTH_FAILURE_DELAY, SmtpdConfig
    from qmailpy.smtpd.driver import Conversation
    from qmailpy.smtpd.main import Services
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    checkpassword = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    for extra, want in (({}, AUTH_FAILURE_DELAY), ({"AUTHFAILDELAY": "2.5"}, 2.5)):
        env = qhome.env(**TCP_ENV)
        env.pop("AUTHFAILDELAY", None)
        env.update(extra)
        services = Services(env, checkpassword, lambda *args, **fields: None)
        slept = []
        services.sleep = slept.append
        session = Conversation(SmtpdConfig(Controls(qhome.root, env), env), services)
        session.start()
        assert session.feed(b"EHLO x\r\nAUTH PLAIN " + plain(b"good@example.org", b"wrong") + b"\r\n"
                            ).endswith(R.AUTH_FAILED.encode() + b"\r\n")
        assert slept == [want]
    assert AUTH_FAILURE_DELAY == 5.0


# -- the open-relay list and 8-bit envelopes through the real programs -----------------------

def test_open_relay_list_through_the_real_programs(qhome):
    data = b"HELO relay.test\r\nMAIL FROM:<spammer@evil.example>\r\n" + b"".join(
        b"RCPT TO:" + c[0].encode() + b"\r\n" for c in RELAY_CASES) + b"DATA\r\nrelay?\r\n.\r\nQUIT\r\n"
    env = environ(qhome, **TCP_ENV)
    assert "RELAYCLIENT" not in env
    r = subprocess.run([program("qmail-smtpd")], input=data, capture_output=True, env=env, timeout=60)
    lines = r.stdout.decode().split("\r\n")[:-1]
    check_lines(lines, ["220 test.example ESMTP", "250 test.example", "250 ok"] + [c[1] for c in RELAY_CASES]
                + ["354 go ahead", QUEUED, "221 test.example"], "relay replies")
    assert messages(qhome) == [(["Fspammer@evil.example"] + ["T" + c[2] for c in RELAY_CASES if c[2]],
                                b"relay?\n")]


def test_eight_bit_envelope_is_queued_byte_exact(qhome):
    data = (b"HELO h\xff\r\nMAIL FROM:<\xe9t\xe9@example.com>\r\nRCPT TO:<b\xff\x80@example.org>\r\n"
            b"DATA\r\nSubject: \xff\x00\r\n\r\n\x00\r\n.\r\nQUIT\r\n")
    r = subprocess.run([program("qmail-smtpd")], input=data, capture_output=True,
                       env=environ(qhome, **TCP_ENV), timeout=60)
    assert r.stdout.split(b"\r\n")[-2] == b"221 test.example"
    todo = os.listdir(os.path.join(qhome.root, "queue", "todo"))
    with open(os.path.join(qhome.root, "queue", "intd", todo[0]), "rb") as f:
        assert f.read().split(b"\0")[2:] == [b"F\xe9t\xe9@example.com", b"Tb\xff\x80@example.org", b""]
    [(env, body)] = queued_messages(qhome)
    assert body.startswith(b"Received: from unknown (HELO h?) (127.0.0.1)\n")
    assert body.split(b"\n", 2)[2] == b"Subject: \xff\x00\n\n\x00\n"


def test_a_nul_in_an_auth_response_never_reaches_checkpassword_as_a_field(qhome):
    """checkpassword's fd 3 is user\\0secret\\0challenge\\0: a NUL inside a LOGIN or CRAM-MD5
    user name would shift the fields, so that the client writes the challenge itself and a
    CRAM-MD5 exchange sniffed once (challenge, digest) can be replayed for ever. Such a
    response is malformed (501), and checkpassword is not run."""
    import hashlib
    import hmac
    from qmailpy.ctl.reader import Controls
    from qmailpy.smtpd.config import SmtpdConfig
    from qmailpy.smtpd.driver import Conversation
    from qmailpy.smtpd.main import Services
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    checkpassword = [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    sniffed = b"<1234.1700000000@test.example>"
    digest = hmac.new(b"secret", sniffed, hashlib.md5).hexdigest().encode()
    env = qhome.env(**TCP_ENV)
    env["AUTHFAILDELAY"] = "0"
    attempts = [b"AUTH CRAM-MD5\r\n" + base64.b64encode(b"good@example.org\0" + digest + b" " + sniffed),
                b"AUTH LOGIN " + base64.b64encode(b"good@example.org\0secret") + b"\r\n" + base64.b64encode(b"x"),
                b"AUTH LOGIN " + base64.b64encode(b"good@example.org") + b"\r\n"
                + base64.b64encode(b"secret\0" + sniffed)]
    for attempt in attempts:
        session = Conversation(SmtpdConfig(Controls(qhome.root, env), env),
                               Services(env, checkpassword, lambda *args, **fields: None))
        session.start()
        got = session.feed(b"EHLO x\r\n" + attempt + b"\r\n").decode()
        assert R.AUTH_MALFORMED + "\r\n" in got and R.AUTH_OK not in got, (attempt, got)
        assert session.auth_user is None
