"""Big messages (databytes 0, qmail's default: no limit) in memory that does not grow with them.

Each program runs as a subprocess under an address-space limit (RLIMIT_AS): a 1 MB message
under BASE, and a 64 MB one under BASE + 32 MB, must both succeed, with the exact result on
disk. A program that held the message (or a copy of it) would need 64 MB more and fail
(qmail-queue 51, qmail-local 111, ...). Memory is bounded here, never time.

Not here: qmail-remote (tests/test_remote.py sends 160 MB under 128 MB), qmail-send's bounces
(tests/test_send_bounces.py), and what must hold the message and says so: a DKIM-signed message
(dkimpy, docs/dkim.md) and spamd's copies (docs/filters.md, spamdmaxsize).
"""
import os
import resource
import socket
import struct
import subprocess
import threading

import pytest
from hypothesis import given, settings, strategies as st

from conftest import program
from qmailpy.queue.layout import create_queue
from test_dialogues import TCP_ENV
from test_local_support import Box
from test_smtpd import qhome  # noqa: F401 (a fixture: me, rcpthosts, a queue)

MB = 1 << 20
BASE = 48 * MB                       # what the programs need for a 1 MB message (about 40 MB)
HEAD = b"From: a@example.com\nTo: b@example.org\nSubject: big\n\n"
LINE = b"x" * 75 + b"\n"


def limited(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def write_message(path, size, head=HEAD, crlf=False):
    """head and lines of 76 bytes up to about size bytes at path; its length."""
    line = LINE.replace(b"\n", b"\r\n") if crlf else LINE
    block = line * 8192
    with open(path, "wb") as f:
        f.write(head)
        for _ in range(size // len(block)):
            f.write(block)
    return len(head) + size // len(block) * len(block)


@pytest.fixture(params=[1, 64], ids=["1MB", "64MB"])
def size(request):
    """(message size, address-space limit)."""
    mb = request.param
    return mb * MB, BASE + (32 * MB if mb > 1 else 0)


def run(argv, stdin_path, env, limit, stdout=subprocess.PIPE):
    with open(stdin_path, "rb") as m:
        return subprocess.run(argv, stdin=m, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=60,
                              preexec_fn=limited(limit))


def mess_files(root):
    q = os.path.join(root, "queue", "mess")
    return [os.path.join(q, d, n) for d in os.listdir(q) for n in os.listdir(os.path.join(q, d))]


def tail(path, n=200):
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - n))
        return f.read()


def head_of(path, n=4096):
    with open(path, "rb") as f:
        return f.read(n)


def queue_it(qhome, tmp_path, size, env):
    """qmail-queue (in-process: no qmail-queued socket) on a message of size[0]: (run, message length)."""
    length = write_message(tmp_path / "m", size[0])
    (tmp_path / "e").write_bytes(b"Fa@example.com\0Tb@example.org\0\0")
    with open(tmp_path / "e", "rb") as e:
        p = run([program("qmail-queue")], tmp_path / "m", env, size[1], stdout=e)
    return p, length


def test_qmail_queue_with_dkimverify_and_an_unsigned_message(qhome, tmp_path, size):
    """control/dkimverify: a message without DKIM-Signature gets its Authentication-Results
    field without being read whole (it was read, then copied with the field: twice its size)."""
    qhome.control("dkimverify", "1\n")
    p, length = queue_it(qhome, tmp_path, size, qhome.env(TCPREMOTEIP="127.0.0.9"))
    assert (p.returncode, p.stderr) == (0, b"qmail-queue: dkim: dkim=none\n")
    [mess] = mess_files(qhome.root)
    first = head_of(mess)
    received, rest = first.split(b"\n", 1)
    assert received.startswith(b"Received: (qmail ")
    field = b"Authentication-Results: test.example;\n\tdkim=none\n"
    assert rest.startswith(field + HEAD + LINE)
    assert os.path.getsize(mess) == len(received) + 1 + len(field) + length
    assert tail(mess) == (LINE * 3)[-200:]


def test_qmail_queue_with_dkimverify_removes_forged_results_in_place(qhome, tmp_path):
    """Our own authserv-id's fields are taken out (the file shrinks before it grows again)."""
    qhome.control("dkimverify", "1\n")
    forged = b"Authentication-Results: test.example; dkim=pass header.d=paypal.com\n" * 3
    length = write_message(tmp_path / "m", 2 * MB, head=forged + HEAD)
    (tmp_path / "e").write_bytes(b"Fa@example.com\0Tb@example.org\0\0")
    with open(tmp_path / "e", "rb") as e:
        p = run([program("qmail-queue")], tmp_path / "m", qhome.env(TCPREMOTEIP="127.0.0.9"), BASE, stdout=e)
    assert (p.returncode, p.stderr) == (0, b"qmail-queue: dkim: dkim=none\n")
    [mess] = mess_files(qhome.root)
    with open(mess, "rb") as f:
        got = f.read()
    received, rest = got.split(b"\n", 1)
    expect = b"Authentication-Results: test.example;\n\tdkim=none\n" + HEAD
    with open(tmp_path / "m", "rb") as f:
        assert rest == expect + f.read()[len(forged) + len(HEAD):]
    assert len(rest) == length - len(forged) + len(b"Authentication-Results: test.example;\n\tdkim=none\n")


def _fake_clamd(path):
    """A clamd that reads the whole INSTREAM and answers OK; the byte counts it got."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    got = []

    def serve():
        conn, _ = srv.accept()
        with conn, conn.makefile("rb") as f:
            assert f.read(10) == b"zINSTREAM\0"
            total = 0
            while True:
                n = struct.unpack(">I", f.read(4))[0]
                if not n:
                    break
                total += len(f.read(n))
            got.append(total)
            conn.sendall(b"stream: OK\0")
        srv.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, got


def test_qmail_queue_with_clamd(qhome, tmp_path, size):
    """clamglobal: the mess file is streamed to clamd (INSTREAM chunks), never read whole."""
    qhome.control("clamglobal", "1\n")
    qhome.control("clamdsocket", str(tmp_path / "clamd.sock") + "\n")
    t, got = _fake_clamd(str(tmp_path / "clamd.sock"))
    p, length = queue_it(qhome, tmp_path, size, qhome.env())
    t.join(30)
    assert (p.returncode, p.stderr) == (0, b"")
    [mess] = mess_files(qhome.root)
    assert got == [os.path.getsize(mess)]
    assert os.path.getsize(mess) == len(head_of(mess).split(b"\n", 1)[0]) + 1 + length


def test_qmail_smtpd_data_into_qmail_queue(qhome, tmp_path, size):
    """DATA of any size goes from the client to qmail-queue (exec'd) as it comes: neither holds it."""
    session, length = smtp_session(tmp_path, size[0])
    env = qhome.env(**dict(TCP_ENV, QMAILQUEUE=program("qmail-queue")))
    p = run([program("qmail-smtpd")], session, env, size[1])
    lines = p.stdout.split(b"\r\n")
    assert lines[5].startswith(b"250 ok ") and lines[6:] == [b"221 test.example", b""], p.stdout[-300:]
    assert b" accept sender=<a@example.com> rcpts=1 bytes=%d " % length in p.stderr
    [mess] = mess_files(qhome.root)
    first = head_of(mess)
    assert first.split(b"\n", 1)[1].startswith(b"Received: from ")
    assert tail(mess) == (LINE * 3)[-200:]


@pytest.mark.parametrize("dotqmail, aliasempty", [
    (None, "./Maildir/"),
    (None, "./mbox"),
    ("|cat >/dev/null\n", None),
    ("&a@x.org\n&b@y.org\n", None),
], ids=["maildir", "mbox", "program", "forward"])
def test_qmail_local(tmp_path, size, dotqmail, aliasempty):
    """Maildir, mbox, a |program and &forwards (into qmail-queue) copy the message in blocks."""
    box = Box(tmp_path)
    qhome = box.env["QMAILHOME"]
    create_queue(qhome)
    if dotqmail:
        box.dotqmail(".qmail", dotqmail)
    length = write_message(tmp_path / "m", size[0])
    env = dict(box.env, QMAILQUEUE=program("qmail-queue"))
    argv = [program("qmail-local"), "joe", box.home, "joe", "", "", "example.com", "bob@ex.org",
            aliasempty or "./Maildir/"]
    p = run(argv, tmp_path / "m", env, size[1])
    assert p.returncode == 0, (p.stdout, p.stderr)
    delivered = b"Delivered-To: joe@example.com\n"
    if aliasempty == "./Maildir/":
        assert p.stdout == b"did 1+0+0\n"
        [name] = box.files()
        path = os.path.join(box.maildir, "new", name)
        assert head_of(path).startswith(b"Return-Path: <bob@ex.org>\n" + delivered + HEAD)
        assert os.path.getsize(path) == len(b"Return-Path: <bob@ex.org>\n" + delivered) + length
    elif aliasempty == "./mbox":
        assert p.stdout == b"did 1+0+0\n"
        path = os.path.join(box.home, "mbox")
        assert head_of(path).split(b"\n", 1)[1].startswith(b"Return-Path: <bob@ex.org>\n" + delivered + HEAD)
        assert tail(path, 3) == b"x\n\n"
    elif dotqmail.startswith("|"):
        assert p.stdout == b"did 0+0+1\n"
    else:
        assert p.stdout.startswith(b"did 0+2+0\nqp ")
        [mess] = mess_files(qhome)
        assert head_of(mess).split(b"\n", 1)[1].startswith(delivered + HEAD)
        assert os.path.getsize(mess) == len(head_of(mess).split(b"\n", 1)[0]) + 1 + len(delivered) + length


def test_qmail_inject(qhome, tmp_path, size):
    """qmail-inject writes its header, then the body as it reads it, into qmail-queue."""
    length = write_message(tmp_path / "m", size[0])
    env = qhome.env(QMAILQUEUE=program("qmail-queue"))
    p = run([program("qmail-inject"), "b@example.org"], tmp_path / "m", env, size[1])
    assert (p.returncode, p.stderr) == (0, b"")
    [mess] = mess_files(qhome.root)
    assert b"\nSubject: big\n" in head_of(mess)
    assert tail(mess) == (LINE * 3)[-200:]
    assert os.path.getsize(mess) > length


def test_qmail_local_mbox_with_one_long_line(tmp_path, size):
    """mbox's >From quoting looks at the start of each line only: a message of one long line (a
    client's HTML or base64 without line breaks) is not held as a line (it was, three times)."""
    box = Box(tmp_path)
    with open(tmp_path / "m", "wb") as f:
        f.write(HEAD + b"From here" + b"y" * (size[0] - 9))        # and no final newline
    argv = [program("qmail-local"), "joe", box.home, "joe", "", "", "example.com", "bob@ex.org", "./mbox"]
    p = run(argv, tmp_path / "m", box.env, size[1])
    assert (p.returncode, p.stdout, p.stderr) == (0, b"did 1+0+0\n", b"")
    path = os.path.join(box.home, "mbox")
    ufline, rest = head_of(path).split(b"\n", 1)
    assert ufline.startswith(b"From bob@ex.org ")
    assert rest.startswith(b"Return-Path: <bob@ex.org>\nDelivered-To: joe@example.com\n" + HEAD + b">From herey")
    assert os.path.getsize(path) == len(ufline) + 1 + 56 + len(HEAD) + 1 + size[0] + 2
    assert tail(path, 4) == b"yy\n\n"


def _gfrom_by_lines(message):
    from qmailpy.local.mbox import gfrom
    out = []
    for line in message.splitlines(keepends=True):
        out.append((b">" if gfrom(line) else b"") + line)
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b">", b"From ", b"From", b"F", b"rom ", b"\n", b"x", b" ", b">>From x"]),
                max_size=40),
       st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_mbox_quoting_in_blocks_is_qmails_line_by_line(pieces, cuts):
    """The streamed quoting equals gfrom() applied to each line, however the blocks are cut."""
    from qmailpy.local.mbox import quoted
    message = b"".join(pieces)
    blocks, pos, i = [], 0, 0
    while pos < len(message):
        n = cuts[i % len(cuts)]
        blocks.append(message[pos:pos + n])
        pos, i = pos + n, i + 1
    assert b"".join(quoted(iter(blocks))) == _gfrom_by_lines(message)


def smtp_session(tmp_path, size):
    """A file of an SMTP session sending a message of about size bytes (CRLF); the LF bytes
    qmail-smtpd's log counts."""
    session = tmp_path / "session"
    with open(session, "wb") as f:
        f.write(b"HELO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        f.write(HEAD.replace(b"\n", b"\r\n"))
        block = LINE.replace(b"\n", b"\r\n") * 8192
        count = size // len(block)
        for _ in range(count):
            f.write(block)
        f.write(b".\r\nQUIT\r\n")
    return session, len(HEAD) + count * 8192 * len(LINE)


def test_qmail_queued_with_dkimverify(qhome, tmp_path, size):
    """qmail-queued (under the limit itself) takes qmail-smtpd's message and writes the
    Authentication-Results field of an unsigned one without holding the message."""
    import sys
    from queuedsvc import QUEUED, Queued
    qhome.control("dkimverify", "1\n")
    code = "import os, resource; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); os.execv(%r, [%r])" % (
        size[1], size[1], QUEUED, QUEUED)
    service = Queued(qhome.root, qhome.env(), log=str(tmp_path / "queued.log"),
                     argv=[sys.executable, "-c", code]).start()
    try:
        session, length = smtp_session(tmp_path, size[0])
        env = qhome.env(**TCP_ENV)
        env.pop("QMAILQUEUE", None)
        p = run([program("qmail-smtpd")], session, env, BASE)
        assert p.stdout.split(b"\r\n")[5].startswith(b"250 ok "), p.stdout[-300:]
    finally:
        assert service.stop() == 0
    assert b" accept sender=<a@example.com> rcpts=1 bytes=%d " % length in p.stderr
    assert "dkim: dkim=none\n" in (tmp_path / "queued.log").read_text()
    [mess] = mess_files(qhome.root)
    first = head_of(mess).split(b"\n", 2)
    assert first[1] == b"Authentication-Results: test.example;"
    assert tail(mess) == (LINE * 3)[-200:]


def test_qmail_smtpd_data_under_starttls(qhome, tmp_path, size):
    """DATA over STARTTLS (the TLS channel over MemoryBIOs) streams too; ssl costs a fixed 16 MB."""
    import ssl
    from conftest import ROOT
    pem = tmp_path / "servercert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pem),
                           "-out", str(tmp_path / "cert"), "-days", "2", "-subj", "/CN=test.example"],
                          capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    with open(pem, "ab") as f:
        f.write((tmp_path / "cert").read_bytes())
    qhome.control("servercert.pem", pem.read_text())
    ours, theirs = socket.socketpair()
    env = qhome.env(**dict(TCP_ENV, QMAILQUEUE=program("qmail-queue")))
    proc = subprocess.Popen([program("qmail-smtpd")], stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=env,
                            preexec_fn=limited(size[1] + 16 * MB), cwd=ROOT)
    theirs.close()
    try:
        f = ours.makefile("rb")
        assert f.readline() == b"220 test.example ESMTP\r\n"
        ours.sendall(b"STARTTLS\r\n")
        assert f.readline() == b"220 ready for tls\r\n"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        tls = ctx.wrap_socket(ours, server_hostname="test.example")
        g = tls.makefile("rb")
        session, length = smtp_session(tmp_path, size[0])
        with open(session, "rb") as s:
            while True:
                block = s.read(MB)
                if not block:
                    break
                tls.sendall(block)
        replies = [g.readline() for _ in range(6)]
        tls.close()
    finally:
        err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, err
    assert replies[:4] == [b"250 test.example\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"]
    assert replies[4].startswith(b"250 ok ") and replies[5] == b"221 test.example\r\n", replies
    assert b" accept sender=<a@example.com> rcpts=1 bytes=%d " % length in err
    [mess] = mess_files(qhome.root)
    assert tail(mess) == (LINE * 3)[-200:]


def test_qmail_local_loop_check_over_a_long_header_line(tmp_path, size):
    """The Delivered-To loop check compares header lines with one line: a header field of any
    length is looked at by its start (it was held whole, three times); the loop is still found."""
    box = Box(tmp_path)
    for dt in (b"", b"Delivered-To: joe@example.com\n"):
        with open(tmp_path / "m", "wb") as f:
            f.write(b"From: a@example.com\nX-Long: " + b"y" * size[0] + b"\n" + dt + b"Subject: s\n\nbody\n")
        argv = [program("qmail-local"), "joe", box.home, "joe", "", "", "example.com", "bob@ex.org", "./Maildir/"]
        p = run(argv, tmp_path / "m", box.env, size[1])
        if dt:
            assert (p.returncode, p.stdout, p.stderr) == (      # qmail-local.c: strerr, fd 2
                100, b"", b"This message is looping: it already has my Delivered-To line. (#5.4.6)\n")
        else:
            assert (p.returncode, p.stdout, p.stderr) == (0, b"did 1+0+0\n", b"")
    [name] = box.files()
    assert tail(os.path.join(box.maildir, "new", name), 19) == b"y\nSubject: s\n\nbody\n"
