"""The queue directory exactly as qmail lays it out, so qmail's tools can read it.

Owners and modes follow qmail's hier.c; split directories follow conf-split
(default 23): mess/info/local/remote are DIR/<id % split>/<id>, while todo,
intd and bounce are flat. The message id is the inode number of the mess file.
"""
import errno
import os
import stat

from qmailpy import paths

SPLIT = 23                     # conf-split
TCPTO_SIZE = 1024              # lock/tcpto: qmail-remote's table of unreachable hosts
OSSIFIED = 129600              # qmail-send: leftovers older than 36 h are debris
DEATH = 86400                  # qmail-queue's default time limit; must stay below OSSIFIED

# (directory, owner, mode, split?) in hier.c order; owner q = qmailq, s = qmails.
DIRS = (
    ("", "q", 0o750, False),
    ("pid", "q", 0o700, False),
    ("intd", "q", 0o700, False),
    ("todo", "q", 0o750, False),
    ("bounce", "s", 0o700, False),
    ("mess", "q", 0o750, True),
    ("info", "s", 0o700, True),
    ("local", "s", 0o700, True),
    ("remote", "s", 0o700, True),
    ("lock", "q", 0o750, False),
)
SPLIT_DIRS = frozenset(name for name, _, _, is_split in DIRS if is_split)
USERS = {"q": "qmailq", "s": "qmails", "r": "qmailr"}
GROUP = "qmail"
# Where qmail-queue creates files: only their owner, qmailq (qmail-queued, or qmail-queue
# run in-process as root), may write there, as only setuid qmailq qmail-queue could in qmail.
QUEUE_WRITTEN = ("pid", "intd", "todo", "mess")


def numeric_ids(names):
    """The message ids among a queue directory's entry names: those that are ASCII decimal
    numbers, as qmail's scan_ulong() reads them whole (readsubdir()); any other name is not a
    message and is passed over. str.isdigit() alone lets in `²` (int() refuses it) and `٣`."""
    return [int(name) for name in names if name.isascii() and name.isdigit()]


def time_limit(timeoutqueue):
    """qmail-queue's time limit from control/timeoutqueue's value (unset: DEATH), kept below
    OSSIFIED so that clean_stale never takes a live insertion: the one rule for qmail-queue,
    qmail-queued and the clients that wait for qmail-queued's answer."""
    return min(timeoutqueue or DEATH, OSSIFIED - 3600)


def split_path(home, name, msgid, split=SPLIT):
    return paths.queue_path(home, name, str(msgid % split), str(msgid))


def mess_path(home, msgid, split=SPLIT):
    return split_path(home, "mess", msgid, split)


def info_path(home, msgid, split=SPLIT):
    return split_path(home, "info", msgid, split)


def local_path(home, msgid, split=SPLIT):
    return split_path(home, "local", msgid, split)


def remote_path(home, msgid, split=SPLIT):
    return split_path(home, "remote", msgid, split)


def intd_path(home, msgid):
    return paths.queue_path(home, "intd", str(msgid))


def todo_path(home, msgid):
    return paths.queue_path(home, "todo", str(msgid))


def bounce_path(home, msgid):
    return paths.queue_path(home, "bounce", str(msgid))


# Where a message id is referenced: once qmail-send knows it (a todo/ link, or what qmail-todo
# made of it), and besides that while a qmail-queue holds it.
KNOWN_TO_SEND = ("todo", "info", "local", "remote", "bounce")
IN_USE = ("mess", "intd") + KNOWN_TO_SEND


def referenced(home, msgid, where=IN_USE, split=SPLIT):
    """Does any of the queue directories in `where` hold a file named after `msgid`?

    A name that cannot be looked up (EIO, not ENOENT) counts as there: a new message then
    takes another id, and a rollback leaves its files to clean_stale() rather than take back
    what qmail-send may hold. A directory we may not search (EACCES: qmails' info/, local/,
    remote/, bounce/ are 0700, and the queue's writer is qmailq in a production install) tells
    nothing and is passed over, or no id would ever be free there."""
    for name in where:
        path = split_path(home, name, msgid, split) if name in SPLIT_DIRS else \
            paths.queue_path(home, name, str(msgid))
        try:
            os.lstat(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        except OSError:         # cannot tell: counted as there
            pass
        return True
    return False


def foreign_layout(home, split=SPLIT):
    """Why the queue was not made with this layout (another conf-split, or big-todo's split
    todo/ and intd/), or None. Read with the wrong split, a message's files are looked for
    under the wrong subdirectory or in one nobody reads: it would sit undelivered, unseen.
    Every file of mess/ (a message has one from its start) must be in <id % split>/, and no
    subdirectory of a split directory beyond split - 1 may hold a file (empty ones are left
    alone). A directory that cannot be read tells nothing here (qmail-send's pausedir() says
    so when it reads it)."""
    for name in ("todo", "intd"):
        try:
            with os.scandir(paths.queue_path(home, name)) as entries:     # read as they come: a big
                sub = next((e.name for e in entries                       # queue's todo/ is not held
                            if e.name.isdigit() and e.is_dir(follow_symlinks=False)), None)
        except OSError:
            continue
        if sub is not None:
            return "queue/%s/%s is a directory: the queue was made with big-todo" % (name, sub)
    for name in sorted(SPLIT_DIRS):
        try:
            subs = os.listdir(paths.queue_path(home, name))
        except OSError:
            continue
        for n in sorted(int(s) for s in subs if s.isdigit() and s.isascii() and int(s) >= split):
            try:
                held = os.listdir(paths.queue_path(home, name, str(n)))
            except OSError:
                continue
            if held:
                return "queue/%s/%d/%s: the queue was made with a conf-split above %d" % (
                    name, n, sorted(held)[0], split)
    for n in range(split):
        try:
            names = os.listdir(paths.queue_path(home, "mess", str(n)))
        except OSError:
            continue
        wrong = next((m for m in names if m.isdigit() and m.isascii() and int(m) % split != n), None)
        if wrong is not None:
            return "queue/mess/%d/%s is not in mess/%d: the queue was made with another conf-split than %d" % (
                n, wrong, int(wrong) % split, split)
    return None


def pid_path(home, pid, starttime, seq):
    """qmail-queue's first name for a new inode: pid/<pid>.<starttime>.<seq>."""
    return paths.queue_path(home, "pid", "%d.%d.%d" % (pid, starttime, seq))


def messid_path(home, messid):
    """The mess file qmail-send names to a spawn as `<split>/<id>` (relative to queue/mess)."""
    return paths.queue_path(home, "mess", messid)


def tcpto_path(home):
    """qmail-remote's table of hosts that timed out (qmail-tcpok clears it)."""
    return paths.queue_path(home, "lock", "tcpto")


def trigger_path(home):
    return paths.queue_path(home, "lock", "trigger")


def triggerpull(home):
    """Wake qmail-send: one byte into lock/trigger; nobody listening is fine."""
    try:
        fd = os.open(trigger_path(home), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def _owners():
    """{'q': (uid, gid), ...} when running as root, else None (nothing is chowned).

    Each directory gets its qmail user and group qmail where they exist; a missing
    one leaves that part of the owner as created (-1 to chown).
    """
    if os.geteuid() != 0:
        return None
    import grp
    import pwd
    try:
        gid = grp.getgrnam(GROUP).gr_gid
    except KeyError:
        gid = -1
    owners = {}
    for key, name in USERS.items():
        try:
            owners[key] = (pwd.getpwnam(name).pw_uid, gid)
        except KeyError:
            owners[key] = (-1, gid)
    return owners


def _fix(path, owner, mode, owners):
    """chmod (and, as root, chown) `path`, never through a link: queue/ and lock/ are qmailq's,
    info/ and the like qmails', and a link one of them put in place of a directory or lock
    file would have root give its target away (lock/tcpto -> /etc/shadow: mode 0644)."""
    fd = open_own(path, os.O_RDONLY)
    try:
        os.fchmod(fd, mode)
        if owners is not None:
            os.fchown(fd, *owners[owner])
    finally:
        os.close(fd)


def open_own(path, flags, mode=0o600):
    """os.open(path) without following a link (nor waiting on a FIFO); a link is an OSError naming it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a link where the queue has its own file", path) from None
        raise


def open_own_regular(path, flags):
    """open_own() of a file that must be regular: anything else there (a FIFO, a device, a
    directory) is closed again and an OSError "not a regular file" naming `path`. For root's
    programs that open the queue's files in a directory a qmail user owns (qmail-tcpok's
    lock/tcpto, qmail-send's lock/sendmutex, qmail-qread's info/, local/, remote/)."""
    import stat
    fd = open_own(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(None, "not a regular file", path)
    return fd


def _mkdir(path, owner, mode, owners):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    _fix(path, owner, mode, owners)


def _queue_dir(home):
    """$QMAILHOME/queue, or where the admin's link there points (a queue moved to another file
    system, as qmail's admins move it). That link is in $QMAILHOME, which only its owner can
    write, unlike the queue's own directories (qmailq's, qmails'), whose links open_own()
    refuses: it is followed when it and $QMAILHOME are ours and $QMAILHOME is not group or
    world writable. Any other link is left for open_own() to refuse."""
    base = paths.queue_path(home)
    try:
        link, top = os.lstat(base), os.stat(home)
    except OSError:
        return base
    me = os.geteuid()
    if stat.S_ISLNK(link.st_mode) and link.st_uid == me and top.st_uid == me and not top.st_mode & 0o022:
        return os.path.realpath(base)
    return base


def create_queue(home, split=SPLIT):
    """Create (or repair) the queue under `home` with hier.c's owners and modes; existing
    messages are left alone (adopt_messages)."""
    owners = _owners()
    os.makedirs(home, 0o755, exist_ok=True)
    for name, owner, mode, is_split in DIRS:
        base = paths.queue_path(home, name) if name else _queue_dir(home)
        _mkdir(base, owner, mode, owners)
        if is_split:
            for i in range(split):
                _mkdir(os.path.join(base, str(i)), owner, mode, owners)
    lock = paths.queue_path(home, "lock")
    tcpto = tcpto_path(home)
    if not os.path.lexists(tcpto):
        fd = open_own(tcpto, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"\0" * TCPTO_SIZE)
        finally:
            os.close(fd)
    _fix(tcpto, "r", 0o644, owners)
    mutex = os.path.join(lock, "sendmutex")
    os.close(open_own(mutex, os.O_WRONLY | os.O_CREAT))
    _fix(mutex, "s", 0o600, owners)
    trigger = trigger_path(home)
    try:
        is_fifo = stat.S_ISFIFO(os.lstat(trigger).st_mode)
    except FileNotFoundError:
        is_fifo = None
    if is_fifo is False:            # something else in its place: qmail-send needs the FIFO
        os.unlink(trigger)
    if not is_fifo:
        os.mkfifo(trigger, 0o622)
    _fix(trigger, "s", 0o622, owners)


def adopt_messages(home, split=SPLIT):
    """Give every file qmail-queue made (pid/, intd/, todo/, mess/) to qmailq:qmail; the paths changed.

    Only as root where qmailq exists. Before qmail-queued, qmail-queue ran as its
    caller and wrote these files as qmaild, qmails or a mailbox owner, through a
    group-writable queue; qmail-lspawn and qmail-rspawn now take a message file
    only from qmailq (qmail's rule), so an install that migrates the queue hands
    the waiting messages over to it. todo/ entries are links of intd/ entries.
    """
    owners = _owners()
    if owners is None or owners["q"][0] == -1:
        return []
    uid, gid = owners["q"]
    changed = []
    for name in QUEUE_WRITTEN:
        base = paths.queue_path(home, name)
        dirs = [os.path.join(base, str(i)) for i in range(split)] if name in SPLIT_DIRS else [base]
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) != (uid, gid if gid != -1 else st.st_gid):
                        os.chown(entry.path, uid, gid, follow_symlinks=False)
                        changed.append(entry.path)
                except FileNotFoundError:
                    pass              # qmail-clean took it meanwhile
    return changed
