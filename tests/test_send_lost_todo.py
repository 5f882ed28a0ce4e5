"""qmail-send dies when it loses qmail-todo, as qmail's does ("lost qmail-todo connection")."""
import os
import signal
import time

from test_send_support import Send, scratch  # noqa: F401 (scratch: fixture)


DYING = ["alert: oh no! lost qmail-todo connection! dying...",
         "status: local 0/10 remote 0/20 exitasap", "status: exiting"]


def assert_died_cleanly(send):
    """qmail's way out: the alert, exitasap, exit 0; no traceback, no other exit code."""
    lines = send.lines()
    assert send.proc.returncode == 0, lines
    assert [line for line in lines if line in DYING] == DYING and lines[-1] == DYING[-1], lines
    assert not any("Traceback" in line for line in lines), lines


def kill_todo(send, signum):
    """signum to qmail-todo once it catches SIGTERM: a SIGTERM that comes while it is still
    starting (the interpreter, its controls) ends it by the default action, without its X, and
    qmail-send then takes the lost connection for what it is (a race of the test, not of qmail)."""
    def todo_pids():
        return [pid for pid in send.children()
                if open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[2].endswith(b"qmail-todo")]

    def catches_term(pid):
        with open("/proc/%d/status" % pid) as f:
            caught = [line.split()[1] for line in f if line.startswith("SigCgt:")]
        return bool(caught) and int(caught[0], 16) & (1 << (signal.SIGTERM - 1))
    [todo] = send.wait_for(todo_pids, what="qmail-todo")
    send.wait_for(lambda: catches_term(todo), what="qmail-todo catching SIGTERM")
    os.kill(todo, signum)


def test_qmail_send_exits_when_qmail_todo_dies(scratch):
    send = Send(scratch)
    send.wait_line(r"^status: local 0/")
    kill_todo(send, signal.SIGKILL)
    deadline = time.time() + 15
    while send.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert send.proc.poll() is not None, "\n".join(send.lines())
    assert_died_cleanly(send)


def test_qmail_send_exits_when_qmail_todo_cannot_start(scratch):
    os.unlink(os.path.join(scratch.home, "queue", "lock", "trigger"))
    send = Send(scratch)
    deadline = time.time() + 15
    while send.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert send.proc.poll() is not None, "\n".join(send.lines())
    lines = send.lines()
    assert any(line.startswith("alert: qmail-todo: cannot start: ") and "lock/trigger" in line
               for line in lines), lines
    assert_died_cleanly(send)


def test_qmail_send_exits_when_qmail_todo_says_it_is_exiting(scratch):
    """qmail-todo stopping on its own (a SIGTERM of its own, its qmail-clean lost) says X and
    exits; ext-todo's qmail-send takes an X it did not ask for as tododied(). One that only
    noted it ran on without anybody reading todo/: every message queued after that stayed
    there, undelivered, until qmail-send was restarted by hand."""
    send = Send(scratch)
    send.wait_line(r"^status: local 0/")
    kill_todo(send, signal.SIGTERM)
    send.wait_line(r"^status: qmail-todo stop processing asap$")
    deadline = time.time() + 15
    while send.proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert send.proc.poll() is not None, "\n".join(send.lines())
    assert_died_cleanly(send)


def test_records_qmail_send_cannot_understand_are_logged_as_ext_todo_does():
    """ext-todo's qmail-send.c: a D record it cannot parse is 'warning: qmail-send unable to
    understand qmail-todo' (todo_del()), another unknown record '...: report mangled' (todo_do()),
    an empty one is skipped; the good records around them still count."""
    from qmailpy.proto import todowire
    from qmailpy.send import loop

    class Log:
        def __init__(self):
            self.lines = []

        def line(self, text):
            self.lines.append(text)

        def raw(self, data):
            self.lines.append(bytes(data).decode())

    class Sched:
        def __init__(self):
            self.channels, self.log, self.done = [], Log(), []

        def todo_done(self, msgid, flags, now):
            self.done.append((msgid, flags))

    class Todo:
        def __init__(self, to, frm):
            self.to, self.frm = to, frm

    frm, to = os.pipe()
    cmd_r, cmd_w = os.pipe()
    wake_r, wake_w = os.pipe()
    todo, sched = Todo(cmd_w, frm), Sched()
    lp = loop.Loop(sched, todo, 0, wake_r, loop.Flags(), {})
    os.write(to, b"D2x5\0" + b"Q?\0" + b"\0" + todowire.encode_log("new msg 5") + todowire.encode_done(5, True, False))
    lp.on_todo(0)
    assert sched.log.lines == ["warning: qmail-send unable to understand qmail-todo",
                               "warning: qmail-send unable to understand qmail-todo: report mangled",
                               "new msg 5"]
    assert sched.done == [(5, (True, False))]
    for fd in (frm, to, cmd_r, cmd_w, wake_r, wake_w):
        os.close(fd)
