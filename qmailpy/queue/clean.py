"""What is debris in the queue, and removing it: the one stale-file rule.

qmail-queue never leaves a half-written message visible (only todo/ makes it
visible), but a SIGKILL or power loss leaves pid/ files and mess/ + intd/
files without a todo/ entry. A file is debris once it has not been used for
OSSIFIED (36 h, well above qmail-queue's 24 h time limit, so a live insertion
is never touched); a message file is debris when it is that old and neither
todo/ nor info/ names it. qmail-clean (stale_pids) and qmail-send
(stale_mess_ids, whose ids it hands to its qmail-clean) ask here; qmail-send is
the only one to decide that a message file is debris, as in qmail: a second
decider could unlink, after the first, the same names given meanwhile to a new
message (the freed inode number). clean_stale() applies the whole rule at once,
for a queue no program runs on.
"""
import os

from qmailpy import paths
from qmailpy.queue import layout


def ossified(st, now, ossified=layout.OSSIFIED):
    """Has the file of stat result `st` gone unused for longer than `ossified` seconds?

    qmail uses atime; with noatime/relatime mtime is the honest 'last used'.
    """
    return now > max(st.st_atime, st.st_mtime) + ossified


def _stale(path, now, ossified_after):
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return ossified(st, now, ossified_after)


def _absent(path):
    """True when `path` does not exist; False when it does or when we cannot tell."""
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
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
    except OSError:
        return []
    return layout.numeric_ids(names)


def unowned(home, msgid, split=layout.SPLIT):
    """Neither todo/ nor info/ names the message (a stat that fails otherwise counts as named)."""
    return _absent(layout.todo_path(home, msgid)) and _absent(layout.info_path(home, msgid, split))


def stale_pids(home, now, ossified_after=layout.OSSIFIED):
    """Paths of pid/ files unused for `ossified_after` seconds (qmail-clean's cleanuppid())."""
    piddir = paths.queue_path(home, "pid")
    try:
        names = os.listdir(piddir)
    except OSError:
        return []
    return [path for path in (os.path.join(piddir, name) for name in names)
            if _stale(path, now, ossified_after)]


def stale_mess_ids(home, now, split=layout.SPLIT, ossified_after=layout.OSSIFIED):
    """Ids of mess/ files unused for `ossified_after` seconds that neither todo/ nor info/ names
    (qmail-send's cleanup_do())."""
    for n in range(split):
        for msgid in _ids(paths.queue_path(home, "mess", str(n))):
            if _stale(layout.mess_path(home, msgid, split), now, ossified_after) and unowned(home, msgid, split):
                yield msgid


def clean_stale(home, now, ossified_after=layout.OSSIFIED, split=layout.SPLIT):
    """Remove debris older than `ossified_after` seconds; return the paths removed.

    pid/*: always debris once old. mess/<n>/<id> and intd/<id>: debris when
    old and neither todo/<id> nor info/<n>/<id> exists (qmail-clean's "foop":
    intd first, then mess).
    """
    removed = []
    for path in stale_pids(home, now, ossified_after):
        _unlink(path, removed)
    for msgid in list(stale_mess_ids(home, now, split, ossified_after)):
        _unlink(layout.intd_path(home, msgid), removed)
        _unlink(layout.mess_path(home, msgid, split), removed)
    for msgid in _ids(paths.queue_path(home, "intd")):
        if _stale(layout.intd_path(home, msgid), now, ossified_after) and unowned(home, msgid, split):
            _unlink(layout.intd_path(home, msgid), removed)
    return removed
