"""qmail-queue's enqueue() in-process: each failing step gives its exit code and its exact
reason, and takes back all it made (tests/test_queue.py runs the same through qmail-queue).
make mutate runs qmailpy/queue/enqueue.py against these."""
import errno
import io
import os

import pytest

from qmailpy import exitcodes as X
from qmailpy.proto import qq
from qmailpy.queue import enqueue as E, layout
from test_queue import ENV, MSG, _fail_on, debris, home  # noqa: F401  (home: the fixture)

EIO = os.strerror(errno.EIO)


def queue_error(home, message=MSG, envelope=ENV, **kw):
    with pytest.raises(E.QueueError) as e:
        E.enqueue_all(str(home), message, envelope, 7, 1234, 0, **kw)
    return e.value.code, e.value.reason


class Reads:
    """A message or envelope source whose read() gives `chunks`, then raises `error`."""
    def __init__(self, chunks, error):
        self.chunks, self.error = list(chunks), error

    def read(self, n):
        if self.chunks:
            return self.chunks.pop(0)
        raise self.error


def test_read_errors_are_54(home):
    assert queue_error(home, Reads([], OSError(errno.EIO, EIO))) == (54, "unable to read message: " + EIO)
    assert queue_error(home, Reads([MSG], OSError(errno.EIO, EIO))) == (54, "unable to read message: " + EIO)
    assert queue_error(home, Reads([b"x"], OSError("odd"))) == (54, "unable to read message: odd")
    assert queue_error(home, MSG, Reads([], OSError(errno.EIO, EIO))) == (54, "unable to read envelope: " + EIO)
    assert debris(home) == []


def test_envelope_errors_keep_their_code_and_text(home):
    dec = qq.Decoder()
    with pytest.raises(qq.EnvelopeError) as want:
        dec.feed(b"Xa@b\0\0")
        dec.eof()
    assert queue_error(home, MSG, b"Xa@b\0\0") == (want.value.code, str(want.value))
    assert debris(home) == []


@pytest.mark.parametrize("where", ["mess", "intd"])
def test_write_error_is_53_with_its_reason(home, monkeypatch, where):
    """issue 25 survivor 3: EIO (not only ENOSPC) writing the queue is 53, not 64."""
    _fail_on(monkeypatch, "write", where)
    assert queue_error(home) == (53, "unable to write %s: %s" % (where, EIO))
    assert debris(home) == []


def test_write_error_in_a_later_chunk_of_the_message(home, monkeypatch):
    real, seen = os.write, []

    def write(fd, data):
        seen.append(len(data))
        if len(seen) == 2:
            raise OSError(errno.EIO, EIO)
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)
    big = b"x" * (E.CHUNK + 10)
    assert queue_error(home, io.BytesIO(big)) == (53, "unable to write mess: " + EIO)
    assert debris(home) == []


def test_big_message_in_chunks_is_whole(home):
    big = b"y" * (3 * E.CHUNK + 5)
    msgid = E.enqueue(str(home), io.BytesIO(big), ENV, 7, 1234, 0)
    with open(layout.mess_path(str(home), msgid), "rb") as f:
        assert f.read().split(b"\n", 1)[1] == big


def test_fsync_error_reason(home, monkeypatch):
    _fail_on(monkeypatch, "fsync", "mess")
    assert queue_error(home) == (53, "unable to fsync mess: " + EIO)


def test_disk_full_is_53_wherever(home, monkeypatch):
    real = os.link

    def link(src, dst, *a, **kw):
        if "/mess/" in dst:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "link", link)
    code, reason = queue_error(home)
    assert code == 53 and reason.startswith("unable to link ") and "/queue/mess/" in reason
    assert reason.endswith(": " + os.strerror(errno.ENOSPC))
    monkeypatch.undo()
    real_link = os.link

    def link_eperm(src, dst, *a, **kw):
        if "/mess/" in dst:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        return real_link(src, dst, *a, **kw)
    monkeypatch.setattr(os, "link", link_eperm)
    assert queue_error(home)[0] == X.QQ_MESS == 64


def test_commit_link_failure_is_66(home, monkeypatch):
    real = os.link

    def link(src, dst, *a, **kw):
        if "/todo/" in dst:
            raise OSError(errno.EIO, EIO)
        return real(src, dst, *a, **kw)
    monkeypatch.setattr(os, "link", link)
    code, reason = queue_error(home)
    assert code == X.QQ_TODO == 66
    assert reason.startswith("unable to link " + str(home / "queue" / "todo") + "/") and reason.endswith(": " + EIO)
    assert debris(home) == []


@pytest.mark.parametrize("moved", [False, True])
def test_commit_link_made_but_reported_failed_stays_queued(home, monkeypatch, moved):
    """The link exists (or qmail-todo already took it to info/) although os.link said no:
    qmail-send may hold the message, so nothing is taken back and the error is temporary."""
    real = os.link

    def link(src, dst, *a, **kw):
        real(src, dst, *a, **kw)
        if "/todo/" in dst:
            if moved:
                msgid = int(os.path.basename(dst))
                info = layout.split_path(str(home), "info", msgid, 7)
                os.rename(dst, info)
            raise OSError(errno.EIO, EIO)
    monkeypatch.setattr(os, "link", link)
    code, reason = queue_error(home, split=7)
    assert code == 66
    left = debris(home)
    assert [p.split("/")[0] for p in left] == (["info", "intd", "mess"] if moved else ["intd", "mess", "todo"])


def test_rollback_truncates_what_it_unlinks(home):
    """qmail-queue's cleanup(): the mess file is emptied as well as unlinked, so a reader that
    holds it open (a filter) sees nothing."""
    held = []

    def refuse(staged):
        held.append(os.dup(staged.mess_fd))
        raise E.QueueError(X.QQ_PERM_REFUSED, "no")
    assert queue_error(home, content_filter=refuse) == (31, "no")
    try:
        assert os.fstat(held[0]).st_size == 0
    finally:
        os.close(held[0])
    assert debris(home) == []


def test_pid_file_names(home, monkeypatch):
    """pid/<pid>.<time>.<seq>, seq 1..9 tried in order; all in use: 62."""
    pid_dir = home / "queue" / "pid"
    for seq in range(2, 10):
        (pid_dir / ("1234.0.%d" % seq)).write_bytes(b"")
    assert E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    (pid_dir / "1234.0.1").write_bytes(b"")
    assert queue_error(home) == (X.QQ_PID, "unable to create a pid/ file: names in use")
    for seq in range(1, 10):
        os.unlink(pid_dir / ("1234.0.%d" % seq))
    real = os.open

    def refuse(path, *a, **kw):
        if "/queue/pid/" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "open", refuse)
    assert queue_error(home) == (X.QQ_PID, "unable to create %s/1234.0.1: %s"
                                 % (pid_dir, os.strerror(errno.EACCES)))


def test_queue_file_modes_and_todo_fsync_flags(home, monkeypatch):
    real, opened = os.open, []

    def recording(path, flags, *a, **kw):
        opened.append((str(path), flags))
        return real(path, flags, *a, **kw)
    monkeypatch.setattr(os, "open", recording)
    old = os.umask(0)
    try:
        msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    finally:
        os.umask(old)
    assert os.stat(layout.mess_path(str(home), msgid)).st_mode & 0o777 == 0o644
    assert os.stat(layout.todo_path(str(home), msgid)).st_mode & 0o777 == 0o644
    todo_dir = str(home / "queue" / "todo")
    assert (todo_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) in opened


def test_staged_head_defaults_to_nothing():
    assert E.Staged("/q", 1, "/q/mess/1", 3, b"a@b", [b"c@d"]).head == b""


def _failing(monkeypatch, name, match):
    """os.<name> raises EIO when its first argument (a path, or an fd's path) contains `match`."""
    real = getattr(os, name)

    def fail(first, *a, **kw):
        where = os.readlink("/proc/self/fd/%d" % first) if isinstance(first, int) else str(first)
        if match in where:
            raise OSError(errno.EIO, EIO)
        return real(first, *a, **kw)
    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize("name,match,code,reason", [
    ("fstat", "/queue/pid/", X.QQ_PID, "unable to stat pid file"),
    ("unlink", "/queue/pid/", X.QQ_PID, "unable to unlink {home}/queue/pid/1234.0.1"),
    ("fsync", "/queue/intd/", X.QQ_WRITE_ERROR, "unable to fsync intd"),
])
def test_each_step_names_itself(home, monkeypatch, name, match, code, reason):
    _failing(monkeypatch, name, match)
    assert queue_error(home) == (code, reason.format(home=home) + ": " + EIO)


def test_intd_create_failure_is_65(home, monkeypatch):
    _failing(monkeypatch, "open", "/queue/intd/")
    code, reason = queue_error(home)
    assert code == X.QQ_INTD == 65
    assert reason.startswith("unable to create %s/queue/intd/" % home) and reason.endswith(": " + EIO)
    assert debris(home) == []


def test_split_is_used_for_mess_and_in_use_checks(home, monkeypatch):
    """A queue of split 7: mess/<id % 7>/<id>, and an id whose info/<id % 7>/<id> exists is skipped."""
    h = str(home)
    msgid = E.enqueue(h, MSG, ENV, 7, 1234, 0, split=7)
    assert os.path.exists(layout.mess_path(h, msgid, 7))
    real, seen = layout.referenced, []

    def referenced(home_, msgid_, where=layout.IN_USE, split=layout.SPLIT):
        if not seen and where == layout.IN_USE:
            seen.append((msgid_, split))
            open(layout.split_path(h, "info", msgid_, 7), "wb").close()
        return real(home_, msgid_, where, split)
    monkeypatch.setattr(layout, "referenced", referenced)
    second = E.enqueue(h, MSG, ENV, 7, 1235, 0, split=7)
    assert seen[0][1] == 7 and second != seen[0][0]


def test_filter_sees_the_staged_message(home):
    got = []

    def look(staged):
        got.append((staged.home, staged.msgid, staged.mess_path, os.fstat(staged.mess_fd).st_ino, staged.sender,
                    staged.recipients, staged.head))
        return None
    msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0, content_filter=look)
    h, mid, path, ino, sender, rcpts, head = got[0]
    assert (h, mid, path, ino, sender, rcpts) == (str(home), msgid, layout.mess_path(str(home), msgid), msgid,
                                                  b"a@example.org", [b"b@example.net", b"c@example.com"])
    assert head.startswith(b"Received: (qmail 1234 invoked by uid 7); ")


def test_a_timeout_after_the_fsync_of_todo_counts_as_queued(home, monkeypatch):
    """The filter made copies only, so the staged file is removed after the commit; a timeout
    striking there finds every entry committed and fsynced: the message is queued."""
    real, calls = E.Entry.rollback, []

    def rollback(self):
        calls.append(self)
        if len(calls) == 1:
            raise E.QueueError(X.QQ_TIMEOUT, "timeout")
        return real(self)
    monkeypatch.setattr(E.Entry, "rollback", rollback)

    def copies(staged):
        return [([b"b@example.net"], staged.head + b"one\n"), ([b"c@example.com"], staged.head + b"two\n")]
    ids = E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=copies)
    assert len(ids) == 2 and all(isinstance(i, int) for i in ids)
    assert sorted(os.listdir(home / "queue" / "todo")) == sorted(str(i) for i in ids)


def test_pid_file_trouble_after_a_held_id(home, monkeypatch):
    """An id still named is held while the next pid/ file is tried; if that fails, 62, no traceback."""
    real_ref, real_open = layout.referenced, os.open
    monkeypatch.setattr(layout, "referenced", lambda h, m, where=layout.IN_USE, split=layout.SPLIT:
                        where == layout.IN_USE or real_ref(h, m, where, split))
    opened = []

    def open_(path, *a, **kw):
        if "/queue/pid/" in str(path):
            opened.append(path)
            if len(opened) == 2:
                raise OSError(errno.EIO, EIO)
        return real_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", open_)
    assert queue_error(home) == (X.QQ_PID, "unable to create %s: %s" % (opened[1], EIO))
    assert debris(home) == []


def test_intd_mode(home):
    old = os.umask(0)
    try:
        msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    finally:
        os.umask(old)
    assert os.stat(layout.intd_path(str(home), msgid)).st_mode & 0o777 == 0o644


def test_fsync_of_a_copy_failing(home, monkeypatch):
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:                         # the staged mess, then the first copy's
            raise OSError(errno.EIO, EIO)
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)

    def copies(staged):
        return [([b"b@example.net"], staged.head + b"one\n")]
    assert queue_error(home, content_filter=copies) == (53, "unable to fsync mess: " + EIO)
    assert debris(home) == []


def test_write_error_of_a_copy(home, monkeypatch):
    real, calls = os.write, []

    def write(fd, data):
        calls.append(fd)
        if len(calls) == 2:                         # the staged mess, then the first copy's
            raise OSError(errno.EIO, EIO)
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)

    def copies(staged):
        return [([b"b@example.net"], staged.head + b"one\n")]
    assert queue_error(home, content_filter=copies) == (53, "unable to write mess: " + EIO)
    assert debris(home) == []


def test_dir_sync_is_the_fsync_of_todo(home):
    """qmail-queued's GroupSync.sync, given as dir_sync, fsyncs todo/ in place of fsync_dir:
    once per insertion, through enqueue() and enqueue_all() alike, copies included."""
    todo_dir = str(home / "queue" / "todo")
    calls = []
    msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0, dir_sync=calls.append)
    assert calls == [todo_dir] and os.path.exists(layout.todo_path(str(home), msgid))

    def copies(staged):
        return [([b"b@example.net"], staged.head + b"one\n"), ([b"c@example.com"], staged.head + b"two\n")]
    calls.clear()
    ids = E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=copies, dir_sync=calls.append)
    assert calls == [todo_dir] and len(ids) == 2
