"""Put one message into the queue in qmail-queue's order, so a crash is always safe.

pid/<pid>.<time>.<seq> (O_EXCL; its inode number is the message id) -> link
to mess/<id % split>/<id>, unlink pid -> Received line + message, fsync ->
intd/<id> (O_EXCL) u/p/F/T records, fsync -> link intd -> todo/<id>: the
commit point -> fsync todo/ -> poke lock/trigger. 2 inodes created, 3 fsyncs
(qmail's 2, plus todo/ so that a power loss cannot lose an accepted message).
Until the todo link exists qmail-send ignores the files; on any error
before it, everything made so far is removed (a crash leaves debris that
clean.clean_stale() removes). Nothing after the commit link is ever taken
back: qmail-todo may already have read the message, so an error after it
(the fsync of todo/ failing, a late timeout before that fsync is done) leaves
the message queued and still exits with a temporary error -- the client
retries and the recipients may get it twice (qmail's at-least-once), but
never a todo/ entry, info/ or local/ file whose mess file was taken away.
A new message never takes an id (inode number) that something in the queue
still names. No process-wide state is changed here, so a pre-forked
launcher can call enqueue() without exec.

A content filter (clamd/spamd, qmailpy.filters) runs between the fsync of
the message and intd/. It may split one message into copies (one per group
of recipients, e.g. each with its own X-Spam headers): every copy gets its
own mess/ (fsynced) and intd/ (fsynced) before the first commit link, so the
only step that can fail between the first and the last commit is a link.
One entry's files, and taking them back, are qmailpy.queue.entry's.
"""
import os

from qmailpy import exitcodes as X
from qmailpy.exitcodes import QueueError  # noqa: F401  (the filters raise it too; queue.main imports it from here)
from qmailpy.fileio import write_all
from qmailpy.proto import qq
from qmailpy.proto.date822 import date822
from qmailpy.queue import layout
from qmailpy.queue.entry import EXCL, Entry, new_mess, os_step, queue_error

CHUNK = 65536
# qmail's auto_usera/auto_userd/auto_users: who is named in the Received line
NAMED_USERS = {"alias": "by alias", "qmaild": "from network", "qmails": "for bounce"}


def invoker(uid):
    """'by alias' / 'from network' / 'for bounce' / 'by uid N', as qmail-queue says it."""
    import pwd
    try:        # one lookup by uid: three by name cost ~0.5 ms of NSS misses
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    return NAMED_USERS.get(name) or "by uid %d" % uid


def received_line(pid, uid, now):
    """qmail-queue's own Received line, put on top of every message."""
    return ("Received: (qmail %d invoked %s); %s\n" % (pid, invoker(uid), date822(now))).encode()


class Staged:
    """What a content filter sees: the message fsynced on disk, the commit not yet made.

    head is qmail-queue's Received line, the first bytes of the mess file.
    deadline (time.monotonic()) is when the insertion's time is up (timeoutqueue) where no
    SIGALRM ends it (qmail-queued sets it); None in qmail-queue's own process.
    """
    __slots__ = ("home", "msgid", "mess_path", "mess_fd", "sender", "recipients", "head", "deadline")

    def __init__(self, home, msgid, mess_path, mess_fd, sender, recipients, head=b""):
        self.home, self.msgid, self.mess_path, self.mess_fd = home, msgid, mess_path, mess_fd
        self.sender, self.recipients, self.head = sender, recipients, head
        self.deadline = None


def run_content_filters(staged, content_filter):
    """The H-Sphere clamd/spamd step: [(recipients, data)], one queue entry each.

    Runs after the message is on disk and before intd/ and the commit. A filter
    returns None (unchanged), the recipients to queue, or groups: a list of
    (recipients, data) tuples where data is None (the staged mess file) or the
    complete bytes of another mess file (qmail-queue's Received line first),
    e.g. the message with one recipient's X-Spam headers. It may also raise
    QueueError (31/71 refused, 55 config, 56/72-74 service trouble); rollback
    is automatic. Groups with the same data are merged; no group at all means
    one entry without recipients, as an empty recipient list does.
    """
    got = None if content_filter is None else content_filter(staged)
    if got is None:
        return [(list(staged.recipients), None)]
    got = list(got)
    if not got or not isinstance(got[0], tuple):
        return [(got, None)]
    merged = {}
    for recipients, data in got:
        key = None if data is None else bytes(data)
        merged.setdefault(key, []).extend(recipients)
    return [(recipients, data) for data, recipients in merged.items()]


def _reader(src):
    """read(n) for an fd, a file-like object, or bytes."""
    if isinstance(src, int):
        return lambda n: os.read(src, n)
    if isinstance(src, (bytes, bytearray, memoryview)):
        chunks = [bytes(src)]
        return lambda n: chunks.pop() if chunks else b""
    return src.read


def _write_all(fd, data, what):
    try:
        write_all(fd, data)
    except OSError as e:
        raise queue_error(e, X.QQ_WRITE_ERROR, "unable to write " + what) from None


def _read(read, what):
    try:
        return read(CHUNK)
    except OSError as e:
        raise QueueError(X.QQ_READ_ERROR, "unable to read %s: %s" % (what, e.strerror or e)) from None


def _copy_message(read, fd, head):
    """Received line + message bytes into the mess file, the first chunk in one write."""
    data = _read(read, "message")
    _write_all(fd, head + data, "mess")
    while data:
        data = _read(read, "message")
        if data:
            _write_all(fd, data, "mess")


def read_envelope(src):
    """(sender, [recipients]) from the envelope input; stops at the final \\0."""
    read, dec = _reader(src), qq.Decoder()
    try:
        while True:
            data = _read(read, "envelope")
            if not data:
                return dec.eof()
            if dec.feed(data):
                return dec.eof()
    except qq.EnvelopeError as e:
        raise QueueError(e.code, str(e)) from None


def _stage(home, message, envelope, uid, pid, now, split, content_filter, made, copies, dir_sync=None):
    """Everything up to the commit, then the commit; the ids of the queued entries."""
    head = received_line(pid, uid, now)
    new_mess(home, pid, now, split, made)
    _copy_message(_reader(message), made.mess_fd, head)
    os_step(X.QQ_WRITE_ERROR, "unable to fsync mess", os.fsync, made.mess_fd)
    sender, recipients = read_envelope(envelope)
    staged = Staged(home, made.msgid, made.mess, made.mess_fd, sender, recipients, head)
    entries = []
    for group, data in run_content_filters(staged, content_filter):
        if data is None:
            entry = made
        else:                        # a copy the filter made: its own mess file, fsynced
            entry = Entry()
            copies.append(entry)
            new_mess(home, pid, now, split, entry)
            _write_all(entry.mess_fd, data, "mess")
            os_step(X.QQ_WRITE_ERROR, "unable to fsync mess", os.fsync, entry.mess_fd)
        entry.entry = True
        entries.append((entry, group))
    for entry, group in entries:
        intd = layout.intd_path(home, entry.msgid)
        entry.intd_fd = os_step(X.QQ_INTD, "unable to create " + intd, os.open, intd, EXCL, 0o644)
        entry.intd = intd
        _write_all(entry.intd_fd, b"u%d\0p%d\0" % (uid, pid) + qq.encode_records(sender, group), "intd")
        os_step(X.QQ_WRITE_ERROR, "unable to fsync intd", os.fsync, entry.intd_fd)
    for entry, _ in entries:
        entry.todo = layout.todo_path(home, entry.msgid)
        entry.commit()
    _sync_dir(os.path.dirname(entries[0][0].todo), dir_sync)
    made.synced = True
    if not made.entry:
        made.rollback()              # split into copies only: the staged file is nobody's
    return [entry.msgid for entry, _ in entries]


def _sync_dir(path, dir_sync=None):
    """fsync todo/ so the commit links survive a power loss, not only a crash.

    qmail relies on the file system for this; we add this one fsync (on ext4 it
    commits the journal holding the mess and intd links too). If it fails the
    message is not reported as queued, but it stays queued: qmail-todo may
    have taken it already (enqueue_all). dir_sync: qmail-queued's GroupSync.sync,
    one fsync for the commits of every session that committed before it began.
    """
    from qmailpy.fileio import fsync_dir
    try:
        (dir_sync or fsync_dir)(path)
    except OSError as e:
        raise queue_error(e, X.QQ_WRITE_ERROR, "unable to fsync todo/") from None


def enqueue(home, message, envelope, uid, pid, now, split=layout.SPLIT, content_filter=None, dir_sync=None):
    """Queue one message; return its id (the first one if a filter made copies) or raise QueueError."""
    return enqueue_all(home, message, envelope, uid, pid, now, split, content_filter, dir_sync)[0]


def enqueue_all(home, message, envelope, uid, pid, now, split=layout.SPLIT, content_filter=None, dir_sync=None):
    """Queue one message; return the ids of its queue entries or raise QueueError (everything undone).

    message, envelope: an fd, a file-like object or bytes; the envelope is read
    only after the message is on disk, as callers write it after closing fd 0.
    Without a content filter (or with one that makes no copies) there is one id.

    An error after a commit link takes nothing committed back (qmail-send may
    already hold it): when a filter made copies and a link fails between the
    first and the last one, or the fsync of todo/ fails, or a timeout strikes
    before that fsync is done, the committed entries stay queued and the
    error is raised: the client retries, so those recipients may get the
    message twice, and nobody loses it. Only a timeout after the fsync
    counts as queued.
    """
    made, copies = Entry(), []
    try:
        try:
            ids = _stage(home, message, envelope, uid, pid, now, split, content_filter, made, copies, dir_sync)
        except BaseException:
            everything = [made] + copies
            entries = [m for m in everything if m.entry]
            committed = [m for m in entries if m.committed(home, split)]
            for m in everything:
                if m not in committed:
                    m.rollback()
            if not committed:
                raise
            if len(committed) < len(entries) or not made.synced:
                _pull(home)          # the committed part is queued: deliver it soon
                raise
            ids = [m.msgid for m in entries]    # a late timeout: the message is queued and fsynced
    finally:
        made.close()
        for m in copies:
            m.close()
    _pull(home)
    return ids


def _pull(home):
    try:
        layout.triggerpull(home)
    except QueueError:
        pass                    # a timeout after the commit: the message is queued
