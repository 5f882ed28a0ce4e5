"""bin/qmail-local as qmail-lspawn runs it: message on fd 0, report on fd 1, exit code."""
import glob
import os
import subprocess

import pytest

from conftest import program
from qmailpy.queue import layout
from test_local_support import Box

MSG = b"Subject: cli\n\nbody\n"


def run(box, *args, message=MSG, env=None):
    path = os.path.join(str(box.root), "cli-msg")
    with open(path, "wb") as f:
        f.write(message)
    with open(path, "rb") as m:
        p = subprocess.run([program("qmail-local"), *args], stdin=m, capture_output=True,
                           env=env or box.env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def args(box, ext="", dash="", sender="bob@ex.org", aliasempty="./Maildir/"):
    local = "joe" + dash + ext
    return ["joe", box.home, local, dash, ext, "example.com", sender, aliasempty]


def test_success(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box)) == (0, b"did 1+0+0\n", b"")
    assert box.only()[1] == b"Return-Path: <bob@ex.org>\nDelivered-To: joe@example.com\n" + MSG


# qmail-local.c: its own failures and warnings are strerr's, on fd 2; the `-n` lines, `did` and
# `qp` are substdio's on fd 1 (qmail-lspawn gives both the same pipe, so its report is the same)
USAGE = b"qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty\n"


def test_no_mailbox(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box, ext="x", dash="-")) == (
        100, b"", b"Sorry, no mailbox here by that name. (#5.1.1)\n")


@pytest.mark.parametrize("argv, err", [
    (["joe"], USAGE),
    (["--help"], USAGE),
    (["-x", "joe"], b"qmail-local: illegal option -- x\n" + USAGE),
    (["-nx"], b"qmail-local: illegal option -- x\n" + USAGE),
])
def test_usage(tmp_path, argv, err):
    box = Box(tmp_path)
    assert run(box, *argv) == (100, b"", err)


def test_options_end_at_a_word_starting_with_two_dashes(tmp_path):
    # djb's getopt: `--` and any `--word` end the options and are consumed
    box = Box(tmp_path)
    assert run(box, "--x", *args(box)) == (0, b"did 1+0+0\n", b"")


def test_dash_n_lines_on_stdout_warning_on_stderr(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "./Maildir/\n|echo hi\n&a@x.org\n")
    os.chmod(box.home, 0o1755)
    assert run(box, "-n", *args(box)) == (
        0, b"maildir ./Maildir/\nprogram echo hi\nforward a@x.org\ndid 1+1+1\n",
        b"Warning: home directory is sticky.\n")
    box.dotqmail(".qmail", "./Maildir/\n|echo hi\n", mode=0o744)
    assert run(box, "-n", *args(box)) == (
        111, b"", b"Warning: home directory is sticky.\n"
        b"Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)\n")


def test_over_quota(tmp_path):
    box = Box(tmp_path)
    assert run(box, *args(box), env=dict(box.env, MAILDIRQUOTA="10S")) == (
        100, b"", b"User over quota. (#5.1.1)\n")


def test_program_output_and_temp_failure(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|echo deferred: $LOCAL; exit 111\n")
    assert run(box, *args(box)) == (111, b"deferred: joe\n", b"")
    box.dotqmail(".qmail", "|echo said; kill -9 $$\n")
    assert run(box, *args(box)) == (111, b"said\n", b"Aack, child crashed. (#4.3.0)\n")


def test_non_utf8_bytes_survive(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|printf '%s\\377\\n' \"$DTLINE\"; exit 100\n")
    code, out, _ = run(box, "joe", box.home, "j\udcffoe", "", "", "h\udcfe", "s", "./x/")
    assert (code, out) == (100, b"Delivered-To: j\xffoe@h\xfe\n\xff\n")


def test_forward_into_real_queue(tmp_path):
    box = Box(tmp_path)
    qhome = box.env["QMAILHOME"]
    layout.create_queue(qhome)
    box.dotqmail(".qmail", "&a@x.org\n&b@y.org\n")
    env = dict(box.env, QMAILQUEUE=program("qmail-queue"))
    code, out, err = run(box, *args(box), env=env)
    assert code == 0, (out, err)
    assert out.startswith(b"did 0+2+0\nqp ")
    mess = glob.glob(os.path.join(qhome, "queue", "mess", "*", "*"))
    assert len(mess) == 1
    with open(mess[0], "rb") as f:
        queued = f.read()
    assert queued.startswith(b"Received: (qmail ")
    assert queued.endswith(b"\nDelivered-To: joe@example.com\n" + MSG)
    todo = [t for t in glob.glob(os.path.join(qhome, "queue", "todo", "**"), recursive=True)
            if os.path.isfile(t)]
    assert len(todo) == 1
    with open(todo[0], "rb") as f:
        assert f.read().endswith(b"\0Fbob@ex.org\0Ta@x.org\0Tb@y.org\0")


def _address_space(limit):
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_a_program_that_prints_without_end_does_not_grow_qmail_local(tmp_path):
    # in qmail a |program's output goes straight to qmail-lspawn's pipe, which keeps 3000 bytes
    # (spawn.c truncreport): 400 MB of output must not be held by qmail-local (256 MB here)
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|yes | head -c 400000000\n")
    path = os.path.join(str(box.root), "cli-msg")
    with open(path, "wb") as f:
        f.write(MSG)
    with open(path, "rb") as m:
        p = subprocess.run([program("qmail-local"), *args(box)], stdin=m, capture_output=True,
                           env=box.env, timeout=60, preexec_fn=_address_space(256 << 20))
    assert (p.returncode, p.stdout, p.stderr) == (0, b"y\n" * 32768 + b"did 0+0+1\n", b"")
    assert box.files() == []


def test_programs_output_is_kept_to_65536_bytes_all_together(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|yes a | head -c 40000\n|yes b | head -c 40000\n|echo c; exit 100\n")
    code, report = box.deliver(MSG)
    assert (code, report.encode()) == (100, b"a\n" * 20000 + b"b\n" * 12768)


QMAIL_LOCAL_VARIABLES = {"HOST", "HOST2", "HOST3", "HOST4", "HOME", "USER", "LOCAL", "RECIPIENT",
                         "DTLINE", "RPLINE", "UFLINE", "SENDER", "NEWSENDER",
                         "EXT", "EXT2", "EXT3", "EXT4", "DEFAULT"}


@pytest.mark.parametrize("locale, seen", [({}, None), ({"LC_CTYPE": "C"}, b"C"),
                                          ({"LC_CTYPE": "C.UTF-8"}, b"C.UTF-8")])
def test_a_program_gets_the_callers_environment_and_qmails_variables_only(tmp_path, locale, seen):
    # Python's start-up sets LC_CTYPE=C.UTF-8 in its own environment where the locale is C
    # (PEP 538); qmail-local hands its programs the caller's environment plus its own variables
    box = Box(tmp_path)
    out = os.path.join(box.home, "env.out")
    box.dotqmail(".qmail-x-default", "|env -0 > %s\n" % out)
    env = dict(box.env, **locale)
    assert run(box, *args(box, ext="x-y", dash="-"), env=env) == (0, b"did 0+0+1\n", b"")
    with open(out, "rb") as f:
        got = dict(p.split(b"=", 1) for p in f.read().split(b"\0") if p)
    assert set(got) - {b"PWD"} == {v.encode() for v in set(env) | QMAIL_LOCAL_VARIABLES}
    assert got.get(b"LC_CTYPE") == seen


def test_a_program_that_leaves_a_child_holding_its_output_does_not_hold_the_delivery(tmp_path):
    # qmail's mailprogram() waits for the program's exit status, not for end of file on its
    # output: the next .qmail line runs when the program exits, with what it wrote so far
    import signal
    import time
    box = Box(tmp_path)
    pidfile = os.path.join(str(box.root), "bg.pid")
    box.dotqmail(".qmail", "|sleep 30 & echo $! > %s; echo first\n./Maildir/\n" % pidfile)
    began = time.monotonic()
    try:
        code, report = box.deliver(MSG)
        took = time.monotonic() - began
    finally:
        with open(pidfile) as f:
            os.kill(int(f.read()), signal.SIGKILL)
    assert (code, report) == (0, "first\ndid 1+0+1\n")
    assert took < 15
    assert len(box.files()) == 1


def test_a_child_that_never_stops_writing_ends_the_read_after_one_pipe_of_bytes():
    # after the program's exit only what it can have left in the pipe is read: a child that
    # goes on writing (here a read() that never runs dry) must not keep the delivery reading
    import fcntl
    from qmailpy.local import program
    r, w = os.pipe()
    pid = os.fork()                     # the program: a child of ours that has exited, unreaped
    if pid == 0:
        os._exit(0)
    size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
    calls = []

    def endless(fd, n):
        calls.append(n)
        assert len(calls) < 10 * size, "still reading"
        return b"y" * n
    try:
        out = program._read_until_exit(r, pid, None, read=endless)
    finally:
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    assert len(out) == size


def test_a_report_that_cannot_be_written_keeps_the_exit_code(tmp_path):
    """qmail-lspawn gone (the report pipe's reader closed): the delivery is made and the exit
    code still says so; the failed write of `did 1+0+0` changes nothing."""
    box = Box(tmp_path)
    path = os.path.join(str(box.root), "cli-msg")
    with open(path, "wb") as f:
        f.write(MSG)
    r, w = os.pipe()
    os.close(r)
    try:
        with open(path, "rb") as m:
            p = subprocess.run([program("qmail-local"), *args(box)], stdin=m, stdout=w, stderr=w,
                               env=box.env, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 0
    assert box.only()[1] == b"Return-Path: <bob@ex.org>\nDelivered-To: joe@example.com\n" + MSG


def test_a_read_that_would_block_before_the_exit_is_waited_out():
    # a wake-up with nothing to read yet (the pipe's readiness reported early) is not the end
    # of the program's output: the read is tried again, and all of it is kept
    from qmailpy import forkexec
    from qmailpy.local import program
    r, w = os.pipe()
    pid = forkexec.start(["/bin/sh", "-c", "echo first; sleep 0.2; echo second"], {1: w}, os.environ)
    os.close(w)
    calls = []

    def early(fd, n):
        calls.append(n)
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return os.read(fd, n)
    try:
        out = program._read_until_exit(r, pid, None, read=early)
    finally:
        forkexec.wait(pid)
        os.close(r)
    assert out == b"first\nsecond\n" and len(calls) >= 3
