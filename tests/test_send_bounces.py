"""Bounces end to end: H-Sphere controls, MIME skeleton copies, double and triple bounces, doublebounce-trim."""
import os
import re
import time

import pytest

from test_send_support import Scratch, Send, dates, inject

MIME = (b"From: alice@localhost\nSubject: report\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed;\n boundary=\"outer\"\n\n"
        b"This is a multi-part message in MIME format.\n"
        b"--outer\nContent-Type: text/plain\n\nsecret text\n"
        b"--outer\nContent-Type: multipart/alternative; boundary=inner\n\npreamble\n"
        b"--inner\nContent-Type: text/html\n\n<p>secret</p>\n--inner--\nepilogue\n"
        b"--outer\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"
        b"--outer--\ntrailer\n")
SKELETON = (b"From: alice@localhost\nSubject: report\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed;\n boundary=\"outer\"\n\n"
            b"--outer\nContent-Type: text/plain\n\n"
            b"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
            b"--inner\nContent-Type: text/html\n\n--inner--\n"
            b"--outer\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
            b"--outer--\n")


@pytest.fixture
def scratch(tmp_path):
    s = Scratch(tmp_path)
    yield s
    s.cleanup()


def mess_of(scratch, msgid):
    with open(os.path.join(scratch.home, "queue", "mess", str(msgid % 23), str(msgid)), "rb") as f:
        return f.read()


def run_until_done(scratch, msgid, mailbox=None, **env):
    send = Send(scratch, **env)
    send.wait_line(r"^end msg %d$" % msgid)
    if mailbox:
        send.wait_for(lambda: scratch.mail(mailbox), what="mail for " + mailbox)
        send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert send.stop() == 0
    assert scratch.queue_files() == []
    return send.lines()


def strip_received(msg, t0, t1):
    """The bounce without qmail-queue's Received line, checked; and its Date value."""
    first, rest = msg.split(b"\n", 1)
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked by uid %d\); .* -0000" % os.getuid(), first), first
    date = rest.split(b"\n", 1)[0][len(b"Date: "):].decode()
    assert date in dates(t0, t1)
    return rest, date


def test_hsphere_controls_and_mime_skeleton(scratch):
    scratch.control("bouncefrom", "bounce daemon")
    scratch.control("bouncehost", "bounces.example.net")
    scratch.control("bouncesubject", "Undeliverable: your message")
    scratch.control("bouncemessage", "Your message could not be delivered.\nPlease check the address.")
    t0 = time.time()
    msgid = inject(scratch.home, MIME, "alice@localhost", ["fail-a@localhost", "fail-b@far.example"])
    mess = mess_of(scratch, msgid)
    lines = run_until_done(scratch, msgid, "alice@localhost")
    [bounce] = scratch.mail("alice@localhost").values()
    bounce, date = strip_received(bounce, t0, time.time())
    received = mess.split(b"\n", 1)[0] + b"\n"
    local = b"<fail-a@localhost>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
    remote = (b"<fail-b@far.example>:\nfar.example does not like recipient.\n"
              b"Remote host said: 550 no such user\nGiving up on far.example.\nfar.example said no.\n\n")
    head = (b"Date: " + date.encode() + b"\n"
            b'From: "bounce daemon"@bounces.example.net\n'
            b"To: alice@localhost\n"
            b"MIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="outer"\n'
            b"Subject: Undeliverable: your message\n"
            b"\n"
            b"Hi. This is the qmail-send program at bounces.example.net.\n"
            b"Your message could not be delivered.\n"
            b"Please check the address.\n"
            b"\n")
    tail = (b"--- Below this line is a copy of the message.\n"
            b"\n"
            b"Return-Path: <alice@localhost>\n" + received + SKELETON)
    # the paragraphs come in the order the two deliveries failed
    assert bounce in (head + local + remote + tail, head + remote + local + tail)
    assert any(re.fullmatch(r"bounce msg %d qp \d+" % msgid, ln) for ln in lines)


def test_bouncemaxbytes_cuts_the_copy(scratch):
    scratch.control("bouncemaxbytes", "60")
    msgid = inject(scratch.home, b"Subject: x\nX-Long: " + b"y" * 200 + b"\n\nbody\n", "alice@localhost",
                   ["fail@localhost"])
    run_until_done(scratch, msgid, "alice@localhost")
    [bounce] = scratch.mail("alice@localhost").values()
    copy = bounce.split(b"Return-Path: <alice@localhost>\n", 1)[1]
    assert len(copy) == 60 + len(b"\n\n--- End of message stripped.\n")
    assert copy.endswith(b"\n\n--- End of message stripped.\n")


def test_double_bounce_goes_to_doublebounceto(scratch):
    scratch.control("doublebouncehost", "localhost")
    scratch.control("doublebounceto", "postmaster")
    t0 = time.time()
    msgid = inject(scratch.home, b"Subject: a bounce\n\nits body\n", "", ["fail@localhost"])
    mess = mess_of(scratch, msgid)
    run_until_done(scratch, msgid, "postmaster@localhost")
    [(_, _, _, sender)] = [x for x in scratch.local_log() if x[2] == "postmaster@localhost"]
    assert sender == "#@[]"
    [bounce] = scratch.mail("postmaster@localhost").values()
    bounce, date = strip_received(bounce, t0, time.time())
    assert bounce == (
        b"Date: " + date.encode() + b"\n"
        b"From: MAILER-DAEMON@mx.example.org\n"
        b"To: postmaster@localhost\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.example.org.\n"
        b"I tried to deliver a bounce message to this address, but the bounce bounced!\n"
        b"\n"
        b"<fail@localhost>:\n"
        b"Sorry, no mailbox here by that name. (#5.1.1)\n"
        b"\n"
        b"--- Below this line is the original bounce.\n"
        b"\n"
        b"Return-Path: <>\n" + mess)


def test_doublebounce_trim_discards(scratch):
    scratch.control("doublebounceto", "")                # exists, empty: doublebounce-trim
    msgid = inject(scratch.home, b"Subject: a bounce\n\nbody\n", "", ["fail@localhost"])
    lines = run_until_done(scratch, msgid)
    assert "double bounce: discarding bounce/%d" % msgid in lines
    assert not [ln for ln in lines if ln.startswith(("bounce msg", "new msg")) and str(msgid) not in ln]
    assert scratch.mail() == {}


def test_triple_bounce_discarded(scratch):
    msgid = inject(scratch.home, b"Subject: double\n\nbody\n", "#@[]", ["fail@localhost"])
    lines = run_until_done(scratch, msgid)
    assert "triple bounce: discarding bounce/%d" % msgid in lines
    assert scratch.mail() == {}
