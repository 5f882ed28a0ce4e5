"""SRS end to end (issue 9): a forward leaves with an SRS0 sender, and its bounce finds the way home.

Only real programs: tcpserver + bin/qmail-smtpd take the mail, and bin/qmail-send delivers
it with the real qmail-lspawn/qmail-local and qmail-rspawn/qmail-remote. Two aiosmtpd sinks
on 127.0.0.1 stand in for the outside world: control/smtproutes sends remote.example to one
and sender.example to the other.

1. alice@sender.example writes to bob@example.org, a users-database mailbox (bin/qmail-users)
   whose `.qmail` says `&friend@remote.example`. qmail-local forwards it; qmail-send gives
   the remote delivery the sender SRS0=HHHH=TT=sender.example=alice@srs.example.org, signed
   with the key bin/setsrssecret made, and qmail-remote hands it to the remote sink.
2. The remote side bounces (MAIL FROM:<>) to that SRS address through qmail-smtpd and gets
   250 at RCPT. qmail-todo turns the address back into alice@sender.example, and
   qmail-remote hands the bounce to the sender's sink.
3. A forged SRS address gets 550 at RCPT. An expired one (signed with the current key
   40 days ago) is accepted, then dropped by qmail-send: a log line, no delivery, no bounce.

The daemons run in single-user mode (QMAILPY_SINGLEUSER=1), qmail-queued among them. As
root, qmail-lspawn still runs qmail-local as the mailbox owner (nobody) with no other group,
whose forward reaches the queue through qmail-queued's socket (as on an installed server).
That is why the qmail home is not under pytest's 0700 tmp_path.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from qmailpy.queue import layout
from qmailpy.srs import codec
from queuedsvc import Queued
from smtpsink import Sink
from test_dialogues import free_port
from test_send_support import BIN, NOBODY, ROOT_ONLY, Send

# these tests may make qmail's system accounts (install as root): removed afterwards
pytestmark = pytest.mark.usefixtures("host_accounts")

SRS_DOMAIN = "srs.example.org"
ALICE = "alice@sender.example"
SRS0_RX = re.compile(r"SRS0=[A-Za-z0-9+/]{4}=[A-Z2-7]{2}=sender\.example=alice@srs\.example\.org")
MESSAGE = b"From: alice@sender.example\nTo: bob@example.org\nSubject: hi\n\nhello bob\n"
BOUNCE = (b"From: MAILER-DAEMON@remote.example\nSubject: failure notice\n\n"
          b"Sorry, friend@remote.example has no mailbox here (#5.1.1).\n")


def wait_until(predicate, what, timeout=15, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timeout waiting for %s\n%s" % (what, log()))
        time.sleep(0.05)


class Home:
    """A qmail home in a 0755 temp dir: a queue, bin/ -> the checkout's launchers, control/."""

    def __init__(self, **extra_env):
        self.top = tempfile.mkdtemp(prefix="qmailpy-e2e-srs-")
        os.chmod(self.top, 0o755)
        self.fake = self.top                      # Send() keeps its log here
        self.home = os.path.join(self.top, "qmail")
        self.extra_env = extra_env
        layout.create_queue(self.home)
        os.chmod(self.home, 0o755)
        os.makedirs(os.path.join(self.home, "control"))
        # qmail-smtpd, forwards and bounces run $QMAILHOME/bin/qmail-queue, as in an installed home
        os.symlink(BIN, os.path.join(self.home, "bin"))

    def control(self, name, value):
        path = os.path.join(self.home, "control", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(value)

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("QMAILLOCAL", "QMAILREMOTE", "QMAILQUEUE", "QMAILPY_SINGLEUSER")}
        env.update(QMAILHOME=self.home, **self.extra_env)
        env.update(extra)
        return env

    def run(self, name, *args, **kw):
        r = subprocess.run([str(BIN / name), *args], env=self.env(), capture_output=True, timeout=30, **kw)
        assert r.returncode == 0, (name, args, r.stdout, r.stderr)
        return r

    def secrets(self):
        """The keys of control/srs/srs_secrets, newest (the signing one) first."""
        with open(os.path.join(self.home, "control", "srs", "srs_secrets")) as f:
            return f.read().split()

    def queue_files(self):
        q = os.path.join(self.home, "queue")
        out = []
        for root, _, files in os.walk(q):
            rel = os.path.relpath(root, q)
            if rel.split(os.sep)[0] != "lock":
                out += [os.path.join(rel, name) for name in files]
        return sorted(out)


class SmtpServer:
    """tcpserver + bin/qmail-smtpd on a free 127.0.0.1 port; the smtpd log (stderr) goes to a file."""

    def __init__(self, home):
        self.port = free_port()
        self.logpath = os.path.join(home.top, "smtpd.log")
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            ["tcpserver", "-q", "-H", "-R", "-l", "localhost", "127.0.0.1", str(self.port),
             str(BIN / "qmail-smtpd")],
            stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=self.logfile, env=home.env())
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return
            except ConnectionRefusedError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "tcpserver did not start"
                time.sleep(0.05)

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logfile.close()


def smtp(port, commands, data=None):
    """One SMTP dialogue: the last line of the greeting and of each reply (DATA sends `data`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as f:
        def reply():
            while True:
                line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
                if line[3:4] != "-":
                    return line
        got = [reply()]
        for command in commands + ["QUIT"]:
            sock.sendall(command.encode() + b"\r\n")
            got.append(reply())
            if command == "DATA" and got[-1].startswith("354"):
                sock.sendall(data.replace(b"\n", b"\r\n") + b".\r\n")
                got.append(reply())
    return got


class World:
    """Our server (qmail home, qmail-smtpd, qmail-send) and the two sinks outside."""

    def __init__(self, single_user=True):
        self.home = Home(**({"QMAILPY_SINGLEUSER": "1"} if single_user else {}))
        self.remote = self.origin = self.smtpd = self.send = self.queued = None
        try:
            self.remote = Sink().start()          # remote.example: where bob's mail is forwarded
            self.origin = Sink().start()          # sender.example: where alice's bounces go
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self):
        h = self.home
        h.control("me", "mx.example.org\n")
        h.control("rcpthosts", "example.org\n%s\n" % SRS_DOMAIN)
        h.control("locals", "localhost\nmx.example.org\n")
        h.control("virtualdomains", "example.org:example.org\n")
        h.control("vpopmaildir", os.path.join(h.top, "vpopmail") + "\n")
        h.control("srs/srs_domain", SRS_DOMAIN + "\n")
        h.control("smtproutes", "remote.example:127.0.0.1:%d\nsender.example:127.0.0.1:%d\n"
                  % (self.remote.port, self.origin.port))
        h.run("setsrssecret")
        h.run("qmail-users", "adddomain", "example.org")
        h.run("qmail-users", "adduser", "bob@example.org", "-p", "secret")
        self.box = os.path.join(h.top, "vpopmail", "domains", "example.org", "bob")
        with open(os.path.join(self.box, ".qmail"), "w") as f:
            f.write("&friend@remote.example\n")
        os.chmod(os.path.join(self.box, ".qmail"), 0o600)
        if os.getuid() == 0:
            # the mailbox owner is whoever owns the mailbox directory; never root
            for root, dirs, files in os.walk(os.path.join(h.top, "vpopmail")):
                for name in [root] + [os.path.join(root, x) for x in dirs + files]:
                    os.chown(name, NOBODY, NOBODY)

    def start(self):
        self.queued = Queued(self.home.home, self.home.env(), log=os.path.join(self.home.top, "queued.log")).start()
        self.smtpd = SmtpServer(self.home)
        self.send = Send(self.home)
        return self

    def logs(self):
        return "qmail-send:\n%s\nqmail-smtpd:\n%s" % (
            "\n".join(self.send.lines()) if self.send else "", self.smtpd.log() if self.smtpd else "")

    def send_log(self):
        return self.send.lines()

    def wait_line(self, pattern, timeout=15):
        rx = re.compile(pattern)
        return wait_until(lambda: [m for m in map(rx.search, self.send.lines()) if m], pattern, timeout, self.logs)

    def msgid_of(self, reply):
        """qmail-send's message id for qmail-smtpd's `250 ok <time> qp <pid>` reply."""
        qp = reply.split()[-1]
        [m] = self.wait_line(r"^info msg (\d+): bytes \d+ from <[^>]*> qp %s " % qp)
        return int(m.group(1))

    def close(self):
        try:
            if self.send is not None:
                try:
                    assert self.send.stop(timeout=20) == 0, "qmail-send exit code"
                except subprocess.TimeoutExpired:
                    self.send.kill9()
                    raise
        finally:
            if self.smtpd is not None:
                self.smtpd.stop()
            if self.queued is not None:
                self.queued.stop()
            for sink in (self.remote, self.origin):
                if sink is not None:
                    sink.stop()
            shutil.rmtree(self.home.top, ignore_errors=True)


@pytest.fixture
def worlds():
    made = []

    def make(**kw):
        made.append(World(**kw))
        return made[-1]
    yield make
    failures = []
    for world in made:
        try:
            world.close()
        except Exception as e:        # stop the others anyway
            failures.append(e)
    if failures:
        raise failures[0]


@pytest.fixture
def world(worlds):
    return worlds().start()


def test_forward_leaves_with_srs0_and_its_bounce_comes_back_to_alice(world):
    t0 = time.time()
    # 1. swaks -> qmail-smtpd -> qmail-queue; qmail-send -> qmail-local (forward) -> qmail-remote -> sink
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % world.smtpd.port, "--helo", "sender.example",
                        "--from", ALICE, "--to", "bob@example.org", "--data", MESSAGE.decode().rstrip("\n")],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert re.search(rb"<-  250 ok \d+ qp \d+", r.stdout), r.stdout.decode()
    wait_until(lambda: world.remote.messages, "the forward at remote.example", log=world.logs)
    [fwd] = world.remote.messages
    t1 = time.time()
    assert SRS0_RX.fullmatch(fwd.mail_from), fwd.mail_from
    assert fwd.mail_from.split("=")[2] in (codec.timestamp(t0), codec.timestamp(t1))
    # signed with the newest key setsrssecret made, and it stands for alice
    assert codec.reverse(fwd.mail_from, world.home.secrets()[:1], t1) == ALICE
    assert fwd.rcpt_tos == ["friend@remote.example"]
    assert b"\r\nDelivered-To: example.org-bob@example.org\r\n" in fwd.data
    assert fwd.data.endswith(b"\r\n\r\nhello bob\r\n")
    # qmail-local's report reaches qmail-send's log after its forward may already be at the sink
    wait_until(lambda: any(re.fullmatch(r"delivery \d+: success: did_0\+1\+0/qp_\d+/", ln)
                           for ln in world.send_log()), "the forward's delivery line", log=world.logs)
    wait_until(lambda: world.home.queue_files() == [], "an empty queue", log=world.logs)
    assert world.origin.messages == []

    # 2. remote.example bounces to the SRS address; it goes straight back to alice's own server
    got = smtp(world.smtpd.port, ["EHLO remote.example", "MAIL FROM:<>", "RCPT TO:<%s>" % fwd.mail_from,
                                  "DATA"], BOUNCE)
    assert got[2:5] == ["250 ok", "250 ok", "354 go ahead"], got
    assert re.fullmatch(r"250 ok \d+ qp \d+", got[5]), got
    assert "srs status=ok" in world.smtpd.log()
    msgid = world.msgid_of(got[5])
    wait_until(lambda: world.origin.messages, "the bounce at sender.example", log=world.logs)
    [bounce] = world.origin.messages
    assert bounce.mail_from in ("", "<>")
    assert bounce.rcpt_tos == [ALICE]
    assert bounce.data.endswith(BOUNCE.replace(b"\n", b"\r\n"))
    lines = world.send_log()
    assert "srs msg %d: <%s> is <%s>" % (msgid, fwd.mail_from, ALICE) in lines
    assert any(re.fullmatch(r"starting delivery \d+: msg %d to remote %s" % (msgid, re.escape(ALICE)), ln)
               for ln in lines), lines
    world.wait_line(r"^end msg %d$" % msgid)
    assert len(world.remote.messages) == 1                 # nothing more went to remote.example
    assert not any(ln.startswith("bounce msg") for ln in world.send_log())
    # qmail-send logs "end msg" before it unlinks info/ and has qmail-clean remove the rest
    wait_until(lambda: world.home.queue_files() == [], "an empty queue", log=world.logs)


def test_forged_srs_address_is_refused_and_expired_one_dropped(world):
    now = time.time()
    forged = codec.forward(ALICE, SRS_DOMAIN, ["not-one-of-our-keys"], now)
    got = smtp(world.smtpd.port, ["EHLO remote.example", "MAIL FROM:<>", "RCPT TO:<%s>" % forged])
    assert got[3] == "550 sorry, this SRS bounce address is invalid or forged (#5.1.1)", got
    assert "srs status=bad-hash" in world.smtpd.log()

    expired = codec.forward(ALICE, SRS_DOMAIN, world.home.secrets(), now - 40 * 86400)
    assert codec.reverse(expired, world.home.secrets(), now, max_age_days=60) == ALICE   # our own signature
    got = smtp(world.smtpd.port, ["EHLO remote.example", "MAIL FROM:<>", "RCPT TO:<%s>" % expired, "DATA"],
               BOUNCE)
    assert got[3:5] == ["250 ok", "354 go ahead"], got
    assert re.fullmatch(r"250 ok \d+ qp \d+", got[5]), got
    assert "srs status=expired" in world.smtpd.log()
    msgid = world.msgid_of(got[5])
    world.wait_line(r"^end msg %d$" % msgid)
    lines = world.send_log()
    assert "srs msg %d: expired bounce address <%s> dropped" % (msgid, expired) in lines
    assert not any(ln.startswith("starting delivery") for ln in lines), lines
    assert not any(ln.startswith("bounce msg") for ln in lines), lines
    assert [ln for ln in lines if ln.startswith("new msg")] == ["new msg %d" % msgid]   # the forged one never queued
    time.sleep(0.3)
    assert world.remote.messages == [] and world.origin.messages == []
    assert world.home.queue_files() == []


# -- with privilege separation (root): qmail-local runs as the mailbox owner
