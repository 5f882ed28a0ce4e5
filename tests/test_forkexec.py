"""qmailpy.forkexec: fork + exec as qmail does, what the child holds, how failures come back.

Each case runs in a fresh interpreter (a driver script), so fd numbers, signal
dispositions and the modules loaded are the driver's own and not pytest's.
"""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def driver(body, tmp_path, check=True):
    """Run `body` after `from qmailpy import forkexec`; its stdout, decoded."""
    script = ("import os, sys\nsys.path.insert(0, %r)\nfrom qmailpy import forkexec\n"
              "from qmailpy.fileio import read_all\n%s" % (ROOT, body))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=str(tmp_path), timeout=60)
    if check:
        assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_the_map_sets_the_childs_fds_and_every_other_fd_is_closed(tmp_path):
    """Targets 7 and 8 from sources 8 and 7 (each source is the other's target); fd 2 is
    inherited as it is; fd 9, inheritable in the parent, and the driver's pipes (3-6)
    are not open in the child."""
    out = driver(r'''
a_r, a_w = os.pipe(); b_r, b_w = os.pipe()
os.dup2(a_w, 8); os.dup2(b_w, 7); os.dup2(a_w, 9)
os.close(a_w); os.close(b_w)
pid = forkexec.start(["/bin/bash", "-c", "echo to-7 >&7; echo to-8 >&8; for n in 0 1 2 3 4 5 6 7 8 9; do [ -e /proc/$$/fd/$n ] && printf '%s ' $n; done; echo"],
                     {7: 8, 8: 7}, {"PATH": "/usr/bin:/bin"})
for fd in (7, 8, 9):
    os.close(fd)
code = forkexec.wait(pid)
print(code, repr(read_all(a_r)), repr(read_all(b_r)))
''', tmp_path)
    # the child's fd 1 is the driver's stdout; fd 7 was a copy of our fd 8 (pipe a), 8 of 7 (b)
    assert out == "0 1 2 7 8 \n0 b'to-7\\n' b'to-8\\n'\n"


def test_an_fd_below_the_highest_target_that_no_target_took_is_closed(tmp_path):
    """Targets 0 and 8: the parent's inheritable fds 5 and 7, below 8, are not open in the child,
    nor are the pipe's own fds (3 and 4, one of them a source)."""
    out = driver(r'''
r, w = os.pipe()
assert (r, w) == (3, 4), (r, w)
os.dup2(w, 5); os.dup2(w, 7); os.dup2(w, 8)
os.close(w)
pid = forkexec.start(["/bin/bash", "-c", "echo to-8 >&8; for n in 3 4 5 6 7 8 9; do [ -e /proc/$$/fd/$n ] && printf '%s ' $n; done; echo"],
                     {0: r, 8: 8}, {"PATH": "/usr/bin:/bin"})
for fd in (5, 7, 8):
    os.close(fd)
code = forkexec.wait(pid)
print(code, repr(read_all(r)))
''', tmp_path)
    assert out == "8 \n0 b'to-8\\n'\n"


def test_the_environment_is_exactly_the_one_given(tmp_path):
    out = driver(r'''
pid = forkexec.start(["/usr/bin/env"], {}, {"ONE": "1", "TWO": "two words"})
print(forkexec.wait(pid))
''', tmp_path)
    assert out == "ONE=1\nTWO=two words\n0\n"


def test_sigpipe_and_sigxfsz_are_back_to_default_in_the_child(tmp_path):
    """Python ignores both; the program must start as under qmail (mailprogram's sig_pipedefault)."""
    out = driver(r'''
import signal
assert signal.getsignal(signal.SIGPIPE) is signal.SIG_IGN
pid = forkexec.start(["/bin/sh", "-c", "grep SigIgn /proc/$$/status"], {}, {})
print(forkexec.wait(pid))
''', tmp_path)
    ignored = int(out.split()[1], 16)
    assert ignored & (1 << (13 - 1)) == 0         # SIGPIPE
    assert ignored & (1 << (25 - 1)) == 0         # SIGXFSZ
    assert out.split()[2] == "0"


def test_cwd_is_where_the_program_runs(tmp_path):
    (tmp_path / "there").mkdir()
    out = driver(r'''
pid = forkexec.start(["/bin/pwd"], {}, {}, cwd=%r)
print(forkexec.wait(pid))
''' % str(tmp_path / "there"), tmp_path)
    assert out == "%s\n0\n" % (tmp_path / "there")


def test_exit_codes_and_signals_come_back_as_popen_gives_them(tmp_path):
    out = driver(r'''
for cmd in ("exit 0", "exit 99", "exit 111", "kill -9 $$", "kill -SEGV $$"):
    print(forkexec.wait(forkexec.start(["/bin/sh", "-c", cmd], {}, {})))
''', tmp_path)
    assert out.split() == ["0", "99", "111", "-9", "-11"]


@pytest.mark.parametrize("case, expect", [
    ("missing program", "OSError 2 {tmp}/nonexistent-program"),
    ("not executable", "OSError 13 {tmp}/plain-file"),
    ("missing cwd", "OSError 2 {tmp}/no-such-dir"),
])
def test_a_child_that_cannot_get_to_exec_raises_oserror_with_the_file_and_is_reaped(tmp_path, case, expect):
    """As Popen: errno, and the file (cwd for a failed chdir, the program for a failed
    exec); the child is already reaped (no zombie, no child left to wait for); the
    program is never run from the wrong directory."""
    (tmp_path / "plain-file").write_text("echo ran > %s/ran\n" % tmp_path)
    argv, cwd = {"missing program": ([str(tmp_path / "nonexistent-program")], None),
                 "not executable": ([str(tmp_path / "plain-file")], None),
                 "missing cwd": (["/bin/sh", "-c", "echo ran > %s/ran" % tmp_path], str(tmp_path / "no-such-dir")),
                 }[case]
    out = driver(r'''
try:
    forkexec.start(%r, {}, {}, cwd=%r)
    print("started")
except OSError as e:
    print(isinstance(e, OSError) and "OSError", e.errno, e.filename)
try:
    os.waitpid(-1, 0)
    print("a child was left")
except ChildProcessError:
    pass
''' % (argv, cwd), tmp_path)
    assert out == expect.format(tmp=tmp_path) + "\n"
    assert not (tmp_path / "ran").exists()


def test_a_fork_that_fails_raises_and_leaves_no_descriptor_open(tmp_path):
    """EAGAIN from fork() (a process limit): the caller (qmail-lspawn, qmail-local for each
    |program) gets it, and the status pipe is closed, so a long-running parent leaks nothing."""
    out = driver(r'''
import errno
def no_fork():
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
os.fork = no_fork
before = sorted(os.listdir("/proc/self/fd"))
try:
    forkexec.start(["/bin/true"], {}, {})
except OSError as e:
    print(e.errno == errno.EAGAIN, sorted(os.listdir("/proc/self/fd")) == before)
''', tmp_path)
    assert out == "True True\n"


def test_a_failed_exec_is_reported_when_sigchld_is_ignored(tmp_path):
    """With SIGCHLD ignored (a parent that handed that on) the kernel reaps the child itself:
    waitpid() fails with ECHILD, and the exec's errno still comes back."""
    out = driver(r'''
import signal
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
try:
    forkexec.start([%r], {}, {})
    print("started")
except OSError as e:
    print(type(e).__name__, e.errno, e.filename)
''' % str(tmp_path / "nonexistent-program"), tmp_path)
    assert out == "FileNotFoundError 2 %s\n" % (tmp_path / "nonexistent-program")


def test_a_failure_in_the_child_without_an_errno_is_eio(tmp_path):
    """Anything but an OSError between fork and exec (execve's ValueError for a NUL in an
    argument) never returns into the parent's code in the child: EIO for the caller."""
    out = driver(r'''
try:
    forkexec.start(["/bin/echo", "a\0b"], {}, {})
    print("started")
except OSError as e:
    print(e.errno, e.filename)
try:
    os.waitpid(-1, 0)
    print("a child was left")
except ChildProcessError:
    pass
''', tmp_path)
    assert out == "5 /bin/echo\n"


def test_ids_are_switched_with_no_saved_id_left(tmp_path):
    """As root: supplementary groups, then gid, then uid, all three of each (setres*id)."""
    assert os.geteuid() == 0, "the id switch needs root (make test runs as root)"
    out = driver(r'''
pid = forkexec.start(["/bin/sh", "-c", "grep -E '^(Uid|Gid|Groups):' /proc/$$/status"], {}, {},
                     ids=(54321, 54322, (54323,)))
print(forkexec.wait(pid))
''', tmp_path)
    lines = [line.split() for line in out.splitlines()]
    assert lines == [["Uid:", "54321", "54321", "54321", "54321"], ["Gid:", "54322", "54322", "54322", "54322"],
                     ["Groups:", "54323"], ["0"]]


def test_starting_a_program_loads_no_module_with_an_at_fork_handler(tmp_path):
    """threading and random register handlers that run in every later fork (and subprocess
    imports threading): a forked qmail-local that starts programs must not load them."""
    out = driver(r'''
pid = forkexec.start(["/bin/true"], {}, {})
print(forkexec.wait(pid), sorted(m for m in ("threading", "subprocess", "random", "logging") if m in sys.modules))
''', tmp_path)
    assert out == "0 []\n"


FD_MAP_DRIVER = r'''
import json
mapping = {int(k): v for k, v in json.loads(sys.argv[1]).items()}   # target -> source number
sources = sorted(set(mapping.values()))
import fcntl
pipes, writers = {}, {}
for number in sources:                    # every pipe first well above the numbers in play
    r, w = os.pipe()
    pipes[number] = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 20)
    writers[number] = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 20)
    os.close(r)
    os.close(w)
for number, w in writers.items():          # then each write end at its source number
    os.dup2(w, number)
    os.close(w)
script = "; ".join("echo %d >&%d" % (t, t) for t in sorted(mapping))
pid = forkexec.start(["/bin/bash", "-c", script], mapping, {})
for number in sources:
    os.close(number)
code = forkexec.wait(pid)
print(json.dumps({"code": code, "got": {str(n): read_all(pipes[n]).decode() for n in sources}}))
'''


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.integers(min_value=3, max_value=9), st.integers(min_value=3, max_value=9),
                       min_size=1, max_size=5))
def test_any_fd_map_gives_each_target_a_copy_of_its_source(tmp_path_factory, mapping):
    """Targets that are other targets' sources, sources used twice, a target that is its
    own source: each target fd of the child writes into the pipe its source was."""
    tmp = tmp_path_factory.mktemp("fdmap")
    out = driver(FD_MAP_DRIVER.replace("sys.argv[1]", repr(json.dumps(mapping))), tmp)
    got = json.loads(out)
    assert got["code"] == 0
    want = {str(s): "".join("%d\n" % t for t in sorted(mapping) if mapping[t] == s)
            for s in set(mapping.values())}
    assert got["got"] == want
