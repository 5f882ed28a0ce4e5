"""qmail-send and its qmail-clean: losing it ("lost qmail-clean connection"), and its '!' for old mess/ files.

qmail-send.c's cleandied(): 'alert: oh no! lost qmail-clean connection! dying...', then it
stops as after SIGTERM (deliveries running are waited for, exit 0); a message finished
meanwhile keeps mess/ for the next start's cleanup. cleanup_do(): a stale mess/ file that
qmail-clean cannot remove is 'warning: qmail-clean unable to clean up foop/<id>'.
"""
import os
import time
from pathlib import Path

import pytest

from qmailpy.proto import cleanwire
from qmailpy.queue import layout
from qmailpy.send import cleanup
from test_send_finish_faults import Cleaner, scheduler
from test_send_support import Send, inject, scratch  # noqa: F401 (scratch: fixture)


def pipe_inodes(pid, fds=None):
    """The pipe inodes a process holds (on the given fds, or all of them)."""
    out = set()
    for fd in fds if fds is not None else os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.add(target)
    return out


def sends_clean(send):
    """qmail-send's own qmail-clean (not qmail-todo's): its fd 0 is a pipe qmail-send writes to."""
    mine = pipe_inodes(send.proc.pid)
    cleans = [pid for pid in send.children()
              if open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[2].endswith(b"qmail-clean")]
    return [pid for pid in cleans if pipe_inodes(pid, ["0"]) & mine]


def test_qmail_send_stops_when_it_loses_qmail_clean(scratch):
    send = Send(scratch)
    send.wait_line(r"^status: local 0/")
    [clean] = send.wait_for(lambda: sends_clean(send), what="qmail-send's qmail-clean")
    os.kill(clean, 9)
    inject(scratch.home, b"Subject: x\n\nbody\n", "alice@localhost", ["joe@localhost"])
    send.wait_line(r"^status: exiting$")
    send.proc.wait(timeout=60)          # on its own: a SIGTERM now could meet Python's exit
    assert send.stop() == 0
    lines = send.lines()
    [end] = [i for i, line in enumerate(lines) if line.startswith("end msg ")]
    msgid = int(lines[end].split()[2])          # (inject()'s id is None when qmail-send was quicker)
    assert lines[end + 1:] == ["alert: oh no! lost qmail-clean connection! dying...",
                               "status: local 0/10 remote 0/20 exitasap",
                               "status: qmail-todo stop processing asap", "status: exiting"]
    assert [m[:len("joe@localhost")] for m in scratch.mail()] == ["joe@localhost"]
    assert scratch.queue_files() == ["mess/%d/%d" % (msgid % 23, msgid)]       # for the next cleanup


def test_an_old_message_file_qmail_clean_cannot_remove_is_logged(scratch):
    msgid = 1234
    mess = layout.mess_path(scratch.home, msgid)
    Path(mess).write_bytes(b"x")
    old = time.time() - layout.OSSIFIED - 3600
    os.utime(mess, (old, old))
    sched = scheduler(scratch, cleaner=Cleaner(cleanwire.TROUBLE))
    cleanup.cleanup(sched, time.time())
    assert sched.cleaner.requests == [b"foop/1234"]
    assert sched.log.lines == ["warning: qmail-clean unable to clean up foop/1234"]


def test_a_qmail_clean_gone_stays_gone():
    """End of file before every answer came: CleanDied; then every later call raises at once,
    writing nothing (a request must not go to a qmail-clean that may have been replaced)."""
    from qmailpy.send.cleanclient import CleanClient, CleanDied
    (req_r, req_w), (ans_r, ans_w) = os.pipe(), os.pipe()
    try:
        os.write(ans_w, cleanwire.OK)
        os.close(ans_w)
        client = CleanClient(req_w, ans_r)
        with pytest.raises(CleanDied, match="^end of file$"):
            client.request_many(cleanwire.FOOP, [1, 2])
        assert os.read(req_r, 100) == b"foop/1\0foop/2\0"
        os.set_blocking(req_r, False)
        for _ in range(2):
            with pytest.raises(CleanDied, match="^qmail-clean is gone$"):
                client.request(cleanwire.FOOP, 3)
        with pytest.raises(BlockingIOError):
            os.read(req_r, 100)                 # nothing more was written
    finally:
        for fd in (req_r, req_w, ans_r):
            os.close(fd)


def test_qmail_send_whose_qmail_clean_cannot_start_stops_as_when_it_is_lost(scratch, tmp_path):
    """qmail-clean that cannot be exec'd (not beside qmail-send, not in the home's bin/) closes
    its pipes. The first request at start-up (the leftovers of a finished message: info/ with
    mess/ gone) met the closed pipe outside the loop: an 'internal bug' line and exit 111,
    the helpers left to notice our end. It is qmail's lost-connection alert and stop, as later on."""
    import shutil
    import subprocess
    from test_send_support import BIN
    mine = tmp_path / "bin"
    mine.mkdir()
    for name in ("qmail-send", "qmail-lspawn", "qmail-rspawn", "qmail-todo", "qmail-queue"):
        shutil.copy(BIN / name, mine / name)
    Path(layout.info_path(scratch.home, 1234)).write_bytes(b"Falice@localhost\0")
    p = subprocess.run([str(mine / "qmail-send")], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=60)
    assert (p.returncode, p.stderr.decode().splitlines()) == (0, [
        "warning: msg 1234: mess/15/1234 is gone: the message was finished; removing what a power loss left of it",
        "alert: oh no! lost qmail-clean connection! dying...",
        "status: local 0/10 remote 0/20",
        "status: local 0/10 remote 0/20 exitasap",
        "status: qmail-todo stop processing asap",
        "status: exiting"])
    assert scratch.queue_files() == []
