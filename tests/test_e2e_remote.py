"""End to end, remote: bin/qmail-send -> qmail-rspawn -> qmail-remote -> an SMTP sink on 127.0.0.0/8.

Real processes only; the peers are aiosmtpd sinks (tests/smtpsink.py) and the DNS server
of tests/dnsserver.py. As root, remote domains get MX records in that DNS server and the
sinks listen on 127.x.y.z:25 (qmail-remote's only port for MX hosts); a test marked for
smtproutes routes with `domain:127.0.0.1:port` instead. Bounces go back to a local
users-database mailbox through the real qmail-local, and are compared in full.
QMAILPY_TIMESCALE shortens qmail's retry schedule (docs/qmail-send.md).
"""
import math
import os
import re
import time

import pytest

from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import sinks  # noqa: F401  (fixture)
from test_e2e_support import DOMAIN, ME, SPAWN_MODES, Routes, dates, inject, queue_report, queued_ids, world  # noqa: F401

# every test here runs with forked and with exec'd qmail-local/qmail-remote
pytestmark = pytest.mark.parametrize("world", SPAWN_MODES, indirect=True)

SENDER = "alice@" + DOMAIN
# LF line ends, leading dots, a dot-only line, 8-bit bytes, trailing blanks, a line already
# ending in CRLF and a bare CR (qmail-remote sends both as CRLF: no smuggling-capable bytes)
MESSAGE = (b"From: Alice <alice@e2e.example>\n"
           b"To: Bob <bob@remote.example>\n"
           b"Subject: remote end to end\n"
           b"Message-ID: <e2e-remote-1@e2e.example>\n"
           b"\n"
           b"first line  \n"
           b".leading dot\n"
           b"..two dots\n"
           b".\n"
           b"caf\xc3\xa9 8bit\n"
           b"already crlf\r\n"
           b"bare\rcr\n"
           b"\n"
           b"last line\n")
PLAIN = b"From: alice@e2e.example\nSubject: will bounce\nMessage-ID: <e2e-bounce@e2e.example>\n\nthe body\nis dropped\n"
DEFAULT_BOUNCE_LINES = (b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                        b"This is a permanent error; I've given up. Sorry it didn't work out.\n")
LIFETIME = b"I'm not going to try again; this message has been in the queue too long.\n"


@pytest.fixture
def routes(world, dns_server, sinks):  # noqa: F811
    return Routes(world, dns_server, sinks)


def queue_one(world, message, recipients, sender=SENDER):
    """Queue with the real qmail-queue while qmail-send is not running (so the new message
    stays in todo/); (msgid, mess bytes)."""
    before = set(queued_ids(world))
    assert inject(world, message, sender, recipients) == 0
    new = set(queued_ids(world)) - before
    assert len(new) == 1, queue_report(world)
    [msgid] = new
    return msgid, world.mess(msgid)


def received_line(mess):
    """qmail-queue's Received line on top of a queued message."""
    first = mess.split(b"\n", 1)[0] + b"\n"
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked by uid %d\); [^\n]+ -0000\n" % os.getuid(), first), first
    return first


def open_bounce(stored, local, t0, t1):
    """The bounce as delivered to `local`: check qmail-local's and qmail-queue's lines on top;
    (the bounce as qmail-send wrote it, its Date value)."""
    head = b"Return-Path: <>\nDelivered-To: %s-%s@%s\n" % (DOMAIN.encode(), local.encode(), DOMAIN.encode())
    assert stored.startswith(head), stored[:300]
    rest = stored[len(head):]
    m = re.match(rb"Received: \(qmail \d+ invoked (?:for bounce|by uid %d)\); ([^\n]+)\n" % os.getuid(), rest)
    assert m, rest[:200]
    assert m.group(1).decode() in dates(t0, t1)
    bounce = rest[m.end():]
    date = re.match(rb"Date: ([^\n]+)\n", bounce)
    assert date and date.group(1).decode() in dates(t0, t1), bounce[:200]
    return bounce, date.group(1)


def due_remote(born, start, scale):
    """qmail's nextretry() for a remote pass opened at `start`: birth + (isqrt(age) + 20)^2, ages in
    virtual seconds (real seconds x QMAILPY_TIMESCALE)."""
    age = max(int((start - born) * scale), 0)
    return born + (math.isqrt(age) + 20) ** 2 / scale


# -- 2. the MX found through DNS gets the message byte for byte

def test_mx_found_through_dns_gets_the_exact_message(world, routes, dns_server):  # noqa: F811
    sink = routes.sink("remote.example", via="dns")
    msgid, mess = queue_one(world, MESSAGE, ["bob@remote.example"])
    assert mess.endswith(MESSAGE)
    send = world.send()
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    [got] = sink.messages
    ip = sink.host
    # on the wire: CRLF line ends (LF, CRLF and a bare CR each become one CRLF) and dot-stuffing,
    # which aiosmtpd undid; nothing else changed
    assert got.data == re.sub(rb"\r\n|\r|\n", b"\r\n", mess)
    assert got.data.endswith(b"caf\xc3\xa9 8bit\r\nalready crlf\r\nbare\r\ncr\r\n\r\nlast line\r\n")
    assert (got.verb, got.helo, got.mail_from, got.rcpt_tos) == ("EHLO", ME, SENDER, ["bob@remote.example"])
    assert got.mail_options == ["BODY=8BITMIME"] and got.accepted
    queries = [(name, qtype) for name, qtype, _ in dns_server.queries]
    assert ("remote.example", "MX") in queries and ("mx.remote.example", "A") in queries, queries
    lines = send.lines()
    assert "starting delivery 1: msg %d to remote bob@remote.example" % msgid in lines, lines
    assert "delivery 1: success: %s_accepted_message./Remote_host_said:_250_ok_queued/" % ip in lines, lines
    assert world.queue_files() == []


# -- 3. a 4xx, then the retry qmail's schedule asks for is accepted

SCALE_RETRY = 2000.0        # 400 virtual seconds (the first remote retry) = 0.2 s


@pytest.mark.parametrize("stage,reply,deferral", [
    ("MAIL", "451 4.7.1 greylisted, come back later",
     "Connected_to_{ip}_but_sender_was_rejected./Remote_host_said:_451_4.7.1_greylisted,_come_back_later/"),
    ("RCPT", "451 4.3.0 try again later",
     "{ip}_does_not_like_recipient./Remote_host_said:_451_4.3.0_try_again_later/Giving_up_on_{ip}./"),
    ("END", "452 4.2.2 mailbox busy",
     "{ip}_failed_after_I_sent_the_message./Remote_host_said:_452_4.2.2_mailbox_busy/"),
], ids=["MAIL-451", "RCPT-451", "after-dot-452"])
def test_4xx_then_accept(world, routes, stage, reply, deferral):
    sink = routes.sink("later.example", via="smtproutes")
    sink.answer(stage, reply)                      # once; the retry gets the normal 250s
    msgid, mess = queue_one(world, PLAIN, ["carol@later.example"])
    send = world.send(QMAILPY_TIMESCALE=str(SCALE_RETRY))
    born = send.wait_for(lambda: world.birth(msgid), what="info/ of the message")
    send.wait_line(r"^end msg %d$" % msgid, timeout=30)
    assert send.stop() == 0
    ip = "127.0.0.1"
    events = [(t, ln) for t, ln in send.log if re.match(r"(starting )?delivery \d+", ln)]
    texts = [ln for _, ln in events]
    assert texts == [
        "starting delivery 1: msg %d to remote carol@later.example" % msgid,
        "delivery 1: deferral: " + deferral.format(ip=ip),
        "starting delivery 2: msg %d to remote carol@later.example" % msgid,
        "delivery 2: success: %s_accepted_message./Remote_host_said:_250_ok_queued/" % ip,
    ], texts
    # the retry waited for nextretry: birth + (isqrt(age) + 20)^2, age ~0 -> 400 virtual seconds
    first, deferred, retry = events[0][0], events[1][0], events[2][0]
    assert retry >= born + 400 / SCALE_RETRY - 0.02, (born, first, retry)
    assert due_remote(born, first - 0.03, SCALE_RETRY) - 0.02 <= retry, (born, first, retry)
    assert retry <= max(due_remote(born, first, SCALE_RETRY), deferred) + 0.75, (born, first, retry)
    accepted = [m for m in sink.messages if m.accepted]
    assert len(accepted) == 1 and accepted[0].data == mess.replace(b"\n", b"\r\n")
    assert len(sink.messages) == (2 if stage == "END" else 1)
    assert world.queue_files() == []


# -- 4. a 5xx: the bounce, compared in full

def run_to_the_bounce(world, msgid, t0):
    """qmail-send run until alice has the bounce of msgid (queued at t0) and it logged the bounce's
    end; (the stopped Send, the bounce as qmail-send wrote it, its Date value)."""
    send = world.send()
    send.wait_for(lambda: world.delivered("alice"), what="the bounce in alice's Maildir")
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert send.stop() == 0
    [stored] = world.delivered("alice").values()
    return (send,) + open_bounce(stored, "alice", t0, time.time())


def test_5xx_bounce_in_full(world, routes):
    world.adduser("alice")
    sink = routes.sink("remote.example")
    sink.answer("RCPT", "550 5.1.1 <bob@remote.example>: no such user", rcpt="bob@remote.example")
    t0 = time.time()
    msgid, mess = queue_one(world, PLAIN, ["bob@remote.example"])
    send, bounce, date = run_to_the_bounce(world, msgid, t0)
    ip = sink.host
    assert bounce == (
        b"Date: " + date + b"\n"
        b"From: MAILER-DAEMON@mx.e2e.test\n"
        b"To: alice@e2e.example\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.e2e.test.\n" + DEFAULT_BOUNCE_LINES +
        b"\n"
        b"<bob@remote.example>:\n" +
        ip.encode() + b" does not like recipient.\n"
        b"Remote host said: 550 5.1.1 <bob@remote.example>: no such user\n"
        b"Giving up on " + ip.encode() + b".\n"
        b"\n"
        b"--- Below this line is a copy of the message.\n"
        b"\n"
        b"Return-Path: <alice@e2e.example>\n" + received_line(mess) +
        b"From: alice@e2e.example\n"
        b"Subject: will bounce\n"
        b"Message-ID: <e2e-bounce@e2e.example>\n"
        b"\n")
    assert sink.messages == []
    lines = send.lines()
    assert any(re.fullmatch(r"bounce msg %d qp \d+" % msgid, ln) for ln in lines), lines
    assert world.queue_files() == []


MIME = (b"From: alice@e2e.example\n"
        b"Subject: report\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
        b"\n"
        b"This is a multi-part message in MIME format.\n"
        b"--b1\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"\n"
        b"secret text\n"
        b"--b1\n"
        b"Content-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: base64\n"
        b"\n"
        b"AAECAwQF\n"
        b"--b1--\n"
        b"epilogue\n")


def test_5xx_bounce_with_hsphere_controls_in_full(world, routes):
    world.adduser("alice")
    world.control("bouncefrom", "postmaster-bounces")
    world.control("bouncehost", "bounces.e2e.test")
    world.control("bouncesubject", "Undelivered Mail Returned to Sender")
    world.control("bouncemessage", "Your message could not be delivered.\nContact support@e2e.example for help.")
    sink = routes.sink("remote.example")
    sink.answer("RCPT", "553 5.7.1 carol is not welcome", rcpt="carol@remote.example")
    sink.answer("END", "554 5.6.0 content rejected")      # only dave's transaction reaches DATA
    t0 = time.time()
    msgid, mess = queue_one(world, MIME, ["carol@remote.example", "dave@remote.example"])
    send = world.send()
    send.wait_for(lambda: world.delivered("alice"), what="the bounce in alice's Maildir")
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert send.stop() == 0
    ip = sink.host.encode()
    [stored] = world.delivered("alice").values()
    bounce, date = open_bounce(stored, "alice", t0, time.time())
    head = (b"Date: " + date + b"\n"
            b"From: postmaster-bounces@bounces.e2e.test\n"
            b"To: alice@e2e.example\n"
            b"MIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
            b"Subject: Undelivered Mail Returned to Sender\n"
            b"\n"
            b"Hi. This is the qmail-send program at bounces.e2e.test.\n"
            b"Your message could not be delivered.\n"
            b"Contact support@e2e.example for help.\n"
            b"\n")
    carol = (b"<carol@remote.example>:\n" + ip + b" does not like recipient.\n"
             b"Remote host said: 553 5.7.1 carol is not welcome\n"
             b"Giving up on " + ip + b".\n"
             b"\n")
    dave = (b"<dave@remote.example>:\n" + ip + b" failed after I sent the message.\n"
            b"Remote host said: 554 5.6.0 content rejected\n"
            b"\n")
    tail = (b"--- Below this line is a copy of the message.\n"
            b"\n"
            b"Return-Path: <alice@e2e.example>\n" + received_line(mess) +
            b"From: alice@e2e.example\n"
            b"Subject: report\n"
            b"MIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"b1\"\n"
            b"\n"
            b"--b1\n"
            b"Content-Type: text/plain; charset=utf-8\n"
            b"\n"
            b"--b1\n"
            b"Content-Type: application/octet-stream\n"
            b"Content-Transfer-Encoding: base64\n"
            b"\n"
            b"--b1--\n")
    # the paragraphs come in the order the two deliveries failed
    assert bounce in (head + carol + dave + tail, head + dave + carol + tail), bounce
    assert [m.accepted for m in sink.messages] == [False]
    assert world.queue_files() == []


# -- 5. an unreachable MX: qmail's retry schedule, then the queue-lifetime bounce

SCALE_DEAD = 2000.0          # remote retries at 400, 1600, 3600, 6400, 10000 virtual s = 0.2 .. 5 s
LIFETIME_DEAD = 8000


def test_unreachable_mx_retried_on_schedule_then_bounced(world, routes):
    world.adduser("alice")
    world.control("queuelifetime", str(LIFETIME_DEAD))
    dead = routes.dead("dead.example")
    t0 = time.time()
    msgid, mess = queue_one(world, PLAIN, ["bob@dead.example"])
    send = world.send(QMAILPY_TIMESCALE=str(SCALE_DEAD))
    born = send.wait_for(lambda: world.birth(msgid), what="info/ of the message")
    send.wait_for(lambda: world.delivered("alice"), timeout=40, what="the queue-lifetime bounce")
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert send.stop() == 0

    starts = [t for t, _ in send.stamped(r"^starting delivery \d+: msg %d to remote bob@dead\.example$" % msgid)]
    reports = send.stamped(r"^delivery \d+: (deferral|failure): (.*)$")
    connect = "Sorry,_I_wasn't_able_to_establish_an_SMTP_connection._(#4.4.1)/"
    assert [m.group(1) for _, m in reports] == ["deferral"] * (len(starts) - 1) + ["failure"], send.tail()
    assert all(m.group(2) == connect for _, m in reports[:-1]), send.tail()
    assert reports[-1][1].group(2) == connect + "I'm_not_going_to_try_again;_this_message_has_been_in_the_queue_too_long./"

    def due(start):
        return due_remote(born, start, SCALE_DEAD)

    # each retry at the time the previous pass computed (its log line comes a moment after the pass
    # opened, hence the small allowance below), or when that delivery ended if it ended later
    for k in range(1, len(starts)):
        done = reports[k - 1][0]
        assert starts[k] >= due(starts[k - 1] - 0.03) - 0.02, (k, starts, born)
        assert starts[k] <= max(due(starts[k - 1]), done) + 0.75, (k, starts, born)
    virtual = [(t - born) * SCALE_DEAD for t in starts]
    # birth + 0, 400, 1600, 3600, 6400, 10000 at the earliest (later by the time each pass opened):
    # 5 or 6 attempts; 4 when a loaded machine let a try end past 6400's due time, which the loop
    # above allows (a retry starts when the previous delivery ended, if that is later)
    ideal = [0, 400, 1600, 3600, 6400, 10000, 14400]
    assert 4 <= len(starts) <= 6 and all(v >= ideal[i] - 20 for i, v in enumerate(virtual)), virtual
    assert len(starts) >= 5 or any(reports[k][0] > due(starts[k]) for k in range(len(starts) - 1)), (virtual, starts)
    # attempts go on while the message is younger than queuelifetime; the first one after it is the last
    assert virtual[-2] <= LIFETIME_DEAD < virtual[-1], virtual

    [stored] = world.delivered("alice").values()
    bounce, date = open_bounce(stored, "alice", t0, time.time())
    assert bounce == (
        b"Date: " + date + b"\n"
        b"From: MAILER-DAEMON@mx.e2e.test\n"
        b"To: alice@e2e.example\n"
        b"Subject: failure notice\n"
        b"\n"
        b"Hi. This is the qmail-send program at mx.e2e.test.\n" + DEFAULT_BOUNCE_LINES +
        b"\n"
        b"<bob@dead.example>:\n"
        b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n" + LIFETIME +
        b"\n"
        b"--- Below this line is a copy of the message.\n"
        b"\n"
        b"Return-Path: <alice@e2e.example>\n" + received_line(mess) +
        b"From: alice@e2e.example\n"
        b"Subject: will bounce\n"
        b"Message-ID: <e2e-bounce@e2e.example>\n"
        b"\n")
    assert dead.startswith("127.")
    assert world.queue_files() == []
