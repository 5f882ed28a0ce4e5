"""qmail-queued's own trouble, the kind an admin meets: a sock/ others may write, a service that
cannot start, no descriptor or thread left for a client, a bug outside an insertion, a second
SIGTERM while it stops. What must hold: one clear log line, supervise's restart code, a
temporary answer to the client (never a half-written message), and the service going on."""
import os
import subprocess
import re
import resource
import signal
import socket
import stat
import threading
import time

import pytest

from qmailpy import exitcodes as X
from qmailpy import paths, privs
from qmailpy.proto import qqsock
from qmailpy.queue import sockclient
from qmailpy.queued import conn as C, main as Q
from queuedsvc import QUEUED, Queued
from test_queue import ENV, MSG, QMAIL_QUEUE, debris, qenv, run_qq
import test_queued
from test_queued import InProcess, raw_client, read_answer

home = test_queued.home          # the fixture: a queue and control/


def test_a_sock_directory_others_may_write_is_made_roots_0755(home, tmp_path):
    """sock/ holds every service's socket, bound by root: a directory another user owns or may
    write would let that user replace sock/qmail-queue with a socket of its own."""
    sock = home / "sock"
    sock.mkdir()
    os.chown(sock, 65534, 65534)
    os.chmod(sock, 0o777)
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    try:
        assert run_qq(home)[:2] == (0, "")
    finally:
        service.stop()
    st = sock.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert log.read_text().splitlines()[0] == \
        "qmail-queued: warning: %s was uid 65534 mode 0777: made root's, 0755" % sock


def test_a_service_that_cannot_bind_its_socket_says_so_and_exits_111(home, tmp_path):
    """A directory where sock/qmail-queue belongs: the socket bound beside it cannot be renamed
    over it. One alert line, exit 111 after a second (supervise restarts it, not in a tight
    loop), and the socket bound under its temporary name is not left behind."""
    (home / "sock" / "qmail-queue").mkdir(parents=True)
    (home / "sock" / "qmail-queue" / "x").write_bytes(b"")
    t0 = time.monotonic()
    p = subprocess.run([QUEUED], env=dict(os.environ, QMAILHOME=str(home)),
                       capture_output=True, timeout=30)
    assert p.returncode == 111 and time.monotonic() - t0 >= 1
    assert re.fullmatch(r"qmail-queued: alert: cannot start: \[Errno 21\] Is a directory: "
                        r"'%s\.\d+' -> '%s'\n" % (re.escape(str(home / "sock" / "qmail-queue")),
                                                 re.escape(str(home / "sock" / "qmail-queue"))),
                        p.stderr.decode()), p.stderr
    assert sorted(os.listdir(home / "sock")) == ["qmail-queue"]


def test_no_descriptor_left_to_accept_is_logged_and_the_client_is_served_later(home, tmp_path):
    """EMFILE from accept(): a warning, a pause, and the waiting connection is taken once a
    descriptor is free again; the service neither exits nor spins. Its descriptor limit is
    lowered from outside (prlimit) to the lowest free descriptor, then put back. A client accepted
    while no descriptor is left for the insertion's files is answered 55 (temporary)."""
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    pid = service.proc.pid
    try:
        deadline = time.monotonic() + 10
        while "code 54" not in log.read_text():      # Queued.start()'s probe is done with
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.1)
        used = {int(n) for n in os.listdir("/proc/%d/fd" % pid)}
        lowest_free = min(set(range(len(used) + 1)) - used)
        limit = resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]))
        first = raw_client(home)      # taken in the descriptor the waiting accept() held already;
                                      # answered before it sends anything (the controls come first)
        assert read_answer(first) == (X.QQ_CONFIG, 0, "unable to read controls: control/me: unable to read: "
                                                      "Too many open files")
        first.close()
        waiting = raw_client(home)
        waiting.sendall(b"1:x,0:,Fa@b\0Tc@d\0\0")
        deadline = time.monotonic() + 10
        while "Too many open files" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        assert service.proc.poll() is None
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limit)
        assert read_answer(waiting)[0] == 0, log.read_text()
        waiting.close()
        assert run_qq(home)[:2] == (0, "")
    finally:
        assert service.stop() == 0
    lines = log.read_text().splitlines()
    warned = lines.count("qmail-queued: warning: accept: Too many open files")
    assert warned == 1, lines              # tried every 0.1 s, said once (a minute's lines: accept_failed)
    assert [ln for ln in lines if "warning" not in ln][3:] == ["qmail-queued: exiting"]
    assert len(os.listdir(home / "queue" / "todo")) == 2


def test_a_failing_accept_is_said_once_a_minute_with_the_count_between(home, capfd):
    """accept() is tried every 0.1 s while it fails: the first failure is a line, the same one
    again only a minute later with the failures in between counted; another reason at once."""
    svc = InProcess(home)
    try:
        capfd.readouterr()
        s = svc.service
        for now in (1000.0, 1000.1, 1030.0, 1059.9, 1060.0, 1060.1):
            s.accept_failed("Too many open files", now)
        s.accept_failed("Cannot allocate memory", 1060.2)
    finally:
        svc.stop()
    assert [ln for ln in capfd.readouterr().err.splitlines() if "accept" in ln] == [
        "qmail-queued: warning: accept: Too many open files",
        "qmail-queued: warning: accept: Too many open files (3 more since the last line)",
        "qmail-queued: warning: accept: Cannot allocate memory (1 more since the last line)"]


def test_no_thread_to_be_had_is_71_and_logged_as_that(home, monkeypatch, capfd):
    """threading's RuntimeError (a pids limit, no memory for a stack): the client is answered 71
    at once and the log says what happened; it said "too many clients (500)" with one client."""
    svc = InProcess(home)
    try:
        def no_thread(self):
            raise RuntimeError("can't start new thread")
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        rc, err, _ = run_qq(home)
        monkeypatch.undo()
        assert (rc, err) == (X.QQ_TEMP_REFUSED, "qmail-queue: qmail-queued is busy\n")
        assert svc.service.active == 0
        assert run_qq(home)[:2] == (0, "")
    finally:
        svc.stop()
    assert capfd.readouterr().err == \
        "qmail-queued: unable to start a thread for a client: can't start new thread: one refused for now\n"


def test_a_bug_outside_the_insertion_is_logged_and_the_client_gets_74(home, monkeypatch, capfd):
    svc = InProcess(home)
    try:
        def broken(*args):
            raise ValueError("broken")
        monkeypatch.setattr(C, "serve_client", broken)
        job = sockclient.SocketJob(str(home), 30)
        job.write(b"Subject: x\n\n")
        assert job.finish(b"a@b", [b"c@d"]) == X.QQ_COMM_FAILED
        assert job.reason in ("qmail-queued closed the connection without an answer",   # it read all we sent
                              "lost the connection to qmail-queued: Connection reset by peer")
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while svc.service.active:        # the connection is closed, then given back
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert run_qq(home)[:2] == (0, "")
    finally:
        svc.stop()
    assert re.fullmatch(r"qmail-queued: internal bug: ValueError: broken at \S+:\d+:broken < .*\n",
                        capfd.readouterr().err)
    assert len(os.listdir(home / "queue" / "todo")) == 1


def test_a_second_sigterm_while_it_stops_leaves_the_running_insertion_to_finish(home, tmp_path):
    """svc -d twice, or SIGTERM then SIGINT: the second signal came when the listening socket was
    closed already and stop() raised from its handler, ending the wait for the insertions."""
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    job = sockclient.SocketJob(str(home), 30)
    job.write(b"Subject: slow\n\n")
    job._flush()
    time.sleep(0.2)
    service.proc.terminate()
    deadline = time.monotonic() + 10
    while True:                       # the listening socket is closed: a connect is refused
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(paths.queue_socket(str(home)))
        except ConnectionRefusedError:
            break
        finally:
            s.close()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    service.proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    assert job.finish(b"a@b", [b"c@d"]) == 0
    assert service.proc.wait(timeout=15) == 0
    assert log.read_text().splitlines()[-1] == "qmail-queued: exiting"
    assert len(os.listdir(home / "queue" / "todo")) == 1


def test_as_root_without_qmailq_it_stays_root_and_says_so(monkeypatch, capfd):
    monkeypatch.setattr(privs, "QUEUE_USER", "qmailpy-no-such-user")
    assert Q.become_queue_owner({}) == "root"
    assert os.getuid() == 0
    assert capfd.readouterr().err == "qmail-queued: warning: no user qmailpy-no-such-user: running as root\n"


def test_a_uid_without_an_account_is_named_by_its_number(monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 4242424)
    assert Q.become_queue_owner({"QMAILPY_SINGLEUSER": "1"}) == "uid 4242424"


@pytest.mark.parametrize("error, code, reason", [
    (MemoryError(), X.QQ_NO_MEMORY, "out of memory"),
    (ValueError("broken"), X.QQ_BUG, r"internal bug: ValueError: broken at \S+:\d+:broken < .*"),
])
def test_out_of_memory_or_a_bug_inside_the_insertion_is_its_code_and_leaves_nothing(home, monkeypatch, capfd,
                                                                                   error, code, reason):
    """qmail-queue's 51 (qq out of memory) and 81 (its sigbug()): here raised by the filter step,
    with the message staged on disk; the client gets the code and the reason, the service logs
    them, and the staged files are gone."""
    def broken(staged):
        raise error

    def make_filter(controls, log=None):
        return broken
    monkeypatch.setattr(C, "content_filter", make_filter)
    svc = InProcess(home)
    try:
        rc, err, pid = run_qq(home)
    finally:
        svc.stop()
    assert rc == code and re.fullmatch("qmail-queue: %s\n" % reason, err), (rc, err)
    assert re.fullmatch(r"qmail-queued: qp %d uid 0 pid %d: code %d: %s\n" % (pid, pid, code, reason),
                        capfd.readouterr().err)
    assert debris(home) == []


def test_a_message_qmail_queue_cannot_read_is_54_and_the_service_queues_nothing(home, tmp_path):
    """qmail-queue as the service's client: a read error on fd 0 ends the connection inside the
    message, so the service queues nothing; the exit code is the one qmail-queue gives for it."""
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    try:
        fd = os.open(str(tmp_path / "wo"), os.O_WRONLY | os.O_CREAT)    # read(): EBADF
        with open(tmp_path / "e", "wb") as f:
            f.write(ENV)
        with open(tmp_path / "e", "rb") as e:
            p = subprocess.Popen([QMAIL_QUEUE], stdin=fd, stdout=e, stderr=subprocess.PIPE, env=qenv(home))
            err = p.communicate(timeout=30)[1]
        os.close(fd)
        deadline = time.monotonic() + 10
        while "pid %d:" % p.pid not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        service.stop()
    assert (p.returncode, err) == (X.QQ_READ_ERROR, b"qmail-queue: unable to read message: Bad file descriptor\n")
    assert "qmail-queued: qp %d uid 0 pid %d: code 54: unable to read message: the connection ended inside it" \
        % (p.pid, p.pid) in log.read_text().splitlines()
    assert debris(home) == []


def test_an_origin_from_a_uid_without_an_account_is_ignored(home, tmp_path):
    """Only qmail-smtpd's user may send an origin frame; a uid no account names is nobody's
    qmail-smtpd either: the frame is dropped and logged, and the message queued without it."""
    from test_queued import _request_as
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    try:
        request = qqsock.encode_request(MSG, ENV, qqsock.encode_origin({"TCPREMOTEIP": "192.0.2.1"}))
        code, qp = _request_as(home, 4242, request)
    finally:
        service.stop()
    assert code == 0
    assert "qmail-queued: qp %d uid 4242 pid " % qp in log.read_text()
    assert [ln.split(": ", 2)[2] for ln in log.read_text().splitlines() if "qp %d " % qp in ln] == \
        ["origin ignored: not qmail-smtpd's user"]


def test_a_read_after_the_deadline_is_52_not_a_bug(home):
    """The deadline can pass between two reads (the disk slow to take a chunk): the next read
    is 52 at once; settimeout() of what is left, a negative number, raised ValueError (81)."""
    a, b = socket.socketpair()
    try:
        b.sendall(b"x")
        reader = C.ClientReader(a, time.monotonic() - 1, C.Budget(1 << 20))
        with pytest.raises(C.QueueError) as e:
            reader.read(65536)
        assert (e.value.code, e.value.reason) == (X.QQ_TIMEOUT, "timeout")
    finally:
        a.close()
        b.close()


def test_a_filter_that_returns_after_the_deadline_is_52_and_nothing_is_queued(home, monkeypatch, capfd):
    """qmail-queue's alarm would have ended the insertion at timeoutqueue whatever the filter
    was doing; one that does not keep to staged.deadline and returns late gets the same end."""
    (home / "control" / "timeoutqueue").write_text("1\n")

    def slow(staged):
        time.sleep(1.2)
        return None

    monkeypatch.setattr(C, "content_filter", lambda controls, log=None: slow)
    svc = InProcess(home)
    try:
        rc, err, pid = run_qq(home)
    finally:
        svc.stop()
    assert (rc, err) == (X.QQ_TIMEOUT, "qmail-queue: timeout\n")
    assert capfd.readouterr().err == "qmail-queued: qp %d uid 0 pid %d: code 52: timeout\n" % (pid, pid)
    assert debris(home) == []


def test_not_root_it_leaves_sock_alone(home, monkeypatch, capfd):
    """Only root binds the services' sockets for others; a service run as its own user (make
    run, a user's private install) takes sock/ as it is."""
    sock = home / "sock"
    sock.mkdir()
    os.chown(sock, 65534, 65534)
    os.chmod(sock, 0o777)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    assert Q.prepare_socket_dir(str(home)) == str(sock)
    st = sock.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, 0o777)
    assert capfd.readouterr().err == ""


def test_a_sigterm_between_accept_and_the_next_look_still_serves_that_client(home):
    """The signal lands after accept() returned a connection: that client is served, and the
    service stops without another accept()."""
    Q.prepare_socket_dir(str(home))
    listener = Q.listen(str(home))

    class Listener:
        def accept(self):
            got = listener.accept()
            service.stop()            # as the SIGTERM handler would, right after accept()
            return got

        def shutdown(self, how):
            listener.shutdown(how)

    service = Q.Service(str(home), dict(os.environ, QMAILHOME=str(home)), Listener())
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        assert run_qq(home)[:2] == (0, "")
        thread.join(10)
        assert not thread.is_alive()
        assert service.wait_idle(10) == 0
    finally:
        listener.close()
    assert len(os.listdir(home / "queue" / "todo")) == 1
