"""Bounces end to end: H-Sphere controls, MIME skeleton copies, double and triple bounces, doublebounce-trim;
bounces off the scheduler's loop (a 10 MB hostile message, a slow qmail-queue) and bounces a filter refuses."""
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_filters import EICAR, clamd  # noqa: F401 (the module's clamd fixture, started by pid)
from qmailpy.send.inject import Injector
from test_send_support import FAKES, ROOT, Send, dates, inject, scratch  # noqa: F401 (scratch: fixture)

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


def test_injected_boundary_and_part_header_text_stay_below_the_copy_line(scratch):
    """Issue 22's attack: a boundary with bare CRs and a body line placed as a part header."""
    mess = (b"From: mallory@far.example\nSubject: hi\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"zz\\\"\rSubject: Your invoice\rX-Injected: 1\"\n\n"
            b"--zz\"\rSubject: Your invoice\rX-Injected: 1\n<h1>pay here</h1>\n\nbody\n")
    msgid = inject(scratch.home, mess, "alice@localhost", ["fail@localhost"])
    run_until_done(scratch, msgid, "alice@localhost")
    [got] = scratch.mail("alice@localhost").values()
    above, copy = got.split(b"--- Below this line is a copy of the message.\n\n", 1)
    assert [ln.split(b":", 1)[0] for ln in above.split(b"\n\n", 1)[0].split(b"\n")] == [
        b"Received", b"Date", b"From", b"To", b"Subject"]
    assert b"\r" not in above and b"invoice" not in above and b"Injected" not in above
    return_path, received, rest = copy.split(b"\n", 2)
    assert return_path == b"Return-Path: <alice@localhost>" and received.startswith(b"Received: (qmail ")
    assert rest == mess.split(b"\n\n", 1)[0] + b"\n\n"          # the plain bounce: the header only
    assert b"pay here" not in got
    mime = mess.replace(b'boundary="zz\\"\rSubject: Your invoice\rX-Injected: 1"', b"boundary=zz").replace(
        b'--zz"\rSubject: Your invoice\rX-Injected: 1\n', b"--zz\n")
    msgid = inject(scratch.home, mime, "bob@localhost", ["fail@localhost"])
    run_until_done(scratch, msgid, "bob@localhost")
    [got] = scratch.mail("bob@localhost").values()
    assert b'\nContent-Type: multipart/mixed; boundary="zz"\nSubject: failure notice\n' in got
    assert got.endswith(b"boundary=zz\n\n--zz\n") and b"pay here" not in got


# -- bounces off the loop: a hostile message, a slow qmail-queue

QUEUE_FAKE = str(FAKES / "qmail-queue")
NOCOPY = b"--- The copy of the message is left out: the mail server refused it.\n"
FAIL_TEXT = b"<fail@localhost>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
STOCK_TEXT = (b"Hi. This is the qmail-send program at mx.example.org.\n"
              b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
              b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n")


def hostile(size):
    """6,000 nested multiparts, then boundary-like lines up to `size` bytes."""
    out = bytearray(b"From: mallory@far.example\nSubject: hostile\nMIME-Version: 1.0\n"
                    b"Content-Type: multipart/mixed; boundary=b0\n\n")
    for i in range(6000):
        out += b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
    k = 0
    while len(out) < size:
        out += b"--zz\n--b%d\n--zz--\n--b%d--\n" % (k % 6000, (k * 7) % 5999 + 1)   # never closes b0
        if k % 50 == 0:
            out += b"--b0 \n"
        k += 1
    return bytes(out), k * 4


def peak_rss_kb(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def queue_children(send):
    """pids of qmail-send's children running a qmail-queue (or its stand-in)."""
    out = []
    for pid in send.children():
        try:
            cmd = Path("/proc/%d/cmdline" % pid).read_bytes()
        except OSError:
            continue
        if b"qmail-queue" in cmd:
            out.append(pid)
    return out


def test_hostile_message_bounces_in_bounded_memory_while_mail_flows(scratch):
    """10 MB, 6,000 nested multiparts, 100,000s of boundary-like lines, to an unknown mailbox.

    Asserted: qmail-send's peak RSS stays under 64 MB, and an ordinary message
    sent once the bounce has started is delivered before the bounce is
    injected. Its delivery time is measured against the same run's idle
    figure and printed, not asserted (the machine is shared).
    """
    mess, boundary_like = hostile(10 * 1024 * 1024)
    assert boundary_like >= 100000
    send = Send(scratch)
    t0 = time.monotonic()
    inject(scratch.home, b"Subject: idle\n\nbody\n", "alice@localhost", ["idle@localhost"])
    send.wait_line(r"delivery \d+: success")
    idle = time.monotonic() - t0
    inject(scratch.home, mess, "alice@localhost", ["fail@localhost"])
    send.wait_line(r"delivery \d+: failure", timeout=120)
    [msgid] = [int(m.group(1)) for m in map(re.compile(r"info msg (\d+): bytes (\d+) ").match, send.lines())
               if m and int(m.group(2)) > len(mess)]
    started = time.monotonic()
    inject(scratch.home, b"Subject: busy\n\nbody\n", "alice@localhost", ["busy@localhost"])
    send.wait_line(r"delivery \d+: success", count=2, timeout=120)
    busy = time.monotonic() - started
    assert not [ln for ln in send.lines() if ln.startswith("bounce msg %d " % msgid)], \
        "the bounce was injected before the ordinary message was delivered"
    assert scratch.mail("busy@localhost")
    send.wait_line(r"^bounce msg %d qp \d+$" % msgid, timeout=300)
    bounced = time.monotonic() - started
    send.wait_line(r"^end msg %d$" % msgid)
    send.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce", timeout=60)
    rss = peak_rss_kb(send.proc.pid)
    assert send.stop() == 0
    print("\nhostile bounce: idle delivery %.2f s, delivery during the bounce %.2f s, bounce injected after "
          "%.2f s, qmail-send peak RSS %d kB" % (idle, busy, bounced, rss))
    assert rss < 64 * 1024, rss
    [got] = scratch.mail("alice@localhost").values()
    head = got.split(b"\n\n", 1)[0].split(b"\n")
    assert [ln.split(b":", 1)[0] for ln in head] == [b"Received", b"Date", b"From", b"To", b"MIME-Version",
                                                      b"Content-Type", b"Subject"]
    assert head[5] == b'Content-Type: multipart/mixed; boundary="b0"'
    copy = got.split(b"--- Below this line is a copy of the message.\n\n", 1)[1]
    assert copy.count(b"boundary=") == 64 + 1 and copy.endswith(b"--b0 \n")
    assert len(copy) < len(mess) // 10
    assert scratch.queue_files() == []


def test_a_slow_qmail_queue_holds_up_no_delivery(scratch):
    gate = os.path.join(scratch.fake, "gate")
    send = Send(scratch, QMAILQUEUE=QUEUE_FAKE, FAKE_QUEUE_GATE=gate)
    inject(scratch.home, b"Subject: x\n\nbody\n", "alice@localhost", ["fail@localhost"])
    send.wait_line(r"delivery \d+: failure")
    [msgid] = [int(m.group(1)) for m in map(re.compile(r"info msg (\d+): ").match, send.lines()) if m]
    send.wait_for(lambda: queue_children(send), what="qmail-queue for the bounce")
    inject(scratch.home, b"Subject: meanwhile\n\nbody\n", "alice@localhost", ["bob@localhost"])
    send.wait_line(r"^end msg (?!%d$)\d+$" % msgid)
    assert scratch.mail("bob@localhost") and queue_children(send)
    assert not [ln for ln in send.lines() if ln.startswith("bounce msg")]
    Path(gate).touch()
    send.wait_line(r"^end msg %d$" % msgid)
    send.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce")
    send.wait_line(r"^end msg \d+$", count=3)
    assert send.stop() == 0
    assert scratch.queue_files() == []


def test_at_most_four_bounces_at_once_and_the_rest_wait(scratch):
    gate = os.path.join(scratch.fake, "gate")
    for k in range(6):
        inject(scratch.home, b"Subject: %d\n\nbody\n" % k, "alice%d@localhost" % k, ["fail@localhost"])
    send = Send(scratch, QMAILQUEUE=QUEUE_FAKE, FAKE_QUEUE_GATE=gate)
    send.wait_line(r"delivery \d+: failure", count=6)
    send.wait_for(lambda: len(queue_children(send)) == 4, what="4 bounces under way")
    time.sleep(0.5)                                   # room for a fifth, which must not start
    assert len(queue_children(send)) == 4
    Path(gate).touch()
    send.wait_for(lambda: len(scratch.mail("alice")) == 6, what="6 bounces")
    send.wait_line(r"^end msg \d+$", count=12)
    assert send.stop() == 0
    assert scratch.queue_files() == []


def test_sigterm_waits_for_the_bounce_under_way(scratch):
    gate = os.path.join(scratch.fake, "gate")
    msgid = inject(scratch.home, b"Subject: x\n\nbody\n", "alice@localhost", ["fail@localhost"])
    send = Send(scratch, QMAILQUEUE=QUEUE_FAKE, FAKE_QUEUE_GATE=gate)
    send.wait_for(lambda: queue_children(send), what="qmail-queue for the bounce")
    send.proc.send_signal(signal.SIGTERM)
    send.wait_line("status: .* exitasap")
    time.sleep(0.5)
    assert send.proc.poll() is None                   # qmail-queue still has the bounce
    Path(gate).touch()
    assert send.stop() == 0
    lines = send.lines()
    assert [ln for ln in lines if ln.startswith("bounce msg %d qp " % msgid)]
    assert lines.index("end msg %d" % msgid) < lines.index("status: exiting")
    again = Send(scratch)                             # the bounce itself went into todo/ meanwhile
    again.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce")
    again.wait_line(r"^end msg \d+$")
    assert again.stop() == 0
    assert scratch.queue_files() == []


def run_injection(inj):
    """Drive an Injection as qmail-send's loop does; qmail-queue's exit code."""
    sel = selectors.DefaultSelector()
    sel.register(inj.pidfd, selectors.EVENT_READ)
    while True:
        fd = inj.fileno()
        if fd is not None:
            sel.register(fd, selectors.EVENT_WRITE)
        events = sel.select(30)
        assert events, "qmail-queue neither reads nor exits"
        if fd is not None:
            sel.unregister(fd)
        if any(key.fd == inj.pidfd for key, _ in events):
            return inj.finish()
        inj.step()


def test_injection_that_cannot_read_the_message_queues_nothing(scratch):
    def chunks():
        yield b"Subject: x\n\n" * 10000
        raise OSError("mess/ unreadable")
    inj = Injector(scratch.home, scratch.env(QMAILQUEUE=str(ROOT / "bin" / "qmail-queue"))).start(
        chunks(), b"", b"alice@localhost")
    assert run_injection(inj) == 54 and inj.trouble          # no envelope: qmail-queue's read error
    assert scratch.queue_files() == []


def test_injection_into_a_qmail_queue_that_stops_reading(scratch):
    big = (b"x" * 65536 for _ in range(100))
    inj = Injector(scratch.home, scratch.env(QMAILQUEUE="/bin/false")).start(big, b"", b"alice@localhost")
    assert run_injection(inj) == 1 and not inj.trouble
    assert inj.fileno() is None


def test_bounce_qmail_queue_exits_0_without_reading_is_tried_again(scratch):
    """qmail.c qmail_close(): exit 0 after a write to qmail-queue failed is 'Zqq read error',
    a temporary failure. A QMAILQUEUE that exits 0 without reading the bounce (here bigger
    than a pipe holds) has not queued it: bounce/<id> must stay for the next try."""
    msgid = inject(scratch.home, b"X-Big: " + b"x" * 300000 + b"\nSubject: big\n\nbody\n", "alice@localhost",
                   ["fail@localhost"])
    bounce = os.path.join(scratch.home, "queue", "bounce", str(msgid))
    send = Send(scratch, QMAILQUEUE="/bin/true")
    send.wait_line(r"^warning: trouble injecting bounce message, will try later$")
    assert send.stop() == 0
    lines = send.lines()
    assert not [ln for ln in lines if ln.startswith(("bounce msg", "end msg"))], lines
    with open(bounce, "rb") as f:
        assert f.read().startswith(b"<fail@localhost>:\n")


# -- bounces qmail-queue refuses (issue 23): without the copy, then dropped

@pytest.mark.parametrize("code", ["31", "11"])
def test_refused_bounce_goes_out_without_the_copy(scratch, code):
    msgid = inject(scratch.home, b"Subject: REFUSE-ME please\n\nbody\n", "alice@localhost", ["fail@localhost"])
    lines = run_until_done(scratch, msgid, "alice@localhost", QMAILQUEUE=QUEUE_FAKE,
                           FAKE_QUEUE_MARKER="REFUSE-ME", FAKE_QUEUE_CODE=code)
    [got] = scratch.mail("alice@localhost").values()
    assert got.split(b"\n\n", 1)[1] == STOCK_TEXT + FAIL_TEXT + NOCOPY
    why = {"31": "mail server permanently rejected message (#5.3.0)", "11": "envelope address too long for qq (#5.1.3)"}
    assert ("warning: qmail-queue refused the bounce of msg %d for good (exit %s: %s); sending it without the copy "
            "of the message" % (msgid, code, why[code])) in lines
    assert [ln.split()[2] for ln in (Path(scratch.fake) / "queue.log").read_text().splitlines()] == ["refused", "queued"]
    assert any(re.fullmatch(r"bounce msg %d qp \d+" % msgid, ln) for ln in lines)


def test_bounce_refused_twice_is_dropped(scratch):
    msgid = inject(scratch.home, b"Subject: REFUSE-ME\n\nbody\n", "alice@localhost", ["fail-REFUSE-ME@localhost"])
    lines = run_until_done(scratch, msgid, QMAILQUEUE=QUEUE_FAKE, FAKE_QUEUE_MARKER="REFUSE-ME")
    assert ("triple bounce: discarding bounce/%d: qmail-queue refused the bounce of msg %d without the copy of the "
            "message too (exit 31: mail server permanently rejected message (#5.3.0))" % (msgid, msgid)) in lines
    assert not [ln for ln in lines if ln.startswith("bounce msg")]
    assert scratch.mail() == {}
    assert len((Path(scratch.fake) / "queue.log").read_text().splitlines()) == 2


def test_bounce_that_fails_to_inject_is_retried(scratch):
    msgid = inject(scratch.home, b"Subject: REFUSE-ME\n\nbody\n", "alice@localhost", ["fail@localhost"])
    lines = run_until_done(scratch, msgid, "alice@localhost", QMAILQUEUE=QUEUE_FAKE, FAKE_QUEUE_MARKER="REFUSE-ME",
                           FAKE_QUEUE_CODE="71", FAKE_QUEUE_ONCE="1", QMAILPY_TIMESCALE="100")
    assert "warning: trouble injecting bounce message, will try later" in lines
    [got] = scratch.mail("alice@localhost").values()
    assert b"\n--- Below this line is a copy of the message.\n\nReturn-Path: <alice@localhost>\n" in got
    assert got.endswith(b"Subject: REFUSE-ME\n\n")
    assert [ln.split()[2] for ln in (Path(scratch.fake) / "queue.log").read_text().splitlines()] == ["refused", "queued"]


def test_virus_in_the_subject_bounce_goes_out_without_the_copy(scratch, clamd):  # noqa: F811
    """clamd (the real one, test_filters' fixture) refuses the bounce to a virus-checked sender."""
    with open(os.path.join(scratch.home, "control", "clamavclients"), "w") as f:
        f.write("alice@localhost\n")
    p = subprocess.run([sys.executable, "-m", "qmailpy.cli.newfilters", "clamavclients"], cwd=ROOT,
                       capture_output=True, env=dict(os.environ, QMAILHOME=scratch.home), timeout=60)
    assert p.returncode == 0, p
    scratch.control("clamdsocket", "127.0.0.1:%d" % clamd.port)
    msgid = inject(scratch.home, b"From: alice@localhost\nSubject: " + EICAR + b"\n\nhello\n", "alice@localhost",
                   ["fail@localhost"])
    lines = run_until_done(scratch, msgid, "alice@localhost")
    assert any(ln.startswith("warning: qmail-queue refused the bounce of msg %d for good (exit 31: " % msgid)
               for ln in lines)
    [got] = scratch.mail("alice@localhost").values()
    assert got.split(b"\n\n", 1)[1] == STOCK_TEXT + FAIL_TEXT + NOCOPY


def test_a_bounce_whose_message_file_is_gone_is_dropped_with_a_line_naming_mess(scratch):
    """mess/<id> gone while bounce/<id> waits: mess/ is unlinked only after the bounce is queued,
    so this is what a power loss leaves of a finished message (its bounce/ unlink lost). At the
    next start qmail-send names mess/ (not bounce/, which was there and fine) and removes the
    rest, sending nothing; it was tried again every 123 s for ever, as in qmail, where
    injectbounce() cannot open mess/ either."""
    msgid = inject(scratch.home, b"Subject: x\n\nbody\n", "alice@localhost", ["fail@localhost"])
    send = Send(scratch, QMAILQUEUE="/bin/false")
    send.wait_line(r"^warning: trouble injecting bounce message, will try later$")
    assert send.stop() == 0
    os.unlink(os.path.join(scratch.home, "queue", "mess", str(msgid % 23), str(msgid)))
    send = Send(scratch)
    send.wait_line(r"^warning: msg %d: mess/%d/%d is gone: the message was finished; removing what a power "
                   r"loss left of it$" % (msgid, msgid % 23, msgid))
    time.sleep(0.5)
    assert send.stop() == 0
    assert not [ln for ln in send.lines() if "bounce" in ln or "unable" in ln], send.lines()
    assert scratch.queue_files() == []
    assert scratch.mail("alice@") == {}


def test_injection_without_a_pidfd_queues_nothing(scratch, monkeypatch):
    """Linux before 5.3 has no pidfd_open: the loop could never learn that qmail-queue exited,
    so start() gives None (the bounce is tried again later) and the qmail-queue it started is
    killed and reaped before it was given an envelope: it queues nothing."""
    started = []
    popen = subprocess.Popen

    def recorded(*args, **kw):
        started.append(popen(*args, **kw))
        return started[-1]

    def no_pidfd(pid):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(subprocess, "Popen", recorded)
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    injector = Injector(scratch.home, scratch.env(QMAILQUEUE=str(ROOT / "bin" / "qmail-queue")))
    assert injector.start(iter([b"Subject: x\n\nbody\n"]), b"", b"alice@localhost") is None
    [proc] = started
    assert proc.returncode == -9
    assert scratch.queue_files() == []
