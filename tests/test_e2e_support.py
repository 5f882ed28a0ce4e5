"""Helpers for the end-to-end tests (tests/test_e2e_*.py); no tests here.

Everything is a real process: bin/qmail-send with its real helpers (qmail-todo,
qmail-clean, qmail-lspawn + qmail-local, qmail-rspawn + qmail-remote), tcpserver
+ bin/qmail-smtpd + qmail-queue, swaks, Dovecot, Postfix's smtp-sink; the only
in-process peers are the aiosmtpd sinks and the DNS server of tests/smtpsink.py
and tests/dnsserver.py, all on 127.0.0.0/8.

The qmail home lives in a world-traversable temporary directory (not pytest's
0700 tmp_path): as root qmail-lspawn runs qmail-local as the mailbox owner
(MAIL_UID, the owner of vpopmaildir, as qmail-users sets it up), and Dovecot
reads the Maildirs as that user too.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from qmailpy.proto.date822 import date822

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin"
PYTHON = sys.executable
IS_ROOT = os.geteuid() == 0
MAIL_UID = 40091                 # the mailboxes' owner when run as root (any uid without a passwd entry)
ME = "mx.e2e.test"               # control/me
DOMAIN = "e2e.example"           # the virtual domain with the users-database mailboxes
CONTROLS = {"me": ME, "locals": ME, "rcpthosts": DOMAIN, "virtualdomains": "%s:%s" % (DOMAIN, DOMAIN),
            "concurrencylocal": "10", "concurrencyremote": "20"}


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host, port, proc=None, timeout=15, what="server"):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            assert proc.poll() is None, "%s exited with %s" % (what, proc.returncode)
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "%s did not listen on %s:%d" % (what, host, port)
            time.sleep(0.02)


def dates(t0, t1):
    """Every date822 string between two times (Date and Received lines)."""
    return {date822(t) for t in range(int(t0) - 1, int(t1) + 2)}


def wait_until(predicate, timeout=30, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, "timeout waiting for " + what
        time.sleep(interval)


# How qmail-lspawn/-rspawn run qmail-local/-remote: "fork" (their preloaded main() in a forked
# child, the default) or "exec" ($QMAILLOCAL/$QMAILREMOTE name bin/'s programs, exec'd per delivery)
SPAWN_MODES = ("fork", "exec")


def spawn_env(mode):
    """The environment that selects a spawn mode."""
    assert mode in SPAWN_MODES, mode
    return {} if mode == "fork" else {"QMAILLOCAL": str(BIN / "qmail-local"), "QMAILREMOTE": str(BIN / "qmail-remote")}


class World:
    """A qmail home laid out by tools/install.py (as `make install`), with the users database,
    and its qmail-queued running (queued=False: none; then qmail-queue writes the queue itself).
    spawn: how deliveries run (SPAWN_MODES).
    adddomain=False: the users database has the domain already (another host made it);
    `wrap` is put before the daemons' command lines (e.g. a UTS namespace of their own)."""

    def __init__(self, controls=None, queued=True, spawn="fork", adddomain=True, wrap=(), dns_env=None):
        self.spawn_env = spawn_env(spawn)
        self.top = tempfile.mkdtemp(prefix="qmailpy-e2e-")
        os.chmod(self.top, 0o755)
        self.home = os.path.join(self.top, "qmail")
        self.dns_env = dict(dns_env or {})
        self.wrap = list(wrap)
        self.procs = []            # everything started for this world, stopped by cleanup()
        r = subprocess.run([PYTHON, str(ROOT / "tools" / "install.py"), self.home, str(ROOT), PYTHON],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        for name, value in dict(CONTROLS, **(controls or {})).items():
            self.control(name, value)
        vdir = os.path.join(self.home, "vpopmail")
        os.makedirs(vdir)
        if IS_ROOT:                # qmail-users gives new directories the owner of vpopmaildir
            os.chown(vdir, MAIL_UID, MAIL_UID)
        if adddomain:
            self.users("adddomain", DOMAIN)
        self.queued = None
        if queued:
            self.start_queued()

    def start_queued(self):
        """bin/qmail-queued for this home (stopped by cleanup())."""
        from queuedsvc import Queued
        self.queued = Queued(self.home, self.env(), log=os.path.join(self.top, "queued.log")).start()
        self.procs.append(self.queued.proc)
        return self.queued

    # -- set-up
    def control(self, name, value):
        path = os.path.join(self.home, "control", name)
        if value is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        with open(path, "w") as f:
            f.write(value + "\n" if value else "")

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if k not in ("QMAILLOCAL", "QMAILREMOTE", "QMAILQUEUE")}
        env.update(QMAILHOME=self.home, **self.dns_env)
        env.update(self.spawn_env)
        env.update(extra)
        return env

    def users(self, *args):
        r = subprocess.run([str(BIN / "qmail-users"), *args], env=self.env(), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()

    def adduser(self, local, password="s3cret"):
        self.users("adduser", "%s@%s" % (local, DOMAIN), "-p", password)
        return self.maildir(local)

    def maildir(self, local):
        vdir = os.path.join(self.home, "control", "vpopmaildir")
        top = Path(self.home, open(vdir).read().strip()) if os.path.exists(vdir) else Path(self.home, "vpopmail")
        return top / "domains" / DOMAIN / local / "Maildir"

    def delivered(self, local):
        """{file name: bytes} of what qmail-local put into the mailbox's new/."""
        new = self.maildir(local) / "new"
        return {p.name: p.read_bytes() for p in sorted(new.iterdir())}

    def queue_files(self):
        q = Path(self.home) / "queue"
        return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file() and p.parts[len(q.parts)] != "lock")

    def mess(self, msgid):
        return Path(self.home, "queue", "mess", str(msgid % 23), str(msgid)).read_bytes()

    def birth(self, msgid):
        """mtime of info/<n>/<id> (qmail-send's birth of the message); None while it is missing."""
        try:
            return os.stat(os.path.join(self.home, "queue", "info", str(msgid % 23), str(msgid))).st_mtime
        except FileNotFoundError:
            return None

    # -- processes
    def send(self, user=None, **env):
        """bin/qmail-send; user=(uid, gid) runs it (and so every helper) as that user."""
        return Send(self, user=user, **env)

    def smtpd(self, host="127.0.0.1", port=None, local="localhost", argv=(), server="tcpserver", **env):
        """tcpserver (or `server`, e.g. bin/qmail-tcpserver) + bin/qmail-smtpd on host:port (default
        a free port); the port. argv: qmail-smtpd's arguments (a checkpassword program); env: more
        environment."""
        port = port or free_port(host)
        proc = subprocess.Popen(self.wrap + [server, "-q", "-H", "-R", "-l", local, host, str(port),
                                             str(BIN / "qmail-smtpd"), *argv], env=self.env(**env),
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_listening(host, port, proc, what="tcpserver")
        return port

    def cleanup(self):
        for proc in reversed(self.procs):
            if isinstance(proc, Send):
                if proc.proc.poll() is None:
                    proc.kill9()
                proc.wait_helpers()
            elif proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.top, ignore_errors=True)


class Send:
    """A running bin/qmail-send (real helpers); its log lines are time-stamped as they arrive."""

    def __init__(self, world, user=None, **env):
        self.world = world
        self.log = []                      # [(time.time(), line)]
        ids = dict(user=user[0], group=user[1], extra_groups=[]) if user else {}
        self.proc = subprocess.Popen(world.wrap + [str(BIN / "qmail-send"), "./Maildir/"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=world.env(**env), **ids)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.helpers = []
        world.procs.append(self)

    def _read(self):
        for raw in self.proc.stdout:
            self.log.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))
        self.proc.stdout.close()

    def lines(self):
        return [line for _, line in list(self.log)]

    def stamped(self, pattern):
        """[(time, match)] of the log lines matching pattern (re.search)."""
        rx = re.compile(pattern)
        out = []
        for t, line in list(self.log):
            m = rx.search(line)
            if m:
                out.append((t, m))
        return out

    def wait_for(self, predicate, timeout=30, what="condition"):
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            assert self.proc.poll() is None, "qmail-send exited:\n" + self.tail()
            assert time.monotonic() < deadline, "timeout waiting for %s; log tail:\n%s" % (what, self.tail())
            time.sleep(0.02)

    def wait_line(self, pattern, timeout=30, count=1):
        return self.wait_for(lambda: len(self.stamped(pattern)) >= count and self.stamped(pattern),
                             timeout, pattern)

    def tail(self, n=40):
        return "\n".join(self.lines()[-n:])

    def children(self):
        """pids of qmail-send's helpers (qmail-lspawn, -rspawn, -clean, -clean, -todo)."""
        pid = self.proc.pid
        got = [int(p) for p in Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()]
        self.helpers = sorted(set(self.helpers) | set(got))
        return got

    def stop(self, timeout=60):
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout)
        return code

    def kill9(self):
        """kill -9 qmail-send alone (its helpers see end of input and finish on their own)."""
        if self.proc.poll() is None:
            try:
                self.children()
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()

    def wait_helpers(self, timeout=60):
        """Until the helpers seen by children()/kill9() are gone (or zombies of a dead parent)."""
        def gone(pid):
            try:
                return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
            except OSError:
                return True
        wait_until(lambda: all(gone(p) for p in self.helpers), timeout, "qmail-send's helpers to exit")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def inject(world, message, sender, recipients, wrap=()):
    """bin/qmail-queue (the installed launcher), fd 0 the message and fd 1 the envelope; its exit code.
    wrap: put before its command line (e.g. nsenter into a mount namespace)."""
    from qmailpy.proto import qq
    m_r, m_w = os.pipe()
    e_r, e_w = os.pipe()
    p = subprocess.Popen([*wrap, os.path.join(world.home, "bin", "qmail-queue")], stdin=m_r, stdout=e_r,
                         env=world.env())
    os.close(m_r)
    os.close(e_r)
    with open(m_w, "wb") as f:
        f.write(message)
    with open(e_w, "wb") as f:
        f.write(qq.encode(sender, recipients))
    return exit_code(p)


def exit_code(proc, timeout=60):
    """proc's exit code from waitpid itself: Popen.wait() reports a child whose status someone
    else took (ECHILD) as exit 0, and a test must not take that for 'queued'."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            raise AssertionError("pid %d's exit status was taken by another waiter" % proc.pid) from None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode
        assert time.monotonic() < deadline, "pid %d still running after %s s" % (proc.pid, timeout)
        time.sleep(0.005)


def queue_report(world):
    """What to show when a message is not where a test expects it: the queue's files and
    qmail-queued's log."""
    log = Path(world.top, "queued.log")
    return "queue: %s\nqmail-queued: %s" % (world.queue_files(), log.read_text(errors="replace") if log.exists() else "-")


def queued_ids(world):
    """The ids in todo/: committed messages qmail-send has not taken yet. Not mess/: a
    connection to qmail-queued makes its mess file before the message arrives and removes
    it when the message never comes (the readiness probe of tests/queuedsvc.py does that),
    and the next message may get the same inode number, so a listing of mess/ taken before
    an insertion can already hold the new message's id."""
    return sorted(int(name) for name in os.listdir(os.path.join(world.home, "queue", "todo")))


# -- routes to remote domains

class Routes:
    """How remote domains reach the test's sinks.

    As root (the suite's normal case) a domain gets MX records in the test DNS
    server: `<domain> MX 10 mx.<domain>`, `mx.<domain> A 127.x.y.z` with the sink on
    127.x.y.z:25 (qmail-remote always uses port 25 for MX hosts). Otherwise
    (port 25 needs root) the domain gets a control/smtproutes line
    `<domain>:127.0.0.1:<port>`. `via_dns` says which.
    """

    def __init__(self, world, dns_server, sinks):
        self.world, self.dns, self.sinks = world, dns_server, sinks
        self.via_dns = IS_ROOT
        self.routes = []
        world.dns_env = dns_server.environ()

    def _loopback(self):
        from smtpsink import loopback_address
        return loopback_address()

    def mx(self, domain, ip):
        zones = dict(self.dns.zones)
        zones[domain] = {"MX": [(10, "mx." + domain)]}
        zones["mx." + domain] = {"A": [ip]}
        self.dns.zones = zones

    def route(self, domain, port):
        self.routes.append("%s:127.0.0.1:%d" % (domain, port))
        self.world.control("smtproutes", "\n".join(self.routes))

    def _dns(self, via):
        via = via or ("dns" if self.via_dns else "smtproutes")
        if via == "dns" and not IS_ROOT:
            pytest.skip("MX hosts are reached on port 25: binding it needs root")
        return via == "dns"

    def sink(self, domain, via=None):
        """A started aiosmtpd Sink receiving the domain's mail (via "dns", "smtproutes", None: the default)."""
        if self._dns(via):
            ip = self._loopback()
            sink = self.sinks(ip, 25)
            self.mx(domain, ip)
        else:
            sink = self.sinks()
            self.route(domain, sink.port)
        return sink

    def dead(self, domain, via=None):
        """Route the domain to an address where nothing listens (connection refused); the address."""
        if self._dns(via):
            ip = self._loopback()
            self.mx(domain, ip)
            return ip
        self.route(domain, free_port())
        return "127.0.0.1"


@pytest.fixture
def world(request):
    """A World; a module runs its tests in both spawn modes with
    `pytestmark = pytest.mark.parametrize("world", SPAWN_MODES, indirect=True)`."""
    w = World(spawn=getattr(request, "param", "fork"))
    try:
        yield w
    finally:
        w.cleanup()
