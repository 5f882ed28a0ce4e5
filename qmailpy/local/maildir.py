"""Maildir delivery: tmp/ -> fsync -> link into new/ -> fsync new/ -> unlink tmp/.

Names are `<sec>.M<usec>P<pid>Q<n>.<host>,S=<bytes>` (the modern form of
cr.yp.to/proto/maildir.html, plus Maildir++'s size): qmail 1.03's
`<sec>.<pid>.<host>` repeats when one process delivers twice in a second,
which a pre-forked or in-process caller of deliver() does; Q<n> counts the
deliveries of this process. '/' and ':' in the host name become \\057 and
\\072. Failures use qmail-local's child exit texts; all are temporary except
a full Maildir++ quota.

With a quota (a maildirsize file or $MAILDIRQUOTA) the final quota check,
the link into new/ and the line appended to maildirsize happen under
maildirpp.size_lock, a dot-lock that holds over NFS, so several hosts can
deliver into one mailbox at once (docs/maildir.md, "Shared over NFS"). The
host name in every name keeps two hosts' files apart.
"""
import os
import stat
import time

from qmailpy.fileio import close_quietly, write_all
from qmailpy.local import errors, message, quota
from qmailpy.maildirpp import hostname, same_file

DEADLINE = 86400               # qmail's alarm(86400) around the copy
_deliveries = [0]


def unique_name(size, host, now_ns=None, pid=None):
    """`sec.MusecPpidQn.host,S=size`; every call gets a new n."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    _deliveries[0] += 1
    sec, usec = divmod(now_ns // 1000, 1000000)
    return "%d.M%dP%dQ%d.%s,S=%d" % (sec, usec, os.getpid() if pid is None else pid,
                                    _deliveries[0], host, size)


def _enter(path):
    """What qmail's chdir(dir) in the child would say about `path`."""
    try:
        st = os.stat(path)
    except OSError as e:
        if errors.error_temp(e):
            raise errors.temp(errors.MAILDIR_TEMP) from None
        raise errors.temp(errors.MAILDIR_CHDIR) from None
    if not stat.S_ISDIR(st.st_mode) or not os.access(path, os.X_OK):
        raise errors.temp(errors.MAILDIR_CHDIR)


def _create(path, size, host):
    """qmail's maildir child: a tmp/ name that exists is tried again 2 seconds later, three tries in all."""
    for attempt in range(3):
        if attempt:
            time.sleep(2)
        name = unique_name(size, host)
        tmp = os.path.join(path, "tmp", name)
        try:
            return name, tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError:
            break
    raise errors.temp(errors.MAILDIR_TEMP)


def _copy(fd, fd0, head, deadline):
    """Write head + message; read trouble and the deadline get their own texts."""
    write_all(fd, head)
    it = message.chunks(fd0)
    while True:
        try:
            data = next(it, None)
        except OSError:
            raise errors.temp(errors.MAILDIR_READ) from None
        if data is None:
            return
        if time.monotonic() > deadline:
            raise errors.temp(errors.MAILDIR_TIMEOUT)
        write_all(fd, data)


def _publish(tmp, new):
    """link() as qmail does (never overwrites); rename() where links are unsupported.
    A link NFS reports as failed (a retransmitted request) but made is a success."""
    try:
        os.link(tmp, new)
        return
    except OSError as e:
        if same_file(tmp, new):
            return
        if e.errno not in (1, 18, 31, 95):          # EPERM, EXDEV, EMLINK, EOPNOTSUPP
            raise
    if os.path.lexists(new):
        raise FileExistsError(17, "exists", new)
    os.rename(tmp, new)


def _sync_dir(path):
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != 22:                           # EINVAL: this file system cannot
            raise
    finally:
        close_quietly(fd)                           # read-only, and synced by now


def _publish_durably(tmp, new):
    """_publish(), then fsync new/ so that the link survives a crash; if that fails, the new/
    file is removed again (not durable: the retry delivers it, never a second copy) and the
    OSError raised. Before maildirsize is told of the message: a line for a message taken
    back would count it twice, with the retry's."""
    _publish(tmp, new)
    try:
        _sync_dir(os.path.dirname(new))
    except OSError:
        _unlink(new)
        raise


def deliver(path, fd0, head, environ):
    """Deliver head + message into the Maildir at `path`; return the new/ file path."""
    _enter(path)
    try:
        size = len(head) + message.size(fd0)
    except OSError:
        raise errors.temp(errors.MAILDIR_READ) from None
    host = hostname()
    try:
        root = quota.needs_lock(path, environ)
        if root is not None:
            quota.check(path, environ, size, host, decide=False)
    except OSError:
        raise errors.temp(errors.MAILDIR_TEMP) from None
    name, tmp, fd = _create(path, size, host)
    new = os.path.join(path, "new", name)
    try:
        try:
            _copy(fd, fd0, head, time.monotonic() + DEADLINE)
            os.fsync(fd)
        finally:
            os.close(fd)
        if root is None:
            _publish_durably(tmp, new)
        else:
            _publish_counted(path, environ, size, host, tmp, new)
    except errors.Die:
        _unlink(tmp)
        raise
    except OSError:
        _unlink(tmp)
        raise errors.temp(errors.MAILDIR_TEMP) from None
    _unlink(tmp)
    return new


def _publish_counted(path, environ, size, host, tmp, new):
    """Under the maildirsize lock: the final quota decision, the durable link, the appended line."""
    from qmailpy.maildirpp import LockTimeout, size_lock
    try:
        with size_lock(quota.quota_root(path), host):
            counter = quota.check(path, environ, size, host)
            _publish_durably(tmp, new)
            quota.add(counter, size, host)
    except LockTimeout:
        raise errors.temp(errors.SLOW_LOCK) from None


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
