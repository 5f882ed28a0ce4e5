"""qmail-send under load: 500 deliveries at once without leaks; kill -9 in the middle of 1000 messages."""
import os
import time
from pathlib import Path

import pytest

from qmailpy.proto import qq
from qmailpy.queue import clean, layout
from qmailpy.queue.enqueue import enqueue
from test_send_support import Scratch, Send, fd_count, inject


@pytest.fixture
def scratch(tmp_path):
    s = Scratch(tmp_path, {"concurrencyremote": "500"})
    yield s
    s.cleanup()


def peak(logfile):
    """Most fake qmail-remote runs overlapping, from their start/end lines."""
    events = []
    for line in Path(logfile).read_text().splitlines():
        kind, t, _pid, _rcpt = line.split()
        events.append((float(t), 1 if kind == "start" else -1))
    running = best = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        best = max(best, running)
    return best, sum(1 for _, s in events if s == 1)


def processes(send):
    """{pid: fd count} of qmail-send and its helpers, and the helpers' own children."""
    pids = [send.proc.pid] + send.children()
    grandchildren = []
    for pid in pids[1:]:
        grandchildren += Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
    return {pid: fd_count(pid) for pid in pids}, grandchildren


def test_500_remote_deliveries_at_once_no_leaks(scratch):
    recips = ["user%d@host%d.example" % (i, i % 7) for i in range(600)]
    msgid = inject(scratch.home, b"Subject: many\n\nbody\n", "alice@localhost", recips)
    hold = os.path.join(scratch.fake, "hold")
    remote_log = os.path.join(scratch.fake, "remote.log")
    send = Send(scratch, FAKE_REMOTE_SLEEP="0", FAKE_REMOTE_HOLD=hold)
    send.wait_line(r"^status: local 0/10 remote 0/500$")
    # the first 500 deliveries are all running and held: no more may start until one ends
    send.wait_for(lambda: os.path.exists(remote_log) and peak(remote_log)[1] >= 500, timeout=120,
                  what="500 deliveries started")
    time.sleep(0.5)
    assert peak(remote_log) == (500, 500)
    open(hold, "w").close()
    send.wait_line(r"^end msg %d$" % msgid, timeout=120)
    time.sleep(0.2)
    after, leftovers = processes(send)
    assert leftovers == []
    best, count = peak(remote_log)
    assert count == 600
    assert best == 500, best
    assert "status: local 0/10 remote 500/500" in send.lines()
    # a second, small round must not leave more fds behind than the big one did
    inject(scratch.home, b"Subject: one more\n\nbody\n", "alice@localhost", ["x@host.example"])
    send.wait_line(r"^end msg \d+$", count=2)
    time.sleep(0.2)
    again, leftovers = processes(send)
    assert leftovers == [] and again == after, (after, again)
    assert all(n < 20 for n in after.values()), after
    assert send.stop() == 0
    assert scratch.queue_files() == []
    assert len(scratch.mail()) == 601


def test_kill9_in_the_middle_of_1000_messages_loses_none(scratch):
    scratch.control("concurrencyremote", "50")
    recips = ["u%d@r%d.example" % (i, i % 5) for i in range(1000)]
    now = time.time()
    for i, rcpt in enumerate(recips):       # in-process qmail-queue: same files, no exec per message
        enqueue(scratch.home, b"Subject: %d\n\nbody\n" % i, qq.encode(b"alice@localhost", [rcpt.encode()]),
                os.getuid(), os.getpid(), now)
    send = Send(scratch)
    mail = Path(scratch.fake) / "mail"
    send.wait_for(lambda: len(os.listdir(mail)) >= 300, timeout=180, what="300 deliveries")
    helpers = send.children()
    send.kill9()
    at_kill = len(os.listdir(mail))
    assert at_kill < 1000 and len(scratch.queue_files()) > 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p) and
                                              "Z" not in Path("/proc/%d/stat" % p).read_text().split()[2]
                                              for p in helpers):
        time.sleep(0.05)
    send = Send(scratch)
    # a kill between "end msg" (info/ unlinked) and qmail-clean's foop leaves mess/ and intd/
    # debris, as in qmail: only files without info/ or todo/, removed after OSSIFIED
    send.wait_for(lambda: not [f for f in scratch.queue_files() if not f.startswith(("mess/", "intd/"))],
                  timeout=240, what="every message finished")
    assert send.stop() == 0
    delivered = {name.rsplit(".", 1)[0] for name in os.listdir(mail)}
    assert delivered == set(recips)
    assert len(clean.clean_stale(scratch.home, time.time() + layout.OSSIFIED + 10)) <= 2
    assert scratch.queue_files() == []
    assert any(ln.startswith("status: local 0/10 remote 0/50") for ln in send.lines())
