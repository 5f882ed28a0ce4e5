"""chkuser on the production layout (`tools/install.py --production`), as an outside sender
meets it: qmail-smtpd runs as qmaild:qmail (what tcpserver -u/-g gives it) and asks the users
service (qmail-usersd, as qmailu), while vpopmail keeps domains/ and the domain directories
0750 vpopmail:vchkpw and .qmail files 0600.

The install and `qmail-users adddomain` let qmailu search the domain directories and read
their .qmail-default (qmailpy/users/access.py); qmaild gets nothing; a lookup the service
cannot make is 451, never 550. Root only; users and groups the test creates are removed
afterwards.
"""
import grp
import os
import pwd
import subprocess

from test_production import ENV, install, pytestmark, production_home  # noqa: F401
from qmailpy.users import access
from usersd import UsersService

VDM = "| /home/vpopmail/bin/vdelivermail '' %s\n"
NORCPT = "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
RESOURCE = "451 system temporary unavailable, try again later (#4.3.0 - chkuser)"


def users_cli(home, *args):
    r = subprocess.run([os.path.join(home, "bin", "qmail-users"), *args], env=dict(ENV, QMAILHOME=home),
                       capture_output=True, text=True, timeout=30)
    # the one note allowed: qmail-send is not running here to be told of virtualdomains
    notes = [line for line in r.stderr.splitlines() if not line.startswith("note: qmail-send reads control/")]
    assert r.returncode == 0 and notes == [], r.stdout + r.stderr


def vpopmail_file(home, domain, name, text):
    """A .qmail file as vpopmail writes it: vpopmail:vchkpw, 0600."""
    path = os.path.join(home, "vpopmail", "domains", domain, name)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, pwd.getpwnam("vpopmail").pw_uid, grp.getgrnam("vchkpw").gr_gid)
    os.chmod(path, 0o600)
    return path


def rcpt(home, *addresses):
    """qmail-smtpd as tcpserver -u qmaild -g qmail starts it: the RCPT replies, and its log."""
    session = b"HELO c.example\r\nMAIL FROM:<carol@example.com>\r\n"
    session += b"".join(b"RCPT TO:<%s>\r\n" % a.encode() for a in addresses) + b"QUIT\r\n"
    env = dict(ENV, QMAILHOME=home, TCPREMOTEIP="192.0.2.7", TCPLOCALIP="127.0.0.1", TCPLOCALHOST="mx.v.test",
               PROTO="TCP", TCPLOCALPORT="25", TCPREMOTEPORT="40000")
    r = subprocess.run(["setpriv", "--reuid=qmaild", "--regid=qmail", "--clear-groups",
                        os.path.join(home, "bin", "qmail-smtpd")], input=session, capture_output=True,
                       env=env, timeout=30)
    replies = r.stdout.decode().split("\r\n")
    assert replies[0].startswith("220 ") and replies[1:3] == ["250 mx.v.test", "250 ok"], replies
    return replies[3:3 + len(addresses)], r.stderr.decode()


def has_acl_for(path, uid):
    try:
        return (access.USER, uid) in access._entries(path)
    except OSError:
        return False


def test_chkuser_is_answered_by_the_users_service(production_home):
    top, _ = production_home
    home = os.path.join(top, "qmail")
    r = install(home)
    assert r.returncode == 0, r.stdout + r.stderr
    for name, text in (("me", "mx.v.test"), ("userchk", "1"), ("rcpthosts", "v.test\nw.test")):
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(text + "\n")
    users_cli(home, "adddomain", "v.test")
    users_cli(home, "adduser", "joe@v.test", "--password", "secret")
    users_cli(home, "adddomain", "w.test")
    domains = os.path.join(home, "vpopmail", "domains")
    vpopmail, vchkpw = pwd.getpwnam("vpopmail").pw_uid, grp.getgrnam("vchkpw").gr_gid
    qmaild, qmailu = pwd.getpwnam("qmaild").pw_uid, pwd.getpwnam("qmailu").pw_uid
    for d in (domains, os.path.join(domains, "v.test")):
        st = os.stat(d)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (vpopmail, vchkpw, 0o750), d
        assert has_acl_for(d, qmailu) and not has_acl_for(d, qmaild), d     # adddomain: the service's user
    vpopmail_file(home, "v.test", ".qmail-info", "&joe@v.test\n")
    vpopmail_file(home, "v.test", ".qmail-default", VDM % "bounce-no-mailbox")
    vpopmail_file(home, "w.test", ".qmail-default", VDM % "joe@v.test")

    with UsersService(home, dict(ENV, QMAILHOME=home)) as svc:       # started as root: becomes qmailu
        # the .qmail-defaults written since are vpopmail's alone: unknown users get 451, never 550
        got, log = rcpt(home, "info@v.test", "joe@v.test", "nobody@v.test", "anybody@w.test")
        assert got == ["250 ok", "250 ok", RESOURCE, RESOURCE], got
        default = os.path.join(domains, "v.test", ".qmail-default")
        assert 'tempfail rule=userchk reason="users service: TEMP cannot look into %s: Permission denied"' \
            % default in log, log

        # the install, run again, lets qmailu read every domain's .qmail-default
        r = install(home)
        assert r.returncode == 0 and "note: cannot let" not in r.stdout, r.stdout + r.stderr
        got, _ = rcpt(home, "info@v.test", "joe@v.test", "nobody@v.test", "anybody@w.test", "INFO@V.TEST")
        assert got == ["250 ok", "250 ok", NORCPT, "250 ok", "250 ok"], got
        # ...and nothing more: no listing, no mailbox directory, for qmailu; nothing at all for qmaild
        for user in ("qmailu", "qmaild"):
            for path in (domains, os.path.join(domains, "v.test"), os.path.join(domains, "v.test", "joe")):
                r = subprocess.run(["setpriv", "--reuid=" + user, "--regid=nofiles", "--clear-groups", "ls", path],
                                   capture_output=True)
                assert r.returncode != 0, (user, path)
        r = subprocess.run(["setpriv", "--reuid=qmaild", "--regid=qmail", "--clear-groups", "cat", default],
                           capture_output=True)
        assert r.returncode != 0

        # a lookup the service cannot make: a directory qmailu may not search
        os.removexattr(os.path.join(domains, "w.test"), access.XATTR)
        got, log = rcpt(home, "anybody@w.test", "joe@v.test")
        assert got == [RESOURCE, "250 ok"], got
    assert " start " in svc.log()


def test_rerun_over_an_older_install_takes_qmailds_grant_back(production_home):
    """An install from before the users service let qmaild into the domain directories and gave
    it the database through group qmail: run again, it says what it changed."""
    top, _ = production_home
    home = os.path.join(top, "qmail")
    assert install(home).returncode == 0
    users_cli(home, "adddomain", "v.test")
    users_cli(home, "adduser", "joe@v.test", "--password", "secret")
    vdir = os.path.join(home, "vpopmail")
    vpopmail_file(home, "v.test", ".qmail-default", VDM % "bounce-no-mailbox")
    qmaild, qmail = pwd.getpwnam("qmaild").pw_uid, grp.getgrnam("qmail").gr_gid
    assert access.let_smtpd_look(vdir, qmaild) == []           # what the older install did
    db = os.path.join(home, "users", "vpopmail.sqlite")
    os.chown(db, 0, qmail)
    os.chmod(db, 0o640)
    os.chmod(os.path.dirname(db), 0o2750)
    os.chown(os.path.dirname(db), 0, qmail)
    r = install(home)
    assert r.returncode == 0, r.stdout + r.stderr
    default = os.path.join(vdir, "domains", "v.test", ".qmail-default")
    assert "users service: %s: qmaild's ACL entry removed (the users service answers chkuser)" % default in r.stdout
    assert "users service: %s: was 0:%d 640, now " % (db, qmail) in r.stdout
    for path, _ in access.domain_grants(vdir):
        assert not has_acl_for(path, qmaild), path
    qmailu = pwd.getpwnam("qmailu")
    st = os.stat(db)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (qmailu.pw_uid, qmailu.pw_gid, 0o600)
    st = os.stat(os.path.dirname(db))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (qmailu.pw_uid, qmailu.pw_gid, 0o700)
    r = install(home)                   # and a second rerun has nothing to say
    assert "users service: " not in r.stdout, r.stdout
