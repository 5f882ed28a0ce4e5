"""Mailbox directories and quotas as vpopmail lays them out.

<vpopmaildir>/domains/<domain>/<user>/Maildir/{cur,new,tmp}; pw_shell holds
the quota (NOQUOTA, or Maildir++'s '10000000S' / '10000000S,1000C'); a
mailbox with a quota gets Maildir/maildirsize whose first line is the quota
(quota strings and that file: qmailpy.maildirpp, which qmail-local reads too).
New directories take the owner of vpopmaildir when we run as root, as
vpopmail chowns everything to the vpopmail user.
"""
import os

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
    """mkdir -p with `mode` for what we create, chowned to owner (uid, gid) when given."""
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
    try:
        os.unlink(os.path.join(maildir, "maildirsize"))
    except FileNotFoundError:
        pass


def remove_tree(path, owner=None):
    """rm -rf `path`, errors ignored. owner: (uid, gid) to remove it as (owner_of(); None: as we
    are). Run by root, an admin tool must not remove as root what it finds below the mailbox
    owner's directories: the owner (vpopmail, whom any mailbox's |program runs as) may have put
    a link where domains/ or a domain directory was, and root would remove the tree it points
    into. The directory above `path` is opened here, the tree is removed by a child that is the
    owner: through any link it removes only what the owner could remove itself."""
    import shutil
    if owner is None or owner[0] == os.geteuid():
        shutil.rmtree(path, ignore_errors=True)
        return
    path = os.path.normpath(path)
    try:
        above = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgroups([])
                os.setgid(owner[1])
                os.setuid(owner[0])
                shutil.rmtree(os.path.basename(path), ignore_errors=True, dir_fd=above)
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
    finally:
        os.close(above)
