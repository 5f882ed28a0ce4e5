"""`tools/install.py --production` end to end: qmail's users, the service directories under
supervise, mail in over SMTP and out to a Maildir owned by vpopmail, the processes' users,
multilog's files, POP3 through the Dovecot service, then everything stopped.

Root only, about 4 s. The qmail home lives outside pytest's 0700 tmp_path (qmail's users
must reach it) and is removed afterwards. Users and groups the test had to create are
deleted at the end, leaving the machine's accounts as they were; existing accounts are
never touched. QMAILPY_SINGLEUSER (set for the suite by conftest.py) is removed from
the environment of everything started here.
"""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from hostaccounts import _exists, accounts_present  # noqa: F401

from conftest import ROOT
from test_dialogues import TCP_ENV, free_port

from qmailpy.install import accounts

TOOLS = ("supervise", "svc", "svstat", "multilog", "setuidgid", "envdir", "tcpserver", "tcprules", "swaks",
         "useradd", "userdel", "groupadd", "groupdel")
pytestmark = [
    pytest.mark.skipif(os.getuid() != 0, reason="needs root: creates qmail's users, sets owners, runs services "
                                                "as qmail's users"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason="needs daemontools (supervise, multilog, setuidgid), ucspi-tcp, swaks, passwd"),
]
PYTHON = os.path.join(ROOT, ".venv", "bin", "python3")
# conftest.py sets QMAILPY_SINGLEUSER for the suite; here the programs must switch users
ENV = {k: v for k, v in os.environ.items() if k != "QMAILPY_SINGLEUSER"}
DOMAIN = "prod.example"
SERVICES = ("qmail-queued", "qmail-send", "qmail-smtpd", "qmail-usersd", "dovecot")


def proc_status(pid):
    fields = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
    except OSError:
        return None
    return fields


def proc_cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_status(int(name))
            if st and st.get("PPid") == [str(pid)]:
                out.append(int(name))
    return out


def program_of(pid):
    """bin/NAME of a launcher process (python3 -IS /home/bin/NAME ...), else argv[0]'s name."""
    argv = proc_cmdline(pid)
    for arg in argv[:3]:
        if b"/bin/qmail-" in arg:
            return os.path.basename(arg).decode()
    return os.path.basename(argv[0]).decode() if argv and argv[0] else ""


def user_of(pid):
    """(real, effective) user names of a process."""
    uids = proc_status(pid)["Uid"]
    return pwd.getpwuid(int(uids[0])).pw_name, pwd.getpwuid(int(uids[1])).pw_name


def svstat_pid(service):
    out = subprocess.run(["svstat", service], capture_output=True, text=True, timeout=10).stdout
    if ": up (pid " not in out:
        return None
    return int(out.split("(pid ", 1)[1].split(")", 1)[0])


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


class Supervised:
    """supervise DIR | supervise DIR/log for each service, as svscan would pair them."""

    def __init__(self, service_root):
        self.root = service_root
        self.procs = []

    def start(self, name):
        d = os.path.join(self.root, name)
        r, w = os.pipe()
        log = subprocess.Popen(["supervise", os.path.join(d, "log")], stdin=r, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        main = subprocess.Popen(["supervise", d], stdin=subprocess.DEVNULL, stdout=w, stderr=w, env=ENV,
                                start_new_session=True)
        os.close(r)
        os.close(w)
        self.procs += [(d, main), (os.path.join(d, "log"), log)]

    def stop(self):
        """svc -dx the services; once they are gone, svc -x the logs: multilog reads to the end."""
        for logs in (False, True):
            procs = [(d, p) for d, p in self.procs if d.endswith("/log") == logs]
            for d, _ in procs:
                subprocess.run(["svc", "-x" if logs else "-dx", d], capture_output=True, timeout=10)
            for d, proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:      # supervise and its service: one session each
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self.procs = []


@pytest.fixture
def production_home(host_accounts):
    """A temporary top directory; qmail's accounts the test makes are removed afterwards."""
    top = tempfile.mkdtemp(prefix="qmailpy-prod-")
    os.chmod(top, 0o755)
    try:
        yield top, host_accounts
    finally:
        shutil.rmtree(top, ignore_errors=True)


def install(home, *extra):
    return subprocess.run([PYTHON, os.path.join(ROOT, "tools", "install.py"), home, ROOT, PYTHON,
                           "--production", *extra], env=ENV, capture_output=True, text=True, timeout=60)


def read_log(service, name):
    """multilog's main/current of a service: (owner, [line without its tai64n stamp])."""
    path = os.path.join(service, name, "log", "main", "current")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None, []
    assert all(line.startswith("@4000") for line in lines), lines
    return pwd.getpwuid(os.stat(path).st_uid).pw_name, [line.split(" ", 1)[1] for line in lines]


def swaks(port, sender, rcpt, body):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", sender, "--to", rcpt,
                        "--body", body], env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "<-  250 ok " in r.stdout, r.stdout


@pytest.mark.parametrize("smtp_server", ["tcpserver", "qmail-tcpserver"])
def test_production_install_runs_as_qmail_does(production_home, smtp_server):
    """With either front end for qmail-smtpd (--smtp-server): the same users, the same mail."""
    top, before = production_home
    home = os.path.join(top, "qmail")
    smtp, pop3 = free_port(), free_port()
    r = install(home, "--smtp-port", str(smtp), "--smtp-listen", "127.0.0.1", "--pop3-port", str(pop3),
                "--pop3-listen", "127.0.0.1", "--softlimit", "400000000",
                "--tcpserver-flags=-v -R -H -l mx.%s" % DOMAIN,     # no DNS lookups from tcpserver
                "--smtp-server", smtp_server)
    assert r.returncode == 0, r.stdout + r.stderr
    for kind, name in sorted(accounts_present() - before):
        assert "created %s %s" % (kind, name) in r.stdout
    assert {("group", g) for g in accounts.GROUPS} | {("user", u[0]) for u in accounts.USERS} <= accounts_present()
    assert "qmaild" not in grp.getgrnam("qmail").gr_mem           # no group of qmail's, as in qmail

    # the queue: qmail's owners and modes (hier.c); only qmailq, i.e. qmail-queued, writes pid/ intd/ todo/ mess/
    q = os.path.join(home, "queue")
    qmailq, qmails, qgid = pwd.getpwnam("qmailq").pw_uid, pwd.getpwnam("qmails").pw_uid, grp.getgrnam("qmail").gr_gid
    nofiles = grp.getgrnam("nofiles").gr_gid
    for name, owner, mode in (("", qmailq, 0o750), ("pid", qmailq, 0o700), ("intd", qmailq, 0o700),
                              ("todo", qmailq, 0o750), ("mess", qmailq, 0o750), ("mess/7", qmailq, 0o750),
                              ("info/7", qmails, 0o700), ("bounce", qmails, 0o700), ("lock", qmailq, 0o750)):
        st = os.stat(os.path.join(q, name))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (owner, qgid, mode), name

    # a domain and a mailbox, made as an operator would (qmail-users as root)
    for name, text in (("rcpthosts", DOMAIN), ("virtualdomains", "%s:%s" % (DOMAIN, DOMAIN)), ("me", "mx." + DOMAIN)):
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(text + "\n")
    for args in (["adddomain", DOMAIN], ["adduser", "joe@" + DOMAIN, "--password", "secret"]):
        r = subprocess.run([os.path.join(home, "bin", "qmail-users"), *args], env=dict(ENV, QMAILHOME=home),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
    qmailu = pwd.getpwnam("qmailu")        # the users service's, alone (qmail-smtpd asks it)
    for path, mode in (("users", 0o700), ("users/vpopmail.sqlite", 0o600)):
        st = os.stat(os.path.join(home, path))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (qmailu.pw_uid, qmailu.pw_gid, mode), path
    service = os.path.join(home, "service")
    for name in ("qmail-send", "qmail-smtpd"):      # DNS questions go to a dead local server only
        with open(os.path.join(service, name, "env", "DNSCACHEIP"), "w") as f:
            f.write("127.0.0.1:1\n")
    maildir = os.path.join(home, "vpopmail", "domains", DOMAIN, "joe", "Maildir")
    session = (b"HELO c.example\r\nMAIL FROM:<carol@example.com>\r\nRCPT TO:<joe@%s>\r\n"
               b"DATA\r\nSubject: as root\r\n\r\nstarted as root\r\n.\r\nQUIT\r\n" % DOMAIN.encode())

    sup = Supervised(service)
    started = time.monotonic()
    delivered = {}
    try:
        for name in SERVICES:
            sup.start(name)
        wait_for(lambda: port_open(smtp), 20, "tcpserver on port %d" % smtp)

        # qmail-queued: qmailq, group qmail and no other; its socket open to every caller, root's
        queued = wait_for(lambda: svstat_pid(os.path.join(service, "qmail-queued")), 20, "qmail-queued")
        wait_for(lambda: os.path.exists(os.path.join(home, "sock", "qmail-queue")), 20, "qmail-queued's socket")
        assert program_of(queued) == "qmail-queued" and user_of(queued) == ("qmailq", "qmailq")
        assert proc_status(queued)["Gid"][:2] == [str(qgid)] * 2 and proc_status(queued)["Groups"] == [str(qgid)]
        st = os.stat(os.path.join(home, "sock", "qmail-queue"))      # bound as root, in root's sock/
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o666)
        st = os.stat(os.path.join(home, "sock"))
        assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o755)

        # qmail-smtpd started as root (no tcpserver -u/-g) becomes qmaild itself, with no other
        # group; qmail-queued writes the message as qmailq and names qmaild from the kernel
        r = subprocess.run([os.path.join(home, "bin", "qmail-smtpd")], input=session, capture_output=True,
                           env=dict(ENV, QMAILHOME=home, **TCP_ENV), timeout=30)
        assert b"\r\n250 ok " in r.stdout, r.stdout + r.stderr

        # tcpserver -u/-g switches itself once it has bound the port; hold a session open
        # to look at its child, qmail-smtpd (exec'd by tcpserver, forked by qmail-tcpserver)
        tcpserver = svstat_pid(os.path.join(service, "qmail-smtpd"))
        assert program_of(tcpserver) == smtp_server and user_of(tcpserver) == ("qmaild", "qmaild")
        with socket.create_connection(("127.0.0.1", smtp), timeout=10) as s:
            assert s.recv(1000).startswith(b"220 ")
            # (the port probe's session may still be ending)
            [smtpd] = wait_for(lambda: [c for c in [children(tcpserver)] if len(c) == 1], 10, "qmail-smtpd")[0]
            assert program_of(smtpd) == ("qmail-smtpd" if smtp_server == "tcpserver" else smtp_server)
            assert user_of(smtpd) == ("qmaild", "qmaild")
            # tcpserver -u qmaild -g nofiles: no group that can read the queue (issue 20)
            status = proc_status(smtpd)
            assert status["Gid"] == [str(nofiles)] * 4 and status["Groups"] in ([], [str(nofiles)]), status
            assert str(qgid) not in status["Groups"]
            s.sendall(b"QUIT\r\n")

        # qmail-send and its helpers, each as qmail's user for its job
        send = svstat_pid(os.path.join(service, "qmail-send"))
        assert program_of(send) == "qmail-send"
        assert user_of(send) == ("qmails", "qmails")
        expected = {"qmail-todo": [("qmails", "qmails")], "qmail-rspawn": [("qmailr", "qmailr")],
                    "qmail-clean": [("qmailq", "qmailq")] * 2, "qmail-lspawn": [("root", "root")]}
        seen = []

        def helpers():
            """qmail-send's children by program (one forked but not yet exec'd still bears its name)."""
            got = {}
            for pid in children(send):
                got.setdefault(program_of(pid), []).append(user_of(pid))
            seen[:] = [got]
            return got == expected
        try:
            wait_for(helpers, 20, "qmail-send's helpers")
        except AssertionError:
            assert seen[0] == expected

        # a message for joe (qmail-queue as qmaild), and one for nobody whose bounce goes to joe
        # (qmail-queue as qmails); with carol's from above, three land in joe's Maildir
        body = "production test %d" % os.getpid()
        swaks(smtp, "alice@example.com", "joe@" + DOMAIN, body)
        swaks(smtp, "joe@" + DOMAIN, "nosuch@" + DOMAIN, "to nobody")

        def three():
            names = os.listdir(os.path.join(maildir, "new"))
            if len(names) == 3:
                return names
            return any("message_has_wrong_owner" in line for line in read_log(service, "qmail-send")[1]) and ["-"]
        names = [n for n in wait_for(three, 20, "three deliveries") if n != "-"]
        for name in names:
            path = os.path.join(maildir, "new", name)
            with open(path, "rb") as f:
                delivered[name] = (os.stat(path), f.read())
        if delivered:
            # POP3 through the dovecot service (its run script writes the configuration)
            wait_for(lambda: port_open(pop3), 20, "dovecot on port %d" % pop3)
            got = subprocess.run(["curl", "-s", "--user", "joe@%s:secret" % DOMAIN,
                                  "pop3://127.0.0.1:%d/1" % pop3], capture_output=True, timeout=30).stdout
            assert got.replace(b"\r\n", b"\n").rstrip(b"\n") in [m.rstrip(b"\n") for _, m in delivered.values()]
    finally:
        sup.stop()
    elapsed = time.monotonic() - started

    # the services stopped and left no process behind
    for name in SERVICES:
        assert subprocess.run(["svok", os.path.join(service, name)]).returncode != 0
    leftovers = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if any(home.encode() in a for a in proc_cmdline(pid))]
    assert leftovers == []

    # multilog wrote main/current as qmaill, tai64n-stamped
    owner, smtpd_log = read_log(service, "qmail-smtpd")
    assert owner == "qmaill"
    assert any(line.startswith("tcpserver: status: 0/40") for line in smtpd_log), smtpd_log
    assert any(line.startswith("qmail-smtpd: ") and " accept sender=<alice@example.com> rcpts=1 " in line
               for line in smtpd_log), smtpd_log
    owner, send_log = read_log(service, "qmail-send")
    assert owner == "qmaill"
    for expected in ("status: local 0/", "new msg ", "info msg ", "starting delivery 1: msg ", "status: exiting"):
        assert any(line.startswith(expected) for line in send_log), (expected, send_log)
    owner, dovecot_log = read_log(service, "dovecot")
    assert owner == "qmaill" and any(line.startswith("wrote ") for line in dovecot_log), dovecot_log

    assert len(delivered) == 3, send_log
    vpopmail = pwd.getpwnam("vpopmail")
    for st, _ in delivered.values():
        assert (st.st_uid, st.st_gid) == (vpopmail.pw_uid, vpopmail.pw_gid)
    [mail] = [m for m in delivered.values() if m[1].startswith(b"Return-Path: <alice@")]
    [bounce] = [m for m in delivered.values() if m[1].startswith(b"Return-Path: <>")]
    [carol] = [m for m in delivered.values() if m[1].startswith(b"Return-Path: <carol@")]
    assert b"started as root" in carol[1]
    assert mail[1].startswith(b"Return-Path: <alice@example.com>\nDelivered-To: %s-joe@%s\n"
                              % (DOMAIN.encode(), DOMAIN.encode()))
    assert body.encode() in mail[1]
    assert bounce[1].startswith(b"Return-Path: <>\n") and b"nosuch@" + DOMAIN.encode() in bounce[1]
    # qmail-queued's Received line names each caller as the kernel knows it: qmaild (under
    # tcpserver and started as root) is "from network", qmail-send's bounce (qmails) "for bounce"
    for m, who in ((mail, b"from network"), (carol, b"from network"), (bounce, b"for bounce")):
        assert re.match(rb"Received: \(qmail \d+ invoked %s\); " % who, m[1].split(b"\n", 2)[2]), m[1][:300]
    owner, queued_log = read_log(service, "qmail-queued")
    assert owner == "qmaill" and "qmail-queued: listening on %s/sock/qmail-queue as qmailq" % home in queued_log
    assert any(line.startswith("delivery ") and ": success: " in line for line in send_log), send_log
    assert any(line.startswith("bounce msg ") for line in send_log), send_log
    assert any(line.startswith("end msg ") for line in send_log), send_log
    assert elapsed < 60


def installed_with_srs_keys(home):
    """The production install, then the SRS keys as the weekly cron job makes them."""
    r = install(home)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([os.path.join(home, "bin", "setsrssecret")], env=dict(ENV, QMAILHOME=home),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_srs_keys_made_by_cron_are_readable_by_the_daemons(production_home):
    """The weekly setsrssecret (etc/crontab) must leave keys qmail-send and the users service can
    read, and nobody else."""
    top, _ = production_home
    home = os.path.join(top, "qmail")
    installed_with_srs_keys(home)
    readable = {}
    # qmail-todo and qmail-send (qmails:qmail) read both files, the users service (qmailu) the
    # reverse keys for qmail-smtpd's RCPT; qmail-smtpd (tcpserver -u qmaild -g qmail) none
    for user, group in (("qmails", "qmail"), ("qmailu", "qmailu"), ("qmaild", "qmail"), ("qmaild", "nofiles"),
                        ("vpopmail", "vchkpw"), ("alias", "qmail")):
        for name in ("revers_srs_secrets", "srs_secrets"):
            path = os.path.join(home, "control", "srs", name)
            r = subprocess.run(["setpriv", "--reuid=" + user, "--regid=" + group, "--clear-groups", "cat", path],
                               capture_output=True)
            readable[user, group, name] = r.returncode == 0
    assert {k for k, v in readable.items() if v} == {
        ("qmails", "qmail", "revers_srs_secrets"), ("qmails", "qmail", "srs_secrets"),
        ("qmailu", "qmailu", "revers_srs_secrets"), ("qmailu", "qmailu", "srs_secrets")}, readable


def test_a_rerun_gives_sock_and_the_srs_keys_back_their_owners(production_home):
    """sock/ (where the users socket is: whoever may write there could put another socket in
    its place) and the SRS keys (secrets) are root's, or qmails/qmailu's, again after a rerun
    of the install, whoever changed them; each change is said."""
    top, _ = production_home
    home = os.path.join(top, "qmail")
    installed_with_srs_keys(home)
    sock = os.path.join(home, "sock")
    keys = {name: os.path.join(home, "control", "srs", name) for name in ("revers_srs_secrets", "srs_secrets")}
    want = {path: (os.stat(path).st_uid, os.stat(path).st_gid, os.stat(path).st_mode & 0o7777)
            for path in keys.values()}
    os.chown(sock, 65534, 65534)
    os.chmod(sock, 0o777)
    for path in keys.values():
        os.chown(path, 65534, 65534)
        os.chmod(path, 0o644)
    r = install(home)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "users service: %s: was 65534:65534 777, now 0:0 755" % sock in lines, r.stdout
    for path, (uid, gid, mode) in want.items():
        assert "users service: %s: was 65534:65534 644, now %d:%d %o" % (path, uid, gid, mode) in lines, r.stdout
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, gid, mode)
    st = os.stat(sock)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)


def test_fresh_install_is_no_open_relay_and_postmaster_has_a_mailbox(production_home, tmp_path):
    """Issue 22 item 5 and issue 24 item 1: a fresh production install writes config-fast's files
    from the host name, answers 5xx to RCPT for a foreign domain from a client that may not relay,
    and makes ~alias/.qmail-postmaster, -mailer-daemon, -root with alias/Maildir/."""
    top, _ = production_home
    home = os.path.join(top, "qmail")
    r = install(home)
    assert r.returncode == 0, r.stdout + r.stderr
    name = os.uname().nodename
    control = os.path.join(home, "control")
    for f in ("me", "locals", "rcpthosts"):
        with open(os.path.join(control, f)) as fh:
            assert fh.read() == name + "\n", f
    assert "Putting %s into control/rcpthosts..." % name in r.stdout
    alias = pwd.getpwnam("alias")
    for f in ("postmaster", "mailer-daemon", "root"):
        path = os.path.join(home, "alias", ".qmail-" + f)
        st = os.stat(path)
        assert (st.st_uid, st.st_mode & 0o7777) == (alias.pw_uid, 0o644), f
        with open(path) as fh:
            assert fh.read() == "./Maildir/\n"
        assert "made %s: ./Maildir/" % path in r.stdout
    assert os.stat(os.path.join(home, "alias", "Maildir", "new")).st_uid == alias.pw_uid
    check = subprocess.run([os.path.join(home, "bin", "qmail-showctl"), "--check"], env=dict(ENV, QMAILHOME=home),
                           capture_output=True, text=True, timeout=30)
    elsewhere = accounts.alias_elsewhere(home)
    if elsewhere is None:
        assert "qmail-showctl --check: nothing to report" in r.stdout
        assert (check.returncode, check.stdout) == (0, ""), check.stdout + check.stderr
    else:       # this machine's alias user belongs to another qmail home: postmaster's mail goes there
        assert "note: user alias has the home %s, not %s/alias" % (elsewhere, home) in r.stdout
        assert check.returncode == 1 and "postmaster@%s reaches no mailbox" % name in check.stdout

    # qmail-smtpd as tcpserver runs it for 192.0.2.1 (tcp.smtp: `:allow`, no RELAYCLIENT); qmail-usersd
    # has not run yet (no sock/users), and qmaild may not look into qmailu's users/: whether the client
    # logged in over POP3 (popbeforesmtp) cannot be told, so the relay attempt is deferred, never taken
    session = (b"HELO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<victim@elsewhere.example>\r\n"
               b"RCPT TO:<postmaster@%s>\r\nQUIT\r\n" % name.encode())
    r = subprocess.run([os.path.join(home, "bin", "qmail-smtpd")], input=session, capture_output=True, timeout=30,
                       env=dict(ENV, QMAILHOME=home, **dict(TCP_ENV, TCPREMOTEIP="192.0.2.1")))
    replies = r.stdout.decode().splitlines()
    assert replies[3] == "451 temporary failure reading the users database (#4.3.0)", replies
    assert replies[4] == "250 ok", replies
    with open(os.path.join(control, "popbeforesmtp"), "w") as f:
        f.write("0\n")                     # without POP-before-SMTP: refused at once
    r = subprocess.run([os.path.join(home, "bin", "qmail-smtpd")], input=session, capture_output=True, timeout=30,
                       env=dict(ENV, QMAILHOME=home, **dict(TCP_ENV, TCPREMOTEIP="192.0.2.1")))
    assert r.stdout.decode().splitlines()[3] == "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    os.unlink(os.path.join(control, "popbeforesmtp"))

    # a rerun keeps everything that is there, and says so
    r = install(home, "--postmaster", "admin@example.net", "--me", "mx.example.com")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "control/rcpthosts is there already: left as it is" in r.stdout
    assert "kept %s (there already)" % os.path.join(home, "alias", ".qmail-postmaster") in r.stdout
    with open(os.path.join(home, "alias", ".qmail-root")) as fh:
        assert fh.read() == "./Maildir/\n"

    # without rcpthosts the qmail-smtpd service does not start: it says why and retries
    os.unlink(os.path.join(control, "rcpthosts"))
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "sleep").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sleep").chmod(0o755)
    (fake / "tcpserver").write_text("#!/bin/sh\necho tcpserver started\n")
    (fake / "tcpserver").chmod(0o755)
    service = os.path.join(home, "service", "qmail-smtpd")
    r = subprocess.run(["sh", "./run"], cwd=service, capture_output=True, text=True, timeout=30,
                       env=dict(ENV, PATH="%s:%s" % (fake, ENV["PATH"])))
    assert r.returncode == 111 and "tcpserver started" not in r.stdout
    assert r.stdout.startswith("qmail-smtpd not started: control/rcpthosts is absent, so it would take mail for "
                               "any domain (an open relay).")


def test_postmaster_forwards_where_install_was_told(production_home):
    top, _ = production_home
    home = os.path.join(top, "qmail")
    r = install(home, "--postmaster", "admin@example.net")
    assert r.returncode == 0, r.stdout + r.stderr
    for f in ("postmaster", "mailer-daemon", "root"):
        with open(os.path.join(home, "alias", ".qmail-" + f)) as fh:
            assert fh.read() == "&admin@example.net\n"
    assert not os.path.exists(os.path.join(home, "alias", "Maildir"))
    r = install(home, "--postmaster", "postmaster")
    assert r.returncode == 1 and "whole address" in r.stderr
