"""qmailpy.queue.files, the queue files qmail-send reads and marks, when the disk misbehaves.

Each function's answer to trouble is what its caller (qmail-send, qmail-todo, qmail-qread)
acts on: None for an info/ file it cannot use (retried later), False for a mark or a retry
time that did not stick (logged: a second delivery, an early retry), the name of a file that
could not be unlinked. The faults a test directory cannot produce (EIO) are monkeypatched.
"""
import errno
import os
from pathlib import Path

import pytest

from qmailpy.queue import files as qf, layout
import test_queue

home = test_queue.home            # the fixture: an empty queue
MSGID = 1000001


def eio(*args, **kw):
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def info(home):
    return Path(layout.info_path(str(home), MSGID))


@pytest.mark.parametrize("data, got", [
    (b"", None),                                   # created, never written: a crash in between
    (b"Fa@example.org", None),                     # cut before its NUL
    (b"Xa@example.org\0", None),                   # not an F record
    (b"F\0", b""),                                 # the null sender (a bounce's)
    (b"F" + b"x" * 3000 + b"\0", b"x" * 3000),     # longer than the first read
])
def test_getinfo_of_an_info_file_it_cannot_use_is_none(home, data, got):
    info(home).write_bytes(data)
    os.utime(info(home), (1000, 1000))
    assert qf.getinfo(str(home), MSGID) == (None if got is None else (got, 1000))


def test_markdone_that_fails_says_so_and_leaves_the_record(home, monkeypatch):
    local = Path(qf.channel_path(str(home), MSGID, 0))
    assert qf.markdone(str(local), 0) is False                # gone: open fails
    local.write_bytes(b"Ta@example.org\0Tb@example.org\0")
    monkeypatch.setattr(os, "pwrite", eio)
    before = set(os.listdir("/proc/self/fd"))
    assert qf.markdone(str(local), 15) is False
    assert set(os.listdir("/proc/self/fd")) == before          # its descriptor closed
    monkeypatch.undo()
    assert local.read_bytes() == b"Ta@example.org\0Tb@example.org\0"
    assert qf.markdone(str(local), 15) is True
    assert local.read_bytes() == b"Ta@example.org\0Db@example.org\0"


def test_set_retry_that_fails_is_false(home):
    remote = Path(qf.channel_path(str(home), MSGID, 1))
    assert qf.set_retry(str(remote), 12345) is False
    remote.write_bytes(b"Ta@example.org\0")
    assert qf.set_retry(str(remote), 12345) is True and remote.stat().st_mtime == 12345


def test_info_ids_skips_a_missing_subdirectory_and_raises_for_an_unreadable_one(home, monkeypatch):
    """A missing info/<n> has no messages (qmail-qread, `ordered`, says so: it raises); one
    that cannot be read raises without `pause`, or is handed to pause() and read again."""
    h = str(home)
    info(home).write_bytes(b"Fa@b\0")
    os.rmdir(home / "queue" / "info" / "0")
    assert list(qf.info_ids(h)) == [MSGID]
    with pytest.raises(FileNotFoundError):
        list(qf.info_ids(h, ordered=True))
    real, failed, paused = os.listdir, [], []

    def listdir(path):
        if path.endswith("/info/%d" % (MSGID % layout.SPLIT)) and len(failed) < 2:
            failed.append(path)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path)
    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(PermissionError):
        list(qf.info_ids(h))
    assert list(qf.info_ids(h, pause=paused.append)) == [MSGID]
    assert paused == ["info/%d" % (MSGID % layout.SPLIT)]


def test_append_bounce_tries_again_after_trouble_until_the_paragraph_is_on_disk(home, monkeypatch):
    """qmail-send's addbounce(): a failed open, and a failed fsync, are each tried again after
    trouble() (which logs and sleeps); the paragraph is there once. After a failed fsync the file
    is cut back to where the paragraph began and the paragraph written again (Linux forgets a
    failed fsync's error): an earlier paragraph stays, once."""
    earlier = b"<b@example.org>:\nearlier failure.\n\n"
    Path(layout.bounce_path(str(home), MSGID)).write_bytes(earlier)
    real_open, real_fsync, troubles = os.open, os.fsync, []
    fail = {"open": 1, "fsync": 2}

    def open_(path, *a, **kw):
        if "/queue/bounce/" in str(path) and fail["open"]:
            fail["open"] -= 1
            eio()
        return real_open(path, *a, **kw)

    def fsync(fd):
        if fail["fsync"]:
            fail["fsync"] -= 1
            os.ftruncate(fd, len(earlier))  # what failed to reach the disk may be dropped
            eio()
        return real_fsync(fd)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    qf.append_bounce(str(home), MSGID, b"<a@example.org>:\nno mailbox here by that name.\n\n",
                     lambda: troubles.append(dict(fail)))
    assert troubles == [{"open": 0, "fsync": 2}, {"open": 0, "fsync": 1}, {"open": 0, "fsync": 0}]
    assert Path(layout.bounce_path(str(home), MSGID)).read_bytes() == \
        earlier + b"<a@example.org>:\nno mailbox here by that name.\n\n"


def test_remove_finished_stops_at_a_file_it_cannot_unlink_and_names_it(home, monkeypatch):
    """info/ goes last, so that a failure half-way leaves it for the next start to find."""
    h = str(home)
    for path in (qf.channel_path(h, MSGID, 1), layout.bounce_path(h, MSGID), layout.info_path(h, MSGID)):
        Path(path).write_bytes(b"x")
    real = os.unlink

    def unlink(path, *a, **kw):
        if "/queue/bounce/" in str(path):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "unlink", unlink)
    assert qf.remove_finished(h, MSGID) == "bounce/%d" % MSGID
    monkeypatch.undo()
    assert not os.path.exists(qf.channel_path(h, MSGID, 1))
    assert os.path.exists(layout.bounce_path(h, MSGID)) and os.path.exists(layout.info_path(h, MSGID))
    assert qf.remove_finished(h, MSGID) is None
    assert test_queue.debris(home) == []
