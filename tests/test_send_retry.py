"""Retries on qmail's schedule, queuelifetime, SIGALRM, SIGTERM persistence (QMAILPY_TIMESCALE shortens time)."""
import math
import os
import re
import signal

from test_send_support import Send, inject, scratch  # noqa: F401 (scratch: fixture)

MSG = b"Subject: retry\n\nbody\n"
SCALE = 400.0            # 100 virtual seconds = 0.25 s
LAG = 0.2                # real seconds between a pass starting and the fake qmail-local's log line


def birth(scratch, msgid):
    return os.stat(os.path.join(scratch.home, "queue", "info", str(msgid % 23), str(msgid))).st_mtime


def test_deferral_follows_nextretry_then_lifetime_bounce(scratch):
    scratch.control("queuelifetime", "1000")          # 2.5 s at this scale
    msgid = inject(scratch.home, MSG, "alice@localhost", ["defer@localhost"])
    send = Send(scratch, QMAILPY_TIMESCALE=str(SCALE))
    send.wait_line(r"^info msg %d" % msgid)
    born = send.wait_for(lambda: os.path.exists(os.path.join(scratch.home, "queue", "info", str(msgid % 23),
                                                             str(msgid))) and birth(scratch, msgid))
    send.wait_line(r"^end msg %d$" % msgid, timeout=20)
    send.wait_for(lambda: scratch.mail("alice@localhost"), what="the bounce")
    assert send.stop() == 0
    tries = [t for t, _, rcpt, _ in scratch.local_log() if rcpt == "defer@localhost"]

    def due(attempt):
        """qmail's nextretry() for a pass started at `attempt`: birth + (isqrt(age) + 10)^2."""
        age = max(int((attempt - born) * SCALE), 0)
        return born + (math.isqrt(age) + 10) ** 2 / SCALE

    # the fake logs a little after the pass that started it computed the retry time
    for prev, cur in zip(tries, tries[1:]):
        assert due(prev - LAG) - 0.02 <= cur <= due(prev) + 0.6, (tries, born)
    virtual = [(t - born) * SCALE for t in tries]
    assert virtual[0] < 100 and 100 <= virtual[1] < 400 and len(tries) >= 4, virtual
    assert virtual[-2] <= 1000 < virtual[-1], virtual      # one more attempt once dying, then bounce
    lines = send.lines()
    deferrals = [ln for ln in lines if re.match(r"delivery \d+: deferral: Temporary_trouble", ln)]
    assert len(deferrals) == len(tries) - 1
    assert any(ln.endswith("failure: Temporary_trouble,_try_later._(#4.3.0)/I'm_not_going_to_try_again;"
                           "_this_message_has_been_in_the_queue_too_long./") for ln in lines), lines
    [bounce] = scratch.mail("alice@localhost").values()
    assert (b"<defer@localhost>:\nTemporary trouble, try later. (#4.3.0)\n"
            b"I'm not going to try again; this message has been in the queue too long.\n\n") in bounce


def test_sigterm_persists_retry_time_and_sigalrm_retries_now(scratch):
    msgid = inject(scratch.home, MSG, "alice@localhost", ["defer@localhost"])
    send = Send(scratch, QMAILPY_TIMESCALE="1")
    send.wait_line(r"^delivery \d+: deferral")
    local = os.path.join(scratch.home, "queue", "local", str(msgid % 23), str(msgid))
    assert send.stop() == 0
    born = birth(scratch, msgid)
    # next try: birth + (isqrt(age) + 10)^2 with age ~0 -> about birth + 100 s, kept as the mtime
    assert born + 99 <= os.stat(local).st_mtime <= born + 122
    send = Send(scratch, QMAILPY_TIMESCALE="1")
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    assert not any("starting delivery" in ln for ln in send.lines())
    send.proc.send_signal(signal.SIGALRM)
    send.wait_line(r"^starting delivery 1: msg %d to local defer@localhost$" % msgid, timeout=10)
    send.wait_line(r"^delivery 1: deferral")
    assert send.stop() == 0
    assert len(scratch.local_log()) == 2


def test_a_stat_that_fails_names_its_file_and_is_tried_again(scratch):
    """qmail-send.c pqadd(): info/, then todo/, then each channel file is stat()ed, and a
    failure other than 'no such file' logs that file's name ('warning: unable to stat
    remote/15/1234; will try again later') and puts the message in pqfail for SLEEP_SYSFAIL."""
    import shutil
    from qmailpy import clock
    from qmailpy.queue import layout
    from qmailpy.send.channel import Channel
    from qmailpy.send.scheduler import Scheduler

    class Log:
        def __init__(self):
            self.lines = []

        def line(self, text):
            self.lines.append(text)

    msgid = 1234
    for path, data in ((layout.mess_path(scratch.home, msgid), b"body\n"),
                       (layout.info_path(scratch.home, msgid), b"Falice@localhost\0"),
                       (layout.local_path(scratch.home, msgid), b"Tjoe@localhost\0")):
        with open(path, "wb") as f:
            f.write(data)
    remote = os.path.dirname(layout.remote_path(scratch.home, msgid))
    shutil.rmtree(remote)
    open(remote, "w").close()                      # remote/15/1234: ENOTDIR, not ENOENT
    log = Log()
    sched = Scheduler(scratch.home, clock.Clock(1), log, None, [Channel(0, -1, -1, 10), Channel(1, -1, -1, 20)],
                      None, None)
    sched.pqadd(msgid, 1000.0)
    todo = os.path.join(scratch.home, "queue", "todo")
    os.rmdir(todo)
    open(todo, "w").close()                        # todo/1234: ENOTDIR too
    sched.pqadd(msgid, 1000.0)
    assert log.lines == ["warning: unable to stat remote/15/1234; will try again later",
                         "warning: unable to stat todo/1234; will try again later"]
    assert sched.pqfail == [(1123.0, msgid), (1123.0, msgid)]
    assert not sched.channels[0].pq and not sched.pqdone


def test_an_info_subdirectory_it_cannot_read_is_read_again_not_skipped(scratch):
    """qmail-send.c pqstart() reads info/ with readsubdir and pausedir(): a subdirectory that
    cannot be opened is logged ('alert: unable to opendir info/5, sleeping...') and opened again
    10 s later. Skipping it left its messages unscheduled, without a word, until a restart."""
    from qmailpy.addr.rewrite import Rewriter
    from qmailpy.proto import cleanwire
    from qmailpy.queue import layout
    from qmailpy.send.todo import preprocess
    from test_send_support import queue_message

    class Cleaner:
        def request_many(self, kind, msgids):
            return [cleanwire.OK for _ in msgids]

    msgid = int(queue_message(scratch.home).split("/")[1])
    _, done = preprocess(scratch.home, msgid, Rewriter([b"localhost"], [], [], b"localhost"), Cleaner())
    assert done
    for path in (layout.todo_path(scratch.home, msgid), layout.intd_path(scratch.home, msgid)):
        os.unlink(path)                            # what qmail-clean does after qmail-todo's work
    subdir = os.path.dirname(layout.info_path(scratch.home, msgid))
    os.rename(subdir, subdir + ".aside")
    open(subdir, "w").close()                      # info/<n>: ENOTDIR for now
    send = Send(scratch, QMAILPY_TIMESCALE="20")  # pausedir's 10 s: 0.5 s
    send.wait_line(r"^alert: unable to opendir info/%d, sleeping\.\.\.$" % (msgid % 23))
    os.unlink(subdir)
    os.rename(subdir + ".aside", subdir)
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0
    assert [rcpt for _, _, rcpt, _ in scratch.local_log()] == ["joe@localhost"]


class SteppedClock:
    """qmailpy.clock.Clock with its readings set by the test: pass() lets time go by, a
    change of `wall` alone is a step of the wall clock (NTP, a VM snapshot)."""

    def __init__(self, now):
        from qmailpy import clock
        self.real, self.wall, self.mono = clock.Clock(1), now, 1000.0

    def now(self):
        return self.wall

    def elapsed(self):
        return self.mono

    def pass_(self, seconds):
        self.wall += seconds
        self.mono += seconds

    def __getattr__(self, name):
        return getattr(self.real, name)


def stepped_scheduler(scratch, msgid, born, retry, now):
    """A Scheduler over one message (info born at `born`, remote file retried at `retry`),
    its queues built at `now`."""
    import types
    from qmailpy.queue import layout
    from qmailpy.send.channel import Channel
    from qmailpy.send.scheduler import Scheduler
    for path, data, when in ((layout.mess_path(scratch.home, msgid), b"body\n", born),
                             (layout.info_path(scratch.home, msgid), b"Falice@localhost\0", born),
                             (layout.remote_path(scratch.home, msgid), b"Tbob@example.net\0", retry)):
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (when, when))
    clk = SteppedClock(now)
    channels = [Channel(0, -1, -1, 10), Channel(1, -1, -1, 20)]
    for ch in channels:
        ch.set_concurrency(ch.limit)
    sched = Scheduler(scratch.home, clk, None, types.SimpleNamespace(lifetime=604800), channels, None, None)
    sched.pqstart(sched.now())
    return sched, clk, channels[1]


def test_a_clock_stepped_back_keeps_every_queued_wait_not_the_wall_clock_times(scratch):
    """qmail-send queues absolute times: when NTP steps the clock back two days, a retry due
    in 5 minutes, a stat failure's 123 s and the 76431 s cleanup all wait two more days (until
    the clock catches up). Each queued time moves back by the step, so each wait keeps its
    length; a job whose pass is open when the clock steps keeps its wait too."""
    born = 1_700_000_000
    sched, clk, remote = stepped_scheduler(scratch, 1234, born, born + 400, born + 100)
    assert remote.next_time() == born + 400
    sched.next_cleanup = born + 100 + 76431
    sched.pqfail.append((born + 100 + 123, 4321))
    clk.wall = born + 100 - 2 * 86400                # the step
    now = sched.now()
    assert remote.next_time() == now + 300
    assert sched.pqfail == [(now + 123, 4321)] and sched.next_cleanup == now + 76431
    clk.pass_(300)
    assert sched.open_pass(remote, sched.now()) and remote.pass_.job.msgid == 1234
    job, opened = remote.pass_.job, clk.wall
    assert job.retry == opened + 400                 # born ahead of the clock: age 0
    clk.wall -= 86400                                # stepped back again while the pass is open
    sched.now()
    assert job.retry == opened + 400 - 86400


def test_a_step_back_while_qmail_send_sleeps_is_measured_by_elapsed_time(scratch):
    """The loop sleeps up to a day in select(); a step back of two days during an hour's
    sleep is a step of two days, not of two days less the hour: the retry due at the end of
    that hour is due when the loop wakes."""
    born = 1_700_000_000
    sched, clk, remote = stepped_scheduler(scratch, 1234, born, born + 3600, born)
    clk.pass_(3600)
    clk.wall -= 2 * 86400
    now = sched.now()
    assert remote.next_time() == now and remote.due(now) == 1234


def test_a_suspended_host_is_no_step_of_the_wall_clock(scratch, monkeypatch):
    """While the host sleeps (suspend, a paused VM) the wall clock goes on, and so does
    CLOCK_BOOTTIME, but time.monotonic() (CLOCK_MONOTONIC) stands still: read against it, two
    days asleep were a forward step of two days, the retry due during the sleep moved two
    days later (waiting its whole hour again after the wake) and the message lived two days
    past queuelifetime. The real Clock's elapsed time counts the sleep: no step is seen."""
    import time
    from qmailpy import clock
    born = 1_700_000_000
    sched, _, remote = stepped_scheduler(scratch, 1234, born, born + 3600, born + 100)
    reading = {"wall": born + 100.0, "mono": 5000.0, "boot": 9000.0}
    real_gettime = time.clock_gettime
    monkeypatch.setattr(time, "time", lambda: reading["wall"])
    monkeypatch.setattr(time, "monotonic", lambda: reading["mono"])
    monkeypatch.setattr(time, "clock_gettime",
                        lambda which: reading["boot"] if which == time.CLOCK_BOOTTIME else real_gettime(which))
    sched.clock, sched.last_read = clock.Clock(1), None
    sched.now()
    reading["wall"] += 2 * 86400                     # asleep two days: the wall clock and
    reading["boot"] += 2 * 86400                     # CLOCK_BOOTTIME go on, CLOCK_MONOTONIC not
    now = sched.now()
    assert remote.next_time() == born + 3600 and remote.due(now) == 1234
    assert sched.stepped == 0.0


def test_a_clock_jumping_forward_for_a_while_bounces_nothing_for_queuelifetime(scratch):
    """qmail judges queuelifetime by the wall clock alone: while NTP has it eight days ahead
    for a while, every message whose delivery is deferred then bounces ('in the queue too
    long'), two-day-old ones too. The forward step seen since start is not counted as age,
    and the retry set during the jump waits its length after the clock comes back; a message
    older than queuelifetime all the same is dying."""
    born = 1_700_000_000
    sched, clk, remote = stepped_scheduler(scratch, 1234, born, born + 2 * 86400, born + 2 * 86400)
    clk.wall += 8 * 86400                            # the jump
    now = sched.now()
    assert sched.open_pass(remote, now)
    job = remote.pass_.job
    assert not job.dying and job.retry > now
    wait = job.retry - now
    clk.wall -= 8 * 86400                            # back
    now = sched.now()
    assert job.retry == now + wait
    clk.pass_(6 * 86400)
    sched.now()
    assert sched.dying(born, clk.wall)


def test_a_retry_time_persisted_ahead_of_the_clock_waits_at_most_qmails_longest_wait(scratch):
    """At start the channel file's mtime is the retry time: one persisted before the clock was
    stepped back by 30 days waited those 30 days (and queuelifetime never came). No wait of
    qmail's schedule for a message within queuelifetime is longer than
    (isqrt(lifetime) + 20)^2 - isqrt(lifetime)^2 (remote, about 8.7 hours); a later one is
    that long."""
    born = 1_700_000_000
    now = born + 3600
    sched, _, remote = stepped_scheduler(scratch, 1234, born, now + 30 * 86400, now)
    longest = (math.isqrt(604800) + 20) ** 2 - math.isqrt(604800) ** 2
    assert remote.next_time() == now + longest
    sched, _, remote = stepped_scheduler(scratch, 1234, born, now + longest - 5, now)
    assert remote.next_time() == now + longest - 5


def test_a_message_born_ahead_of_a_clock_stepped_back_is_retried_at_its_first_interval(scratch):
    """nextretry() with birth > now: qmail's n = 0 gives birth + chanskip^2, days away when
    the clock went back days; counted from now instead, as a message of age 0."""
    born = 1_700_000_000
    now = born - 3 * 86400
    sched, _, remote = stepped_scheduler(scratch, 1234, born, now, now)
    assert sched.open_pass(remote, now)
    assert remote.pass_.job.retry == now + 400 and not remote.pass_.job.dying


def test_qmail_todo_and_qmail_clean_periodic_work_is_not_held_by_a_clock_stepped_back(tmp_path):
    """qmail-todo scans todo/ every SLEEP_TODO (1500 s; the net under a lost trigger) and
    qmail-clean looks for debris every SLEEP_CLEANUP: both kept a wall-clock time, so after a
    step back of two days neither ran for two days. Neither waits longer than its interval."""
    from qmailpy import clock
    from qmailpy.clean.main import Server
    from qmailpy.send.todo_main import Todo
    born = 1_700_000_000
    clk = SteppedClock(born)
    todo = Todo.__new__(Todo)
    todo.clock, todo.next_scan = clk, born + clock.SLEEP_TODO
    assert todo.scan_wait(born) == clock.SLEEP_TODO
    clk.wall = born - 2 * 86400
    assert todo.scan_wait(clk.wall) == clock.SLEEP_TODO
    assert todo.scan_wait(clk.wall + clock.SLEEP_TODO) == 0
    home = str(tmp_path / "qmail")
    from qmailpy.queue import layout
    layout.create_queue(home)
    server = Server(home, clk)
    clk.wall = born
    server.stale()
    assert server.next_stale == born + clock.SLEEP_CLEANUP
    clk.wall = born - 2 * 86400
    server.stale()
    assert server.next_stale == clk.wall + clock.SLEEP_CLEANUP
    clk.wall += clock.SLEEP_CLEANUP
    server.stale()                                   # one interval later: done, due again later
    assert server.next_stale == clk.wall + clock.SLEEP_CLEANUP
