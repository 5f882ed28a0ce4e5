"""bouncesaying, condredirect, except, forward, preline: qmail's programs for `|` lines.

Each program's exact words, exit codes and environment (as notqmail's C), run
from its launcher; then each through the real qmail-local, from a .qmail line,
with forwards captured by a fake $QMAILQUEUE (the bytes and envelope queued).
"""
import os
import subprocess

import pytest

from conftest import BIN, program
from qmailpy.proto.qq import decode
from test_local_support import Box

MSG = b"Subject: hi\n\nbody\n"
DT = "Delivered-To: joe@example.com\n"

QQ = """#!/bin/sh
cat > "$CAPTURE/msg"
cat <&1 > "$CAPTURE/env"
echo $$ > "$CAPTURE/pid"
exit ${QQ_EXIT:-0}
"""


@pytest.fixture
def qq(tmp_path):
    """A fake qmail-queue that keeps what it was given: (environment for it, reader)."""
    capture = tmp_path / "capture"
    capture.mkdir()
    path = tmp_path / "fake-qq"
    path.write_text(QQ)
    path.chmod(0o755)

    def captured():
        return {name: (capture / name).read_bytes() for name in ("msg", "env", "pid")}
    return {"QMAILQUEUE": str(path), "CAPTURE": str(capture), "QMAILHOME": str(tmp_path)}, captured


def run(name, *args, stdin=MSG, env=None, tmp_path=None):
    """(exit code, stdout, stderr) of bin/NAME args, the message on a seekable fd 0."""
    base = {"PATH": "/usr/bin:/bin"}
    path = os.path.join(str(tmp_path), "mess") if tmp_path else None
    if path:
        with open(path, "wb") as f:
            f.write(stdin)
        with open(path, "rb") as f:
            r = subprocess.run([program(name), *args], stdin=f, capture_output=True,
                               env=dict(base, **(env or {})), timeout=60)
    else:
        r = subprocess.run([program(name), *args], input=stdin, capture_output=True,
                           env=dict(base, **(env or {})), timeout=60)
    return r.returncode, r.stdout, r.stderr


# -- bouncesaying

@pytest.mark.parametrize("args, code, err", [
    ((), 100, b"bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]\n"),
    (("This address is closed.",), 100, b"This address is closed.\n"),
    (("Go away.", "grep", "-q", "body"), 100, b"Go away.\n"),          # program exits 0: bounce
    (("Go away.", "grep", "-q", "nothing"), 0, b""),                    # exits 1: carry on
    (("Go away.", "sh", "-c", "exit 100"), 0, b""),
    (("Go away.", "/nonexistent/prog"), 0, b""),                        # cannot run (ENOENT): 100 -> 0
    (("Go away.", ""), 0, b""),                                         # an empty name: execvp's ENOENT
    (("Go away.", "sh", "-c", "exit 111"), 111, b"bouncesaying: fatal: temporary child error\n"),
    (("Go away.", "sh", "-c", "kill $$"), 111, b"bouncesaying: fatal: child crashed\n"),
])
def test_bouncesaying(args, code, err):
    assert run("bouncesaying", *args) == (code, b"", err)


# -- except

@pytest.mark.parametrize("args, code, err", [
    ((), 100, b"except: usage: except program [ arg ... ]\n"),
    (("true",), 100, b""),
    (("false",), 0, b""),
    (("sh", "-c", "exit 100"), 0, b""),
    (("sh", "-c", "exit 99"), 0, b""),
    (("/nonexistent/prog",), 0, b""),
    (("",), 0, b""),                    # an empty name: execvp's ENOENT, 100 -> 0 (was EIO: deferred)
    (("sh", "-c", "exit 111"), 111, b"except: fatal: temporary child error\n"),
    (("sh", "-c", "kill -9 $$"), 111, b"except: fatal: child crashed\n"),
])
def test_except(args, code, err):
    assert run("except", *args) == (code, b"", err)


def test_except_program_reads_the_message_from_path():
    """execvp: the program is looked up in $PATH and gets the message on fd 0."""
    assert run("except", "grep", "-q", "^body$")[0] == 100


# -- condredirect

CR_ENV = {"SENDER": "bob@ex.org", "NEWSENDER": "new@ex.org", "DTLINE": DT}


@pytest.mark.parametrize("args", [(), ("a@x.org",)])
def test_condredirect_usage(args):
    assert run("condredirect", *args) == (
        100, b"", b"condredirect: usage: condredirect newaddress program [ arg ... ]\n")


def test_condredirect_forwards_from_sender_and_exits_99(qq, tmp_path):
    env, captured = qq
    code, out, err = run("condredirect", "a@x.org", "sh", "-c", "cat >/dev/null; exit 0",
                         env=dict(CR_ENV, **env), tmp_path=tmp_path)
    got = captured()
    assert (code, out, err) == (99, b"", b"condredirect: qp %d\n" % int(got["pid"]))
    assert got["msg"] == DT.encode() + MSG          # rewound after the program read it all
    assert decode(got["env"]) == (b"bob@ex.org", [b"a@x.org"])   # SENDER, not NEWSENDER


@pytest.mark.parametrize("args, code, err", [
    (("false",), 0, b""),
    (("/nonexistent/prog",), 0, b""),
    (("",), 0, b""),                    # an empty name: execvp's ENOENT
    (("sh", "-c", "exit 111"), 111, b"condredirect: fatal: temporary child error\n"),
    (("sh", "-c", "kill $$"), 111, b"condredirect: fatal: child crashed\n"),
])
def test_condredirect_program_says_no(qq, tmp_path, args, code, err):
    env, captured = qq
    assert run("condredirect", "a@x.org", *args, env=dict(CR_ENV, **env), tmp_path=tmp_path) == (code, b"", err)
    assert not os.listdir(env["CAPTURE"])           # nothing queued


@pytest.mark.parametrize("missing", ["SENDER", "DTLINE"])
def test_condredirect_needs_its_variables(qq, tmp_path, missing):
    env, captured = qq
    env = dict(CR_ENV, **env)
    del env[missing]
    assert run("condredirect", "a@x.org", "true", env=env, tmp_path=tmp_path) == (
        100, b"", b"condredirect: fatal: %s not set\n" % missing.encode())


def test_condredirect_cannot_rewind_a_pipe(qq):
    env, _ = qq
    assert run("condredirect", "a@x.org", "true", env=dict(CR_ENV, **env)) == (
        111, b"", b"condredirect: fatal: unable to rewind: unseekable descriptor\n")


@pytest.mark.parametrize("status, code, text", [
    (31, 100, b"mail server permanently rejected message (#5.3.0)"),
    (53, 111, b"qq write error or disk full (#4.3.0)"),
])
def test_condredirect_queue_refuses(qq, tmp_path, status, code, text):
    env, _ = qq
    assert run("condredirect", "a@x.org", "true", env=dict(CR_ENV, QQ_EXIT=str(status), **env),
               tmp_path=tmp_path) == (code, b"", b"condredirect: fatal: " + text + b"\n")


# -- forward

def test_forward_from_newsender_to_every_address(qq):
    env, captured = qq
    code, out, err = run("forward", "a@x.org", "b@y.org", env=dict(CR_ENV, **env))   # a pipe will do
    got = captured()
    assert (code, out, err) == (0, b"", b"forward: qp %d\n" % int(got["pid"]))
    assert got["msg"] == DT.encode() + MSG
    assert decode(got["env"]) == (b"new@ex.org", [b"a@x.org", b"b@y.org"])


@pytest.mark.parametrize("missing", ["NEWSENDER", "DTLINE"])
def test_forward_needs_its_variables(qq, missing):
    env, _ = qq
    env = dict(CR_ENV, **env)
    del env[missing]
    assert run("forward", "a@x.org", env=env) == (100, b"", b"forward: fatal: %s not set\n" % missing.encode())


@pytest.mark.parametrize("status, code, text", [
    (11, 100, b"envelope address too long for qq (#5.1.3)"),
    (91, 111, b"qq internal bug (#4.3.0)"),
    (99, 111, b"qq temporary problem (#4.3.0)"),
])
def test_forward_queue_refuses(qq, status, code, text):
    env, _ = qq
    assert run("forward", "a@x.org", env=dict(CR_ENV, QQ_EXIT=str(status), **env)) == (
        code, b"", b"forward: fatal: " + text + b"\n")


def test_forward_queue_program_missing(qq):
    env, _ = qq
    env = dict(CR_ENV, **dict(env, QMAILQUEUE="/nonexistent/qq"))
    assert run("forward", "a@x.org", env=env) == (111, b"", b"forward: fatal: unable to exec qq (#4.3.0)\n")


# -- preline

PL_ENV = {"UFLINE": "From bob@ex.org Thu Jan  1 00:00:00 2026\n", "RPLINE": "Return-Path: <bob@ex.org>\n",
          "DTLINE": DT}
UF, RP, DTB = (PL_ENV[k].encode() for k in ("UFLINE", "RPLINE", "DTLINE"))


@pytest.mark.parametrize("flags, head", [
    ((), UF + RP + DTB),
    (("-f",), RP + DTB),
    (("-r",), UF + DTB),
    (("-d",), UF + RP),
    (("-frd",), b""),
    (("-f", "-F"), UF + RP + DTB),
    (("-d", "--"), UF + RP),
])
def test_preline_writes_the_lines_then_the_message(flags, head):
    assert run("preline", *flags, "cat", env=PL_ENV) == (0, head + MSG, b"")


def test_preline_copies_a_message_longer_than_its_buffer_whole():
    big = MSG + b"0123456789abcdef\n" * 5000                 # ten 8192-byte buffers and a rest
    assert run("preline", "cat", stdin=big, env=PL_ENV) == (0, UF + RP + DTB + big, b"")


@pytest.mark.parametrize("who", ["preline", "child", "resend"])
def test_a_fork_refused_is_unable_to_fork_and_111(monkeypatch, capfd, who):
    """preline.c, the C of bouncesaying, condredirect and except, and forward.c's and
    condredirect.c's qmail_open(): a fork() that fails (RLIMIT_NPROC's EAGAIN) is
    `<program>: fatal: unable to fork: E` and exit 111, a deferral."""
    from qmailpy.local.helpers import child, preline, resend

    def fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setenv("NEWSENDER", "bob@ex.org")
    monkeypatch.setenv("DTLINE", DT)
    monkeypatch.delenv("QMAILQUEUE", raising=False)
    monkeypatch.setenv("QMAILHOME", "/nonexistent")              # no qmail-queued socket: qmail-queue
    fatal = who + ": fatal: "
    with pytest.raises(SystemExit) as e:
        if who == "preline":
            preline.run(["cat"], b"")
        elif who == "child":
            child.status(fatal, ["cat"])
        else:
            resend.resend(fatal, ["a@x.org"], "NEWSENDER")
    assert (e.value.code, capfd.readouterr().err) == (111, fatal + "unable to fork: temporary failure\n")

def test_preline_passes_the_exit_code_through():
    assert run("preline", "sh", "-c", "cat >/dev/null; exit 77", env=PL_ENV) == (77, b"", b"")


@pytest.mark.parametrize("args, env, err", [
    (("cat",), {"UFLINE": "x\n", "RPLINE": "y\n"}, b""),          # a variable missing
    ((), PL_ENV, b""),
    (("-x", "cat"), PL_ENV, b"preline: illegal option -- x\n"),
])
def test_preline_usage(args, env, err):
    assert run("preline", *args, env=env) == (100, b"", err + b"preline: usage: preline cmd [ arg ... ]\n")


def test_preline_cannot_run():
    assert run("preline", "/nonexistent/prog", env=PL_ENV) == (
        100, b"", b"preline: fatal: unable to run /nonexistent/prog: file does not exist\n")


def test_preline_cannot_run_an_empty_name():
    """execvp("") fails with ENOENT in C (permanent); Python's exec refuses an empty argv[0]
    with ValueError, which was reported as EIO (temporary: the delivery was deferred)."""
    assert run("preline", "", env=PL_ENV) == (
        100, b"", b"preline: fatal: unable to run : file does not exist\n")


def test_preline_child_crashed():
    assert run("preline", "sh", "-c", "cat >/dev/null; kill $$", env=PL_ENV) == (
        111, b"", b"preline: fatal: child crashed\n")


@pytest.mark.parametrize("size, code, err", [
    (len(MSG), 0, b""),                            # all in substdio's last buffer: its flush is not checked
    (100000, 111, b"preline: fatal: unable to copy input: broken pipe\n"),   # a full buffer's write fails
])
def test_preline_a_command_that_stops_reading(tmp_path, size, code, err):
    """preline.c copies through an 8192-byte substdio buffer and ignores what its final
    substdio_flush() returns: a command that closes its input early fails preline only
    when a full buffer could not be written. The message arrives once the command has
    closed its fd 0, so nothing can be read before."""
    import time
    closed = tmp_path / "closed"
    p = subprocess.Popen([program("preline"), "sh", "-c", 'exec 0<&-; : > "$0"', str(closed)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(PL_ENV, PATH="/usr/bin:/bin"))
    deadline = time.monotonic() + 30
    while not closed.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    out, got = p.communicate((MSG * (size // len(MSG) + 1))[:size], timeout=60)
    assert (p.returncode, out, got) == (code, b"", err)


# -- through qmail-local

@pytest.fixture
def box(tmp_path, qq):
    b = Box(tmp_path)
    env, b.captured = qq
    b.env.update(env, PATH=BIN + ":/usr/bin:/bin", QMAILHOME=b.env["QMAILHOME"])
    os.makedirs(b.env["QMAILHOME"], exist_ok=True)
    return b


def test_dotqmail_bouncesaying(box):
    box.dotqmail(".qmail", "|bouncesaying 'This address is closed.'\n./Maildir/\n")
    assert box.deliver(MSG) == (100, "This address is closed.\n")
    assert box.files() == []


def test_dotqmail_bouncesaying_with_a_program(box):
    box.dotqmail(".qmail", "|bouncesaying 'No hi here.' grep -q '^Subject: hi'\n./Maildir/\n")
    assert box.deliver(MSG) == (100, "No hi here.\n")
    assert box.deliver(b"Subject: other\n\nbody\n") == (0, "did 1+0+1\n")


def test_dotqmail_except(box):
    box.dotqmail(".qmail", "|except grep -q '^Subject: hi'\n./Maildir/\n")
    assert box.deliver(MSG) == (100, "")                   # a bounce with the program's silence
    assert box.deliver(b"Subject: other\n\nbody\n") == (0, "did 1+0+1\n")


def test_dotqmail_condredirect(box):
    box.dotqmail(".qmail", "|condredirect boss@x.org grep -q '^Subject: hi'\n./Maildir/\n")
    code, report = box.deliver(MSG, sender="bob@ex.org")
    got = box.captured()
    assert (code, report) == (0, "condredirect: qp %d\ndid 0+0+1\n" % int(got["pid"]))   # 99: stop
    assert got["msg"] == DT.encode() + MSG
    assert decode(got["env"]) == (b"bob@ex.org", [b"boss@x.org"])
    assert box.files() == []
    assert box.deliver(b"Subject: other\n\nbody\n") == (0, "did 1+0+1\n")


def test_dotqmail_forward_from_newsender(box):
    box.dotqmail(".qmail-list", "|forward a@x.org b@y.org\n")
    box.dotqmail(".qmail-list-owner", "&owner@x.org\n")
    code, report = box.deliver(MSG, local="joe-list", dash="-", ext="list", sender="bob@ex.org")
    got = box.captured()
    assert (code, report) == (0, "forward: qp %d\ndid 0+0+1\n" % int(got["pid"]))
    assert got["msg"] == b"Delivered-To: joe-list@example.com\n" + MSG
    assert decode(got["env"]) == (b"joe-list-owner@example.com", [b"a@x.org", b"b@y.org"])


def test_dotqmail_preline(box):
    out = os.path.join(box.home, "out")
    box.dotqmail(".qmail", "|preline cat > %s\n" % out)
    assert box.deliver(MSG, sender="bob@ex.org") == (0, "did 0+0+1\n")
    with open(out, "rb") as f:
        data = f.read()
    first, rest = data.split(b"\n", 1)
    assert first.startswith(b"From bob@ex.org ") and len(first) == len(b"From bob@ex.org Thu Jan  1 00:00:00 2026")
    assert rest == b"Return-Path: <bob@ex.org>\n" + DT.encode() + MSG


def test_dotqmail_preline_procmail_style(box):
    """`|preline -f prog`: a program that wants Return-Path and Delivered-To but no From_ line."""
    out = os.path.join(box.home, "out")
    box.dotqmail(".qmail", "|preline -f sh -c 'cat > %s; exit 99'\n./Maildir/\n" % out)
    assert box.deliver(MSG, sender="") == (0, "did 0+0+1\n")      # the 99 passes through: stop
    with open(out, "rb") as f:
        assert f.read() == b"Return-Path: <>\n" + DT.encode() + MSG
    assert box.files() == []
