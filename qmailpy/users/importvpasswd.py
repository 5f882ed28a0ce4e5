"""qmail-users importvpasswd: the users of vpopmail's default (cdb) backend into the users database.

A qmail+vpopmail host built with vpopmail's cdb backend keeps each domain's users in
`<domain dir>/vpasswd` (vpasswd.cdb is compiled from it), one line each (vcdb.c):

    pw_name:pw_passwd:pw_uid:pw_gid:pw_gecos:pw_dir:pw_shell[:pw_clear_passwd]

(pw_gid: the flag bits; pw_shell: the quota; the clear password, when kept, is the rest of
the line, colons and all, as vauth_getpw reads it), and its domains in qmail's users/assign
as vadddomain writes them, `+domain-:domain:uid:gid:<domain dir>:-::`; vaddaliasdomain
writes `+alias-:domain:uid:gid:<the domain's dir>:-::`, so an alias domain is a line whose
directory is another domain's.

Each domain is imported in one transaction: its dir_control row (as adddomain writes it),
each user row as vpasswd has it (pw_passwd byte for byte: the old passwords keep working)
counted in cur_users as adduser does, its alias domains. Nothing on disk is made, changed or
removed. A domain, user or alias domain the database has already is reported and kept, so a
second run changes nothing. Every line is checked first; a bad one (named by file and line)
imports nothing of its domain.
"""
import collections
import contextlib
import os

from qmailpy import maildirpp
from qmailpy.users import admin, schema
from qmailpy.users.base import UsersError
from qmailpy.users.names import lower, valid_domain, valid_user

VPASSWD = "vpasswd"
FORM = "pw_name:pw_passwd:pw_uid:pw_gid:pw_gecos:pw_dir:pw_shell[:pw_clear_passwd]"
MAX_INT = 2 ** 31 - 1           # pw_uid and pw_gid are int columns

Entry = collections.namedtuple("Entry", "name passwd uid gid gecos dir shell clear line")
KEPT = "pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, pw_shell, pw_clear_passwd"   # read back after the INSERT


def assign_domains(data):
    """({domain: its directory}, {alias: domain}, {directory: name}) of vpopmail's lines in
    users/assign (bytes); the last: lines whose names qmail-users cannot host (their users
    would be lost unseen: the caller reports those whose directory has a vpasswd)."""
    lines, unhostable = [], {}
    for raw in data.split(b"\n"):
        if raw.startswith(b"."):
            break
        fields = raw.decode("utf-8", "replace").split(":")
        if not raw.startswith(b"+") or len(fields) < 7 or not fields[0].endswith("-"):
            continue
        if not fields[4].startswith("/"):
            continue
        name, target, directory = lower(fields[0][1:-1]), lower(fields[1]), os.path.normpath(fields[4])
        if valid_domain(name) and valid_domain(target):
            lines.append((name, target, directory))
        else:
            unhostable[directory] = name
    real = {name: d for name, target, d in lines if name == target}
    owner = {d: name for name, d in real.items()}
    aliases = {name: owner[d] for name, target, d in lines
               if name != target and name not in real and d in owner}
    return real, aliases, {d: name for d, name in unhostable.items() if d not in owner}


def _number(value, what, bad):
    if value == "":             # vauth_getpw: an empty field is 0
        return 0
    if not (value.isdigit() and value.isascii()) or int(value) > MAX_INT:
        raise bad("%s is not a number: %r" % (what, value))
    return int(value)


def parse_vpasswd(data, name):
    """[Entry] of a vpasswd file's bytes; UsersError naming `name` and the line of the first bad one."""
    entries, seen = [], {}
    lines = data.split(b"\n")
    for n, raw in enumerate(lines, 1):
        if not raw:             # the end of the file (or an empty line, which is no one)
            continue

        def bad(why, n=n):
            return UsersError("%s:%d: %s" % (name, n, why))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad("not UTF-8") from None
        if "\0" in text or "\r" in text:
            raise bad("a NUL or CR character")
        fields = text.split(":", 7)
        if len(fields) < 7:
            raise bad("%d fields, 7 or 8 needed (%s)" % (len(fields), FORM))
        user, passwd, uid, gid, gecos, pw_dir, shell = fields[:7]
        clear = fields[7] if len(fields) > 7 else ""
        if not valid_user(user):
            raise bad("user name %r is not one qmail-users can look up" % user)
        entry = Entry(user, passwd, _number(uid, "pw_uid", bad), _number(gid, "pw_gid", bad),
                      gecos, pw_dir, shell, clear, n)
        if not pw_dir.startswith("/"):
            raise bad("pw_dir is not an absolute path: %r" % pw_dir)
        if shell != schema.NOQUOTA and not maildirpp.valid(shell):
            raise bad("pw_shell is not a quota (NOQUOTA or Maildir++): %r" % shell)
        for what, value, most in (("pw_passwd", passwd, schema.MAX_PASSWD), ("pw_gecos", gecos, schema.MAX_GECOS),
                                  ("pw_dir", pw_dir, schema.MAX_DIR), ("pw_shell", shell, schema.MAX_QUOTA),
                                  ("pw_clear_passwd", clear, schema.MAX_CLEAR)):
            if len(value) > most:
                raise bad("%s longer than %d characters (vpopmail's column)" % (what, most))
        if user in seen:
            raise bad("%s is on line %d already" % (user, seen[user]))
        seen[user] = n
        entries.append(entry)
    return entries


def read_vpasswd(path):
    """The bytes of a vpasswd file, read as the owner of its directory (maildir.as_owner: root
    reads no more than vpopmail, whom every mailbox's |program runs as, could have linked there)
    and only from a regular file (never a FIFO or a device, fileio.open_regular)."""
    from qmailpy.fileio import open_regular
    from qmailpy.users import maildir

    def work(rel):
        fd, _ = open_regular(rel)
        if fd is None:
            return None
        with open(fd, "rb") as f:
            return f.read().decode("latin-1")       # as_owner's answer is JSON: bytes one for one
    try:
        text = maildir.as_owner(path, maildir.owner_of(os.path.dirname(path)), work)
    except OSError as e:
        raise UsersError("cannot read %s: %s" % (path, e.strerror or e)) from None
    if text is None:
        raise UsersError("%s: not a file" % path)
    return text.encode("latin-1")


def _user_row(users, domain, e, path):
    """The row of Entry e, read back: a database that cut a value short (a column narrower than
    vpopmail 5.6's, MySQL without a strict sql_mode) would lose the password without a word."""
    try:
        admin.user_row(users, e.name, domain, e.passwd, e.gecos, e.dir, e.shell, e.clear, e.uid, e.gid)
    except UsersError as x:        # strict MySQL: "Data too long for column ..."
        raise UsersError("%s:%d: %s" % (path, e.line, x)) from None
    kept = users.rows("SELECT %s FROM vpopmail WHERE pw_name = ? AND pw_domain = ?" % KEPT, e.name, domain)
    if [tuple(row) for row in kept] != [(e.passwd, e.uid, e.gid, e.gecos, e.dir, e.shell, e.clear)]:
        raise UsersError("%s:%d: the database did not keep the row of %s@%s as vpasswd has it (a column "
                         "narrower than vpopmail 5.6's?)" % (path, e.line, e.name, domain))


def import_domain(users, domain, directory, aliases=(), dry_run=False):
    """Import <directory>/vpasswd as `domain` with its alias domains; (lines said, notes).
    With dry_run nothing is written: the lines say what would be."""
    path = os.path.join(directory, VPASSWD)
    entries = parse_vpasswd(read_vpasswd(path), path)
    target = users.alias_target(domain)
    if target is not None:
        raise UsersError("%s is an alias domain of %s in the users database" % (domain, target))
    added = "would add" if dry_run else "added"
    said, notes = [], []
    with contextlib.nullcontext() if dry_run else admin.atomic(users):
        if users.is_real_domain(domain):
            said.append("domain exists: %s (kept)" % domain)
        else:
            if not dry_run:
                admin.domain_row(users, domain)
            said.append("%s domain %s (%s)" % (added, domain, path))
        for e in entries:
            if users.lookup(e.name, domain) is not None:
                said.append("user exists: %s@%s (kept)" % (e.name, domain))
                continue
            if not dry_run:
                _user_row(users, domain, e, path)
            said.append("%s %s@%s" % (added, e.name, domain))
        for alias in aliases:
            if users.domain_of(alias) is not None:
                said.append("alias domain exists: %s (kept)" % alias)
                continue
            if not dry_run:
                admin.alias_row(users, alias, domain)
            said.append("%s alias domain %s -> %s" % (added, alias, domain))
    if os.path.normpath(directory) != os.path.normpath(users.domain_dir(domain)):
        notes.append("%s: its mailboxes stay under %s; those qmail-users adds go under %s (control vpopmaildir)"
                     % (domain, directory, users.domain_dir(domain)))
    return said, notes
