"""clamd and spamd for bench/run.py, started offline as tests/test_filters.py starts them.

clamd runs in the foreground with a config from qmailpy.filters.runscripts
and a one-signature database (EICAR as .ndb), so it loads in a second and
never asks the network for updates. spamd runs with -L (no network tests),
--max-children=2 and, instead of the suite's SQL preferences, local ones:
local.cf in its own --siteconfigpath and no per-user files (-x). Each listens
on a UNIX socket in a directory of the bench's temporary tree and is stopped
by its pid. A daemon that is not installed or does not come up raises
Unavailable, whose text the bench prints as "n/a (reason)" in its rows.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
READY_LIMIT = {"clamd": 60, "spamd": 180}     # seconds; spamd compiles its rules at start


class Unavailable(Exception):
    """Why a daemon cannot be used here (a short reason for the table)."""


def _ask(path, data, stop=None):
    """Send data on the UNIX socket at path; everything read until EOF or `stop`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            got = s.recv(4096)
            out += got
            if not got or (stop and stop in out):
                return out


class Daemon:
    """One started daemon: its socket, its log, its process (stopped by pid)."""

    def __init__(self, name, argv, sock, log, probe):
        self.name, self.sock, self.log, self.probe = name, sock, log, probe
        self.argv = argv
        self.started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.ready_after = None

    def ready(self):
        """True once it answers; Unavailable if it died or took too long."""
        if self.ready_after is not None:
            return True
        if self.proc.poll() is not None:
            raise Unavailable("%s exited with %s at start: %s" % (self.name, self.proc.returncode, self.tail()))
        try:
            if self.probe():
                self.ready_after = time.monotonic() - self.started
                return True
        except OSError:
            pass
        if time.monotonic() - self.started > READY_LIMIT[self.name]:
            raise Unavailable("%s not ready after %d s" % (self.name, READY_LIMIT[self.name]))
        return False

    def tail(self):
        try:
            with open(self.log, "rb") as f:
                text = f.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return text[-1][:200] if text else ""

    def stop(self, grace=15):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_clamd(root):
    """clamd with a tiny EICAR database under root (a directory it may create things in)."""
    from qmailpy.filters import runscripts
    clamd = shutil.which("clamd") or shutil.which("clamd", path="/usr/sbin")
    if not clamd:
        raise Unavailable("clamd not installed (Debian clamav-daemon)")
    os.makedirs(root)
    db = os.path.join(root, "db")
    os.mkdir(db)
    with open(os.path.join(db, "qmailpy-bench.ndb"), "w") as f:
        f.write("Qmailpy-Bench-EICAR:0:*:%s\n" % EICAR.hex())
    sock = os.path.join(root, "clamd.sock")
    conf = os.path.join(root, "clamd.conf")
    with open(conf, "w") as f:
        f.write(runscripts.clamd_config(sock, database_dir=db, extra=[
            "TemporaryDirectory %s" % root, "SelfCheck 3600"]))
    d = Daemon("clamd", runscripts.clamd_command(conf, clamd), sock, os.path.join(root, "clamd.log"),
               lambda: _ask(sock, b"zPING\0", b"\0") == b"PONG\0")
    d.conf = conf
    return d


def start_spamd(root, user="nobody"):
    """spamd -L with local preferences only, its children running as `user` (when root)."""
    from qmailpy.filters import runscripts
    spamd = shutil.which("spamd") or shutil.which("spamd", path="/usr/sbin")
    if not spamd:
        raise Unavailable("spamd not installed (Debian spamd)")
    os.makedirs(root)
    os.chmod(root, 0o755)                   # its children run as `user`
    with open(os.path.join(root, "init.pre"), "w") as f:
        f.write("loadplugin Mail::SpamAssassin::Plugin::Check\n")
    with open(os.path.join(root, "local.cf"), "w") as f:
        f.write("report_safe 0\nrequired_score 5\n")
    sock = os.path.join(root, "spamd.sock")
    argv = runscripts.spamd_command(sock, children=2, sanetcheck=0, user=user if os.geteuid() == 0 else None,
                                    siteconfigpath=root, sql=False, spamd=spamd,
                                    extra=["-x", "--min-children=1"])
    return Daemon("spamd", argv, sock, os.path.join(root, "spamd.log"),
                  lambda: b" 0 PONG" in _ask(sock, b"PING SPAMC/1.5\r\n\r\n"))


def start_filters(root):
    """{"clamd": Daemon or Unavailable, "spamd": ...}: both started at once, each waited for."""
    got = {}
    for name, start in (("clamd", start_clamd), ("spamd", start_spamd)):
        try:
            got[name] = start(os.path.join(root, name))
        except Unavailable as e:
            got[name] = e
        except OSError as e:
            got[name] = Unavailable("%s cannot start: %s" % (name, e))
    pending = [d for d in got.values() if isinstance(d, Daemon)]
    while pending:
        for d in list(pending):
            try:
                if d.ready():
                    pending.remove(d)
            except Unavailable as e:
                d.stop()
                got[d.name] = e
                pending.remove(d)
        time.sleep(0.05)
    return got
