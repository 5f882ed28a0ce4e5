"""qmail-send dies when it loses qmail-todo, as qmail's does ("lost qmail-todo connection")."""
import os
import signal
import time

import pytest

from test_send_support import Scratch, Send


@pytest.fixture
def scratch(tmp_path):
    s = Scratch(tmp_path)
    yield s
    s.cleanup()


def test_qmail_send_exits_when_qmail_todo_dies(scratch):
    send = Send(scratch)
    send.wait_line(r"^status: local 0/")

    def todo_pids():
        return [pid for pid in send.children()
                if open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[2].endswith(b"qmail-todo")]
    [todo] = send.wait_for(todo_pids, what="qmail-todo")
    os.kill(todo, signal.SIGKILL)
    deadline = time.time() + 15
    while send.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert send.proc.poll() is not None, "\n".join(send.lines())
    assert "alert: oh no! lost qmail-todo connection! dying..." in send.lines()


def test_qmail_send_exits_when_qmail_todo_cannot_start(scratch):
    os.unlink(os.path.join(scratch.home, "queue", "lock", "trigger"))
    send = Send(scratch)
    deadline = time.time() + 15
    while send.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert send.proc.poll() is not None, "\n".join(send.lines())
