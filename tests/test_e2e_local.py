"""End to end, local: swaks -> tcpserver -> bin/qmail-smtpd -> qmail-queue -> bin/qmail-send ->
qmail-lspawn -> qmail-local -> the Maildir of a users-database mailbox, read back over POP3 by Dovecot.

No fakes: the mailbox is made with bin/qmail-users, qmail-local runs as the mailbox
owner (as root), Dovecot is configured by qmailpy.pop3.dovecot as tests/test_pop3.py does.
"""
import os
import re
import subprocess
import time

import pytest

from test_e2e_support import (DOMAIN, IS_ROOT, MAIL_UID, PYTHON, ROOT, SPAWN_MODES, dates, free_port, inject,  # noqa: F401
                               wait_listening, world)
from test_pop3 import DOVECOT, Pop3, needs_dovecot, unstuff  # noqa: F401 (fixture)

# every test here runs with forked and with exec'd qmail-local/qmail-remote
pytestmark = pytest.mark.parametrize("world", SPAWN_MODES, indirect=True)

# LF line ends (swaks sends CRLF), a leading dot and dot-only line (dot-stuffed on the wire),
# 8-bit bytes, trailing blanks, an empty line in the body, a tab-folded header.
MESSAGE = (b"From: Alice <alice@remote.example>\n"
           b"To: joe@e2e.example\n"
           b"Subject: end to end\n"
           b"Message-ID: <e2e-local-1@remote.example>\n"
           b"X-Folded: first part\n\tsecond part\n"
           b"\n"
           b"first line, trailing blanks  \n"
           b".leading dot\n"
           b"..two dots\n"
           b"caf\xc3\xa9 8bit\n"
           b"\n"
           b".\n"
           b"last line\n")


def swaks(port, data_file, sender, rcpt):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.e2e.test",
                        "--from", sender, "--to", rcpt, "--data", "@" + data_file],
                       capture_output=True, timeout=60)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def start_dovecot(world):
    outdir = os.path.join(world.top, "dovecot")
    port = free_port()
    r = subprocess.run([PYTHON, "-m", "qmailpy.pop3.dovecot", world.home, outdir, "--port", str(port)],
                       capture_output=True, cwd=str(ROOT), timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    proc = subprocess.Popen([DOVECOT, "-F", "-c", os.path.join(outdir, "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    world.procs.append(proc)
    wait_listening("127.0.0.1", port, proc, what="dovecot")
    return port


@pytest.mark.usefixtures("needs_dovecot")
def test_swaks_to_maildir_to_pop3(world):
    maildir = world.adduser("joe", password="pop pass")
    if IS_ROOT:
        assert os.stat(maildir).st_uid == MAIL_UID
    send = world.send()
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    port = world.smtpd()
    data = os.path.join(world.top, "message.txt")
    with open(data, "wb") as f:
        f.write(MESSAGE + b".\n")        # swaks' own closing dot: no extra line added
    t0 = time.time()
    code, out = swaks(port, data, "alice@remote.example", "joe@" + DOMAIN)
    assert code == 0, out
    m = re.search(r"<-  250 ok (\d+) qp (\d+)", out)
    assert m, out
    qp = int(m.group(2))
    # swaks put LF -> CRLF and stuffed the dots on the wire
    sent = out.replace("\r", "")
    assert " -> ..leading dot\n -> ...two dots\n" in sent and "\n -> ..\n" in sent, out
    new = maildir / "new"
    [name] = send.wait_for(lambda: os.listdir(new), timeout=20, what="the Maildir delivery")
    send.wait_line(r"^end msg \d+$")
    stored = (new / name).read_bytes()
    t1 = time.time()

    # Return-Path and Delivered-To from qmail-local, Received from qmail-queue and qmail-smtpd,
    # then the message byte for byte
    head = b"Return-Path: <alice@remote.example>\nDelivered-To: %s-joe@%s\n" % (DOMAIN.encode(), DOMAIN.encode())
    assert stored.startswith(head), stored[:200]
    rest = stored[len(head):]
    rx = re.compile(rb"Received: \(qmail (\d+) invoked by uid (\d+)\); (.+)\n"
                    rb"Received: from unknown \(HELO client\.e2e\.test\) \(127\.0\.0\.1\)\n"
                    rb"  by localhost with (E?SMTP); (.+)\n")
    got = rx.match(rest)
    assert got, rest[:300]
    assert int(got.group(1)) == qp and int(got.group(2)) == os.getuid()
    assert got.group(3).decode() in dates(t0, t1) and got.group(5).decode() in dates(t0, t1)
    assert rest[got.end():] == MESSAGE
    # a Maildir name of qmail-local's kind, with the Maildir++ size
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+\.[^/,]+,S=%d" % len(stored), name), name
    if IS_ROOT:
        assert os.stat(new / name).st_uid == MAIL_UID
    log = send.lines()
    assert any(re.fullmatch(r"starting delivery \d+: msg \d+ to local %s-joe@%s" % (DOMAIN, DOMAIN), ln)
               for ln in log), log
    assert any(re.fullmatch(r"delivery \d+: success: did_1\+0\+0/", ln) for ln in log), log
    assert send.stop() == 0
    assert world.queue_files() == []

    # Dovecot reads the very same file over POP3
    pop3 = start_dovecot(world)
    pop = Pop3(pop3, "127.0.0.1")
    assert pop.greeting.startswith("+OK")
    assert pop.login("joe@" + DOMAIN, "pop pass") == "+OK Logged in."
    assert pop.cmd("STAT") == "+OK 1 %d" % (len(stored) + stored.count(b"\n"))
    assert pop.cmd("UIDL 1") == "+OK 1 " + name
    assert pop.cmd("RETR 1").startswith("+OK")
    wire = pop.multiline()
    assert b"\r\n..leading dot\r\n...two dots\r\n" in wire
    assert unstuff(wire) == stored
    pop.close()


def test_unknown_mailbox_bounces_to_local_sender(world):
    """A recipient qmail-smtpd accepts (userchk off) but the users database lacks: qmail-lspawn's
    5.1.1, bounced to a local mailbox through the same real chain."""
    world.adduser("alice")
    world.control("userchk", "0")           # the default: qmail-smtpd does not check mailboxes at RCPT
    send = world.send()
    port = world.smtpd()
    data = os.path.join(world.top, "nobody.txt")
    with open(data, "wb") as f:
        f.write(b"Subject: to nobody\n\nhello\n.\n")
    code, out = swaks(port, data, "alice@" + DOMAIN, "nosuchuser@" + DOMAIN)
    assert code == 0, out
    send.wait_for(lambda: world.delivered("alice"), timeout=20, what="the bounce")
    [bounce] = world.delivered("alice").values()
    assert bounce.startswith(b"Return-Path: <>\nDelivered-To: %s-alice@%s\n" % (DOMAIN.encode(), DOMAIN.encode()))
    # qmail-send names the recipient as given, without the virtualdomains prefix
    assert b"\n<nosuchuser@%s>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n" % DOMAIN.encode() in bounce, bounce
    assert send.stop() == 0


def test_programs_environment_in_a_domain_directory_and_a_mailbox(world):
    """What a `|program` sees through the real chain: in the domain directory (an alias file,
    vpopmail's `+domain-:domain:...:-::` delivery) and in a mailbox's own .qmail, which qmail-local
    reads in the mailbox directory (docs/qmail-local.md, vdelivermail lines), for joe-x@ too when
    it has no .qmail-x (vpopmail's QMAIL_EXT; it bounced: no mailbox here); the caller's
    environment passes unchanged (LC_CTYPE=C: Python's start-up must not make it C.UTF-8)."""
    maildir = world.adduser("joe")
    box = maildir.parent
    ddir = box.parent
    for where, name, text in ((ddir, ".qmail-info", "|env -0 > env-info.out\n"),
                              (box, ".qmail", "|env -0 > env-joe.out\n./Maildir/\n")):
        path = where / name
        path.write_text(text)
        os.chmod(path, 0o644)
        if IS_ROOT:
            os.chown(path, where.stat().st_uid, where.stat().st_gid)
    send = world.send(LC_CTYPE="C")
    assert inject(world, b"Subject: env\n\nhi\n", b"a@remote.example",
                  [b"Info@" + DOMAIN.encode(), b"Joe-X@" + DOMAIN.encode()]) == 0
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    caller = {k.encode(): v.encode() for k, v in world.env(LC_CTYPE="C").items()}
    dom = DOMAIN.encode()
    assert dom == b"e2e.example"                   # HOST2, HOST3 and HOST4 below
    common = {b"HOST": dom, b"HOST2": b"e2e", b"HOST3": b"e2e", b"HOST4": b"e2e",
              b"SENDER": b"a@remote.example", b"NEWSENDER": b"a@remote.example",
              b"RPLINE": b"Return-Path: <a@remote.example>\n", b"EXT2": b"", b"EXT3": b"", b"EXT4": b""}
    expect = {
        ddir / "env-info.out": {b"USER": dom, b"HOME": bytes(ddir), b"LOCAL": dom + b"-Info", b"EXT": b"Info"},
        box / "env-joe.out": {b"USER": b"joe", b"HOME": bytes(box), b"LOCAL": dom + b"-Joe-X", b"EXT": b"",
                              b"MAILDIRQUOTA": b"NOQUOTA"},
    }
    for path, own in expect.items():
        got = dict(p.split(b"=", 1) for p in path.read_bytes().split(b"\0") if p)
        recipient = own[b"LOCAL"] + b"@" + dom
        want = dict(caller)
        want.update(common)
        want.update(own)
        want.update({b"RECIPIENT": recipient, b"DTLINE": b"Delivered-To: " + recipient + b"\n",
                     b"PWD": own[b"HOME"]})
        assert got.pop(b"UFLINE").startswith(b"From a@remote.example ")
        assert got == want, path.name
    [stored] = world.delivered("joe").values()
    assert stored.startswith(b"Return-Path: <a@remote.example>\nDelivered-To: %s-Joe-X@%s\n" % (dom, dom))
