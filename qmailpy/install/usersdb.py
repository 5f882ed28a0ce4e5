"""The production install's part for the users service: who may read the users database and the SRS keys.

  users/                       qmailu:qmailu 0700 (qmail-newu's assign and cdb stay root's files)
  users/vpopmail.sqlite*       qmailu:qmailu 0600 (with its -journal, -wal, -shm)
  control/usersdb              qmailu:qmailu 0400 when present (the MySQL password)
  control/srs/*secrets         qmails:qmailu 0440 (qmail-send, qmail-todo; the users service)
  sock/                        root 0755: the service's socket, sock/users, is made by the service

qmail-smtpd (qmaild) asks the service instead of reading any of these, so the
ACL that let qmaild into the vpopmail domain directories for chkuser
(qmailpy.users.access) is taken back and given to qmailu, which answers chkuser
now. Run again over an older install, secure() says what it changed. qmailu:
qmailpy/install/accounts.py.
"""
import errno
import os
import stat

from qmailpy import paths

USER = GROUP = "qmailu"
DB_SUFFIXES = ("", "-journal", "-wal", "-shm")


def _set(path, uid, gid, mode, said, log):
    """chown/chmod `path` when it differs; log what changed (once per path).

    The file is opened without following a link and must have no other name: users/ is
    qmailu's, so qmailu may have put a symbolic or hard link there under the database's
    names, and root would give it the target (/etc/shadow, say). Such a path is left alone
    and said."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:       # gone since the caller looked (a -journal the service ended)
        return False
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        log("note: %s is a symbolic link: left alone" % path)
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode) and (not stat.S_ISREG(st.st_mode) or st.st_nlink != 1):
            log("note: %s has %d names: left alone" % (path, st.st_nlink) if stat.S_ISREG(st.st_mode)
                else "note: %s is not a file: left alone" % path)
            return False
        if (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode):
            return False
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    if said:
        log("%s: was %d:%d %o, now %d:%d %o" % (path, st.st_uid, st.st_gid, st.st_mode & 0o7777, uid, gid, mode))
    return True


def secure(home, vpopmaildir, log=print, said=True):
    """Owners and modes above, and qmaild's chkuser ACL withdrawn; the paths changed."""
    from qmailpy.install import accounts
    from qmailpy.srs import keys
    from qmailpy.users import access
    from qmailpy.users.base import SQLITE_FILE
    uid, gid = accounts.ids(USER)[0], accounts.gid(GROUP)
    changed = []
    users = os.path.join(home, os.path.dirname(SQLITE_FILE))
    os.makedirs(users, exist_ok=True)
    if _set(users, uid, gid, 0o700, said, log):
        changed.append(users)
    db = os.path.join(home, SQLITE_FILE)
    for path in [db + s for s in DB_SUFFIXES] + [paths.control_path(home, "usersdb")]:
        if os.path.exists(path) and _set(path, uid, gid, 0o400 if path.endswith("usersdb") else 0o600, said, log):
            changed.append(path)
    sock = os.path.dirname(paths.users_socket(home))
    os.makedirs(sock, exist_ok=True)
    if _set(sock, 0, 0, 0o755, said, log):
        changed.append(sock)
    for name, (user, group) in keys.OWNERS.items():
        path = paths.control_path(home, name)
        if os.path.exists(path):
            ids = keys.owner_ids(user, group)
            if _set(path, 0 if ids[0] == -1 else ids[0], 0 if ids[1] == -1 else ids[1], keys.ROOT_MODES[name],
                    said, log):
                changed.append(path)
    for path, error in access.let_smtpd_look(vpopmaildir, uid):
        log("note: cannot let qmailu into %s (%s): chkuser answers 451 for its domain" % (path, error))
    smtpd = access.smtpd_uid()
    if smtpd is not None:
        withdrawn, problems = access.withdraw(vpopmaildir, smtpd)
        for path in withdrawn:
            log("%s: qmaild's ACL entry removed (the users service answers chkuser)" % path)
        for path, error in problems:
            log("note: cannot take qmaild's ACL entry off %s: %s" % (path, error))
        changed += withdrawn
    return changed
