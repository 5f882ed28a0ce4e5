"""qmail-smtpd's own system calls made to fail, every occurrence, with strace
(tests/faultsweep_smtpd.py): exec'd as tcpserver runs it, handing the message to a forked
qmail-queue or to qmail-queued's socket; and in a qmail-tcpserver worker, traced during one
session, which must then serve the next connection as if nothing happened (same worker, same
fds). Each faulted session ends temporary (4xx, never a 5xx that a retry would not get), says
250 to DATA only with the message whole in the queue, names an unreadable control in the log
with its 421, and logs no traceback or internal bug."""
import os
import subprocess

import pytest

import faultsweep_smtpd as F
from queuedsvc import Queued

def strace_present():
    assert subprocess.run(["strace", "-V"], capture_output=True).returncode == 0, "strace is needed"


def homes(tmp_path, own_queue, count=4):
    """`count` homes laid out alike (the plan's occurrences hold in each), with their qmail-queued
    when not own_queue; (homes, services)."""
    made, services = [], []
    for i in range(count):
        home = F.make_home(str(tmp_path / ("h%d" % i)), own_queue=own_queue)
        if not own_queue:
            services.append(Queued(home, dict(os.environ, QMAILPY_SINGLEUSER="1")).start())
        made.append(home)
    return made, services


def good_plan(home):
    """The plan of a good session in `home` (after a first, untraced run: its imports wrote no .pyc)."""
    first = F.run(home)
    assert F.judge(first, F.queued(home), None) == [] and F.matches(first.replies), first
    F.clear(home)
    good = F.run(home, ["-e", "trace=all"], trace_path=home + ".trace")
    assert F.judge(good, F.queued(home), None) == [] and F.matches(good.replies), good
    F.clear(home)
    return F.plan(good.trace, home)


def kinds(cases, home):
    """What the plan covers, by kind of target, to fail loudly when the trace no longer has them."""
    def kind(target):
        if target.startswith(home + "/control/"):
            return "control"
        if target.startswith(home + "/sessions/authfail"):
            return "authfail"
        if target.startswith(home + "/sessions"):
            return "periplimit"
        return target if not target.startswith(home) else "home"
    return {(name, kind(target)) for name, _, target, _ in cases}


EXPECTED = {("openat", "control"), ("read", "control"), ("newfstatat", "control"), ("close", "control"),
            ("openat", "periplimit"), ("flock", "periplimit"), ("rename", "periplimit"), ("unlink", "periplimit"),
            ("openat", "authfail"), ("read", "authfail"), ("write", "authfail"), ("flock", "authfail"),
            ("read", "stdin"), ("pselect6", "stdin"), ("write", "stdout"), ("pipe2", "pipe"), ("clone", "process"),
            ("wait4", "process"), ("write", "pipe")}
EXPECTED_OWN_QUEUE = {("read", "control"), ("write", "pipe")}        # the message to qmail-queue's fd 0
EXPECTED_QUEUED = {("socket", "socket"), ("connect", "socket"), ("sendto", "socket"), ("recvfrom", "socket")}


@pytest.mark.parametrize("own_queue", [True, False], ids=["forked-qmail-queue", "qmail-queued"])
def test_every_own_call_of_a_session_failing(tmp_path, own_queue):
    strace_present()
    made, services = homes(tmp_path, own_queue)
    try:
        cases = good_plan(made[0])
        want = EXPECTED | (EXPECTED_OWN_QUEUE if own_queue else EXPECTED_QUEUED)
        assert want <= kinds(cases, made[0]), sorted(want - kinds(cases, made[0]))
        failures = F.sweep(made, cases, made[0])
    finally:
        for service in services:
            service.stop()
    assert failures == [], "%d of %d faulted sessions went wrong:\n%s" % (len(failures), len(cases),
                                                                           "\n".join(failures))


def worker_cases(cases, home):
    """The plan's cases that could leave a worker with something: the calls on sessions/ files,
    pipes, processes, qmail-queued's socket, the first read and write of the connection and the
    first open of a control, each with EIO (the exec'd sweep has all the others' replies); not
    close (a close strace fails stays open, which a real failing close does not) nor the worker's
    own reopening of /dev/null once the session is over (left: it ends the worker, exit 111)."""
    last_reply = max(i for i, c in enumerate(cases) if c[2] == "stdout")
    out, seen = [], set()
    for i, (name, n, target, errno) in enumerate(cases):
        if errno != "EIO" or name == "close" or (target == "/dev/null" and i > last_reply):
            continue
        if target in ("stdin", "stdout") or target.startswith(home + "/control/"):
            if (name, target.startswith(home)) in seen:
                continue
            seen.add((name, target.startswith(home)))
        out.append((name, n, target, errno))
    return out


@pytest.mark.parametrize("own_queue", [True, False], ids=["forked-qmail-queue", "qmail-queued"])
def test_a_worker_serves_the_next_session_after_each_fault(tmp_path, own_queue):
    """qmail-tcpserver: the worker traced (strace -p) for one session at a time, a fault in it,
    then a good session: served by the same worker, with the fds it had before."""
    import concurrent.futures
    strace_present()
    made, services = homes(tmp_path, own_queue)
    workers = []
    try:
        for home in made:
            worker = F.Worker(home, tmp_path)
            workers.append(worker)
            for _ in range(2):              # its lazy imports done: the same calls each session
                r, worker.pid = worker.session()
                F.clear(home)
                assert F.matches(r.replies) and r.rc == 0, r
        home = made[0]
        good, pid = workers[0].session(["-e", "trace=all"], home + ".trace")
        F.clear(home)
        assert pid == workers[0].pid and F.matches(good.replies), good
        cases = worker_cases(F.plan(good.trace, home), home)
        want = {("pipe2", "pipe"), ("clone", "process"), ("wait4", "process"), ("write", "pipe")} if own_queue else \
            {("socket", "socket"), ("connect", "socket"), ("sendto", "socket"), ("recvfrom", "socket")}
        assert want | {("read", "stdin"), ("write", "stdout"), ("openat", "periplimit"), ("openat", "authfail")} \
            <= kinds(cases, home), sorted(kinds(cases, home))
        shares = [[(n, k, t.replace(home, w.home), e) for n, k, t, e in cases[i::len(workers)]]
                  for i, w in enumerate(workers)]
        with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
            failures = [f for got in pool.map(F.worker_sweep, workers, shares) for f in got]
    finally:
        for worker in workers:
            worker.stop()
        for service in services:
            service.stop()
    assert failures == [], "%d of %d faulted sessions went wrong:\n%s" % (len(failures), len(cases),
                                                                           "\n".join(failures))
