"""A self-contained Dovecot (2.2/2.3) POP3 configuration for a qmail home.

usage: python -m qmailpy.pop3.dovecot HOME OUTDIR [--port N] [--listen ADDR] [...]

writes into OUTDIR:
  dovecot.conf           protocols = pop3 on ADDR:PORT, no SSL, plaintext logins allowed,
                         base_dir/state_dir/log under OUTDIR, nothing read from /etc/dovecot
  dovecot-sql.conf.ext   SQL passdb/userdb over vpopmail's `vpopmail` table (mode 0600)
  postlogin              the post-login hook: records the client IP in the relay
                         table (qmailpy.pop3.postlogin), then execs pop3
  mysql.cnf              only when the MySQL password holds white space (group dovecot, 0640)

then run `dovecot -F -c OUTDIR/dovecot.conf` (foreground) or `dovecot -c ...`.
The users database is the one qmail-smtpd reads: SQLite
$QMAILHOME/users/vpopmail.sqlite, or MySQL when control `usersdb` holds
vpopmail's `host|port|user|password|database`. Rendering is pure (plan() does
the reading, qmailpy.pop3.dovecotconf only formats); stdlib only. See docs/pop3.md.
"""
import argparse
import grp
import os
import pwd
import re
import subprocess
import sys
import sysconfig

from qmailpy.ctl.reader import Controls
from qmailpy.users.base import SQLITE_FILE, UsersUnavailable, vpopmail_dir
from qmailpy.pop3.dovecotconf import (CONF, MYSQL_CNF, POSTLOGIN, SQL_CONF, render_dovecot_conf, render_mysql_cnf,
                                      render_postlogin, render_sql_conf)

DEFAULT_PORT = 110
DEFAULT_LISTEN = "127.0.0.1"
INTERNAL_USER, LOGIN_USER = "dovecot", "dovenull"     # what Debian's dovecot-core creates
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ConfigError(Exception):
    """The configuration cannot be written as asked (message says what to do)."""


class Plan:
    """Everything the templates need, read once by plan()."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def path(self, name):
        return os.path.join(self.outdir, name)


# -- reading the world

def dovecot_version(binary="dovecot"):
    """(major, minor) of the installed Dovecot, from `dovecot --version`; None when missing."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    return parse_version(out)


def parse_version(text):
    m = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def mysql_params(line):
    """Dovecot's view of vpopmail's `host|port|user|password|database` line: a dict."""
    from qmailpy.users.mysql import parse_line     # imports no driver
    try:
        p = parse_line(line)
    except UsersUnavailable as e:
        raise ConfigError(str(e)) from None
    for key in ("host", "user", "database"):     # Dovecot splits its connect string at spaces
        if re.search(r"\s", p[key]):
            raise ConfigError("usersdb: the %s %r cannot be given to Dovecot" % (key, p[key]))
    return p


def site_packages(python):
    """The site-packages of `python` (the hook's launcher puts it on sys.path, as bin/ launchers do)."""
    if python == sys.executable:
        return sysconfig.get_paths()["purelib"]
    try:
        out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise ConfigError("cannot run %s: %s" % (python, e.strerror or e)) from None
    if out.returncode != 0 or not out.stdout.strip():
        raise ConfigError("cannot run %s: %s" % (python, out.stderr.strip()))
    return out.stdout.strip()


def _user_ids(spec):
    """(uid, gid) of 'name', 'uid' or 'uid:gid'."""
    name, _, group = spec.partition(":")
    try:
        uid = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        else:
            gid = pwd.getpwuid(uid).pw_gid if not name.isdigit() else uid
    except KeyError:
        raise ConfigError("no such user or group: %s" % spec) from None
    return uid, gid


def _name_of_uid(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def plan(home, outdir, port=DEFAULT_PORT, listen=DEFAULT_LISTEN, version=None, mail_user=None,
         postlogin_user=None, aliasdomains=True, python=None, euid=None):
    """Read the qmail home (controls, owners of the users database and vpopmaildir): a Plan."""
    home, outdir = os.path.abspath(home), os.path.abspath(outdir)
    version = version or dovecot_version() or (2, 3)
    if version >= (2, 4) or version < (2, 2):
        raise ConfigError("Dovecot %d.%d is not supported: this writes the 2.2/2.3 configuration "
                          "syntax (see docs/pop3.md)" % version)
    euid = os.geteuid() if euid is None else euid
    controls = Controls(home, {})
    try:
        line = (controls.value("usersdb") or "").strip()
        vdir = os.path.abspath(vpopmail_dir(home, controls))
    except OSError as e:
        raise ConfigError(str(e)) from None
    python = os.path.abspath(python) if python else sys.executable
    p = Plan(home=home, outdir=outdir, port=int(port), listen=listen, version=version, root=euid == 0,
             vpopmaildir=vdir, aliasdomains=aliasdomains, python=python, checkout=CHECKOUT,
             sitedir=site_packages(python), sqlite=None, mysql=None)
    if line:
        p.mysql = mysql_params(line)
        secret_file = controls.path("usersdb")
    else:
        p.sqlite = os.path.join(home, SQLITE_FILE)
        # users/, not the file: its owner (qmailu) may have put a link there, and the file's owner
        # read through it would be the target's (root's); the directory's owner is the file's
        # (users.sqliteowner: root's statements run as that owner)
        secret_file = os.path.dirname(p.sqlite)
        if not os.path.exists(p.sqlite):
            raise ConfigError("%s does not exist: add a domain first (qmail-users adddomain)" % p.sqlite)
    if p.root:
        _plan_root(p, mail_user, postlogin_user, secret_file)
    else:
        me = _name_of_uid(euid)
        if me is None:
            raise ConfigError("uid %d has no name: Dovecot needs one for its processes" % euid)
        p.internal_user = p.login_user = me
        p.internal_group = grp.getgrgid(pwd.getpwuid(euid).pw_gid).gr_name
        p.mail_uid = p.mail_gid = None
        p.first_valid_uid = min(euid, 500)
        p.postlogin_user = None
        p.auth_worker_user = None
    return p


def _plan_root(p, mail_user, postlogin_user, secret_file):
    for name in (INTERNAL_USER, LOGIN_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ConfigError("no system user %r: install dovecot-core (it creates dovecot and dovenull)"
                              % name) from None
    p.internal_user, p.login_user = INTERNAL_USER, LOGIN_USER
    p.internal_group = grp.getgrgid(pwd.getpwnam(INTERNAL_USER).pw_gid).gr_name
    if mail_user:
        p.mail_uid, p.mail_gid = _user_ids(mail_user)
    else:
        try:
            st = os.stat(p.vpopmaildir)
        except OSError:
            raise ConfigError("%s does not exist: add a domain first (qmail-users adddomain)"
                              % p.vpopmaildir) from None
        p.mail_uid, p.mail_gid = st.st_uid, st.st_gid
    if p.mail_uid == 0 or p.mail_gid == 0:
        raise ConfigError("%s belongs to root, and Dovecot does not open mail as root: give the mailboxes "
                          "to a mail user (chown -R vpopmail:vchkpw %s, as vpopmail has it) or pass "
                          "--mail-user" % (p.vpopmaildir, p.vpopmaildir))
    p.first_valid_uid = p.mail_uid
    owner = postlogin_user
    if owner is None:
        # the hook writes the relay table: run it as the owner of the database (users/, where the
        # SQLite file is, or control/usersdb with the MySQL password)
        try:
            owner = _name_of_uid(os.stat(secret_file).st_uid)
        except OSError:
            owner = "root"
        if owner is None:
            raise ConfigError("the owner of %s has no name: pass --postlogin-user" % secret_file)
    p.postlogin_user = owner
    # Dovecot's SQLite driver blocks, so the auth worker opens the file: run it as the file's
    # owner (the users service's qmailu in production), not as root
    p.auth_worker_user = owner if p.sqlite else None


# -- writing

def _write(path, text, mode, group=None):
    from qmailpy.fileio import atomic_write
    owner = None if group is None else (-1, grp.getgrnam(group).gr_gid)
    atomic_write(path, text.encode(), durable=True, mode=mode, owner=owner)


def write(p):
    """Write the files into OUTDIR; their paths."""
    os.makedirs(p.outdir, exist_ok=True)
    os.chmod(p.outdir, 0o755)
    written = []
    # dovecot-sql.conf.ext is read as root; the MySQL option file by the auth process (user dovecot)
    cnf_group = p.internal_group if p.root else None
    for name, text, mode, group in ((SQL_CONF, render_sql_conf(p), 0o600, None),
                                    (MYSQL_CNF, render_mysql_cnf(p), 0o640, cnf_group),
                                    (POSTLOGIN, render_postlogin(p), 0o755, None),
                                    (CONF, render_dovecot_conf(p), 0o644, None)):
        if text is not None:
            _write(p.path(name), text, mode, group)
            written.append(p.path(name))
    return written


def main(argv=None):
    from qmailpy.progstart import start
    start()                 # it waits for `dovecot --version`; argparse answers --help
    ap = argparse.ArgumentParser(prog="python -m qmailpy.pop3.dovecot",
                                 description="Write a Dovecot POP3 configuration for a qmail home.")
    ap.add_argument("home", help="the qmail home (/var/qmail)")
    ap.add_argument("outdir", help="where to write dovecot.conf and its files")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--listen", default=DEFAULT_LISTEN, help="address(es) to listen on (Dovecot's `listen`)")
    ap.add_argument("--dovecot-version", help="write for this version (default: ask `dovecot --version`)")
    ap.add_argument("--mail-user", help="user[:group] owning the mailboxes (default: owner of vpopmaildir)")
    ap.add_argument("--postlogin-user", help="user running the post-login hook (default: owner of the "
                                             "SQLite file, or of control/usersdb)")
    ap.add_argument("--no-aliasdomains", action="store_true",
                    help="the database has no aliasdomains table (vpopmail 5.4)")
    ap.add_argument("--python", help="interpreter for the hook (default: this one)")
    args = ap.parse_args(argv)
    home = args.home
    try:
        version = parse_version(args.dovecot_version) if args.dovecot_version else None
        p = plan(home, args.outdir, args.port, args.listen, version, args.mail_user, args.postlogin_user,
                 not args.no_aliasdomains, args.python)
        for path in write(p):
            print("wrote %s" % path)
    except ConfigError as e:
        print("qmailpy.pop3.dovecot: %s" % e, file=sys.stderr)
        return 1
    print("run: dovecot -F -c %s" % p.path(CONF))
    return 0


if __name__ == "__main__":
    sys.exit(main())
