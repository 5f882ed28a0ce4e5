"""qmail-todo's work on one message: todo/<id> -> info/, local/, remote/.

Same order and checks as qmail-send.c's todo_do() (ext-todo's qmail-todo):
old info/local/remote of the id are unlinked first (a crash may have left
them), info is created O_EXCL, each T record is rewritten into its channel
file, info and the channel files are fsynced, and only then qmail-clean
removes intd+todo. A failure leaves todo/ in place, so the next scan redoes
the message from scratch. The result is the records for qmail-send.
"""
import os

from qmailpy.addr.rewrite import LOCAL, REMOTE
from qmailpy.proto import cleanwire as clean_wire
from qmailpy.queue import layout
from qmailpy.proto import todowire
from qmailpy.log import qmail_safe as safe

EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
CHANNEL_DIRS = ("local", "remote")


class Trouble(Exception):
    """A warning for the log; the todo file stays for the next scan."""


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


def _write_fsync(fd, data, name):
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        raise Trouble("trouble writing to " + name) from None
    try:
        os.fsync(fd)
    except OSError:
        raise Trouble("trouble fsyncing " + name) from None


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
            uid = _number(rec[1:])
        elif kind == b"p":
            pid = _number(rec[1:])
        elif kind == b"F":
            frec = rec
        elif kind == b"T":
            recips.append(rec[1:])
        else:
            raise Trouble("unknown record type in " + rel("todo", msgid))
    return uid, pid, frec, recips


def _number(b):
    digits = bytearray()
    for ch in b:
        if not 48 <= ch <= 57:
            break
        digits.append(ch)
    return int(digits) if digits else 0


def preprocess(home, msgid, rewriter, cleaner, split=layout.SPLIT):
    """Do one todo file; return (records for qmail-send, done?)."""
    out = []
    try:
        with open(layout.todo_path(home, msgid), "rb") as f:
            data = f.read()
    except OSError:
        return [todowire.encode_log("warning: qmail-todo: unable to open " + rel("todo", msgid))], False
    fds = []
    try:
        flags = _build(home, msgid, data, rewriter, split, out, fds)
    except Trouble as e:
        out.append(todowire.encode_log("warning: qmail-todo: %s" % e))
        return out, False
    finally:
        for fd in fds:
            os.close(fd)
    answer = cleaner.request(clean_wire.TODO, msgid)
    if answer != clean_wire.OK:
        out.append(todowire.encode_log("warning: qmail-clean unable to clean up " + rel("todo", msgid)))
        return out, False
    out.append(todowire.encode_done(msgid, *flags))
    return out, True


def _build(home, msgid, data, rewriter, split, out, fds):
    """Write info and channel files (fds collects what to close); return (local?, remote?)."""
    try:
        size = os.stat(layout.mess_path(home, msgid, split)).st_size
    except OSError:
        raise Trouble("unable to stat " + rel("mess", msgid, split)) from None
    paths = (layout.local_path(home, msgid, split), layout.remote_path(home, msgid, split))
    for c, path in enumerate(paths):
        _unlink_old(path, rel(CHANNEL_DIRS[c], msgid, split))
    info = layout.info_path(home, msgid, split)
    _unlink_old(info, rel("info", msgid, split))
    try:
        fds.append(os.open(info, EXCL, 0o600))
    except OSError:
        raise Trouble("unable to create " + rel("info", msgid, split)) from None
    out.append(todowire.encode_log("new msg %d" % msgid))
    uid, pid, frec, recips = _parse(data, msgid)
    chans = ([], [])
    for r in recips:
        if rewriter.srs is not None:
            status, original = rewriter.srs(r)
            if status == "expired":
                out.append(todowire.encode_log("srs msg %d: expired bounce address <%s> dropped"
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
    _write_fsync(fds[0], (frec + b"\0") if frec is not None else b"", rel("info", msgid, split))
    for c in (LOCAL, REMOTE):
        if chans[c]:
            name = rel(CHANNEL_DIRS[c], msgid, split)
            try:
                fds.append(os.open(paths[c], EXCL, 0o600))
            except OSError:
                raise Trouble("unable to create " + name) from None
            _write_fsync(fds[-1], b"".join(chans[c]), name)
    return bool(chans[LOCAL]), bool(chans[REMOTE])
