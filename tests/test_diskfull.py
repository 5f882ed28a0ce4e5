"""A full disk, end to end: the queue's and a Maildir's file system out of space or inodes.

Every program runs in a private mount namespace (`unshare -m`; a holder process keeps it,
the programs enter it with nsenter) where a small tmpfs is mounted over the home's queue/
or over a mailbox; the test reads and fills that file system through /proc/<holder>/root.
A filler file takes the space (a directory of empty files the inodes) and is removed to
give it back. What must hold (qmail's promises):
- qmail-smtpd answers 451 (qmail-queue's 53: `qq write error or disk full`), leaves nothing
  half-written that qmail-send would take, and accepts mail again once there is room;
- qmail-todo cannot write info/ and local/: the message stays in todo/, qmail-send stays
  up without spinning, and delivers it once (exactly once) when space returns;
- qmail-local on a full Maildir: a deferral, never a bounce, no tmp/ debris, maildirsize
  intact; delivered exactly once afterwards;
- a bounce that qmail-queue cannot queue (53) stays in bounce/ and is sent later;
- qmail-local's mbox and forwards, and qmail-smtpd's own files in sessions/ (authfaillimit,
  periplimit), answer a full disk with qmail's temporary failures.
(A tmpfs charges an inode for each link too: a link can fail where a file fits.)
Root only (mount namespaces).
"""
import errno
import os
import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from queuedsvc import QUEUED, Queued
from smtpsink import sinks  # noqa: F401  (fixture)
from test_e2e_support import BIN, DOMAIN, World, inject, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

PAGE = 4096
DISK_FULL = "451 qq write error or disk full (#4.3.0)"


class Namespace:
    """A private mount namespace held by a sleeping process; programs enter it with nsenter."""

    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "3600"])
        own = os.readlink("/proc/self/ns/mnt")
        wait_until(lambda: os.readlink("/proc/%d/ns/mnt" % self.proc.pid) != own
                   and Path("/proc/%d/cmdline" % self.proc.pid).read_bytes().startswith(b"sleep"),
                   10, "the namespace holder")
        self.wrap = ["nsenter", "-t", str(self.proc.pid), "-m", "--"]

    def sh(self, script):
        r = subprocess.run(self.wrap + ["sh", "-ec", script], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()

    def path(self, *parts):
        """A path of the namespace's view, as this process can open it."""
        return os.path.join("/proc/%d/root" % self.proc.pid, *[str(p).lstrip("/") for p in parts])

    def tmpfs(self, directory, size="4m", inodes=400):
        """Mount a small tmpfs over `directory` (in the namespace), keeping its contents, owners and modes."""
        stash = str(directory).rstrip("/") + ".stash"
        st = os.stat(self.path(directory))
        self.sh("mkdir {s}; cp -a {d}/. {s}/; mount -t tmpfs -o size={z},nr_inodes={i},mode={m:o},uid={u},gid={g}"
                " tmpfs {d}; cp -a {s}/. {d}/; rm -rf {s}".format(s=stash, d=directory, z=size, i=inodes,
                                                               m=st.st_mode & 0o7777, u=st.st_uid, g=st.st_gid))
        return Filler(self.path(directory))

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Filler:
    """Takes a tmpfs's free space (a file) or its free inodes (empty files), and gives them back."""

    def __init__(self, top):
        self.top = top
        self.space = os.path.join(top, ".filler")
        self.inodes = os.path.join(top, ".inodes")

    def free(self):
        st = os.statvfs(self.top)
        return st.f_bavail * st.f_frsize, st.f_favail

    def fill(self, leave=0):
        """Take all the space but `leave` bytes (whole pages)."""
        fd = os.open(self.space, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (64 * PAGE, PAGE):      # big writes, then the last pages one by one
                while True:
                    try:
                        os.write(fd, b"\0" * chunk)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC, e
                        break
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.truncate(self.space, max(0, size - size % PAGE - leave))
        assert self.free()[0] == leave, self.free()

    def fill_inodes(self, leave=0):
        """Take every free inode but `leave`."""
        os.makedirs(self.inodes, exist_ok=True)
        n = len(os.listdir(self.inodes))
        while True:
            try:
                os.close(os.open(os.path.join(self.inodes, str(n)), os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
            n += 1
        for i in range(leave):
            os.unlink(os.path.join(self.inodes, str(n - 1 - i)))
        assert self.free()[1] == leave, self.free()

    def release(self):
        self.release_space()
        self.release_inodes()
        if os.path.exists(self.space):
            os.unlink(self.space)

    def release_space(self):
        """Give the space back, not the filler's inode."""
        if os.path.exists(self.space):
            os.truncate(self.space, 0)

    def release_inodes(self):
        if os.path.isdir(self.inodes):
            for name in os.listdir(self.inodes):
                os.unlink(os.path.join(self.inodes, name))
            os.rmdir(self.inodes)


@pytest.fixture
def ns():
    n = Namespace()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def make_world(ns):
    made = []

    def make(**kw):
        w = World(queued=False, wrap=ns.wrap, **kw)
        made.append(w)
        return w
    yield make
    for w in made:
        w.cleanup()


def start_queued(world, ns):
    world.queued = Queued(world.home, world.env(), log=os.path.join(world.top, "queued.log"),
                          argv=ns.wrap + [QUEUED]).start()
    world.procs.append(world.queued.proc)


def queue_files(ns, world):
    """Every file in the namespace's queue/ but lock/ and the fillers."""
    q = Path(ns.path(world.home, "queue"))
    return sorted(str(p.relative_to(q)) for p in q.rglob("*")
                  if p.is_file() and p.parts[len(q.parts)] not in ("lock", ".filler", ".inodes"))


def smtp(port, body, rcpt="joe@" + DOMAIN, sender="alice@remote.example"):
    """One transaction; (code, text) of the answer to the message."""
    c = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        c.ehlo("client.example")
        assert c.mail(sender)[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        code, text = c.data(body)
        return "%d %s" % (code, text.decode())
    except smtplib.SMTPDataError as e:
        return "%d %s" % (e.smtp_code, e.smtp_error.decode())
    finally:
        c.close()


def maildir_files(ns, world, local, sub="new"):
    d = Path(ns.path(world.maildir(local), sub))
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def cpu_ticks(pid):
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def body_of(tag, size=0):
    return ("Subject: %s\r\n\r\n%s\r\n" % (tag, "x" * size)).encode()


@pytest.mark.parametrize("queued", [True, False], ids=["qmail-queued", "qmail-queue"])
def test_smtpd_with_the_queue_full(ns, make_world, queued):
    """No space, too little space for the message, no inodes, an inode short for each step: 451
    and nothing left in the queue; room again: 250, and every message that got 250 is delivered once."""
    world = make_world()
    world.adduser("joe")
    fill = ns.tmpfs(os.path.join(world.home, "queue"))
    if queued:
        start_queued(world, ns)
    port = world.smtpd()
    accepted = []

    fill.fill()
    assert smtp(port, body_of("no space")) == DISK_FULL
    assert inject(world, b"Subject: direct\n\nno space\n", "a@b.example", ["joe@" + DOMAIN], ns.wrap) == 53
    assert queue_files(ns, world) == []

    fill.release()
    fill.fill(leave=16 * PAGE)
    assert smtp(port, body_of("too big", 200000)) == DISK_FULL
    assert queue_files(ns, world) == []
    got = smtp(port, body_of("small enough"))
    assert got.startswith("250 ok "), got
    accepted.append("small enough")
    kept = queue_files(ns, world)             # its mess/, intd/ and todo/ (no qmail-send yet)
    assert len(kept) == 3, kept

    fill.release()
    fill.fill_inodes()
    assert smtp(port, body_of("no inodes")) == DISK_FULL
    assert queue_files(ns, world) == kept
    for leave in (1, 2):                      # on tmpfs a link takes an inode too: the pid/ file but not its
        fill.release()                        # mess/ link; then (pid/ unlinked) intd/ but not the todo/ link
        fill.fill_inodes(leave=leave)
        assert smtp(port, body_of("%d inodes left" % leave)) == DISK_FULL, leave
        assert queue_files(ns, world) == kept, leave

    fill.release()
    got = smtp(port, body_of("room again"))
    assert got.startswith("250 ok "), got
    accepted.append("room again")

    send = world.send(QMAILPY_TIMESCALE="500")
    wait_until(lambda: len(maildir_files(ns, world, "joe")) == 2, 20, "the deliveries")
    send.wait_for(lambda: queue_files(ns, world) == [], 20, "an empty queue")
    subjects = sorted(re.search(rb"\nSubject: (.*?)\r?\n", m).group(1).decode()
                      for m in maildir_files(ns, world, "joe").values())
    assert subjects == sorted(accepted)
    assert send.stop() == 0


def subjects(files):
    return sorted(re.search(rb"\nSubject: (.*?)\r?\n", m).group(1).decode() for m in files.values())


def busy_ticks(send, seconds=2.0):
    """CPU ticks qmail-send and its helpers used in `seconds` of waiting."""
    pids = [send.proc.pid] + send.children()
    before = sum(cpu_ticks(p) for p in pids)
    time.sleep(seconds)
    return sum(cpu_ticks(p) for p in pids) - before


def test_send_and_todo_with_the_queue_full(ns, make_world):
    """qmail-todo cannot write info/ (no space, then no inodes): the messages stay in todo/,
    qmail-send and its helpers stay up and idle. Then room for the deliveries but not for a
    bounce with its copy of the message: qmail-queue's 53, bounce/ kept. Room again: every
    message delivered once, the bounce too, the queue empty."""
    world = make_world()
    world.adduser("joe")
    world.adduser("alice")
    fill = ns.tmpfs(os.path.join(world.home, "queue"))
    start_queued(world, ns)
    joe, alice = "joe@" + DOMAIN, "alice@" + DOMAIN
    assert inject(world, b"Subject: one\n\n1\n", "x@remote.example", [joe], ns.wrap) == 0
    assert inject(world, b"Subject: two\n\n2\n", "x@remote.example", [joe, alice], ns.wrap) == 0
    big = b"Subject: big\n" + (b"X-Pad: " + b"y" * 92 + b"\n") * 1000 + b"\nbody\n"   # the bounce copies the header
    assert inject(world, big, alice, ["nosuchuser@" + DOMAIN], ns.wrap) == 0
    todo = sorted(os.listdir(ns.path(world.home, "queue", "todo")))
    assert len(todo) == 3

    fill.fill()
    fill.fill_inodes()
    fill.release_space()                      # no inodes
    send = world.send(QMAILPY_TIMESCALE="500")
    send.wait_line(r"^warning: qmail-todo: unable to create info/\d+/\d+$", count=3)
    assert busy_ticks(send) < 50
    fill.fill()
    fill.release_inodes()                     # no space
    send.wait_line(r"^warning: qmail-todo: trouble writing to info/\d+/\d+$", count=3)
    assert busy_ticks(send) < 50
    assert sorted(os.listdir(ns.path(world.home, "queue", "todo"))) == todo
    assert not maildir_files(ns, world, "joe") and not maildir_files(ns, world, "alice")

    fill.release_space()
    fill.fill(leave=16 * PAGE)                # the deliveries and bounce/, not the bounce's copy of "big"
    send.wait_line(r"^warning: trouble injecting bounce message, will try later$")
    assert os.listdir(ns.path(world.home, "queue", "bounce")) != []
    fill.release()
    send.wait_line(r"^bounce msg \d+ qp \d+$")
    wait_until(lambda: len(maildir_files(ns, world, "alice")) == 2, 20, "the bounce")
    send.wait_for(lambda: queue_files(ns, world) == [], 20, "an empty queue")
    assert subjects(maildir_files(ns, world, "joe")) == ["one", "two"]
    alice_got = maildir_files(ns, world, "alice")
    assert [m for m in alice_got.values() if b"\nSubject: two\n" in m] != []
    [bounce] = [m for m in alice_got.values() if b"Subject: failure notice" in m]
    assert b"<nosuchuser@%s>:\nSorry, no mailbox here by that name. (#5.1.1)\n" % DOMAIN.encode() in bounce
    assert b"\nSubject: big\n" + (b"X-Pad: " + b"y" * 92 + b"\n") * 1000 in bounce
    assert len(send.children()) == 5
    assert send.stop() == 0


def deferrals(send):
    return len(send.stamped(r"^delivery \d+: deferral: Temporary_error_on_maildir_delivery\._\(#4\.3\.0\)/$"))


def test_local_to_a_full_maildir(ns, make_world):
    """qmail-local into a Maildir++ on a full file system (no space, then no inodes): deferrals
    in qmail's words, no bounce, nothing left in tmp/, maildirsize as it was; room again: the
    message delivered once and counted once."""
    world = make_world()
    world.users("adduser", "joe@" + DOMAIN, "-p", "pw", "-q", "1000000S")
    maildir = world.maildir("joe")
    fill = ns.tmpfs(maildir.parent)
    sizefile = Path(ns.path(maildir, "maildirsize"))
    quota = sizefile.read_bytes()
    assert quota.startswith(b"1000000S\n"), quota
    fill.fill()
    send = world.send(QMAILPY_TIMESCALE="2000")
    start_queued(world, ns)
    assert inject(world, b"Subject: one\n\n1\n", "x@remote.example", ["joe@" + DOMAIN], ns.wrap) == 0
    send.wait_for(lambda: deferrals(send) >= 2, 20, "deferrals without space")
    fill.fill_inodes()
    fill.release_space()
    seen = deferrals(send)
    send.wait_for(lambda: deferrals(send) >= seen + 2, 20, "deferrals without inodes")
    assert not send.stamped(r"failure:")
    assert os.listdir(ns.path(world.home, "queue", "bounce")) == []
    for sub in ("tmp", "new", "cur"):
        assert maildir_files(ns, world, "joe", sub) == {}, sub
    assert sizefile.read_bytes() == quota

    fill.release()
    send.wait_line(r"^delivery \d+: success: did_1\+0\+0/$")
    send.wait_for(lambda: queue_files(ns, world) == [], 20, "an empty queue")
    [(name, stored)] = maildir_files(ns, world, "joe").items()
    assert maildir_files(ns, world, "joe", "tmp") == {}
    assert sizefile.read_bytes() == quota + b"%d 1\n" % len(stored)
    assert not send.stamped(r"failure:")
    assert send.stop() == 0


def test_maildirsize_never_holds_a_cut_line(ns, make_world):
    """Room for the message and the size lock but not for the page the maildirsize line would
    start: the line is not half written (the next one would be glued to it: `170170 1`).
    The message is in new/ (counted at the next recount); the next delivery's line is whole."""
    world = make_world()
    world.users("adduser", "joe@" + DOMAIN, "-p", "pw", "-q", "1000000S")
    maildir = world.maildir("joe")
    fill = ns.tmpfs(maildir.parent)
    sizefile = Path(ns.path(maildir, "maildirsize"))
    padded = b"1000000S\n" + b"0 0\n" * ((PAGE - 3 - 9) // 4)    # 3 bytes left in its page
    assert len(padded) == PAGE - 3
    sizefile.write_bytes(padded)
    fill.fill(leave=2 * PAGE)                 # the message's tmp/ file and the lock's
    send = world.send(QMAILPY_TIMESCALE="2000")
    start_queued(world, ns)
    assert inject(world, b"Subject: one\n\n1\n", "x@remote.example", ["joe@" + DOMAIN], ns.wrap) == 0
    send.wait_line(r"^delivery \d+: success: did_1\+0\+0/$")
    assert len(maildir_files(ns, world, "joe")) == 1
    assert sizefile.read_bytes() == padded
    fill.release()
    assert inject(world, b"Subject: two\n\n2\n", "x@remote.example", ["joe@" + DOMAIN], ns.wrap) == 0
    send.wait_line(r"^delivery \d+: success: did_1\+0\+0/$", count=2)
    [two] = [m for m in maildir_files(ns, world, "joe").values() if b"Subject: two" in m]
    assert sizefile.read_bytes() == padded + b"%d 1\n" % len(two)
    assert send.stop() == 0


def qmail_local(ns, box, ext, message, env=None):
    """bin/qmail-local in the namespace for joe-<ext>@example.com of the Box; (exit code, report)."""
    path = os.path.join(str(box.root), "message")
    with open(path, "wb") as f:
        f.write(message)
    argv = ["joe", box.home, "joe" + "-" * bool(ext) + ext, "-" * bool(ext), ext, "example.com",
            "bob@ex.org", "./Maildir/"]
    with open(path, "rb") as m:
        p = subprocess.run(ns.wrap + [str(BIN / "qmail-local"), *argv], stdin=m, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=dict(box.env, **(env or {})),
                           timeout=60)            # fds 1 and 2 one pipe, as qmail-lspawn gives them
    return p.returncode, p.stdout.decode()


def test_qmail_local_on_a_full_home(ns, tmp_path):
    """bin/qmail-local into a Maildir and an mbox on a full file system: exit 111 with qmail's
    texts, tmp/ empty, the mbox cut back to where it ended; room again: delivered."""
    from test_local_support import Box
    box = Box(tmp_path)
    box.dotqmail(".qmail-box", "./Mailbox\n")
    old = b"From a@b Thu Jan  1 00:00:00 1970\nSubject: old\n\n" + b"o" * 3900 + b"\n\n"
    Path(box.home, "Mailbox").write_bytes(old)
    fill = ns.tmpfs(box.home)
    message = b"Subject: big\n\n" + (b"z" * 99 + b"\n") * 100           # 10 kB: three pages

    def local(ext):
        return qmail_local(ns, box, ext, message)

    maildir_full = (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    mbox_full = (111, "Unable to write ./Mailbox: out of disk space. (#4.3.0)\n")
    fill.fill()
    assert local("") == maildir_full
    assert local("box") == mbox_full
    fill.release()
    fill.fill(leave=PAGE)                     # the mbox's first new page only: a write cut short
    assert local("box") == mbox_full
    assert Path(ns.path(box.home, "Mailbox")).read_bytes() == old
    fill.release()
    fill.fill_inodes()
    assert local("") == maildir_full
    assert os.listdir(ns.path(box.maildir, "tmp")) == [] and os.listdir(ns.path(box.maildir, "new")) == []
    fill.release()
    assert local("") == (0, "did 1+0+0\n")
    assert local("box") == (0, "did 1+0+0\n")
    assert Path(ns.path(box.home, "Mailbox")).read_bytes().startswith(old + b"From bob@ex.org ")
    assert len(os.listdir(ns.path(box.maildir, "new"))) == 1


@pytest.mark.parametrize("queued", [True, False], ids=["qmail-queued", "qmail-queue"])
def test_forward_with_the_queue_full(ns, make_world, tmp_path, queued):
    """qmail-local's forward into a full queue: exit 111, 'Unable to forward message: qq write
    error or disk full (#4.3.0).', nothing queued; room again: queued once."""
    from test_local_support import Box
    world = make_world()
    fill = ns.tmpfs(os.path.join(world.home, "queue"))
    if queued:
        start_queued(world, ns)
    box = Box(tmp_path)
    box.dotqmail(".qmail-fwd", "&far@remote.example\n")
    env = {"QMAILHOME": world.home}
    fill.fill()
    # the report qmail-lspawn gets: qmail-local's fd 2 is its fd 1, and an exec'd qmail-queue
    # inherits it (qmailpy's qmail-queue says why on fd 2 before exit 53; qmail's says nothing)
    said = "" if queued else "qmail-queue: unable to write mess: No space left on device\n"
    assert qmail_local(ns, box, "fwd", b"Subject: fwd\n\n1\n", env) == (
        111, said + "Unable to forward message: qq write error or disk full (#4.3.0).\n")
    assert queue_files(ns, world) == []
    fill.release()
    code, report = qmail_local(ns, box, "fwd", b"Subject: fwd\n\n1\n", env)
    assert code == 0 and re.fullmatch(r"did 0\+1\+0\nqp \d+\n", report), report
    assert len(os.listdir(ns.path(world.home, "queue", "todo"))) == 1


def test_maildirsize_recount_on_a_full_disk(ns, tmp_path):
    """A maildirsize that says 'over' is recounted under the lock; with room for the message
    and the lock only, the rewrite fails: a deferral (not 'User over quota.'), tmp/ empty
    (no NeWmAiLdIrSiZe file left), maildirsize as it was; room again: recounted, delivered."""
    from test_local_support import Box
    box = Box(tmp_path)
    stale = b"1000000S\n0 0\n2000000 1\n"
    Path(box.maildir, "maildirsize").write_bytes(stale)
    fill = ns.tmpfs(box.home)
    fill.fill(leave=2 * PAGE)
    message = b"Subject: one\n\n1\n"
    assert qmail_local(ns, box, "", message) == (111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert os.listdir(ns.path(box.maildir, "tmp")) == [] and os.listdir(ns.path(box.maildir, "new")) == []
    assert Path(ns.path(box.maildir, "maildirsize")).read_bytes() == stale
    fill.release()
    assert qmail_local(ns, box, "", message) == (0, "did 1+0+0\n")
    [name] = os.listdir(ns.path(box.maildir, "new"))
    size = int(name.rsplit(",S=", 1)[1])
    assert Path(ns.path(box.maildir, "maildirsize")).read_bytes() == b"1000000S\n0 0\n%d 1\n" % size


def test_auth_with_sessions_full(ns, make_world):
    """authfaillimit counts each password check in sessions/authfail/<ip> before it is made;
    with that file system full the check cannot be counted: 454 temporary authentication
    failure, not a crash that drops the connection with the replies before it; room again: 235."""
    import base64
    world = make_world()
    world.adduser("joe", password="pw")
    world.control("smtpauth", "1")
    world.control("smtpauthplaintext", "1")
    os.makedirs(os.path.join(world.home, "sessions"))
    fill = ns.tmpfs(os.path.join(world.home, "sessions"))
    dialogue = (b"EHLO client.example\r\nAUTH PLAIN " + base64.b64encode(b"\0joe@" + DOMAIN.encode() + b"\0pw")
                + b"\r\nQUIT\r\n")

    def session():
        p = subprocess.run(ns.wrap + [str(BIN / "qmail-smtpd")], input=dialogue, capture_output=True, timeout=60,
                           env=world.env(TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", PROTO="TCP"))
        replies = [line for line in p.stdout.decode().split("\r\n") if line[:4] in ("235 ", "454 ", "221 ")]
        return p.returncode, replies, p.stderr.decode()

    fill.fill()
    code, replies, log = session()
    assert (code, replies) == (0, ["454 temporary authentication failure (#4.3.0)", "221 mx.e2e.test"]), log
    assert " authfail-unavailable ip=127.0.0.1 reason=" in log and "internal bug" not in log, log
    fill.release()
    assert session()[:2] == (0, ["235 ok, go ahead (#2.0.0)", "221 mx.e2e.test"])


def test_periplimit_with_sessions_full(ns, make_world):
    """periplimit's slot file needs an inode of sessions/; with none left the session is not
    counted (logged) and goes on: mail gets qmail's answers, not a dropped connection."""
    world = make_world()
    world.adduser("joe")
    world.control("periplimit", "2")
    os.makedirs(os.path.join(world.home, "sessions"))
    fill = ns.tmpfs(os.path.join(world.home, "sessions"))
    dialogue = (b"HELO client.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<joe@" + DOMAIN.encode()
                + b">\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    fill.fill_inodes()
    p = subprocess.run(ns.wrap + [str(BIN / "qmail-smtpd")], input=dialogue, capture_output=True, timeout=60,
                       env=world.env(TCPREMOTEIP="127.0.0.1", TCPLOCALIP="127.0.0.1", PROTO="TCP"))
    log = p.stderr.decode()
    assert p.returncode == 0, log
    assert re.search(r"\r\n250 ok \d+ qp \d+\r\n221 mx\.e2e\.test\r\n$", p.stdout.decode()), p.stdout
    assert " periplimit-unavailable ip=127.0.0.1 reason=" in log and "internal bug" not in log, log
    assert len(os.listdir(ns.path(world.home, "queue", "todo"))) == 1


def test_todo_cannot_create_remote(ns, make_world, sinks):
    """Inodes for info/ and local/ but not remote/: nothing of the message is delivered (its
    local recipient neither) until qmail-todo has made all three; then each recipient once."""
    world = make_world()
    world.adduser("joe")
    sink = sinks()
    world.control("smtproutes", "far.example:127.0.0.1:%d" % sink.port)
    fill = ns.tmpfs(os.path.join(world.home, "queue"))
    start_queued(world, ns)
    assert inject(world, b"Subject: both\n\n1\n", "x@remote.example", ["joe@" + DOMAIN, "you@far.example"],
                  ns.wrap) == 0
    fill.fill_inodes(leave=2)
    send = world.send(QMAILPY_TIMESCALE="1500")
    send.wait_line(r"^warning: qmail-todo: unable to create remote/\d+/\d+$", count=2)
    assert not send.stamped(r"^starting delivery")
    fill.release()
    send.wait_for(lambda: queue_files(ns, world) == [], 20, "an empty queue")
    assert subjects(maildir_files(ns, world, "joe")) == ["both"]
    assert [m.rcpt_tos for m in sink.messages] == [["you@far.example"]]
    assert send.stop() == 0


def test_maildirsize_lock_without_inodes(ns, tmp_path):
    """The maildirsize lock is a link of a tmp/ file, and a tmpfs link takes an inode: with none
    left for it the delivery defers at once as a full disk ('Temporary error on maildir
    delivery.'), not after 30 seconds as 'File has been locked for 30 seconds straight.'."""
    from test_local_support import Box
    box = Box(tmp_path)
    Path(box.maildir, "maildirsize").write_bytes(b"1000000S\n0 0\n")
    fill = ns.tmpfs(box.home)
    fill.fill_inodes(leave=2)                 # the message's tmp/ file and the lock's
    assert qmail_local(ns, box, "", b"Subject: one\n\n1\n") == (
        111, "Temporary error on maildir delivery. (#4.3.0)\n")
    assert sorted(os.listdir(ns.path(box.maildir))) == ["cur", "maildirsize", "new", "tmp"]
    assert os.listdir(ns.path(box.maildir, "tmp")) == [] and os.listdir(ns.path(box.maildir, "new")) == []
    fill.release()
    assert qmail_local(ns, box, "", b"Subject: one\n\n1\n") == (0, "did 1+0+0\n")
