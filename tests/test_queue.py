"""qmail-queue as a real program: exact bytes on disk, every exit code, crashes.

Each test runs bin/qmail-queue in a subprocess with QMAILHOME at a fresh
queue made by create_queue(), as qmail-smtpd will run it.
"""
import errno
import os
import random
import re
import shutil
import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qmailpy import exitcodes as X
from qmailpy.proto import qq
from qmailpy.proto.date822 import date822
from qmailpy.queue import clean, enqueue as E, entry, layout

ROOT = Path(__file__).resolve().parents[1]
QMAIL_QUEUE = str(ROOT / "bin" / "qmail-queue")
MSG = b"From: a@example.org\nSubject: hello\n\nbody line\n"
ENV = qq.encode(b"a@example.org", [b"b@example.net", b"c@example.com"])


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "qmail"
    layout.create_queue(str(h))
    return h


def qenv(home):
    return dict(os.environ, QMAILHOME=str(home))


def run_qq(home, message=MSG, envelope=ENV, tmp=None, **kw):
    """Run qmail-queue with message and envelope from files; (returncode, stderr, pid)."""
    tmp = Path(tmp or home.parent)
    (tmp / "m").write_bytes(message)
    (tmp / "e").write_bytes(envelope)
    with open(tmp / "m", "rb") as m, open(tmp / "e", "rb") as e:
        p = subprocess.Popen([QMAIL_QUEUE], stdin=m, stdout=e, stderr=subprocess.PIPE,
                             env=kw.pop("env", None) or qenv(home), **kw)
        err = p.communicate(timeout=30)[1]
    return p.returncode, err.decode(), p.pid


def debris(home):
    """Every file in the queue except lock/ (what a failed insertion must not leave)."""
    q = home / "queue"
    return sorted(str(p.relative_to(q)) for p in q.rglob("*")
                  if not p.is_dir() and p.parts[len(q.parts)] != "lock")


def only(directory):
    names = os.listdir(directory)
    assert len(names) == 1, names
    return int(names[0])


def received_re(pid, t0, t1):
    return {("Received: (qmail %d invoked by uid %d); %s\n" % (pid, os.getuid(), date822(t))).encode()
            for t in range(int(t0), int(t1) + 2)}


def test_layout_modes_and_lock_files(home):
    q = home / "queue"
    for name, _owner, mode, is_split in layout.DIRS:
        d = q / name if name else q
        assert stat.S_IMODE(d.stat().st_mode) == mode, name
        if is_split:
            assert sorted(int(n) for n in os.listdir(d)) == list(range(layout.SPLIT))
    assert (q / "lock" / "tcpto").read_bytes() == b"\0" * 1024
    assert (q / "lock" / "sendmutex").read_bytes() == b""
    assert stat.S_ISFIFO((q / "lock" / "trigger").stat().st_mode)
    assert stat.S_IMODE((q / "lock" / "trigger").stat().st_mode) == 0o622
    (q / "lock" / "tcpto").write_bytes(b"x" * 1024)
    layout.create_queue(str(home))                      # idempotent, keeps data
    assert (q / "lock" / "tcpto").read_bytes() == b"x" * 1024


def test_not_root_the_queue_is_made_as_its_user_even_where_qmails_users_exist(searchable_home, monkeypatch):
    """A private install (a user's own, `make run`): nothing is given to qmail's users, which
    only root could do; everything is made with its modes, as the user."""
    import pwd
    top = searchable_home.parent / "mine"
    top.mkdir()
    os.chown(top, 65534, 65534)
    fake = pwd.struct_passwd(("qmailx", "x", 12345, 12345, "", "/", "/bin/false"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: fake)        # qmail's users "exist"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            layout.create_queue(str(top / "qmail"))
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    q = top / "qmail" / "queue"
    for name, _owner, mode, _split in layout.DIRS:
        st = (q / name if name else q).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, mode), name
    assert (q / "lock" / "tcpto").stat().st_uid == 65534


def test_a_file_where_a_queue_directory_belongs_is_an_error_naming_it_and_is_left(home):
    """create_queue() (the install) never removes what is in a directory's place."""
    shutil.rmtree(home / "queue" / "bounce")
    (home / "queue" / "bounce").write_bytes(b"the admin's")
    with pytest.raises(FileExistsError) as e:
        layout.create_queue(str(home))
    assert e.value.filename == str(home / "queue" / "bounce")
    assert (home / "queue" / "bounce").read_bytes() == b"the admin's"


def test_a_trigger_that_is_not_a_fifo_is_made_one_again(home):
    """qmail-send reads lock/trigger as a FIFO: a regular file there (a restore from a backup
    that kept no FIFOs) is replaced by one, 0622."""
    trigger = home / "queue" / "lock" / "trigger"
    trigger.unlink()
    trigger.write_bytes(b"")
    layout.create_queue(str(home))
    st = os.lstat(trigger)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o622


def test_a_full_trigger_never_holds_up_an_insertion(home):
    """qmail-send busy and not reading lock/trigger: once its pipe is full, qmail-queue's wake-up
    byte cannot be written; the message is queued all the same and qmail-queue exits at once."""
    trigger = str(home / "queue" / "lock" / "trigger")
    reader = os.open(trigger, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(trigger, os.O_WRONLY | os.O_NONBLOCK)
    try:
        filled = 0
        while True:
            try:
                filled += os.write(writer, b"\0" * 4096)
            except BlockingIOError:
                break
        t0 = time.monotonic()
        assert run_qq(home)[:2] == (0, "")
        assert time.monotonic() - t0 < 10
        assert len(os.read(reader, 1 << 20)) == filled
        assert len(os.listdir(home / "queue" / "todo")) == 1
    finally:
        os.close(writer)
        os.close(reader)


def test_a_queue_directory_that_cannot_be_read_tells_nothing_about_the_layout(home):
    """foreign_layout() looks past info/ missing, a mess/<n> missing and a remote/<n> beyond the
    split that is not a directory, and still finds the message file in the wrong mess/<n>."""
    q = home / "queue"
    shutil.rmtree(q / "info")
    shutil.rmtree(q / "mess" / "3")
    (q / "remote" / "40").write_bytes(b"")
    assert layout.foreign_layout(str(home)) is None
    (q / "mess" / "5" / "29").write_bytes(b"")
    assert layout.foreign_layout(str(home)) == \
        "queue/mess/5/29 is not in mess/6: the queue was made with another conf-split than 23"


def test_adopting_the_messages_goes_past_a_missing_directory_and_a_file_gone_meanwhile(home, monkeypatch):
    """The install gives qmail-queue's files to qmailq (here nobody): a missing pid/ and an
    intd/ file qmail-clean removed between the listing and the chown are passed over."""
    h, q = str(home), home / "queue"
    msgid = E.enqueue(h, MSG, ENV, 0, 1, 0)
    shutil.rmtree(q / "pid")
    monkeypatch.setattr(layout, "_owners", lambda: {k: (65534, 65534) for k in layout.USERS})
    real = os.scandir

    def scandir(path):
        entries = list(real(path))
        if path.endswith("/intd"):
            os.unlink(layout.intd_path(h, msgid))
        return entries
    monkeypatch.setattr(os, "scandir", scandir)
    changed = layout.adopt_messages(h)
    assert sorted(changed) == sorted([layout.todo_path(h, msgid), layout.mess_path(h, msgid)])
    assert {(os.stat(p).st_uid, os.stat(p).st_gid) for p in changed} == {(65534, 65534)}


@pytest.mark.parametrize("name", ["pid", "info/5", "lock/tcpto", "lock/sendmutex"])
def test_repairing_the_queue_never_follows_a_link_of_its_users(home, tmp_path, name):
    """queue/ and lock/ are qmailq's, info/ qmails': those users may put a link where a queue
    directory or lock file was. create_queue() (the installer's rerun, as root) chmod'ed and
    chown'ed through it: root gave the target to qmailq (or qmails, qmailr: lock/tcpto 0644,
    so /etc/shadow readable by everybody). It refuses, naming the path, and leaves the target."""
    target = tmp_path / "target"
    if name in ("pid", "info/5"):
        target.mkdir()
    else:
        target.write_text("secret\n")
    os.chmod(target, 0o700 if target.is_dir() else 0o600)
    path = home / "queue" / name
    (shutil.rmtree if path.is_dir() else os.unlink)(path)
    os.symlink(str(target), path)
    before = os.stat(target)
    with pytest.raises(OSError) as e:
        layout.create_queue(str(home))
    assert e.value.filename == str(path) and e.value.strerror == "a link where the queue has its own file"
    after = os.stat(target)
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)


def test_a_queue_moved_to_another_file_system_behind_the_admins_link_is_repaired(home, tmp_path):
    """An admin moves the queue to a bigger disk the way qmail's admins do (stopped: cp -a,
    then $QMAILHOME/queue a link to it) and reruns the installer (an upgrade, or the migration
    steps of docs/operations.md). create_queue() stopped at the link with `OSError: a link
    where the queue has its own file: '.../queue'` (a traceback from tools/install.py), though
    the link is in $QMAILHOME, where only its owner can put one, unlike the links of qmailq or
    qmails inside the queue that it refuses (above). It repairs the queue behind the link and
    leaves the link; a link inside the moved queue is still refused."""
    q = home / "queue"
    moved = tmp_path / "disk2" / "queue"
    moved.parent.mkdir()
    subprocess.run(["cp", "-a", str(q), str(moved)], check=True)
    shutil.rmtree(q)
    os.symlink(str(moved), q)
    os.chmod(moved / "pid", 0o2770)
    layout.create_queue(str(home))
    assert os.path.islink(q) and stat.S_IMODE((moved / "pid").stat().st_mode) == 0o700
    assert stat.S_ISFIFO((moved / "lock" / "trigger").stat().st_mode)
    os.rmdir(moved / "intd")
    os.symlink(str(tmp_path), moved / "intd")
    with pytest.raises(OSError) as e:
        layout.create_queue(str(home))
    assert e.value.filename == str(q / "intd") and e.value.strerror == "a link where the queue has its own file"


def test_exact_bytes_and_trigger(home):
    trig = os.open(layout.trigger_path(str(home)), os.O_RDONLY | os.O_NONBLOCK)
    try:
        t0 = time.time()
        rc, err, pid = run_qq(home)
        t1 = time.time()
        assert (rc, err) == (0, "")
        assert os.read(trig, 16) == b"\0"
    finally:
        os.close(trig)
    q = home / "queue"
    msgid = only(q / "todo")
    mess = Path(layout.mess_path(str(home), msgid))
    data = mess.read_bytes()
    head, rest = data.split(b"\n", 1)
    assert head + b"\n" in received_re(pid, t0, t1)
    assert rest == MSG
    assert mess.stat().st_ino == msgid
    record = b"u%d\0p%d\0Fa@example.org\0Tb@example.net\0Tc@example.com\0" % (os.getuid(), pid)
    assert (q / "todo" / str(msgid)).read_bytes() == record
    assert (q / "intd" / str(msgid)).stat().st_ino == (q / "todo" / str(msgid)).stat().st_ino
    assert stat.S_IMODE(mess.stat().st_mode) == 0o644
    assert os.listdir(q / "pid") == []


def test_empty_message_no_recipients_and_longest_address(home):
    longest = b"x" * qq.MAX_ADDRESS
    rc, err, pid = run_qq(home, b"", qq.encode(longest, [longest]))
    assert (rc, err) == (0, "")
    msgid = only(home / "queue" / "todo")
    assert Path(layout.mess_path(str(home), msgid)).read_bytes().endswith(b" -0000\n")
    assert (home / "queue" / "todo" / str(msgid)).read_bytes().endswith(b"F" + longest + b"\0T" + longest + b"\0")


def test_does_not_wait_for_envelope_eof(home):
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    p = subprocess.Popen([QMAIL_QUEUE], stdin=r0, stdout=r1, env=qenv(home))
    os.close(r0), os.close(r1)
    os.write(w0, MSG), os.close(w0)
    os.write(w1, ENV + b"trailing bytes are never read")     # w1 stays open
    try:
        assert p.wait(timeout=30) == 0
    finally:
        os.close(w1)
    assert len(os.listdir(home / "queue" / "todo")) == 1


@pytest.mark.parametrize("envelope, code", [
    (b"Xa@b\0Tc@d\0\0", X.QQ_ENVELOPE_FORMAT),
    (b"Fa@b\0Xc@d\0\0", X.QQ_ENVELOPE_FORMAT),
    (b"Fa@b\0Tc@d\0", X.QQ_READ_ERROR),
    (b"Fa@b", X.QQ_READ_ERROR),
    (b"", X.QQ_READ_ERROR),
    (b"F" + b"a" * qq.ADDR + b"\0\0", X.QQ_ADDR_TOO_LONG),
    (b"Fa@b\0T" + b"r" * qq.ADDR, X.QQ_ADDR_TOO_LONG),
])
def test_envelope_errors_leave_nothing(home, envelope, code):
    rc, err, _ = run_qq(home, MSG, envelope)
    assert rc == code
    assert err.startswith("qmail-queue: ") and err.count("\n") == 1
    assert debris(home) == []


def test_missing_home_and_queue(tmp_path):
    rc, err, _ = run_qq(tmp_path / "nohome", tmp=tmp_path)
    assert rc == X.QQ_HOME and "unable to chdir" in err
    (tmp_path / "empty").mkdir()
    assert run_qq(tmp_path / "empty", tmp=tmp_path)[0] == X.QQ_QUEUE_DIR


@pytest.mark.parametrize("remove, code", [
    (["pid"], X.QQ_PID), (["mess/%d" % i for i in range(23)], X.QQ_MESS),
    (["intd"], X.QQ_INTD), (["todo"], X.QQ_TODO)])
def test_missing_queue_dirs_leave_nothing(home, remove, code):
    for d in remove:
        shutil.rmtree(home / "queue" / d)
    rc, err, _ = run_qq(home)
    assert rc == code, err
    assert debris(home) == []


def test_unreadable_message_and_config(home):
    fd = os.open(str(home.parent / "wo"), os.O_WRONLY | os.O_CREAT)    # read(): EBADF
    with open(home.parent / "e", "wb") as f:
        f.write(ENV)
    with open(home.parent / "e", "rb") as e:
        p = subprocess.run([QMAIL_QUEUE], stdin=fd, stdout=e, stderr=subprocess.PIPE, env=qenv(home))
    os.close(fd)
    assert p.returncode == X.QQ_READ_ERROR and b"unable to read message" in p.stderr
    assert debris(home) == []
    (home / "control").mkdir()
    (home / "control" / "timeoutqueue").mkdir()     # exists but cannot be read
    assert run_qq(home)[0] == X.QQ_CONFIG
    assert debris(home) == []


def test_timeout_is_52_and_cleans_up(home):
    (home / "control").mkdir()
    (home / "control" / "timeoutqueue").write_text("1\n")
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    p = subprocess.Popen([QMAIL_QUEUE], stdin=r0, stdout=r1, stderr=subprocess.PIPE, env=qenv(home))
    os.close(r0), os.close(r1)
    os.write(w0, MSG), os.close(w0)
    os.write(w1, b"Fa@b\0")                   # and then nothing
    t0 = time.time()
    try:
        assert p.wait(timeout=30) == X.QQ_TIMEOUT
    finally:
        os.close(w1)
    assert 0.5 < time.time() - t0 < 10
    assert p.stderr.read() == b"qmail-queue: timeout\n"
    assert debris(home) == []


def test_disk_full_is_53_on_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot mount a tmpfs (not root?)")
    try:
        layout.create_queue(str(mnt))
        rc, err, _ = run_qq(mnt, MSG * 5000, tmp=tmp_path)
        assert rc == X.QQ_WRITE_ERROR and "No space left" in err
        assert debris(mnt) == []
        assert run_qq(mnt, MSG, tmp=tmp_path)[0] == 0     # the space came back
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def run_forked(home, env):
    """What a pre-forking launcher does: fork, call run() on MSG and ENV, exit with its code.
    (the child's pid, its exit code)"""
    from qmailpy.ctl.reader import Controls
    from qmailpy.queue.main import run
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w0), os.close(w1)
            os._exit(run(r0, r1, env, Controls(str(home), env)))
        finally:
            os._exit(99)
    os.close(r0), os.close(r1)
    os.write(w0, MSG), os.close(w0)
    os.write(w1, ENV), os.close(w1)
    return pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_run_in_forked_child_without_exec(home):
    pid, code = run_forked(home, qenv(home))
    assert code == 0
    msgid = only(home / "queue" / "todo")
    assert Path(layout.mess_path(str(home), msgid)).read_bytes().startswith(b"Received: (qmail %d " % pid)


@pytest.fixture
def searchable_home():
    """A queue in a directory everybody may search (pytest's tmp_path is root's 0700)."""
    import tempfile
    top = tempfile.mkdtemp(prefix="qmailpy-owner-")
    try:
        os.chmod(top, 0o755)
        h = Path(top) / "qmail"
        layout.create_queue(str(h))
        yield h
    finally:
        shutil.rmtree(top)


def test_in_process_as_root_it_writes_the_queue_as_its_owner(searchable_home, monkeypatch):
    """Without qmail-queued, qmail-queue started as root (not single-user mode) becomes the
    queue's owner (qmail's setuid qmailq) before it touches the queue; the Received line still
    names root. Here the owner is nobody, to whom the queue is given (no qmailq on a test host)."""
    from qmailpy import privs
    home = searchable_home
    for p in [home / "queue", *(home / "queue").rglob("*")]:
        os.chown(p, 65534, 65534, follow_symlinks=False)
    monkeypatch.setattr(privs, "QUEUE_USER", "nobody")
    pid, code = run_forked(home, {k: v for k, v in qenv(home).items() if k != "QMAILPY_SINGLEUSER"})
    assert code == 0
    msgid = only(home / "queue" / "todo")
    mess = Path(layout.mess_path(str(home), msgid))
    assert mess.stat().st_uid == 65534 and (home / "queue" / "todo" / str(msgid)).stat().st_uid == 65534
    assert mess.read_bytes().startswith(b"Received: (qmail %d invoked by uid 0); " % pid)


def test_content_filter_hook(home):
    def keep_one(staged):
        assert Path(staged.mess_path).read_bytes().endswith(MSG)    # on disk before the commit
        assert not os.path.exists(layout.todo_path(str(home), staged.msgid))
        return staged.recipients[:1]
    msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0, content_filter=keep_one)
    assert Path(layout.todo_path(str(home), msgid)).read_bytes() == b"u7\0p1234\0Fa@example.org\0Tb@example.net\0"
    assert Path(layout.mess_path(str(home), msgid)).read_bytes() == \
        b"Received: (qmail 1234 invoked by uid 7); 1 Jan 1970 00:00:00 -0000\n" + MSG

    def refuse(staged):
        raise E.QueueError(X.QQ_PERM_REFUSED, "virus found")
    with pytest.raises(E.QueueError) as err:
        E.enqueue(str(home), MSG, ENV, 7, 1235, 0, content_filter=refuse)
    assert err.value.code == 31
    assert len(debris(home)) == 3                # only the first message's mess, intd, todo


def test_invoker_names(monkeypatch):
    import pwd
    names = {10: "alias", 11: "qmaild", 12: "qmails", 13: "bob"}

    def getpwuid(uid):
        if uid not in names:
            raise KeyError(uid)
        return pwd.struct_passwd((names[uid], "x", uid, uid, "", "/", "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    assert [E.invoker(u) for u in (10, 11, 12, 13, 14)] == [
        "by alias", "from network", "for bounce", "by uid 13", "by uid 14"]


def test_clean_stale(home):
    h, q = str(home), home / "queue"
    kept = E.enqueue(h, MSG, ENV, 0, 1, 0)
    (q / "pid" / "5.6.1").write_bytes(b"")
    debris_mess = Path(layout.mess_path(h, 1000001))
    debris_mess.write_bytes(b"half")
    Path(layout.intd_path(h, 1000001)).write_bytes(b"u0\0")
    Path(layout.intd_path(h, 1000002)).write_bytes(b"u0\0")
    Path(layout.mess_path(h, 1000003)).write_bytes(b"in flight")
    Path(layout.info_path(h, 1000003)).write_bytes(b"Fx\0")
    now = time.time()
    assert clean.clean_stale(h, now) == []                     # young debris may be a live insertion
    removed = clean.clean_stale(h, now + layout.OSSIFIED + 10)
    assert sorted(os.path.relpath(p, q) for p in removed) == sorted([
        "pid/5.6.1", "intd/1000001", "mess/%d/1000001" % (1000001 % 23), "intd/1000002"])
    assert debris(home) == sorted(["mess/%d/%d" % (kept % 23, kept), "intd/%d" % kept, "todo/%d" % kept,
                                   "mess/%d/1000003" % (1000003 % 23), "info/%d/1000003" % (1000003 % 23)])


MESS_1000001 = "mess/%d/1000001" % (1000001 % 23)


def _old_debris(home):
    """pid/5.6.1, and mess/ + intd/ of 1000001 that nothing names: all of it debris once old."""
    h, q = str(home), home / "queue"
    (q / "pid" / "5.6.1").write_bytes(b"")
    Path(layout.mess_path(h, 1000001)).write_bytes(b"half")
    Path(layout.intd_path(h, 1000001)).write_bytes(b"u0\0")


def test_clean_stale_keeps_a_message_when_it_cannot_tell_whether_info_names_it(home, monkeypatch):
    """lstat of info/ or todo/ failing otherwise than ENOENT (EIO, a damaged directory) counts
    as named: the message's files are kept, never taken for debris."""
    h, q = str(home), home / "queue"
    _old_debris(home)
    real = os.lstat

    def lstat(path, *a, **kw):
        if "/queue/info/" in str(path) or "/queue/todo/" in str(path):
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return real(path, *a, **kw)
    monkeypatch.setattr(os, "lstat", lstat)
    removed = clean.clean_stale(h, time.time() + layout.OSSIFIED + 10)
    assert [os.path.relpath(p, q) for p in removed] == ["pid/5.6.1"]
    assert debris(home) == ["intd/1000001", "mess/%d/1000001" % (1000001 % 23)]


@pytest.mark.parametrize("gone, left", [("pid", ["intd/1000001", MESS_1000001]),
                                         ("intd", ["pid/5.6.1", MESS_1000001]),
                                         ("mess/%d" % (1000001 % 23), ["pid/5.6.1", "intd/1000001"]),
                                         ("mess/0", ["pid/5.6.1", "intd/1000001", MESS_1000001])])
def test_clean_stale_goes_on_past_a_directory_it_cannot_read(home, gone, left):
    """A queue directory missing (or unreadable): nothing there to clean, the rest is cleaned
    (intd/ of a message whose mess/<n> is gone is old and unnamed: debris too)."""
    h, q = str(home), home / "queue"
    _old_debris(home)
    shutil.rmtree(q / gone)
    removed = clean.clean_stale(h, time.time() + layout.OSSIFIED + 10)
    assert sorted(os.path.relpath(p, q) for p in removed) == sorted(left)
    assert debris(home) == []


def test_a_file_gone_between_the_listing_and_its_lstat_is_not_debris(home, monkeypatch):
    """Another qmail-clean (or the insertion it belonged to) removed it meanwhile: no error."""
    h = str(home)
    (home / "queue" / "pid" / "5.6.1").write_bytes(b"")
    real = os.lstat

    def lstat(path, *a, **kw):
        if str(path).endswith("/pid/5.6.1"):
            real_unlink(path)
        return real(path, *a, **kw)
    real_unlink = os.unlink
    monkeypatch.setattr(os, "lstat", lstat)
    assert clean.stale_pids(h, time.time() + layout.OSSIFIED + 10) == []


def _records(data):
    return {r[:1]: r[1:] for r in data.split(b"\0") if r}


def test_kill_at_random_moments(home):
    """200 insertions, some SIGKILLed at random: no loss, no half message, all debris cleanable."""
    rng = random.Random(int(os.environ.get("QQ_CRASH_SEED", "1995")))
    lock = threading.Lock()
    plans = [(i, rng.choice(("complete", "kill", "kill", "late-kill")), rng.random()) for i in range(200)]
    results = {}

    def inject(plan):
        i, kind, r = plan
        local = random.Random(r)
        msg = b"Subject: %d\n\n" % i + bytes(local.choice(b"ab\n") for _ in range(local.randrange(30000)))
        env = qq.encode(b"s%d@example.org" % i, [b"r%d-%d@example.net" % (i, k) for k in range(local.randrange(1, 4))])
        r0, w0 = os.pipe()
        r1, w1 = os.pipe()
        p = subprocess.Popen([QMAIL_QUEUE], stdin=r0, stdout=r1, stderr=subprocess.DEVNULL, env=qenv(home))
        os.close(r0), os.close(r1)
        steps = [(w0, msg[k:k + 4096]) for k in range(0, len(msg), 4096)] + [(w0, None)]
        body = env[:-1]                           # the final \0 is written only by survivors
        steps += [(w1, body[k:k + 7]) for k in range(0, len(body), 7)]
        stop = local.randrange(len(steps) + 1) if kind == "kill" else len(steps)
        try:
            for fd, chunk in steps[:stop]:
                time.sleep(local.random() * 0.002)
                if chunk is None:
                    os.close(w0)
                    w0 = None
                else:
                    os.write(fd, chunk)
            if kind == "kill":
                time.sleep(local.random() * 0.05)
                p.kill()
            else:
                os.write(w1, b"\0")
                if kind == "late-kill":
                    time.sleep(local.random() * 0.02)
                    p.kill()
            rc = p.wait(timeout=60)
        finally:
            for fd in (w0, w1):
                if fd is not None:
                    os.close(fd)
        with lock:
            results[i] = (kind, rc, p.pid, msg, env)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(inject, plans))

    q = home / "queue"
    queued = {}
    for name in os.listdir(q / "todo"):
        rec = _records((q / "todo" / name).read_bytes())
        queued[int(rec[b"F"][1:].split(b"@")[0])] = int(name)
    for i, (kind, rc, pid, msg, env) in results.items():
        if kind == "kill":
            assert rc == -9 and i not in queued, (i, rc)
        if rc == 0:
            assert i in queued, i
        elif kind != "kill":
            assert rc == -9, (i, rc)
        if i in queued:
            msgid = queued[i]
            head, rest = Path(layout.mess_path(str(home), msgid)).read_bytes().split(b"\n", 1)
            assert head.startswith(b"Received: (qmail %d invoked by uid " % pid) and rest == msg
            intd = (q / "intd" / str(msgid)).read_bytes()
            assert intd == b"u%d\0p%d\0" % (os.getuid(), pid) + env[:-1]
    kinds = [k for k, rc, *_ in results.values()]
    assert kinds.count("kill") > 50 and sum(rc == 0 for _, rc, *_ in results.values()) > 40

    removed = clean.clean_stale(str(home), time.time() + 10 * layout.OSSIFIED)
    assert sum("/mess/" in p for p in removed) > 10          # kills did land mid-insertion
    ids = set(queued.values())
    assert os.listdir(q / "pid") == []
    assert {int(n) for n in os.listdir(q / "intd")} == ids
    assert {int(n) for d in os.listdir(q / "mess") for n in os.listdir(q / "mess" / d)} == ids


def _entries(home):
    """{recipients record bytes: mess bytes} of every committed entry."""
    q = home / "queue"
    out = {}
    for name in os.listdir(q / "todo"):
        rec = (q / "todo" / name).read_bytes()
        out[rec.split(b"\0", 2)[2]] = Path(layout.mess_path(str(home), int(name))).read_bytes()
    return out


def test_content_filter_copies(home):
    """A filter may split the message: one queue entry per group, copies fsynced before any commit."""
    head = b"Received: (qmail 1234 invoked by uid 7); 1 Jan 1970 00:00:00 -0000\n"
    seen = {}

    def split(staged):
        assert staged.head == head
        seen["staged"] = staged.mess_path
        return [([b"b@example.net"], None), ([b"c@example.com"], head + b"X-Copy: 1\n" + MSG),
                ([b"d@example.com"], head + b"X-Copy: 1\n" + MSG)]      # same bytes: one copy
    ids = E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=split)
    assert len(ids) == 2 and ids[0] != ids[1]
    assert _entries(home) == {b"Fa@example.org\0Tb@example.net\0": head + MSG,
                              b"Fa@example.org\0Tc@example.com\0Td@example.com\0": head + b"X-Copy: 1\n" + MSG}
    assert os.listdir(home / "queue" / "pid") == []
    assert sorted(int(n) for n in os.listdir(home / "queue" / "intd")) == sorted(ids)


def test_content_filter_copies_only_drops_the_staged_file(home):
    def copies(staged):
        return [([r], b"Received: x\n" + r + b"\n") for r in staged.recipients]
    ids = E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=copies)
    assert len(ids) == 2
    assert _entries(home) == {b"Fa@example.org\0Tb@example.net\0": b"Received: x\nb@example.net\n",
                              b"Fa@example.org\0Tc@example.com\0": b"Received: x\nc@example.com\n"}
    assert len(debris(home)) == 6                 # 2 x (mess, intd, todo): the staged mess is gone


def test_content_filter_copies_failures(home, monkeypatch):
    def copies(staged):
        return [([staged.recipients[0]], None), ([staged.recipients[1]], b"Received: x\ncopy\n")]

    real_link = os.link
    links = []

    def link(src, dst, *a, **kw):                 # the second commit link fails
        if "/todo/" in str(dst):
            links.append(dst)
            if len(links) == 2:
                raise OSError(errno.EIO, "I/O error")
        return real_link(src, dst, *a, **kw)
    monkeypatch.setattr(os, "link", link)
    trig = os.open(layout.trigger_path(str(home)), os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(E.QueueError) as err:
            E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=copies)
        assert err.value.code == X.QQ_TODO
        assert os.read(trig, 16) == b"\0"         # the committed part is delivered, not taken back
    finally:
        os.close(trig)
    assert _entries(home) == {b"Fa@example.org\0Tb@example.net\0":
                              Path(layout.mess_path(str(home), only(home / "queue" / "todo"))).read_bytes()}
    assert len(debris(home)) == 3                 # the copy's mess and intd were removed

    links.clear()
    monkeypatch.setattr(os, "link", real_link)

    def broken(staged):                          # a copy that cannot be written: nothing queued
        _fail_on(monkeypatch, "write", "mess")
        return [([staged.recipients[0]], None), ([staged.recipients[1]], b"copy")]
    before = debris(home)
    with pytest.raises(E.QueueError) as err:
        E.enqueue_all(str(home), MSG, ENV, 7, 1235, 0, content_filter=broken)
    assert err.value.code == X.QQ_WRITE_ERROR
    assert debris(home) == before


def test_no_filter_module_for_unfiltered_mail(home):
    """Nobody filtered: qmail-queue imports the cdb lookup only, never socket or the scanners."""
    import cdblib
    (home / "control").mkdir()
    with open(home / "control" / "clamavclients.cdb", "wb") as f, cdblib.Writer(f) as w:
        w.put(b"@filtered.example", b"")
    (home / "control" / "clamdsocket").write_text(str(home / "nosuch.sock") + "\n")
    code = ("import sys, runpy; sys.argv = [%r]\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    sys.stderr.write('rc=%%s %%s\\n' %% (e.code, sorted(m for m in sys.modules if m == 'socket' "
            "or m.startswith('qmailpy.filters'))))\n") % (QMAIL_QUEUE, QMAIL_QUEUE)
    mods_unfiltered = "['qmailpy.filters', 'qmailpy.filters.log', 'qmailpy.filters.select']"
    for rcpt, rc, mods in ((b"x@example.net", 0, mods_unfiltered),
                           (b"y@FILTERED.example", X.QQ_NETWORK, "'socket'")):
        (home.parent / "m").write_bytes(MSG)
        (home.parent / "e").write_bytes(qq.encode(b"a@example.org", [rcpt]))
        with open(home.parent / "m", "rb") as m, open(home.parent / "e", "rb") as e:
            p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-I", "-S", "-c", code], stdin=m, stdout=e,
                               stderr=subprocess.PIPE, env=qenv(home), timeout=30)
        err = p.stderr.decode()
        assert "rc=%d " % rc in err and mods in err, err


def _fail_on(monkeypatch, name, where, err=errno.EIO):
    """os.<name>(fd, ...) raises OSError(err) when fd is a file under queue/<where>/: the real
    write path (enqueue's _write_all and fsyncs), an I/O error of the disk."""
    real = getattr(os, name)
    # the mess file is written through the fd opened as queue/pid/<name>, since unlinked
    dirs = ("/queue/pid/", "/queue/mess/") if where == "mess" else ("/queue/%s/" % where,)

    def failing(fd, *args):
        if any(d in os.readlink("/proc/self/fd/%d" % fd) for d in dirs):
            raise OSError(err, os.strerror(err))
        return real(fd, *args)
    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize("name,where", [("write", "mess"), ("fsync", "mess"), ("write", "intd"), ("fsync", "intd")])
def test_io_error_writing_the_queue_is_53(home, monkeypatch, name, where):
    """qmail-queue answers any write or fsync failure of mess or intd with 53 (qq write error),
    not only a full disk; nothing is left behind."""
    _fail_on(monkeypatch, name, where)
    with pytest.raises(E.QueueError) as err:
        E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    assert err.value.code == X.QQ_WRITE_ERROR == 53
    assert "Input/output error" in err.value.reason
    assert debris(home) == []
    monkeypatch.undo()
    assert E.enqueue(str(home), MSG, ENV, 7, 1235, 0)


def test_io_error_is_exit_53_from_run(home):
    """The same through qmail-queue's run() in a child that exits with its code, as the program does."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.queue.main import run
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    re_, we = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w0), os.close(w1), os.close(re_)
            os.dup2(we, 2)
            mp = pytest.MonkeyPatch()
            _fail_on(mp, "write", "mess")
            env = qenv(home)
            os._exit(run(r0, r1, env, Controls(str(home), env)))
        finally:
            os._exit(99)
    os.close(r0), os.close(r1), os.close(we)
    os.write(w0, MSG), os.close(w0)
    os.write(w1, ENV), os.close(w1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 53
    with os.fdopen(re_, "rb") as f:
        assert re.fullmatch(rb"qmail-queue: unable to write mess: Input/output error\n", f.read())


# -- nothing after the commit link is taken back (issue 13, item 1)

def _dir_fsync_fails(monkeypatch, before=None, error=None):
    """os.fsync of a directory (todo/) fails with EIO, after running `before` (e.g. a qmail-todo)."""
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if before is not None:
                before()
            if error is not None:
                raise error
            raise OSError(errno.EIO, "Input/output error")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _queue_entries(home):
    """{id: (todo records, mess bytes)} of what qmail-send would find."""
    q = home / "queue"
    return {int(n): ((q / "todo" / n).read_bytes(), Path(layout.mess_path(str(home), int(n))).read_bytes())
            for n in os.listdir(q / "todo")}


def test_fsync_of_todo_failing_leaves_the_message_queued_and_says_temporary(home, monkeypatch):
    _dir_fsync_fails(monkeypatch)
    trig = os.open(layout.trigger_path(str(home)), os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(E.QueueError) as err:
            E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
        assert os.read(trig, 16) == b"\0"             # and qmail-send is told about it
    finally:
        os.close(trig)
    assert (err.value.code, err.value.reason) == (X.QQ_WRITE_ERROR, "unable to fsync todo/: Input/output error")
    [(msgid, (records, mess))] = _queue_entries(home).items()
    assert records == b"u7\0p1234\0Fa@example.org\0Tb@example.net\0Tc@example.com\0"
    assert mess.endswith(MSG)
    assert Path(layout.intd_path(str(home), msgid)).read_bytes() == records
    assert os.listdir(home / "queue" / "pid") == []


def test_fsync_failing_after_qmail_todo_took_the_message_keeps_its_mess_file(home, monkeypatch):
    """The race seen under load: qmail-todo has made info/ and local/ and removed todo/ and intd/
    before the fsync fails. The message is being delivered: its mess file must stay."""
    h = str(home)
    taken = {}

    def qmail_todo():
        [name] = os.listdir(home / "queue" / "todo")
        msgid = int(name)
        Path(layout.info_path(h, msgid)).write_bytes(b"Fa@example.org\0")
        Path(layout.local_path(h, msgid)).write_bytes(b"Tb@example.net\0")
        os.unlink(layout.intd_path(h, msgid))
        os.unlink(layout.todo_path(h, msgid))
        taken["id"] = msgid
    _dir_fsync_fails(monkeypatch, qmail_todo)
    with pytest.raises(E.QueueError) as err:
        E.enqueue(h, MSG, ENV, 7, 1234, 0)
    assert err.value.code == X.QQ_WRITE_ERROR
    assert Path(layout.mess_path(h, taken["id"])).read_bytes().endswith(MSG)
    assert debris(home) == sorted(os.path.relpath(p, home / "queue") for p in (
        layout.info_path(h, taken["id"]), layout.local_path(h, taken["id"]), layout.mess_path(h, taken["id"])))


def test_timeout_before_the_fsync_of_todo_is_done_keeps_the_message_and_says_timeout(home, monkeypatch):
    _dir_fsync_fails(monkeypatch, error=E.QueueError(X.QQ_TIMEOUT, "timeout"))
    with pytest.raises(E.QueueError) as err:
        E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    assert err.value.code == X.QQ_TIMEOUT
    assert len(_queue_entries(home)) == 1


def test_fsync_of_todo_failing_keeps_every_committed_copy(home, monkeypatch):
    def copies(staged):
        return [([staged.recipients[0]], None), ([staged.recipients[1]], b"Received: x\ncopy\n")]
    _dir_fsync_fails(monkeypatch)
    with pytest.raises(E.QueueError):
        E.enqueue_all(str(home), MSG, ENV, 7, 1234, 0, content_filter=copies)
    got = _queue_entries(home)
    assert sorted(r.split(b"\0")[-2] for r, _ in got.values()) == [b"Tb@example.net", b"Tc@example.com"]
    assert len(debris(home)) == 6 and os.listdir(home / "queue" / "pid") == []


def test_an_id_the_queue_still_names_is_never_taken(home, monkeypatch):
    """An inode number whose info/ (or todo/, local/, ...) is still there: the next pid/ file is used."""
    h = str(home)
    real = layout.referenced
    refused = []

    def referenced(home_, msgid, where=layout.IN_USE, split=layout.SPLIT):
        if not refused and where == layout.IN_USE:
            refused.append(msgid)
            Path(layout.info_path(h, msgid)).write_bytes(b"Fold@example.org\0")
        return real(home_, msgid, where, split)
    monkeypatch.setattr(layout, "referenced", referenced)
    msgid = E.enqueue(h, MSG, ENV, 7, 1234, 0)
    assert refused and msgid != refused[0]
    assert Path(layout.info_path(h, refused[0])).read_bytes() == b"Fold@example.org\0"
    assert not os.path.exists(layout.mess_path(h, refused[0]))
    assert os.listdir(home / "queue" / "pid") == []
    assert list(_queue_entries(home)) == [msgid]


def test_many_ids_the_queue_still_names_in_a_row(home, monkeypatch):
    """After a power loss many freed inode numbers may still be named by leftovers (info/,
    local/ ...), and the kernel hands them out again one after another: each is held open
    with its pid/ name unlinked at once, so no number of them uses up the pid/ names
    (seq 1..9 of one second: exit 63 after the ninth before)."""
    h = str(home)
    real, refused = layout.referenced, []

    def referenced(home_, msgid, where=layout.IN_USE, split=layout.SPLIT):
        if where == layout.IN_USE and len(refused) < 30:
            refused.append(msgid)
            return True
        return real(home_, msgid, where, split)
    monkeypatch.setattr(layout, "referenced", referenced)
    msgid = E.enqueue(h, MSG, ENV, 7, 1234, 0)
    assert len(refused) == 30 and len(set(refused + [msgid])) == 31     # all held at once: 31 numbers
    assert os.listdir(home / "queue" / "pid") == []
    assert list(_queue_entries(home)) == [msgid]


def test_a_held_pid_file_that_cannot_be_unlinked_is_left_for_clean_stale(home, monkeypatch):
    """The pid/ name of an id still in use is unlinked at once; when that fails the insertion
    goes on with the next one, and the name left is debris that clean_stale() removes."""
    h = str(home)
    real_ref, real_unlink, refused, failed = layout.referenced, os.unlink, [], []

    def referenced(home_, msgid, where=layout.IN_USE, split=layout.SPLIT):
        if where == layout.IN_USE and not refused:
            refused.append(msgid)
            return True
        return real_ref(home_, msgid, where, split)

    def unlink(path, *a, **kw):
        if "/queue/pid/" in str(path) and not failed:
            failed.append(str(path))
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return real_unlink(path, *a, **kw)
    monkeypatch.setattr(layout, "referenced", referenced)
    monkeypatch.setattr(os, "unlink", unlink)
    msgid = E.enqueue(h, MSG, ENV, 7, 1234, 0)
    monkeypatch.undo()
    assert msgid != refused[0] and list(_queue_entries(home)) == [msgid]
    assert [str(home / "queue" / "pid" / n) for n in os.listdir(home / "queue" / "pid")] == failed
    assert os.stat(failed[0]).st_ino == refused[0]
    assert clean.clean_stale(h, time.time() + layout.OSSIFIED + 10) == failed


def test_a_timeout_while_waking_qmail_send_after_the_commit_counts_as_queued(home, monkeypatch):
    """qmail-queue's alarm striking while it writes lock/trigger, after todo/ is fsynced: the
    message is queued (qmail-send finds it at its next scan), and enqueue says so."""
    def alarm(home_):
        raise E.QueueError(X.QQ_TIMEOUT, "timeout")
    monkeypatch.setattr(layout, "triggerpull", alarm)
    msgid = E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    assert list(_queue_entries(home)) == [msgid]
    assert Path(layout.mess_path(str(home), msgid)).read_bytes().endswith(MSG)


def test_an_endless_run_of_ids_in_use_is_trouble(home, monkeypatch):
    monkeypatch.setattr(layout, "referenced", lambda *a, **k: True)
    monkeypatch.setattr(entry, "HELD_MAX", 12)
    with pytest.raises(E.QueueError) as e:
        E.enqueue(str(home), MSG, ENV, 7, 1234, 0)
    assert (e.value.code, str(e.value)) == (X.QQ_PID, "unable to find a free message id: 12 in a row still in use")
    assert os.listdir(home / "queue" / "pid") == [] and list(_queue_entries(home)) == []


@pytest.mark.parametrize("when", [1, 2, 3])
def test_real_qmail_queue_with_fsync_failing_under_strace(home, tmp_path, when):
    """The real program, fsync number `when` made to fail by strace (1 mess, 2 intd, 3 todo/): a
    temporary exit, and either nothing queued (before the commit) or the whole message (after it)."""
    assert subprocess.run(["strace", "-V"], capture_output=True).returncode == 0, "strace is needed"
    (tmp_path / "m").write_bytes(MSG)
    (tmp_path / "e").write_bytes(ENV)
    with open(tmp_path / "m", "rb") as m, open(tmp_path / "e", "rb") as e:
        p = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
                            "-e", "inject=fsync:error=EIO:when=%d" % when, QMAIL_QUEUE],
                           stdin=m, stdout=e, stderr=subprocess.PIPE, env=qenv(home), timeout=60)
    assert p.returncode == X.QQ_WRITE_ERROR, p.stderr
    entries = _queue_entries(home)
    if when < 3:
        assert entries == {} and debris(home) == []
    else:
        [(msgid, (records, mess))] = entries.items()
        assert records.endswith(b"\0Fa@example.org\0Tb@example.net\0Tc@example.com\0") and mess.endswith(MSG)
        assert len(debris(home)) == 3


# -- controls qmail-queue cannot use: exit 55, the file named, nothing queued (issue 13, items 6-7)

QUEUE_NUMBERS = [c.name for c in __import__("qmailpy.ctl.registry", fromlist=["CONTROLS"]).CONTROLS
                 if c.kind in ("number", "bool") and "qmail-queue" in c.readers]


@pytest.mark.parametrize("name", QUEUE_NUMBERS)
def test_malformed_number_is_exit_55_naming_the_file(home, name):
    (home / "control").mkdir()
    (home / "control" / name).write_text("12 seconds\n")
    rc, err, _ = run_qq(home)
    assert (rc, err) == (X.QQ_CONFIG, "qmail-queue: unable to read controls: control/%s:1: not a number: "
                                      "'12 seconds'\n" % name)
    assert debris(home) == []


@pytest.mark.parametrize("name", ["clamavclients.cdb", "spamdclients.cdb"])
@pytest.mark.parametrize("damage", ["truncated", "record", "directory"])
def test_corrupt_recipient_cdb_is_exit_55_naming_the_file(home, name, damage):
    """It used to be 'internal bug' (81) or a traceback; the file is named and nothing is queued."""
    import cdblib
    (home / "control").mkdir()
    path = home / "control" / name
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"@example.net", b"")
        w.put(b"c@example.com", b"")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-1])
    elif damage == "record":             # every slot points past the end of the file
        tables = [int.from_bytes(data[8 * i:8 * i + 4], "little") for i in range(256)]
        bad = bytearray(data)
        for pos in range(min(tables), len(data), 8):
            if bad[pos + 4:pos + 8] != b"\0\0\0\0":
                bad[pos + 4:pos + 8] = (len(data) - 4).to_bytes(4, "little")
        path.write_bytes(bytes(bad))
    else:
        path.unlink()
        path.mkdir()
    rc, err, _ = run_qq(home)
    assert rc == X.QQ_CONFIG, err
    assert err.startswith("qmail-queue: unable to read controls: control/%s: " % name), err
    assert debris(home) == []
