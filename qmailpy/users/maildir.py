"""Mailbox directories and quotas as vpopmail lays them out.

<vpopmaildir>/domains/<domain>/<user>/Maildir/{cur,new,tmp}; pw_shell holds
the quota (NOQUOTA, or Maildir++'s '10000000S' / '10000000S,1000C'); a
mailbox with a quota gets Maildir/maildirsize whose first line is the quota
(quota strings and that file: qmailpy.maildirpp, which qmail-local reads too).
New directories take the owner of vpopmaildir when we run as root, as
vpopmail chowns everything to the vpopmail user; root makes, writes and
removes them as that owner (as_owner), never through links of the owner's.
Each directory made is fsynced with its parent (make_dir), so what qmail-users reports
made survives a power loss on every file system, as its SQLite row does.
"""
import errno
import os

from qmailpy import maildirpp
from qmailpy.fileio import fsync_dir

DIR_MODE = 0o700            # vpopmail's VPOPMAIL_UMASK 0077
DOMAIN_DIR_MODE = 0o750     # vpopmail's VPOPMAIL_DIR_MODE


def owner_of(path):
    """(uid, gid) to give new directories: the owner of `path` when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def make_dir(path, mode, owner):
    """mkdir -p with `mode` for what we create, chowned to owner (uid, gid) when given; each
    directory made is fsynced, then its parent, before the next step: qmail-users reports a
    mailbox or domain made only after the SQLite commit, whose fsync does not carry these
    names on btrfs or on ext4 without a journal (a row whose Maildir a power loss took away
    defers every delivery to it)."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        make_dir(parent, mode, owner)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):     # a file (or a dangling link) is in the way
            raise NotADirectoryError(20, os.strerror(20), path) from None
        return
    if owner is not None:       # never through a symlink the owner of the parent put there since
        os.chown(path, *owner, follow_symlinks=False)
    try:
        fsync_dir(path, follow=False)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise               # else the owner swapped it for a link: not ours to sync
    fsync_dir(parent or ".")


def make_domain_dir(path, owner):
    make_dir(path, DOMAIN_DIR_MODE, owner)


def make_maildir(user_dir, owner):
    """user_dir/Maildir with cur, new and tmp."""
    maildir = os.path.join(user_dir, "Maildir")
    for sub in ("cur", "new", "tmp"):
        make_dir(os.path.join(maildir, sub), DIR_MODE, owner)
    return maildir


def remove_maildirsize(maildir):
    """vpopmail's remove_maildirsize: the next delivery recounts (or there is no quota)."""
    maildirpp.remove(maildir)


def remove_tree(path, owner=None):
    """rm -rf `path`, errors ignored; as `owner` (as_owner)."""
    import shutil
    try:
        as_owner(path, owner, lambda rel: shutil.rmtree(rel, ignore_errors=True))
    except OSError:
        pass


def set_aside(path, owner=None):
    """Rename `path` to `.deleted.NAME.RANDOM` beside it, a name no user or domain can have (as
    owner, as_owner); the new path, None when nothing is there, `path` itself when it cannot be
    renamed (it is then removed where it is). deluser and deldomain do it inside their transaction:
    a user or domain of the same name made right after their commit gets a directory of its own.
    The parent is fsynced before the commit: a move lost to a power loss while the commit's
    row deletion stayed would bring the tree back under its name with no row, and an adduser
    of that name would take it, old mail and all (the other way round is recover()'s case)."""
    path = os.path.normpath(path)
    aside = ".deleted.%s.%s" % (os.path.basename(path), os.urandom(4).hex())
    try:
        as_owner(path, owner, lambda rel: os.rename(rel, os.path.join(os.path.dirname(rel), aside)))
    except FileNotFoundError:
        return None
    except OSError:
        return path
    moved = os.path.join(os.path.dirname(path), aside)
    try:
        fsync_dir(os.path.dirname(path))
    except OSError:             # the caller rolls back: its tree goes back under its name now
        put_back(moved, path, owner)
        raise
    return moved


def set_aside_trees(parent):
    """[(path, NAME)] of the trees set_aside() left in `parent` (none when it cannot be read)."""
    import re
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [(os.path.join(parent, n), m.group(1)) for n in sorted(names)
            for m in [re.fullmatch(r"\.deleted\.(.+)\.[0-9a-f]{8}", n)] if m]


def put_back(aside, path, owner=None):
    """Undo set_aside() (the transaction did not commit); errors ignored."""
    if aside is None or aside == os.path.normpath(path):
        return
    try:
        as_owner(aside, owner, lambda rel: os.rename(rel, os.path.join(os.path.dirname(rel),
                                                                       os.path.basename(path))))
    except OSError:
        pass


def as_owner(path, owner, work):
    """work(rel) with no more rights over `path` than its owner has; what work returns.

    owner: (uid, gid) from owner_of(), or None. Run by root for another owner (an admin tool
    over vpopmail's directories), work runs in a forked child that has become the owner, its
    current directory the deepest directory above `path` that exists (opened here, so the child
    needs search permission on that one only, not on those above it), `rel` being `path`
    relative to it. The owner, whom every vpopmail mailbox's |program runs as, may have put
    links anywhere below the vpopmail directory (domains/ -> /etc/systemd/system, say):
    through them the child makes, writes or removes only what the owner could itself, where
    root would have done it anywhere. Otherwise work(path) runs here. The child's return value comes back as JSON (lists for
    tuples); an OSError there is raised here (errno, and the file name made absolute again)."""
    if owner is None or owner[0] == os.geteuid():
        return work(path)
    import json

    from qmailpy.fileio import write_all
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    while not os.path.isdir(base):
        base = os.path.dirname(base)
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            said = b"E5\0"                      # EIO: anything but an OSError
            try:
                os.fchdir(fd)
                os.setgroups([])
                os.setgid(owner[1])
                os.setuid(owner[0])
                said = b"R" + json.dumps(work(os.path.relpath(path, base))).encode()
            except OSError as e:
                said = b"E%d\0%s" % (e.errno or 5, os.fsencode(e.filename or ""))
            except BaseException:               # noqa: BLE001 - the child never returns into the caller
                pass
            finally:
                try:
                    write_all(w, said)
                finally:
                    os._exit(0)
        os.close(w)
        with open(r, "rb") as f:
            said = f.read()
        os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if said[:1] == b"R":
        return json.loads(said[1:])
    code, _, name = said[1:].partition(b"\0")
    code = int(code or 5)
    raise OSError(code, os.strerror(code), os.path.join(base, os.fsdecode(name)) if name else None)
