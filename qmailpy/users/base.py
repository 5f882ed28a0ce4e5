"""The users database: vpopmail's tables behind one small interface.

qmail-smtpd (AUTH, chkuser, POP-before-SMTP), qmail-local and the admin
tool all go through `open_users(home, controls)`. Nothing connects until the
first question; a database that cannot answer raises UsersUnavailable, so
callers answer 451 or defer instead of saying "no such user". This module
and what it imports use only os: qmail-smtpd loads it on every connection;
the backends (sqlite3, pymysql) and the crypt code load on first use.
"""
import os

from qmailpy.users.errors import MissingTable, UsersError, UsersUnavailable  # noqa: F401
from qmailpy.users.names import lower, split_login, split_address, valid_domain, valid_user  # noqa: F401
from qmailpy.users.relay import RelayTable

SQLITE_FILE = os.path.join("users", "vpopmail.sqlite")
TIMEOUT = 5.0            # seconds for connect, read and write


class Mailbox:
    """One vpopmail user: where its mail goes and as whom it is delivered.

    dir is pw_dir (the Maildir is dir/Maildir); quota is the Maildir++ string
    ('10000000S') or None for NOQUOTA; uid/gid own the mailbox (None when
    its directories are missing); flags are vpopmail's pw_gid bits.
    """
    __slots__ = ("name", "domain", "dir", "quota", "uid", "gid", "flags", "gecos")

    def __init__(self, name, domain, dir, quota, uid, gid, flags=0, gecos=""):
        self.name, self.domain, self.dir, self.quota = name, domain, dir, quota
        self.uid, self.gid, self.flags, self.gecos = uid, gid, flags, gecos

    @property
    def maildir(self):
        return os.path.join(self.dir, "Maildir")

    @property
    def bounces(self):
        """vpopmail's BOUNCE_MAIL flag: a locked account, whose mail bounces (and chkuser refuses)."""
        from qmailpy.users.schema import BOUNCE_MAIL
        return bool(self.flags & BOUNCE_MAIL)

    @property
    def address(self):
        return "%s@%s" % (self.name, self.domain)

    def __repr__(self):
        return "Mailbox(%r, %r, dir=%r, quota=%r)" % (self.name, self.domain, self.dir, self.quota)


class Account:
    """A Mailbox with its secrets, for the authenticators only."""
    __slots__ = ("mailbox", "passwd", "clear")

    def __init__(self, mailbox, passwd, clear):
        self.mailbox, self.passwd, self.clear = mailbox, passwd, clear

    @property
    def cram_key(self):
        """The clear password CRAM-MD5 is keyed with, or "": none for an account without
        pw_passwd, which vchkpw refuses whatever the mechanism ("user has no password")."""
        return self.clear if self.passwd else ""


def vpopmail_dir(home, controls):
    """The home of the virtual domains: control vpopmaildir, else vpopmail/ in the qmail home."""
    return os.path.join(home, controls.value("vpopmaildir") or "vpopmail")


def open_users(home, controls, create=False, timeout=TIMEOUT):
    """The users database of a qmail home; `create` makes the tables (for the admin tool)."""
    try:
        line = (controls.value("usersdb") or "").strip()
        vdir = vpopmail_dir(home, controls)
    except OSError as e:        # ctl.reader.ControlError: a control file we cannot read
        raise UsersUnavailable(str(e)) from None
    if line:
        from qmailpy.users.mysql import MysqlDB
        db = MysqlDB(line, timeout, create)
    else:
        from qmailpy.users.sqlite import SqliteDB
        db = SqliteDB(os.path.join(home, SQLITE_FILE), timeout, create)
    return Users(db, os.path.abspath(vdir))


def _owner(*paths):
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        return st.st_uid, st.st_gid
    return None, None


class Users(RelayTable):
    """Questions about domains, mailboxes and passwords; the relay table comes from RelayTable."""

    USER_COLUMNS = "pw_name, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd"

    def __init__(self, db, vpopmaildir):
        self.db, self.vpopmaildir = db, vpopmaildir

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rows(self, sql, *args):
        """Rows of a query; a table that does not exist yet has none."""
        try:
            return self.db.query(sql, args)
        except MissingTable:
            return []

    def write(self, sql, *args):
        """Run a change, creating vpopmail's tables first if one is missing (as vpopmail does)."""
        try:
            return self.db.execute(sql, args)
        except MissingTable:
            self.db.ensure_schema()
            return self.db.execute(sql, args)

    def domain_dir(self, domain):
        return os.path.join(self.vpopmaildir, "domains", domain)

    # -- domains
    def alias_target(self, name):
        rows = self.rows("SELECT domain FROM aliasdomains WHERE alias = ?", name)
        return lower(rows[0][0]) if rows else None

    def is_real_domain(self, name):
        return bool(self.rows("SELECT domain FROM dir_control WHERE domain = ?", name)
                    or self.rows("SELECT pw_domain FROM vpopmail WHERE pw_domain = ? LIMIT 1", name))

    def domain_of(self, name):
        """The hosted domain `name` stands for (itself, or the domain it is an alias of), or None."""
        name = lower((name or "").strip()).rstrip(".")
        if not valid_domain(name):
            return None
        target = self.alias_target(name)
        if target is not None:
            return target
        return name if self.is_real_domain(name) else None

    def has_domain(self, name):
        """True for hosted domains and their aliases."""
        return self.domain_of(name) is not None

    # -- mailboxes
    def _mailbox(self, row, domain):
        from qmailpy.maildirpp import normalize
        name, passwd, _uid, flags, gecos, pw_dir, shell, clear = row
        pw_dir = pw_dir or os.path.join(self.domain_dir(domain), name)
        uid, gid = _owner(pw_dir, self.domain_dir(domain), self.vpopmaildir)
        box = Mailbox(name, domain, pw_dir, normalize(shell) or None, uid, gid, int(flags or 0), gecos or "")
        return Account(box, passwd or "", clear or "")

    def account(self, user, domain):
        """The Account of user@domain (domain may be an alias), or None.

        The name matches exactly (docs/users.md, "Exact names"): A-Z fold to
        a-z, and a name or domain qmail-users could not have made is nobody,
        without a query.
        """
        user, domain = lower(user or ""), lower(domain or "").rstrip(".")
        if not valid_user(user) or not valid_domain(domain):
            return None
        sql = "SELECT %s FROM vpopmail WHERE pw_name = ? AND pw_domain = ?" % self.USER_COLUMNS
        rows = self.rows(sql, user, domain)
        if not rows:
            target = self.alias_target(domain)
            if target is None or target == domain:
                return None
            domain = target
            rows = self.rows(sql, user, domain)
            if not rows:
                return None
        return self._mailbox(rows[0], domain)

    def lookup(self, user, domain):
        """The Mailbox of user@domain, or None when there is no such user."""
        acct = self.account(user, domain)
        return acct.mailbox if acct else None

    def find_address(self, name, domain):
        """b"name@realdomain" of the mailbox for name@domain (bytes), or None: the users database's
        answer to qmailpy.addr.keys (recipient keys)."""
        box = self.lookup(name.decode("utf-8", "surrogateescape"), domain.decode("utf-8", "surrogateescape"))
        return box.address.encode("utf-8", "surrogateescape") if box is not None else None

    def mailboxes(self, domain):
        """Every Mailbox of a domain, by name."""
        sql = "SELECT %s FROM vpopmail WHERE pw_domain = ? ORDER BY pw_name" % self.USER_COLUMNS
        return [self._mailbox(row, domain).mailbox for row in self.rows(sql, lower(domain))]

    def domains(self):
        """Hosted domains, sorted, and {alias: domain}."""
        names = {lower(r[0]) for r in self.rows("SELECT domain FROM dir_control")}
        names.update(lower(r[0]) for r in self.rows("SELECT DISTINCT pw_domain FROM vpopmail"))
        aliases = {lower(r[0]): lower(r[1]) for r in self.rows("SELECT alias, domain FROM aliasdomains")}
        return sorted(names), aliases

    # -- passwords
    def verify_password(self, login, password):
        """True when `password` is the password of login (user@domain)."""
        from qmailpy.users import passwords
        acct = self.account(*split_login(login))
        return passwords.verify(acct.passwd if acct else "", password)

    def verify_cram_md5(self, login, challenge, hexdigest):
        """True when hexdigest is HMAC-MD5(challenge) keyed with the user's pw_clear_passwd."""
        from qmailpy.users import passwords
        acct = self.account(*split_login(login))
        return passwords.cram_md5_ok(acct.cram_key if acct else "", challenge, hexdigest)


class AddressFinder:
    """find(name, domain) for qmailpy.addr.keys.RecipientKeys over a users database opened on
    first use (`opener()`). When the database cannot answer, `trouble(error)` hears it once and
    the keys go on without it (from the controls alone: more keys, never fewer)."""

    def __init__(self, opener, trouble=None):
        self.opener, self.trouble = opener, trouble
        self.users, self.failed = None, False

    def __call__(self, name, domain):
        if self.failed:
            return None
        try:
            if self.users is None:
                self.users = self.opener()
            return self.users.find_address(name, domain)
        except UsersUnavailable as e:
            self.failed = True
            if self.trouble is not None:
                self.trouble(e)
            return None

    def close(self):
        if self.users is not None:
            self.users.close()
            self.users = None
