"""Shared fixtures: a scratch qmail home and the paths of the programs under test."""
import os
import subprocess

import pytest

import services

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Nothing the suite starts may ask the machine's resolver (traffic stays on 127.0.0.1):
# programs that look up DNS without a test server of their own get a dead local one.
os.environ["DNSCACHEIP"] = "127.0.0.1:1"
os.environ.setdefault("DNSTIMEOUT", "0.2")
# The daemons stay the invoking user whether or not qmail's users exist on this
# machine (tests/test_production.py clears this to test privilege separation).
os.environ["QMAILPY_SINGLEUSER"] = "1"
BIN = os.path.join(ROOT, "bin")


def pytest_configure(config):
    """Under `make mutate`, mutmut's stats run marks this process MUTANT_UNDER_TEST=stats.
    Programs the tests start would inherit it and try to record calls in a process that
    is not mutmut's: drop it from the environment; mutmut keeps its own copy in-process.
    As root, the suite's own /etc without qmail's accounts (tests/privateetc.py), made here,
    before the workers start, so that they and everything they run have it. SIGINT and
    SIGQUIT as a terminal's shell gives them (unignored_signals())."""
    unignored_signals()
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        del os.environ["MUTANT_UNDER_TEST"]
    import privateetc
    try:
        config._qmailpy_etc = privateetc.isolate()
    except (OSError, subprocess.CalledProcessError) as e:   # e.g. a container without CAP_SYS_ADMIN
        config._qmailpy_etc = "cannot make it (%s): the host's accounts are seen" % e


def unignored_signals():
    """A shell without job control starts a background command (`make test &` in a script, a CI
    runner's step) with SIGINT and SIGQUIT ignored, and an ignored signal stays ignored across
    fork and exec: every program a test starts would then ignore them, and the tests that
    interrupt one (svc -i, a worker's exit 130) would hang or fail. The suite's processes
    take them back: Python's own SIGINT handler, the default SIGQUIT."""
    import signal
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def pytest_report_header(config):
    etc = getattr(config, "_qmailpy_etc", "")
    return "qmailpy: the suite's /etc: %s" % (os.environ.get("QMAILPY_SUITE_ETC") if os.path.isdir(etc) else etc)


def pytest_unconfigure(config):
    etc = getattr(config, "_qmailpy_etc", "")
    if os.path.isdir(etc):
        import privateetc
        privateetc.release(etc)


def program(name):
    """Absolute path of a launcher in bin/ (made by `make`)."""
    path = os.path.join(BIN, name)
    assert os.access(path, os.X_OK), "%s missing: run make" % path
    return path


class Home:
    """A scratch qmail home: control files are written with .control()."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "control"), exist_ok=True)

    def control(self, name, text):
        path = os.path.join(self.root, "control", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def env(self, **extra):
        env = dict(os.environ, QMAILHOME=self.root)
        env.update(extra)
        return env

    def run(self, name, *args, input=None, env=None, **kw):
        return subprocess.run([program(name), *args], input=input, capture_output=True,
                              env=env or self.env(), timeout=60, **kw)


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "qmail")


@pytest.fixture(scope="session")
def mariadb():
    """MariaDB at 127.0.0.1:3306 for the tests that need it: the machine's, or one this
    session starts (and stops at its end); none to be had fails those tests."""
    reason = services.mariadb_server()
    if reason:
        services.missing("mariadb", reason)
    yield (services.MYSQL_HOST, services.MYSQL_PORT)
    services.stop_started()


@pytest.fixture
def host_accounts():
    """For a test that makes qmail's system accounts (install as root): made ones are removed
    afterwards, under a machine-wide lock (tests/hostaccounts.py). Yields those present before."""
    from hostaccounts import kept_as_found
    with kept_as_found() as before:
        yield before


@pytest.fixture(scope="session", autouse=True)
def host_accounts_left_as_found():
    """A safety net for a test that made accounts without the fixture above: whatever this
    session made is removed at its end (under the same lock)."""
    import fcntl
    from hostaccounts import LOCK, accounts_present, remove_accounts
    before = accounts_present()
    yield
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_accounts(accounts_present() - before)
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def environment_as_the_suite_set_it():
    """Each test leaves os.environ as the suite set it (above). Code run in-process that
    replaces its process's environment, as a tcpserver session does in its worker, once
    left the next tests without PATH and QMAILPY_SINGLEUSER: programs they started dropped
    to qmail's users, and sendmail -bs, seeing PROTO, skipped its own environment."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)
