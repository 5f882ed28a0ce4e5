"""Lay out a qmail home: bin/ launchers, control/ defaults, the queue.

usage: python tools/install.py QMAILHOME ROOT PYTHON [--me FQDN] [--demo] [--production [options]]
Existing control files are never overwritten. --me FQDN writes what qmail's
config-fast writes (me, defaultdomain, plusdomain, locals, rcpthosts) where
absent (qmailpy/install/config.py). --demo adds what `make run` needs: a host
name and a demo domain on 127.0.0.1; as root, also vpopmail:vchkpw (the
demo mailbox's owner, and alias/'s: the demo makes no alias user). Rerun on a home an earlier version installed, it
migrates it and says what it changed (migrate_queue).
At the end it prints what `qmail-showctl --check` still finds.

--production (as root) also runs it as qmail runs: qmail's users and groups
(created where missing; qmaild in no group of qmail's), the queue with qmail's
owners and modes (only qmailq, i.e. qmail-queued, writes where qmail-queue
writes), the vpopmail, alias and sessions directories, the users
database and the SRS keys for the users service (qmailu) alone, run
scripts under QMAILHOME/service/ (qmail-queued, qmail-send, qmail-smtpd, qmail-usersd, dovecot,
clamd, spamd, each with log/run: multilog) and QMAILHOME/etc/crontab; the config-fast
files from --me, else control/me, else the host name (never an open relay);
alias/.qmail-postmaster, -mailer-daemon, -root delivering to alias/Maildir/
(or forwarding to --postmaster ADDRESS), as qmail's INSTALL.alias (every
install makes these; --production gives them to the alias user). Options:
--smtp-port (25), --smtps-port (465: qmail-smtpsd, SMTPS), --smtp-listen (0: every address), --softlimit BYTES
(qmail-smtpd's memory limit, none by default), --pop3-port (110),
--pop3-listen (*), --tcpserver-flags ("-v -R -p", qmailpy.install.services.TCPSERVER_FLAGS).
See docs/operations.md.
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qmailpy.queue.layout import create_queue  # noqa: E402

DEMO = {"me": "qmailpy.local", "rcpthosts": "demo.example\nqmailpy.local",
        "locals": "qmailpy.local", "virtualdomains": "demo.example:demo.example"}


def write_if_absent(path, text):
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="install.py", description="Lay out a qmail home.")
    ap.add_argument("home")
    ap.add_argument("root", help="the qmailpy checkout")
    ap.add_argument("python", help="the venv's interpreter (the launchers run it)")
    ap.add_argument("--demo", action="store_true", help="controls for `make run`")
    ap.add_argument("--me", metavar="FQDN", help="write me, defaultdomain, plusdomain, locals, rcpthosts where "
                                                 "absent (qmail's config-fast)")
    ap.add_argument("--postmaster", metavar="ADDRESS",
                    help="--production: alias/.qmail-postmaster etc. forward here (default: alias/Maildir/)")
    ap.add_argument("--production", action="store_true", help="users, owners, services, crontab (root)")
    ap.add_argument("--sendmail", choices=("link", "replace", "no"), default=None,
                    help="with --production: /usr/sbin/sendmail and /usr/lib/sendmail become this home's "
                         "(link: only where absent; replace: move another MTA's aside). Default: link "
                         "for /var/qmail, no for any other home")
    ap.add_argument("--smtp-port", type=int, default=25)
    ap.add_argument("--smtps-port", type=int, default=465, help="qmail-smtpsd's port (SMTPS: TLS from the first byte)")
    ap.add_argument("--smtp-listen", default="0", help="tcpserver's host argument (0: every address)")
    ap.add_argument("--softlimit", type=int, default=None, metavar="BYTES",
                    help="run tcpserver + qmail-smtpd under softlimit -m BYTES")
    from qmailpy.install.services import TCPSERVER_FLAGS
    ap.add_argument("--tcpserver-flags", default=TCPSERVER_FLAGS,
                    help="tcpserver's options besides -x -c -u -g (default %(default)s: -p confirms "
                         "TCPREMOTEHOST, which relaydomains trusts; add -H -l NAME to skip DNS lookups)")
    ap.add_argument("--smtp-server", choices=("tcpserver", "qmail-tcpserver"), default="tcpserver",
                    help="what runs qmail-smtpd: tcpserver (exec per connection, the qmail way; default) or "
                         "qmail-tcpserver (the same options and tcp.smtp.cdb, qmail-smtpd preloaded and "
                         "forked into workers: about 6 times the sessions per second; docs/qmail-tcpserver.md)")
    ap.add_argument("--pop3-port", type=int, default=110)
    ap.add_argument("--pop3-listen", default="*", help="Dovecot's listen (default every IPv4 address)")
    return ap.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    home, root, python = os.path.abspath(args.home), args.root, args.python
    if args.production and os.geteuid() != 0:
        raise SystemExit("install.py: --production creates users and sets owners: run it as root")
    from qmailpy.install import alias, config
    try:
        if args.me:
            config.check_name(args.me)
        if args.postmaster:
            alias.check_address(args.postmaster)
    except (config.ConfigError, ValueError) as e:
        raise SystemExit("install.py: %s" % e)
    subprocess.run([python, os.path.join(root, "tools", "mklaunchers.py"), root, python,
                    os.path.join(home, "bin")], check=True)
    control = os.path.join(home, "control")
    os.makedirs(control, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(root, "control"))):
        src = os.path.join(root, "control", name)
        if name.endswith(".example"):
            continue
        if not os.path.exists(os.path.join(control, name)):
            shutil.copyfile(src, os.path.join(control, name))
    if args.demo:
        for name, text in DEMO.items():
            write_if_absent(os.path.join(control, name), text + "\n")
    configure(home, args.me or (host_name(home) if args.production else None))
    tcprules_cdb(control)
    if args.production:
        production(home, os.path.abspath(root), python, args)
    else:
        postmaster(home, args.postmaster)
        if args.demo and os.geteuid() == 0:
            demo_as_root(home)
        else:
            migrate_queue(home)
    print("installed qmail home %s" % home)
    still_missing(home)


def tcprules_cdb(control):
    """control/tcp.smtp.cdb from control/tcp.smtp with tcprules, where the cdb is absent. An
    existing cdb is the admin's (built by hand, or copied from H-Sphere, whose source was
    /etc/tcp.smtp) and is never rebuilt: said when control/tcp.smtp is newer."""
    rules = os.path.join(control, "tcp.smtp")
    cdb, tmp = rules + ".cdb", rules + ".tmp"
    if not os.path.exists(rules):
        return
    if os.path.exists(cdb):
        if os.stat(rules).st_mtime > os.stat(cdb).st_mtime:
            print("note: control/tcp.smtp.cdb is kept as it is (tcpserver reads it), though control/tcp.smtp "
                  "is newer; to use the rules of control/tcp.smtp: tcprules %s %s < %s" % (cdb, tmp, rules))
        return
    if shutil.which("tcprules"):
        with open(rules, "rb") as f:
            subprocess.run(["tcprules", cdb, tmp], stdin=f, check=True)


def host_name(home):
    """The name for config-fast when --me is not given: control me (file or control/options),
    else this host's name."""
    from qmailpy.ctl.reader import Controls
    setting = Controls(home, {}).setting("me")
    if setting.is_default and "." not in setting.value:
        print("note: the host name %r has no dot; if mail should use another name, run "
              "qmail-config --force mx.example.com (or make install ME=mx.example.com)" % setting.value)
    return setting.value


def configure(home, fqdn):
    """qmail's config-fast step for the files that are absent (qmailpy/install/config.py)."""
    from qmailpy.install import config
    if fqdn is None:
        return
    try:
        lines = config.configure(home, fqdn, config.MISSING)
    except config.ConfigError as e:          # a host name config-fast would not take
        print("note: %s: write the control files with qmail-config FQDN" % e)
        return
    for line in lines:
        print(line)


def still_missing(home):
    """What `qmail-showctl --check` would say about the new home, so nothing is left unsaid."""
    from qmailpy.cli.showctl import checks
    from qmailpy.ctl.reader import Controls
    findings = checks(home, Controls(home))
    if not findings:
        print("qmail-showctl --check: nothing to report")
        return
    print("still missing or wrong (qmail-showctl --check):")
    for f in findings:
        print("  %s" % f)
    if any(f.path == "control/rcpthosts" for f in findings):
        print("  write the control files with: QMAILHOME=%s %s FQDN"
              % (home, os.path.join(home, "bin", "qmail-config")))


def demo_as_root(home):
    """`make run` as root: qmail-local runs as vpopmail:vchkpw (its forwards go through
    qmail-queued, which `make run` starts), postmaster's alias/ too: the demo makes no alias
    user, and qmail-lspawn takes alias/ as its owner's (qmailpy.spawn.mailbox.alias_stand_in)."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.install import accounts
    from qmailpy.users.base import vpopmail_dir
    accounts.ensure(home, os.path.abspath(vpopmail_dir(home, Controls(home, {}))),
                    groups=accounts.DEMO_GROUPS, users=accounts.DEMO_USERS)
    uid, gid = accounts.ids("vpopmail")
    alias = os.path.join(home, "alias")
    for top, dirs, files in os.walk(alias):
        for name in [top] + [os.path.join(top, f) for f in dirs + files]:
            os.lchown(name, uid, gid)
    migrate_queue(home)


def migrate_queue(home):
    """The queue with hier.c's owners and modes; what an earlier install's layout had
    different (group-writable, setgid directories; message files of qmail-queue's callers)
    is put right and said."""
    from qmailpy.queue import layout
    before = {}
    for name in layout.QUEUE_WRITTEN:
        path = os.path.join(home, "queue", name)
        if os.path.isdir(path):
            before[name] = os.stat(path).st_mode & 0o7777
    create_queue(home)
    for name, mode in sorted(before.items()):
        now = os.stat(os.path.join(home, "queue", name)).st_mode & 0o7777
        if now != mode:
            print("queue/%s: mode %04o -> %04o (qmail's: only qmailq, i.e. qmail-queued, writes there)"
                  % (name, mode, now))
    adopted = layout.adopt_messages(home)
    if adopted:
        print("queue: %d file(s) of queued messages given to qmailq (qmail-lspawn and qmail-rspawn "
              "deliver only messages the queue's owner wrote)" % len(adopted))


def _dir(path, mode, uid=-1, gid=-1):
    os.makedirs(path, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def production(home, root, python, args):
    """Users, owners and modes (qmail's hier.c where it has them), service and cron files."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.install import accounts, services
    from qmailpy.users.base import vpopmail_dir
    controls = Controls(home, {})
    vdir = os.path.abspath(vpopmail_dir(home, controls))
    accounts.ensure(home, vdir)
    accounts.take_back_former()
    qmail, vchkpw, nofiles = accounts.gid("qmail"), accounts.gid("vchkpw"), accounts.gid("nofiles")
    os.chmod(home, 0o755)
    _dir(os.path.join(home, "alias"), 0o2755, accounts.ids("alias")[0], qmail)        # hier.c
    postmaster(home, args.postmaster, accounts.ids("alias"))
    if not os.path.exists(vdir):
        # qmail-users gives new domains and mailboxes the owner of this directory
        _dir(vdir, 0o755, accounts.ids("vpopmail")[0], vchkpw)
    elif os.stat(vdir).st_uid == 0:
        print("note: %s belongs to root: mailboxes need an owner (chown -R vpopmail:vchkpw %s)" % (vdir, vdir))
    smtpd_uid = accounts.ids("qmaild")[0]
    users_service(home, vdir)
    _dir(os.path.join(home, "sessions"), 0o700, smtpd_uid, qmail)     # periplimit slots
    migrate_queue(home)
    clamav = "clamav" if accounts.user_exists("clamav") else None      # Debian's clamav-daemon user
    settings = services.Settings(home, root, python, smtp_port=args.smtp_port, smtp_listen=args.smtp_listen,
                                 smtps_port=args.smtps_port,
                                 softlimit=args.softlimit, pop3_port=args.pop3_port,
                                 pop3_listen=args.pop3_listen, smtpd_uid=smtpd_uid, smtpd_gid=nofiles,
                                 tcpserver_flags=args.tcpserver_flags, smtp_server=args.smtp_server)
    services.write(settings, controls, log_ids=accounts.ids(services.LOG_USER), clamav_user=clamav)
    print("services in %s (start: svscan %s, or link them into /etc/service); cron jobs in %s"
          % (settings.service(), settings.service(), os.path.join(home, "etc", "crontab")))
    from qmailpy.install import sendmail
    mode = args.sendmail or ("link" if os.path.abspath(home) == "/var/qmail" else "no")
    for line in sendmail.install(home, mode):
        print(line)


def users_service(home, vdir):
    """The users database and the SRS keys for qmailu and the readers of the keys alone; qmail-smtpd
    asks qmail-usersd (qmailpy/install/usersdb.py). A rerun over an older install says what changed."""
    from qmailpy.install import usersdb
    usersdb.secure(home, vdir, log=lambda line: print("users service: %s" % line))


def postmaster(home, address, alias_ids=None):
    """qmail's INSTALL.alias: postmaster, mailer-daemon and root reach a person (qmailpy/install/alias.py);
    alias_ids: the alias user's (production), else the files are the installer's."""
    from qmailpy.install import alias
    for line in alias.make(home, alias_ids, address):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
