"""A big queue (an MX after an outage): qmail-send's work grows with the queue, not with its square.

The scheduler is driven in-process, as its loop drives it, with the work counted (calls), never timed.
"""
import os
import time
from pathlib import Path

import pytest

from qmailpy import clock
from qmailpy.ctl.reader import Controls
from qmailpy.proto import cleanwire
from qmailpy.queue import layout
from qmailpy.send import finish
from qmailpy.send.channel import Channel
from qmailpy.send.config import SendConfig
from qmailpy.send.scheduler import Scheduler
from test_send_support import Scratch, scratch  # noqa: F401 (scratch: fixture)


class Log:
    def __init__(self):
        self.lines = []

    def line(self, text):
        self.lines.append(text)


class Injection:
    """A bounce on its way into qmail-queue, which the test lets exit 0."""
    def __init__(self, pid):
        self.pid, self.trouble = pid, False

    def finish(self):
        return 0


class Injector:
    def __init__(self):
        self.started = []

    def start(self, chunks, sender, recipient):
        self.started.append(recipient)
        return Injection(len(self.started))


class Cleaner:
    def request(self, kind, msgid):
        return cleanwire.OK


def scheduler(scratch):
    sched = Scheduler(scratch.home, clock.Clock(1), Log(),
                      SendConfig(Controls(scratch.home, scratch.env())),
                      [Channel(0, -1, -1, 10), Channel(1, -1, -1, 20)], Cleaner(), Injector())
    sched.next_cleanup = float("inf")
    return sched


def finished(home, msgid, sender):
    """A message whose deliveries are all over, one of them failed: mess, info and bounce/."""
    for path, data in ((layout.mess_path(home, msgid), b"Subject: %d\n\nbody\n" % msgid),
                       (layout.info_path(home, msgid), b"F" + sender + b"\0"),
                       (layout.bounce_path(home, msgid), b"<fail@r.example>:\nno.\n\n")):
        Path(path).write_bytes(data)


def test_thousands_of_bounces_waiting_for_a_slot_cost_linear_work(scratch, monkeypatch):
    """After an outage thousands of messages can be finished with a bounce each, and at most 4
    bounces go into qmail-queue at once. Every bounce that exited put every waiting message
    back through messdone() (its stats, its info/ read) and each went back on the waiting list
    through a search of that list: W waiting bounces cost W * W messdone() calls (300 bounces:
    44,556 calls; 10,000 bounces some 50 million, hours of qmail-send's time while
    no delivery starts). A slot that frees now takes the next waiting message, once."""
    waiting = 300
    ids = list(range(1000, 1000 + waiting))
    for msgid in ids:
        finished(scratch.home, msgid, b"alice%d@localhost" % msgid)
    calls = []
    messdone = finish.messdone
    monkeypatch.setattr(finish, "messdone", lambda sched, msgid, now: calls.append(msgid) or messdone(sched, msgid, now))
    sched = scheduler(scratch)
    now = time.time()
    for msgid in ids:
        sched.done_add(msgid, now)
    sched.pass_do(now)
    most = len(sched.bounces)
    while sched.bounces:                  # qmail-queue exits one at a time, the loop turns in between
        finish.bounce_exited(sched, next(iter(sched.bounces)), now)
        sched.pass_do(now)
        most = max(most, len(sched.bounces))
    assert most == finish.BOUNCES_AT_ONCE
    assert sorted(sched.injector.started) == sorted(b"alice%d@localhost" % m for m in ids)    # each once
    assert sorted(ln for ln in sched.log.lines if ln.startswith("end msg")) == sorted("end msg %d" % m for m in ids)
    assert not os.listdir(os.path.join(scratch.home, "queue", "bounce"))
    # each message: waiting, its bounce started, done; the first four skip the wait
    assert len(calls) == 3 * waiting - finish.BOUNCES_AT_ONCE, len(calls)


def test_a_free_bounce_slot_goes_to_the_message_that_waited_longest(scratch):
    """Six finished messages with a bounce each: four go into qmail-queue, two wait. When one
    bounce exits, the slot goes to the first of the two, not to a message that finished in
    the meantime: taken first by those, the waiting bounces of a busy MX that keeps failing
    recipients would wait for ever."""
    sched = scheduler(scratch)
    now = time.time()
    for msgid in range(2000, 2006):
        finished(scratch.home, msgid, b"sender%d@localhost" % msgid)
        sched.done_add(msgid, now)
        sched.pass_do(now)
    assert sched.injector.started == [b"sender%d@localhost" % m for m in range(2000, 2004)]
    finished(scratch.home, 1000, b"sender1000@localhost")     # finishes later, with a smaller id
    sched.done_add(1000, now)
    finish.bounce_exited(sched, 2000, now)
    sched.pass_do(now)
    assert sched.injector.started[4:] == [b"sender2004@localhost"]
    finish.bounce_exited(sched, 2001, now)
    sched.pass_do(now)
    assert sched.injector.started[4:] == [b"sender2004@localhost", b"sender2005@localhost"]
    finish.bounce_exited(sched, 2002, now)
    sched.pass_do(now)
    assert sched.injector.started[4:] == [b"sender2004@localhost", b"sender2005@localhost", b"sender1000@localhost"]


def hand_queue(home, count, recipients):
    """count preprocessed messages written as qmail-todo leaves them (mess, info, remote/),
    each with `recipients` remote recipients; their ids."""
    ids = list(range(1000, 1000 + count))
    for msgid in ids:
        for path, data in ((layout.mess_path(home, msgid), b"Subject: %d\n\nbody\n" % msgid),
                           (layout.info_path(home, msgid), b"Falice@localhost\0"),
                           (layout.remote_path(home, msgid),
                            b"".join(b"Tuser%d.%d@far-away-host.example\0" % (msgid, k) for k in range(recipients)))):
            Path(path).write_bytes(data)
    return ids


@pytest.mark.parametrize("as_json", [False, True])
def test_qread_of_a_big_queue_holds_one_message_at_a_time(scratch, as_json):
    """qmail-qread (and sendmail -bp, mailq) kept every message it had printed, its recipients
    as dicts, until the end: 50,000 messages of 4 recipients took 99 MB, and a queue of big
    envelopes more than the machine has. qmail's holds one message at a time; so does ours now,
    and --json writes its list as it goes, the same text json.dumps(indent=1) gives."""
    import json
    import tracemalloc
    from qmailpy.queue.read import listing
    ids = hand_queue(scratch.home, 400, 50)
    first, count = [], []

    def echo(text):                       # keeps the first lines only, as a pipe to a reader would
        count.append(1)
        if len(first) < 2:
            first.append(text)
    tracemalloc.start()
    try:
        code = listing(scratch.home, echo, echo, as_json)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0
    # one message with its 50 recipients is some 20 kB of Python objects; all 400, 6 to 20 MB
    assert peak < 1 << 20, peak
    head = min(ids, key=lambda m: (m % 23, m))
    if as_json:
        assert first[0] == "[" and json.loads(first[1].rstrip(","))["id"] == head
    else:
        assert len(count) == 400 and first[0].split("\n")[1] == "\tremote\tuser%d.0@far-away-host.example" % head


def test_an_fd_limit_caps_the_concurrency_and_no_delivery_runs_short_of_fds(tmp_path):
    """Under RLIMIT_NOFILE 200 (soft and hard, so the spawns cannot raise it) qmail-rspawn says
    it can run (200 - 64) // 3 = 45 deliveries (spawn.c's limit from the fds it has), qmail-send
    caps concurrencyremote 500 at that, and 100 held deliveries run 45 at a time, every one a
    success: none deferred for a pipe or a message it could not open."""
    import re
    import resource
    from test_send_load import peak
    from test_send_support import Send, inject
    scratch = Scratch(tmp_path, {"concurrencyremote": "500", "concurrencylocal": "500"})
    try:
        hold = os.path.join(scratch.fake, "hold")
        send = Send(scratch, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)),
                    FAKE_REMOTE_SLEEP="0", FAKE_REMOTE_HOLD=hold)
        send.wait_line(r"^status: local 0/45 remote 0/45$")
        inject(scratch.home, b"Subject: many\n\nbody\n", "alice@localhost",
               ["user%d@host%d.example" % (i, i % 7) for i in range(100)])
        remote_log = os.path.join(scratch.fake, "remote.log")
        send.wait_for(lambda: os.path.exists(remote_log) and peak(remote_log)[1] >= 45, timeout=120,
                      what="45 deliveries started")
        time.sleep(0.5)                   # room for a 46th, which must not start
        assert peak(remote_log) == (45, 45)
        open(hold, "w").close()
        send.wait_line(r"^end msg \d+$", timeout=120)
        reports = [ln for ln in send.lines() if re.match(r"delivery \d+: ", ln)]
        assert len(reports) == 100 and all(": success: " in ln for ln in reports), reports
        assert send.stop() == 0
        assert len(scratch.mail()) == 100 and scratch.queue_files() == []
    finally:
        scratch.cleanup()


def test_the_layout_check_at_start_holds_no_listing_of_todo(scratch):
    """qmail-send's first check (is todo/ or intd/ split, as big-todo makes them?) listed all of
    todo/ and intd/ as DirEntry objects to find one subdirectory: 10,000 messages waiting for
    qmail-todo cost 4.5 MB at start, 50,000 of them 22 MB. It now reads the entries as they come."""
    import tracemalloc
    for msgid in range(1000, 11000):
        intd = layout.intd_path(scratch.home, msgid)
        Path(intd).write_bytes(b"u0\0p1\0Falice@localhost\0Tjoe@localhost\0")
        os.link(intd, layout.todo_path(scratch.home, msgid))
    tracemalloc.start()
    try:
        assert layout.foreign_layout(scratch.home) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    os.mkdir(os.path.join(scratch.home, "queue", "todo", "7"))
    assert layout.foreign_layout(scratch.home) == "queue/todo/7 is a directory: the queue was made with big-todo"


def test_start_up_work_is_a_few_stats_per_message(scratch, monkeypatch):
    """pqstart() on 2,000 preprocessed messages: each subdirectory of info/ listed once, and
    per message info/, todo/, mess/ (not in qmail: a finished message's leftovers,
    docs/qmail-send.md "After a power loss") and the two channel files looked at once
    (qmail-send.c's pqadd()); every message queued on its channel once, at its channel file's mtime."""
    count = 2000
    ids = hand_queue(scratch.home, count, 1)
    later = time.time() + 3600
    for msgid in ids:
        os.utime(layout.remote_path(scratch.home, msgid), (later, later))
    sched = scheduler(scratch)
    stats, listings = [], []
    real_stat, real_listdir = os.stat, os.listdir
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: stats.append(path) or real_stat(path, *a, **k))
    monkeypatch.setattr(os, "listdir", lambda path=".": listings.append(path) or real_listdir(path))
    sched.pqstart(time.time())
    monkeypatch.undo()
    assert len(listings) == layout.SPLIT
    assert len(stats) == 5 * count, len(stats)
    remote = sched.channels[1]
    assert sorted(m for _, m in remote.pq) == ids and {int(t) for t, _ in remote.pq} == {int(later)}
    assert not sched.channels[0].pq and not sched.pqdone
