"""One Maildir++ mailbox, two delivering hosts at once (as over NFS): docs/maildir.md, "Shared over NFS".

Each "host" is a process with its own host name (a UTS namespace of its own as root,
else qmailpy.maildirpp.hostname replaced) calling qmail-local's maildir delivery in a
loop; both start together on the same mailbox with a count quota. Nothing relies on
flock(): the maildirsize lock is maildirpp.size_lock, a link()-made dot-lock.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from qmailpy import maildirpp
from qmailpy.local import errors, maildir as maildir_delivery
from conftest import ROOT
from test_local_support import maildirmake

PER_HOST = 550
QUOTA = "1000000000S,1000C"

CHILD = r"""
import json, os, sys, tempfile
host, box, n, quota = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from qmailpy import maildirpp
if maildirpp.hostname() != host:            # not in a UTS namespace of its own
    maildirpp.hostname = lambda: host
    import qmailpy.local.maildir as m
    m.hostname = maildirpp.hostname
from qmailpy.local import errors, maildir
sys.stdin.readline()                        # start together
done, refused = [], []
with tempfile.TemporaryFile() as f:
    for i in range(n):
        mid = "%s-%d" % (host, i)
        f.seek(0)
        f.truncate()
        f.write(b"Message-ID: <%s>\n\n" % mid.encode() + b"x" * (i % 97) + b"\n")
        f.flush()
        f.seek(0)
        try:
            maildir.deliver(box, f.fileno(), b"Delivered-To: joe@shared.example\n", {"MAILDIRQUOTA": quota})
            done.append(mid)
        except errors.Die as e:
            refused.append([mid, e.code, e.text])
print(json.dumps({"host": maildirpp.hostname(), "done": done, "refused": refused}))
"""


def host_process(name, box):
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = [sys.executable, "-c", CHILD, name, box, str(PER_HOST), QUOTA]
    if os.geteuid() == 0:
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name] + argv
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_two_hosts_deliver_into_one_mailbox(tmp_path):
    box = maildirmake(str(tmp_path / "Maildir"))
    maildirpp.recount(box, QUOTA)
    procs = [host_process(name, box) for name in ("mx-a.shared.example", "mx-b.shared.example")]
    time.sleep(0.3)                          # both interpreters up, then go
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert [r["host"] for r in results] == ["mx-a.shared.example", "mx-b.shared.example"]
    done = [m for r in results for m in r["done"]]
    refused = [m for r in results for m in r["refused"]]
    # the count quota is exact across both hosts: 1,000 in, every other one refused for good
    assert len(done) == 1000 and len(refused) == 2 * PER_HOST - 1000
    assert {(code, text) for _, code, text in refused} == {(100, errors.OVER_QUOTA)}
    assert all(r["done"] for r in results), "one host did all the work: no concurrency shown"
    names = os.listdir(os.path.join(box, "new"))
    assert len(names) == 1000 and os.listdir(os.path.join(box, "tmp")) == []
    # each host's files carry its name; each file holds one message, none overwritten
    ids = []
    for name in names:
        host = name.split(".", 2)[2].split(",")[0]
        with open(os.path.join(box, "new", name), "rb") as f:
            mid = f.read().split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
        assert mid.startswith(host + "-"), (name, mid)
        assert name.endswith(",S=%d" % os.path.getsize(os.path.join(box, "new", name)))
        ids.append(mid)
    assert sorted(ids) == sorted(done)
    # maildirsize sums to a recount: no line lost to a rewrite, none counted twice
    state = maildirpp.read(os.path.join(box, maildirpp.NAME))
    assert state.definition == QUOTA
    assert (state.size, state.count) == maildirpp.scan(box)
    assert not os.path.exists(os.path.join(box, maildirpp.LOCK))


def test_size_lock_is_a_link_made_dot_lock(tmp_path):
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = os.path.join(box, maildirpp.LOCK)
    with maildirpp.size_lock(box, "mx-a"):
        assert os.path.exists(lock) and os.stat(lock).st_nlink == 1   # its tmp/ name is gone
        assert os.listdir(os.path.join(box, "tmp")) == []
        with pytest.raises(maildirpp.LockTimeout):
            with maildirpp.size_lock(box, "mx-b", wait=0.2):
                pass
    assert not os.path.exists(lock) and os.listdir(os.path.join(box, "tmp")) == []


def test_stale_lock_is_broken(tmp_path):
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = os.path.join(box, maildirpp.LOCK)
    with open(lock, "w") as f:
        f.write("12345\n")
    old = time.time() - maildirpp.LOCK_STALE - 5
    os.utime(lock, (old, old))
    with maildirpp.size_lock(box, "mx-a", wait=2):
        assert os.stat(lock).st_mtime > old
    assert not os.path.exists(lock)


def test_a_lock_dated_ahead_of_a_clock_stepped_back_is_stale(tmp_path):
    """A lock left by a killed holder before the clock was stepped back two days looked
    younger than LOCK_STALE for two days: every delivery into the mailbox (with a quota)
    deferred with 'slow lock' until the clock caught up, and bounced past queuelifetime.
    A lock dated more than LOCK_STALE ahead is no live holder's (host clocks agree within a
    minute) and is broken as an old one is."""
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = os.path.join(box, maildirpp.LOCK)
    with open(lock, "w") as f:
        f.write("12345\n")
    ahead = time.time() + 2 * 86400
    os.utime(lock, (ahead, ahead))
    with maildirpp.size_lock(box, "mx-a", wait=2):
        assert os.stat(lock).st_mtime < ahead
    assert not os.path.exists(lock)


def test_two_waiters_break_a_stale_lock_once(tmp_path, monkeypatch):
    """Two deliveries waiting on a lock its holder left behind: each judged it stale and unlinked
    whatever the name held then, so the slower one unlinked the lock the faster one had taken
    after breaking it, and both held it (a recount could overwrite the other's line; both could
    take the last bytes of the quota). Here waiter A is paused just before its unlink and B runs
    meanwhile: B must not get in, and A and B must never hold the lock together."""
    import threading
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = os.path.join(box, maildirpp.LOCK)
    with open(lock, "w") as f:
        f.write("12345\n")
    old = time.time() - maildirpp.LOCK_STALE - 5
    os.utime(lock, (old, old))
    real_unlink = os.unlink
    paused, b_in, release_b = threading.Event(), threading.Event(), threading.Event()
    inside, most, order, b_in_while_paused = [0], [0], [], []
    count = threading.Lock()

    def unlink(path, *args, **kwargs):
        if path == lock and threading.current_thread().name == "A" and not paused.is_set():
            paused.set()            # the other waiter breaks the same stale lock now, if it can
            b_in_while_paused.append(b_in.wait(2))
        return real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)

    def holder(name, host, until):
        with maildirpp.size_lock(box, host, wait=10):
            with count:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                order.append(name)
            if name == "B":
                b_in.set()
            until.wait(3)
            with count:
                inside[0] -= 1
    a_done = threading.Event()
    a_done.set()
    a = threading.Thread(target=holder, args=("A", "mx-a", a_done), name="A")
    b = threading.Thread(target=holder, args=("B", "mx-b", release_b), name="B")
    a.start()
    assert paused.wait(5)
    b.start()
    a.join(10)
    release_b.set()
    b.join(10)
    # B never got in while A was breaking the lock, and never both at once; who takes the
    # lock once A has broken it is a race A may lose (it sleeps before linking again)
    assert (b_in_while_paused, sorted(order), most[0]) == ([False], ["A", "B"], 1)
    assert not os.path.exists(lock)
    assert sorted(os.listdir(box)) == sorted(["cur", "new", "tmp"])
    assert os.listdir(os.path.join(box, "tmp")) == []


def test_held_lock_is_a_temporary_failure(tmp_path, monkeypatch):
    box = maildirmake(str(tmp_path / "Maildir"))
    maildirpp.recount(box, "100000S")
    monkeypatch.setattr(maildirpp, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(maildirpp.size_lock.__init__, "__defaults__", (None, 0.2, maildirpp.LOCK_STALE))
    msg = tmp_path / "msg"
    msg.write_bytes(b"Subject: x\n\nbody\n")
    with maildirpp.size_lock(box, "other-host"):
        with open(msg, "rb") as f:
            with pytest.raises(errors.Die) as e:
                maildir_delivery.deliver(box, f.fileno(), b"", {})
    assert (e.value.code, e.value.text) == (errors.TEMP, errors.SLOW_LOCK)
    assert os.listdir(os.path.join(box, "new")) == [] and os.listdir(os.path.join(box, "tmp")) == []
    assert maildirpp.read(os.path.join(box, maildirpp.NAME)).count == 0


def stale(path, text="12345\n"):
    """A file at `path` left by a holder killed long ago (older than LOCK_STALE)."""
    with open(path, "w") as f:
        f.write(text)
    old = time.time() - maildirpp.LOCK_STALE - 5
    os.utime(path, (old, old))


def test_a_break_guard_left_by_a_killed_breaker_is_itself_broken(tmp_path):
    """A waiter killed between making maildirsize.lock.break and removing it left the guard
    behind: once stale it is removed, then the stale lock is broken and taken."""
    box = maildirmake(str(tmp_path / "Maildir"))
    stale(os.path.join(box, maildirpp.LOCK))
    stale(os.path.join(box, maildirpp.BREAK))
    with maildirpp.size_lock(box, "mx-a", wait=5):
        assert sorted(os.listdir(box)) == ["cur", maildirpp.LOCK, "new", "tmp"]
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"] and os.listdir(os.path.join(box, "tmp")) == []


def test_a_lock_taken_again_while_the_guard_was_made_is_left_alone(tmp_path, monkeypatch):
    """Between finding the lock stale and holding the guard another waiter broke it and took
    it: the lock there now is a live holder's and is not removed (only the guard is)."""
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = os.path.join(box, maildirpp.LOCK)
    stale(lock)
    real = maildirpp.size_lock._stale
    calls = []

    def seen(self, path):
        calls.append(path)
        if path == lock and len(calls) == 2:        # the second look, under the guard
            os.utime(lock)                          # the lock another waiter holds now
        return real(self, path)
    monkeypatch.setattr(maildirpp.size_lock, "_stale", seen)
    with pytest.raises(maildirpp.LockTimeout):
        with maildirpp.size_lock(box, "mx-a", wait=0.2):
            pass
    assert sorted(os.listdir(box)) == ["cur", maildirpp.LOCK, "new", "tmp"]     # no guard left


def test_a_link_nfs_reports_failed_but_made_holds_the_lock(tmp_path, monkeypatch):
    """NFS: a retransmitted link() can fail after the first one was made; the link count of
    our tmp/ file tells, and the lock is ours (released as usual)."""
    box = maildirmake(str(tmp_path / "Maildir"))
    real = os.link

    def link(src, dst):
        real(src, dst)
        raise OSError(5, "Input/output error", dst)
    monkeypatch.setattr(os, "link", link)
    with maildirpp.size_lock(box, "mx-a", wait=0.5):
        assert os.path.exists(os.path.join(box, maildirpp.LOCK))
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]


def test_a_lock_that_vanishes_meanwhile_is_no_trouble(tmp_path):
    """The holder released it between our failed link and our look at its age: not stale, and
    the next try takes it. A lock broken under us (we are past LOCK_STALE) is left as gone."""
    box = maildirmake(str(tmp_path / "Maildir"))
    lock = maildirpp.size_lock(box, "mx-a")
    assert lock._stale(os.path.join(box, maildirpp.LOCK)) is False
    with lock:
        os.unlink(os.path.join(box, maildirpp.LOCK))
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]


def test_remove_without_a_maildirsize_takes_no_lock(tmp_path, monkeypatch):
    box = maildirmake(str(tmp_path / "Maildir"))
    monkeypatch.setattr(maildirpp, "size_lock", None)        # any use of it would raise
    maildirpp.remove(box)
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]


def test_scan_counts_what_is_there_now(tmp_path, monkeypatch):
    """A folder without new/ or cur/ counts what it has; a message without S= that a reader
    expunges between the listing and its stat is not counted; a keyword flag (lowercase)
    ends the flags, so only a T before it makes a message trash."""
    box = maildirmake(str(tmp_path / "Maildir"))
    sub = os.path.join(box, ".Sub")
    os.makedirs(os.path.join(sub, "cur"))                     # no new/
    for folder, sub_, name, size in ((box, "cur", "1.a,S=100:2,S", 100), (box, "cur", "2.b,S=7:2,ST", 7),
                                     (box, "cur", "3.c,S=20:2,Sa", 20), (sub, "cur", "4.d,S=3:2,", 3),
                                     (box, "new", "5.e", 0)):
        with open(os.path.join(folder, sub_, name), "wb") as f:
            f.write(b"x" * (size or 11))
    real = os.listdir
    monkeypatch.setattr(maildirpp.os, "listdir",
                        lambda path: real(path) + (["6.gone"] if path.endswith("new") else []))
    assert maildirpp.scan(box) == (100 + 20 + 3 + 11, 4)
    assert sorted(maildirpp.folder_times(box)) == sorted(
        os.path.join(f, s) for f, s in ((box, "cur"), (box, "new"), (sub, "cur")))
