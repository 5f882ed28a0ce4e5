"""qmail's users and groups, as qmail's INSTALL.ids makes them, plus vpopmail:vchkpw.

Created with groupadd/useradd (system accounts, no login shell, no home
created) only where missing; existing accounts are never changed, except
that membership earlier installs gave and qmail never had is taken back
(FORMER: qmaild was in group qmail so that its qmail-queue could write the
queue; qmail-queued writes it now). docs/operations.md, docs/security.md.
qmailu:qmailu (not in qmail's INSTALL.ids) is the users service's account: it
alone reads the users database, and shares the SRS keys with qmails
(qmailpy/install/usersdb.py). It is not vpopmail, so that a vpopmail mailbox's
`|program`, which runs as vpopmail, reads neither.
"""
import grp
import os
import pwd
import subprocess

GROUPS = ("qmail", "nofiles", "vchkpw", "qmailu")
VPOPMAIL_HOME = object()        # the user's home is the vpopmail directory
# (user, primary group, home under $QMAILHOME ("" = the home itself), supplementary groups)
USERS = (
    ("alias", "nofiles", "alias", ()),
    ("qmaild", "nofiles", "", ()),
    ("qmaill", "nofiles", "", ()),
    ("qmailp", "nofiles", "", ()),
    ("qmailq", "qmail", "", ()),
    ("qmailr", "qmail", "", ()),
    ("qmails", "qmail", "", ()),
    ("vpopmail", "vchkpw", VPOPMAIL_HOME, ()),
    ("qmailu", "qmailu", "", ()),
)
NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
EXISTS = 9                      # useradd and groupadd: the name is taken already
# (user, group) memberships made by earlier installs, taken back by a rerun
FORMER = (("qmaild", "qmail"),)
# `make run` as root (tools/install.py --demo): the daemons stay root (single-user mode),
# but qmail-local runs as the demo mailbox's owner, vpopmail:vchkpw, as on a production home.
DEMO_GROUPS = ("vchkpw",)
DEMO_USERS = tuple(u for u in USERS if u[0] == "vpopmail")


def group_exists(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def user_exists(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def nologin_shell():
    return next((s for s in NOLOGIN if os.path.exists(s)), NOLOGIN[-1])


def commands(home, vpopmaildir, group_exists=group_exists, user_exists=user_exists, shell=None,
             groups=GROUPS, users=USERS):
    """The groupadd/useradd argv lists that create what is missing (pure given the lookups)."""
    shell = shell or nologin_shell()
    out = [["groupadd", "-r", name] for name in groups if not group_exists(name)]
    for name, group, sub, extra in users:
        if user_exists(name):
            continue
        where = vpopmaildir if sub is VPOPMAIL_HOME else os.path.join(home, sub) if sub else home
        argv = ["useradd", "-r", "-M", "-g", group, "-d", where, "-s", shell]
        if extra:
            argv += ["-G", ",".join(extra)]
        out.append(argv + [name])
    return out


def ensure(home, vpopmaildir, log=print, groups=GROUPS, users=USERS):
    """Create the missing groups and users; the names created ("group NAME"/"user NAME")."""
    made = []
    for argv in commands(home, vpopmaildir, groups=groups, users=users):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode == EXISTS:            # made meanwhile by someone else: it is there, as wanted
            log("%s %s exists already" % ("group" if argv[0] == "groupadd" else "user", argv[-1]))
            continue
        if r.returncode != 0:
            raise SystemExit("install.py: %s failed: %s" % (" ".join(argv), r.stderr.strip()))
        what = "%s %s" % ("group" if argv[0] == "groupadd" else "user", argv[-1])
        log("created %s" % what)
        made.append(what)
    for name, _, _, extra in users:
        members = [g for g in extra if name not in grp.getgrnam(g).gr_mem and pwd.getpwnam(name).pw_gid
                   != grp.getgrnam(g).gr_gid]
        if members:
            log("note: user %s is not in group(s) %s; qmail-smtpd started as root (not by tcpserver -u/-g) "
                "needs it: usermod -a -G %s %s" % (name, ",".join(members), ",".join(members), name))
    other = alias_elsewhere(home) if any(u[0] == "alias" for u in users) else None
    if other:
        log("note: user alias has the home %s, not %s: qmail-lspawn delivers postmaster's mail (and every "
            "address that falls to alias) by that home's .qmail files; usermod -d %s alias if this home is "
            "the one" % (other, os.path.join(home, "alias"), os.path.join(home, "alias")))
    return made


def take_back_former(log=print, former=FORMER):
    """Remove the memberships in FORMER that are still there (gpasswd -d); what was removed."""
    done = []
    for user, group in former:
        try:
            members = grp.getgrnam(group).gr_mem
        except KeyError:
            continue
        if user not in members:
            continue
        r = subprocess.run(["gpasswd", "-d", user, group], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit("install.py: gpasswd -d %s %s failed: %s" % (user, group, r.stderr.strip()))
        log("removed user %s from group %s (qmail-queued writes the queue now; %s needs no group of qmail's)"
            % (user, group, user))
        done.append((user, group))
    return done


def alias_elsewhere(home):
    """The alias user's home when it is not HOME/alias (another qmail home on this machine), else None."""
    try:
        where = pwd.getpwnam("alias").pw_dir
    except KeyError:
        return None
    mine = os.path.join(home, "alias")
    return None if os.path.realpath(where) == os.path.realpath(mine) else where


def ids(name):
    """(uid, gid of the user's primary group)."""
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def gid(name):
    return grp.getgrnam(name).gr_gid
