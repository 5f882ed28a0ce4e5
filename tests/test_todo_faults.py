"""qmail-todo's preprocessing when a queue file cannot be read, stat'ed, unlinked or fsynced (todo.py).

qmail-todo.c's todo_do(): every failure logs 'warning: qmail-todo: ...' and leaves todo/ in
place (qmail-clean is not asked), so the next scan does the message again from scratch and
qmail-send hears of no D record before info/ and the channel files are on disk. The faults
are real files where a file can make them (a directory in place of a file), a patched os
call where not.
"""
import os
import shutil
from pathlib import Path

import pytest

from qmailpy.addr.rewrite import Rewriter
from qmailpy.proto import todowire
from qmailpy.queue import layout
from qmailpy.send import todo_main
from qmailpy.send.todo import preprocess
from test_send_queuetools import Cleaner
from test_send_support import queue_message, scratch  # noqa: F401 (scratch: fixture)

RW = Rewriter(["localhost"], [], [], "envnoat.example")


def queued(scratch, recips=(b"joe@localhost",)):
    return int(queue_message(scratch.home, recips=recips).split("/")[1])


def kept(scratch, msgid, records, cleaner, why):
    """The outcome of a failure: its one warning, no D record, todo/ still there, qmail-clean not asked."""
    assert records[-1] == todowire.encode_log("warning: qmail-todo: " + why % {"id": msgid, "n": msgid % 23})
    assert not any(r.startswith(b"D") for r in records)
    assert os.path.exists(layout.todo_path(scratch.home, msgid)) and cleaner.asked == []


def dir_in_place_of(path):
    if os.path.exists(path):
        os.unlink(path)
    os.mkdir(path)


def test_a_todo_file_that_cannot_be_read(scratch):
    msgid = queued(scratch)
    todo = layout.todo_path(scratch.home, msgid)
    os.rename(todo, todo + ".aside")
    dir_in_place_of(todo)
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert not done and records == [todowire.encode_log("warning: qmail-todo: unable to open todo/%d" % msgid)]
    assert cleaner.asked == [] and not os.path.exists(layout.info_path(scratch.home, msgid))


def break_mess(scratch, msgid):
    mess = os.path.dirname(layout.mess_path(scratch.home, msgid))
    os.rename(mess, mess + ".aside")
    Path(mess).write_bytes(b"")                     # mess/<n>/<id>: ENOTDIR, not 'no such file'


@pytest.mark.parametrize("fault, why", [
    (break_mess, "unable to stat mess/%(n)d/%(id)d"),
    # a crash may leave a channel file of the id; one that cannot be unlinked stops the message
    (lambda scratch, msgid: dir_in_place_of(layout.remote_path(scratch.home, msgid)),
     "unable to unlink remote/%(n)d/%(id)d")])
def test_failures_before_info_is_made(scratch, fault, why):
    msgid = queued(scratch)
    fault(scratch, msgid)
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert not done and len(records) == 1
    kept(scratch, msgid, records, cleaner, why)
    assert not os.path.exists(layout.info_path(scratch.home, msgid))


def test_an_unknown_record_in_todo(scratch):
    """qmail-todo.c: 'unknown record type in todo/<id>'; info/ made so far is empty and is
    unlinked and made again by the next try."""
    msgid = queued(scratch)
    with open(layout.todo_path(scratch.home, msgid), "ab") as f:
        f.write(b"Zjunk\0")
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert not done and records == [todowire.encode_log("new msg %d" % msgid),
                                    todowire.encode_log("warning: qmail-todo: unknown record type in todo/%d" % msgid)]
    kept(scratch, msgid, records, cleaner, "unknown record type in todo/%(id)d")
    assert Path(layout.info_path(scratch.home, msgid)).read_bytes() == b""
    assert not os.path.exists(layout.local_path(scratch.home, msgid))


def test_a_file_that_cannot_be_fsynced(scratch, monkeypatch):
    """fsync of info/ failing (EIO): the message is not handed over; the next scan redoes it."""
    msgid = queued(scratch)

    def fsync(fd):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(os, "fsync", fsync)
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert not done
    kept(scratch, msgid, records, cleaner, "trouble fsyncing info/%(n)d/%(id)d")
    monkeypatch.undo()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert done and records[-1] == todowire.encode_done(msgid, True, False)
    assert Path(layout.local_path(scratch.home, msgid)).read_bytes() == b"Tjoe@localhost\0"


def test_leftovers_of_a_finished_message_that_cannot_be_unlinked(scratch):
    """todo/ without mess/ (a power loss brought todo/ back): what is left is unlinked; a file
    that cannot be makes it wait for the next scan, with no D record (nothing is delivered)."""
    msgid = queued(scratch)
    os.unlink(layout.mess_path(scratch.home, msgid))
    remote = layout.remote_path(scratch.home, msgid)
    dir_in_place_of(remote)
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert not done and len(records) == 2
    kept(scratch, msgid, records, cleaner, "unable to unlink remote/%(n)d/%(id)d")
    shutil.rmtree(remote)
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert done and not any(r.startswith(b"D") for r in records)


def todo_in_process(scratch, monkeypatch):
    """qmail-todo's Todo in-process: what it sends to qmail-send collected, qmail-clean a fake."""
    from qmailpy import clock
    from qmailpy.send.todo_main import Todo
    todo = Todo(scratch.home, scratch.env(), clock.Clock(1))
    todo.cleaner = Cleaner()
    todo.fsync_many = lambda fds: [True] * len(fds)      # not under test here: the disk's time
    sent = []
    monkeypatch.setattr(todo_main, "write_all", lambda fd, data: sent.append((fd, data)))
    return todo, sent


def test_qmail_todo_stops_after_the_batch_during_which_x_came(scratch, monkeypatch):
    """X (or SIGTERM) while todo/ holds more than a batch: the batch is finished and handed over,
    the rest stays in todo/ untouched for the next qmail-todo (module docstring: 'X or SIGTERM
    stop it after the current batch')."""
    ids = [queued(scratch) for _ in range(todo_main.BATCH + 3)]
    todo, sent = todo_in_process(scratch, monkeypatch)
    monkeypatch.setattr(todo, "poll_send", lambda: todo.commands(todowire.EXIT))
    todo.scan()
    done = sorted(i for i in ids if os.path.exists(layout.info_path(scratch.home, i)))
    assert done == sorted(ids)[:todo_main.BATCH]
    assert sorted(cleaner_ids(todo.cleaner)) == done
    for i in sorted(ids)[todo_main.BATCH:]:
        assert os.path.exists(layout.todo_path(scratch.home, i)) and not os.path.exists(layout.info_path(scratch.home, i))
    records = b"".join(data for _, data in sent)
    assert records.count(b"\0D") + records.startswith(b"D") == todo_main.BATCH
    assert records.endswith(todowire.encode_log("status: qmail-todo stop processing asap"))


def cleaner_ids(cleaner):
    return [msgid for _, msgid in cleaner.asked]


def test_qmail_todo_whose_qmail_send_is_gone_goes_on_quietly(scratch, monkeypatch):
    """A write to qmail-send that fails (EPIPE: it died) marks it gone; qmail-todo writes to it
    no more (no traceback, no error per message) and stops at end of input on fd 0."""
    todo, sent = todo_in_process(scratch, monkeypatch)

    def broken(fd, data):
        sent.append((fd, data))
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(todo_main, "write_all", broken)
    msgid = queued(scratch)
    todo.scan()
    assert not todo.send_alive and len(sent) == 1
    assert os.path.exists(layout.local_path(scratch.home, msgid))     # the work is done all the same
    todo.log("status: anything")
    assert len(sent) == 1
    todo.commands(b"")
    assert todo.stop


def test_a_todo_without_a_sender_record_makes_an_empty_info(scratch):
    """qmail-todo.c writes info/ from the F record only: without one (qmail-queue always
    writes it) there is no 'info msg' line and info/ is empty, and the message is handed over."""
    msgid = queued(scratch)
    Path(layout.todo_path(scratch.home, msgid)).write_bytes(b"u0\0p42\0Tjoe@localhost\0")
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, RW, cleaner)
    assert done and records == [todowire.encode_log("new msg %d" % msgid), todowire.encode_done(msgid, True, False)]
    assert Path(layout.info_path(scratch.home, msgid)).read_bytes() == b""
    assert Path(layout.local_path(scratch.home, msgid)).read_bytes() == b"Tjoe@localhost\0"
