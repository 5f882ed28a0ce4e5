"""The queue directory exactly as qmail lays it out, so qmail's tools can read it.

Owners and modes follow qmail's hier.c; split directories follow conf-split
(default 23): mess/info/local/remote are DIR/<id % split>/<id>, while todo,
intd and bounce are flat. The message id is the inode number of the mess file.
"""
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
# production=True: Python programs cannot be setuid qmailq, so qmail-queue runs as its
# caller (qmaild under tcpserver, qmails for bounces). These directories, where
# qmail-queue creates and links files, become group-writable and setgid for group
# qmail (docs/operations.md); every other owner and mode stays hier.c's.
QUEUE_WRITERS_MODE = 0o2770
QUEUE_WRITERS = ("pid", "intd", "todo", "mess")


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
    """Does any of the queue directories in `where` hold a file named after `msgid`?"""
    for name in where:
        path = split_path(home, name, msgid, split) if name in SPLIT_DIRS else \
            paths.queue_path(home, name, str(msgid))
        if os.path.lexists(path):
            return True
    return False


def pid_path(home, pid, starttime, seq):
    """qmail-queue's first name for a new inode: pid/<pid>.<starttime>.<seq>."""
    return paths.queue_path(home, "pid", "%d.%d.%d" % (pid, starttime, seq))


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
    one leaves that part of the owner as created (-1 to chown). Group qmail alone is
    enough for the production modes to work: qmail-lspawn gives qmail-local (the
    mailbox owner) group qmail, and its forwards must enter queue/ and write pid/.
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
    os.chmod(path, mode)
    if owners is not None:
        os.chown(path, *owners[owner])


def _mkdir(path, owner, mode, owners):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    _fix(path, owner, mode, owners)


def create_queue(home, split=SPLIT, production=False):
    """Create (or repair) the queue under `home`; existing messages are left alone.

    production: pid/, intd/, todo/ and mess/ (with its split directories) get
    QUEUE_WRITERS_MODE, for a qmail-queue that runs as a member of group qmail.
    """
    owners = _owners()
    os.makedirs(home, 0o755, exist_ok=True)
    for name, owner, mode, is_split in DIRS:
        if production and name in QUEUE_WRITERS:
            mode = QUEUE_WRITERS_MODE
        base = paths.queue_path(home, name) if name else paths.queue_path(home)
        _mkdir(base, owner, mode, owners)
        if is_split:
            for i in range(split):
                _mkdir(os.path.join(base, str(i)), owner, mode, owners)
    lock = paths.queue_path(home, "lock")
    tcpto = os.path.join(lock, "tcpto")
    if not os.path.exists(tcpto):
        with open(tcpto, "wb") as f:
            f.write(b"\0" * TCPTO_SIZE)
    _fix(tcpto, "r", 0o644, owners)
    mutex = os.path.join(lock, "sendmutex")
    os.close(os.open(mutex, os.O_WRONLY | os.O_CREAT, 0o600))
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
