"""bin/qmail-clean driven as qmail-send and qmail-todo drive it: requests on fd 0, one answer byte each.

qmail-clean.c: '+' when intd/ and the second file (todo/ or mess/) are gone, '!' when an
unlink failed (the caller warns and the files stay for a later try), 'x' for a request it
cannot parse; old pid/ files go at the first request and then every 30 requests.
"""
import os
import subprocess
import time
from pathlib import Path

from qmailpy.queue import layout
from test_send_support import BIN, scratch  # noqa: F401 (scratch: fixture)

MSGID = 1234
OLD = time.time() - layout.OSSIFIED - 3600


class Clean:
    def __init__(self, scratch):
        self.proc = subprocess.Popen([str(BIN / "qmail-clean")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=scratch.env())

    def ask(self, request):
        self.proc.stdin.write(request + b"\0")
        self.proc.stdin.flush()
        return self.proc.stdout.read(1)

    def close(self):
        self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, err


def message(home):
    for path in (layout.intd_path(home, MSGID), layout.todo_path(home, MSGID), layout.mess_path(home, MSGID)):
        Path(path).write_bytes(b"x")


def test_requests_remove_intd_and_todo_or_mess(scratch):
    message(scratch.home)
    clean = Clean(scratch)
    assert clean.ask(b"todo/1234") == b"+"
    assert scratch.queue_files() == ["mess/15/1234"]
    Path(layout.intd_path(scratch.home, MSGID)).write_bytes(b"x")
    assert clean.ask(b"foop/1234") == b"+"
    assert scratch.queue_files() == []
    assert clean.ask(b"foop/1234") == b"+"              # already gone: done, as qmail
    assert clean.ask(b"mess/1234") == b"x" and clean.ask(b"todo/12a") == b"x"
    assert clean.close() == (0, b"")


def test_an_unlink_that_fails_answers_trouble_and_keeps_the_rest(scratch):
    """intd/1234 that cannot be unlinked (a directory, even for root): '!', and todo/ is not
    touched, so qmail-todo's next scan finds the message again; mess/ likewise for foop/."""
    message(scratch.home)
    intd = layout.intd_path(scratch.home, MSGID)
    os.unlink(intd)
    os.mkdir(intd)
    clean = Clean(scratch)
    assert clean.ask(b"todo/1234") == b"!"
    assert clean.ask(b"foop/1234") == b"!"
    assert scratch.queue_files() == ["mess/15/1234", "todo/1234"]
    os.rmdir(intd)
    mess = layout.mess_path(scratch.home, MSGID)
    os.unlink(mess)
    os.mkdir(mess)
    assert clean.ask(b"foop/1234") == b"!"
    assert clean.close() == (0, b"")
    assert os.path.isdir(mess)


def test_old_pid_files_go_at_the_first_request_and_every_30_after(scratch):
    piddir = os.path.join(scratch.home, "queue", "pid")
    fresh = os.path.join(piddir, "fresh")
    Path(fresh).write_bytes(b"")
    clean = Clean(scratch)
    assert clean.ask(b"foop/1") == b"+"             # the first request: cleanuppid()
    stale = os.path.join(piddir, "stale")
    Path(stale).write_bytes(b"")
    os.utime(stale, (OLD, OLD))
    for _ in range(30):
        assert clean.ask(b"foop/1") == b"+"
    assert os.path.exists(stale)
    assert clean.ask(b"foop/1") == b"+"             # the 32nd: cleanuppid() again
    assert sorted(os.listdir(piddir)) == ["fresh"]
    assert clean.close() == (0, b"")
