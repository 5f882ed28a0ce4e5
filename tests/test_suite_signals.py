"""The suite started with SIGINT and SIGQUIT ignored (by a shell without job control: `make
test &` in a script) takes them back (conftest.unignored_signals()), so that the programs its
tests start and interrupt do not inherit the ignore."""
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import signal, subprocess, sys
sys.path.insert(0, sys.argv[1])
import conftest
conftest.unignored_signals()
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.getsignal(signal.SIGQUIT) is signal.SIG_DFL)
sys.stdout.flush()
subprocess.run(["grep", "^SigIgn:", "/proc/self/status"])
"""


def ignore_int_quit():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def test_a_suite_started_with_sigint_and_sigquit_ignored_takes_them_back():
    out = subprocess.run([sys.executable, "-c", CHILD, HERE], preexec_fn=ignore_int_quit, capture_output=True,
                         text=True, check=True, timeout=60).stdout.splitlines()
    assert out[0] == "True True", out
    ignored = int(out[1].split()[1], 16)         # what a program a test starts inherits
    assert not ignored & (1 << (signal.SIGINT - 1) | 1 << (signal.SIGQUIT - 1)), out
