"""An admin's first hour (issue 24), run as docs/operations.md "The first hour" tells it.

The commands are read from that section's sh block and run one by one, as root, with
/var/qmail replaced by a temporary directory, the ports by free ones on 127.0.0.1
(and the install options that say so), and the DNS server by a dead local port; between
them the test checks what the comments promise: a clean --check, joe's message in his
Maildir and over POP3 from the real Dovecot, a domain added while running delivered to
after svc -h, postmaster@ of both domains and a double bounce in alias/Maildir/, and
svscan then every supervise stopped with nothing left running. About 15 s.

Users and groups the install had to create are removed afterwards (test_production's
fixture); the machine's own accounts are never touched.
"""
import os
import signal
import subprocess
import time

from conftest import ROOT
from qmailpy.install import accounts
from test_dialogues import free_port
from test_production import ENV, port_open, production_home, proc_cmdline, pytestmark  # noqa: F401
DOCS = os.path.join(ROOT, "docs", "operations.md")
HEADING = "## The first hour"


def doc_commands():
    """The command lines of the first sh block under HEADING (comments and blank lines dropped)."""
    with open(DOCS) as f:
        text = f.read()
    section = text[text.index(HEADING):]
    block = section[section.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class Admin:
    """Runs the documented commands with the test's substitutions; the home under test."""

    def __init__(self, top):
        self.home = os.path.join(top, "qmail")
        self.top = top
        self.smtp, self.pop3 = free_port(), free_port()
        flags = ("--smtp-listen 127.0.0.1 --smtp-port %d --pop3-listen 127.0.0.1 --pop3-port %d "
                 "'--tcpserver-flags=-v -R -H -l mx.example.com'" % (self.smtp, self.pop3))
        self.subs = [("/var/qmail", self.home), ("--me mx.example.com", "--me mx.example.com " + flags),
                     ("127.0.0.1:25 ", "127.0.0.1:%d " % self.smtp), ("127.0.0.1:110/", "127.0.0.1:%d/" % self.pop3),
                     ("echo 127.0.0.1 >", "echo 127.0.0.1:1 >")]
        self.n = 0

    def render(self, line):
        for old, new in self.subs:
            line = line.replace(old, new)
        return line

    def run(self, line):
        """sh -c LINE from the checkout; (exit code, output). Output goes through a file:
        svscan, started in the background, keeps what it inherits open."""
        self.n += 1
        out = os.path.join(self.top, "step%02d.out" % self.n)
        with open(out, "wb") as f:
            code = subprocess.run(["sh", "-c", self.render(line)], cwd=ROOT, env=ENV, stdin=subprocess.DEVNULL,
                                  stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
        with open(out, "rb") as f:
            return code, f.read().decode("utf-8", "replace")

    def path(self, *parts):
        return os.path.join(self.home, *parts)

    def log(self, service):
        try:
            with open(self.path("service", service, "log", "main", "current")) as f:
                return f.read()
        except FileNotFoundError:
            return ""


def wait_for(check, what, admin, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s\nqmail-send:\n%s\nqmail-smtpd:\n%s"
                                 % (what, admin.log("qmail-send")[-3000:], admin.log("qmail-smtpd")[-2000:]))
        time.sleep(0.05)


def maildir_files(path, n):
    """The n files of a Maildir's new/ (None until there are n)."""
    try:
        names = sorted(os.listdir(os.path.join(path, "new")))
    except FileNotFoundError:
        return None
    if len(names) < n:
        return None
    return {name: open(os.path.join(path, "new", name), "rb").read() for name in names}


def ours(home):
    """Pids of processes whose command line or working directory is in the home."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            cwd = os.readlink("/proc/%d/cwd" % pid)
        except OSError:
            cwd = ""
        if cwd.startswith(home) or any(home.encode() in arg for arg in proc_cmdline(pid)):
            found.append(pid)
    return found


def test_first_hour(production_home):
    top, _ = production_home
    admin = Admin(top)
    home = admin.home
    joe = admin.path("vpopmail", "domains", "example.org", "joe", "Maildir")
    ann = admin.path("vpopmail", "domains", "example.net", "ann", "Maildir")
    postmaster = admin.path("alias", "Maildir")
    state = {}

    def after(line, code, out):
        """What the comments before `line` promise."""
        if line.startswith(".venv/bin/python3 tools/install.py"):
            state.setdefault("checked", []).append('install')
            assert "Putting mx.example.com into control/rcpthosts..." in out, out
            assert "qmail-showctl --check: nothing to report" in out, out
        elif "qmail-showctl --check" in line:
            state.setdefault("checked", []).append('check')
            assert out == "", out
        elif line.endswith("adddomain example.org"):
            state.setdefault("checked", []).append('adddomain1')
            assert "control/virtualdomains: added example.org:example.org" in out, out
            assert "control/rcpthosts: added example.org" in out, out
        elif line.startswith("svscan "):
            state.setdefault("checked", []).append('svscan')
            wait_for(lambda: port_open(admin.smtp) and port_open(admin.pop3), "SMTP and POP3 ports", admin)
        elif "--to joe@example.org" in line:
            state.setdefault("checked", []).append('joe')
            state["joe"] = wait_for(lambda: maildir_files(joe, 1), "joe's message", admin)
        elif line.startswith("curl "):
            state.setdefault("checked", []).append('curl')
            [stored] = state["joe"].values()
            assert stored.startswith(b"Return-Path: <alice@example.com>\nDelivered-To: example.org-joe@example.org\n")
            assert out.encode().replace(b"\r\n", b"\n").rstrip(b"\n") == stored.rstrip(b"\n")
        elif line.endswith("adddomain example.net"):
            state.setdefault("checked", []).append('adddomain2')
            # qmail-send is supervised now: qmail-users sends it the SIGHUP itself
            assert "qmail-send told to reread its controls (svc -h %s/service/qmail-send)" % home in out, out
        elif "--to ann@example.net" in line:
            state.setdefault("checked", []).append('ann')
            [got] = wait_for(lambda: maildir_files(ann, 1), "ann's message (new domain after svc -h)",
                             admin).values()
            assert got.startswith(b"Return-Path: <alice@example.com>\nDelivered-To: example.net-ann@example.net\n")
        elif "--to nosuch@example.org" in line:
            state.setdefault("checked", []).append('double')
            state["postmaster"] = wait_for(lambda: maildir_files(postmaster, 3), "three messages for postmaster",
                                           admin, timeout=60)
        elif line.startswith("ls "):
            state.setdefault("checked", []).append('ls')
            assert out.split() == sorted(state["postmaster"])
            mails = list(state["postmaster"].values())
            for domain in (b"example.org", b"example.net"):
                assert any(m.startswith(b"Return-Path: <alice@example.com>\nDelivered-To: alias-postmaster@%s\n"
                                        % domain) for m in mails), mails
            [double] = [m for m in mails if m.startswith(b"Return-Path: <#@[]>\n")]
            assert b"Delivered-To: postmaster@mx.example.com\n" in double and b"nosuch@example.org" in double
            assert "triple bounce" not in admin.log("qmail-send")
        elif line.startswith("kill "):
            state.setdefault("checked", []).append('kill')
            wait_for(lambda: not os.path.exists("/proc/%d" % state["svscan"]), "svscan to exit", admin, timeout=10)

    commands = doc_commands()
    other = accounts.alias_elsewhere(home)
    assert other is None or ("user", "alias") not in production_home[1], (
        "this machine's user alias has the home %s (another qmail home): postmaster's mail would go there; "
        "the first hour needs a machine without it, or with it removed" % other)
    try:
        for line in commands:
            code, out = admin.run(line)
            assert code == 0, (line, out)
            if line.startswith("svscan "):
                with open(admin.path("svscan.pid")) as f:
                    state["svscan"] = int(f.read())
            after(line, code, out)
        assert state["checked"] == ['install', 'check', 'adddomain1', 'svscan', 'joe', 'curl', 'adddomain2', 'ann', 'double', 'ls', 'kill'], state["checked"]
        # nothing left running: svscan, the supervises, the services, multilog, dovecot
        wait_for(lambda: ours(home) == [], "every process of the home to exit", admin, timeout=30)
    finally:
        leftover = ours(home)
        if "svscan" in state and os.path.exists("/proc/%d" % state["svscan"]):
            os.kill(state["svscan"], signal.SIGTERM)
        if leftover:
            subprocess.run("svc -dx %s/service/* %s/service/*/log" % (home, home), shell=True, capture_output=True)
            time.sleep(2)
            for pid in ours(home):                 # only what this test started, by pid
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
