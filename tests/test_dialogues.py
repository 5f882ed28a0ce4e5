"""Every recorded dialogue, in-process against Session, through tcpserver + bin/qmail-smtpd, and
through qmail-tcpserver (qmail-smtpd preloaded, its sessions run by pre-forked workers)."""
import glob
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, Home, program
from dialogue import Dialogue, check_lines, check_logs, check_queued
from dnsserver import DNSServer
from qmailpy.ctl.cdbmap import open_cdb, tcprules_lookup
from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.proto import replies as R
from qmailpy.proto.qq import decode
from qmailpy.queue.layout import create_queue
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.driver import Conversation, refuse_controls

FILES = sorted(glob.glob(os.path.join(ROOT, "tests", "dialogues", "*.txt")))
TCP_ENV = {"TCPREMOTEIP": "127.0.0.1", "TCPLOCALIP": "127.0.0.1", "TCPLOCALHOST": "localhost",
           "PROTO": "TCP", "TCPLOCALPORT": "25", "TCPREMOTEPORT": "40000"}


def setup_home(tmp_path, d):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    for name, text in d.controls.items():
        home.control(name, text)
    create_queue(home.root)
    if d.users:
        make_users(home, d.users)
    cdb = None
    rules = d.tcprules
    if d.client:
        assert not rules, "%s: with @tcprules, set TCPREMOTEIP in the rule instead of @client" % d.name
        rules = [d.client_rule()]
    if rules:
        cdb = str(tmp_path / "tcp.cdb")
        rules = "".join(r + "\n" for r in rules).encode()
        subprocess.run(["tcprules", cdb, cdb + ".tmp"], input=rules, check=True)
    return home, cdb


def make_users(home, commands):
    """Run the @domain/@user/@poprelay directives through the users admin API."""
    from qmailpy.users import admin, open_users
    users = open_users(home.root, Controls(home.root), create=True)
    for cmd, args in commands:
        if cmd == "domain":
            admin.add_domain(users, args[0])
        elif cmd == "user":
            admin.add_user(users, args[0], args[1], clear="clear" in args[2:])
        elif cmd == "poprelay":
            users.record_relay(args[0], time.time() - int(args[1]) if len(args) > 1 else time.time())
    users.close()


# -- in-process

class FakeJob:
    def __init__(self, store, qp):
        self.store, self.qp, self.data = store, qp, bytearray()

    def write(self, data):
        self.data += data

    def finish(self, sender, recipients):
        self.store.append((["F" + sender] + ["T" + r for r in recipients], bytes(self.data)))
        return 0

    def abort(self):
        pass


class FakeServices:
    """Services for in-process sessions: fake queue and clock, the home's real users database."""
    pid = 4242

    def __init__(self, controls=None, checkpassword=False):
        self.queued, self.logged, self.slept = [], [], []
        self.controls, self.checkpassword = controls, checkpassword
        self._users = None
        self.attempts = 0           # AUTH password checks counted (authfaillimit), this fake's own

    def users(self):
        """qmail-smtpd's own choice (qmailpy.users.service.open_answers): the users service where
        the home has its socket, else the database itself."""
        if self._users is None:
            from qmailpy.users.service import open_answers
            self._users = open_answers(self.controls.home, self.controls)
        return self._users

    def log(self, event, **fields):
        self.logged.append((event, fields))

    def now(self):
        return time.time()        # the relay table (POP-before-SMTP) is written with real times

    def sleep(self, seconds):
        self.slept.append(seconds)     # the tarpit and AUTH failures: recorded, never slept in-process

    def start_queue(self, spf=None, auth=None):
        return FakeJob(self.queued, 999)

    def auth_attempt(self, op, ip, limit, window, shared=False):
        """authfaillimit as qmailpy.smtpd.authlimit counts, for this one session (no clock)."""
        if op == "begin":
            if self.attempts >= limit:
                return None
            self.attempts += 1
            return self.attempts
        self.attempts -= 1
        return None

    def authenticate(self, mech, user, secret, challenge):
        if self.checkpassword:          # what tests/checkpassword.py accepts
            return user == "good@example.org" and secret == "secret"
        return self.users().authenticate(mech, user, secret, challenge)


def log_line(event, fields):
    """A FakeServices log entry as qmail-smtpd's Logger writes it (without "qmail-smtpd: PID ")."""
    from qmailpy.log import fields as format_fields
    return format_fields(event, fields.items())


def dns_for(d):
    """A started test DNS server with the dialogue's zones and the environment pointing at it, or (None, {})."""
    if not d.dns:
        return None, {}
    server = DNSServer(dict(d.dns)).start()
    env = dict(server.environ())
    if "DNSTIMEOUT" not in d.env:
        env["DNSTIMEOUT"] = "0.3"
    return server, env


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_in_process(tmp_path, path):
    d = Dialogue(path)
    server, dns_env = dns_for(d)
    try:
        run_in_process(tmp_path, d, dns_env)
    finally:
        if server is not None:
            server.stop()


def run_in_process(tmp_path, d, dns_env):
    home, cdb = setup_home(tmp_path, d)
    env = dict(TCP_ENV, **dns_env)
    env.update(d.env)
    if cdb:
        rule = tcprules_lookup(open_cdb(cdb), "127.0.0.1")
        env.update(rule[2] if rule else {})
    controls = Controls(home.root, env)
    services = FakeServices(controls, d.checkpassword)
    try:
        session = Conversation(SmtpdConfig(controls, env), services)
    except ControlError as e:           # what serve() answers instead of the greeting
        assert d.steps == [(b"", [R.NO_CONTROLS])] and d.expect_closed, d.name
        check_lines([refuse_controls(services.log, e).decode().rstrip("\r\n")], d.steps[0][1], d.name)
        check_queued(d, services.queued)
        check_logs([log_line(e, f) for e, f in services.logged], d.logs, d.name + " log")
        return
    greeting = session.start()
    steps = [(b"", d.steps[0][1])] if not d.steps[0][0] else []
    first = True
    for data, expected in steps + [s for s in d.steps if s[0]]:
        out = (greeting if first else b"") + (session.feed(data) if data else b"")
        first = False
        check_lines(out.decode("utf-8", "surrogateescape").split("\r\n")[:-1], expected,
                    "%s after %r" % (d.name, data[:60]))
    if d.expect_closed:
        assert session.closed
    check_queued(d, services.queued)
    check_logs([log_line(e, f) for e, f in services.logged], d.logs, d.name + " log")


# -- through tcpserver and the real programs

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_lines(sock, count, timeout=10):
    """Exactly `count` CRLF lines (fewer only if the server closes)."""
    buf, lines = b"", []
    deadline = time.time() + timeout
    while len(lines) < count:
        while b"\r\n" in buf and len(lines) < count:
            line, buf = buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "surrogateescape"))
        if len(lines) >= count:
            break
        sock.settimeout(max(0.1, deadline - time.time()))
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return lines, buf


def queued_messages(home):
    """(envelope records, message after qmail-queue's Received line) of each todo entry, oldest first."""
    todo = os.path.join(home.root, "queue", "todo")
    out = []
    by_age = lambda name: (os.stat(os.path.join(todo, name)).st_mtime_ns, int(name))   # noqa: E731
    for name in sorted(os.listdir(todo), key=by_age):
        with open(os.path.join(home.root, "queue", "intd", name), "rb") as f:
            records = f.read().split(b"\0")
        env = [r.decode("utf-8", "surrogateescape") for r in records if r[:1] in (b"F", b"T")]
        mess = os.path.join(home.root, "queue", "mess", str(int(name) % 23), name)
        with open(mess, "rb") as f:
            body = f.read()
        assert body.startswith(b"Received: (qmail ")
        out.append((env, body.split(b"\n", 1)[1]))
    return out


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_through_tcpserver(tmp_path, path):
    d = Dialogue(path)
    server, dns_env = dns_for(d)
    try:
        run_through_tcpserver(tmp_path, d, dns_env)
    finally:
        if server is not None:
            server.stop()


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_through_qmail_tcpserver(tmp_path, path):
    """The same dialogue, the same queue and the same log lines with qmail-tcpserver in front."""
    d = Dialogue(path)
    server, dns_env = dns_for(d)
    try:
        run_through_tcpserver(tmp_path, d, dns_env, front=program("qmail-tcpserver"))
    finally:
        if server is not None:
            server.stop()


USERS_FILES = [p for p in FILES if Dialogue(p).users]


@pytest.mark.parametrize("path", USERS_FILES, ids=os.path.basename)
def test_through_the_users_service(tmp_path, path):
    """The dialogues that meet the users database (AUTH, chkuser, POP-before-SMTP), with
    qmail-smtpd asking qmail-usersd as in production: the same replies, queue and log."""
    d = Dialogue(path)
    server, dns_env = dns_for(d)
    try:
        log = run_through_tcpserver(tmp_path, d, dns_env, usersd=True)
    finally:
        if server is not None:
            server.stop()
    passwords = [args[1] for cmd, args in d.users if cmd == "user"]
    assert passwords == [] or not any(pw in log for pw in passwords), log     # none reaches the log


def run_through_tcpserver(tmp_path, d, dns_env, usersd=False, front="tcpserver"):
    """The dialogue through tcpserver (or `front`, qmail-tcpserver) + bin/qmail-smtpd; with
    usersd, qmail-usersd answers about the users (its log is returned)."""
    home, cdb = setup_home(tmp_path, d)
    service = None
    if usersd:
        from usersd import UsersService
        service = UsersService(home.root, home.env(**dns_env)).start()
    port = free_port()
    env = home.env(QMAILQUEUE=program("qmail-queue"), AUTHFAILDELAY="0", **dns_env)
    env.update(d.env)
    cmd = [front, "-q", "-H", "-R", "-l", "localhost"]
    if cdb:
        cmd += ["-x", cdb]
    cmd += ["127.0.0.1", str(port), program("qmail-smtpd")]
    if d.checkpassword:
        cmd += [sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.time() < deadline, "tcpserver did not start"
                time.sleep(0.05)
        with sock:
            steps = d.steps
            if not steps[0][0]:
                got, rest = read_lines(sock, len(steps[0][1]))
                check_lines(got, steps[0][1], d.name + " greeting")
                steps = steps[1:]
            for data, expected in steps:
                sock.sendall(data)
                got, rest = read_lines(sock, len(expected))
                check_lines(got, expected, "%s after %r" % (d.name, data[:60]))
                assert rest == b""
            if d.expect_closed:
                sock.settimeout(10)
                assert sock.recv(100) == b""
        time.sleep(0.05)
    finally:
        server.terminate()
        _, err = server.communicate()
        if service is not None:
            service.stop()
    check_queued(d, queued_messages(home))
    logged = [line.split(" ", 2)[2] for line in err.decode("utf-8", "replace").splitlines()
              if line.startswith("qmail-smtpd: ") and line.count(" ") >= 2]
    check_logs(logged, d.logs, d.name + " log")
    return service.log() if service is not None else None
