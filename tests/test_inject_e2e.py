"""End to end from a local user: sendmail and qmail-inject run as a non-root user.

A temporary user is created (useradd) and removed by the test. The qmail home is root's, as
an installed one is (single-user mode: the daemons run as root); the user owns nothing of
the queue and holds no group of qmail's: their bin/sendmail and bin/qmail-inject queue
through the home's qmail-queued (issue 20), qmail-lspawn delivers to their ~/Maildir as
them (made with bin/maildirmake; the passwd lookup, as qmail-getpw) and qmail-remote to an
SMTP sink. The messages arrive with the header qmail-inject writes (compared field by
field) under qmail-queued's Received line, which names the user's uid (from the kernel)
whatever sender they claim. With qmail-queued down they get a temporary error (exit 111)
and nothing is queued.
"""
import calendar
import os
import pwd
import re
import secrets
import subprocess
import time

import pytest

from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import sinks  # noqa: F401  (fixture)
from test_e2e_support import BIN, IS_ROOT, ME, Routes, dates, world  # noqa: F401

REMOTE = "remote.example"


def accounts(cmd, tries=20):
    """useradd/userdel/groupdel, again while another process holds the passwd or group lock."""
    for _ in range(tries):
        r = subprocess.run(cmd, capture_output=True, timeout=60)
        if r.returncode == 0 or b"lock" not in r.stderr:
            break
        time.sleep(0.25)
    assert r.returncode == 0, (cmd, r.stderr)


@pytest.fixture
def local_user(world):  # noqa: F811
    """A new passwd user with a home of their own (0755) in the world's directory; removed after."""
    assert IS_ROOT, "creating a user needs root"
    name = "qpy" + secrets.token_hex(4)
    home = os.path.join(world.top, name)
    os.mkdir(home)
    accounts(["useradd", "-M", "-d", home, "-s", "/bin/sh", "-U", name])
    try:
        pw = pwd.getpwnam(name)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        os.chmod(home, 0o755)
        yield pw
    finally:
        for proc in world.procs:            # nothing of theirs may run when they are removed
            stop = getattr(proc, "stop", None) or proc.terminate
            try:
                stop()
            except Exception:
                pass
        accounts(["userdel", "-f", name])
        if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
            accounts(["groupdel", name])
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def as_user(world, pw, args, stdin=b""):
    """Run a command as the user, with a cron-like environment; the CompletedProcess."""
    env = world.env(USER=pw.pw_name, LOGNAME=pw.pw_name, HOME=pw.pw_dir, SHELL="/bin/sh",
                    PATH="%s:/usr/bin:/bin" % BIN)
    for name in ("QMAILUSER", "MAILUSER", "QMAILNAME", "MAILNAME", "NAME", "QMAILHOST", "MAILHOST", "QMAILINJECT"):
        env.pop(name, None)
    return subprocess.run(args, input=stdin, capture_output=True, env=env, cwd=pw.pw_dir, timeout=60,
                          user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])


def split_received(message, uid):
    """(qmail-queue's Received line, the rest); the line must name `uid`."""
    line, rest = message.split(b"\n", 1)
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked by uid %d\); \d+ \w{3} \d{4} [\d:]{8} -0000" % uid, line), line
    return line, rest


def check_injected(head, t0, t1, expected_rest):
    """qmail-inject's Date and Message-ID (same second, its host), then exactly the expected fields."""
    date, msgid, rest = head.split(b"\n", 2)
    m = re.fullmatch(rb"Date: (.*)", date)
    assert m and m.group(1).decode() in dates(t0, t1), date
    t = calendar.timegm(time.strptime(m.group(1).decode(), "%d %b %Y %H:%M:%S -0000"))
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(t)).encode()
    assert re.fullmatch(rb"Message-ID: <%s\.\d+\.qmail@%s>" % (stamp, ME.encode()), msgid), msgid
    assert rest == expected_rest


def test_local_user_sends_with_sendmail_and_qmail_inject(world, local_user, dns_server, sinks):  # noqa: F811
    pw = local_user
    user, uid = pw.pw_name, pw.pw_uid
    local = "%s@%s" % (user, ME)

    world.queued.stop()
    r = as_user(world, pw, ["sh", "-c", "printf 'To: %s\\n\\nbody\\n' | sendmail -t" % user])
    assert r.returncode == 111, "qmail-queued down: a temporary error"
    assert r.stderr.endswith(b"qmail-inject: fatal: connection to mail server rejected (#4.4.1)\n"), r.stderr
    assert world.queue_files() == []
    world.start_queued()

    sink = Routes(world, dns_server, sinks).sink(REMOTE, via="smtproutes")
    assert as_user(world, pw, ["maildirmake", os.path.join(pw.pw_dir, "Maildir")]).returncode == 0

    t0 = time.time()
    cron = ("{ printf 'To: %s, friend@%s\\nSubject: nightly\\n\\n'; echo body; } | sendmail -t" % (user, REMOTE))
    r = as_user(world, pw, ["sh", "-c", cron])
    assert (r.returncode, r.stderr) == (0, b"")
    direct = b"From: root\nSubject: direct\n\nhello\n"
    r = as_user(world, pw, ["qmail-inject", "-f", "root@" + ME, user, "friend@" + REMOTE], stdin=direct)
    assert (r.returncode, r.stderr) == (0, b"")
    t1 = time.time()

    for name in world.queue_files():
        assert os.stat(os.path.join(world.home, "queue", name)).st_uid == os.getuid()   # the service's
    send = world.send()
    new = os.path.join(pw.pw_dir, "Maildir", "new")
    send.wait_for(lambda: len(os.listdir(new)) == 2 and len(sink.messages) == 2, what="both deliveries")
    assert send.stop() == 0

    expected = {
        b"nightly": (local, [local, "friend@" + REMOTE],
                     b"From: %s\nTo: %s, friend@%s\nSubject: nightly\n\nbody\n" % (
                         local.encode(), local.encode(), REMOTE.encode())),
        b"direct": ("root@" + ME, [local, "friend@" + REMOTE],
                    b"Cc: recipient list not shown: ;\nFrom: root@%s\nSubject: direct\n\nhello\n" % ME.encode()),
    }
    stored = []
    for fn in os.listdir(new):
        path = os.path.join(new, fn)
        assert os.stat(path).st_uid == uid
        with open(path, "rb") as f:
            data = f.read()
        sender = re.match(rb"Return-Path: <([^>]*)>\nDelivered-To: ([^\n]*)\n", data)
        assert sender and sender.group(2) == local.encode(), data[:200]
        stored.append((sender.group(1).decode(), data[sender.end():]))
    remote = [(m.mail_from, m.rcpt_tos, m.data.replace(b"\r\n", b"\n")) for m in sink.messages]
    for subject, (from_, rcpts, rest) in expected.items():
        [mine] = [body for s, body in stored if b"Subject: %s\n" % subject in body]
        assert [s for s, body in stored if body == mine] == [from_]
        [(mail_from, rcpt_tos, theirs)] = [m for m in remote if b"Subject: %s\n" % subject in m[2]]
        assert (mail_from, rcpt_tos) == (from_, ["friend@" + REMOTE])
        assert theirs == mine, "the same queued bytes reach both"
        received, head = split_received(mine, uid)
        check_injected(head, t0, t1, rest)
