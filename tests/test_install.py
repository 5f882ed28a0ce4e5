"""make install's layout: launchers, control defaults (never overwritten), tcprules cdb, queue."""
import grp
import os
import pwd
import stat
import subprocess
import sys
import time

import pytest

from conftest import ROOT

# these tests may make qmail's system accounts (install as root): removed afterwards
pytestmark = pytest.mark.usefixtures("host_accounts")


def install(home, *extra):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
                    os.path.join(ROOT, ".venv", "bin", "python3"), *extra], check=True, capture_output=True)


def test_install_lays_out_a_qmail_home(tmp_path):
    home = tmp_path / "qmail"
    install(home)
    for name in ("qmail-smtpd", "qmail-queue", "qmail-showctl", "qmail-local"):
        assert os.access(home / "bin" / name, os.X_OK)
    assert (home / "control" / "tcp.smtp").read_text() == open(os.path.join(ROOT, "control", "tcp.smtp")).read()
    assert (home / "control" / "tcp.smtp.cdb").stat().st_size >= 2048
    assert not (home / "control" / "options.example").exists()
    for d in ("pid", "intd", "todo", "bounce", "mess/0", "mess/22", "info/5", "local/5", "remote/5", "lock"):
        assert (home / "queue" / d).is_dir(), d
    assert stat.S_ISFIFO((home / "queue" / "lock" / "trigger").stat().st_mode)
    r = subprocess.run([str(home / "bin" / "qmail-showctl")], env=dict(os.environ, QMAILHOME=str(home)),
                       capture_output=True, check=True)
    assert b"concurrencyremote: (Default.) 100" in r.stdout


def test_install_never_overwrites_controls(tmp_path):
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "tcp.smtp").write_text(":allow\n")
    install(home, "--demo")
    assert (home / "control" / "tcp.smtp").read_text() == ":allow\n"
    assert (home / "control" / "me").read_text() == "qmailpy.local\n"
    (home / "control" / "me").write_text("mine.example\n")
    install(home, "--demo")
    assert (home / "control" / "me").read_text() == "mine.example\n"


def test_install_keeps_the_admins_tcp_smtp_cdb(tmp_path):
    """Migrating (docs/operations.md): H-Sphere kept the tcprules source in /etc/tcp.smtp, and
    `cp -p` of its control/ brings tcp.smtp.cdb (older than the tcp.smtp this install put
    there). A rerun of the install keeps that cdb: it must not rebuild it from qmailpy's
    default rules, which would take the admin's relay networks away."""
    home = tmp_path / "qmail"
    install(home)
    cdb = home / "control" / "tcp.smtp.cdb"
    subprocess.run(["tcprules", str(cdb), str(tmp_path / "tcp.tmp")], check=True,
                   input=b'10.1.:allow,RELAYCLIENT=""\n192.0.2.66:deny\n:allow\n')
    os.utime(cdb, (1000000000, 1000000000))          # cp -p: the old host's time
    admins = cdb.read_bytes()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
                        os.path.join(ROOT, ".venv", "bin", "python3")], check=True, capture_output=True, text=True)
    assert cdb.read_bytes() == admins
    rules, made = home / "control" / "tcp.smtp", home / "control" / "tcp.smtp.tmp"
    assert ("note: control/tcp.smtp.cdb is kept as it is (tcpserver reads it), though control/tcp.smtp is "
            "newer; to use the rules of control/tcp.smtp: tcprules %s %s < %s" % (cdb, made, rules)
            ) in r.stdout.splitlines()


def test_default_install_writes_no_services_and_keeps_qmail_modes(tmp_path):
    home = tmp_path / "qmail"
    install(home)
    assert not (home / "service").exists() and not (home / "etc").exists()
    for d in ("pid", "intd"):
        assert stat.S_IMODE((home / "queue" / d).stat().st_mode) == 0o700
    for d in ("todo", "mess", "mess/3"):
        assert stat.S_IMODE((home / "queue" / d).stat().st_mode) == 0o750


def test_queue_modes_are_qmails_and_an_older_layout_is_put_back(tmp_path):
    """Before qmail-queued, a production queue let group qmail write pid/, intd/, todo/, mess/
    (02770) and its files belonged to qmail-queue's callers; a rerun of the install puts hier.c's
    modes back, says so, and (as root, where qmailq exists) gives the waiting files to qmailq."""
    from qmailpy.queue.layout import create_queue
    home = tmp_path / "qmail"
    create_queue(str(home))
    for d in ("pid", "intd", "todo", "mess", "mess/0", "mess/22"):
        os.chmod(home / "queue" / d, 0o2770)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
                        os.path.join(ROOT, ".venv", "bin", "python3")], check=True, capture_output=True, text=True)
    for d, mode in (("pid", 0o700), ("intd", 0o700), ("todo", 0o750), ("mess", 0o750), ("mess/0", 0o750),
                    ("mess/22", 0o750), ("", 0o750), ("info/5", 0o700), ("local/5", 0o700), ("remote/5", 0o700),
                    ("bounce", 0o700), ("lock", 0o750)):
        assert stat.S_IMODE((home / "queue" / d).stat().st_mode) == mode, d
    assert stat.S_IMODE((home / "queue" / "lock" / "trigger").stat().st_mode) == 0o622
    assert "queue/pid: mode 2770 -> 0700 (qmail's: only qmailq, i.e. qmail-queued, writes there)" in r.stdout
    assert "queue/mess: mode 2770 -> 0750 (qmail's: only qmailq, i.e. qmail-queued, writes there)" in r.stdout
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(home), ROOT,
                        os.path.join(ROOT, ".venv", "bin", "python3")], check=True, capture_output=True, text=True)
    assert "queue/" not in r.stdout                       # nothing left to change


def test_production_needs_root(tmp_path):
    if os.getuid() == 0:
        env = dict(os.environ)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                            os.path.join(ROOT, "tools", "install.py"), str(tmp_path / "q"), ROOT,
                            sys.executable, "--production"], capture_output=True, text=True, env=env)
    else:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(tmp_path / "q"), ROOT,
                            sys.executable, "--production"], capture_output=True, text=True)
    assert r.returncode == 1 and "run it as root" in r.stderr
    assert not (tmp_path / "q").exists()


def test_accounts_commands():
    from qmailpy.install import accounts
    cmds = accounts.commands("/var/qmail", "/home/vpopmail", group_exists=lambda g: False,
                             user_exists=lambda u: False, shell="/usr/sbin/nologin")
    assert cmds[:4] == [["groupadd", "-r", "qmail"], ["groupadd", "-r", "nofiles"], ["groupadd", "-r", "vchkpw"],
                        ["groupadd", "-r", "qmailu"]]
    users = {c[-1]: c for c in cmds[4:]}
    assert users["qmaild"] == ["useradd", "-r", "-M", "-g", "nofiles", "-d", "/var/qmail", "-s",
                               "/usr/sbin/nologin", "qmaild"]          # in no other group, as in qmail
    assert all("-G" not in c for c in users.values())
    assert users["alias"][4:7] == ["nofiles", "-d", "/var/qmail/alias"]
    assert users["vpopmail"][4:7] == ["vchkpw", "-d", "/home/vpopmail"]
    assert {u: c[4] for u, c in users.items()} == {
        "alias": "nofiles", "qmaild": "nofiles", "qmaill": "nofiles", "qmailp": "nofiles",
        "qmailq": "qmail", "qmailr": "qmail", "qmails": "qmail", "vpopmail": "vchkpw", "qmailu": "qmailu"}
    assert accounts.commands("/var/qmail", "/v", group_exists=lambda g: True, user_exists=lambda u: True) == []
    some = accounts.commands("/var/qmail", "/v", group_exists=lambda g: g != "nofiles",
                             user_exists=lambda u: u != "qmailr", shell="/bin/false")
    assert some == [["groupadd", "-r", "nofiles"],
                    ["useradd", "-r", "-M", "-g", "qmail", "-d", "/var/qmail", "-s", "/bin/false", "qmailr"]]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (useradd)")
def test_accounts_a_useradd_that_fails_stops_the_install_and_a_missing_membership_is_said(tmp_path):
    """useradd refusing (here: its group is not there) ends install.py with the command and
    useradd's own words, nothing created; an existing user outside a group the programs need
    is told how to add it (usermod), not changed."""
    from qmailpy.install import accounts
    said = []
    with pytest.raises(SystemExit) as e:
        accounts.ensure(str(tmp_path), str(tmp_path / "v"), said.append, groups=(),
                        users=(("qmailpy-test-nouser", "qmailpy-test-nogroup", None, ()),))
    assert str(e.value) == ("install.py: useradd -r -M -g qmailpy-test-nogroup -d %s -s %s qmailpy-test-nouser failed: "
                            "useradd: group 'qmailpy-test-nogroup' does not exist" % (tmp_path, accounts.nologin_shell()))
    assert said == []
    with pytest.raises(KeyError):
        pwd.getpwnam("qmailpy-test-nouser")
    assert accounts.ensure(str(tmp_path), str(tmp_path / "v"), said.append, groups=(),
                           users=(("root", "root", None, ("daemon",)),)) == []
    assert said == ["note: user root is not in group(s) daemon; qmail-smtpd started as root (not by tcpserver "
                    "-u/-g) needs it: usermod -a -G daemon root"]
    assert "root" not in grp.getgrnam("daemon").gr_mem


def test_a_qmail_send_it_may_not_signal_gets_the_command_to_run(tmp_path, monkeypatch):
    """make run's qmail-send (its pid file) that the caller may not signal (another user's):
    reload_send says the kill -HUP that failed and why, for the admin to run it."""
    import errno
    from qmailpy.install import running
    proc = subprocess.Popen(["bash", "-c", "exec -a %s/bin/qmail-send sleep 60" % tmp_path])
    try:
        deadline = time.monotonic() + 10
        while running._demo_pid(str(tmp_path)) is None and time.monotonic() < deadline:
            with open(tmp_path / running.PIDFILE, "w") as f:
                f.write("%d\n" % proc.pid)
            time.sleep(0.02)

        def refused(pid, sig):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        with monkeypatch.context() as m:
            m.setattr(os, "kill", refused)
            got = running.reload_send(str(tmp_path))
        assert got == (False, "kill -HUP %d (Operation not permitted)" % proc.pid)
    finally:
        proc.kill()
        proc.wait()


def _settings(**kw):
    from qmailpy.install.services import Settings
    return Settings("/var/qmail", "/opt/qmailpy", "/opt/qmailpy/.venv/bin/python3", smtpd_uid=105, smtpd_gid=107,
                    freshclam="/usr/bin/freshclam", **kw)


def test_smtps_service_is_up_when_a_certificate_is_there(tmp_path):
    from qmailpy.ctl.reader import Controls
    from qmailpy.install import services
    from qmailpy.install.services import Settings
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "servercert.pem").write_text("cert and key\n")
    services.write(Settings(str(home), ROOT, sys.executable, smtpd_uid=1, smtpd_gid=1), Controls(str(home), {}))
    assert not (home / "service" / "qmail-smtpsd" / "down").exists()


def test_smtps_run_script():
    from qmailpy.install import services
    smtps = services.render_smtpd_run(_settings(), smtps=True)
    assert ("/opt/qmailpy/.venv/bin/python3 -IS /opt/qmailpy/qmailpy/install/ctlvalue.py --present /var/qmail "
            "servercert.pem || { [ $? = 1 ] && echo 'qmail-smtpsd not started: control/servercert.pem "
            "(certificate and key) is absent; retrying in 5 s.'; sleep 5; exit 111; }\n") in smtps
    assert smtps.endswith(
        "exec env - PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin QMAILHOME=/var/qmail SMTPS=1 envdir ./env \\\n"
        "    tcpserver -v -R -p -x /var/qmail/control/tcp.smtp.cdb -c \"$SESSIONS\" -u 105 -g 107 0 465 \\\n"
        "    /var/qmail/bin/qmail-smtpd\n")


def test_run_scripts():
    from qmailpy.install import services
    smtpd = services.render_smtpd_run(_settings())
    assert smtpd.startswith("#!/bin/sh\n")
    assert ("SESSIONS=$(/opt/qmailpy/.venv/bin/python3 -IS /opt/qmailpy/qmailpy/install/ctlvalue.py /var/qmail "
            "tcpsessioncount) || { sleep 5; exit 111; }\n") in smtpd
    assert smtpd.endswith(
        "exec env - PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin QMAILHOME=/var/qmail envdir ./env \\\n"
        "    tcpserver -v -R -p -x /var/qmail/control/tcp.smtp.cdb -c \"$SESSIONS\" -u 105 -g 107 0 25 \\\n"
        "    /var/qmail/bin/qmail-smtpd\n")
    limited = services.render_smtpd_run(_settings(softlimit=300000000, smtp_port=2525, smtp_listen="127.0.0.1",
                                                  tcpserver_flags="-v -R -H -l mx.example"))
    assert ("    softlimit -m 300000000 tcpserver -v -R -H -l mx.example -x /var/qmail/control/tcp.smtp.cdb "
            "-c \"$SESSIONS\" -u 105 -g 107 127.0.0.1 2525 \\\n") in limited
    forked = services.render_smtpd_run(_settings(smtp_server="qmail-tcpserver"))
    assert forked.endswith(
        "exec env - PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin QMAILHOME=/var/qmail envdir ./env \\\n"
        "    /var/qmail/bin/qmail-tcpserver -v -R -p -x /var/qmail/control/tcp.smtp.cdb -c \"$SESSIONS\" "
        "-u 105 -g 107 0 25 \\\n"
        "    /var/qmail/bin/qmail-smtpd\n")
    assert "# qmail-smtpd under qmail-tcpserver on 0:25" in forked
    assert "# qmail-smtpd under tcpserver on 0:25" in smtpd
    with pytest.raises(ValueError):
        _settings(smtp_server="inetd")
    send = services.render_send_run(_settings())
    queued = services.render_queued_run(_settings())
    assert queued.endswith("exec 2>&1\nexec env - PATH=/var/qmail/bin:/usr/local/bin:/usr/bin:/bin "
                           "QMAILHOME=/var/qmail envdir ./env \\\n    /var/qmail/bin/qmail-queued\n")
    assert "exec 2>&1\n" in send
    assert send.endswith("envdir ./env \\\n    /var/qmail/bin/qmail-send ./Maildir/\n")
    assert services.render_log_run().endswith("exec setuidgid qmaill multilog t ./main\n")
    dovecot = services.render_dovecot_run(_settings(pop3_port=1110, pop3_listen="127.0.0.1"))
    assert ("/opt/qmailpy/.venv/bin/python3 -I -m qmailpy.pop3.dovecot /var/qmail /var/qmail/dovecot --port 1110 "
            "--listen 127.0.0.1 --python /opt/qmailpy/.venv/bin/python3") in dovecot
    assert dovecot.endswith("exec dovecot -F -c /var/qmail/dovecot/dovecot.conf\n")
    for script in (smtpd, limited, send, queued, dovecot, services.render_log_run()):
        assert subprocess.run(["sh", "-n"], input=script.encode()).returncode == 0


def test_the_installers_default_flags_are_the_run_scripts(tmp_path):
    """tools/install.py --production gives Settings its --tcpserver-flags, so that option's default
    is what the installed run scripts get: services.TCPSERVER_FLAGS, with -p (relaydomains trusts
    TCPREMOTEHOST, which only -p confirms). The option's own default was "-v -R", so an install
    wrote tcpserver without -p although 07e22ab made it the run scripts' default."""
    import importlib.util
    from qmailpy.install import services
    spec = importlib.util.spec_from_file_location("install_tool", os.path.join(ROOT, "tools", "install.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args([str(tmp_path / "qmail"), ROOT, sys.executable, "--production"])
    assert args.tcpserver_flags == services.TCPSERVER_FLAGS
    assert "    tcpserver -v -R -p -x " in services.render_smtpd_run(_settings(tcpserver_flags=args.tcpserver_flags))


def test_crontabs():
    from qmailpy.install import services
    user = services.render_crontab(_settings())
    jobs = [line for line in user.splitlines() if line and not line.startswith("#")]
    assert jobs == ["17 4 * * 0 QMAILHOME=/var/qmail /var/qmail/bin/setsrssecret",
                    "*/15 * * * * QMAILHOME=/var/qmail /var/qmail/bin/qmail-users clearopensmtp >/dev/null",
                    "0 * * * * /usr/bin/freshclam --quiet"]
    system = services.render_crontab(_settings(), user="root")
    jobs = [line for line in system.splitlines() if line and not line.startswith("#")]
    assert jobs == ["17 4 * * 0 root QMAILHOME=/var/qmail /var/qmail/bin/setsrssecret",
                    "*/15 * * * * root QMAILHOME=/var/qmail /var/qmail/bin/qmail-users clearopensmtp >/dev/null",
                    "0 * * * * root /usr/bin/freshclam --quiet"]


def test_write_services(tmp_path):
    from qmailpy.ctl.reader import Controls
    from qmailpy.install import services
    from qmailpy.install.services import Settings
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "spamdchildren").write_text("4\n")
    (home / "control" / "clamdsocket").write_text("127.0.0.1:3310\n")
    s = Settings(str(home), ROOT, sys.executable, smtpd_uid=1, smtpd_gid=1)
    services.write(s, Controls(str(home), {}))
    svc = home / "service"
    assert sorted(p.name for p in svc.iterdir()) == ["clamd", "dovecot", "qmail-queued", "qmail-send",
                                                     "qmail-smtpd", "qmail-smtpsd", "qmail-usersd", "spamd"]
    for name in ("clamd", "dovecot", "qmail-queued", "qmail-send", "qmail-smtpd", "qmail-smtpsd", "qmail-usersd",
                 "spamd"):
        for run in (svc / name / "run", svc / name / "log" / "run"):
            assert os.access(run, os.X_OK) and run.read_text().startswith("#!/bin/sh\n")
        assert (svc / name / "log" / "main").is_dir() and (svc / name / "env").is_dir()
        # qmail-smtpsd waits for a certificate: down while control/servercert.pem is not there
        assert (svc / name / "down").exists() == (name in ("clamd", "spamd", "qmail-smtpsd"))
    assert "--max-children=4 " in (svc / "spamd" / "run").read_text()
    assert (svc / "qmail-usersd" / "run").read_text().endswith(" envdir ./env \\\n    %s\n"
                                                               % (home / "bin" / "qmail-usersd"))
    assert "TCPSocket 3310\n" in (svc / "clamd" / "clamd.conf").read_text()
    assert "--config-file=%s" % (svc / "clamd" / "clamd.conf") in (svc / "clamd" / "run").read_text()
    assert (home / "etc" / "crontab").exists() and (home / "etc" / "cron.d" / "qmailpy").exists()
    # a rerun rewrites the scripts but keeps the operator's env/ files and down/up choices
    (svc / "qmail-send" / "env" / "DNSCACHEIP").write_text("127.0.0.1\n")
    (svc / "clamd" / "down").unlink()
    (svc / "dovecot" / "down").write_text("")
    services.write(s, Controls(str(home), {}))
    assert (svc / "qmail-send" / "env" / "DNSCACHEIP").read_text() == "127.0.0.1\n"
    assert not (svc / "clamd" / "down").exists() and (svc / "dovecot" / "down").exists()


def test_clamd_options_of_the_admin_are_kept_and_cannot_move_the_socket(tmp_path):
    """H-Sphere: the admin edits ClamAV's config file for clamd's options, but not LocalSocket
    or TCPSocket. service/clamd/clamd.conf is rewritten by every install, so the admin's
    options live in service/clamd/clamd.local (never written by the install), which each
    install appends; clamd takes an option's first line, so qmailpy's lines (where
    qmail-queue connects, the limits that refuse what clamd cannot scan) stay in force."""
    import shutil
    from qmailpy.ctl.reader import Controls
    from qmailpy.install import services
    from qmailpy.install.services import Settings
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "clamdsocket").write_text(str(tmp_path / "clamd.sock") + "\n")
    s = Settings(str(home), ROOT, sys.executable, smtpd_uid=1, smtpd_gid=1)
    services.write(s, Controls(str(home), {}))
    conf = home / "service" / "clamd" / "clamd.conf"
    assert "clamd.local" in conf.read_text().splitlines()[0]      # says where the admin's options go
    local = home / "service" / "clamd" / "clamd.local"
    mine = "# mine\nMaxThreads 7\nLocalSocket /elsewhere/clamd.sock\nAlertEncrypted no\n"
    local.write_text(mine)
    services.write(s, Controls(str(home), {}))
    assert local.read_text() == mine
    text = conf.read_text()
    assert text.endswith("\n" + mine)
    assert text.index("LocalSocket %s\n" % (tmp_path / "clamd.sock")) < text.index("LocalSocket /elsewhere")
    if not shutil.which("clamconf"):
        from services import missing
        missing("clamd", "clamconf is not installed (Debian clamav-daemon; make deps)")
    shown = subprocess.run(["clamconf", "-c", str(conf.parent)], capture_output=True, text=True).stdout
    assert 'LocalSocket = "%s"' % (tmp_path / "clamd.sock") in shown
    assert 'MaxThreads = "7"' in shown
    assert "AlertEncrypted enabled" in shown or 'AlertEncrypted = "yes"' in shown


def test_ctlvalue_reads_at_start(tmp_path):
    script = os.path.join(ROOT, "qmailpy", "install", "ctlvalue.py")
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)

    def run(*names):
        return subprocess.run([sys.executable, "-IS", script, str(home), *names], capture_output=True, text=True)
    assert run("tcpsessioncount").stdout == "40\n"
    (home / "control" / "options").write_text("tcpsessioncount: 25\n")
    assert run("tcpsessioncount", "spamdchildren").stdout == "25\n10\n"
    (home / "control" / "tcpsessioncount").write_text("77\n")
    assert run("tcpsessioncount").stdout == "77\n"
    r = run("nosuchcontrol")
    assert r.returncode == 2 and "nosuchcontrol" in r.stderr


def test_ctlvalue_present_keeps_smtpd_from_starting_as_an_open_relay(tmp_path):
    """The run script starts qmail-smtpd only when `ctlvalue.py --present HOME rcpthosts` exits 0:
    exit 1 (nothing printed) without rcpthosts, 111 with a message for a control it cannot read,
    2 for a call without HOME and a NAME."""
    script = os.path.join(ROOT, "qmailpy", "install", "ctlvalue.py")
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)

    def run(*args):
        r = subprocess.run([sys.executable, "-IS", script, *args], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr
    assert run("--present", str(home), "rcpthosts") == (1, "", "")
    (home / "control" / "rcpthosts").write_text("example.org\n")
    assert run("--present", str(home), "rcpthosts", "tcpsessioncount") == (0, "", "")
    (home / "control" / "tcpsessioncount").write_text("abc\n")
    assert run(str(home), "tcpsessioncount") == (
        111, "", "ctlvalue: control/tcpsessioncount:1: not a number: 'abc'\n")
    assert run("--present", str(home), "rcpthosts", "tcpsessioncount")[0] == 111
    assert run("--present", str(home)) == (2, "", "usage: ctlvalue.py [--present] HOME NAME...\n")
    assert run(str(home)) == (2, "", "usage: ctlvalue.py [--present] HOME NAME...\n")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (chown)")
def test_the_users_service_owners_are_never_given_through_a_link(tmp_path):
    """A rerun of the production install gives users/vpopmail.sqlite and its -journal, -wal,
    -shm to qmailu. users/ is qmailu's, so qmailu may have put a symbolic or hard link there
    under one of those names: chown and chmod followed it, and root gave qmailu the target
    (/etc/shadow, say: qmailu then reads and writes it). Such a name is left alone, said."""
    from qmailpy.install import usersdb
    target = tmp_path / "shadow"
    target.write_text("root:x:\n")
    os.chmod(target, 0o640)
    users = tmp_path / "users"
    users.mkdir()
    os.symlink(str(target), users / "vpopmail.sqlite-wal")
    os.link(target, users / "vpopmail.sqlite-shm")
    said = []
    for name in ("vpopmail.sqlite-wal", "vpopmail.sqlite-shm"):
        assert usersdb._set(str(users / name), 65534, 65534, 0o600, True, said.append) is False
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o640)
    assert said == ["note: %s is a symbolic link: left alone" % (users / "vpopmail.sqlite-wal"),
                    "note: %s has 2 names: left alone" % (users / "vpopmail.sqlite-shm")]
    db = users / "vpopmail.sqlite"
    db.write_text("")
    assert usersdb._set(str(db), 65534, 65534, 0o600, True, said.append) is True     # the service's own file
    st = os.stat(db)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o600)
    assert said[-1] == "%s: was 0:0 644, now 65534:65534 600" % db
    # vpopmail.sqlite-journal lives only while the running service writes: gone between
    # secure()'s look and its open, it is nothing to give back, never a failed install
    assert usersdb._set(str(users / "vpopmail.sqlite-journal"), 65534, 65534, 0o600, True, said.append) is False
    assert said[-1] == "%s: was 0:0 644, now 65534:65534 600" % db


def test_postmasters_maildir_is_made_as_the_alias_user_never_through_its_links(tmp_path):
    """~alias is the alias user's: a link it put at alias/Maildir had root (install.py, rerun)
    make cur/, new/ and tmp/ wherever the link pointed and give them to alias (/etc/cron.d/new,
    say). The Maildir is made as the alias user, as qmail-users makes mailboxes as vpopmail: through
    a link it makes only what alias could make itself, and an install goes on without it."""
    from qmailpy.install import alias
    home = tmp_path / "qmail"
    d = home / "alias"
    d.mkdir(parents=True)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir(mode=0o755)
    os.symlink(elsewhere, d / "Maildir")
    os.chown(d, 4242, 4242)
    lines = alias.make(str(home), (4242, 4242))
    assert os.listdir(elsewhere) == []
    assert lines[0] == "cannot make %s/Maildir/ (postmaster's mailbox): %s/Maildir: not a directory" % (d, d)
    assert lines[1:] == ["made %s/.qmail-%s: ./Maildir/" % (d, n) for n in alias.NAMES]
    os.unlink(d / "Maildir")
    assert alias.make(str(home), (4242, 4242))[0] == "made %s/Maildir/ (postmaster's mailbox)" % d
    for sub in ("cur", "new", "tmp"):
        st = os.lstat(d / "Maildir" / sub)
        assert (stat.S_ISDIR(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (True, 4242, 4242, 0o700)
    assert os.lstat(d / "Maildir").st_uid == 4242
