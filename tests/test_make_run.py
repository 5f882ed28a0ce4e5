"""`make run`'s script end to end: swaks in, Maildir out, a forward, read back over POP3, then stop;
and its refusals: a port in use, and `make clean` stopping a running demo first."""
import os
import shlex
import socket
import subprocess
import time

import pytest

from conftest import ROOT
from test_dialogues import free_port

# these tests may make qmail's system accounts (install as root): removed afterwards
pytestmark = pytest.mark.usefixtures("host_accounts")

SCRIPT = os.path.join(ROOT, "tools", "run.sh")


def wait_for_files(path, n, timeout=20):
    deadline = time.time() + timeout
    while len(os.listdir(path)) < n and time.time() < deadline:
        time.sleep(0.1)
    return sorted(os.listdir(path))


def conversation(argv, typed, timeout=20):
    """What a program talking to an SMTP server prints (lines without CRLF) for the lines a user
    types, up to the server's last reply (221, or a 4xx/5xx that ends the session)."""
    import select
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines, buf, deadline = [], b"", time.time() + timeout
    try:
        proc.stdin.write(typed)               # kept open: s_client quits at its end
        proc.stdin.flush()
        while time.time() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [line.rstrip(b"\r").decode() for line in done]
            if not chunk or any(line[:1] in "245" and line[3:4] == " " and line[:3] != "250" for line in lines):
                break
    finally:
        proc.kill()
        proc.wait()
    return lines


def test_demo_instance():
    import shutil
    import tempfile
    from pathlib import Path
    top = tempfile.mkdtemp(prefix="qmailpy-run-")     # not pytest's 0700 tmp: vpopmail must reach it
    os.chmod(top, 0o755)
    rundir = Path(top) / "run"
    port, pop3 = free_port(), free_port()
    env = dict(os.environ, RUNDIR=str(rundir), PORT=str(port), POP3PORT=str(pop3))
    script = SCRIPT
    try:
        r = subprocess.run([script], env=env, capture_output=True, timeout=120)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        assert "swaks --server 127.0.0.1:%d --from you@example.com --to demo@demo.example" % port in out
        maildir = rundir / "vpopmail" / "domains" / "demo.example" / "demo" / "Maildir"
        assert str(maildir / "new") in out
        # STARTTLS with the certificate make run made now (AUTH below goes over it)
        assert "swaks --server 127.0.0.1:%d --tls --from you@example.com --to demo@demo.example" % port in out
        assert (rundir / "control" / "servercert.pem").stat().st_mode & 0o077 == 0
        # the printed s_client line, as a user types into it (lines end in LF): it must send CRLF,
        # or qmail-smtpd answers the first command with 451 smtplf and drops the connection
        [typed] = [line.strip() for line in out.splitlines() if line.strip().startswith("openssl s_client ")]
        assert conversation(shlex.split(typed), b"EHLO c.example\nQUIT\n") == [
            "250-qmailpy.local", "250-PIPELINING", "250-8BITMIME", "250 SIZE 0", "221 qmailpy.local"]
        s = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "you@example.com",
                            "--to", "demo@demo.example", "--body", "hello from the demo"],
                           capture_output=True, timeout=60)
        assert s.returncode == 0, s.stdout.decode()
        deadline = time.time() + 20
        while not os.listdir(maildir / "new") and time.time() < deadline:
            time.sleep(0.1)
        [name] = os.listdir(maildir / "new")
        stored = (maildir / "new" / name).read_bytes()
        assert stored.startswith(b"Return-Path: <you@example.com>\nDelivered-To: demo.example-demo@demo.example\n")
        assert b"hello from the demo" in stored
        got = subprocess.run(["curl", "-s", "--user", "demo@demo.example:demo", "pop3://127.0.0.1:%d/1" % pop3],
                             capture_output=True, timeout=30).stdout
        assert got.replace(b"\r\n", b"\n").rstrip(b"\n") == stored.rstrip(b"\n")

        # the commands it prints for the home run as typed (the programs are not on PATH);
        # postmaster (and double bounces) reach alias/Maildir/, as root too, where the demo makes
        # no alias user: `qmail-showctl --check` in the run home finds nothing
        typed = [line.strip() for line in out.splitlines() if line.strip().startswith("QMAILHOME=")]
        assert [line.split()[1] for line in typed] == [str(rundir / "bin" / name) for name in
                                                        ("qmail-showctl", "qmail-qstat", "qmail-users")]
        shown = [subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60) for line in typed]
        assert [(r.returncode, r.stderr) for r in shown] == [(0, "")] * 3, [r.stdout + r.stderr for r in shown]
        assert shown[2].stdout == "demo.example\n"
        assert shown[1].stdout.startswith("messages in queue: ")
        assert "postmaster's mail\nlands in %s/:\n" % (rundir / "alias" / "Maildir" / "new") in out
        from qmailpy.install import accounts
        if accounts.alias_elsewhere(str(rundir)) is None:    # else this machine's alias user takes it, as in qmail
            assert shown[0].stdout == ""
            s = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "you@example.com",
                                "--to", "postmaster@demo.example", "--body", "hello postmaster"],
                               capture_output=True, timeout=60)
            assert s.returncode == 0, s.stdout.decode()
            [name] = wait_for_files(rundir / "alias" / "Maildir" / "new", 1)
            stored = (rundir / "alias" / "Maildir" / "new" / name).read_bytes()
            assert stored.startswith(b"Return-Path: <you@example.com>\nDelivered-To: alias-postmaster@demo.example\n")

        # qmail-smtpd asks the users service, as in production (127.0.0.1 relays anyway: AUTH's answer)
        assert (rundir / "sock" / "users").exists() and (rundir / "qmail-usersd.pid").exists()
        (rundir / "control" / "smtpauth").write_text("1\n")         # read per connection
        s = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "demo@demo.example",
                            "--to", "someone@elsewhere.example", "--tls", "--auth", "CRAM-MD5", "--auth-user",
                            "demo@demo.example", "--auth-password", "demo", "--quit-after", "RCPT"],
                           capture_output=True, timeout=60)
        assert "<~  235 " in s.stdout.decode() and "<~  250 ok" in s.stdout.decode(), s.stdout.decode()  # <~: in TLS
        (rundir / "control" / "smtpauth").unlink()

        # a forward from the vpopmail mailbox: qmail-local (as root: vpopmail:vchkpw, no other
        # group) hands it to the demo's qmail-queued, which names it (issue 13 item 5, issue 20)
        env_home = dict(os.environ, QMAILHOME=str(rundir), QMAILPY_SINGLEUSER="1")
        subprocess.run([str(rundir / "bin" / "qmail-users"), "adduser", "fwd@demo.example", "-p", "x"],
                       env=env_home, check=True, capture_output=True, timeout=30)
        box = maildir.parent
        (box / ".qmail").write_text("&fwd@demo.example\n")
        if os.getuid() == 0:
            for path in (box / ".qmail", box.parent / "fwd"):
                subprocess.run(["chown", "-R", "vpopmail:vchkpw", str(path)], check=True)
        s = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, "--from", "you@example.com",
                            "--to", "demo@demo.example", "--body", "forward me"], capture_output=True, timeout=60)
        assert s.returncode == 0, s.stdout.decode()
        fwd_new = box.parent / "fwd" / "Maildir" / "new"
        names = wait_for_files(fwd_new, 1)
        log = (rundir / "log" / "send").read_text()
        assert len(names) == 1 and "unable to" not in log, log
        forwarded = (fwd_new / names[0]).read_bytes()
        assert b"Delivered-To: demo.example-demo@demo.example\n" in forwarded and b"forward me" in forwarded
        import pwd
        forwarder = pwd.getpwnam("vpopmail").pw_uid if os.getuid() == 0 else os.getuid()
        assert forwarded.split(b"\n")[2].startswith(b"Received: (qmail ") and \
            b" invoked by uid %d); " % forwarder in forwarded.split(b"\n")[2], forwarded[:300]
        assert (rundir / "sock" / "qmail-queue").exists()
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60)
        time.sleep(0.3)
        stopped = [name for name in ("qmail-queued.pid", "qmail-usersd.pid", "qmail-send.pid",
                                "tcpserver.pid")
                   if not (rundir / name).exists()]
        dovecot_log = (rundir / "dovecot" / "dovecot.log").read_text() if (rundir / "dovecot").exists() else ""
        shutil.rmtree(top, ignore_errors=True)
    assert stopped == ["qmail-queued.pid", "qmail-usersd.pid", "qmail-send.pid", "tcpserver.pid"]
    # Dovecot stopped as it stops (make stop left it no pid file to remove: an Error in its log)
    assert "master: Warning: Killed with signal 15" in dovecot_log
    assert [line for line in dovecot_log.splitlines() if "Error:" in line] == []


def test_a_port_in_use_fails_with_the_reason_and_leaves_nothing_running(tmp_path):
    """Another server on the POP3 (or SMTP) port: exit 1, the reason, no curl line, nothing started."""
    rundir = tmp_path / "run"
    for which in ("PORT", "POP3PORT"):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        ports = {"PORT": str(free_port()), "POP3PORT": str(free_port()), which: str(taken.getsockname()[1])}
        try:
            r = subprocess.run([SCRIPT], env=dict(os.environ, RUNDIR=str(rundir), **ports), capture_output=True,
                               text=True, timeout=120)
        finally:
            taken.close()
        assert r.returncode == 1, r.stdout + r.stderr
        assert "127.0.0.1:%s (%s) is in use" % (ports[which], "SMTP" if which == "PORT" else "POP3") in r.stderr
        assert "curl" not in r.stdout
        assert [p.name for p in rundir.glob("*.pid")] == [] if rundir.exists() else True


@pytest.mark.skipif(os.getuid() != 0, reason="as root only: deliveries then run as vpopmail")
def test_a_home_vpopmail_cannot_reach_fails_with_the_reason():
    """root's clone under /root (0700): make run said it was running and where mail lands, and
    qmail-local, as vpopmail, deferred every message (`Unable to switch to ...: access denied`).
    It fails instead, naming the closed directory, with nothing left running."""
    import shutil
    import tempfile
    from pathlib import Path
    top = Path(tempfile.mkdtemp(prefix="qmailpy-run-"))     # not pytest's tmp: its parent is closed too
    os.chmod(top, 0o755)
    closed = top / "closed"
    closed.mkdir(mode=0o700)
    rundir = closed / "run"
    env = dict(os.environ, RUNDIR=str(rundir), PORT=str(free_port()), POP3PORT=str(free_port()))
    try:
        r = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        pids = list(rundir.glob("*.pid"))
    finally:
        subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(top, ignore_errors=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == ("make run: deliveries run as vpopmail, who cannot reach %s/vpopmail/domains/demo.example/demo/"
                        "Maildir (%s is closed to other users); put the checkout where other users may enter, e.g. "
                        "/opt/qmailpy or /srv/qmailpy\n" % (rundir, closed)), r.stderr
    assert "swaks" not in r.stdout and pids == []


def test_a_stop_that_times_out_keeps_the_pid_file_for_the_next(tmp_path):
    """qmail-send, on SIGTERM, first finishes the deliveries it started: one to a server that
    never answers outlasts make stop's 10 s. stop() had removed every pid file anyway, so the
    qmail-send that went on running was one no later `make stop` could find, and `make run`
    went on to start a second one (which found lock/sendmutex taken). Now a process still
    running keeps its pid file, stop fails, and the next `make stop` ends it."""
    import shutil
    import tempfile
    from pathlib import Path
    top = Path(tempfile.mkdtemp(prefix="qmailpy-run-"))
    os.chmod(top, 0o755)
    rundir = top / "run"
    env = dict(os.environ, RUNDIR=str(rundir), PORT=str(free_port()), POP3PORT=str(free_port()))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    try:
        r = subprocess.run([SCRIPT], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        (rundir / "control" / "smtproutes").write_text("elsewhere.example:127.0.0.1:%d\n" % silent.getsockname()[1])
        s = subprocess.run(["swaks", "--server", "127.0.0.1:%s" % env["PORT"], "--from", "you@example.com",
                            "--to", "someone@elsewhere.example"], capture_output=True, timeout=60)
        assert s.returncode == 0, s.stdout.decode()
        silent.settimeout(30)
        held, _ = silent.accept()                    # qmail-remote waits for a greeting
        send = int((rundir / "qmail-send.pid").read_text())
        r = subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and r.stdout == ""
        assert r.stderr == ("still running after 10 s: %d (qmail-send finishes the deliveries it started; "
                            "make stop again later)\n" % send)
        assert sorted(p.name for p in rundir.glob("*.pid")) == ["qmail-send.pid"]
        held.close()                                 # the delivery ends (deferred), and qmail-send with it
        r = subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "stopped\n", "")
        assert not os.path.exists("/proc/%d" % send) and list(rundir.glob("*.pid")) == []
    finally:
        silent.close()
        subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(top, ignore_errors=True)


def test_stop_kills_only_the_homes_processes(tmp_path):
    """A pid file a demo left behind (a reboot, kill -9) may name another process by now:
    `make stop` (and `make run`, `make clean`, which stop first) sent it SIGTERM, as root
    any process of the machine. It kills only a process whose command line names the home,
    and removes the stale pid files all the same."""
    rundir = tmp_path / "run"
    (rundir / "dovecot" / "run").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        for name in ("qmail-send.pid", "tcpserver.pid", "dovecot/run/master.pid"):
            (rundir / name).write_text("%d\n" % other.pid)
        r = subprocess.run([SCRIPT, "stop"], env=dict(os.environ, RUNDIR=str(rundir)), capture_output=True,
                           text=True, timeout=60)
        assert (r.returncode, r.stdout, r.stderr) == (0, "stopped\n", "")
        time.sleep(0.2)
        assert other.poll() is None, "make stop killed a process of someone else"
        assert sorted(p.name for p in rundir.rglob("*.pid")) == []
    finally:
        other.kill()
        other.wait()


def test_make_clean_stops_the_demo_first():
    """`make clean` removes run/ with the pid files in it: it must stop the demo before (make -n)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    r = subprocess.run(["make", "--no-print-directory", "-n", "clean"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30, env=env)
    lines = r.stdout.splitlines()
    assert lines[0] == "./tools/run.sh stop" and lines[1].startswith("rm -rf ") and "run" in lines[1].split()
