"""Whose delivery is it: the qmail-local arguments and uid for a local recipient.

Order (qmail-lspawn's nughde_get, then H-Sphere's vpopmail mailboxes):
1. users/cdb (qmail-users, built by qmail-newu from users/assign), as qmail, but for
   vadddomain's line of a virtual domain (Resolver.vpopmail_line), which goes to 2;
2. a virtual-domain recipient `prefix-user@domain` (virtualdomains
   `domain:prefix`): the mailbox from the users database (qmailpy.users,
   imported lazily), else the domain directory's .qmail files
   (Resolver.virtual has the order, chkuser's); a domain the database does not
   host goes on to 3, as in qmail (`domain:alias-x`: ~alias/.qmail-x-user);
3. the passwd file as qmail-getpw does it, then the `alias` user.
An Assignment is the answer; a bytes report (Z.../D...) means "no delivery".
"""
import os
from collections import namedtuple

from qmailpy.addr.keys import BREAK, mailbox_names
from qmailpy.addr.rewrite import Rewriter
from qmailpy.errstr import error_temp

Assignment = namedtuple("Assignment", "user uid gid home dash ext quota", defaults=(None,))
Assignment.__doc__ = """qmail-local's user/homedir/dash/ext, the uid/gid to run it as, and the
Maildir++ quota for $MAILDIRQUOTA (users-database mailboxes only, NOQUOTA included; None: not one)."""

NOALIAS = b"ZUnable to find alias user!\n"
CDB_TROUBLE = b"ZTrouble reading users/cdb in qmail-lspawn.\n"
NFS = b"ZNFS failure in qmail-local.\n"
NO_MAILBOX = b"DSorry, no mailbox here by that name. (#5.1.1)\n"
USERS_DOWN = b"ZUnable to read the users database. (#4.3.0)\n"
NO_OWNER = b"ZUnable to find the mailbox directory. (#4.2.1)\n"
DOMAIN_TROUBLE = b"ZUnable to look into the domain directory. (#4.3.0)\n"
LOCKED = b"Dvdelivermail: account is locked email bounced %s@%s\n"     # vpopmail's BOUNCE_MAIL flag
ALIAS_USER = "alias"
USERLEN = 32                   # qmail-getpw's username buffer
# qmail's error_temp(): errors worth a retry



def _fields(value):
    parts = value.split(b"\0")
    if len(parts) < 6:
        return None
    user, uid, gid, home, dash, ext = parts[:6]
    try:
        return Assignment(user, int(uid or 0), int(gid or 0), home, dash, ext)
    except ValueError:
        return None


def users_cdb(home, local, owner=None):
    """qmail-users lookup of users/cdb: Assignment, None (no file or no match) or CDB_TROUBLE.

    owner: the uid the file must belong to (qmail-lspawn as root: 0, as qmail-newu writes it).
    users/ is the users service's (qmailu's) directory, so qmailu could put a users/cdb there
    that runs any delivery as any uid but root; one root does not own is CDB_TROUBLE."""
    from qmailpy.ctl.cdbmap import open_cdb
    try:
        db = open_cdb(os.path.join(home, "users", "cdb"))
    except (OSError, ValueError):
        return CDB_TROUBLE
    if db is None:
        return None
    try:
        if owner is not None and db.owner != owner:
            return CDB_TROUBLE
        wild = db.get(b"")              # qmail-lspawn.c reads it first: no key, no users/cdb to trust
        if wild is None:
            return CDB_TROUBLE
        lower = b"!" + local.lower() + b"\0"
        got = db.get(lower)
        if got is not None:
            return _fields(got) or CDB_TROUBLE
        for i in range(len(lower) - 1, 0, -1):
            if i == 1 or lower[i - 1:i] in wild:
                got = db.get(lower[:i])
                if got is not None:
                    return _fields(got + local[i - 1:]) or CDB_TROUBLE
        return None
    except Exception:
        return CDB_TROUBLE
    finally:
        db.close()


def getpw(local, alias_home=None, getpwnam=None, as_itself=True):
    """qmail-getpw: the longest `user` in `user-ext` with a passwd entry (uid != 0,
    home owned by it), else the alias user with ext = local. alias_home stands
    in for a missing alias user (alias_stand_in). getpwnam: the user database
    (qmailpy.spawn.passwd.lookup; the system's by default)."""
    if getpwnam is None:
        import pwd
        getpwnam = pwd.getpwnam
    for end in range(len(local), -1, -1):
        if end < USERLEN and (end == len(local) or local[end:end + 1] == BREAK):
            try:
                pw = getpwnam(local[:end].lower().decode("utf-8", "surrogateescape"))
            except (KeyError, ValueError):  # ValueError: a NUL, which no passwd name holds
                pw = None
            if pw is not None and pw.pw_uid:
                try:
                    owner = os.stat(pw.pw_dir).st_uid
                except OSError as e:
                    if error_temp(e):       # qmail-getpw.c: error_temp(errno) -> QLX_NFS
                        return NFS
                    owner = None
                if owner == pw.pw_uid:
                    dash, ext = (b"-", local[end + 1:]) if end < len(local) else (b"", b"")
                    return Assignment(pw.pw_name.encode(), pw.pw_uid, pw.pw_gid,
                                      os.fsencode(pw.pw_dir), dash, ext)
    try:
        pw = getpwnam(ALIAS_USER)
    except KeyError:
        return alias_stand_in(alias_home, local, as_itself)
    return Assignment(pw.pw_name.encode(), pw.pw_uid, pw.pw_gid, os.fsencode(pw.pw_dir), b"-", local)


def alias_stand_in(alias_home, local, as_itself):
    """No alias user: $QMAILHOME/alias (alias_home) stands in, as `make run` has it. Run as
    itself (as_itself: qmail-lspawn not root, single-user mode), or else as the directory's
    owner when that is not root (`make run` as root gives it to vpopmail:vchkpw); a home
    without either is qmail's: NOALIAS. As qmail-getpw would find the alias user by name,
    `alias-ext` (virtualdomains' `postmaster@domain:alias`) is ext of it, else ext = local."""
    if alias_home is None:
        return NOALIAS
    name = ALIAS_USER.encode()
    head, dash, ext = local.partition(BREAK)
    if head.lower() != name:
        dash, ext = b"-", local
    if as_itself:
        uid, gid = os.getuid(), os.getgid()
    else:
        try:
            st = os.stat(alias_home)
        except OSError as e:
            return NFS if error_temp(e) else NOALIAS
        if st.st_uid == 0:
            return NOALIAS
        uid, gid = st.st_uid, st.st_gid
    return Assignment(name, uid, gid, os.fsencode(alias_home), dash, ext)


class Resolver:
    """Holds the controls and one users-database handle between deliveries."""

    def __init__(self, home, controls, single_user, getpwnam=None):
        self.home, self.controls, self.single_user = home, controls, single_user
        self.getpwnam = getpwnam
        self.rewriter = Rewriter.from_controls(controls)
        self.users = None

    def cdb_owner(self):
        """The uid users/cdb must belong to (users_cdb): root's when qmail-lspawn runs as root."""
        return None if self.single_user else 0

    def cdb_refused(self):
        """Why users/cdb is not taken from its owner (a text for qmail-showctl --check), or None."""
        try:
            uid = os.stat(os.path.join(self.home, "users", "cdb")).st_uid
        except OSError:
            return None                  # absent, or unreadable: the cdb check says so
        if self.cdb_owner() in (None, uid):
            return None
        return ("belongs to uid %d, not root: qmail-lspawn defers the deliveries it would assign "
                "(chown root users/cdb if it is yours)" % uid)

    def close(self):
        close = getattr(self.users, "close", None)
        self.users = None
        if close:
            close()

    def resolve(self, local, domain):
        """Assignment for local@domain (bytes, as rewritten by qmail-todo) or a report."""
        got = users_cdb(self.home, local, self.cdb_owner())
        prefix = self.rewriter.vdom_prefix(local + b"@" + domain)
        if not (prefix and local.startswith(prefix + b"-")):
            if got is not None:
                return got
            return self.passwd(local)
        user = local[len(prefix) + 1:]
        if got is not None:
            mine = self.vpopmail_line(got, user, domain)
            if mine is not True:
                return got if mine is False else mine
        return self.virtual(local, user, domain)

    def passwd(self, local):
        """Step 3: qmail-getpw over the passwd file, then the alias user."""
        return getpw(local, os.path.join(self.home, "alias"), self.getpwnam, self.single_user)

    def vpopmail_line(self, got, user, domain):
        """Is this users/cdb answer vadddomain's `+prefix-:domain:uid:gid:<domain dir>:-::`?
        vpopmail runs vdelivermail in the domain directory for every user, mailboxes too;
        here virtual() answers for it (qmail-local is handed a domain directory only for a
        recipient without a mailbox). USERS_DOWN when the database cannot tell."""
        if not isinstance(got, Assignment) or (got.dash, got.ext) != (b"-", user):
            return False
        from qmailpy.users import UsersUnavailable, open_users
        try:
            if self.users is None:
                self.users = open_users(self.home, self.controls)
            real = self.users.domain_of(domain.lower().decode("utf-8", "surrogateescape"))
        except UsersUnavailable:
            self.close()
            return USERS_DOWN
        if real is None:
            return False
        return os.path.realpath(os.fsdecode(got.home)) == os.path.realpath(self.users.domain_dir(real))

    def virtual(self, local, user, domain):
        """Where a virtual-domain recipient's mail goes, in chkuser's order (qmailpy.users.chkuser).

        1. an alias file .qmail-<user> or .qmail-<prefix>-default in the domain directory
           (vpopmail's order: qmail-local reads it before .qmail-default runs vdelivermail,
           so it wins over a mailbox of the same name);
        2. the mailbox `user` (vpopmail's BOUNCE_MAIL flag: LOCKED);
        3. a catch-all .qmail-default there (qmailpy.users.domainfiles.is_catchall);
        4. the mailbox of the longest `u` of user = `u-ext` (-ext becomes dash/ext when its
           directory has a .qmail file for ext, else its .qmail or Maildir takes it: extension();
           qmailpy.addr.keys.mailbox_names, which the filter keys use too);
        5. any other .qmail-default (vpopmail's `| vdelivermail '' bounce-no-mailbox`);
        else NO_MAILBOX, or, for a domain the database does not host (qmail's own
        virtualdomains use, `domain:alias-x`), qmail-getpw (passwd()).
        2, 3 and 5 run qmail-local in the domain directory as its
        owner with ext = user, as vpopmail's users/assign line `+dom-:dom:uid:gid:dir:-::`.
        The database is opened on first use and kept between deliveries.
        """
        from qmailpy.users import UsersUnavailable, open_users
        dom = domain.lower().decode("utf-8", "surrogateescape")
        name = user.lower().decode("utf-8", "surrogateescape")
        try:
            if self.users is None:
                self.users = open_users(self.home, self.controls)
            files = self.domain_files(dom, name)
            if files is not None and files.alias:
                return files.assignment(user)
            box = self.users.lookup(name, dom)
            if box is not None:
                return self.mailbox(box, b"", b"")
            if files is not None and files.catchall:
                return files.assignment(user)
            for short, ext in mailbox_names(user):
                if ext is None:
                    continue                  # the whole name: asked above
                box = self.users.lookup(short.lower().decode("utf-8", "surrogateescape"), dom)
                if box is not None:
                    return self.mailbox(box, *self.extension(box, ext))
            if files is not None and files.default:
                return files.assignment(user)
            if files is None:       # not a users-database domain: qmail's virtualdomains (domain:alias-x)
                return self.passwd(local)
            return NO_MAILBOX
        except UsersUnavailable:
            self.close()
            return USERS_DOWN
        except OSError:
            return DOMAIN_TROUBLE

    @staticmethod
    def extension(box, ext):
        """qmail-local's dash and ext for `u-ext` of the mailbox `u`, as vpopmail's QMAIL_EXT
        delivers it: the mailbox directory's .qmail-<ext> (or a -default) when it has one, else
        none, so its .qmail, else its Maildir, takes the mail (with dash '-' and no such file,
        qmail-local bounced it: no mailbox here). OSError: the directory cannot be looked into."""
        from qmailpy.users import domainfiles
        if domainfiles.ext_file(box.dir, ext.decode("utf-8", "surrogateescape")) is None:
            return b"", b""
        return b"-", ext

    def mailbox(self, box, dash, ext):
        """The Assignment of a users-database mailbox, or a report."""
        if getattr(box, "bounces", False):
            return LOCKED % (box.name.encode("utf-8", "surrogateescape"),
                             box.domain.encode("utf-8", "surrogateescape"))
        if box.uid is None and not self.single_user:
            return NO_OWNER          # no directory to take the owner from
        from qmailpy.users.schema import NOQUOTA
        # pw_shell decides, as in vdelivermail: NOQUOTA too, or qmail-local would take a limit
        # from maildirsize's first line (one a delivery started before setquota wrote back)
        return Assignment(box.name.encode("utf-8", "surrogateescape"), box.uid, box.gid,
                          os.fsencode(box.dir), dash, ext, box.quota or NOQUOTA)

    def domain_files(self, domain, user):
        """What the hosted domain's directory has for `user` (DomainFiles), None when not hosted."""
        from qmailpy.users import domainfiles
        real = self.users.domain_of(domain)
        if real is None:
            return None
        ddir = self.users.domain_dir(real)
        return DomainFiles(real, ddir, domainfiles.alias_file(ddir, user) is not None)


class DomainFiles:
    """A hosted domain's directory: has an alias file for the user; its .qmail-default,
    read only when asked (a mailbox found before it never depends on that file)."""

    def __init__(self, domain, directory, alias):
        self.domain, self.directory, self.alias = domain, directory, alias
        self._head = False

    def head(self):
        if self._head is False:
            from qmailpy.users import domainfiles
            self._head = domainfiles.default_head(self.directory)
        return self._head

    @property
    def catchall(self):
        from qmailpy.users import domainfiles
        return domainfiles.is_catchall(self.head())

    @property
    def default(self):
        return self.head() is not None

    def assignment(self, user):
        """qmail-local in the domain directory, as its owner (vpopmail), ext = the user."""
        st = os.stat(self.directory)
        return Assignment(self.domain.encode("utf-8", "surrogateescape"), st.st_uid, st.st_gid,
                          os.fsencode(self.directory), b"-", user)
