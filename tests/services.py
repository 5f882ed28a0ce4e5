"""The real services the suite needs, and what happens when one is missing.

A test that needs clamd, spamd, Dovecot, MariaDB, Postfix's smtp-sink or a private Postfix and cannot
have it fails with the reason: a skip would pass CI. The one way out is a developer's
explicit opt-out, $QMAILPY_TEST_WITHOUT (docs/development.md): service names separated
by commas or blanks (clamd, spamd, dovecot, mariadb, smtp-sink, postfix), or `all`; those tests
are then skipped and say so.

MariaDB is the machine's (127.0.0.1:3306, root, no password). When it does not answer
and no mariadbd runs, mariadb_server() starts one as the machine's docs say, and
stop_started() stops that one (by pid) when the session ends.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

OPT_OUT = "QMAILPY_TEST_WITHOUT"
SERVICES = ("clamd", "spamd", "dovecot", "mariadb", "smtp-sink", "postfix")
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
MARIADBD = "/usr/sbin/mariadbd"

_started = []        # pids of the daemons this session started


def opted_out(service):
    assert service in SERVICES, service
    names = os.environ.get(OPT_OUT, "").replace(",", " ").split()
    return service in names or "all" in names


def missing(service, reason):
    """Fail the test (or skip it, if the developer opted out of `service`)."""
    if opted_out(service):
        pytest.skip("%s (%s=%s)" % (reason, OPT_OUT, os.environ[OPT_OUT]))
    pytest.fail("%s; set %s=%s to skip these tests on a machine without it" % (reason, OPT_OUT, service),
                pytrace=False)


def _answers(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pids(exe):
    r = subprocess.run(["pidof", exe], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def mariadb_server(wait=60):
    """None once MariaDB answers on 127.0.0.1:3306, else the reason it does not."""
    if _answers(MYSQL_HOST, MYSQL_PORT):
        return None
    if not _pids(MARIADBD):
        if not os.path.exists(MARIADBD):
            return "MariaDB is not installed (%s)" % MARIADBD
        if os.getuid() != 0:
            return "MariaDB is not running at %s:%d and starting it needs root" % (MYSQL_HOST, MYSQL_PORT)
        r = subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", MARIADBD],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            return "start-stop-daemon could not start %s: %s" % (MARIADBD, (r.stderr or r.stdout).strip())
        _started.extend(_pids(MARIADBD))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _answers(MYSQL_HOST, MYSQL_PORT):
            return None
        time.sleep(0.2)
    return "MariaDB does not answer at %s:%d (waited %d s)" % (MYSQL_HOST, MYSQL_PORT, wait)


def stop_started(wait=60):
    """SIGTERM the daemons this session started and wait for them to exit."""
    while _started:
        pid = _started.pop()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
            time.sleep(0.2)
