"""The admin operations behind qmail-users, with vpopmail's semantics.

Each changes the tables in one transaction, then the directories:
adddomain makes domains/<domain> and its dir_control row; adduser makes
<user>/Maildir (and maildirsize with a quota) and its vpopmail row; deluser
and deldomain remove rows and directories (the directory moved aside inside
the transaction, removed after it). Errors are UsersError.
"""
import contextlib
import os

from qmailpy import maildirpp
from qmailpy.users import maildir, schema
from qmailpy.users.base import MissingTable, UsersError
from qmailpy.users.errors import UsersTrouble
from qmailpy.users.names import lower, split_login, valid_domain, valid_user
from qmailpy.users.passwords import DEFAULT_SCHEME, hash_password

@contextlib.contextmanager
def atomic(users, undo=None):
    """One transaction around the table changes of an operation. undo(): what takes back the
    operation's work on disk when the transaction fails, its commit included (run before the
    rollback, while the transaction still holds its rows where the database has not already
    rolled it back)."""
    try:
        users.db.begin()
    except MissingTable:        # a SQLite file not made yet
        users.db.ensure_schema()
        users.db.begin()
    try:
        yield
        users.db.commit()
    except BaseException:
        try:
            if undo is not None:
                undo()
        finally:
            users.db.rollback()
        raise


def dir_error(what, path, e):
    """The error for a directory `what` (the mailbox, the domain directory) that could not be
    made: UsersTrouble for an errno worth a retry (errstr.error_temp: EIO, a full disk), else
    UsersError (a link in the way, no permission: a refusal, as vadduser's)."""
    from qmailpy.errstr import error_temp
    text = "cannot make %s %s: %s" % (what, e.filename or path, e.strerror or e)
    return UsersTrouble(text) if error_temp(e) else UsersError(text)


def _unmade(path, owner):
    """undo() for a directory this operation made: removed (None when it was there before)."""
    if os.path.lexists(path):
        return None
    return lambda: maildir.remove_tree(path, owner)


def check_domain(domain):
    domain = lower((domain or "").strip()).rstrip(".")
    if not valid_domain(domain):
        raise UsersError("invalid domain name %r" % domain)
    return domain


def check_user(user):
    user = lower((user or "").strip())
    if not valid_user(user):
        raise UsersError("invalid user name %r" % user)
    return user


def _address(users, address):
    """(user, real domain) of an existing domain; UsersError otherwise."""
    user, domain = split_login(address)
    if not domain:
        raise UsersError("give the address as user@domain")
    real = users.domain_of(domain)
    if real is None:
        raise UsersError("no such domain: %s" % domain)
    return check_user(user), real


def add_domain(users, domain):
    domain = check_domain(domain)
    recover(users, domain)
    if users.domain_of(domain) is not None:
        raise UsersError("domain exists: %s" % domain)
    owner = maildir.owner_of(users.vpopmaildir)
    with atomic(users, undo=_unmade(users.domain_dir(domain), owner)):
        domain_row(users, domain)
        try:                    # before the commit, as vadddomain: no domain without its directory
            maildir.as_owner(users.domain_dir(domain), owner, lambda rel: maildir.make_domain_dir(rel, owner))
        except OSError as e:
            raise dir_error("the domain directory", users.domain_dir(domain), e) from None
    return domain


def domain_row(users, domain):
    """The dir_control row of a new domain, as vadddomain writes it (inside the caller's transaction)."""
    users.write("REPLACE INTO dir_control (%s) VALUES (?, %s)"
                % (schema.DIR_CONTROL_COLUMNS, ", ".join("?" * len(schema.DIR_CONTROL_NEW))),
                domain, *schema.DIR_CONTROL_NEW)


def alias_row(users, alias, real):
    users.write("REPLACE INTO aliasdomains (alias, domain) VALUES (?, ?)", alias, real)


def user_row(users, user, domain, crypted, gecos, user_dir, shell, clear_text, uid=0, flags=0):
    """The vpopmail row of a new user, counted in its domain's dir_control row (whose UPDATE
    locks that row on MySQL); the number of dir_control rows counted (0: the domain has none)."""
    counted = users.write("UPDATE dir_control SET cur_users = cur_users + 1 WHERE domain = ?", domain)
    if not counted and not users.is_real_domain(domain):
        raise UsersError("no such domain: %s" % domain)
    users.write("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, "
                "pw_dir, pw_shell, pw_clear_passwd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                user, domain, crypted, uid, flags, gecos, user_dir, shell, clear_text)
    return counted


def add_alias_domain(users, first, second):
    """vaddaliasdomain: whichever of the two exists is the real domain, the other its alias."""
    first, second = check_domain(first), check_domain(second)
    a, b = users.domain_of(first), users.domain_of(second)
    if a is not None and b is not None:
        raise UsersError("both domains exist already: %s, %s" % (first, second))
    if a is None and b is None:
        raise UsersError("neither %s nor %s exists" % (first, second))
    alias, real = (second, a) if a is not None else (first, b)
    with atomic(users):
        alias_row(users, alias, real)
    return alias, real


def del_domain(users, domain, keep_files=False):
    """Remove a domain with its users, aliases and directory; for an alias, just the alias."""
    domain = check_domain(domain)
    recover(users, domain)
    target = users.alias_target(domain)
    if target is not None:
        with atomic(users):
            users.write("DELETE FROM aliasdomains WHERE alias = ?", domain)
        return "alias"
    if not users.is_real_domain(domain):
        raise UsersError("no such domain: %s" % domain)
    _delete(users, [("DELETE FROM vpopmail WHERE pw_domain = ?", domain),
                    ("DELETE FROM aliasdomains WHERE domain = ?", domain),
                    ("DELETE FROM dir_control WHERE domain = ?", domain),
                    ("DELETE FROM lastauth WHERE domain = ?", domain)],
            None if keep_files else users.domain_dir(domain))
    return "domain"


def _delete(users, statements, tree, gone=None):
    """The statements in one transaction, and `tree` (None: the files stay) removed: moved aside
    inside the transaction and removed after the commit, so that what an adduser or adddomain of
    the same name makes right after the commit is not removed with it. gone: the UsersError
    message when the first statement deletes nothing, another command having deleted it
    since it was looked up (nothing else is done twice, vpopmail's cur_users count included)."""
    owner = maildir.owner_of(users.vpopmaildir)
    aside = None
    try:
        with atomic(users):
            for i, (sql, *args) in enumerate(statements):
                if users.write(sql, *args) == 0 and i == 0 and gone:
                    raise UsersError(gone)
            if tree is not None:
                aside = maildir.set_aside(tree, owner)
    except BaseException:
        maildir.put_back(aside, tree, owner)
        raise
    if aside is not None:
        maildir.remove_tree(aside, owner)


def recover(users, domain):
    """Finish what a deluser or deldomain that died between moving a tree aside and removing it
    left (killed, or its rmtree failed): a `.deleted.NAME.RANDOM` in domains/ or in domains/DOMAIN
    goes back to NAME while its domain or user row is there and NAME is not (the transaction did
    not commit: the mailbox would defer, then bounce, with no directory), and is removed once
    the row is gone. Each is decided in a transaction that first writes the domain's dir_control
    row, which the deleting one holds until its commit: one still at work is waited for, never
    undone. A tree whose NAME exists again is left alone."""
    owner = maildir.owner_of(users.vpopmaildir)
    domains = os.path.dirname(users.domain_dir(domain))
    for parent, in_domain in ((domains, None), (users.domain_dir(domain), domain)):
        for aside, name in maildir.set_aside_trees(parent):
            path = os.path.join(parent, name)
            with atomic(users):
                users.write("UPDATE dir_control SET cur_users = cur_users WHERE domain = ?", in_domain or name)
                if in_domain is None:
                    alive = users.is_real_domain(name)
                else:
                    box = users.lookup(name, in_domain)
                    alive = box is not None and os.path.normpath(box.dir) == os.path.normpath(path)
                if alive and not os.path.lexists(path):
                    maildir.put_back(aside, path, owner)
            if not alive:
                maildir.remove_tree(aside, owner)


def add_user(users, address, password, quota=None, clear=False, scheme=DEFAULT_SCHEME, gecos=None):
    user, domain = _address(users, address)
    recover(users, domain)
    if users.lookup(user, domain) is not None:
        raise UsersError("user exists: %s@%s" % (user, domain))
    shell = _shell(quota)
    user_dir = os.path.join(users.domain_dir(domain), user)
    if len(user_dir) > schema.MAX_DIR:
        raise UsersError("mailbox path longer than %d characters: %s" % (schema.MAX_DIR, user_dir))
    gecos = (gecos if gecos is not None else user)[:schema.MAX_GECOS]
    crypted, clear_text = _secrets(password, clear, scheme)
    owner = maildir.owner_of(users.vpopmaildir)
    # a failed transaction takes its new mailbox directory away again, as vadduser's vdelfiles
    with atomic(users, undo=_unmade(user_dir, owner)):
        # the domain again, inside the transaction: a deldomain since the look above would get a
        # user row that brings its domain back
        user_row(users, user, domain, crypted, gecos, user_dir, shell, clear_text)
        # before the commit: as vadduser (make_user_dir first, VA_BAD_U_DIR), no row without a Maildir
        try:
            def make(rel):
                maildir.make_maildir(rel, owner)
                if shell != schema.NOQUOTA:
                    maildirpp.recount(os.path.join(rel, "Maildir"), shell, owner=owner)
            maildir.as_owner(users.domain_dir(domain), owner, lambda rel: maildir.make_domain_dir(rel, owner))
            maildir.as_owner(user_dir, owner, make)
        except OSError as e:
            raise dir_error("the mailbox", user_dir, e) from None
    return users.lookup(user, domain)


def del_user(users, address, keep_files=False):
    user, domain = _address(users, address)
    recover(users, domain)
    box = users.lookup(user, domain)
    if box is None:
        raise UsersError("no such user: %s@%s" % (user, domain))
    _delete(users, [("DELETE FROM vpopmail WHERE pw_name = ? AND pw_domain = ?", user, domain),
                    ("DELETE FROM lastauth WHERE user = ? AND domain = ?", user, domain),
                    ("UPDATE dir_control SET cur_users = cur_users - 1 WHERE domain = ? AND cur_users > 0",
                     domain)],
            box.dir if not keep_files and os.path.isabs(box.dir) else None,
            gone="no such user: %s@%s" % (user, domain))
    return box


def set_password(users, address, password, clear=False, scheme=DEFAULT_SCHEME):
    """New pw_passwd; pw_clear_passwd is set with `clear`, else emptied (it would be stale)."""
    user, domain = _address(users, address)
    if users.lookup(user, domain) is None:
        raise UsersError("no such user: %s@%s" % (user, domain))
    crypted, clear_text = _secrets(password, clear, scheme)
    with atomic(users):
        users.write("UPDATE vpopmail SET pw_passwd = ?, pw_clear_passwd = ? WHERE pw_name = ? AND pw_domain = ?",
                    crypted, clear_text, user, domain)


def set_quota(users, address, quota):
    """pw_shell = the quota (vpopmail's vsetuserquota); maildirsize follows."""
    user, domain = _address(users, address)
    box = users.lookup(user, domain)
    if box is None:
        raise UsersError("no such user: %s@%s" % (user, domain))
    shell = _shell(quota)
    with atomic(users):
        users.write("UPDATE vpopmail SET pw_shell = ? WHERE pw_name = ? AND pw_domain = ?", shell, user, domain)
    owner = maildir.owner_of(users.vpopmaildir)
    try:
        if shell == schema.NOQUOTA:
            maildir.as_owner(box.maildir, owner, maildir.remove_maildirsize)
        elif os.path.isdir(box.maildir):
            maildir.as_owner(box.maildir, owner, lambda rel: maildirpp.recount(rel, shell, owner=owner))
    except OSError as e:        # committed: the caller says what is left, naming the file
        if e.filename is None:
            from qmailpy.fileio import named
            raise named(e, os.path.join(box.maildir, maildirpp.NAME)) from None
        raise
    return users.lookup(user, domain)


def _shell(quota):
    if quota is None or str(quota).strip().upper() in ("", schema.NOQUOTA):
        return schema.NOQUOTA
    if not maildirpp.valid(str(quota)):
        raise UsersError("invalid quota %r (NOQUOTA, bytes, 10M, 512k, or Maildir++ 10000000S,1000C)" % quota)
    shell = maildirpp.normalize(str(quota))
    if len(shell) > schema.MAX_QUOTA:
        raise UsersError("quota longer than %d characters: %s" % (schema.MAX_QUOTA, shell))
    return shell


def _secrets(password, clear, scheme):
    """(pw_passwd, pw_clear_passwd) as vpopmail stores them; the clear one only when asked."""
    if not password:
        raise UsersError("empty password")
    crypted = hash_password(password, scheme)       # at most 106 characters ($6$): fits MAX_PASSWD
    if clear and len(password) > schema.MAX_CLEAR:
        raise UsersError("pw_clear_passwd holds at most %d characters (vpopmail's column)" % schema.MAX_CLEAR)
    return crypted, (password if clear else "")


def info(users, address):
    """What vuserinfo prints, as (label, value) pairs; None when there is no such user."""
    user, domain = _address(users, address)
    acct = users.account(user, domain)
    if acct is None:
        return None
    box = acct.mailbox
    used = maildirpp.scan(box.maildir)
    return [("name", box.name), ("domain", box.domain), ("passwd", acct.passwd),
            ("clear passwd", "yes" if acct.clear else "no"), ("gecos", box.gecos),
            ("flags", "0x%x" % box.flags), ("dir", box.dir), ("quota", box.quota or schema.NOQUOTA),
            ("usage", "%d bytes, %d messages" % used)]
