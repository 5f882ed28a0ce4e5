"""qmail-send's scheduler when a channel file, a report or the disk goes wrong (scheduler.py).

qmail-send.c's pass_dochan(), del_dochan() and job_close(): a channel file that cannot be
opened, read, marked or unlinked, a report for no delivery or with an unknown kind, each
logs qmail's warning and leaves the recipient to be delivered again later (twice rather
than never). Driven in-process, as the loop drives it; faults from real files where they
can be made (a directory in place of a file), a patched os call where they cannot.
"""
import os
from pathlib import Path

import pytest

from qmailpy.proto.spawnwire import Report
from qmailpy.queue import layout
from test_send_finish_faults import LATER, MSGID, NOW, in_place_of, failing_unlink, queue_files
from test_send_finish_faults import scheduler as finish_scheduler
from test_send_support import scratch  # noqa: F401 (scratch: fixture)

LOCAL, REMOTE = 0, 1


def queued(home, local=b"Tjoe@localhost\0", remote=None):
    """A message as qmail-todo leaves it: mess/, info/ and its channel files."""
    Path(layout.mess_path(home, MSGID)).write_bytes(b"Subject: x\n\nbody\n")
    Path(layout.info_path(home, MSGID)).write_bytes(b"Falice@localhost\0")
    os.utime(layout.info_path(home, MSGID), (NOW, NOW))
    for path, data in ((layout.local_path(home, MSGID), local), (layout.remote_path(home, MSGID), remote)):
        if data is not None:
            Path(path).write_bytes(data)
            os.utime(path, (NOW, NOW))            # due at NOW


def scheduler(scratch):
    """finish's test scheduler with the concurrencies of the controls (local 10, remote 20)."""
    sched = finish_scheduler(scratch)
    for ch, wanted in zip(sched.channels, sched.config.concurrency):
        ch.set_concurrency(wanted)
    return sched


def started(scratch, **files):
    """A scheduler that has started the delivery to joe@localhost (delivery 1, slot 0)."""
    queued(scratch.home, **files)
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    sched.pass_do(NOW)
    assert sched.log.lines[-2:] == ["starting delivery 1: msg 1234 to local joe@localhost",
                                    "status: local 1/10 remote 0/20"]
    sched.log.lines.clear()
    return sched


def test_a_channel_file_that_cannot_be_read_is_tried_again(scratch):
    queued(scratch.home)
    in_place_of(layout.local_path(scratch.home, MSGID), "dir")
    os.utime(layout.local_path(scratch.home, MSGID), (NOW, NOW))
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    sched.pass_do(NOW)
    assert sched.log.lines == ["warning: trouble opening local/15/1234; will try again later"]
    assert sched.channels[LOCAL].pq == [(LATER, MSGID)] and sched.jobs_open == 0


def test_info_that_cannot_be_read_at_a_pass_is_tried_again(scratch):
    queued(scratch.home)
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    Path(layout.info_path(scratch.home, MSGID)).write_bytes(b"")
    sched.pass_do(NOW)
    assert sched.log.lines == ["warning: trouble opening local/15/1234; will try again later"]
    assert sched.channels[LOCAL].pq == [(LATER, MSGID)] and not sched.channels[LOCAL].outbuf


def test_an_unknown_record_ends_the_pass_and_the_message_waits_for_its_retry(scratch):
    """qmail: 'warning: unknown record type in local/15/1234!'; the records before it were
    started, the rest wait for the message's next retry (birth + 100 s), no spin."""
    queued(scratch.home, local=b"Tjoe@localhost\0Xjunk\0Tann@localhost\0")
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    sched.pass_do(NOW)
    assert sched.log.lines == ["starting delivery 1: msg 1234 to local joe@localhost",
                               "status: local 1/10 remote 0/20",
                               "warning: unknown record type in local/15/1234!"]
    sched.on_report(sched.channels[LOCAL], Report(0, b"K", b"did_0+0+1/"), NOW)
    assert sched.channels[LOCAL].pq == [(NOW + 100, MSGID)]
    assert Path(layout.local_path(scratch.home, MSGID)).read_bytes() == b"Djoe@localhost\0Xjunk\0Tann@localhost\0"


def test_a_report_for_no_running_delivery_is_ignored(scratch):
    sched = started(scratch)
    sched.on_report(sched.channels[LOCAL], Report(7, b"K", b"did_0+0+1/"), NOW)
    assert sched.log.lines == ["warning: internal error: delivery report out of range"]
    assert list(sched.channels[LOCAL].active) == [0]
    assert Path(layout.local_path(scratch.home, MSGID)).read_bytes() == b"Tjoe@localhost\0"


def test_a_mangled_report_defers_the_recipient(scratch):
    """qmail's del_dochan(): a kind other than K, Z, D is 'report mangled, will defer': the
    record stays T, no bounce, the message waits for its next retry."""
    sched = started(scratch)
    sched.on_report(sched.channels[LOCAL], Report(0, b"?", b"whatever"), NOW)
    assert sched.log.lines == ["delivery 1: report mangled, will defer", "status: local 0/10 remote 0/20"]
    assert Path(layout.local_path(scratch.home, MSGID)).read_bytes() == b"Tjoe@localhost\0"
    assert sched.channels[LOCAL].pq == [(NOW + 100, MSGID)]
    assert not os.path.exists(layout.bounce_path(scratch.home, MSGID))


def test_a_record_that_cannot_be_marked_done_is_delivered_twice_not_lost(scratch, monkeypatch):
    """qmail: 'trouble marking local/15/1234; message will be delivered twice!'. The record stays
    T; while the channel file stays (another recipient deferred) the recipient gets the message
    again at the next retry. (Had every recipient been done, the file is unlinked, as in qmail:
    that success was a success.)"""
    queued(scratch.home, local=b"Tjoe@localhost\0Tann@localhost\0")
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    sched.pass_do(NOW)
    sched.log.lines.clear()

    def pwrite(fd, data, offset):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "pwrite", pwrite)
    sched.on_report(sched.channels[LOCAL], Report(0, b"K", b"did_0+0+1/"), NOW)
    monkeypatch.undo()
    sched.on_report(sched.channels[LOCAL], Report(1, b"Z", b"try_later/"), NOW)
    assert sched.log.lines == ["delivery 1: success: did_0+0+1/",
                               "warning: trouble marking local/15/1234; message will be delivered twice!",
                               "status: local 1/10 remote 0/20",
                               "delivery 2: deferral: try_later/",
                               "status: local 0/10 remote 0/20"]
    assert Path(layout.local_path(scratch.home, MSGID)).read_bytes() == b"Tjoe@localhost\0Tann@localhost\0"
    assert sched.channels[LOCAL].pq == [(NOW + 100, MSGID)] and sched.pqdone == []
    sched.pass_do(NOW + 100)
    assert [ln for ln in sched.log.lines if ln.startswith("starting")] == [
        "starting delivery 3: msg 1234 to local joe@localhost", "starting delivery 4: msg 1234 to local ann@localhost"]


def test_a_finished_channel_file_that_cannot_be_unlinked_is_tried_again(scratch, monkeypatch):
    """Every recipient done but local/ stays: qmail's warning and the pass comes again 123 s
    later (its records are all D: nothing is delivered again), then the message ends."""
    sched = started(scratch)
    local = layout.local_path(scratch.home, MSGID)
    failing_unlink(monkeypatch, local)
    sched.on_report(sched.channels[LOCAL], Report(0, b"K", b"did_0+0+1/"), NOW)
    assert sched.log.lines[1:] == ["warning: unable to unlink local/15/1234; will try again later",
                                   "status: local 0/10 remote 0/20"]
    assert sched.channels[LOCAL].pq == [(LATER, MSGID)] and sched.pqdone == []
    monkeypatch.undo()
    sched.pass_do(LATER)
    assert sched.log.lines[3:] == ["end msg 1234"]
    assert queue_files(scratch) == ["mess/15/1234"]          # qmail-clean's to remove (a fake here)
    assert sched.cleaner.requests == [b"foop/1234"]


def test_the_other_channel_file_that_cannot_be_stat_ed_is_left_to_messdone(scratch):
    """qmail's job_close(): local/ done and unlinked, the stat of remote/ fails: logged, and
    the message goes to messdone(), whose own stat fails and tries again in 123 s (the only
    reason for qmail's HOPEFULLY): no bounce, no end while remote/ may have recipients."""
    sched = started(scratch)
    in_place_of(os.path.dirname(layout.remote_path(scratch.home, MSGID)), "file")
    sched.on_report(sched.channels[LOCAL], Report(0, b"K", b"did_0+0+1/"), NOW)
    sched.pass_do(NOW)
    assert sched.log.lines[1:] == ["warning: unable to stat remote/15/1234", "status: local 0/10 remote 0/20",
                                   "warning: unable to stat remote/15/1234; will try again later"]
    assert sched.pqdone == [(LATER, MSGID)]
    assert os.path.exists(layout.info_path(scratch.home, MSGID))


def test_a_retry_time_that_cannot_be_saved_at_exit_is_logged(scratch, monkeypatch):
    queued(scratch.home)
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)

    def utime(path, times):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(os, "utime", utime)
    sched.pqfinish()
    assert sched.log.lines == ["warning: unable to utime local/15/1234; message will be retried too soon"]


def test_a_message_failed_at_start_up_is_queued_again_123_s_later(scratch):
    """pqadd()'s stat trouble puts the message in pqfail; once the stat works, pass_do()
    queues it (pqfail's retry)."""
    queued(scratch.home)
    remote = os.path.dirname(layout.remote_path(scratch.home, MSGID))
    os.rename(remote, remote + ".aside")
    in_place_of(remote, "file")
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    assert sched.pqfail == [(LATER, MSGID)] and sched.channels[LOCAL].pq == []
    os.unlink(remote)
    os.rename(remote + ".aside", remote)
    sched.channels[LOCAL].set_concurrency(0)
    sched.pass_do(LATER - 1)
    assert sched.pqfail == [(LATER, MSGID)]
    sched.pass_do(LATER)
    assert sched.pqfail == [] and sched.channels[LOCAL].pq == [(NOW, MSGID)]


@pytest.mark.parametrize("twice", ["pqadd", "done_add"])
def test_a_message_is_never_queued_twice(scratch, twice):
    queued(scratch.home)
    sched = scheduler(scratch)
    if twice == "pqadd":
        sched.pqadd(MSGID, NOW)
        sched.pqadd(MSGID, NOW)
        assert len(sched.channels[LOCAL].pq) == 1
    else:
        sched.done_add(MSGID, NOW)
        sched.done_add(MSGID, NOW + 5)
        assert sched.pqdone == [(NOW, MSGID)]

