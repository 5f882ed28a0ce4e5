"""Retries on qmail's schedule, queuelifetime, SIGALRM, SIGTERM persistence (QMAILPY_TIMESCALE shortens time)."""
import math
import os
import re
import signal

import pytest

from test_send_support import Scratch, Send, inject

MSG = b"Subject: retry\n\nbody\n"
SCALE = 400.0            # 100 virtual seconds = 0.25 s
LAG = 0.2                # real seconds between a pass starting and the fake qmail-local's log line


@pytest.fixture
def scratch(tmp_path):
    s = Scratch(tmp_path)
    yield s
    s.cleanup()


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
    for path, data in ((layout.info_path(scratch.home, msgid), b"Falice@localhost\0"),
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
