"""qmail-queued killed with SIGKILL at 200 random moments while 20 clients submit (issue 20).

Every client that got exit code 0 has its message in the queue exactly once, byte for byte
(qmail-send delivers each todo/ entry once: tests/test_send_*); every other client got a
temporary code (73: the service was down when it connected, 74: the connection broke); a
message whose commit was made just before the kill may be queued for a client that got 74,
once and complete (qmail's at-least-once: the client's retry may deliver it twice, nothing
is lost). Nothing else is in the queue: after qmail-send's stale-file rule (clean_stale) the
queue holds exactly the committed messages.

To kill the service 200 times in a few seconds it is not exec'd each time: a small harness
process imports qmailpy.queued and forks a child per start that runs qmail-queued's main()
(the program's own code, binding and serving as bin/qmail-queued does). 18 clients use the
queue client qmail-smtpd uses (SocketJob), 2 run bin/qmail-queue.
"""
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from qmailpy import exitcodes as X
from qmailpy.proto import qq
from qmailpy.queue import clean, layout, sockclient
from queuedsvc import accepting
from test_queue import QMAIL_QUEUE

ROOT = Path(__file__).resolve().parents[1]
KILLS = 200
CLIENTS = 20
EXEC_CLIENTS = 2
HARNESS = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["qmail-queued"]
from qmailpy.queued import main, conn          # everything a child needs, imported once
from qmailpy.queue import enqueue
from qmailpy.ctl import reader
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os._exit(main.main() or 0)
    sys.stdout.write("%d\n" % pid)
    sys.stdout.flush()
"""


BODY = bytes(range(32, 127)) * 1000 + b"\n"


def message(i, rng):
    start = rng.randrange(len(BODY) // 2)
    return b"Subject: %d\n\n" % i + BODY[start:start + rng.randrange(60000)]


def envelope_of(i):
    return b"s%d@example.org" % i, [b"r%d@example.net" % i]


def test_kill_qmail_queued_at_random_moments(tmp_path):
    home = tmp_path / "qmail"
    layout.create_queue(str(home))
    (home / "control").mkdir()
    env = dict(os.environ, QMAILHOME=str(home), QMAILPY_SINGLEUSER="1")
    rng = random.Random(int(os.environ.get("QUEUED_KILL_SEED", "2020")))
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(ROOT)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    sent, lock, stop = {}, threading.Lock(), threading.Event()
    counter = iter(range(10 ** 9))

    def next_id():
        with lock:
            return next(counter)

    def socket_client(seed):
        local = random.Random(seed)
        while not stop.is_set():
            i = next_id()
            msg = message(i, local)
            job = sockclient.SocketJob(str(home), 30)
            for k in range(0, len(msg), 8192):
                job.write(msg[k:k + 8192])
                job._flush()
                time.sleep(local.random() * 0.002)
            code = job.finish(*envelope_of(i))
            with lock:
                sent[i] = (code, msg)
            if code == X.QQ_CONN_REJECTED:
                time.sleep(0.005)

    def exec_client(seed):
        local = random.Random(seed)
        while not stop.is_set():
            i = next_id()
            msg = message(i, local)
            sender, recipients = envelope_of(i)
            r0, w0 = os.pipe()
            r1, w1 = os.pipe()
            p = subprocess.Popen([QMAIL_QUEUE], stdin=r0, stdout=r1, stderr=subprocess.DEVNULL, env=env)
            os.close(r0), os.close(r1)
            try:
                os.write(w0, msg)
            except OSError:
                pass
            os.close(w0)
            try:
                os.write(w1, qq.encode(sender, recipients))
            except OSError:
                pass
            os.close(w1)
            code = p.wait(timeout=60)
            with lock:
                sent[i] = (code, msg)

    def start_service():
        harness.stdin.write("start\n")
        harness.stdin.flush()
        pid = int(harness.stdout.readline())
        deadline = time.monotonic() + 30
        while not accepting(home):
            assert time.monotonic() < deadline, "qmail-queued did not start"
            time.sleep(0.001)
        return pid

    clients = [threading.Thread(target=exec_client if n < EXEC_CLIENTS else socket_client, args=(n,))
               for n in range(CLIENTS)]
    try:
        pid = start_service()
        for t in clients:
            t.start()
        for _ in range(KILLS):
            time.sleep(rng.random() * 0.06)
            os.kill(pid, signal.SIGKILL)
            time.sleep(rng.choice((0, 0, rng.random() * 0.01)))      # sometimes nobody listens for a while
            pid = start_service()
        time.sleep(0.2)
        stop.set()
        for t in clients:
            t.join(120)
        assert not any(t.is_alive() for t in clients)
        os.kill(pid, signal.SIGTERM)
    finally:
        stop.set()
        harness.stdin.close()
        harness.wait(30)

    codes = [code for code, _ in sent.values()]
    assert set(codes) <= {X.QQ_OK, X.QQ_CONN_REJECTED, X.QQ_COMM_FAILED}, sorted(set(codes))
    assert codes.count(X.QQ_COMM_FAILED) > 20 and codes.count(X.QQ_OK) > 50, (len(codes), sorted(set(codes)))

    q = home / "queue"
    queued = {}
    for name in os.listdir(q / "todo"):
        msgid = int(name)
        intd = (q / "intd" / name).read_bytes()
        m = re.fullmatch(rb"u(\d+)\0p(\d+)\0Fs(\d+)@example\.org\0Tr\3@example\.net\0", intd)
        assert m, intd
        uid, qp, i = int(m.group(1)), int(m.group(2)), int(m.group(3))
        assert uid == os.getuid() and i not in queued, i
        head, rest = Path(layout.mess_path(str(home), msgid)).read_bytes().split(b"\n", 1)
        assert head.startswith(b"Received: (qmail %d invoked by uid %d); " % (qp, os.getuid()))
        assert i in sent and rest == sent[i][1], i          # a client's message, whole
        queued[i] = msgid
    for i, (code, _) in sent.items():
        if code == 0:
            assert i in queued, i

    removed = clean.clean_stale(str(home), time.time() + 2 * layout.OSSIFIED)
    assert any("/mess/" in p for p in removed)              # kills did land inside insertions
    ids = set(queued.values())
    assert os.listdir(q / "pid") == []
    assert {int(n) for n in os.listdir(q / "intd")} == ids
    assert {int(n) for d in os.listdir(q / "mess") for n in os.listdir(q / "mess" / d)} == ids
