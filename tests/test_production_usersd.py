"""Issue 20's "must show" for the users service, on the production layout, as root.

qmail-smtpd under tcpserver holds no group that can read the users database (its
/proc/PID/status, and a read with exactly its credentials), and AUTH PLAIN/LOGIN/CRAM-MD5,
chkuser and POP-before-SMTP still work, through qmail-usersd. A `|program` delivery, of a
vpopmail mailbox and of a system user (alias), reads neither the users database nor the SRS
keys. Users and groups the test creates are removed afterwards.
"""
import os
import pwd
import socket
import subprocess
import time

from test_production import (ENV, Supervised, children, install, port_open, proc_status, program_of,  # noqa: F401
                             production_home, pytestmark, svstat_pid, wait_for)
from test_dialogues import free_port

DOMAIN = "prod.example"


def run(home, name, *args):
    r = subprocess.run([os.path.join(home, "bin", name), *args], env=dict(ENV, QMAILHOME=home),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def swaks(port, *args):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--quit-after", "RCPT", *args], env=ENV,
                       capture_output=True, text=True, timeout=60)
    return r.stdout


def can_read(path, uid, gid, groups):
    """Can a process with exactly these credentials read `path`?"""
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid]
    argv += ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(argv + ["cat", path], capture_output=True).returncode == 0


def test_users_service_in_production(production_home):
    top, _ = production_home
    home = os.path.join(top, "qmail")
    smtp, pop3 = free_port(), free_port()
    r = install(home, "--smtp-port", str(smtp), "--smtp-listen", "127.0.0.1", "--pop3-port", str(pop3),
                "--pop3-listen", "127.0.0.1", "--tcpserver-flags=-v -R -H -l mx.%s" % DOMAIN)
    assert r.returncode == 0, r.stdout + r.stderr
    control = os.path.join(home, "control")
    with open(os.path.join(control, "locals")) as f:
        local = f.read().split()[0]
    for name, text in (("rcpthosts", "%s\n%s" % (DOMAIN, local)), ("virtualdomains", "%s:%s" % (DOMAIN, DOMAIN)),
                       ("me", "mx." + DOMAIN), ("smtpauth", "1"), ("smtpauthplaintext", "1"), ("tcp.smtp", ":allow")):
        with open(os.path.join(control, name), "w") as f:
            f.write(text + "\n")
    subprocess.run(["tcprules", os.path.join(control, "tcp.smtp.cdb"), os.path.join(control, "tcp.tmp")],
                   input=b":allow\n", check=True)        # 127.0.0.1 may not relay: AUTH or POP3 first
    run(home, "qmail-users", "adddomain", DOMAIN)
    run(home, "qmail-users", "adduser", "joe@" + DOMAIN, "--password", "secret", "--clear")
    run(home, "setsrssecret")
    service = os.path.join(home, "service")
    for name in ("qmail-send", "qmail-smtpd", "qmail-usersd"):
        with open(os.path.join(service, name, "env", "DNSCACHEIP"), "w") as f:
            f.write("127.0.0.1:1\n")
    db = os.path.join(home, "users", "vpopmail.sqlite")
    secrets = [os.path.join(control, "srs", n) for n in ("revers_srs_secrets", "srs_secrets")]

    # |program deliveries that try to read the secrets: a vpopmail mailbox's, and a system user's (alias)
    probe = os.path.join(top, "probe")
    os.mkdir(probe)
    os.chmod(probe, 0o1777)
    tries = "; ".join("cat %s >/dev/null 2>&1 && echo read %s >> %s/$1.got" % (p, os.path.basename(p), probe)
                      for p in [db] + secrets)
    line = "|sh -c 'id > %s/$1.id; %s; echo done >> %s/$1.got' sh %%s\n" % (probe, tries, probe)
    joe_dir = os.path.join(home, "vpopmail", "domains", DOMAIN, "joe")
    vpopmail = pwd.getpwnam("vpopmail")
    for path, who in ((os.path.join(joe_dir, ".qmail-probe"), "vpopmail"),
                      (os.path.join(home, "alias", ".qmail-probe"), "alias")):
        with open(path, "w") as f:
            f.write(line % who)
        pw = pwd.getpwnam(who)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, 0o644)

    sup = Supervised(service)
    try:
        for name in ("qmail-queued", "qmail-usersd", "qmail-send", "qmail-smtpd", "dovecot"):
            sup.start(name)
        wait_for(lambda: os.path.exists(os.path.join(home, "sock", "users")), 20, "qmail-usersd's socket")
        wait_for(lambda: os.path.exists(os.path.join(home, "sock", "qmail-queue")), 20, "qmail-queued's socket")
        wait_for(lambda: port_open(smtp), 20, "tcpserver on port %d" % smtp)
        usersd = svstat_pid(os.path.join(service, "qmail-usersd"))
        assert program_of(usersd) == "qmail-usersd"
        qmailu = pwd.getpwnam("qmailu")
        # the socket is in place before the service becomes qmailu (it binds as root)
        wait_for(lambda: proc_status(usersd)["Uid"][0] != "0", 20, "qmail-usersd to become qmailu")
        st = proc_status(usersd)
        assert st["Uid"][:2] == [str(qmailu.pw_uid)] * 2 and st["Gid"][:2] == [str(qmailu.pw_gid)] * 2
        assert st["Groups"] == []

        # a session held open: qmail-smtpd's credentials cannot read the database or the keys
        tcpserver = svstat_pid(os.path.join(service, "qmail-smtpd"))
        with socket.create_connection(("127.0.0.1", smtp), timeout=10) as s:
            assert s.recv(1000).startswith(b"220 ")
            [smtpd] = wait_for(lambda: [c for c in [children(tcpserver)] if len(c) == 1], 10, "qmail-smtpd")[0]
            assert program_of(smtpd) == "qmail-smtpd"
            st = proc_status(smtpd)
            uid, gid, groups = int(st["Uid"][0]), int(st["Gid"][0]), [int(g) for g in st["Groups"]]
            assert uid == pwd.getpwnam("qmaild").pw_uid
            assert qmailu.pw_gid not in [gid] + groups
            for path in [db] + secrets:
                assert not can_read(path, uid, gid, groups), path
            s.sendall(b"QUIT\r\n")

        # AUTH through the service: each mechanism relays; a wrong password is 535
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
            out = swaks(smtp, "--from", "joe@" + DOMAIN, "--to", "friend@elsewhere.example", "--auth", mech,
                        "--auth-user", "joe@" + DOMAIN, "--auth-password", "secret")
            assert "<-  235 ok, go ahead (#2.0.0)" in out and "<-  250 ok" in out.split("RCPT TO")[1], out
        out = swaks(smtp, "--from", "joe@" + DOMAIN, "--to", "friend@elsewhere.example", "--auth", "PLAIN",
                    "--auth-user", "joe@" + DOMAIN, "--auth-password", "wrong")
        assert "<** 535 authentication failed (#5.7.1)" in out, out

        # chkuser through the service
        with open(os.path.join(control, "userchk"), "w") as f:
            f.write("1\n")
        out = swaks(smtp, "--from", "a@remote.example", "--to", "nosuch@" + DOMAIN)
        assert "<** 550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in out, out
        out = swaks(smtp, "--from", "a@remote.example", "--to", "joe@" + DOMAIN)
        assert "<-  250 ok" in out.split("RCPT TO")[1], out
        os.unlink(os.path.join(control, "userchk"))

        # POP-before-SMTP: refused, then a POP3 login (Dovecot's auth worker reads the database as
        # qmailu, its post-login hook writes the relay row), then relayed through the service
        out = swaks(smtp, "--from", "joe@" + DOMAIN, "--to", "friend@elsewhere.example")
        assert "<** 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" in out, out
        wait_for(lambda: port_open(pop3), 20, "dovecot on port %d" % pop3)
        got = subprocess.run(["curl", "-s", "--user", "joe@%s:secret" % DOMAIN, "pop3://127.0.0.1:%d/" % pop3],
                             capture_output=True, timeout=30)
        assert got.returncode == 0, got
        out = swaks(smtp, "--from", "joe@" + DOMAIN, "--to", "friend@elsewhere.example")
        assert "<-  250 ok" in out.split("RCPT TO")[1], out

        # the probes, delivered by qmail-local as vpopmail and as alias
        for rcpt in ("joe-probe@" + DOMAIN, "probe@" + local):
            out = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % smtp, "--from", "a@remote.example",
                                  "--to", rcpt], env=ENV, capture_output=True, text=True, timeout=60).stdout
            assert "<-  250 ok " in out, out
        for who in ("vpopmail", "alias"):
            got = wait_for(lambda: os.path.exists(os.path.join(probe, who + ".got"))
                           and open(os.path.join(probe, who + ".got")).read(), 30, "the %s probe" % who)
            assert got == "done\n", (who, got)           # nothing was read
            with open(os.path.join(probe, who + ".id")) as f:
                ident = f.read()
            pw = pwd.getpwnam(who)
            assert ident.startswith("uid=%d(%s) gid=%d" % (pw.pw_uid, who, pw.pw_gid)), ident
            assert "(qmailu)" not in ident, ident
    finally:
        sup.stop()
    assert vpopmail.pw_uid != qmailu.pw_uid
