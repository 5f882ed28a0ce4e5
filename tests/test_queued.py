"""qmail-queued, the queue service, and its clients (bin/qmail-queue, qmail-smtpd's queue client).

The real bin/qmail-queued in a scratch home (single-user mode, as the suite runs everything),
except where a test needs to change a limit: then the service runs in this process on its
own listening socket (qmailpy.queued.main.Service). What must hold: the same bytes on disk
and the same exit codes as qmail-queue in-process, the caller's uid from the kernel, a
temporary code (never a half-written message) whenever the service is missing, busy, slow
or killed, and no client able to hold up another.
"""
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qmailpy import exitcodes as X
from qmailpy import paths, unixsock
from qmailpy.proto import qq, qqsock
from qmailpy.queue import layout, sockclient
from qmailpy.queued import main as Q
from asuid import AsUid
from queuedsvc import Queued
from test_queue import ENV, MSG, QMAIL_QUEUE, debris, only, qenv, run_qq

ROOT = Path(__file__).resolve().parents[1]
TCP_ENV = {"PROTO": "TCP", "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "25", "TCPREMOTEIP": "127.0.0.1",
           "TCPLOCALHOST": "mx.example.org"}


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "qmail"
    layout.create_queue(str(h))
    (h / "control").mkdir()
    return h


@pytest.fixture
def service(home, tmp_path):
    q = Queued(home, os.environ, log=str(tmp_path / "queued.log")).start()
    yield q
    q.stop()


class InProcess:
    """A Service on its own thread in this process (for tests that change MAX_CLIENTS)."""

    def __init__(self, home):
        Q.prepare_socket_dir(str(home))
        self.service = Q.Service(str(home), dict(os.environ, QMAILHOME=str(home)), Q.listen(str(home)))
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, home, count):
        """`count` clients that have sent part of a message, each being served (the service's
        threads busy with them); their sockets."""
        holders = [raw_client(home) for _ in range(count)]
        for h in holders:
            h.sendall(b"1:x,")
        deadline = time.monotonic() + 10
        while self.service.active < count:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return holders

    def stop(self):
        self.service.stop()
        self.thread.join(10)
        self.service.listener.close()
        assert self.service.wait_idle(10) == 0


def mess_of(home, msgid):
    return Path(layout.mess_path(str(home), msgid)).read_bytes()


def received(data):
    m = re.match(rb"Received: \(qmail (\d+) invoked (by uid (\d+)|from network|for bounce|by alias)\); [^\n]+\n",
                 data)
    assert m, data[:200]
    return int(m.group(1)), m.group(2).decode(), data[m.end():]


def raw_client(home):
    s = socket.socket(socket.AF_UNIX)
    unixsock.connect(s, paths.queue_socket(str(home)))
    return s


def read_answer(s, timeout=30):
    s.settimeout(timeout)
    dec = qqsock.AnswerDecoder()
    while True:
        data = s.recv(1000)
        if not data:
            return None
        got = dec.feed(data)
        if got:
            return got


# -- the same job as qmail-queue

def test_qmail_queue_goes_through_the_service(home, service):
    t0 = time.time()
    rc, err, pid = run_qq(home)
    assert (rc, err) == (0, "")
    msgid = only(home / "queue" / "todo")
    qp, who, rest = received(mess_of(home, msgid))
    assert who == "by uid %d" % os.getuid() and rest == MSG
    # bin/qmail-queue's own pid, as qmail's: its callers (qmail.c's qmail_qp(): fastforward,
    # dot-forward, qmail-smtpd's QMAILQUEUE) print that pid as the message's qp
    assert qp == pid
    intd = (home / "queue" / "intd" / str(msgid)).read_bytes()
    assert intd == b"u%d\0p%d\0" % (os.getuid(), qp) + ENV[:-1]
    st = os.stat(layout.mess_path(str(home), msgid))
    assert (st.st_uid, st.st_mode & 0o777) == (os.getuid(), 0o644)     # umask 033, as qmail-queue
    assert os.path.getmtime(home / "queue" / "todo" / str(msgid)) >= int(t0)
    assert debris(home) == sorted(["intd/%d" % msgid, "mess/%d/%d" % (msgid % 23, msgid), "todo/%d" % msgid])


def test_by_pid_numbers_the_insertion_by_the_kernels_pid(home, service):
    """BY_PID (an exec'd qmail-queue's request) makes the qp the connecting process's pid as the
    kernel gives it; nothing the client sends can choose the number."""
    s = raw_client(home)
    try:
        s.sendall(qqsock.BY_PID + qqsock.encode_request(MSG, ENV))
        code, qp, _ = read_answer(s)
    finally:
        s.close()
    assert (code, qp) == (0, os.getpid())
    assert received(mess_of(home, only(home / "queue" / "todo")))[0] == os.getpid()


@pytest.mark.parametrize("envelope, code", [
    (b"Xa@b\0Tc@d\0\0", X.QQ_ENVELOPE_FORMAT),
    (b"Fa@b\0Xc@d\0\0", X.QQ_ENVELOPE_FORMAT),
    (b"Fa@b\0Tc@d\0", X.QQ_READ_ERROR),
    (b"", X.QQ_READ_ERROR),
    (b"F" + b"a" * qq.ADDR + b"\0\0", X.QQ_ADDR_TOO_LONG),
])
def test_envelope_errors_are_qmail_queues_and_leave_nothing(home, service, envelope, code):
    rc, err, pid = run_qq(home, MSG, envelope)
    assert rc == code
    assert err.startswith("qmail-queue: ") and err.count("\n") == 1
    service_finished(service, pid)
    assert debris(home) == []


def service_finished(service, pid, wait=20):
    """Wait for the service's log line of client `pid`'s failed insertion: a client that finds
    its envelope bad itself (e.g. empty) exits at once, and the service may not even have
    begun reading the message then; what it makes meanwhile it takes back before it logs."""
    deadline = time.monotonic() + wait
    while (" pid %d: code " % pid).encode() not in Path(service.log).read_bytes():
        assert time.monotonic() < deadline, Path(service.log).read_bytes()
        time.sleep(0.02)


def test_queue_trouble_is_the_services_exit_code(home, service):
    os.rmdir(home / "queue" / "intd")
    rc, err, _ = run_qq(home)
    assert rc == X.QQ_INTD and err.startswith("qmail-queue: unable to create ")
    assert debris(home) == []


def test_bad_control_is_55(home, service):
    (home / "control" / "timeoutqueue").write_text("soon\n")
    rc, err, _ = run_qq(home)
    assert rc == X.QQ_CONFIG and "timeoutqueue" in err
    assert debris(home) == []


def test_smtpd_queues_through_the_service_with_its_qp(home, service):
    (home / "control" / "rcpthosts").write_text("example.org\n")
    session = (b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
               b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    r = subprocess.run([str(ROOT / "bin" / "qmail-smtpd")], input=session, capture_output=True, timeout=30,
                       env=dict(qenv(home), **TCP_ENV))
    replies = r.stdout.decode().split("\r\n")
    qp = int(re.match(r"250 ok \d+ qp (\d+)$", replies[5]).group(1))
    msgid = only(home / "queue" / "todo")
    got_qp, who, rest = received(mess_of(home, msgid))
    assert got_qp == qp and who == "by uid %d" % os.getuid()
    assert rest.startswith(b"Received: from unknown (HELO c) (127.0.0.1)\n  by mx.example.org with SMTP; ")
    assert rest.endswith(b"\nSubject: x\n\nhello\n")


def test_qmail_queue_does_not_wait_for_envelope_eof(home, service):
    r0, w0 = os.pipe()
    r1, w1 = os.pipe()
    p = subprocess.Popen([QMAIL_QUEUE], stdin=r0, stdout=r1, env=qenv(home))
    os.close(r0), os.close(r1)
    os.write(w0, MSG), os.close(w0)
    os.write(w1, ENV + b"trailing bytes are never read")
    try:
        assert p.wait(timeout=30) == 0
    finally:
        os.close(w1)
    assert len(os.listdir(home / "queue" / "todo")) == 1


def test_a_forged_received_line_stays_below_the_services_own(home, service):
    forged = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2000 00:00:00 -0000\n" + MSG
    assert run_qq(home, forged)[0] == 0
    _, who, rest = received(mess_of(home, only(home / "queue" / "todo")))
    assert who == "by uid %d" % os.getuid() and rest == forged


# -- the service missing, refusing, dying

def test_service_down_is_73_and_queues_nothing(home, service):
    service.stop()
    assert os.path.exists(paths.queue_socket(str(home)))          # left in place: no fallback
    rc, err, _ = run_qq(home)
    assert rc == X.QQ_CONN_REJECTED
    assert err == "qmail-queue: unable to connect to qmail-queued: Connection refused\n"
    assert debris(home) == []
    (home / "control" / "rcpthosts").write_text("example.org\n")
    session = b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n"
    r = subprocess.run([str(ROOT / "bin" / "qmail-smtpd")], input=session, capture_output=True, timeout=30,
                       env=dict(qenv(home), **TCP_ENV))
    assert r.stdout.decode().split("\r\n")[5] == "451 connection to mail server rejected (#4.4.1)"


def test_without_a_socket_qmail_queue_writes_the_queue_itself(home):
    assert not os.path.exists(paths.queue_socket(str(home)))
    rc, _, pid = run_qq(home)
    assert rc == 0
    assert received(mess_of(home, only(home / "queue" / "todo")))[0] == pid


def test_killed_mid_message_is_74_and_leaves_only_debris_clean_stale_removes(home, service):
    job = sockclient.SocketJob(str(home), 30)
    job.write(b"Subject: cut\n\n" + b"x" * 100000)
    job._flush()
    deadline = time.monotonic() + 10
    while not any(os.listdir(home / "queue" / "mess" / d) for d in os.listdir(home / "queue" / "mess")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    service.kill()
    assert job.finish(b"a@b", [b"c@d"]) == X.QQ_COMM_FAILED
    assert os.listdir(home / "queue" / "todo") == []
    from qmailpy.queue import clean
    clean.clean_stale(str(home), time.time() + 2 * layout.OSSIFIED)
    assert debris(home) == []


def test_restarted_service_replaces_the_socket_of_a_killed_one(home, service):
    service.kill()
    assert run_qq(home)[0] == X.QQ_CONN_REJECTED
    service.start()
    assert run_qq(home)[0] == 0


# -- clients that misbehave hold up nobody

def test_garbage_and_lies_get_their_code_and_the_next_client_is_served(home, service):
    s = raw_client(home)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert read_answer(s)[:2] == (X.QQ_ENVELOPE_FORMAT, 0)
    s = raw_client(home)
    s.sendall(b"9999:short")                  # says 9999 bytes, sends 5 and the end
    s.shutdown(socket.SHUT_WR)
    assert read_answer(s)[:2] == (X.QQ_READ_ERROR, 0)
    s = raw_client(home)
    s.sendall(b"%d:" % (qqsock.MAX_CHUNK + 1))
    assert read_answer(s)[:2] == (X.QQ_ENVELOPE_FORMAT, 0)
    s = raw_client(home)
    s.sendall(b"3:abc,0:,Fa@b\0Tc@d\0")       # the envelope without its final NUL
    s.shutdown(socket.SHUT_WR)
    assert read_answer(s)[:2] == (X.QQ_READ_ERROR, 0)
    assert debris(home) == []
    assert run_qq(home)[0] == 0


def test_a_stalled_client_times_out_alone(home, service):
    (home / "control" / "timeoutqueue").write_text("2\n")
    stalled = raw_client(home)
    stalled.sendall(b"5:hello,")              # and nothing more
    t0 = time.monotonic()
    codes = [run_qq(home, MSG + b"%d\n" % i)[0] for i in range(3)]
    assert codes == [0, 0, 0]
    code, qp, reason = read_answer(stalled, timeout=30)
    assert (code, qp, reason) == (X.QQ_TIMEOUT, 0, "timeout")
    assert time.monotonic() - t0 >= 1.5
    assert len(os.listdir(home / "queue" / "todo")) == 3
    assert all(not os.listdir(home / "queue" / d) for d in ("pid",))


def test_twenty_clients_at_once(home, service):
    results = {}

    def client(i):
        job = sockclient.SocketJob(str(home), 60)
        for k in range(20):
            job.write(b"Subject: %d\n\n" % i if k == 0 else b"line %d of %d\n" % (k, i))
        results[i] = (job.finish(b"s%d@example.org" % i, [b"r%d@example.net" % i]), job.qp)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(code for code, _ in results.values()) == [0] * 20
    assert len({qp for _, qp in results.values()}) == 20
    assert len(os.listdir(home / "queue" / "todo")) == 20


def test_messages_one_after_another_have_their_own_qp(home, service):
    """qp (qmail-smtpd's `250 ok <time> qp N`, qmail-send's `info msg M: ... qp N`) is how an
    admin finds a message's way through the logs: like qmail-queue's pid, a new one for each
    insertion, even when the insertions come one after another."""
    qps = []
    for _ in range(5):
        job = sockclient.SocketJob(str(home), 30)
        job.write(b"Subject: x\n\nhello\n")
        assert job.finish(b"a@example.org", [b"b@example.net"]) == 0
        qps.append(job.qp)
    assert len(set(qps)) == 5, qps


def test_a_full_house_answers_71(home, monkeypatch):
    monkeypatch.setattr(Q, "MAX_CLIENTS", 2)
    svc = InProcess(home)
    try:
        holders = svc.hold(home, 2)
        rc, err, _ = run_qq(home)
        assert rc == X.QQ_TEMP_REFUSED and err == "qmail-queue: qmail-queued is busy\n"
        for h in holders:
            h.sendall(b"0:,Fa@b\0Tc@d\0\0")
            assert read_answer(h)[0] == 0
        assert run_qq(home)[0] == 0
    finally:
        svc.stop()


def _hold(count):
    """work for AsUid: `count` connections, each with part of a message sent; each one's answer
    as "code reason" (or "-" when it has none within a second), one a line."""
    def work(connect):
        held = []
        for _ in range(count):
            s = connect()
            try:
                s.sendall(b"1:x,")
            except OSError:             # refused and closed already: its answer is there to read
                pass
            held.append(s)
        out = b""
        for s in held:
            try:
                got = read_answer(s, 1)
            except OSError:
                got = None
            out += b"-\n" if got is None else b"%d %s\n" % (got[0], got[2].encode())
        return out
    return work


def test_one_local_user_cannot_take_every_connection(home, monkeypatch):
    """Any local user may connect (sock/qmail-queue is 0666), as anyone may run qmail-queue; in
    qmail each stalled qmail-queue is its caller's own process and blocks nobody else. One uid
    that opens connections and sends nothing holds at most MAX_PER_UID of them: the next is
    answered 71 at once, and everybody else is still served."""
    monkeypatch.setattr(Q, "MAX_CLIENTS", 4)
    monkeypatch.setattr(Q, "MAX_PER_UID", 2)
    svc = InProcess(home)
    try:
        with AsUid(65534, paths.queue_socket(str(home)), _hold(4)) as child:
            assert child.result == (b"-\n-\n" + b"71 too many connections from uid 65534\n" * 2)
            assert svc.service.active == 2
            assert run_qq(home)[0] == 0                # root (qmail's own users too) is served
    finally:
        svc.stop()


def test_ordinary_users_together_cannot_take_every_connection(home, monkeypatch):
    """MAX_PER_UID bounds one uid; a few local users together (each at its limit, waiting until
    timeoutqueue, a day by default) took all MAX_CLIENTS, and qmail-smtpd, qmail-send's bounces
    and every forward got 71 meanwhile. The uids the service limits hold MAX_LIMITED together
    at most, as the envelopes' budget keeps half for the qmail users: the qmail users are served."""
    monkeypatch.setattr(Q, "MAX_CLIENTS", 4)
    monkeypatch.setattr(Q, "MAX_PER_UID", 2)
    monkeypatch.setattr(Q, "MAX_LIMITED", 2)
    svc = InProcess(home)
    try:
        with AsUid(65534, paths.queue_socket(str(home)), _hold(2)) as one:
            assert one.result == b"-\n-\n"
            with AsUid(65533, paths.queue_socket(str(home)), _hold(2)) as other:
                assert other.result == b"71 qmail-queued is busy\n" * 2
                assert svc.service.active == 2
                assert run_qq(home)[0] == 0            # root (qmail's own users too) is served
    finally:
        svc.stop()


def test_sigterm_lets_the_running_insertion_finish(home, service):
    job = sockclient.SocketJob(str(home), 30)
    job.write(b"Subject: slow\n\n")
    job._flush()
    time.sleep(0.2)
    service.proc.terminate()
    time.sleep(0.2)
    assert run_qq(home)[0] == X.QQ_CONN_REJECTED          # no new clients
    assert job.finish(b"a@b", [b"c@d"]) == 0             # the one under way is queued
    assert service.proc.wait(timeout=15) == 0
    assert len(os.listdir(home / "queue" / "todo")) == 1


def test_an_insertion_cut_short_at_stop_gets_no_answer_and_queues_nothing(home):
    """Past STOP_WAIT the sockets of the insertions still under way are shut (main() before its
    "exiting ... cut short" line): their client's last bytes find no one, so no thread left
    running until the process ends can answer "queued" after that line, and nothing is queued."""
    svc = InProcess(home)
    s = raw_client(home)
    try:
        request = qqsock.encode_request(MSG, ENV)
        s.sendall(request[:10])
        deadline = time.monotonic() + 10
        while svc.service.active < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        svc.service.stop()
        svc.thread.join(10)
        assert svc.service.finish(0.1) == 1           # what main() does before its last line
        try:
            s.sendall(request[10:])
        except OSError:
            pass
        assert read_answer(s, timeout=10) is None
        assert svc.service.wait_idle(10) == 0
    finally:
        s.close()
        svc.service.listener.close()
    assert os.listdir(home / "queue" / "todo") == []


def _request_as(home, uid, request):
    """Send `request` on a connection made by a child that is `uid` when it connects (the
    kernel's SO_PEERCRED is taken then; as root, as the suite runs); the answer (code, qp)."""
    def work(connect):
        s = connect()
        s.sendall(request)
        code, qp, _ = read_answer(s)
        return b"%d %d" % (code, qp)
    with AsUid(uid, paths.queue_socket(str(home)), work) as child:
        code, qp = map(int, child.result.split())
    return code, qp


def test_an_origin_from_anyone_but_qmail_smtpds_user_is_ignored(home, service):
    """Only qmail-smtpd may say the mail came in over SMTP (and what SPF said): the origin frame of
    another user (here nobody) is dropped and logged, so the DKIM step does not run for it."""
    (home / "control" / "dkimverify").write_text("1\n")
    (home / "control" / "me").write_text("test.example\n")
    request = qqsock.encode_request(MSG, qq.encode(b"a@b.example", [b"c@d.example"]),
                                    qqsock.encode_origin({"TCPREMOTEIP": "192.0.2.1", "SPFRESULT": "pass"}))
    code, qp = _request_as(home, 65534, request)
    assert code == 0
    log = Path(service.log).read_text()
    assert "qp %d uid 65534 pid " % qp in log and "origin ignored: not qmail-smtpd's user" in log
    mess = (home / "queue" / "mess").rglob("*")
    data = [p.read_bytes() for p in mess if p.is_file()]
    assert len(data) == 1 and b"Authentication-Results:" not in data[0]
    # the same frame from the service's own user (single-user mode: qmail-smtpd's) is taken
    code, _ = _request_as(home, os.geteuid(), request)
    assert code == 0
    data = [p.read_bytes() for p in (home / "queue" / "mess").rglob("*") if p.is_file()]
    assert sum(b"Authentication-Results: test.example;\n\tdkim=none" in d for d in data) == 1


PRELOADED_SESSION = r"""
import os, sys
from qmailpy.tcpserver import programs
runner = programs.load("qmail-smtpd")
before = set(sys.modules)
fd = os.open(sys.argv[1], os.O_RDONLY)
out = os.open(os.devnull, os.O_WRONLY)
from qmailpy.smtpd.main import serve
code = serve(fd, out, dict(os.environ), [])
print(code, " ".join(sorted(set(sys.modules) - before)))
"""


def test_qmail_tcpserver_preloads_what_a_queued_session_imports(home, service, tmp_path):
    """A session that queues one message through qmail-queued imports nothing that
    qmail-tcpserver did not load before forking (each child would import it again)."""
    (home / "control" / "me").write_text("mx.example.org\n")
    (home / "control" / "rcpthosts").write_text("example.org\n")
    session = tmp_path / "session"
    session.write_bytes(b"HELO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                        b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    env = dict(os.environ, QMAILHOME=str(home), QMAILPY_SINGLEUSER="1", PYTHONPATH=str(ROOT), **TCP_ENV)
    env.pop("QMAILQUEUE", None)
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python3"), "-c", PRELOADED_SESSION, str(session)],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    code, _, imported = r.stdout.decode().strip().partition(" ")
    assert (code, imported) == ("0", "")
    assert len(os.listdir(home / "queue" / "todo")) == 1


def test_qmail_tcpserver_preloads_the_dns_checks_when_the_controls_turn_them_on(home, tmp_path):
    """With control/spfbehavior (or rblhosts, mfdnscheck) set, qmail-tcpserver loads dnspython
    and pyspf before forking its workers: the first SPF session of each new worker imported
    them (about 100 ms of CPU, once per worker of at most 100 sessions). Without such a
    control they are not loaded (the previous test: a plain queued session imports nothing)."""
    from dnsserver import DNSServer
    dns = DNSServer().start()
    try:
        dns.zones = {"fail.example": {"TXT": ["v=spf1 -all"], "MX": [(10, "mx.fail.example")]},
                     "mx.fail.example": {"A": ["192.0.2.1"]}}
        for name, text in (("me", "mx.example.org"), ("rcpthosts", "example.org"), ("spfbehavior", "3"),
                           ("rblhosts", "rbl.example"), ("mfdnscheck", "1")):
            (home / "control" / name).write_text(text + "\n")
        session = tmp_path / "session"
        session.write_bytes(b"HELO client\r\nMAIL FROM:<a@fail.example>\r\nRCPT TO:<b@example.org>\r\nQUIT\r\n")
        env = dict(os.environ, QMAILHOME=str(home), QMAILPY_SINGLEUSER="1", PYTHONPATH=str(ROOT),
                   **dict(TCP_ENV, TCPREMOTEIP="127.0.0.5"), **dns.environ())
        r = subprocess.run([str(ROOT / ".venv" / "bin" / "python3"), "-c", PRELOADED_SESSION, str(session)],
                           capture_output=True, env=env, timeout=60)
    finally:
        dns.stop()
    assert r.returncode == 0, r.stderr.decode()
    code, _, imported = r.stdout.decode().strip().partition(" ")
    assert (code, imported) == ("0", ""), r.stdout
    assert "spf result=fail" in r.stderr.decode(), r.stderr.decode()


# -- envelopes: qmail-queue writes them into intd/ as it reads; the service holds them in memory

def test_an_envelope_bigger_than_the_service_keeps_is_51_and_leaves_nothing(home, service):
    # 600,000 recipients cost about 40 MB in memory (conn.ENVELOPE_MAX is 32 MiB): qq out of memory,
    # where the service grew by 18 MB for each megabyte of "Ta\0" records, any local user's
    rc, err, pid = run_qq(home, MSG, b"Fa@b\0" + b"Ta\0" * 600000 + b"\0")
    assert (rc, err) == (X.QQ_NO_MEMORY, "qmail-queue: out of memory: an envelope takes more than 33554432 bytes\n")
    service_finished(service, pid)
    assert debris(home) == []


def test_a_hundred_thousand_recipients_are_queued(home, service):
    recips = [b"user%06d@example.com" % i for i in range(100000)]
    rc, err, _ = run_qq(home, MSG, qq.encode(b"a@b", recips))
    assert (rc, err) == (0, "")
    msgid = only(home / "queue" / "todo")
    intd = (home / "queue" / "intd" / str(msgid)).read_bytes()
    assert intd.split(b"\0", 2)[2] == qq.encode_records(b"a@b", recips)


def _holding(home, svc, records):
    """A client that has sent a message and the envelope's F and `records` ("Ta\\0" each), and
    waits: once the service holds what they cost of its budget."""
    client = raw_client(home)
    client.sendall(b"1:x,0:,Fa@b\0" + records)
    deadline = time.monotonic() + 10
    while svc.service.envelopes.left > (1 << 20) - records.count(b"\0") * 67:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return client


def test_the_envelopes_of_all_clients_share_one_budget(home, monkeypatch):
    """A client whose envelope is being read holds what it takes; one that would go past what all
    may take gets 51 at once, and what the first held is given back when it is done."""
    monkeypatch.setattr(Q, "ENVELOPES_MAX", 1 << 20)
    svc = InProcess(home)
    try:
        big = b"Ta\0" * 10000                         # 670,000 bytes of the budget
        first = _holding(home, svc, big)
        rc, err, _ = run_qq(home, MSG, b"Fa@b\0" + big + b"\0")
        assert (rc, err) == (X.QQ_NO_MEMORY, "qmail-queue: out of memory: the envelopes being read take all there is\n")
        first.sendall(b"\0")
        assert read_answer(first)[0] == 0
        first.close()
        assert svc.service.envelopes.left == 1 << 20
        assert run_qq(home, MSG, b"Fa@b\0" + big + b"\0")[:2] == (0, "")
    finally:
        svc.stop()


def test_an_ordinary_user_cannot_hold_what_the_qmail_users_need(home, monkeypatch):
    """Clients of a uid the service limits (an ordinary user: sock/qmail-queue is 0666) that send
    an envelope and wait (until timeoutqueue, a day by default) hold half the budget at most
    together; a qmail user's client (qmail-smtpd, qmail-send: not limited) is still queued.
    They could take it all: every message of the host got 51 for as long as they waited."""
    monkeypatch.setattr(Q, "ENVELOPES_MAX", 1 << 20)
    svc = InProcess(home)
    try:
        part = b"Ta\0" * 6000                         # 402,000 bytes of the budget
        svc.service.unlimited = frozenset()           # our uid: an ordinary user's
        first = _holding(home, svc, part)
        second = raw_client(home)
        second.sendall(b"1:x,0:,Fa@b\0" + part)
        assert read_answer(second)[0] == X.QQ_NO_MEMORY
        second.close()
        svc.service.unlimited = frozenset({os.geteuid()})     # now a qmail user's client
        assert run_qq(home, MSG, b"Fa@b\0" + part + b"\0")[:2] == (0, "")
        first.sendall(b"\0")
        assert read_answer(first)[0] == 0
        first.close()
        assert (svc.service.envelopes.left, svc.service.envelopes.limited_left) == (1 << 20, 1 << 19)
        assert svc.service.envelopes.held == {}
    finally:
        svc.stop()


class SlowSpamd:
    """A spamd on a UNIX socket that answers each PROCESS, correctly, after `delay` seconds."""

    def __init__(self, path, delay):
        self.path, self.delay = path, delay
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn):
        with conn:
            conn.settimeout(30)
            try:
                data = b""
                while True:
                    got = conn.recv(65536)
                    if not got:
                        break
                    data += got
                body = data.split(b"\r\n\r\n", 1)[1]
                time.sleep(self.delay)
                conn.sendall(b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: False ; 0.1 / 5.0\r\n\r\n%s"
                             % (len(body), body))
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("via", ["service", "in-process"])
def test_timeoutqueue_bounds_the_filters_as_qmail_queues_alarm_does(home, tmp_path, via):
    """control/timeoutqueue is qmail-queue's alarm: the whole insertion, filters included
    (docs/filters.md). In-process SIGALRM ends a spamd conversation still going at the deadline;
    qmail-queued bounded only its reads from the client, so a spamd that took a second and a half
    for each of three recipients got the message queued after timeoutqueue 2 (and past
    timeoutqueue + 60 its client gives up with 74 while the service still queues it: a duplicate
    when the sender retries). Both now end with 52 at the deadline, nothing queued."""
    spamd = SlowSpamd(str(tmp_path / "spamd.sock"), 1.5)
    for name, value in [("timeoutqueue", "2"), ("spamglobal", "1"), ("spamdsocket", spamd.path)]:
        (home / "control" / name).write_text(value + "\n")
    service = Queued(home, os.environ, log=str(tmp_path / "queued.log")).start() if via == "service" else None
    try:
        t0 = time.monotonic()
        rc, err, _ = run_qq(home, envelope=qq.encode(b"a@example.org", [b"b@example.net", b"c@example.net",
                                                                         b"d@example.net"]))
        took = time.monotonic() - t0
    finally:
        if service is not None:
            service.stop()
        spamd.close()
    assert (rc, err) == (X.QQ_TIMEOUT, "qmail-queue: timeout\n")
    assert 1.5 < took < 4
    assert debris(home) == []


def test_a_filters_log_lines_name_the_insertion_they_belong_to(home, tmp_path):
    """In-process, qmail-queue's filter lines (`refused for ...`, filterfailopen) go to its caller's
    stderr, qmail-smtpd's log, beside the session. Under qmail-queued they went to the service's log
    as bare `qmail-queue: refused for bob@example.net: ...` lines, which among concurrent insertions
    name no message; they now carry the insertion's qp, uid and pid like its other lines."""
    clamd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    clamd.bind(str(tmp_path / "clamd.sock"))
    clamd.listen(8)

    def serve():
        conn, _ = clamd.accept()
        with conn:
            data = b""
            while not data.endswith(b"\0\0\0\0"):
                data += conn.recv(65536)
            conn.sendall(b"stream: Test-Virus FOUND\0")
    threading.Thread(target=serve, daemon=True).start()
    (home / "control" / "clamdsocket").write_text(str(tmp_path / "clamd.sock") + "\n")
    (home / "control" / "clamavclients").write_text("b@example.net\n")
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "qmailpy.cli.newfilters", "clamavclients"],
                       cwd=ROOT, capture_output=True, env=qenv(home), timeout=30)
    assert p.returncode == 0, p
    log = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(log)).start()
    try:
        rc, err, pid = run_qq(home)
    finally:
        service.stop()
        clamd.close()
    assert (rc, err) == (0, "")
    [line] = [ln for ln in log.read_text().splitlines() if "refused for" in ln]
    assert re.fullmatch(r"qmail-queued: qp \d+ uid %d pid %d: refused for b@example.net: virus Test-Virus found"
                        % (os.getuid(), pid), line), line


@pytest.mark.parametrize("timeoutqueue, service", [(None, 86400), ("300\n", 300),
                                                   ("200000\n", layout.OSSIFIED - 3600)])
def test_a_client_waits_the_services_time_limit_and_a_minute(home, timeoutqueue, service):
    """The service's limit is control/timeoutqueue kept below OSSIFIED (queue.layout.time_limit,
    what qmail-queue and qmail-queued use); the client's wait is that and a minute. The client
    had its own copy of the rule without the cap: with timeoutqueue 200000 it waited 200060 s
    for a service that gives up at 126000 s."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.queue.main import time_limit
    if timeoutqueue is not None:
        (home / "control" / "timeoutqueue").write_text(timeoutqueue)
    controls = Controls(str(home), {})
    assert time_limit(controls) == service
    assert sockclient.wait_limit(controls) == service + 60
