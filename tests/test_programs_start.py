"""How every program starts: `--help` answered without starting anything, and SIGCHLD
set back to default when the parent ignored it (an ignored SIGCHLD survives exec, and
then waitpid() fails with ECHILD and subprocess takes every child for a success).

The `--help` test runs over setup.cfg's console scripts, so a new program is covered
as soon as it is declared there. The SIGCHLD tests start each program that waits for
children from a parent that ignores SIGCHLD (preexec_fn sets SIG_IGN before exec).
"""
import fcntl
import os
import signal
import subprocess
import sys

import pytest

from conftest import BIN, ROOT, Home, program
from test_dialogues import TCP_ENV, queued_messages
from test_e2e_support import wait_until
from test_local_support import Box
from test_send_support import Send, SpawnClient, queue_message, scratch  # noqa: F401 (scratch: fixture)
from qmailpy.queue.layout import create_queue

sys.path.insert(0, os.path.join(ROOT, "tools"))
from mklaunchers import programs  # noqa: E402

CONSOLE_SCRIPTS = [name for name, _, _ in programs(os.path.join(ROOT, "setup.cfg"))]


def ignore_sigchld():
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def sigchld_ignored(pid):
    """Is SIGCHLD in the process's ignored set (/proc/PID/status SigIgn)?"""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGCHLD - 1)))
    raise AssertionError("no SigIgn line for %d" % pid)


# -- --help

def test_every_program_is_listed():
    assert {"qmail-send", "qmail-smtpd", "qmail-lspawn", "qmail-users"} <= set(CONSOLE_SCRIPTS)


# -- a program that cannot be loaded

MODULES = {name: module for name, module, _ in programs(os.path.join(ROOT, "setup.cfg"))}


@pytest.mark.parametrize("name", CONSOLE_SCRIPTS)
def test_a_module_that_cannot_be_read_is_a_temporary_failure(name, tmp_path):
    """EIO on opening the program's main module (source and .pyc, injected by strace): exit 111,
    qmail's temporary failure, and one line naming what could not be loaded. Python's own exit 1
    would be a bounce where an exit code is the verdict (qmail-local or qmail-remote exec'd by
    qmail-lspawn or qmail-rspawn: any exit but 0, 111, 71, 74, 75 is D)."""
    import importlib.util
    spec = importlib.util.find_spec(MODULES[name])
    paths = [spec.origin, importlib.util.cache_from_source(spec.origin)]
    trace = tmp_path / "trace"
    r = subprocess.run(["strace", "-f", "-qq", "-o", str(trace), "-e", "trace=openat",
                        "-e", "inject=openat:error=EIO"] + [a for p in paths for a in ("-P", p)]
                       + [program(name)], stdin=subprocess.DEVNULL, capture_output=True,
                       env={"PATH": os.environ["PATH"], "QMAILHOME": str(tmp_path)}, timeout=60)
    assert "(INJECTED)" in trace.read_text(), "the fault was never injected"
    assert (r.returncode, r.stdout, r.stderr.decode()) == (
        111, b"", "%s: fatal: unable to load %s: [Errno 5] Input/output error: %r\n" % (name, MODULES[name], spec.origin))


@pytest.mark.parametrize("name", CONSOLE_SCRIPTS)
def test_help_prints_the_usage_and_starts_nothing(name, scratch):
    """A home where qmail-send would start: --help must answer and leave it alone."""
    before = scratch.queue_files()
    r = subprocess.run([program(name), "--help"], stdin=subprocess.DEVNULL, capture_output=True,
                       env=scratch.env(), timeout=60)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert "Traceback" not in out + err
    if r.returncode == 0:
        assert out.lower().startswith("usage: %s" % name) and err == "", (out, err)
    else:       # qmail's getopt convention: one usage line and exit 100
        if name == "qmail-local":                 # qmail-local.c's usage() is strerr's: fd 2
            out, err = err, out
        assert r.returncode == 100 and err == "", (r.returncode, out, err)
        assert out.startswith("%s: usage: %s" % (name, name)) and out.count("\n") == 1, out
    assert scratch.queue_files() == before
    with open(os.path.join(scratch.home, "queue", "lock", "sendmutex"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)        # nobody took qmail-send's lock


def test_help_that_cannot_be_written_still_ends_at_once(tmp_path):
    """stdout full (or closed): --help still starts nothing, exits 0, and says nothing more."""
    with open("/dev/full", "wb") as full:
        r = subprocess.run([program("qmail-queue"), "--help"], stdin=subprocess.DEVNULL, stdout=full,
                           stderr=subprocess.PIPE, env=dict(os.environ, QMAILHOME=str(tmp_path)), timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")


def test_a_forked_child_keeps_sigint_ignored_when_it_was(tmp_path):
    """fresh_signals() gives a forked child what execve would: an ignored SIGINT (a launcher
    started in the background by a shell) stays ignored, not Python's KeyboardInterrupt."""
    script = ("import signal, sys; sys.path.insert(0, %r)\n"
              "from qmailpy.progstart import fresh_signals\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, lambda *a: None)\n"
              "fresh_signals()\n"
              "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n"
              % ROOT)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"True True\n", b"")


def test_help_only_alone():
    """`--help` among other arguments is an argument (qmail-remote's host), not a question."""
    r = subprocess.run([program("qmail-remote"), "--help", "a@b", "c@d"], stdin=subprocess.DEVNULL,
                       capture_output=True, env=dict(os.environ, QMAILHOME="/nonexistent"), timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(b"Z")          # the qmail-remote report


# -- SIGCHLD ignored by the parent

SESSION = (b"HELO c.example\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<joe@example.org>\r\n"
           b"DATA\r\nSubject: once\r\n\r\nbody\r\n.\r\nQUIT\r\n")


def smtpd_home(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    create_queue(home.root)
    os.symlink(BIN, os.path.join(home.root, "bin"))    # bin/qmail-queue: our own launcher, so forked
    return home


@pytest.mark.parametrize("queue", ["forked", "exec"])
def test_smtpd_answers_after_data_and_queues_once(tmp_path, queue):
    """swaks --pipe ignores SIGCHLD: the 250 must come, and the message be queued once."""
    home = smtpd_home(tmp_path)
    env = home.env(**TCP_ENV)
    if queue == "exec":                       # posix_spawn of $QMAILQUEUE instead of a fork
        env["QMAILQUEUE"] = program("qmail-queue")
    r = subprocess.run([program("qmail-smtpd")], input=SESSION, capture_output=True, env=env,
                       preexec_fn=ignore_sigchld, timeout=60)
    replies = r.stdout.split(b"\r\n")
    assert replies[5].startswith(b"250 ok ") and replies[6] == b"221 test.example", r.stdout + r.stderr
    assert b"error" not in r.stderr
    [(envelope, body)] = queued_messages(home)
    assert envelope == ["Falice@example.com", "Tjoe@example.org"] and body.endswith(b"\nbody\n")


def test_smtpd_checkpassword_refusal_stays_a_refusal(tmp_path):
    """With SIGCHLD ignored, a checkpassword that says no (exit 1) looked like exit 0: AUTH accepted."""
    home = smtpd_home(tmp_path)
    home.control("smtpauth", "1\n")
    home.control("smtpauthplaintext", "1\n")   # AUTH in clear (legacy clients)
    session = b"EHLO c.example\r\nAUTH PLAIN AGdvb2RAZXhhbXBsZS5vcmcAd3Jvbmc=\r\nQUIT\r\n"   # wrong password
    r = subprocess.run([program("qmail-smtpd"), sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")],
                       input=session, capture_output=True, env=home.env(AUTHFAILDELAY="0", **TCP_ENV),
                       preexec_fn=ignore_sigchld, timeout=60)
    assert b"\r\n535 authentication failed (#5.7.1)\r\n" in r.stdout, r.stdout


def run_local(box, *args, env=None):
    path = os.path.join(str(box.root), "msg")
    with open(path, "wb") as f:
        f.write(b"Subject: x\n\nbody\n")
    with open(path, "rb") as m:
        r = subprocess.run([program("qmail-local"), *args], stdin=m, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env or box.env, preexec_fn=ignore_sigchld,
                           timeout=60)            # fds 1 and 2 one pipe, as qmail-lspawn gives them
    return r.returncode, r.stdout


LOCAL_ARGS = ("joe", "{home}", "joe", "", "", "example.com", "bob@ex.org", "./Maildir/")


def test_local_program_failure_is_not_taken_for_success(tmp_path):
    box = Box(tmp_path)
    box.dotqmail(".qmail", "|echo no thanks; exit 100\n")
    args = [a.format(home=box.home) for a in LOCAL_ARGS]
    assert run_local(box, *args) == (100, b"no thanks\n")
    assert box.files() == []


def test_local_forward_failure_is_not_taken_for_success(tmp_path):
    box = Box(tmp_path)
    qq = str(tmp_path / "qq")
    with open(qq, "w") as f:
        f.write("#!/bin/sh\ncat >/dev/null\nexit 31\n")      # qmail-queue: permanently rejected
    os.chmod(qq, 0o755)
    os.makedirs(box.env["QMAILHOME"])
    box.dotqmail(".qmail", "&ann@example.net\n")
    args = [a.format(home=box.home) for a in LOCAL_ARGS]
    assert run_local(box, *args, env=dict(box.env, QMAILQUEUE=qq)) == (
        100, b"Unable to forward message: mail server permanently rejected message (#5.3.0).\n")


def test_lspawn_reports_qmail_locals_exit_codes(scratch):
    client = SpawnClient("qmail-lspawn", scratch.env(), preexec_fn=ignore_sigchld)
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"exit-100-x@localhost") == b"Dexit 100\n"
        assert client.one(messid, b"a@b", b"defer@localhost") == b"ZTemporary trouble, try later. (#4.3.0)\n"
        assert client.one(messid, b"a@b", b"fine@localhost") == b"Kdid 0+0+1\n"
    finally:
        client.close()


def test_rspawn_reports_qmail_remotes_exit_code(scratch, tmp_path):
    remote = str(tmp_path / "remote")
    with open(remote, "w") as f:
        f.write("#!/bin/sh\ncat >/dev/null\nexit 100\n")
    os.chmod(remote, 0o755)
    client = SpawnClient("qmail-rspawn", scratch.env(QMAILREMOTE=remote), preexec_fn=ignore_sigchld)
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"joe@example.net") == b"DUnable to run qmail-remote.\n"
    finally:
        client.close()


def test_send_and_its_helpers_reset_it(scratch):
    """qmail-send waits for qmail-queue (bounces) and its helpers; each of them resets SIGCHLD."""
    send = Send(scratch, preexec_fn=ignore_sigchld)
    send.wait_line("status: local 0/")
    helpers = wait_until(lambda: len(send.children()) == 5 and send.children(), what="qmail-send's five helpers")
    for pid in [send.proc.pid] + helpers:
        assert not sigchld_ignored(pid), open("/proc/%d/cmdline" % pid).read()
    assert send.stop() == 0


@pytest.mark.parametrize("name", ["qmail-queue", "qmail-clean"])
def test_waiting_programs_reset_it(name, scratch):
    """qmail-queue (filters' report commands) and qmail-clean, while they wait on fd 0."""
    proc = subprocess.Popen([program(name)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=scratch.env(),
                            preexec_fn=ignore_sigchld)
    try:
        wait_until(lambda: not sigchld_ignored(proc.pid), what="%s to reset SIGCHLD" % name)
    finally:
        proc.stdin.close()
        proc.stdout.close()
        proc.wait(timeout=30)


@pytest.mark.parametrize("argv", [["qmail-inject", "ann@example.net"], ["sendmail", "ann@example.net"]])
def test_inject_reports_qmail_queues_refusal(argv, tmp_path):
    """qmail-inject and sendmail wait for qmail-queue: its refusal must not read as success."""
    qq = str(tmp_path / "qq")
    with open(qq, "w") as f:
        f.write("#!/bin/sh\ncat >/dev/null\nexit 31\n")      # qmail-queue: permanently rejected
    os.chmod(qq, 0o755)
    env = dict(os.environ, QMAILHOME=str(tmp_path / "home"), QMAILQUEUE=qq)
    os.makedirs(os.path.join(env["QMAILHOME"], "control"))
    r = subprocess.run([program(argv[0])] + argv[1:], input=b"Subject: x\n\nbody\n", capture_output=True,
                       env=env, preexec_fn=ignore_sigchld, timeout=60)
    assert r.returncode == 100, r
    assert b"permanently rejected" in r.stderr, r.stderr


@pytest.mark.parametrize("name", CONSOLE_SCRIPTS)
def test_every_program_has_its_page_and_a_line_in_the_readme(name):
    """A program declared in setup.cfg is documented: docs/NAME.md, and the README's program
    table names it (qmail-usersd and qmail-tcpserver were missing from it)."""
    assert os.path.exists(os.path.join(ROOT, "docs", name + ".md")), name
    with open(os.path.join(ROOT, "README.md")) as f:
        rows = [line for line in f if line.startswith("| `")]
    named = {part.strip(" `") for row in rows for part in row.split("|")[1].split(",")}
    assert name in named, name


@pytest.mark.parametrize("name", ["qmail-lspawn", "qmail-rspawn", "qmail-todo"])
def test_started_with_fd0_closed_ends_at_once(name, home):
    """Started with fd 0 closed, the spawns' selector took fd 0 and registered itself (EINVAL:
    `internal bug`, exit 111), and qmail-todo read its trigger FIFO, opened on fd 0, as
    qmail-send's commands for ever. fd 0 is held (progstart) and reads as end of input:
    exit 0 at once, nothing on stderr. (Found by tests/fuzz/test_fuzz_programs.py.)"""
    create_queue(home.root)
    argv = ["./Maildir/"] if name == "qmail-lspawn" else []
    r = subprocess.run([program(name), *argv], stdin=subprocess.DEVNULL, capture_output=True,
                       env=home.env(), cwd=home.root, timeout=20, preexec_fn=lambda: os.close(0))
    assert (r.returncode, r.stderr) == (0, b"")


def test_closed_fd0_still_reads_as_an_error(home):
    """The descriptor that holds a closed fd 0 fails reads as the closed one did: qmail-inject
    says qmail's `read error` (exit 111), it does not queue an empty message."""
    create_queue(home.root)
    home.control("me", "test.example\n")
    r = subprocess.run([program("qmail-inject"), "a@b.example"], stdin=subprocess.DEVNULL, capture_output=True,
                       env=home.env(), timeout=20, preexec_fn=lambda: os.close(0))
    assert (r.returncode, r.stderr) == (111, b"qmail-inject: fatal: read error\n")
    assert os.listdir(os.path.join(home.root, "queue", "todo")) == []
