"""What every program's main() does first: SIGCHLD back to default, and `--help`.

SIGCHLD: an ignored signal stays ignored across exec, so a parent that ignores
SIGCHLD (swaks --pipe, some inetd setups) hands that on. Then the kernel reaps
our children by itself: waitpid() fails with ECHILD, and subprocess reports such
a child as having exited 0. qmail-smtpd would lose qmail-queue's answer after
DATA (the client retries a message that was queued), a failed delivery program
would look like a success. Setting the default back also gives it back to every
program we start.

`--help`: qmail's programs take no options (their arguments are a checkpassword
program, a default delivery, a host...), so `--help` as the only argument can be
nothing else: print the usage on stdout and exit 0, before anything starts.

LC_CTYPE: where the locale is C, Python's start-up sets LC_CTYPE=C.UTF-8 in its own
environment (PEP 538), and every program we start would inherit it (a .qmail
`|program`, qmail-local's, qmail-send's helpers); qmail's programs pass their
environment on unchanged. The environment we were started with (/proc/self/environ)
has the caller's LC_CTYPE, or none, and that is put back.
Closed standard descriptors: a program started with fd 0, 1 or 2 closed would have the
first file it opens land there (qmail-todo's trigger FIFO read as qmail-send's commands,
for ever; qmail-lspawn's selector registering itself). Each closed one is held by an
O_PATH descriptor of /dev/null: reading or writing it still fails with EBADF, as the
closed descriptor did (qmail-inject: `read error`), and nothing else can take its place.
Imports only the C signal module: qmail-smtpd and qmail-queue start per message.
"""
import _signal
import os
import sys

HELP = "--help"


def start(usage=None, argv=None):
    """Call first in main(): reset SIGCHLD; with a usage text, answer `--help` (SystemExit 0)."""
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    hold_closed_std_fds()
    if "LC_CTYPE" in os.environ:
        callers_locale(os.environb)
    argv = sys.argv if argv is None else argv
    if usage is not None and list(argv[1:]) == [HELP]:
        data = (usage.rstrip("\n") + "\n").encode()
        try:
            while data:
                data = data[os.write(1, data):]
        except OSError:
            pass
        raise SystemExit(0)


def hold_closed_std_fds():
    """Put an O_PATH descriptor (EBADF on read and write) on each of fds 0-2 that is closed."""
    for fd in (0, 1, 2):           # in order: every lower one is open (or held) by now
        try:
            os.fstat(fd)
        except OSError:
            os.set_inheritable(os.open("/dev/null", os.O_PATH), True)   # the lowest free descriptor: fd


def callers_locale(environ, path="/proc/self/environ"):
    """Put back in `environ` (bytes keys) the LC_CTYPE of the environment at exec, or remove
    it when there was none: undo Python's locale coercion. No /proc: left as it is."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return
    for entry in data.split(b"\0"):
        if entry.startswith(b"LC_CTYPE="):
            environ[b"LC_CTYPE"] = entry[len(b"LC_CTYPE="):]          # getenv(): the first one
            return
    environ.pop(b"LC_CTYPE", None)


def ignored_signals():
    """The signals ignored now: what an exec from here would hand on as ignored."""
    return frozenset(s for s in _signal.valid_signals() if _getsignal(s) is _signal.SIG_IGN)


def _getsignal(signum):
    try:
        return _signal.getsignal(signum)
    except (OSError, ValueError):            # RT signals Python may not read
        return None


def fresh_signals(ignored=None):
    """Signals as a newly exec'd interpreter has them, for a forked child that runs a
    program's main() in place of exec'ing it: a caught signal back to its default, an
    ignored one left ignored (`ignored`: that set, by default the one ignored now), as
    execve does; then Python's own start-up settings (SIGPIPE and SIGXFSZ ignored,
    SIGINT raising KeyboardInterrupt unless it is ignored), and nothing blocked."""
    ignored = ignored_signals() if ignored is None else ignored
    for signum in _signal.valid_signals():
        if signum in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        want = _signal.SIG_IGN if signum in ignored else _signal.SIG_DFL
        try:
            if _signal.getsignal(signum) is not want:
                _signal.signal(signum, want)
        except (OSError, ValueError):        # RT signals Python may not set
            pass
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    if _signal.SIGINT not in ignored:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    _signal.set_wakeup_fd(-1)
