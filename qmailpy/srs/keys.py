"""The SRS key files of control/srs/, as setsrssecret keeps them (docs/setsrssecret.md).

  revers_srs_secrets  every live key, newest first (qmail-smtpd tries them all)
  srs_secrets         the same keys in the same order (the first signs forwards)
  srs_secrets_age     "key timestamp" per key, same order: key = fingerprint(secret)
                      (16 hex digits of SHA-256, never the secret), timestamp =
                      unix seconds when setsrssecret made it

A key is kept while it is the newest, or while at most srs_max_age + MARGIN
seconds have passed since it was replaced (the time the next newer key was
made): the last address it signed may live srs_max_age, rounded up to whole
days. Files are replaced atomically (temp file, fsync, rename, fsync of the
directory) under an flock on control/srs/setsrssecret.lock.
"""
import errno
import fcntl
import hashlib
import os

from qmailpy import paths
from qmailpy.ctl.parse import entries, numbered, text_lines

DIR = "srs"
REVERSE = "srs/revers_srs_secrets"
FORWARD = "srs/srs_secrets"
AGES = "srs/srs_secrets_age"
LOCK = "srs/setsrssecret.lock"
MARGIN = 86400                   # one day: SRS timestamps count whole days
MODE = 0o400
DIR_MODE = 0o755
# Written in this order: a key is accepted on the way back before it signs.
FILES = (REVERSE, FORWARD, AGES)
# Owner and mode of each file when run as root. H-Sphere made revers_srs_secrets
# vpopmail:vchkpw and srs_secrets qmaill:qmail, 0400, for its readers (vdelivermail,
# qmail-send). Here the readers are qmail-send and qmail-todo (qmails: forwards are signed,
# bounces reversed) and the users service (qmailu: qmail-smtpd asks it about SRS
# recipients, so qmaild reads no key): qmails:qmailu 0440, and no other user or group.
# The ages file holds no secret; setsrssecret (root) alone reads it.
OWNERS = {REVERSE: ("qmails", "qmailu"), FORWARD: ("qmails", "qmailu"), AGES: (None, None)}
ROOT_MODES = {REVERSE: 0o440, FORWARD: 0o440, AGES: 0o400}


class Key:
    __slots__ = ("secret", "made")

    def __init__(self, secret, made):
        self.secret, self.made = secret, made

    @property
    def fingerprint(self):
        return fingerprint(self.secret)

    def __repr__(self):
        return "Key(%s, %r)" % (self.fingerprint, self.made)


def fingerprint(secret):
    """What srs_secrets_age calls the key: 16 hex digits of SHA-256 of the secret."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def new_secret(taken=()):
    """A fresh random key: 32 characters of [A-Za-z0-9_-] (192 bits)."""
    import secrets
    while True:
        s = secrets.token_urlsafe(24)
        if s not in taken:
            return s


def read_lines(path):
    """The entries of a key file, () when it is absent; OSError naming `path`."""
    from qmailpy.fileio import read_file
    try:
        data = read_file(path)
    except FileNotFoundError:
        return ()
    return entries(numbered(text_lines(data)))[0]


def parse_ages(lines):
    """{key: timestamp} from "key timestamp" lines (malformed lines are skipped)."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out.setdefault(parts[0], int(parts[1]))
    return out


def made_at(ages, secret):
    """When `secret` was made, from parse_ages(): its line names it by fingerprint or, as
    older files (H-Sphere's) do, by the secret itself; None without a line."""
    return ages.get(fingerprint(secret), ages.get(secret))


def load(home, now):
    """The keys, newest first: revers_srs_secrets, then any srs_secrets entry it lacks.

    A key without an age line (hand-made files) is dated `now`, so it is kept
    for a full srs_max_age after it is replaced. An age line may name the key
    by fingerprint or, as older files might, by the secret itself.
    """
    order = []
    for name in (REVERSE, FORWARD):
        for s in read_lines(paths.control_path(home, name)):
            if s not in order:
                order.append(s)
    ages = parse_ages(read_lines(paths.control_path(home, AGES)))
    keys = []
    for s in order:
        made = made_at(ages, s)
        keys.append(Key(s, now if made is None else made))
    return keys


def retained(keys, now, max_age):
    """(kept, dropped) of `keys` (newest first, the new key at least): keep the newest and
    every key replaced at most max_age + MARGIN ago."""
    kept = [keys[0]]
    for i in range(1, len(keys)):
        replaced = keys[i - 1].made
        if now - replaced > max_age + MARGIN:
            return kept, list(keys[i:])      # older keys were replaced earlier still
        kept.append(keys[i])
    return kept, []


def render(keys):
    """{file name: bytes} for the three files."""
    secrets = "".join(k.secret + "\n" for k in keys).encode("utf-8", "surrogateescape")
    ages = "".join("%s %d\n" % (k.fingerprint, k.made) for k in keys).encode("ascii")
    return {REVERSE: secrets, FORWARD: secrets, AGES: ages}


def owner_ids(user, group):
    import grp
    import pwd
    uid = gid = -1
    if user:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            pass
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            pass
    return uid, gid


def write_atomic(home, name, data, as_root=None):
    """Replace control/NAME with `data`: temp file, fsync, mode 0400 (as root: owner
    and mode of OWNERS/ROOT_MODES), rename, fsync of the directory."""
    from qmailpy.fileio import atomic_write
    if as_root is None:
        as_root = os.geteuid() == 0
    owner = owner_ids(*OWNERS.get(name, (None, None))) if as_root else None
    atomic_write(paths.control_path(home, name), data, durable=True,
                 mode=ROOT_MODES.get(name, MODE) if as_root else MODE, owner=owner)


def srs_dir(home, create=False):
    """control/srs/ (made 0755 when `create`; control/ itself must exist)."""
    path = paths.control_path(home, DIR)
    if create and not os.path.isdir(path):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None
        os.chmod(path, DIR_MODE)              # not narrowed by the umask
        from qmailpy.fileio import fsync_dir
        fsync_dir(os.path.dirname(path))
    return path


class Locked:
    """flock on control/srs/setsrssecret.lock for the life of the `with` block."""

    def __init__(self, home, shared=False):
        self.path = paths.control_path(home, LOCK)
        self.shared = shared
        self.fd = None

    def __enter__(self):
        if self.shared:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EACCES):
                    return self              # nothing to wait for / cannot: read as is
                raise
        else:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except OSError as e:
            from qmailpy.fileio import named
            os.close(self.fd)
            self.fd = None
            raise named(e, self.path) from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)                 # releases the flock
            except OSError as e:
                from qmailpy.fileio import named
                raise named(e, self.path) from None


def clean_temps(home):
    """Remove temp files a killed run left behind (call with the lock held)."""
    folder = srs_dir(home)
    for fn in os.listdir(folder):
        if fn.startswith(".") and ".tmp." in fn:
            try:
                os.unlink(os.path.join(folder, fn))
            except FileNotFoundError:
                pass


def rotate(home, now, max_age, secret=None):
    """Add a new key on top, drop expired ones, write the files; (new key, kept, dropped).

    Must run with Locked(home) held.
    """
    srs_dir(home, create=True)
    clean_temps(home)
    keys = load(home, now)
    new = Key(secret if secret is not None else new_secret({k.secret for k in keys}), int(now))
    keys = [k for k in keys if k.secret != new.secret]
    kept, dropped = retained([new] + keys, now, max_age)
    data = render(kept)
    for name in FILES:
        write_atomic(home, name, data[name])
    return new, kept, dropped
