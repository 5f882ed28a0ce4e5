"""Helpers for the qmail-send tests (no tests here): a scratch home, injection, a running qmail-send.

The fake qmail-local runs as nobody (qmail-lspawn, as root, drops to the uid
from users/cdb), so the directory the fakes write to lives outside pytest's
0700 tmp_path, world-writable, and is removed afterwards.
"""
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import cdblib
import pytest

from qmailpy.proto import qq
from qmailpy.proto.date822 import date822
from qmailpy.queue import layout

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "bin"
FAKES = ROOT / "tests" / "fakes"
NOBODY = 65534
# as root qmail-lspawn runs qmail-local as the mailbox's uid; otherwise (single-user mode) as us
DELIVERY_UID = NOBODY if os.getuid() == 0 else os.getuid()
ROOT_ONLY = dict(condition=os.getuid() != 0, reason="needs root (uid changes, chown)")
CONTROLS = {"me": "mx.example.org", "locals": "localhost\nmx.example.org",
            "virtualdomains": "virt.example:virt.example", "concurrencylocal": "10",
            "concurrencyremote": "20"}


def write_users_cdb(home, entries, wild=b""):
    """users/cdb as qmail-newu writes it: {key: (user, uid, gid, home, dash, ext)}."""
    os.makedirs(os.path.join(home, "users"), exist_ok=True)
    with open(os.path.join(home, "users", "cdb"), "wb") as f:
        w = cdblib.Writer(f)
        for key, fields in entries.items():
            w.put(key, b"\0".join(x if isinstance(x, bytes) else str(x).encode() for x in fields))
        w.put(b"", wild)
        w.finalize()


class Scratch:
    """A qmail home with a queue, controls, users/cdb (everyone -> nobody) and a fake dir."""

    def __init__(self, tmp_path, controls=None):
        self.home = str(tmp_path / "qmail")
        layout.create_queue(self.home)
        os.makedirs(os.path.join(self.home, "control"), exist_ok=True)
        for name, value in dict(CONTROLS, **(controls or {})).items():
            self.control(name, value)
        self.fake = tempfile.mkdtemp(prefix="qmailpy-fake-")
        os.makedirs(os.path.join(self.fake, "mail"))
        for d in (self.fake, os.path.join(self.fake, "mail")):
            os.chmod(d, 0o777)
        write_users_cdb(self.home, {b"!": (b"nobody", NOBODY, NOBODY, self.fake.encode(), b"-", b"")})
        # qmail-lspawn's passwd lookups (qmail-getpw, the alias user) read this file, not the
        # host's users: a real qmail host has an `alias` user that would take undeliverable mail.
        self.passwd = os.path.join(self.fake, "passwd")
        open(self.passwd, "w").close()

    def control(self, name, value):
        path = os.path.join(self.home, "control", name)
        if value is None:
            os.unlink(path)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(value + "\n" if value else "")

    def env(self, **extra):
        env = dict(os.environ, QMAILHOME=self.home, FAKE_DIR=self.fake, QMAILPY_PASSWD=self.passwd,
                   QMAILLOCAL=str(FAKES / "qmail-local"), QMAILREMOTE=str(FAKES / "qmail-remote"))
        env.update(extra)
        return env

    def cleanup(self):
        """Stop every qmail-send a test left running (a failed assertion skips its stop()), then tidy."""
        for send in getattr(self, "sends", []):
            if send.proc.poll() is None:
                send.kill9()
        shutil.rmtree(self.fake, ignore_errors=True)

    def queue_files(self):
        q = Path(self.home) / "queue"
        return sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file() and p.parts[len(q.parts)] != "lock")

    def mail(self, prefix=""):
        """{name: bytes} of what the fakes delivered (names start with the recipient)."""
        d = Path(self.fake) / "mail"
        return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name.startswith(prefix) and p.name[0] != "."}

    def local_log(self):
        """[(time, uid, recipient, sender)] of the fake qmail-local's calls."""
        path = Path(self.fake) / "local.log"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            t, uid, rcpt, sender, _ = line.split(" ", 4)
            out.append((float(t), int(uid), rcpt, sender[1:-1]))
        return out


def inject(home, message, sender, recipients, env=None):
    """bin/qmail-queue with fd 0 = message, fd 1 = envelope; the message id.

    The id is read from todo/, so it is None if a running qmail-send took the
    message before we looked.
    """
    before = set(os.listdir(os.path.join(home, "queue", "todo")))
    m_r, m_w = os.pipe()
    e_r, e_w = os.pipe()
    p = subprocess.Popen([str(BIN / "qmail-queue")], stdin=m_r, stdout=e_r,
                         env=env or dict(os.environ, QMAILHOME=home))
    os.close(m_r)
    os.close(e_r)
    os.write(m_w, message)
    os.close(m_w)
    os.write(e_w, qq.encode(sender, recipients))
    os.close(e_w)
    assert p.wait(timeout=30) == 0
    new = set(os.listdir(os.path.join(home, "queue", "todo"))) - before
    return int(new.pop()) if len(new) == 1 else None


class Send:
    """A running bin/qmail-send whose stderr goes to a file."""

    def __init__(self, scratch, preexec_fn=None, **env):
        self.scratch = scratch
        self.logpath = os.path.join(scratch.fake, "send.log.%d" % time.monotonic_ns())
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen([str(BIN / "qmail-send")], stdin=subprocess.DEVNULL,
                                     stdout=self.logfile, stderr=self.logfile, env=scratch.env(**env),
                                     preexec_fn=preexec_fn)
        scratch.sends = getattr(scratch, "sends", []) + [self]

    def lines(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace").splitlines()

    def wait_for(self, predicate, timeout=30, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            assert self.proc.poll() is None, "qmail-send exited:\n" + "\n".join(self.lines()[-30:])
            time.sleep(0.05)
        raise AssertionError("timeout waiting for %s; log tail:\n%s" % (what, "\n".join(self.lines()[-30:])))

    def wait_line(self, pattern, timeout=30, count=1):
        rx = re.compile(pattern)
        return self.wait_for(lambda: len([ln for ln in self.lines() if rx.search(ln)]) >= count,
                             timeout, pattern)

    def children(self):
        """pids of qmail-send's helper processes (qmail-lspawn, -rspawn, -clean, -todo)."""
        return [int(p) for p in Path("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).read_text().split()]

    def stop(self, timeout=30):
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.logfile.close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.logfile.close()


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def dates(t0, t1):
    """Every date822 string between two times (for comparing Date and Received lines)."""
    return {date822(t) for t in range(int(t0), int(t1) + 2)}


class SpawnClient:
    """Talks to a bin/qmail-lspawn or bin/qmail-rspawn as qmail-send does."""

    def __init__(self, name, env, args=(), preexec_fn=None, argv=None, stderr=None):
        """argv: the whole command line, in place of bin/NAME ARGS...; stderr: a file for its log."""
        from qmailpy.proto import spawnwire
        self.wire = spawnwire
        self.proc = subprocess.Popen(argv or [str(BIN / name), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, preexec_fn=preexec_fn, stderr=stderr)
        self.decoder = spawnwire.ReportDecoder()
        self.pending = []

    def send(self, delnum, messid, sender, recip):
        self.proc.stdin.write(self.wire.encode_command(delnum, messid, sender, recip))
        self.proc.stdin.flush()

    def reports(self, n, timeout=20):
        """The next n reports as {delnum: kind + text}."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while len(self.pending) < n:
            assert time.monotonic() < deadline, "timeout: %r" % self.pending
            data = os.read(fd, 65536)
            assert data, "spawn closed its output: %r" % self.pending
            self.pending += self.decoder.feed(data)
        got, self.pending = self.pending[:n], self.pending[n:]
        return {r.delnum: r.kind + r.text for r in got}

    def one(self, messid, sender, recip, delnum=0):
        self.send(delnum, messid, sender, recip)
        return self.reports(1)[delnum]

    def close(self):
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        code = self.proc.wait(timeout=20)
        self.proc.stdout.close()
        return code, rest


def queue_message(home, message=b"Subject: x\n\nbody\n", sender=b"alice@localhost", recips=(b"joe@localhost",)):
    """Queue in-process (qmail-queue's own code); the messid qmail-send would send: '<split>/<id>'."""
    from qmailpy.queue.enqueue import enqueue
    msgid = enqueue(home, message, qq.encode(sender, list(recips)), os.getuid(), os.getpid(), time.time())
    return "%d/%d" % (msgid % 23, msgid)


@pytest.fixture
def scratch(tmp_path):
    """A Scratch home with the default controls, removed afterwards (import it as a fixture)."""
    s = Scratch(tmp_path)
    yield s
    s.cleanup()


@contextlib.contextmanager
def no_hang(seconds, what):
    """AssertionError(what) if the body still runs after `seconds` (SIGALRM, main thread)."""
    def stuck(signum, frame):
        raise AssertionError(what)
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
