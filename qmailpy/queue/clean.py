"""qmail-clean's job: remove what a crashed or killed insertion left behind.

qmail-queue never leaves a half-written message visible (only todo/ makes it
visible), but a SIGKILL or power loss leaves pid/ files and mess/ + intd/
files without a todo/ entry. qmail-send removes these once they are older
than OSSIFIED (36 h, well above qmail-queue's 24 h time limit, so a live
insertion is never touched). Same rules here.
"""
import os

from qmailpy import paths
from qmailpy.queue import layout


def _age_base(st):
    """qmail uses atime; with noatime/relatime mtime is the honest 'last used'."""
    return max(st.st_atime, st.st_mtime)


def _stale(path, now, ossified):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return now > _age_base(st) + ossified


def _exists(path):
    try:
        os.lstat(path)
        return True
    except OSError:
        return False


def _unlink(path, removed):
    try:
        os.unlink(path)
        removed.append(path)
    except FileNotFoundError:
        pass


def _ids(directory):
    """Numeric names in a queue directory (anything else is not ours)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [int(n) for n in names if n.isdigit()]


def clean_stale(home, now, ossified=layout.OSSIFIED, split=layout.SPLIT):
    """Remove debris older than `ossified` seconds; return the paths removed.

    pid/*: always debris once old. mess/<n>/<id> and intd/<id>: debris when
    old and neither todo/<id> nor info/<n>/<id> exists (qmail-clean's "foop":
    intd first, then mess).
    """
    removed = []
    piddir = paths.queue_path(home, "pid")
    try:
        names = os.listdir(piddir)
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(piddir, name)
        if _stale(path, now, ossified):
            _unlink(path, removed)
    for n in range(split):
        for msgid in _ids(paths.queue_path(home, "mess", str(n))):
            mess = layout.mess_path(home, msgid, split)
            if not _stale(mess, now, ossified) or _in_queue(home, msgid, split):
                continue
            _unlink(layout.intd_path(home, msgid), removed)
            _unlink(mess, removed)
    for msgid in _ids(paths.queue_path(home, "intd")):
        intd = layout.intd_path(home, msgid)
        if _stale(intd, now, ossified) and not _in_queue(home, msgid, split):
            _unlink(intd, removed)
    return removed


def _in_queue(home, msgid, split):
    return _exists(layout.todo_path(home, msgid)) or _exists(layout.info_path(home, msgid, split))


def remove_message(home, msgid, split=layout.SPLIT):
    """Remove every file of one message; return the paths removed.

    Order: intd before todo (qmail-clean), channel files and bounce, then
    info, mess last, so a crash half-way leaves either a message qmail-send
    still knows or mess debris that clean_stale() removes.
    """
    removed = []
    for path in (layout.intd_path(home, msgid), layout.todo_path(home, msgid),
                 layout.local_path(home, msgid, split), layout.remote_path(home, msgid, split),
                 layout.bounce_path(home, msgid), layout.info_path(home, msgid, split),
                 layout.mess_path(home, msgid, split)):
        _unlink(path, removed)
    return removed
