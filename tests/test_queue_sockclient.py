"""qmail-queued's client (qmailpy.queue.sockclient) against services that misbehave.

A fake service at the home's socket: one that answers in pieces, garbles its answer, never
answers, or never accepts (its backlog full). Every one of these is a temporary code with
its reason (qmail-qmqpc's 72-74), never a hang and never a traceback.
"""
import socket
import threading
import time

import pytest

from qmailpy import exitcodes as X
from qmailpy import paths
from qmailpy.proto import qqsock
from qmailpy.queue import sockclient
import test_queued

home = test_queued.home          # the fixture: a queue and control/


class FakeService:
    """Listens at the home's socket; for each connection reads the request to the end of its
    envelope, then sends `reply` one byte every `pause` seconds, and keeps the connection."""

    def __init__(self, home, reply, pause=0.0):
        self.reply, self.pause, self.held = reply, pause, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(paths.queue_socket(str(home)))
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            conn, _ = self.sock.accept()
            self.held.append(conn)
            data = b""
            while not data.endswith(b"\0\0"):
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            for i in range(len(self.reply)):
                conn.sendall(self.reply[i:i + 1])
                time.sleep(self.pause)
        except OSError:              # closed by the test
            return

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def queue_one(home, timeout=30):
    job = sockclient.SocketJob(str(home), timeout)
    job.write(b"Subject: x\n\nhello\n")
    return job, job.finish(b"a@example.org", [b"b@example.net"])


@pytest.fixture(autouse=True)
def sock_dir(home):
    (home / "sock").mkdir()


def test_an_answer_that_comes_in_pieces_is_read_whole(home):
    svc = FakeService(home, qqsock.encode_answer(0, 4321), pause=0.01)
    try:
        job, code = queue_one(home)
    finally:
        svc.close()
    assert (code, job.qp, job.reason) == (0, 4321, "")


def test_a_garbled_answer_is_74(home):
    svc = FakeService(home, b"250 ok\r\n")
    try:
        job, code = queue_one(home)
    finally:
        svc.close()
    assert (code, job.reason) == (X.QQ_COMM_FAILED, "qmail-queued's answer is garbled")


def test_a_service_that_never_answers_is_74_at_the_clients_time_limit(home):
    svc = FakeService(home, b"")
    try:
        t0 = time.monotonic()
        job, code = queue_one(home, timeout=0.5)
        took = time.monotonic() - t0
    finally:
        svc.close()
    assert (code, job.reason) == (X.QQ_COMM_FAILED, "timeout waiting for qmail-queued's answer")
    assert 0.5 <= took < 5


def test_a_socket_gone_between_the_look_and_the_connect_is_no_service(home, monkeypatch):
    """The socket removed meanwhile (an admin taking qmail-queued away): the home has no
    service, and qmail-queue writes the queue itself, as for a home without the socket."""
    monkeypatch.setattr(sockclient, "service_present", lambda h: True)
    assert sockclient.service_job({"QMAILHOME": str(home)}) is None
    with pytest.raises(sockclient.NoService):
        sockclient.SocketJob(str(home), 30)


def test_a_full_backlog_is_waited_for_then_72(home, monkeypatch):
    """A service that does not accept for a while (stalled, or its accept loop starved) with its
    backlog full: the client waits for room up to its connect limit and then gives up with 72,
    "timeout connecting". A connect on a Unix socket with a timeout set failed at once with
    EAGAIN: 73 for every client of a busy service, where a moment's wait would have done."""
    monkeypatch.setattr(sockclient, "CONNECT_WAIT", 1)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths.queue_socket(str(home)))
    listener.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(paths.queue_socket(str(home)))       # the one connection backlog 0 holds
    try:
        t0 = time.monotonic()
        job = sockclient.SocketJob(str(home), 30)
        took = time.monotonic() - t0
        assert (job.code, job.reason) == (X.QQ_CONN_TIMEOUT, "timeout connecting to qmail-queued")
        assert 1 <= took < 5
        assert job.finish(b"a@b", [b"c@d"]) == X.QQ_CONN_TIMEOUT

        def accept_soon():
            time.sleep(0.3)
            conn, _ = listener.accept()          # the filler's: room for the next one
            conn.close()
        threading.Thread(target=accept_soon, daemon=True).start()
        job = sockclient.SocketJob(str(home), 30)
        assert (job.code, job.sock is not None) == (None, True)
        assert job.sock.gettimeout() == 30       # the wait for the answer is the service's limit
        job.abort()
    finally:
        filler.close()
        listener.close()


def test_a_socket_nobody_listens_on_is_73_and_the_job_can_still_be_aborted(home):
    """qmail-queued stopped (its socket left in place): 73 at once; qmail-smtpd aborting the
    job afterwards (a DATA that went wrong) is no error."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(paths.queue_socket(str(home)))
    s.close()
    job = sockclient.SocketJob(str(home), 30)
    assert (job.code, job.reason) == (X.QQ_CONN_REJECTED, "unable to connect to qmail-queued: Connection refused")
    job.write(b"x")
    job.abort()
    assert job.finish(b"a@b", [b"c@d"]) == X.QQ_CONN_REJECTED


def test_a_signal_during_the_wait_for_room_does_not_end_it(home):
    """qmail-smtpd or qmail-send (SIGCHLD, SIGALRM) may take a signal while the client waits for
    room in the backlog: it goes on waiting and connects. (A blocking connect bounded by
    SO_SNDTIMEO, interrupted, was taken by Python's retry for a connection that was not there,
    or never came back.) The client runs on its own thread, which the signal is sent to."""
    import signal
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths.queue_socket(str(home)))
    listener.listen(0)
    listener.settimeout(5)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(paths.queue_socket(str(home)))
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    jobs = []
    client = threading.Thread(target=lambda: jobs.append(sockclient.SocketJob(str(home), 30)), daemon=True)
    try:
        client.start()
        time.sleep(0.2)
        signal.pthread_kill(client.ident, signal.SIGUSR1)
        time.sleep(0.2)
        listener.accept()[0].close()          # the filler's: room for the client
        conn, _ = listener.accept()           # really connected: the service has it, and its mark
        assert conn.recv(10) == qqsock.BY_SERVICE
        conn.close()
        client.join(10)
        assert (jobs[0].code, jobs[0].reason) == (None, "")
        jobs[0].abort()
    finally:
        signal.signal(signal.SIGUSR1, old)
        filler.close()
        listener.close()
