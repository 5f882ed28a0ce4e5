"""One queue entry's files as qmail-queue makes them, and how each is taken back.

pid/<pid>.<time>.<seq> (O_EXCL; its inode number is the message id) linked to
mess/<id % split>/<id> and unlinked; intd/<id>; the commit link intd ->
todo/<id>. Entry holds the names and fds made so far, so that an error before
the commit removes exactly them (qmail-queue's cleanup()), and knows whether
qmail-send may already know the entry (then nothing of it is taken back).
The order of the steps is qmailpy.queue.enqueue's.
"""
import errno
import os

import _signal as signal   # signal.py would import enum (~3 ms per exec)

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError
from qmailpy.queue import layout

EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC     # qmail's open_excl()
DISK_FULL = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))
HELD_MAX = 1000       # inode numbers the queue still names, held open while the next is tried


def queue_error(e, code, what):
    """An OSError as a QueueError: a full disk is 53 wherever it happens."""
    if e.errno in DISK_FULL:
        code = X.QQ_WRITE_ERROR
    return QueueError(code, "%s: %s" % (what, e.strerror or e))


class Entry:
    """The names and fds made so far for one queue entry, so an error can take them all back.

    `entry` is True once the file carries a group of recipients (it gets an
    intd/ and a todo/ link); the staged file of a message split into copies
    only is not an entry and is removed once the copies are committed.
    """
    __slots__ = ("pid", "mess", "mess_fd", "intd", "intd_fd", "todo", "msgid", "entry", "linked", "synced")

    def __init__(self):
        self.pid = self.mess = self.mess_fd = self.intd = self.intd_fd = self.todo = self.msgid = None
        self.entry = self.linked = self.synced = False

    def commit(self):
        """Link intd -> todo/<id>: the commit point. `linked` is set before a timeout can strike."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGALRM,))
        try:
            os_step(X.QQ_TODO, "unable to link " + self.todo, os.link, self.intd, self.todo)
            self.linked = True
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def committed(self, home, split):
        """May qmail-send know this entry? Then nothing of it may be taken back.

        True once our commit link was made, and also when todo/<id> or what
        qmail-todo makes of it exists although the link reported an error.
        """
        if self.linked:
            return True
        if self.todo is None or self.msgid is None:
            return False
        return layout.referenced(home, self.msgid, layout.KNOWN_TO_SEND, split)

    def rollback(self):
        """Truncate and unlink intd and mess, unlink pid (qmail-queue's cleanup()), timeout held off.
        A failed truncate does not keep the name (qmail's seek_trunc() is not checked either)."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGALRM,))
        try:
            for fd, name in ((self.intd_fd, self.intd), (self.mess_fd, self.mess), (None, self.pid)):
                if name is None:
                    continue
                try:
                    if fd is not None:
                        os.ftruncate(fd, 0)
                except OSError:
                    pass
                try:
                    os.unlink(name)
                except OSError:
                    pass          # left for clean_stale(), as qmail leaves it for qmail-send
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def close(self):
        """Close the fds (Linux frees one even when close() fails). A failed close changes
        nothing: both files were fsynced before the commit, or are taken back (qmail-queue
        never closes them: its exit does, unchecked)."""
        from qmailpy.fileio import close_quietly
        for fd in (self.mess_fd, self.intd_fd):
            if fd is not None:
                close_quietly(fd)
        self.mess_fd = self.intd_fd = None


def os_step(code, what, fn, *args):
    """fn(*args), an OSError becoming QueueError(code) (53 when the disk is full)."""
    try:
        return fn(*args)
    except OSError as e:
        raise queue_error(e, code, what) from None


def create_pid_file(home, pid, now, made):
    for seq in range(1, 10):
        name = layout.pid_path(home, pid, int(now), seq)
        try:
            made.mess_fd = os.open(name, EXCL, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise queue_error(e, X.QQ_PID, "unable to create " + name) from None
        made.pid = name
        return
    raise QueueError(X.QQ_PID, "unable to create a pid/ file: names in use")


def new_mess(home, pid, now, split, made):
    """pid/ file -> mess/<id>, pid name unlinked: qmail-queue's steps 2-3 for one mess file.

    An inode number that the queue still names (a todo/, info/, local/... of
    an older message: what a power loss left, qmail-send's to remove) is kept
    open and its name unlinked at once, so that the number cannot come back and
    the name is free for the next pid/ file tried; HELD_MAX such numbers in a
    row is trouble (63).
    """
    held = []
    try:
        while True:
            create_pid_file(home, pid, now, made)
            made.msgid = os_step(X.QQ_PID, "unable to stat pid file", os.fstat, made.mess_fd).st_ino
            if not layout.referenced(home, made.msgid, layout.IN_USE, split):
                break
            fd, name = made.mess_fd, made.pid
            made.mess_fd = made.pid = made.msgid = None
            held.append(fd)
            try:
                os.unlink(name)
            except OSError:
                pass              # left for clean_stale()
            if len(held) >= HELD_MAX:
                raise QueueError(X.QQ_PID, "unable to find a free message id: %d in a row still in use"
                                 % len(held))
    finally:
        for fd in held:
            os.close(fd)
    mess = layout.mess_path(home, made.msgid, split)
    os_step(X.QQ_MESS, "unable to link " + mess, os.link, made.pid, mess)
    made.mess = mess
    os_step(X.QQ_PID, "unable to unlink " + made.pid, os.unlink, made.pid)
    made.pid = None
