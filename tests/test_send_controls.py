"""qmail-send, qmail-todo and qmail-lspawn with controls they cannot use (issue 13, items 6-8).

qmail's rule: a control a program needs that cannot be read stops it -- at start,
`alert: cannot start: unable to read controls` and exit 111; at SIGHUP the old
values stay and a warning is logged. Here a number that does not parse counts as
unreadable, and every line names the file and line.
"""
import os
import signal
import subprocess

import cdblib
import pytest

from qmailpy.ctl import registry as R
from test_send_support import BIN, Send, inject, scratch  # noqa: F401 (scratch: fixture)

MSG = b"From: alice@localhost\nSubject: hello\n\nbody line\n"
SEND_NUMBERS = [c.name for c in R.CONTROLS if c.kind in (R.NUMBER, R.BOOL) and "qmail-send" in c.readers]


def run_send(scratch):
    p = subprocess.run([str(BIN / "qmail-send")], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=60)
    return p.returncode, p.stderr.decode().splitlines()


@pytest.mark.parametrize("name", SEND_NUMBERS)
def test_malformed_number_stops_qmail_send_at_start(scratch, name):
    scratch.control(name, "fifty")
    assert run_send(scratch) == (111, [
        "alert: cannot start: unable to read controls: control/%s:1: not a number: 'fifty'" % name])


@pytest.mark.parametrize("name", ["locals", "virtualdomains", "percenthack", "bouncemessage", "options"])
def test_unreadable_control_stops_qmail_send_at_start(scratch, name):
    if name in ("locals", "virtualdomains"):
        scratch.control(name, None)
    os.makedirs(os.path.join(scratch.home, "control", name))
    assert run_send(scratch) == (111, [
        "alert: cannot start: unable to read controls: control/%s: unable to read: Is a directory" % name])


def test_malformed_number_in_options_stops_qmail_send(scratch):
    scratch.control("concurrencyremote", None)
    scratch.control("options", "# gathered\nconcurrencyremote: many")
    assert run_send(scratch) == (111, [
        "alert: cannot start: unable to read controls: control/options:2: concurrencyremote: "
        "not a number: 'many'"])


def test_sighup_with_a_bad_control_keeps_the_old_values(scratch):
    send = Send(scratch)
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    scratch.control("concurrencyremote", "5 or so")
    send.proc.send_signal(signal.SIGHUP)
    # qmail-send.c's regetcontrols(): `alert: unable to reread control/locals`; qmailpy adds the
    # line and the reason after the file's name, as to its `alert: cannot start: ...` line
    send.wait_line(r"^alert: unable to reread control/concurrencyremote:1: not a number: '5 or so'$")
    msgid = inject(scratch.home, MSG, "alice@localhost", ["joe@localhost"])
    send.wait_line(r"^end msg \d+$")                       # mail still flows, on the old values
    scratch.control("concurrencyremote", "5")
    os.makedirs(os.path.join(scratch.home, "control", "percenthack"))
    send.proc.send_signal(signal.SIGHUP)                   # qmail-send's own reread fails first
    send.wait_line(r"^alert: unable to reread control/percenthack: unable to read: Is a directory$")
    os.rmdir(os.path.join(scratch.home, "control", "percenthack"))
    scratch.control("locals", None)
    os.makedirs(os.path.join(scratch.home, "control", "locals"))
    send.proc.send_signal(signal.SIGHUP)
    send.wait_line(r"^alert: unable to reread control/locals: unable to read: Is a directory$")
    os.rmdir(os.path.join(scratch.home, "control", "locals"))
    scratch.control("locals", "localhost\nmx.example.org")
    send.proc.send_signal(signal.SIGHUP)
    send.wait_line(r"^status: local 0/10 remote 0/5$")
    assert send.stop() == 0
    lines = send.lines()
    assert msgid is None or "end msg %d" % msgid in lines
    assert not any(ln.startswith("status: local 0/10 remote 0/0") for ln in lines)


def test_concurrency_0_holds_the_channel_until_a_sighup_raises_it(scratch):
    """qmail-control(5): 'concurrencylocal ... If 0, local deliveries will be put on hold.'
    A held message is kept, not tried, not bounced; SIGHUP with a new value delivers it."""
    import time
    scratch.control("concurrencylocal", "0")
    send = Send(scratch)
    send.wait_line(r"^status: local 0/0 remote 0/20$")
    msgid = inject(scratch.home, MSG, "alice@localhost", ["joe@localhost"])
    send.wait_line(r"^info msg \d+: ")
    time.sleep(1.0)
    assert not any(ln.startswith(("starting delivery", "end msg", "bounce msg")) for ln in send.lines())
    scratch.control("concurrencylocal", "3")
    send.proc.send_signal(signal.SIGHUP)
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    lines = send.lines()
    assert "status: local 0/3 remote 0/20" in lines
    assert msgid is None or "end msg %d" % msgid in lines
    assert not any(ln.startswith("bounce msg") for ln in lines)


def test_qmail_todo_reload_failure_keeps_its_rules(scratch, monkeypatch):
    """qmail-todo rereads on qmail-send's H; a control it cannot use leaves its rules as they were.
    (Through qmail-send, its own reread fails first: qmail-send reads every control qmail-todo does.)"""
    from qmailpy import clock
    from qmailpy.send.todo_main import Todo
    todo = Todo(scratch.home, scratch.env(), clock.Clock(1))
    logged = []
    monkeypatch.setattr(todo, "log", logged.append)
    rules = todo.rewriter
    os.makedirs(os.path.join(scratch.home, "control", "srs"), exist_ok=True)
    scratch.control("srs/srs_max_age", "a month")
    todo.do_reload()
    assert todo.rewriter is rules
    # ext-todo's qmail-todo.c: `alert: qmail-todo: unable to reread control/locals`; the line and
    # the reason follow the file's name, as in qmail-send's own line
    assert logged == ["alert: qmail-todo: unable to reread control/srs/srs_max_age:1: not a number: 'a month'"]
    scratch.control("locals", "localhost\nnew.example")
    scratch.control("srs/srs_max_age", "86400")
    todo.do_reload()
    assert todo.rewriter is not rules and b"new.example" in todo.rewriter.locals


def test_qmail_todo_rereads_a_changed_control_until_it_can_with_one_alert(scratch, monkeypatch):
    """A changed file whose reread fails (one EIO here) is read again before the next batch:
    the change is not lost until the next one. While a changed file cannot be used the rules
    stay as they were, and the alert is said again only when a file changes again, or at H."""
    from qmailpy import clock
    from qmailpy.ctl import reader, watch
    from qmailpy.send.todo_main import Todo
    todo = Todo(scratch.home, scratch.env(), clock.Clock(1))
    logged = []
    monkeypatch.setattr(todo, "log", logged.append)
    rules = todo.rewriter
    read, failing = watch.read_bytes, ["control/locals"]

    def read_once(path, name=None):
        if name in failing:
            failing.remove(name)
            raise reader.unreadable(name, OSError(5, "Input/output error"))
        return read(path, name)
    monkeypatch.setattr(watch, "read_bytes", read_once)
    scratch.control("locals", "localhost\nnew.example")
    todo.fresh()
    assert todo.rewriter is rules
    assert logged == ["alert: qmail-todo: unable to reread control/locals: unable to read: Input/output error"]
    todo.fresh()
    assert b"new.example" in todo.rewriter.locals and len(logged) == 1
    rules = todo.rewriter
    todo.fresh()
    assert todo.rewriter is rules                       # nothing changed: nothing read
    os.makedirs(os.path.join(scratch.home, "control", "srs"), exist_ok=True)
    scratch.control("srs/srs_max_age", "a month")
    for _ in range(3):
        todo.fresh()
    assert todo.rewriter is rules
    said = "alert: qmail-todo: unable to reread control/srs/srs_max_age:1: not a number: '%s'"
    assert logged[1:] == [said % "a month"]
    scratch.control("srs/srs_max_age", "two months")
    todo.fresh()
    todo.fresh()
    todo.reload = True                                  # qmail-send's H: said whatever the files
    todo.fresh()
    assert logged[2:] == [said % "two months"] * 2 and todo.rewriter is rules
    scratch.control("srs/srs_max_age", "86400")
    todo.fresh()
    assert todo.rewriter is not rules and len(logged) == 4


def test_qmail_todo_commands_and_an_obscure_dialect(scratch, monkeypatch):
    """qmail-send speaks single bytes to qmail-todo: S start, H reread, X exit; anything else is
    ext-todo's warning line, and the byte changes nothing."""
    from qmailpy import clock
    from qmailpy.send.todo_main import Todo
    todo = Todo(scratch.home, scratch.env(), clock.Clock(1))
    logged = []
    monkeypatch.setattr(todo, "log", logged.append)
    todo.commands(b"Sq")
    assert (todo.started, todo.reload, todo.stop, todo.send_alive) == (True, False, False, True)
    assert logged == ["warning: qmail-todo: qmail-send speaks an obscure dialect"]
    todo.commands(b"HX")                    # X: qmail-todo.c's sigterm(), its line once
    assert (todo.reload, todo.stop) == (True, True)
    todo.commands(b"X")
    assert logged[1:] == ["status: qmail-todo stop processing asap"]


def test_qmail_todo_cannot_start_names_the_file(scratch):
    os.makedirs(os.path.join(scratch.home, "control", "srs"), exist_ok=True)
    scratch.control("srs/srs_max_age", "a month")
    p = subprocess.run([str(BIN / "qmail-todo")], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=60)
    assert (p.returncode, p.stderr) == (111, b"alert: qmail-todo: cannot start: unable to read controls: "
                                             b"control/srs/srs_max_age:1: not a number: 'a month'\n")


def test_qmail_lspawn_cannot_start_names_the_file(scratch):
    scratch.control("virtualdomains", None)
    os.makedirs(os.path.join(scratch.home, "control", "virtualdomains"))
    p = subprocess.run([str(BIN / "qmail-lspawn")], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=60)
    assert (p.returncode, p.stderr) == (111, b"alert: qmail-lspawn: cannot start: unable to read controls: "
                                             b"control/virtualdomains: unable to read: Is a directory\n")


def test_corrupt_morercpthosts_defers_an_srs_forward_instead_of_stopping_qmail_send(scratch):
    """SRS asks morercpthosts.cdb whether a sender is ours; a corrupt one must not guess 'no' (and sign a
    local sender) nor kill qmail-send: the delivery waits, and goes once the cdb is mended."""
    scratch.control("srs/srs_secrets", "key1")
    scratch.control("rcpthosts", "localhost")
    path = os.path.join(scratch.home, "control", "morercpthosts.cdb")
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"ours.example", b"")
    good = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(good[:-3])
    msgid = inject(scratch.home, MSG, "alice@elsewhere.example", ["bob@remote.example"])
    send = Send(scratch)
    send.wait_line(r"^warning: unable to read controls: control/morercpthosts.cdb: corrupt cdb: truncated: "
                   r"hash table \d+ lies outside the file; will try msg \d+ again later$")
    assert send.proc.poll() is None
    assert not any(ln.startswith("starting delivery") for ln in send.lines())
    with open(path, "wb") as f:
        f.write(good)
    send.proc.send_signal(signal.SIGALRM)                 # qmail-send: try everything now
    send.wait_line(r"^starting delivery \d+: msg \d+ to remote bob@remote.example$")
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    assert msgid is None or "end msg %d" % msgid in send.lines()


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_qmail_send_never_opens_a_link_or_fifo_at_lock_sendmutex(scratch, tmp_path, kind):
    """qmail-send starts as root and lock/ is qmailq's: a link at lock/sendmutex had root open (and
    flock, for ever) whatever it named (a device: /dev/watchdog starts the watchdog), and a FIFO
    there held root's open() until someone read it: qmail-send never started. Neither is opened."""
    mutex = os.path.join(scratch.home, "queue", "lock", "sendmutex")
    os.unlink(mutex)
    if kind == "link":
        victim = tmp_path / "run-xtables.lock"
        victim.write_bytes(b"")
        os.symlink(victim, mutex)
    else:
        os.mkfifo(mutex, 0o600)
    p = subprocess.run([str(BIN / "qmail-send")], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=20)
    assert (p.returncode, p.stderr.decode().splitlines()) == (111, ["alert: cannot start: unable to open mutex"])
