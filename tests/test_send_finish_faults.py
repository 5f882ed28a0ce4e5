"""qmail-send finishing a message when the disk, qmail-queue or qmail-clean fails (finish.py).

qmail-send.c's messdone()/injectbounce(): every step that fails logs qmail's warning and
the message comes back SLEEP_SYSFAIL (123 s) later, with nothing lost (bounce/ and info/
stay until the step that needs them has succeeded) and nothing done twice that qmail
would not do twice. The scheduler is driven in-process as its loop drives it; the faults
are real files where a file can produce them (a directory in place of a file: ENOTDIR,
EISDIR) and a patched os.unlink where it cannot (root may unlink anything).
"""
import os
import shutil
from pathlib import Path

import pytest

from qmailpy import clock
from qmailpy.ctl.reader import Controls
from qmailpy.proto import cleanwire
from qmailpy.queue import layout
from qmailpy.send import finish
from qmailpy.send.channel import Channel
from qmailpy.send.config import SendConfig
from qmailpy.send.inject import Injector
from qmailpy.send.scheduler import Scheduler
from test_send_support import scratch  # noqa: F401 (scratch: fixture)

MSGID = 1234
SPLIT = MSGID % 23          # 15
NOW = 1000.0
LATER = NOW + clock.SLEEP_SYSFAIL


class Log:
    def __init__(self):
        self.lines = []

    def line(self, text):
        self.lines.append(text)

    qmail = line


class Injection:
    """A bounce whose qmail-queue exits with `code` (trouble: the bounce could not be read)."""
    def __init__(self, pid, code, trouble=False):
        self.pid, self.code, self.trouble = pid, code, trouble

    def finish(self):
        return self.code


class FakeInjector:
    def __init__(self, code=0, trouble=False):
        self.code, self.trouble, self.started = code, trouble, []

    def start(self, chunks, sender, recipient):
        self.started.append((b"".join(chunks), sender, recipient))
        return Injection(100 + len(self.started), self.code, self.trouble)


class Cleaner:
    def __init__(self, answer=cleanwire.OK):
        self.answer, self.requests = answer, []

    def request(self, kind, msgid):
        self.requests.append(kind + b"%d" % msgid)
        return self.answer


def scheduler(scratch, injector=None, cleaner=None):
    sched = Scheduler(scratch.home, clock.Clock(1), Log(), SendConfig(Controls(scratch.home, scratch.env())),
                      [Channel(0, -1, -1, 10), Channel(1, -1, -1, 20)], cleaner or Cleaner(),
                      injector or FakeInjector())
    sched.next_cleanup = float("inf")
    return sched


def finished(home, bounce=True):
    """A message whose deliveries are all over (mess/, info/), with one failure in bounce/."""
    Path(layout.mess_path(home, MSGID)).write_bytes(b"Subject: x\n\nbody\n")
    Path(layout.info_path(home, MSGID)).write_bytes(b"Falice@localhost\0")
    if bounce:
        Path(layout.bounce_path(home, MSGID)).write_bytes(b"<fail@r.example>:\nno.\n\n")


def queue_files(scratch):
    return [n for n in scratch.queue_files() if not n.startswith(("todo/", "intd/"))]


def in_place_of(path, kind):
    """Put a file (ENOTDIR below it) or a directory (EISDIR when opened) where path is."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)
    if kind == "file":
        open(path, "w").close()
    else:
        os.mkdir(path)


def failing_unlink(monkeypatch, *paths):
    """os.unlink fails with EIO for these paths (root may unlink anything)."""
    unlink = os.unlink

    def fake(path, *args, **kw):
        if str(path) in paths:
            raise OSError(5, "Input/output error", str(path))
        return unlink(path, *args, **kw)
    monkeypatch.setattr(os, "unlink", fake)


# -- messdone(): the stats before the bounce

def test_a_channel_file_still_there_is_a_false_alarm(scratch):
    """qmail's 'false alarm; consequence of HOPEFULLY': a channel file still exists, so the
    message is not finished. Nothing is bounced, logged nor removed, and it is not retried."""
    finished(scratch.home)
    Path(layout.remote_path(scratch.home, MSGID)).write_bytes(b"Tbob@far.example\0")
    sched = scheduler(scratch)
    before = queue_files(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == [] and sched.injector.started == [] and sched.pqdone == []
    assert queue_files(scratch) == before


@pytest.mark.parametrize("which, logged", [("local", "local/15/1234"), ("remote", "remote/15/1234")])
def test_a_channel_file_that_cannot_be_stat_ed_is_tried_again(scratch, which, logged):
    """A stat of local/ or remote/ failing otherwise than 'no such file': the message may still
    have recipients to deliver, so neither bounce nor end: qmail's warning, retry in 123 s."""
    finished(scratch.home)
    in_place_of(os.path.dirname(layout.split_path(scratch.home, which, MSGID)), "file")
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["warning: unable to stat %s; will try again later" % logged]
    assert sched.pqdone == [(LATER, MSGID)] and sched.injector.started == []
    assert os.path.exists(layout.info_path(scratch.home, MSGID))
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))


@pytest.mark.parametrize("which, logged", [("todo", "todo/1234"), ("info", "info/15/1234")])
def test_todo_or_info_that_cannot_be_stat_ed_is_tried_again(scratch, which, logged):
    finished(scratch.home)
    target = (os.path.join(scratch.home, "queue", "todo") if which == "todo"
              else os.path.dirname(layout.info_path(scratch.home, MSGID)))
    if which == "info":
        os.rename(target, target + ".aside")
    in_place_of(target, "file")
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["warning: unable to stat %s; will try again later" % logged]
    assert sched.pqdone == [(LATER, MSGID)] and sched.injector.started == []
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))


@pytest.mark.parametrize("state", ["todo", "no info"])
def test_todo_there_or_info_gone_means_nothing_to_finish(scratch, state):
    """todo/ there: qmail-todo is doing the message (again); info/ gone: it was finished. Either
    way no bounce, no 'end msg', no retry."""
    finished(scratch.home)
    if state == "todo":
        Path(layout.todo_path(scratch.home, MSGID)).write_bytes(b"")
    else:
        os.unlink(layout.info_path(scratch.home, MSGID))
    sched = scheduler(scratch)
    before = queue_files(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == [] and sched.injector.started == [] and sched.pqdone == []
    assert queue_files(scratch) == before


# -- messdone(): after the bounce

def test_info_that_cannot_be_unlinked_is_tried_again(scratch, monkeypatch):
    """qmail logs 'end msg' before unlinking info/; a failed unlink is tried again in 123 s
    (bounce/ is gone by then: no second bounce), and then logs 'end msg' once more, as qmail."""
    finished(scratch.home, bounce=False)
    info = layout.info_path(scratch.home, MSGID)
    failing_unlink(monkeypatch, info)
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["end msg 1234", "warning: unable to unlink info/15/1234; will try again later"]
    assert sched.pqdone == [(LATER, MSGID)] and sched.cleaner.requests == []
    assert os.path.exists(info)
    monkeypatch.undo()
    sched.pass_do(LATER)
    assert sched.log.lines[2:] == ["end msg 1234"]
    assert sched.cleaner.requests == [b"foop/1234"] and sched.pqdone == []
    assert not os.path.exists(info) and sched.injector.started == []


def test_qmail_clean_that_cannot_clean_up_is_logged(scratch):
    """qmail-clean's '!' for foop/: qmail's warning; info/ is gone, so the message is done
    (the next cleanup() pass removes mess/, as in qmail)."""
    finished(scratch.home, bounce=False)
    sched = scheduler(scratch, cleaner=Cleaner(cleanwire.TROUBLE))
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["end msg 1234", "warning: qmail-clean unable to clean up foop/1234"]
    assert sched.pqdone == [] and not os.path.exists(layout.info_path(scratch.home, MSGID))


# -- injectbounce()

def test_a_message_whose_bounce_is_going_into_qmail_queue_is_not_bounced_again(scratch):
    finished(scratch.home)
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert len(sched.injector.started) == 1 and MSGID in sched.bounces
    assert finish.messdone(sched, MSGID, NOW) == finish.RUNNING
    assert len(sched.injector.started) == 1 and sched.log.lines == []


def test_unreadable_info_leaves_the_bounce_for_later(scratch):
    """info/ without its F record (cut short): no sender to bounce to; qmail's injectbounce()
    gives up for now without a word, and so does qmail-send here: retry in 123 s."""
    finished(scratch.home)
    Path(layout.info_path(scratch.home, MSGID)).write_bytes(b"Falice@local")
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.pqdone == [(LATER, MSGID)] and sched.injector.started == [] and sched.log.lines == []
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))


def test_a_bounce_that_cannot_be_stat_ed_is_tried_again(scratch):
    finished(scratch.home, bounce=False)
    in_place_of(os.path.join(scratch.home, "queue", "bounce"), "file")
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["warning: unable to stat bounce/1234"]
    assert sched.pqdone == [(LATER, MSGID)] and sched.injector.started == []
    assert os.path.exists(layout.info_path(scratch.home, MSGID))


def test_at_exit_a_bounce_stays_for_the_next_qmail_send(scratch):
    finished(scratch.home)
    sched = scheduler(scratch)
    sched.exitasap = True
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == [] and sched.injector.started == [] and sched.pqdone == [(LATER, MSGID)]
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))
    assert os.path.exists(layout.info_path(scratch.home, MSGID))


@pytest.mark.parametrize("which, logged", [("bounce", "bounce/1234"), ("mess", "mess/15/1234")])
def test_a_bounce_or_message_that_cannot_be_read_is_tried_again(scratch, which, logged):
    finished(scratch.home)
    in_place_of(layout.bounce_path(scratch.home, MSGID) if which == "bounce"
                else layout.mess_path(scratch.home, MSGID), "dir")
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["warning: unable to read %s; will try again later" % logged]
    assert sched.pqdone == [(LATER, MSGID)] and sched.injector.started == [] and not sched.bounces
    assert os.path.exists(layout.info_path(scratch.home, MSGID))


def test_qmail_queue_that_cannot_start_is_tried_again(scratch):
    """The real Injector with $QMAILQUEUE naming no program: qmail's warning, bounce/ kept."""
    finished(scratch.home)
    injector = Injector(scratch.home, scratch.env(QMAILQUEUE=os.path.join(scratch.fake, "no-such-qmail-queue")))
    sched = scheduler(scratch, injector=injector)
    sched.messdone(MSGID, NOW)
    assert sched.log.lines == ["warning: unable to start qmail-queue, will try later"]
    assert sched.pqdone == [(LATER, MSGID)] and not sched.bounces
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))
    assert os.path.exists(layout.info_path(scratch.home, MSGID))


# -- bounce_exited()

def test_a_queued_bounce_whose_file_cannot_be_unlinked_is_kept_and_tried_again(scratch, monkeypatch):
    """qmail-queue took the bounce but bounce/ stays: as qmail's injectbounce(), warn and try
    again later; the message is not ended while its bounce file is there (the retry queues
    the bounce once more: a duplicate bounce, never a lost one)."""
    finished(scratch.home)
    bounce = layout.bounce_path(scratch.home, MSGID)
    sched = scheduler(scratch)
    sched.messdone(MSGID, NOW)
    failing_unlink(monkeypatch, bounce)
    finish.bounce_exited(sched, MSGID, NOW)
    assert sched.log.lines == ["bounce msg 1234 qp 101", "warning: unable to unlink bounce/1234"]
    assert sched.pqdone == [(LATER, MSGID)]
    assert os.path.exists(bounce) and os.path.exists(layout.info_path(scratch.home, MSGID))


def test_a_bounce_that_cannot_be_read_while_queued_is_tried_again(scratch):
    finished(scratch.home)
    sched = scheduler(scratch, injector=FakeInjector(code=81, trouble=True))
    sched.messdone(MSGID, NOW)
    finish.bounce_exited(sched, MSGID, NOW)
    assert sched.log.lines == ["warning: unable to read bounce/1234; will try again later"]
    assert sched.pqdone == [(LATER, MSGID)]
    assert os.path.exists(layout.bounce_path(scratch.home, MSGID))


def test_a_triple_bounce_whose_file_cannot_be_unlinked_is_tried_again(scratch, monkeypatch):
    """qmail-queue refused the bounce for good, with and without the copy: it is discarded, and
    a bounce/ that cannot be unlinked is tried again, not ended with it still there."""
    finished(scratch.home)
    bounce = layout.bounce_path(scratch.home, MSGID)
    sched = scheduler(scratch, injector=FakeInjector(code=31))
    sched.messdone(MSGID, NOW)
    finish.bounce_exited(sched, MSGID, NOW)
    sched.pass_do(NOW)
    assert MSGID in sched.bounces and len(sched.injector.started) == 2
    failing_unlink(monkeypatch, bounce)
    finish.bounce_exited(sched, MSGID, NOW)
    assert sched.log.lines[-2:] == [
        "triple bounce: discarding bounce/1234: qmail-queue refused the bounce of msg 1234 without the copy "
        "of the message too (exit 31: mail server permanently rejected message (#5.3.0))",
        "warning: unable to unlink bounce/1234"]
    assert sched.pqdone == [(LATER, MSGID)]
    assert os.path.exists(bounce) and os.path.exists(layout.info_path(scratch.home, MSGID))


# -- leftovers(): info/ of a message whose mess/ is gone

def test_leftovers_that_cannot_be_unlinked_are_tried_again(scratch, monkeypatch):
    Path(layout.info_path(scratch.home, MSGID)).write_bytes(b"Falice@localhost\0")
    Path(layout.remote_path(scratch.home, MSGID)).write_bytes(b"Tbob@far.example\0")
    failing_unlink(monkeypatch, layout.remote_path(scratch.home, MSGID))
    sched = scheduler(scratch)
    sched.pqadd(MSGID, NOW)
    assert sched.log.lines == [
        "warning: msg 1234: mess/15/1234 is gone: the message was finished; removing what a power loss left of it",
        "warning: unable to unlink remote/15/1234; will try again later"]
    assert sched.pqfail == [(LATER, MSGID)] and sched.cleaner.requests == []
    assert queue_files(scratch) == ["info/15/1234", "remote/15/1234"]
    assert sched.channels[1].pq == []


def test_leftovers_qmail_clean_that_cannot_clean_up_is_logged(scratch):
    Path(layout.info_path(scratch.home, MSGID)).write_bytes(b"Falice@localhost\0")
    sched = scheduler(scratch, cleaner=Cleaner(cleanwire.TROUBLE))
    sched.pqadd(MSGID, NOW)
    assert sched.log.lines[1:] == ["warning: qmail-clean unable to clean up foop/1234"]
    assert sched.pqfail == [] and queue_files(scratch) == []
