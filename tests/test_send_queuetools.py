"""qmail-todo's preprocessing, qmail-clean's pipe, and qmail-qstat / qmail-qread on a real queue."""
import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from qmailpy.proto import cleanwire as wire
from qmailpy.proto.date822 import date822
from qmailpy.queue import layout
from qmailpy.proto import todowire
from qmailpy.addr.rewrite import Rewriter
from qmailpy.send.cleanclient import CleanClient
from qmailpy.send.start import spawn_child
from qmailpy.send.todo import preprocess, preprocess_many
from qmailpy.send.todo_main import ParallelFsync
from test_send_support import BIN, queue_message, scratch  # noqa: F401 (scratch: fixture)


class Cleaner:
    def __init__(self, answer=wire.OK):
        self.answer, self.asked = answer, []

    def request(self, kind, msgid):
        self.asked.append((kind, msgid))
        return self.answer

    def request_many(self, kind, msgids):
        return [self.request(kind, msgid) for msgid in msgids]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_preprocess_writes_info_and_channels(scratch):
    msgid = int(queue_message(scratch.home, sender=b"a@b", recips=(b"x@localhost", b"y@virt.example", b"z@far",
                                                                    b"noat")).split("/")[1])
    stale = layout.remote_path(scratch.home, msgid)
    with open(stale, "wb") as f:                 # left by a crash: must be replaced
        f.write(b"Tstale@x\0")
    rw = Rewriter(["localhost"], ["virt.example:virt.example"], [], "envnoat.example")
    cleaner = Cleaner()
    records, done = preprocess(scratch.home, msgid, rw, cleaner)
    assert done and cleaner.asked == [(wire.TODO, msgid)]
    size = os.stat(layout.mess_path(scratch.home, msgid)).st_size
    assert records == [todowire.encode_log("new msg %d" % msgid),
                       todowire.encode_log("info msg %d: bytes %d from <a@b> qp %d uid %d"
                                           % (msgid, size, os.getpid(), os.getuid())),
                       todowire.encode_done(msgid, True, True)]
    assert read(layout.info_path(scratch.home, msgid)) == b"Fa@b\0"
    assert read(layout.local_path(scratch.home, msgid)) == b"Tx@localhost\0Tvirt.example-y@virt.example\0"
    assert read(stale) == b"Tz@far\0Tnoat@envnoat.example\0"
    assert os.stat(stale).st_mode & 0o777 == 0o600


def test_preprocess_keeps_todo_when_clean_refuses(scratch):
    msgid = int(queue_message(scratch.home).split("/")[1])
    records, done = preprocess(scratch.home, msgid, Rewriter([], [], [], "x"), Cleaner(wire.TROUBLE))
    assert not done
    assert records[-1] == todowire.encode_log("warning: qmail-clean unable to clean up todo/%d" % msgid)


def test_preprocess_many_fsyncs_every_file_before_clean(scratch):
    """A batch: every info/local/remote file is fsynced (by fsync_many, before qmail-clean hears
    of the message); the message whose fsync failed keeps todo/ and says why; the others go on."""
    ids = [int(queue_message(scratch.home, recips=(b"x@localhost", b"y@far")).split("/")[1]) for _ in range(3)]
    rw = Rewriter(["localhost"], [], [], "x")
    asked, cleaner = [], Cleaner()
    failing = {}

    def fsync_many(fds):
        asked.append(len(cleaner.asked))          # qmail-clean not asked yet
        names = [os.readlink("/proc/self/fd/%d" % fd) for fd in fds]
        failing["fd"] = names.index(layout.remote_path(scratch.home, ids[1]))
        return [i != failing["fd"] for i in range(len(fds))]

    got = preprocess_many(scratch.home, ids, rw, cleaner, fsync_many=fsync_many)
    assert asked == [0]
    assert [(msgid, done) for msgid, _, done in got] == [(ids[0], True), (ids[1], False), (ids[2], True)]
    assert cleaner.asked == [(wire.TODO, ids[0]), (wire.TODO, ids[2])]
    assert got[1][1][-1] == todowire.encode_log("warning: qmail-todo: trouble fsyncing remote/%d/%d"
                                                % (ids[1] % 23, ids[1]))
    for msgid, records, done in got:
        if done:
            assert records[-1] == todowire.encode_done(msgid, True, True)
            assert read(layout.remote_path(scratch.home, msgid)) == b"Ty@far\0"


def test_preprocess_many_with_parallel_fsync_and_qmail_clean(scratch):
    """qmail-todo's own pieces: ParallelFsync and a real qmail-clean answering pipelined requests."""
    ids = [int(queue_message(scratch.home, recips=(b"x@localhost",)).split("/")[1]) for _ in range(5)]
    proc = subprocess.Popen([str(BIN / "qmail-clean")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=scratch.env())
    try:
        cleaner = CleanClient(proc.stdin.fileno(), proc.stdout.fileno())
        got = preprocess_many(scratch.home, ids, Rewriter(["localhost"], [], [], "x"), cleaner,
                              fsync_many=ParallelFsync(4))
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    assert [done for _, _, done in got] == [True] * 5
    for msgid in ids:
        assert not os.path.exists(layout.todo_path(scratch.home, msgid))
        assert read(layout.info_path(scratch.home, msgid)) == b"Falice@localhost\0"
        assert read(layout.local_path(scratch.home, msgid)) == b"Tx@localhost\0"


def test_qmail_clean_pipe(scratch):
    msgid = int(queue_message(scratch.home).split("/")[1])
    proc = subprocess.Popen([str(BIN / "qmail-clean")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=scratch.env())
    out, _ = proc.communicate(wire.encode(wire.TODO, msgid) + b"junk\0" + b"todo/12x\0" + b"todo/" + b"1" * 5000
                              + b"\0" + wire.encode(wire.FOOP, msgid) + wire.encode(wire.FOOP, 424242), timeout=20)
    assert (out, proc.returncode) == (b"+xxx++", 0)
    assert scratch.queue_files() == []


def test_qmail_clean_removes_debris_at_start(scratch):
    old = time.time() - layout.OSSIFIED - 100
    pidfile = os.path.join(scratch.home, "queue", "pid", "123.456.1")
    open(pidfile, "w").close()
    os.utime(pidfile, (old, old))
    proc = subprocess.run([str(BIN / "qmail-clean")], input=b"", capture_output=True, env=scratch.env(), timeout=20)
    assert proc.returncode == 0 and not os.path.exists(pidfile)


def test_qmail_clean_leaves_stale_messages_to_qmail_send(scratch):
    """An old mess/ + intd/ that no todo/ or info/ names is qmail-send's to find (cleanup_do())
    and its qmail-clean's to remove on request; qmail-clean on its own takes only pid/ files,
    even where it can see info/. Both qmail-cleans used to remove such files at start: the
    second could unlink the files of a new message given the freed inode number (a bounce
    lost in CI: qmail-todo found its mess/ gone and took it for finished)."""
    msgid = int(queue_message(scratch.home).split("/")[1])
    os.unlink(layout.todo_path(scratch.home, msgid))
    old = time.time() - layout.OSSIFIED - 100
    for path in (layout.mess_path(scratch.home, msgid), layout.intd_path(scratch.home, msgid)):
        os.utime(path, (old, old))
    proc = subprocess.run([str(BIN / "qmail-clean")], input=b"", capture_output=True, env=scratch.env(), timeout=20)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert sorted(scratch.queue_files()) == sorted(["intd/%d" % msgid, "mess/%d/%d" % (msgid % 23, msgid)])
    proc = subprocess.run([str(BIN / "qmail-clean")], input=wire.encode(wire.FOOP, msgid), capture_output=True,
                          env=scratch.env(), timeout=20)
    assert (proc.returncode, proc.stdout, scratch.queue_files()) == (0, b"+", [])


def test_qstat_and_qread(scratch):
    env = scratch.env()
    a = int(queue_message(scratch.home, sender=b"alice@x", recips=(b"bob@localhost",)).split("/")[1])
    b = int(queue_message(scratch.home, sender=b"c\x01d@y", recips=(b"e@far",)).split("/")[1])
    out = subprocess.run([str(BIN / "qmail-qstat")], capture_output=True, env=env, timeout=20)
    assert out.stdout == b"messages in queue: 2\nmessages in queue but not yet preprocessed: 2\n"
    rw = Rewriter(["localhost"], [], [], "x")
    for msgid in (a, b):
        assert preprocess(scratch.home, msgid, rw, Cleaner())[1]
        os.unlink(layout.todo_path(scratch.home, msgid))
    with open(layout.local_path(scratch.home, a), "r+b") as f:
        f.write(b"D")
    open(layout.bounce_path(scratch.home, b), "w").close()
    out = subprocess.run([str(BIN / "qmail-qstat"), "--json"], capture_output=True, env=env, timeout=20)
    assert json.loads(out.stdout) == {"messages": 2, "unprocessed": 0}
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=env, timeout=20)
    expect = {}
    for msgid, line, rcpt in ((a, "<alice@x> ", "  done\tlocal\tbob@localhost"),
                              (b, "<c_d@y>  bouncing", "\tremote\te@far")):
        info = os.stat(layout.info_path(scratch.home, msgid))
        size = os.stat(layout.mess_path(scratch.home, msgid)).st_size
        expect[msgid] = "%s GMT  #%d  %d  %s\n%s\n" % (date822(info.st_mtime)[:-6], msgid, size, line, rcpt)
    order = sorted((a, b), key=lambda m: (m % 23, m))
    assert out.stdout.decode() == "".join(expect[m] for m in order)
    got = json.loads(subprocess.run([str(BIN / "qmail-qread"), "--json"], capture_output=True, env=env,
                                    timeout=20).stdout)
    assert [m["id"] for m in got] == order
    assert {m["id"]: m["recipients"] for m in got} == {
        a: [{"channel": "local", "address": "bob@localhost", "done": True}],
        b: [{"channel": "remote", "address": "e@far", "done": False}]}


def test_qread_says_trouble_in_qmail_words(scratch):
    """qmail-qread.c err(): a message it cannot read is `warning: trouble with #N: ` and qmail's
    error_str() (`file does not exist`, not strerror's text), and the listing goes on."""
    msgid = int(queue_message(scratch.home).split("/")[1])
    rw = Rewriter(["localhost"], [], [], "x")
    assert preprocess(scratch.home, msgid, rw, Cleaner())[1]
    os.unlink(layout.mess_path(scratch.home, msgid))
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout) == (0, b"warning: trouble with #%d: file does not exist\n" % msgid)


def test_qread_skips_queue_names_that_are_not_ascii_numbers(scratch):
    """qmail's readsubdir() takes a name of info/N for a message only when scan_ulong() reads all
    of it, so anything else there is passed over. `²` and `٣` are str.isdigit() but no ASCII
    number: `²` made qmail-qread an internal bug (int() refuses it), `٣` read as message 3."""
    msgid = int(queue_message(scratch.home, sender=b"alice@x", recips=(b"bob@localhost",)).split("/")[1])
    assert preprocess(scratch.home, msgid, Rewriter(["localhost"], [], [], "x"), Cleaner())[1]
    os.unlink(layout.todo_path(scratch.home, msgid))
    for name in ("\u00b2", "\u0663", "7x"):
        open(os.path.join(scratch.home, "queue", "info", str(msgid % 23), name), "w").close()
    info = os.stat(layout.info_path(scratch.home, msgid))
    size = os.stat(layout.mess_path(scratch.home, msgid)).st_size
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout.decode(), out.stderr) == (0, "%s GMT  #%d  %d  <alice@x> \n\tlocal\tbob@localhost\n" % (
        date822(info.st_mtime)[:-6], msgid, size), b"")


def test_queue_ids_are_ascii_numbers_only():
    """One rule for every scan of a queue directory (info/ for qmail-send and qmail-qread, todo/
    for qmail-todo, mess/ and intd/ for the debris): what qmail's scan_ulong() reads whole."""
    assert layout.numeric_ids(["12", "0005", "\u00b2", "\u0663", "7x", "", "-1", "+1", " 1"]) == [12, 5]


@pytest.mark.parametrize("missing", ["queue", "queue/info/7"])
def test_qread_exits_111_when_the_queue_is_missing(scratch, missing):
    """As qmail's qmail-qread (die_chdir, die_opendir): a queue/ or an info/ subdirectory
    that cannot be opened, even one that does not exist, is fatal; exit 111, not an empty
    listing with exit 0 (docs/qmail-qread.md)."""
    import shutil
    shutil.rmtree(os.path.join(scratch.home, missing))
    said = (b"fatal: unable to chdir: file does not exist\n" if missing == "queue" else
            b"fatal: unable to opendir info/7: file does not exist\n")
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout, out.stderr) == (111, said, b"")          # qmail's warn(): stdout
    out = subprocess.run([str(BIN / "qmail-qread"), "--json"], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout, out.stderr) == (111, b"", said)


def test_stale_mess_files_found_by_qmail_send(scratch):
    from qmailpy.queue.clean import stale_mess_ids as stale_ids
    msgid = int(queue_message(scratch.home).split("/")[1])
    mess = layout.mess_path(scratch.home, msgid)
    old = time.time() - layout.OSSIFIED - 10
    os.utime(mess, (old, old))
    now = time.time()
    assert list(stale_ids(scratch.home, now)) == []                  # todo/ still there
    os.unlink(layout.todo_path(scratch.home, msgid))
    open(layout.info_path(scratch.home, msgid), "w").close()
    assert list(stale_ids(scratch.home, now)) == []                  # info/: a live message
    os.unlink(layout.info_path(scratch.home, msgid))
    assert list(stale_ids(scratch.home, now)) == [msgid]
    assert list(stale_ids(scratch.home, old + layout.OSSIFIED)) == []  # not old enough then


def test_sendmutex_keeps_a_second_qmail_send_out(scratch, monkeypatch):
    import fcntl
    from qmailpy.send import main as send_main
    monkeypatch.setattr(send_main, "LOCK_WAIT", 0.2)
    fd = send_main.take_lock(scratch.home)
    assert fd is not None
    try:
        assert send_main.take_lock(scratch.home) is None          # held by the first one
    finally:
        os.close(fd)
    fd = send_main.take_lock(scratch.home)
    assert fd is not None
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class StandaloneTodo:
    """bin/qmail-todo on pipes as qmail-send starts it (fd 0 commands, fd 1 records, its own
    qmail-clean on fds 3/4, lock/sendmutex on fd 5); the test plays qmail-send."""

    def __init__(self, scratch):
        (cmd_r, self.cmd_w), (self.out_r, out_w) = os.pipe(), os.pipe()
        (req_r, req_w), (ans_r, ans_w) = os.pipe(), os.pipe()
        self.clean = subprocess.Popen([str(BIN / "qmail-clean")], stdin=req_r, stdout=ans_w, env=scratch.env())
        lock = os.open(os.path.join(scratch.home, "queue", "lock", "sendmutex"), os.O_WRONLY)
        self.pid = spawn_child([str(BIN / "qmail-todo")], {0: cmd_r, 1: out_w, 2: 2, 3: req_w, 4: ans_r, 5: lock},
                               scratch.env())
        for fd in (cmd_r, out_w, req_r, req_w, ans_r, ans_w, lock):
            os.close(fd)

    def read_until(self, end):
        import select
        got = b""
        while not got.endswith(end):
            assert select.select([self.out_r], [], [], 30)[0], got
            more = os.read(self.out_r, 4096)
            assert more, got
            got += more
        return got

    def wait(self):
        status = os.waitpid(self.pid, 0)[1]
        self.pid = None
        return status

    def close(self):
        os.close(self.cmd_w)
        os.close(self.out_r)
        if self.pid is not None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        self.clean.wait(timeout=30)


@contextlib.contextmanager
def standalone_todo(scratch):
    todo = StandaloneTodo(scratch)
    try:
        yield todo
    finally:
        todo.close()


def test_qmail_todo_takes_nothing_out_of_todo_before_qmail_sends_s(scratch):
    """ext-todo's start: qmail-send rebuilds its queues from info/ and only then writes S
    (qmail-send.c todo_init()); qmail-todo.c waits for that byte before its first scan. One
    that went ahead could report a message qmail-send had already found in info/ and finished:
    the late D record queued a message that was gone (a 'trouble opening' warning every 123 s,
    and a later message given the same inode read half-written)."""
    import select
    msgid = int(queue_message(scratch.home).split("/")[1])
    with standalone_todo(scratch) as todo:
        assert select.select([todo.out_r], [], [], 3)[0] == []        # started, and waiting for S
        assert os.path.exists(layout.todo_path(scratch.home, msgid))
        assert not os.path.exists(layout.info_path(scratch.home, msgid))
        os.write(todo.cmd_w, todowire.START)
        got = todo.read_until(todowire.encode_done(msgid, True, False))
        assert got.startswith(todowire.encode_log("new msg %d" % msgid))
        assert not os.path.exists(layout.todo_path(scratch.home, msgid))
        os.write(todo.cmd_w, todowire.EXIT)     # qmail-todo.c: sigterm()'s line, then X
        got = todo.read_until(todowire.encode_exit())
        assert got == todowire.encode_log("status: qmail-todo stop processing asap") + todowire.encode_exit()
        assert todo.wait() == 0


def test_qmail_todo_opens_todo_again_10_s_after_it_could_not(scratch):
    """qmail-todo.c reads todo/ with readsubdir and pausedir(): 'alert: unable to opendir todo,
    sleeping...' and todo/ is opened again 10 s later, not at the next trigger or SLEEP_TODO
    (25 minutes) later."""
    from test_send_support import Send
    msgid = int(queue_message(scratch.home).split("/")[1])
    todo = os.path.join(scratch.home, "queue", "todo")
    os.rename(todo, todo + ".aside")
    open(todo, "w").close()                        # todo: ENOTDIR for now
    send = Send(scratch, QMAILPY_TIMESCALE="20")  # 10 s: 0.5 s; SLEEP_TODO: 75 s
    send.wait_line(r"^alert: unable to opendir todo, sleeping\.\.\.$")
    os.unlink(todo)
    os.rename(todo + ".aside", todo)               # no trigger: only the pause brings it back
    send.wait_line(r"^end msg %d$" % msgid)
    assert send.stop() == 0


def test_qread_shows_a_message_whose_channel_file_it_cannot_open(scratch):
    """qmail-qread.c: local/ or remote/ that cannot be opened for another reason than ENOENT
    gives err()'s warning after the message's line, and the other channel's recipients follow;
    the message is not left out. (A symbolic link loop: a reason even root meets.)"""
    msgid = int(queue_message(scratch.home, sender=b"alice@x", recips=(b"bob@localhost", b"e@far")).split("/")[1])
    assert preprocess(scratch.home, msgid, Rewriter(["localhost"], [], [], "x"), Cleaner())[1]
    os.unlink(layout.todo_path(scratch.home, msgid))
    local = layout.local_path(scratch.home, msgid)
    os.unlink(local)
    os.symlink(os.path.basename(local), local)
    info = os.stat(layout.info_path(scratch.home, msgid))
    size = os.stat(layout.mess_path(scratch.home, msgid)).st_size
    warning = "warning: trouble with #%d: symbolic link loop\n" % msgid
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout.decode()) == (0, "%s GMT  #%d  %d  <alice@x> \n%s\tremote\te@far\n" % (
        date822(info.st_mtime)[:-6], msgid, size, warning))
    out = subprocess.run([str(BIN / "qmail-qread"), "--json"], capture_output=True, env=scratch.env(), timeout=20)
    assert out.stderr.decode() == warning
    assert [(m["id"], m["recipients"]) for m in json.loads(out.stdout)] == [
        (msgid, [{"channel": "remote", "address": "e@far", "done": False}])]


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_qread_never_opens_a_fifo_or_link_in_qmails_directories(scratch, tmp_path, kind):
    """qmail-qread is run by root, and info/, local/ and remote/ are qmails': a FIFO there held
    root's open() for ever (qmail's open_read() is O_NDELAY), a link had root read and print what
    it named (/etc/shadow as a message's sender). Neither is opened: err()'s warning, and the
    listing goes on."""
    msgid = int(queue_message(scratch.home, sender=b"alice@x", recips=(b"bob@localhost",)).split("/")[1])
    assert preprocess(scratch.home, msgid, Rewriter(["localhost"], [], [], "x"), Cleaner())[1]
    os.unlink(layout.todo_path(scratch.home, msgid))
    info = layout.info_path(scratch.home, msgid)
    os.unlink(info)
    if kind == "fifo":
        os.mkfifo(info, 0o600)
    else:
        shadow = tmp_path / "shadow"
        shadow.write_bytes(b"Froot:$6$secret:19000::::::\0")
        os.symlink(shadow, info)
    reason = "not a regular file" if kind == "fifo" else "symbolic link loop"
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=scratch.env(), timeout=20)
    assert (out.returncode, out.stdout.decode()) == (0, "warning: trouble with #%d: %s\n" % (msgid, reason))


def test_qmail_todo_rereads_its_controls_on_its_own_sighup(scratch):
    """qmail-todo.c catches SIGHUP (flagreadasap) as qmail-send's H: a SIGHUP that comes even
    before qmail-send's S is kept and the controls are read again once it runs; a control it
    cannot use then is ext-todo's alert (todo/ is empty: no scan rereads them on its own)."""
    import select
    from test_e2e_support import wait_until
    with standalone_todo(scratch) as todo:
        def catches_hup():
            with open("/proc/%d/status" % todo.pid) as f:
                caught = [line.split()[1] for line in f if line.startswith("SigCgt:")]
            return bool(caught) and int(caught[0], 16) & (1 << (signal.SIGHUP - 1))
        wait_until(catches_hup, what="qmail-todo catching SIGHUP")
        os.makedirs(os.path.join(scratch.home, "control", "srs"), exist_ok=True)
        scratch.control("srs/srs_max_age", "a month")
        os.kill(todo.pid, signal.SIGHUP)
        time.sleep(0.2)                         # before S: the SIGHUP is noted, nothing is read yet
        assert select.select([todo.out_r], [], [], 0)[0] == []
        os.write(todo.cmd_w, todowire.START)
        assert todo.read_until(b"\0") == todowire.encode_log(
            "alert: qmail-todo: unable to reread control/srs/srs_max_age:1: not a number: 'a month'")
        os.write(todo.cmd_w, todowire.EXIT)
        assert todo.wait() == 0
