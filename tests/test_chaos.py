"""Chaos: the whole pipeline under SIGKILL at random moments.

A real qmail home (tests/test_e2e_support.World) with qmail-queued and qmail-send; 300
small messages (each with its number in its Message-ID, its body and its envelope sender)
go in through qmail-queued (the queue client qmail-smtpd uses) and bin/qmail-queue, to
Maildir recipients and to an aiosmtpd sink on 127.0.0.1 (smtproutes; one recipient in ten
is refused there, so bounces go to the senders, at the sink too), while a killer sends
SIGKILL, at seeded random moments, to one of: qmail-send, qmail-todo, a qmail-clean,
qmail-lspawn, qmail-rspawn, a qmail-local or qmail-remote child, qmail-queued. What it
kills is started again as supervise would: qmail-send (and with it all its helpers: it
dies, as qmail's does, when it loses one) whenever it has exited, qmail-queued at once.

At the end every message whose insertion was acknowledged (exit 0) has reached each of
its recipients (a refused one: its sender has the bounce); an unacknowledged message
reached all its recipients or none; no delivery but the refused ones failed; and the
queue is empty but for what a kill leaves and the stale-file rule removes (mess/ and
intd/ of insertions that never committed, or of messages whose end came between
`end msg` and qmail-clean's answer). Duplicates: a recipient has a message more than
once only as often as qmail-send's logs show deliveries of it whose success was never
reported (no report: the spawn or qmail-send was killed; a deferral: the child was
killed) -- the one duplicate qmail allows. The logs name a message by its queue id;
a remote recipient carries the message's number, a local one is matched through the
"info msg" line, which is lost when qmail-send dies between qmail-todo's line and its
reading of it: such deliveries count for their mailbox, not for one message. A bounce
may go out once more for each qmail-send that died (qmail's bounce re-injection).

CHAOS_SEED=<n> replays a run's choices (what is killed and when, the recipients, and the
spawn mode: an odd seed execs bin/qmail-local and qmail-remote, an even one forks them;
the timing of the processes themselves is the machine's): the seed is printed on failure.
"""
import collections
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qmailpy import exitcodes as X
from qmailpy.proto import qq
from qmailpy.queue import clean, layout, sockclient
from smtpsink import Sink
from test_e2e_support import DOMAIN, World, wait_until

MESSAGES = 300
KILLS = 14
USERS = ("u0", "u1", "u2")
REMOTE = "sink.example"
BOUNCES = "bounces.sink.example"      # the senders' domain: bounces go to the sink too
TARGETS = ("send", "todo", "clean", "lspawn", "rspawn", "local", "remote", "queued")
SEED = int(os.environ.get("CHAOS_SEED", "0")) or random.SystemRandom().randrange(1, 10 ** 6)
SPAWN = ("fork", "exec")[SEED % 2]         # how qmail-lspawn/-rspawn run their children
SCALE = "1000"                 # QMAILPY_TIMESCALE: a deferral is tried again within a second


def cmdline(pid):
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    except OSError:
        return []


def children(pid):
    try:
        return [int(p) for p in Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()]
    except OSError:
        return []


def helper(send, name):
    """The pids of qmail-send's helpers called qmail-<name>."""
    return [pid for pid in children(send.proc.pid)
            if any(arg.endswith(b"qmail-" + name.encode()) for arg in cmdline(pid)[:3])]


class Supervisor(threading.Thread):
    """Starts qmail-send again whenever it has exited (as supervise does)."""

    def __init__(self, world):
        super().__init__(daemon=True)
        self.world, self.sends, self.done = world, [], threading.Event()
        self.lock = threading.Lock()
        self.start_send()

    def start_send(self):
        with self.lock:
            self.sends.append(self.world.send(QMAILPY_TIMESCALE=SCALE))

    @property
    def send(self):
        return self.sends[-1]

    def run(self):
        while not self.done.is_set():
            if self.send.proc.poll() is not None:
                time.sleep(0.2)
                if not self.done.is_set():
                    self.start_send()
            time.sleep(0.05)


def recipients_of(i, rng):
    rcpts = set()
    for _ in range(rng.choice((1, 1, 2, 3))):
        if rng.random() < 0.5:
            rcpts.add("%s@%s" % (rng.choice(USERS), DOMAIN))
        else:
            rcpts.add("m%d.%d@%s" % (i, rng.randrange(3), REMOTE))
    if rng.random() < 0.1:
        rcpts.add("bad%d@%s" % (i, REMOTE))     # refused: a bounce to the sender
    return sorted(rcpts)


def expected(plan, i):
    """Where message i must arrive: its recipients but the refused one, whose place the
    bounce to its sender takes."""
    return sorted(r if not r.startswith("bad") else sender_of(i) for r in plan[i])


def message_of(i):
    return b"Subject: chaos %d\nMessage-ID: <chaos-%d@e2e.example>\n\nchaos-id: %d\n" % (i, i, i)


def sender_of(i):
    return "chaos%d@%s" % (i, BOUNCES)


def queue_by_exec(world, msg, sender, rcpts):
    """bin/qmail-queue (the installed launcher): its exit code."""
    m_r, m_w = os.pipe()
    e_r, e_w = os.pipe()
    p = subprocess.Popen([os.path.join(world.home, "bin", "qmail-queue")], stdin=m_r, stdout=e_r,
                         stderr=subprocess.DEVNULL, env=world.env())
    os.close(m_r)
    os.close(e_r)
    for fd, data in ((m_w, msg), (e_w, qq.encode(sender.encode(), [r.encode() for r in rcpts]))):
        try:
            os.write(fd, data)
        except OSError:
            pass
        os.close(fd)
    return p.wait(timeout=60)


def queue_by_socket(world, msg, sender, rcpts):
    job = sockclient.SocketJob(world.home, 30)
    job.write(msg)
    return job.finish(sender.encode(), [r.encode() for r in rcpts])


def delivered(world, sink):
    """Counter of (message number, recipient) over the Maildirs and the sink; a bounce
    counts for (message number, sender)."""
    got = collections.Counter()
    for user in USERS:
        new = world.maildir(user) / "new"
        for p in new.iterdir() if new.exists() else ():
            data = p.read_bytes()
            i = int(re.search(rb"^Message-ID: <chaos-(\d+)@", data, re.M).group(1))
            assert data.endswith(b"\n\nchaos-id: %d\n" % i), data
            got[i, "%s@%s" % (user, DOMAIN)] += 1
    for m in list(sink.messages):
        assert m.accepted and len(m.rcpt_tos) == 1, m
        i = int(re.search(rb"^Message-ID: <chaos-(\d+)@", m.data, re.M).group(1))
        if m.mail_from == "<>":                  # a bounce: the header of the message, no body
            assert m.rcpt_tos[0] == sender_of(i) and b"\r\n<bad%d@%s>:\r\n" % (i, REMOTE.encode()) in m.data, m
        else:
            assert m.data.endswith(b"\r\n\r\nchaos-id: %d\r\n" % i), m
        got[i, m.rcpt_tos[0]] += 1
    return got


def attempts(sends):
    """From qmail-send's logs, per (message number, recipient): (successes, deliveries whose
    success was never reported: no report at all, or a deferral)."""
    owner = {}                                  # queue id -> message number (ids are reused)
    success, unsure, failed = collections.Counter(), collections.Counter(), set()
    local_prefix = DOMAIN + "-"
    for send in sends:
        running = {}
        for line in send.lines():
            m = re.match(r"info msg (\d+): bytes \d+ from <(?:chaos(\d+)@.*)?> ", line)
            if m:
                owner[int(m.group(1))] = int(m.group(2)) if m.group(2) else None
                continue
            m = re.match(r"starting delivery (\d+): msg (\d+) to (local|remote) (\S+)$", line)
            if m:
                rcpt = m.group(4)
                if m.group(3) == "local" and rcpt.startswith(local_prefix):
                    rcpt = rcpt[len(local_prefix):]
                if m.group(3) == "remote":          # m<n>.<k>@, bad<n>@, chaos<n>@ (a bounce)
                    number = int(re.match(r"[a-z]+(\d+)[.@]", rcpt).group(1))
                else:   # None: qmail-send was killed between qmail-todo's "info msg" and its
                    number = owner.get(int(m.group(2)))   # reading it; the next took info/ as it was
                running[int(m.group(1))] = (number, rcpt)
                continue
            m = re.match(r"end msg (\d+)$", line)
            if m:                                   # logged before info/ goes: the id may come back
                owner.pop(int(m.group(1)), None)
                continue
            m = re.match(r"delivery (\d+): (success|deferral|failure): ", line)
            if m:
                key = running.pop(int(m.group(1)))
                if m.group(2) == "failure":
                    failed.add(key)
                else:
                    (success if m.group(2) == "success" else unsure)[key] += 1
        for key in running.values():
            unsure[key] += 1
    return success, unsure, failed


class SlowSink(Sink):
    """Answers the final dot 0.1 s after it has the message: a kill of qmail-remote or its
    spawn in between is a delivery made whose success was never reported."""

    async def handle_DATA(self, server, session, envelope):
        import asyncio
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(0.1)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bad"):
            return "550 5.1.1 no such user"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def sink():
    s = SlowSink().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def world():
    w = World(spawn=SPAWN)
    try:
        yield w
    finally:
        w.cleanup()


def test_chaos(world, sink):
    try:
        run_chaos(world, sink)
    except BaseException:
        print("\nchaos: replay with CHAOS_SEED=%d" % SEED)
        raise


def run_chaos(world, sink):
    rng = random.Random(SEED)
    for user in USERS:
        world.adduser(user)
    world.control("smtproutes", "%s:127.0.0.1:%d\n%s:127.0.0.1:%d" % (REMOTE, sink.port, BOUNCES, sink.port))
    world.control("concurrencylocal", "5")
    world.control("concurrencyremote", "10")
    plan = {i: recipients_of(i, rng) for i in range(MESSAGES)}
    codes = {}
    sup = Supervisor(world)
    sup.start()
    sup.send.wait_line(r"^status: local 0/5 remote 0/10$")
    stop = threading.Event()

    def client(numbers, by_exec):
        for i in numbers:
            if stop.is_set():
                return
            try:
                codes[i] = (queue_by_exec if by_exec else queue_by_socket)(world, message_of(i), sender_of(i), plan[i])
            except Exception as e:          # noqa: BLE001  (reported below)
                codes[i] = repr(e)
            time.sleep(0.12)           # spread over the kills

    clients = [threading.Thread(target=client, args=(range(k, MESSAGES, 4), k == 0), daemon=True)
               for k in range(4)]
    kills = []
    t0 = time.monotonic()
    for t in clients:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.2))
            target = rng.choice(TARGETS)
            kills.append((round(time.monotonic() - t0, 2), target, kill(world, sup, target, rng)))
        for t in clients:
            t.join(120)
        assert not any(t.is_alive() for t in clients)
        acked = {i for i, code in codes.items() if code == X.QQ_OK}
        assert set(codes.values()) <= {X.QQ_OK, X.QQ_CONN_REJECTED, X.QQ_COMM_FAILED}, codes
        want = {(i, r) for i in acked for r in expected(plan, i)}

        def settled():
            q = Path(world.home, "queue")
            busy = [p for d in ("info", "local", "remote", "todo", "bounce") for p in (q / d).rglob("*") if p.is_file()]
            return not busy and want <= set(delivered(world, sink))
        wait_until(settled, timeout=90, what="every acknowledged message delivered, kills %s" % kills,
                   interval=0.2)
        sup.done.set()
        sup.join(10)
        if any(line.endswith(" exitasap") for line in sup.send.lines()):
            sup.send.proc.wait(60)                  # on its way out after a lost helper
        if sup.send.proc.poll() is not None:        # the last kill was the last word
            sup.start_send()
        send = sup.send
        send.wait_line(r"^status: local 0/5 remote 0/10$", timeout=30)   # up (its SIGTERM handler too)
        assert send.stop() == 0, send.tail()
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        sup.done.set()

    got = delivered(world, sink)
    success, unsure, failed = attempts(sup.sends)
    lines = [ln for send in sup.sends for ln in send.lines() + ["-- qmail-send exited"]]
    assert {rcpt[:3] for _, rcpt in failed} <= {"bad"}, failed     # only the refused recipients
    missing = sorted(want - set(got))
    assert not missing, (missing[:10], kills)
    for i in set(codes) - acked:             # all or none
        reached = [r for r in expected(plan, i) if got[i, r]]
        assert reached in ([], expected(plan, i)), (i, plan[i], reached)
    assert not {k for k in got if k[1] not in expected(plan, k[0])}
    # a bounce is queued again only when a qmail-send died before it noted the first one
    assert max([n for (i, r), n in got.items() if r == sender_of(i)] or [0]) <= len(sup.sends)
    # a success is reported twice only when qmail-send died between its log line and the D mark
    sendkills = sum(1 for _, target, pid in kills if target == "send" and pid)
    twice = {k: n for k, n in success.items() if k[0] is not None and n > 1 + sendkills}
    assert not twice, ("reported delivered more than once", twice, kills)
    # Every copy on disk was made by one qmail-local or qmail-remote run, which qmail-send logged
    # as a "starting delivery" first: a copy beyond its message's own logged attempts must be
    # one of the attempts logged for its recipient with the message's number lost (qmail-send
    # killed between qmail-todo's "info msg" and reading it: the next one took info/ as it
    # was), whether that attempt's success was reported or not. Each such attempt makes one copy.
    short = collections.Counter()
    for k, n in got.items():
        short[k[1]] += max(0, n - success[k] - unsure[k])
    extra = {r: (n, success[None, r], unsure[None, r]) for r, n in short.items()
             if n > success[None, r] + unsure[None, r]}
    assert not extra, ("copies no logged delivery explains", extra, kills,
                       [ln for ln in lines if any(r in ln for r in extra)])
    # the queue: nothing but what a kill leaves, and qmail-send's stale-file rule removes that
    leftover = world.queue_files()
    assert not [f for f in leftover if not f.startswith(("mess/", "intd/", "pid/"))], leftover
    clean.clean_stale(world.home, time.time() + 2 * layout.OSSIFIED)
    assert world.queue_files() == [], world.queue_files()
    dups = sum(n - 1 for n in got.values() if n > 1)
    print("\nchaos seed %d (%s): %d messages (%d acknowledged) in %.1f s, %d duplicate deliveries "
          "(each after a killed delivery), %d unreported deliveries, %d qmail-send starts, kills %s"
          % (SEED, SPAWN, len(codes), len(acked), elapsed, dups, sum(unsure.values()), len(sup.sends), kills))


def kill(world, sup, target, rng):
    """SIGKILL one process of the target kind (waiting up to 3 s for one to exist); its pid or None."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        send = sup.send
        if target == "queued":
            world.queued.kill()
            world.start_queued()
            return world.queued.proc.pid
        if target == "send":
            pids = [send.proc.pid] if send.proc.poll() is None else []
        elif target in ("local", "remote"):
            pids = [c for p in helper(send, "lspawn" if target == "local" else "rspawn") for c in children(p)]
        else:
            pids = helper(send, target)
        if pids:
            pid = rng.choice(sorted(pids))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if target == "send":
                send.proc.wait()
            return pid
        time.sleep(0.002)
    return None
