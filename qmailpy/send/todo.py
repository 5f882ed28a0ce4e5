"""qmail-todo's work on one message: todo/<id> -> info/, local/, remote/.

Same order and checks as qmail-send.c's todo_do() (ext-todo's qmail-todo):
old info/local/remote of the id are unlinked first (a crash may have left
them), info is created O_EXCL, each T record is rewritten into its channel
file, info and the channel files are fsynced, and only then qmail-clean
removes intd+todo. A failure leaves todo/ in place, so the next scan redoes
the message from scratch. The result is the records for qmail-send.

preprocess_many() does several messages at once with the same per-message
promise: it writes every message's files first, then fsyncs all of them
through `fsync_many` (qmail-todo runs them in parallel threads, so one
journal commit of the file system covers many files instead of one commit
per file, the cost that capped qmail-todo at about 2 fsyncs' time per
message), and only then asks qmail-clean to remove each todo/ whose files
are all on disk, the requests pipelined.
"""
import os

from qmailpy.addr.rewrite import LOCAL, REMOTE
from qmailpy.fileio import write_all
from qmailpy.proto import cleanwire as clean_wire
from qmailpy.queue import layout
from qmailpy.queue.files import FINISHED, remove_finished
from qmailpy.proto import todowire
from qmailpy.log import qmail_safe as safe
from qmailpy.scan import scan_ulong

EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
CHANNEL_DIRS = ("local", "remote")


class Trouble(Exception):
    """A warning for the log; the todo file stays for the next scan."""


class Finished(Exception):
    """mess/ is gone: todo/ is what a power loss left of a finished message."""


def rel(name, msgid, split=layout.SPLIT):
    """qmail's relative name of a queue file, as it appears in log lines."""
    if name in ("todo", "intd", "bounce"):
        return "%s/%d" % (name, msgid)
    return "%s/%d/%d" % (name, msgid % split, msgid)


def _unlink_old(path, name):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        raise Trouble("unable to unlink " + name) from None


def _write(fd, data, name):
    try:
        write_all(fd, data)
    except OSError:
        raise Trouble("trouble writing to " + name) from None


def fsync_each(fds):
    """One fsync after the other; [True when fsync(fd) succeeded, per fd]."""
    return [fsync_ok(fd) for fd in fds]


def fsync_ok(fd):
    try:
        os.fsync(fd)
        return True
    except OSError:
        return False


def info_line(msgid, size, sender, pid, uid):
    return "info msg %d: bytes %d from <%s> qp %d uid %d" % (msgid, size, safe(sender), pid, uid)


def _parse(data, msgid):
    """(uid, pid, F record or None, [recipients]) from the todo bytes."""
    uid = pid = 0
    frec, recips = None, []
    records = data.split(b"\0")
    records.pop()                       # after the last \0: nothing, or a cut record (ignored)
    for rec in records:
        kind = rec[:1]
        if kind == b"u":
            uid = scan_ulong(rec[1:])
        elif kind == b"p":
            pid = scan_ulong(rec[1:])
        elif kind == b"F":
            frec = rec
        elif kind == b"T":
            recips.append(rec[1:])
        else:
            raise Trouble("unknown record type in " + rel("todo", msgid))
    return uid, pid, frec, recips


class _Prepared:
    """One message between writing its files and qmail-clean's answer."""
    __slots__ = ("msgid", "out", "fds", "names", "flags", "ok", "finished")

    def __init__(self, msgid):
        self.msgid, self.out, self.fds, self.names = msgid, [], [], []
        self.flags, self.ok, self.finished = None, False, False

    def fail(self, why):
        self.out.append(todowire.encode_log("warning: qmail-todo: %s" % why))
        self.ok = False


def _prepare(home, msgid, rewriter, split):
    """Read todo/<id> and write its info and channel files, not yet fsynced."""
    p = _Prepared(msgid)
    try:
        with open(layout.todo_path(home, msgid), "rb") as f:
            data = f.read()
    except OSError:
        p.out.append(todowire.encode_log("warning: qmail-todo: unable to open " + rel("todo", msgid)))
        return p
    try:
        p.flags = _build(home, msgid, data, rewriter, split, p)
        p.ok = True
    except Trouble as e:
        p.fail(e)
    except Finished:
        _finished(home, msgid, split, p)
    return p


def _finished(home, msgid, split, p):
    """todo/ without mess/: mess/ is unlinked last, after the hand-over unlinked todo/ (no
    directory fsync in between), so the message was finished and a power loss brought todo/
    back. Deliver nothing again: unlink what else is left (qmailpy.queue.files.remove_finished)
    and have qmail-clean remove todo/ and intd/, with no D record for qmail-send."""
    p.out.append(todowire.encode_log("warning: qmail-todo: " + FINISHED % (msgid, rel("mess", msgid, split))))
    failed = remove_finished(home, msgid, split)
    if failed is not None:
        p.fail("unable to unlink " + failed)
        return
    p.ok = p.finished = True


def preprocess_many(home, msgids, rewriter, cleaner, split=layout.SPLIT, fsync_many=fsync_each):
    """Do these todo files; [(msgid, records for qmail-send, done?)] in the same order."""
    preps = [_prepare(home, msgid, rewriter, split) for msgid in msgids]
    try:
        synced = [p for p in preps if p.ok]
        fds = [fd for p in synced for fd in p.fds]
        results = iter(fsync_many(fds))
        for p in synced:
            for name, ok in zip(p.names, [next(results) for _ in p.fds]):
                if not ok and p.ok:
                    p.fail("trouble fsyncing " + name)
    finally:
        for p in preps:
            for fd in p.fds:
                os.close(fd)
    ready = [p for p in preps if p.ok]
    answers = cleaner.request_many(clean_wire.TODO, [p.msgid for p in ready])
    for p, answer in zip(ready, answers):
        if answer != clean_wire.OK:
            p.out.append(todowire.encode_log("warning: qmail-clean unable to clean up " + rel("todo", p.msgid)))
            p.ok = False
        elif not p.finished:
            p.out.append(todowire.encode_done(p.msgid, *p.flags))
    return [(p.msgid, p.out, p.ok) for p in preps]


def preprocess(home, msgid, rewriter, cleaner, split=layout.SPLIT):
    """Do one todo file; return (records for qmail-send, done?)."""
    _, out, done = preprocess_many(home, [msgid], rewriter, cleaner, split)[0]
    return out, done


def _build(home, msgid, data, rewriter, split, p):
    """Write info and channel files (p.fds collects what to fsync and close); return (local?, remote?)."""
    out = p.out
    try:
        size = os.stat(layout.mess_path(home, msgid, split)).st_size
    except FileNotFoundError:
        raise Finished() from None
    except OSError:
        raise Trouble("unable to stat " + rel("mess", msgid, split)) from None
    paths = (layout.local_path(home, msgid, split), layout.remote_path(home, msgid, split))
    for c, path in enumerate(paths):
        _unlink_old(path, rel(CHANNEL_DIRS[c], msgid, split))
    info = layout.info_path(home, msgid, split)
    _unlink_old(info, rel("info", msgid, split))
    try:
        p.fds.append(os.open(info, EXCL, 0o600))
    except OSError:
        raise Trouble("unable to create " + rel("info", msgid, split)) from None
    out.append(todowire.encode_log("new msg %d" % msgid))
    uid, pid, frec, recips = _parse(data, msgid)
    chans = ([], [])
    sender = frec[1:] if frec is not None else b""
    for r in recips:
        if rewriter.srs is not None:
            status, original = rewriter.srs(r, sender)
            if status == "expired":
                out.append(todowire.encode_log("srs msg %d: expired bounce address <%s> dropped"
                                               % (msgid, r.decode("utf-8", "replace"))))
                continue
            if status == "not-bounce":
                out.append(todowire.encode_log("srs msg %d: <%s> dropped: the sender is not empty"
                                               % (msgid, r.decode("utf-8", "replace"))))
                continue
            if status == "ok":
                out.append(todowire.encode_log("srs msg %d: <%s> is <%s>" % (
                    msgid, r.decode("utf-8", "replace"), original.decode("utf-8", "replace"))))
                r = original
        c, addr = rewriter.rewrite(r)
        chans[c].append(b"T" + addr + b"\0")
    if frec is not None:
        out.append(todowire.encode_log(info_line(msgid, size, frec[1:], pid, uid)))
    p.names.append(rel("info", msgid, split))
    _write(p.fds[0], (frec + b"\0") if frec is not None else b"", p.names[0])
    for c in (LOCAL, REMOTE):
        if chans[c]:
            name = rel(CHANNEL_DIRS[c], msgid, split)
            try:
                p.fds.append(os.open(paths[c], EXCL, 0o600))
            except OSError:
                raise Trouble("unable to create " + name) from None
            p.names.append(name)
            _write(p.fds[-1], b"".join(chans[c]), name)
    return bool(chans[LOCAL]), bool(chans[REMOTE])
