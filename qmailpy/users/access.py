"""Let qmail-smtpd look into the domain directories, and no further (chkuser in production).

vpopmail keeps `domains/` and each domain directory 0750 vpopmail:vchkpw and its
.qmail files 0600, while qmail-smtpd runs as qmaild:qmail (tcpserver -u/-g).
chkuser stats `.qmail-<user>` files and reads `.qmail-default` in the domain
directories (qmailpy.users.domainfiles). The grant is one POSIX ACL entry for
qmail-smtpd's user: search (x: no listing) on the vpopmail directory, `domains/`
and every domain directory, read on every domain's `.qmail-default`. Mailbox
directories, Maildirs and every other file get nothing.

Where the users service runs (qmail-usersd, the production install since issue
20), it answers chkuser and qmail-smtpd needs no way into these directories:
answered_by_service() says so, the grant goes to the service's user (qmailu)
instead, and the install takes qmaild's back (withdraw). qmailu is not
vpopmail, so that a vpopmail mailbox's `|program` cannot read the users
database; this grant is all qmailu gets of vpopmail's files.

The ACL is written as the `system.posix_acl_access` attribute in Linux's format
(what setfacl writes), so no acl tools are needed; the existing entries stay.
"""
import errno
import os
import struct

XATTR = "system.posix_acl_access"
VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF
READ, SEARCH = 4, 1
HEADER, ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


def _entries(path):
    """{(tag, id): perm} of the file's access ACL (its mode bits when it has none)."""
    try:
        blob = os.getxattr(path, XATTR)
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise
        mode = os.stat(path).st_mode
        return {(USER_OBJ, UNDEFINED): mode >> 6 & 7, (GROUP_OBJ, UNDEFINED): mode >> 3 & 7,
                (OTHER, UNDEFINED): mode & 7}
    if len(blob) < HEADER.size or HEADER.unpack_from(blob)[0] != VERSION or (len(blob) - HEADER.size) % ENTRY.size:
        raise OSError(errno.EINVAL, "unknown ACL format", path)
    return {(tag, ident): perm for tag, perm, ident in
            (ENTRY.unpack_from(blob, off) for off in range(HEADER.size, len(blob), ENTRY.size))}


def grant(path, uid, perm):
    """Give user `uid` at least `perm` on `path`; True when the ACL had to change."""
    entries = _entries(path)
    have = entries.get((USER, uid), 0)
    mask = entries.get((MASK, UNDEFINED))
    if have & perm == perm and (mask is None or mask & perm == perm):
        return False
    entries[(USER, uid)] = have | perm
    if mask is None:          # the mask bounds the group class: what it allowed, plus the new entry
        mask = entries[(GROUP_OBJ, UNDEFINED)]
    entries[(MASK, UNDEFINED)] = mask | perm
    blob = HEADER.pack(VERSION) + b"".join(ENTRY.pack(tag, entries[(tag, ident)], ident)
                                           for tag, ident in sorted(entries))
    os.setxattr(path, XATTR, blob)
    return True


def revoke(path, uid):
    """Take user `uid`'s entry out of the file's ACL; True when there was one. The mask
    shrinks back to the group class's remaining needs (the owning group, named groups)."""
    entries = _entries(path)
    if (USER, uid) not in entries:
        return False
    del entries[(USER, uid)]
    named = [perm for (tag, _), perm in entries.items() if tag in (USER, GROUP)]
    if named:
        entries[(MASK, UNDEFINED)] = entries[(GROUP_OBJ, UNDEFINED)]
        for perm in named:
            entries[(MASK, UNDEFINED)] |= perm
        blob = HEADER.pack(VERSION) + b"".join(ENTRY.pack(tag, entries[(tag, ident)], ident)
                                               for tag, ident in sorted(entries))
        os.setxattr(path, XATTR, blob)
    else:                     # a minimal ACL again: the mode bits say it all (group = the old mask's group)
        os.removexattr(path, XATTR)
        mode = os.stat(path).st_mode & 0o7777 & ~0o070
        os.chmod(path, mode | entries[(GROUP_OBJ, UNDEFINED)] << 3)
    return True


def _as_owner(vpopmaildir, work):
    """work(top) as the owner of the vpopmail directory (qmailpy.users.maildir.as_owner): run
    by root (the install, qmail-users adddomain), a link that owner put below it (vpopmail, whom
    every mailbox's |program runs as: .qmail-default -> /etc/shadow, say) must not have root
    change the ACL of the file it points to. Also a function that makes the paths work returns
    absolute again."""
    from qmailpy.users.maildir import as_owner, owner_of
    vpopmaildir = os.path.abspath(vpopmaildir)
    above = os.path.dirname(vpopmaildir)
    return as_owner(vpopmaildir, owner_of(vpopmaildir), work), lambda path: os.path.join(above, path)


def withdraw(vpopmaildir, uid):
    """Take qmail-smtpd's user (uid) back out of every domain_grants path: [changed paths],
    [(path, error text)]."""
    (changed, problems), absolute = _as_owner(vpopmaildir, lambda top: _withdraw(top, uid))
    return [absolute(p) for p in changed], [(absolute(p), error) for p, error in problems]


def _withdraw(vpopmaildir, uid):
    changed, problems = [], []
    for path, _ in domain_grants(vpopmaildir):
        try:
            if revoke(path, uid):
                changed.append(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append((path, e.strerror or str(e)))
    return changed, problems


def answered_by_service(home):
    """Does the users service answer chkuser for this home (its socket, or its run script)?
    Then qmail-smtpd needs no grant."""
    from qmailpy import paths
    return (os.path.exists(paths.users_socket(home))
            or os.path.exists(os.path.join(home, "service", "qmail-usersd", "run")))


def chkuser_uid(home):
    """Who looks into the domain directories for chkuser: the users service's user where it
    answers (qmailu), else qmail-smtpd's (qmaild); None without that account."""
    import pwd
    from qmailpy.privs import SMTPD_USER
    try:
        return pwd.getpwnam(SERVICE_USER if answered_by_service(home) else SMTPD_USER).pw_uid
    except KeyError:
        return None


SERVICE_USER = "qmailu"      # qmailpy.usersd.main.USER


def smtpd_uid():
    """qmail-smtpd's uid in production (the qmaild user), or None without one."""
    import pwd
    from qmailpy.privs import SMTPD_USER
    try:
        return pwd.getpwnam(SMTPD_USER).pw_uid
    except KeyError:
        return None


def domain_grants(vpopmaildir, domains=None):
    """(path, perm) for what qmail-smtpd needs: every domain, or the named ones."""
    top = os.path.join(vpopmaildir, "domains")
    out = [(vpopmaildir, SEARCH), (top, SEARCH)]
    if domains is None:
        try:
            domains = sorted(name for name in os.listdir(top) if os.path.isdir(os.path.join(top, name)))
        except FileNotFoundError:
            domains = []
    for name in domains:
        out.append((os.path.join(top, name), SEARCH))
        default = os.path.join(top, name, ".qmail-default")
        if os.path.isfile(default):
            out.append((default, READ))
    return out


def let_smtpd_look(vpopmaildir, uid, domains=None):
    """Grant qmail-smtpd's user (uid) the domain_grants; [(path, error text)] of what failed."""
    problems, absolute = _as_owner(vpopmaildir, lambda top: _let_look(top, uid, domains))
    return [(absolute(p), error) for p, error in problems]


def _let_look(vpopmaildir, uid, domains):
    problems = []
    for path, perm in domain_grants(vpopmaildir, domains):
        try:
            grant(path, uid, perm)
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append((path, e.strerror or str(e)))
    return problems
