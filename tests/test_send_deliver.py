"""qmail-send end to end: real bin/qmail-queue, bin/qmail-send and its helpers, fake delivery programs.

Each test injects with bin/qmail-queue into a scratch home and runs
bin/qmail-send with $QMAILLOCAL/$QMAILREMOTE pointing at tests/fakes/.
"""
import os
import re
import signal
import time

import pytest

from test_send_support import (BIN, DELIVERY_UID, NOBODY, ROOT_ONLY, Send, dates, inject,
                               scratch)  # noqa: F401 (scratch: fixture)

MSG = b"From: alice@localhost\nTo: joe@localhost\nSubject: hello\n\nbody line\n"


def mess_bytes(scratch, msgid):
    with open(os.path.join(scratch.home, "queue", "mess", str(msgid % 23), str(msgid)), "rb") as f:
        return f.read()


def test_local_delivery_success_removes_message(scratch):
    msgid = inject(scratch.home, MSG, "alice@remote.example", ["Joe@LocalHost", "bob@far.example"])
    mess = mess_bytes(scratch, msgid)
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    lines = send.lines()
    assert scratch.queue_files() == []
    expected = [
        "new msg %d" % msgid,
        "info msg %d: bytes %d from <alice@remote.example> qp \\d+ uid %d" % (msgid, len(mess), os.getuid()),
        "starting delivery \\d+: msg %d to local Joe@LocalHost" % msgid,
        "starting delivery \\d+: msg %d to remote bob@far.example" % msgid,
        "delivery \\d+: success: did_0\\+0\\+1/",
        "delivery \\d+: success: far.example_accepted_message./Remote_host_said:_250_ok/",
        "end msg %d" % msgid,
        "status: local 0/10 remote 0/20 exitasap",
        "status: exiting",
    ]
    for pattern in expected:
        assert any(re.fullmatch(pattern, ln) for ln in lines), (pattern, lines)
    assert lines[0] == "status: local 0/10 remote 0/20"
    assert lines[-1] == "status: exiting"
    got = scratch.mail("Joe@LocalHost")
    assert list(got.values()) == [mess]
    assert list(scratch.mail("bob@far.example").values()) == [mess]
    [(_, uid, rcpt, sender)] = scratch.local_log()
    assert (uid, rcpt, sender) == (DELIVERY_UID, "Joe@LocalHost", "alice@remote.example")


def test_virtual_domain_recipient_gets_prefix(scratch):
    msgid = inject(scratch.home, MSG, "alice@remote.example", ["joe@virt.example"])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    assert any(ln.endswith("to local virt.example-joe@virt.example") for ln in send.lines())
    assert scratch.local_log()[0][2] == "virt.example-joe@virt.example"


def test_permanent_failure_bounce_exact_bytes(scratch):
    t0 = time.time()
    msgid = inject(scratch.home, MSG, "alice@localhost", ["fail-one@localhost", "joe@localhost"])
    mess = mess_bytes(scratch, msgid)
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % msgid)
    bounce_qp = int(send.wait_line(r"^bounce msg %d qp \d+$" % msgid) and
                    [ln for ln in send.lines() if ln.startswith("bounce msg")][0].split()[-1])
    send.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce")
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert send.stop() == 0
    t1 = time.time()
    [bounce] = scratch.mail("alice@localhost").values()
    header, _, body = mess.partition(b"\n\n")
    for date in dates(t0, t1):
        for rdate in dates(t0, t1):
            expected = (
                b"Received: (qmail %d invoked by uid %d); %s\n" % (bounce_qp, os.getuid(), rdate.encode())
                + b"Date: %s\n" % date.encode()
                + b"From: MAILER-DAEMON@mx.example.org\n"
                b"To: alice@localhost\n"
                b"Subject: failure notice\n"
                b"\n"
                b"Hi. This is the qmail-send program at mx.example.org.\n"
                b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                b"This is a permanent error; I've given up. Sorry it didn't work out.\n"
                b"\n"
                b"<fail-one@localhost>:\n"
                b"Sorry, no mailbox here by that name. (#5.1.1)\n"
                b"\n"
                b"--- Below this line is a copy of the message.\n"
                b"\n"
                b"Return-Path: <alice@localhost>\n" + header + b"\n\n")
            if bounce == expected:
                return
    assert bounce == expected


def test_sighup_rereads_locals_and_concurrency(scratch):
    send = Send(scratch)
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    scratch.control("concurrencyremote", "5")
    scratch.control("locals", "localhost\nnew.example")
    send.proc.send_signal(signal.SIGHUP)
    send.wait_line(r"^status: local 0/10 remote 0/5$")       # printed once qmail-todo has been told
    msgid = inject(scratch.home, MSG, "alice@localhost", ["joe@new.example"])
    send.wait_line(r"^starting delivery 1: msg \d+ to local joe@new.example$")
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    assert msgid is None or any(ln == "end msg %d" % msgid for ln in send.lines())


def nobody_can_run_python():
    """The venv's interpreter may live under a 0700 home (/root/.pyenv): then no other uid runs it."""
    import subprocess
    import sys
    try:
        return subprocess.run([sys.executable, "-c", "pass"], user=NOBODY, group=NOBODY,
                              extra_groups=[], timeout=30).returncode == 0
    except PermissionError:
        return False


@pytest.mark.skipif(**ROOT_ONLY)
@pytest.mark.skipif(os.getuid() == 0 and not nobody_can_run_python(),
                    reason="the Python interpreter is not executable by other users here")
@pytest.mark.parametrize("qmaillocal", ["", str(BIN / "qmail-local")], ids=["fork", "exec"])
def test_real_qmail_local_into_a_vpopmail_maildir(scratch, qmaillocal):
    """The real qmail-local delivers a virtual-domain message into its Maildir: forked from
    qmail-lspawn (no $QMAILLOCAL) and exec'd ($QMAILLOCAL=bin/qmail-local)."""
    import shutil
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    # the mailbox owner (nobody) must reach the Maildir: not under pytest's 0700 tmp_path
    scratch.control("vpopmaildir", os.path.join(scratch.fake, "vpopmail"))
    users = open_users(scratch.home, Controls(scratch.home, {}), create=True)
    try:
        admin.add_domain(users, "virt.example")
        box = admin.add_user(users, "joe@virt.example", "secret")
    finally:
        users.close()
    for root, dirs, files in os.walk(os.path.join(scratch.fake, "vpopmail")):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            shutil.chown(name, NOBODY, NOBODY)
    msgid = inject(scratch.home, MSG, "alice@remote.example", ["Joe@Virt.Example"])
    send = Send(scratch, QMAILLOCAL=qmaillocal)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    assert any(re.fullmatch(r"delivery 1: success: did_1\+0\+0/", ln) for ln in send.lines()), send.lines()
    [name] = os.listdir(os.path.join(box.dir, "Maildir", "new"))
    with open(os.path.join(box.dir, "Maildir", "new", name), "rb") as f:
        got = f.read()
    assert got.startswith(b"Return-Path: <alice@remote.example>\n"
                          b"Delivered-To: virt.example-Joe@Virt.Example\n")
    assert got.endswith(MSG)


def test_a_crashed_qmail_local_is_a_deferral_and_its_last_words_name_the_delivery(scratch):
    # qmail: the report is spawn.c's fixed "Zqmail-local crashed.", logged by qmail-send as
    # `delivery N: deferral: qmail-local_crashed./`; qmail-lspawn's own line for what the child
    # wrote names the message and recipient as qmail-send's `starting delivery N:` line does
    msgid = inject(scratch.home, MSG, "alice@remote.example", ["crash@localhost"])
    send = Send(scratch)
    start = r"^starting delivery (\d+): msg %d to local crash@localhost$" % msgid
    send.wait_line(start)
    [delid] = [m.group(1) for m in map(re.compile(start).match, send.lines()) if m]
    send.wait_line(r"^delivery %s: deferral: qmail-local_crashed\./$" % delid)
    send.wait_line(r"^alert: delivery of msg %d to local crash@localhost crashed \(signal 9\): last words$"
                   % msgid)
    assert send.stop() == 0
