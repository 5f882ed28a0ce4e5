"""A queue as real qmail (ext-todo) left it when the admin stopped it, taken over by qmailpy's qmail-send.

Each message is written file by file in qmail's formats (no qmailpy code writes them): mess/<id % 23>/<id>
named after its inode, intd/ and todo/ (one file, two links: qmail-queue's commit), info/ (F<sender>\\0,
mtime = birth), local/ and remote/ (T or D records), bounce/ (addbounce's paragraphs). Every message
must be delivered exactly once to each recipient not yet done, its bounce sent once, and nothing else.
"""
import os
import subprocess
import time

import pytest

from qmailpy.proto.date822 import date822
from qmailpy.queue import layout
from test_send_support import BIN, Send, scratch  # noqa: F401 (scratch: fixture)

SPLIT = 23


def q(scratch, *parts):
    return os.path.join(scratch.home, "queue", *parts)


def new_mess(scratch, body, age=0):
    """qmail-queue's pid/ file linked to mess/<inode % 23>/<inode>; the id."""
    pid = q(scratch, "pid", "%d.%d.1" % (os.getpid(), time.monotonic_ns()))
    with open(pid, "wb") as f:
        f.write(b"Received: (qmail 4242 invoked by uid 0); 6 Dec 2026 10:00:00 -0000\n" + body)
        msgid = os.fstat(f.fileno()).st_ino
    os.link(pid, q(scratch, "mess", str(msgid % SPLIT), str(msgid)))
    os.unlink(pid)
    if age:
        t = time.time() - age
        os.utime(q(scratch, "mess", str(msgid % SPLIT), str(msgid)), (t, t))
    return msgid


def write(path, data, mtime=None):
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def intd(sender, recips):
    return b"u0\0p4242\0F" + sender + b"\0" + b"".join(b"T" + r + b"\0" for r in recips)


def queued(scratch, sender, recips, body=b"Subject: x\n\nbody\n"):
    """Committed but not preprocessed: intd/<id> and todo/<id> are one file."""
    msgid = new_mess(scratch, body)
    write(q(scratch, "intd", str(msgid)), intd(sender, recips))
    os.link(q(scratch, "intd", str(msgid)), q(scratch, "todo", str(msgid)))
    return msgid


def preprocessed(scratch, sender, local=None, remote=None, bounce=None, birth=None):
    """What qmail-todo made of a message (todo/ and intd/ removed by qmail-clean); channel files
    as lists of (done?, address)."""
    msgid = new_mess(scratch, b"Subject: y\n\nbody\n")
    birth = birth or time.time() - 600
    write(q(scratch, "info", str(msgid % SPLIT), str(msgid)), b"F" + sender + b"\0", birth)
    for name, recs in (("local", local), ("remote", remote)):
        if recs is not None:
            write(q(scratch, name, str(msgid % SPLIT), str(msgid)),
                  b"".join((b"D" if done else b"T") + a + b"\0" for done, a in recs), birth)
    if bounce is not None:
        write(q(scratch, "bounce", str(msgid)), bounce)
    return msgid


def test_a_queue_qmail_left_is_delivered_exactly_once(scratch):
    fresh = queued(scratch, b"alice@far", [b"joe@localhost", b"bob@far"])
    half = preprocessed(scratch, b"carol@far", local=[(True, b"done1@localhost"), (False, b"todo1@localhost")],
                        remote=[(True, b"done2@far"), (False, b"todo2@far")])
    # every recipient done but the local file not yet unlinked, a failure waiting in bounce/
    bouncing = preprocessed(scratch, b"dave@far", local=[(True, b"gone@localhost"), (True, b"x@localhost")],
                            bounce=b"<gone@localhost>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n")
    # every channel finished, only the bounce left to send
    only_bounce = preprocessed(scratch, b"erin@far",
                               bounce=b"<nobody@localhost>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n")
    # qmail-queue stopped before its commit: never accepted, never delivered
    cut = new_mess(scratch, b"Subject: cut\n\nbody\n")
    write(q(scratch, "intd", str(cut)), intd(b"zed@far", [b"never@localhost"]))
    # the same, 36 hours ago: debris qmail-send has qmail-clean remove at start
    old = new_mess(scratch, b"Subject: old\n\nbody\n", age=layout.OSSIFIED + 60)
    write(q(scratch, "intd", str(old)), intd(b"zed@far", [b"never@localhost"]), time.time() - layout.OSSIFIED - 60)

    env = scratch.env()
    out = subprocess.run([str(BIN / "qmail-qstat")], capture_output=True, env=env, timeout=20)
    assert (out.returncode, out.stdout) == (0, b"messages in queue: 6\nmessages in queue but not yet preprocessed: 1\n")
    out = subprocess.run([str(BIN / "qmail-qread")], capture_output=True, env=env, timeout=20)
    listed = {half: ("<carol@far> ", ["  done\tlocal\tdone1@localhost", "\tlocal\ttodo1@localhost",
                                      "  done\tremote\tdone2@far", "\tremote\ttodo2@far"]),
              bouncing: ("<dave@far>  bouncing", ["  done\tlocal\tgone@localhost", "  done\tlocal\tx@localhost"]),
              only_bounce: ("<erin@far>  bouncing", [])}
    expect = ""
    for msgid in sorted(listed, key=lambda m: (m % SPLIT, m)):
        info = os.stat(q(scratch, "info", str(msgid % SPLIT), str(msgid)))
        size = os.stat(q(scratch, "mess", str(msgid % SPLIT), str(msgid))).st_size
        expect += "%s GMT  #%d  %d  %s\n" % (date822(info.st_mtime)[:-6], msgid, size, listed[msgid][0])
        expect += "".join(line + "\n" for line in listed[msgid][1])
    assert (out.returncode, out.stdout.decode()) == (0, expect)

    send = Send(scratch)
    for msgid in (fresh, half, bouncing, only_bounce):
        send.wait_line(r"^end msg %d$" % msgid)
    send.wait_line(r"^bounce msg %d qp" % bouncing)
    send.wait_line(r"^bounce msg %d qp" % only_bounce)
    send.wait_line(r"^end msg \d+$", count=6)          # and the two bounces
    assert send.stop() == 0
    assert len([ln for ln in send.lines() if ln.startswith("starting delivery ")]) == 6
    got = sorted(name.rsplit(".", 1)[0] for name in scratch.mail())
    assert got == ["bob@far", "dave@far", "erin@far", "joe@localhost", "todo1@localhost", "todo2@far"]
    assert scratch.queue_files() == ["intd/%d" % cut, "mess/%d/%d" % (cut % SPLIT, cut)]


def other_split(scratch, split, where):
    """The queue as a qmail built with conf-split `split` made it: its split directories 0..split-1
    (with qmailpy's installer run over it: 0..22 as well), one message in mess/<id % split>/, an id
    for which where(id % split) holds (and id % split != id % 23: under 23 it sits elsewhere)."""
    for name in ("mess", "info", "local", "remote"):
        for n in range(split):
            os.makedirs(q(scratch, name, str(n)), exist_ok=True)
    unfit = []                     # kept until one fits: unlinked, an inode would come back
    for _ in range(500):
        pid = q(scratch, "pid", "%d.%d.1" % (os.getpid(), time.monotonic_ns()))
        with open(pid, "wb") as f:
            f.write(b"Subject: x\n\nbody\n")
            msgid = os.fstat(f.fileno()).st_ino
        if msgid % split != msgid % SPLIT and where(msgid % split):
            break
        unfit.append(pid)
    else:
        pytest.fail("no fitting inode in 500 tries")
    for path in unfit:
        os.unlink(path)
    os.link(pid, q(scratch, "mess", str(msgid % split), str(msgid)))
    os.unlink(pid)
    write(q(scratch, "info", str(msgid % split), str(msgid)), b"Falice@far\0")
    write(q(scratch, "local", str(msgid % split), str(msgid)), b"Tjoe@localhost\0")
    return msgid


@pytest.mark.parametrize("split, beyond", [(29, True), (29, False), (17, False)])
def test_a_queue_made_with_another_split_is_refused(scratch, split, beyond):
    """qmail-send reading a conf-split 29 (or 17) queue with 23 looks for each message under the
    wrong subdirectory (or never reads its own): the mail would sit there, never delivered nor
    bounced. It refuses to start, naming what it found (docs/operations.md: such a queue is
    emptied by the old qmail first)."""
    msgid = other_split(scratch, split, lambda n: (n >= SPLIT) == beyond)
    send = Send(scratch)
    assert send.proc.wait(timeout=30) == 111
    said = ("alert: cannot start: queue/info/%d/%d: the queue was made with a conf-split above 23"
            % (msgid % split, msgid) if beyond else
            "alert: cannot start: queue/mess/%d/%d is not in mess/%d: the queue was made with another "
            "conf-split than 23" % (msgid % split, msgid, msgid % SPLIT))
    assert send.lines() == [said]
    assert scratch.mail() == {}


def test_empty_directories_of_another_split_are_left_alone(scratch):
    """A qmail built with conf-split 29 leaves mess/23..28 (and info/, local/, remote/) behind even
    once its queue is empty: nothing there to misread, so qmail-send starts and delivers."""
    for name in ("mess", "info", "local", "remote"):
        for n in range(SPLIT, 29):
            os.makedirs(q(scratch, name, str(n)))
    fresh = queued(scratch, b"alice@far", [b"joe@localhost"])
    send = Send(scratch)
    send.wait_line(r"^end msg %d$" % fresh)
    assert send.stop() == 0
    assert [name.rsplit(".", 1)[0] for name in scratch.mail()] == ["joe@localhost"]


def test_a_big_todo_queue_is_refused(scratch):
    msgid = new_mess(scratch, b"Subject: x\n\nbody\n")
    for name in ("intd", "todo"):
        os.makedirs(q(scratch, name, str(msgid % SPLIT)))
    write(q(scratch, "intd", str(msgid % SPLIT), str(msgid)), intd(b"alice@far", [b"joe@localhost"]))
    os.link(q(scratch, "intd", str(msgid % SPLIT), str(msgid)), q(scratch, "todo", str(msgid % SPLIT), str(msgid)))
    send = Send(scratch)
    assert send.proc.wait(timeout=30) == 111
    assert send.lines() == ["alert: cannot start: queue/todo/%d is a directory: the queue was made with big-todo"
                            % (msgid % SPLIT)]
