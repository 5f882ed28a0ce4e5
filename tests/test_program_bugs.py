"""A bug (an exception a program did not expect) is one line on stderr, never a traceback.

Every program's stderr is multilog's input (the run scripts' exec 2>&1), which would
make each line of a Python traceback an event of its own. log.guard on every main():
`PROGRAM: internal bug: TYPE: TEXT at FILE:LINE:FUNCTION < ...` (innermost frame first)
and the program's exit code for trouble. The programs here are run as their launchers
run them, with one function replaced by a bug (a driver script, as test_spawn_fork.py's).
"""
import os
import re
import socket
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT
from qmailpy.log import bug_text, guard

sys.path.insert(0, os.path.join(ROOT, "tools"))
from mklaunchers import programs  # noqa: E402

BUG = "KeyError: 'a bug\\\\nsecond line'"      # str(KeyError) is its repr; the '\' escaped again
DRIVER = r'''
import sys
sys.path[:0] = %(paths)r
import %(module)s as target
def %(name)s(*args, **kwargs):
    raise KeyError("a bug\nsecond line")
target.%(name)s = %(name)s
sys.argv[0] = %(program)r
sys.exit(target.main())
'''


def run_with_bug(program, module, name, env, stdin=None):
    """(exit code, stderr lines) of `program` whose module.name raises a KeyError."""
    driver = DRIVER % dict(paths=[str(ROOT), sysconfig.get_paths()["purelib"]], module=module, name=name,
                           program=program)
    r = subprocess.run([sys.executable, "-IS", "-c", driver], env=env, input=stdin, capture_output=True,
                       timeout=60)
    return r.returncode, r.stderr.decode().splitlines()


def assert_bug_line(line, program, name, outer):
    """`program: internal bug: KeyError: ... at <string>:6:name < OUTER:LINE:main ...`."""
    assert re.fullmatch(r"%s: internal bug: %s at <string>:6:%s < %s:\d+:\w+( < [^ ]+:\d+:\w+)*"
                        % (re.escape(program), re.escape(BUG), name, re.escape(outer)), line), line


def test_every_program_is_guarded():
    """Each console script's main() is log.guard's: a new program is covered when it is declared."""
    import importlib
    for name, module, func in programs(os.path.join(ROOT, "setup.cfg")):
        main = getattr(importlib.import_module(module), func)
        assert isinstance(getattr(main, "trouble", None), int), name


@pytest.mark.parametrize("program,module,name,outer,code", [
    ("qmail-send", "qmailpy.send.main", "Controls", "qmailpy/send/main.py", 111),
    ("qmail-queue", "qmailpy.queue.main", "run", "qmailpy/queue/main.py", 81),     # qmail's "internal bug"
    ("sendmail", "qmailpy.inject.sendmail", "run", "qmailpy/inject/sendmail.py", 111),
    ("qmail-newmrh", "qmailpy.cli.newmrh", "run_tool", "qmailpy/cli/newmrh.py", 111),
])
def test_a_bug_in_a_program_is_one_line_and_its_trouble_code(tmp_path, program, module, name, outer, code):
    env = dict(os.environ, QMAILHOME=str(tmp_path))
    rc, lines = run_with_bug(program, module, name, env, stdin=b"")
    assert rc == code
    assert len(lines) == 1, lines
    assert_bug_line(lines[0], program, name, outer)


def test_a_bug_in_a_tcpserver_worker_is_one_line_and_exit_111():
    """A worker's loop (outside any session: here a connection message it cannot parse)."""
    from qmailpy.tcpserver import worker
    parent, chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the worker: never returns (os._exit)
        try:
            os.dup2(wfd, 2)
            parent.close()
            worker.parse_connection = lambda data: {}[data]
            worker.serve(chan, type("Opts", (), {"verbosity": 0, "family": socket.AF_INET})(), None, [])
        finally:
            os._exit(99)
    os.close(wfd)
    chan.close()
    a, b = socket.socketpair()
    socket.send_fds(parent, [b"1.2.3.4 25"], [a.fileno()])
    a.close()
    _, status = os.waitpid(pid, 0)
    with os.fdopen(rfd, "rb") as f:
        lines = f.read().decode().splitlines()
    parent.close()
    b.close()
    assert os.waitstatus_to_exitcode(status) == 111
    assert len(lines) == 1, lines
    assert re.fullmatch(r"qmail-tcpserver: internal bug: KeyError: b'1\.2\.3\.4 25' at "
                        r"test_program_bugs\.py:\d+:<lambda> < qmailpy/tcpserver/worker\.py:\d+:serve", lines[0]), lines


def test_a_bug_in_a_tcpserver_session_is_one_line_and_exit_1(capfd):
    """The program a session runs raised: the worker logs one line and reports qmail-smtpd's bug exit."""
    from qmailpy.tcpserver import child
    opts = type("Opts", (), dict(verbosity=0, kill_ip_options=False, delay=True, banner="", localhost="l.example",
                                 remotehost=False, remoteinfo=False, rules=None, args=[]))()

    def runner(args, environ):
        raise ValueError("no\rsuch thing")
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    sock, peer = listener.accept()
    saved = os.dup(0), os.dup(1)
    try:                            # the session replaces os.environ: conftest gives pytest's back
        code = child.session(sock, peer, opts, runner, [], lambda line: None)
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in saved:
            os.close(fd)
        client.close()
        listener.close()
    lines = capfd.readouterr().err.splitlines()
    assert code == 1
    assert len(lines) == 1, lines
    assert re.fullmatch(r"qmail-tcpserver: internal bug: ValueError: no\\rsuch thing at "
                        r"test_program_bugs\.py:\d+:runner < qmailpy/tcpserver/child\.py:\d+:session", lines[0]), lines


def test_bug_text_names_the_innermost_frames_first():
    def inner():
        raise OSError("deep")

    def middle():
        inner()
    try:
        middle()
    except OSError as e:
        text = bug_text(e)
    assert re.fullmatch(r"OSError: deep at test_program_bugs\.py:\d+:inner < test_program_bugs\.py:\d+:middle"
                        r" < test_program_bugs\.py:\d+:test_bug_text_names_the_innermost_frames_first", text), text


def test_a_bug_in_the_handler_still_gives_the_trouble_code(capfd):
    """An exception whose text cannot be made (its __str__ fails), and stderr closed: still the code."""
    class Odd(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    @guard("qmail-test", 111)
    def main():
        raise Odd()
    assert main() == 111
    assert re.fullmatch(r"qmail-test: internal bug: Odd: \(unprintable\) at test_program_bugs\.py:\d+:main",
                        capfd.readouterr().err.strip())

    @guard("qmail-test", 111)
    def exits():
        raise SystemExit(3)
    with pytest.raises(SystemExit):               # SystemExit and KeyboardInterrupt keep their meaning
        exits()
