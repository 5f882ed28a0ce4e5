"""The spawn loop (qmailpy.spawn.server) in-process, for the faults no real spawn meets on demand:
a message of the wrong owner, a pipe or pidfd the kernel refuses, reads that fail or wake early.

A shell script stands in for qmail-local; the reports are qmail-lspawn's (lspawn.report), read
back as qmail-send would read them.
"""
import os
import resource
import signal
import subprocess
import sys
import tempfile

import pytest

from qmailpy.proto import spawnwire
from qmailpy.spawn import lspawn, server
from test_send_support import NOBODY, no_hang, queue_message, scratch  # noqa: F401 (scratch: fixture)


class Shell:
    """A spawn.c `Program` whose deliveries run `script` under /bin/sh, the message on fd 0."""
    channel = "local"
    truncreport = 3000
    unread = None

    def __init__(self, script):
        self.script, self.started = script, []

    def refresh(self):
        pass

    def preload(self):
        pass

    def spawn(self, fdmess, fdout, sender, recip, at):
        self.started.append(recip)
        return subprocess.Popen(["/bin/sh", "-c", self.script], stdin=fdmess, stdout=fdout, stderr=fdout)

    def report(self, status, output):
        return lspawn.report(status, output)

    def drops_output(self, status):
        return False


def serve(home, program, commands, qmailq_uid=None, fd_in=None):
    """Run the loop to its end over `commands` [(delnum, messid, recipient)], or over what
    `fd_in` gives; the reports in the order written, as [(delnum, kind + text)]."""
    r = fd_in
    if r is None:
        r, w = os.pipe()
        os.write(w, b"".join(spawnwire.encode_command(n, os.fsencode(m), b"a@b", rcpt) for n, m, rcpt in commands))
        os.close(w)
    try:
        with no_hang(20, "the spawn loop hangs"), tempfile.TemporaryFile() as out:
            assert server.Server(home, program, 10, qmailq_uid, fd_in=r, fd_out=out.fileno()).serve() == 0
            out.seek(0)
            decoder = spawnwire.ReportDecoder()
            got = decoder.feed(out.read())
    finally:
        if fd_in is None:
            os.close(r)
    assert decoder.limit == 10
    return [(rep.delnum, rep.kind + rep.text) for rep in got]


def test_a_message_qmailq_does_not_own_is_never_delivered(scratch):
    """spawn.c: a mess file is written by qmail-queue as qmailq; one of another owner (put
    there by whoever could write mess/) is `wrong owner`, a deferral, and nothing is run."""
    messid = queue_message(scratch.home)
    program = Shell("cat >/dev/null; echo did 0+0+1")
    assert serve(scratch.home, program, [(0, messid, b"joe@localhost")], qmailq_uid=NOBODY) == [
        (0, b"ZSorry, message has wrong owner. (#4.3.5)\n")]
    assert program.started == []
    os.chown(os.path.join(scratch.home, "queue", "mess", messid), NOBODY, -1)
    assert serve(scratch.home, program, [(1, messid, b"joe@localhost")], qmailq_uid=NOBODY) == [(1, b"Kdid 0+0+1\n")]
    assert program.started == [b"joe@localhost"]


def test_the_message_owner_to_check_is_qmailqs_unless_single_user(monkeypatch):
    import pwd

    class Qmailq:
        pw_uid = 4321
    users = {"qmailq": Qmailq}

    def getpwnam(name):
        return users[name]
    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    assert server.qmailq_uid({}) == 4321
    assert server.qmailq_uid({"QMAILPY_SINGLEUSER": "1"}) is None
    del users["qmailq"]                  # a host without qmail's users: no owner to compare with
    assert server.qmailq_uid({}) is None


def test_a_message_that_cannot_be_fstatted_is_a_deferral(scratch, monkeypatch):
    messid = queue_message(scratch.home)
    real, calls = os.fstat, []

    def fstat(fd):
        calls.append(fd)
        if len(calls) == 2:              # open_regular's is the first; the owner check's the second
            raise OSError(5, "Input/output error")
        return real(fd)
    monkeypatch.setattr(server.os, "fstat", fstat)
    program = Shell("echo did 0+0+1")
    assert serve(scratch.home, program, [(0, messid, b"joe@localhost")]) == [
        (0, b"Zqmail-spawn unable to fstat message. (#4.3.0)\n")]
    assert program.started == []


def test_a_pipe_the_kernel_refuses_is_a_deferral_and_the_next_delivery_runs(scratch, monkeypatch):
    messid = queue_message(scratch.home)
    real, calls = os.pipe2, []

    def pipe2(flags):
        calls.append(flags)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        return real(flags)
    monkeypatch.setattr(server.os, "pipe2", pipe2)
    program = Shell("cat >/dev/null; echo did 0+0+1")
    assert serve(scratch.home, program, [(0, messid, b"joe@localhost"), (1, messid, b"bob@localhost")]) == [
        (0, b"Zqmail-spawn unable to create pipe. (#4.3.0)\n"), (1, b"Kdid 0+0+1\n")]
    assert program.started == [b"bob@localhost"]


def test_without_a_pidfd_the_report_is_still_the_whole_output(scratch, monkeypatch):
    """pidfd_open() refused (EMFILE) after the child started: the loop waited for the child
    at once, without reading its pipe, so a child with more to say than a pipe holds never
    exited (and with it every other delivery), and the report lost what the child said (a
    bounce with no reason). The child is reaped once its pipe is at end of file instead."""
    messid = queue_message(scratch.home)

    def refused(pid):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(server.os, "pidfd_open", refused)
    program = Shell("cat >/dev/null; yes 'no mailbox here' | head -c 100000; exit 100")
    got = dict(serve(scratch.home, program, [(0, messid, b"joe@localhost"), (1, messid, b"bob@localhost")]))
    assert got[0].startswith(b"Dno mailbox here\nno mailbox here\n")
    assert server.TRUNCMESS in got[0] and len(got[0]) <= 1 + 3000     # spawn.c's cut, as with a pidfd
    assert got[1] == got[0]
    small = Shell("cat >/dev/null; echo 'Sorry, no mailbox here by that name. (#5.1.1)'; exit 100")
    assert serve(scratch.home, small, [(2, messid, b"joe@localhost")]) == [
        (2, b"DSorry, no mailbox here by that name. (#5.1.1)\n")]


def commands_pipe(*commands):
    """A pipe holding `commands` [(delnum, messid, recipient)], its write end closed; the read end."""
    r, w = os.pipe()
    os.write(w, b"".join(spawnwire.encode_command(n, os.fsencode(m), b"a@b", rcpt) for n, m, rcpt in commands))
    os.close(w)
    return r


@pytest.mark.parametrize("fault,want", [
    (BlockingIOError(11, "Resource temporarily unavailable"), b"ZTemporary trouble. (#4.3.0)\n"),   # woke early
    (OSError(5, "Input/output error"), b"Z"),                  # the output ends there; the status decides
])
def test_a_report_pipe_that_wakes_early_or_fails_to_read(scratch, monkeypatch, fault, want):
    messid = queue_message(scratch.home)
    commands = commands_pipe((0, messid, b"joe@localhost"))
    real, faults = os.read, [fault]

    def read(fd, n):
        if sys._getframe(1).f_code is server.Server.collect.__code__ and faults:   # the report pipe's
            raise faults.pop()
        return real(fd, n)
    monkeypatch.setattr(server.os, "read", read)
    program = Shell("cat >/dev/null; echo 'Temporary trouble. (#4.3.0)'; exit 111")
    try:
        assert serve(scratch.home, program, None, fd_in=commands) == [(0, want)]
    finally:
        os.close(commands)
    assert faults == []


def test_a_command_input_that_fails_is_the_end_of_input(scratch, monkeypatch):
    """A read error on qmail-send's command pipe is as its end: the loop takes no new command,
    finishes the deliveries it runs (their reports written) and exits 0. A read that would
    block (woken early) is only waited out."""
    messid = queue_message(scratch.home)
    first = spawnwire.encode_command(4, os.fsencode(messid), b"a@b", b"joe@localhost")
    commands = commands_pipe((4, messid, b"joe@localhost"), (5, messid, b"bob@localhost"))
    real, calls = os.read, []

    def read(fd, n):
        if sys._getframe(1).f_code is not server.Server.commands.__code__:
            return real(fd, n)
        calls.append(fd)
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        if len(calls) == 2:
            return real(fd, len(first))
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(server.os, "read", read)
    program = Shell("cat >/dev/null; sleep 0.3; echo did 0+0+1")
    try:
        assert serve(scratch.home, program, None, fd_in=commands) == [(4, b"Kdid 0+0+1\n")]
    finally:
        os.close(commands)
    assert program.started == [b"joe@localhost"] and len(calls) == 3


def test_a_report_that_cannot_be_written_is_dropped_and_the_deliveries_go_on(scratch):
    """qmail-send gone (its end of the report pipe closed): reports are dropped, as in qmail,
    the report pipe is closed (spawn.c's okwrite()), and the loop still runs what it was given
    to its end."""
    messid = queue_message(scratch.home)
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(out_r)
    os.write(w, spawnwire.encode_command(0, os.fsencode(messid), b"a@b", b"joe@localhost"))
    os.close(w)
    program = Shell("cat >/dev/null; echo did 0+0+1")
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        s = server.Server(scratch.home, program, 10, fd_in=r, fd_out=out_w)
        assert s.serve() == 0
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.close(r)
    assert program.started == [b"joe@localhost"] and not s.writing
    with pytest.raises(OSError):            # closed by the server, not left for nobody to read
        os.fstat(out_w)


def test_delnum_in_use_and_messid_too_long(scratch):
    """spawn.c's checks before anything runs: a delivery number still running, a messid of
    100 bytes with its NUL (99 is the most)."""
    messid = queue_message(scratch.home)
    program = Shell("cat >/dev/null; sleep 0.3; echo did 0+0+1")
    got = serve(scratch.home, program, [(0, messid, b"joe@localhost"), (0, messid, b"bob@localhost"),
                                        (1, "1/" + "9" * 98, b"joe@localhost"), (2, "1/" + "9" * 97, b"joe@localhost")])
    assert got == [(0, b"ZInternal error: delnum in use. (#4.3.5)\n"),
                   (1, b"DInternal error: messid too long. (#5.3.5)\n"),
                   (2, b"Zqmail-spawn unable to open message. (#4.3.0)\n"),
                   (0, b"Kdid 0+0+1\n")]
    assert program.started == [b"joe@localhost"]


@pytest.mark.parametrize("limits,settable,want,raised", [
    ((1024, 1024), False, (1024 - 64) // 3, None),          # the hard limit allows no more
    ((1024, 4096), True, 500, 3 * 500 + 64),
    ((1024, 4096), False, (1024 - 64) // 3, None),         # setrlimit refused (a container's policy)
    ((1024, 1200), True, (1200 - 64) // 3, 1200),
    ((100, 100), False, 12, None),
    ((60, 60), False, 1, None),
    ((resource.RLIM_INFINITY, resource.RLIM_INFINITY), True, 500, None),
])
def test_spawn_limit_fits_the_descriptors_it_can_have(monkeypatch, limits, settable, want, raised):
    """The concurrency qmail-send is told: what RLIMIT_NOFILE leaves (3 fds a delivery, 64
    spare) after raising the soft limit as far as needed and allowed, never more than 500."""
    set_to = []

    def setrlimit(which, value):
        if not settable:
            raise ValueError("not allowed to raise maximum limit")
        set_to.append(value[0])
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert server.spawn_limit() == want
    assert set_to == ([raised] if raised else [])


def test_a_fork_the_kernel_refuses_is_a_deferral(scratch):
    """spawn.c: `Zqmail-spawn unable to fork.` for a delivery that cannot be started; the next runs."""
    messid = queue_message(scratch.home)

    class Refusing(Shell):
        def spawn(self, fdmess, fdout, sender, recip, at):
            if not self.started:
                self.started.append(None)
                raise BlockingIOError(11, "Resource temporarily unavailable")
            return super().spawn(fdmess, fdout, sender, recip, at)
    program = Refusing("cat >/dev/null; echo did 0+0+1")
    assert serve(scratch.home, program, [(0, messid, b"joe@localhost"), (1, messid, b"bob@localhost")]) == [
        (0, server.NO_FORK), (1, b"Kdid 0+0+1\n")]


def test_started_with_fd_0_closed_it_writes_its_limit_and_exits(scratch):
    r, w = os.pipe()
    os.close(r)
    os.close(w)                                   # r: a closed descriptor, as fd 0 of `qmail-lspawn <&-`
    with tempfile.TemporaryFile() as out:
        assert server.Server(scratch.home, Shell("true"), 10, fd_in=r, fd_out=out.fileno()).serve() == 0
        out.seek(0)
        decoder = spawnwire.ReportDecoder()
        assert decoder.feed(out.read()) == [] and decoder.limit == 10


def test_a_wait_that_fails_is_tried_again_and_never_taken_for_an_exit_0(scratch, monkeypatch, capfd):
    """wait4 failing (ECHILD, EIO) for a qmail-local that exited 111: Popen.wait() took ECHILD
    for an exit 0, a K for a delivery that deferred. The wait is tried again; a child that
    cannot be waited for at all is a crash (Z), one line logged, and the loop goes on."""
    messid = queue_message(scratch.home)
    real, failures = os.waitpid, []

    def waitpid(pid, options):
        if failures:
            raise failures.pop(0)
        return real(pid, options)
    monkeypatch.setattr(os, "waitpid", waitpid)
    program = Shell("cat >/dev/null; echo deferred; exit 111")
    failures[:] = [ChildProcessError(10, "No child processes"), OSError(5, "Input/output error")]
    assert serve(scratch.home, program, [(0, messid, b"joe@localhost")]) == [(0, b"Zdeferred\n")]
    failures[:] = [ChildProcessError(10, "No child processes")] * server.WAIT_TRIES
    assert serve(scratch.home, program, [(1, messid, b"joe@localhost")]) == [(1, b"Zqmail-local crashed.\n")]
    program.drops_output = lambda status: status < 0      # as lspawn.Local: a crash's output is logged
    failures[:] = [ChildProcessError(10, "No child processes")] * server.WAIT_TRIES
    capfd.readouterr()
    assert serve(scratch.home, program, [(2, messid, b"joe@localhost")]) == [(2, b"Zqmail-local crashed.\n")]
    assert capfd.readouterr().err == ("alert: delivery of msg %s to local joe@localhost could not be waited for: "
                                      "deferred\n" % messid.split("/")[1])
