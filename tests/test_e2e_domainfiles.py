"""End to end: a vpopmail domain's .qmail-<alias> and .qmail-default, through tcpserver,
qmail-smtpd's chkuser, qmail-send, qmail-lspawn and qmail-local, to joe's Maildir.

RCPT accepts exactly what delivery delivers: an alias file and a catch-all are accepted
and delivered; vpopmail's `| vdelivermail '' bounce-no-mailbox` refuses unknown users at
RCPT (550) and, with chkuser off, bounces them with vdelivermail's text.
"""
import os
import subprocess

from test_e2e_support import DOMAIN, IS_ROOT, MAIL_UID, world  # noqa: F401

VDM = "| /home/vpopmail/bin/vdelivermail '' %s\n"


def swaks(port, rcpt, sender="alice@remote.example", body="hello"):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.e2e.test",
                        "--from", sender, "--to", rcpt, "--body", body], capture_output=True, timeout=60)
    return r.stdout.decode("utf-8", "replace")


def put(world, name, text):
    """A file in the domain directory as vpopmail leaves it: the domain owner's, mode 0600."""
    path = os.path.join(world.home, "vpopmail", "domains", DOMAIN, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    if IS_ROOT:
        os.chown(path, MAIL_UID, MAIL_UID)


def test_aliases_catchall_and_vdelivermail_bounce(world):
    world.adduser("joe")
    world.adduser("alice")
    world.control("userchk", "1")
    joe = os.path.join(world.home, "vpopmail", "domains", DOMAIN, "joe")
    put(world, ".qmail-info", joe + "/Maildir/\n")      # (forwards: tests/test_local_vdelivermail.py; here,
    #                                                    as root, the queue is not the production layout's)
    put(world, ".qmail-default", VDM % "bounce-no-mailbox")
    send = world.send()
    port = world.smtpd()

    out = swaks(port, "info@" + DOMAIN, body="for info")
    assert "<-  250 ok " in out, out
    out = swaks(port, "nosuch@" + DOMAIN)
    assert "<** 550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in out, out

    [mail] = send.wait_for(lambda: world.delivered("joe"), what="info's mail in joe's Maildir").values()
    assert mail.startswith(b"Return-Path: <alice@remote.example>\nDelivered-To: %s-info@%s\n"
                           % (DOMAIN.encode(), DOMAIN.encode())), mail

    # vpopmail's catch-all to a mailbox directory (its Maildir/ is added)
    put(world, ".qmail-default", VDM % joe)
    assert "<-  250 ok " in swaks(port, "somebody@" + DOMAIN, body="to somebody")
    got = send.wait_for(lambda: len(world.delivered("joe")) == 2 and world.delivered("joe"), what="catch-all")
    bodies = sorted(m.split(b"\n\n", 1)[1].rstrip(b"\n") + b"\n" for m in got.values())
    assert bodies == [b"for info\n", b"to somebody\n"], bodies

    # delete: accepted, and gone without a trace
    put(world, ".qmail-default", VDM % "delete")
    assert "<-  250 ok " in swaks(port, "dropped@" + DOMAIN)
    send.wait_line(r"delivery \d+: success: did_0\+0\+0/")

    # chkuser off: vdelivermail's bounce, to a local sender
    put(world, ".qmail-default", VDM % "bounce-no-mailbox")
    world.control("userchk", "0")
    assert "<-  250 ok " in swaks(port, "nosuch@" + DOMAIN, sender="alice@" + DOMAIN)
    [bounce] = send.wait_for(lambda: world.delivered("alice"), what="the bounce").values()
    assert b"\n<nosuch@%s>:\nSorry, no mailbox here by that name. (#5.1.1)\n" % DOMAIN.encode() in bounce, bounce
    assert len(world.delivered("joe")) == 2
    assert send.stop() == 0
