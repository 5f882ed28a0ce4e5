"""The queue files qmail-send reads and marks (and qmail-qread shows): info/, local/, remote/, bounce/.

info/<n>/<id> = F<sender>\\0, its mtime the message's birth; a channel file is
T<rcpt>\\0 records whose T becomes D in place when that recipient is done
(markdone, one byte, not fsynced: a crash means a second delivery, never a
lost one). A channel file's mtime is the next retry time, written at exit.
"""
import os

from qmailpy import paths
from qmailpy.queue import layout

CHANNEL_DIRS = ("local", "remote")


def channel_path(home, msgid, c, split=layout.SPLIT):
    return layout.split_path(home, CHANNEL_DIRS[c], msgid, split)


def getinfo(home, msgid, split=layout.SPLIT):
    """(sender bytes, birth) from info/, or None when missing or not an F record."""
    try:
        with open(layout.info_path(home, msgid, split), "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(2048)
            while b"\0" not in data:
                more = f.read(65536)
                if not more:
                    return None
                data += more
    except OSError:
        return None
    line = data.split(b"\0", 1)[0]
    if line[:1] != b"F":
        return None
    return line[1:], st.st_mtime


def read_records(path):
    """[(offset, record)] of a channel file; raises OSError. A cut last record is dropped.
    Opened never through a link nor as a FIFO (layout.open_own_regular): qmail-qread reads
    qmails' files as root."""
    with open(layout.open_own_regular(path, os.O_RDONLY), "rb") as f:
        data = f.read()
    out, pos = [], 0
    while True:
        nul = data.find(b"\0", pos)
        if nul < 0:
            return out
        out.append((pos, data[pos:nul]))
        pos = nul + 1


def markdone(path, offset):
    """Overwrite the record's T with D; False if that failed (the recipient gets it twice)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.pwrite(fd, b"D", offset)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def exists(path):
    """True/False, or None when stat fails for another reason than ENOENT."""
    try:
        os.stat(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return None


def info_ids(home, split=layout.SPLIT, ordered=False, pause=None):
    """Every message id under info/, subdirectory by subdirectory (`ordered`, as qmail-qread
    lists them: by id within each). A subdirectory that exists but cannot be read raises
    OSError, or with `pause` (qmail-send's pausedir()) is handed to it and read again, as
    qmail's readsubdir does: skipping it would leave its messages unscheduled until a restart.
    A missing one is skipped, but `ordered` (qmail-qread's die_opendir) raises for it too."""
    for n in range(split):
        while True:
            try:
                names = os.listdir(paths.queue_path(home, "info", str(n)))
                break
            except FileNotFoundError:
                if ordered:
                    raise
                names = []
                break
            except OSError:
                if pause is None:
                    raise
                pause("info/%d" % n)
        ids = layout.numeric_ids(names)
        yield from sorted(ids) if ordered else ids


def mtime(path):
    """st_mtime of path, or None (missing), raising other errors."""
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def set_retry(path, when):
    """Persist a retry time as the channel file's mtime (qmail-send's pqfinish)."""
    try:
        os.utime(path, (when, when))
        return True
    except OSError:
        return False


def append_bounce(home, msgid, text, trouble):
    """Append a recipient paragraph to bounce/<id> (created when missing) as qmail-send's
    addbounce() does: the open, and then each write, tried again after trouble() (which logs
    and sleeps) until the whole paragraph is there. A failed write goes on from where the
    written part ends: tried again from the start, the part before would be there twice.
    Then fsync (unlike qmail): the caller marks the recipient done next, and after a power loss
    a D on disk with its paragraph lost would be a failure nobody hears of. The one fsync covers
    bounce/'s new name too (the file's first fsync: ext4 with or without a journal, XFS and
    btrfs all make a new file's name durable with it). A failed fsync is never simply tried
    again: Linux forgets its error (the pages it could not write may be left clean), so a second
    fsync could succeed with the paragraph not on disk. After trouble() the file is cut back to
    where the paragraph began, the paragraph written again, and the file and bounce/ fsynced."""
    path = layout.bounce_path(home, msgid)
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            trouble()
            continue
        try:
            start = os.fstat(fd).st_size     # where this paragraph begins
            break
        except OSError:
            os.close(fd)
            trouble()
    try:
        retried = False
        while True:
            view = memoryview(text)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except OSError:
                    trouble()
            try:
                os.fsync(fd)
                if retried:
                    from qmailpy.fileio import fsync_dir
                    fsync_dir(os.path.dirname(path))
                return
            except OSError:
                trouble()
            retried = True
            while True:
                try:
                    os.ftruncate(fd, start)
                    break
                except OSError:
                    trouble()
    finally:
        os.close(fd)


# The log line of both callers of remove_finished (qmail-send's start-up, qmail-todo), after
# their own prefix: msg id, mess/'s relative name.
FINISHED = "msg %d: %s is gone: the message was finished; removing what a power loss left of it"


def remove_finished(home, msgid, split=layout.SPLIT):
    """Unlink what a power loss may have left of a finished message, the one whose mess/ is gone
    (mess/ is unlinked last, after info/, bounce/ and the channel files, with no directory
    fsync in between; qmail-todo's hand-over unlinked todo/ before that, unfsynced too): its
    channel files, bounce/ (its bounce was queued before info/ went) and then info/, so that a
    crash half-way leaves info/ to find again. qmail-todo and qmail-send call it; intd/ and
    todo/ are qmail-clean's. None when done, else the relative name that could not be unlinked."""
    names = [(CHANNEL_DIRS[c], channel_path(home, msgid, c, split)) for c in range(len(CHANNEL_DIRS))]
    names += [("bounce", layout.bounce_path(home, msgid)), ("info", layout.info_path(home, msgid, split))]
    for name, path in names:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError:
            return os.path.relpath(path, paths.queue_path(home))
    return None
