"""Signals as an admin sends them under daemontools (svc -t/-h/-a) to the real programs."""
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT
from qmailpy.queue import layout, sockclient
from queuedsvc import Queued
from test_send_support import Send, inject, scratch  # noqa: F401 (scratch: fixture)
from test_queued import TCP_ENV
from test_usersd import ask
from usersd import UsersService
from test_tcpserver import GREETING, Front, front_path, qhome, recv_until, wait_for  # noqa: F401 (qhome: fixture)

MSG = b"Subject: signals\n\nbody\n"


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_svc_t_lets_running_deliveries_finish_starts_none_and_loses_nothing(scratch):
    hold = os.path.join(scratch.fake, "hold")
    env = dict(FAKE_REMOTE_SLEEP="0", FAKE_REMOTE_HOLD=hold, FAKE_LOCAL_HOLD=hold)
    first = inject(scratch.home, MSG, "alice@localhost", ["bob@far.example", "carol@far.example", "hold@localhost"])
    send = Send(scratch, **env)
    send.wait_line(r"^status: local 1/10 remote 2/20$")
    send.wait_for(lambda: len(scratch.local_log()) == 1, what="qmail-local running")
    helpers = send.children()
    assert len(helpers) >= 4          # lspawn, rspawn, todo, the cleans
    send.proc.send_signal(signal.SIGTERM)
    send.wait_line(r"^status: local 1/10 remote 2/20 exitasap$")
    second = inject(scratch.home, MSG, "alice@localhost", ["dave@far.example", "joe@localhost"])
    time.sleep(1)                      # a second for qmail-todo to have passed it on, were it to
    assert send.proc.poll() is None    # the running deliveries are waited for
    open(hold, "w").close()
    assert send.stop() == 0
    lines = send.lines()
    assert lines[-1] == "status: exiting"
    assert len([ln for ln in lines if ln.startswith("starting delivery")]) == 3, lines
    assert len([ln for ln in lines if ": success: " in ln]) == 3, lines
    assert "end msg %d" % first in lines
    for pid in helpers:
        assert not alive(pid), pid
    assert sorted(n.rsplit(".", 1)[0] for n in scratch.mail()) == ["bob@far.example", "carol@far.example",
                                                                   "hold@localhost"]
    # the next qmail-send delivers what came in meanwhile, and nothing twice
    send = Send(scratch, **env)
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    assert sorted(n.rsplit(".", 1)[0] for n in scratch.mail()) == [
        "bob@far.example", "carol@far.example", "dave@far.example", "hold@localhost", "joe@localhost"]
    assert second is None or "end msg %d" % second in send.lines()
    assert scratch.queue_files() == []


def test_svc_i_stops_qmail_tcpserver_as_it_stops_tcpserver_without_a_traceback(tmp_path, qhome):
    """svc -i (SIGINT): tcpserver dies of it, its sessions go on; qmail-tcpserver the same,
    with no Python traceback in the log."""
    statuses = {}
    for name in ("tcpserver", "qmail-tcpserver"):
        front = Front(front_path(name), ["-v", "-HR", "-l", "h"], qhome.env(), tmp_path)
        s = front.connect()
        assert recv_until(s, b"\r\n") == GREETING
        front.proc.send_signal(signal.SIGINT)
        statuses[name] = front.proc.wait(timeout=10)
        s.sendall(b"QUIT\r\n")
        assert recv_until(s, b"\r\n") == b"221 test.example\r\n"
        s.close()
        front.stop()
        assert "Traceback" not in front.log() and "KeyboardInterrupt" not in front.log()
    assert statuses == {"tcpserver": -signal.SIGINT, "qmail-tcpserver": -signal.SIGINT}


def test_svc_i_stops_qmail_queued_as_svc_t_does(tmp_path):
    """SIGINT: as SIGTERM (qmail-send and qmail-usersd read it so too): the insertion under
    way is queued once, exit 0, `exiting` logged, no traceback."""
    home = tmp_path / "qmail"
    layout.create_queue(str(home))
    (home / "control").mkdir()
    logpath = tmp_path / "queued.log"
    service = Queued(home, os.environ, log=str(logpath)).start()
    try:
        job = sockclient.SocketJob(str(home), 30)
        job.write(b"Subject: half sent\n\n")
        job._flush()
        wait_for(lambda: any(os.listdir(home / "queue" / "mess" / str(i)) for i in range(23)), what="its mess file")
        service.proc.send_signal(signal.SIGINT)
        service.proc.send_signal(signal.SIGINT)            # twice at once: the same
        job.write(b"the rest\n")
        assert job.finish(b"a@b", [b"c@d"]) == 0
        assert service.proc.wait(timeout=15) == 0
    finally:
        service.kill()
    log = logpath.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert log.endswith("qmail-queued: exiting\n"), log
    assert len(os.listdir(home / "queue" / "todo")) == 1


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGALRM])
def test_svc_h_or_a_while_qmail_send_starts_its_helpers_does_not_kill_it(scratch, signum):
    """qmail-users' `svc -h` right after `svc -t`, or `svc -a`: qmail-send catches them from
    before its helpers start (qmail-send.c sets its handlers before it reads their fds), so
    one that comes while they start is acted on, never the default action that kills it."""
    send = Send(scratch)
    send.wait_for(send.children, timeout=20, what="its first helper")
    send.proc.send_signal(signum)
    send.wait_line(r"^status: local 0/10 remote 0/20$")
    msgid = inject(scratch.home, MSG, "alice@localhost", ["joe@localhost"])
    send.wait_line(r"^end msg \d+$")
    assert send.stop() == 0
    assert msgid is None or "end msg %d" % msgid in send.lines()
    assert [n.rsplit(".", 1)[0] for n in scratch.mail()] == ["joe@localhost"]


def test_svc_h_leaves_qmail_usersd_answering(tmp_path):
    """svc -h (an admin's `svc -h /service/*` after editing controls): qmail-usersd notices
    changed files by itself, so SIGHUP does nothing, as for qmail-queued and qmail-tcpserver;
    it killed the service, whose clients then met a closed socket until supervise restarted it."""
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    svc = UsersService(home, dict(os.environ, QMAILPY_SINGLEUSER="1")).start()
    try:
        svc.proc.send_signal(signal.SIGHUP)
        svc.proc.send_signal(signal.SIGHUP)
        # an answer comes from the process itself, after the signals were delivered to it
        assert [a[:4] for a in ask(svc.path, b"WHAT is this\n")] == [b"BAD "]
        assert svc.proc.poll() is None
    finally:
        log = svc.stop()
    assert svc.proc.returncode == 0
    assert log.splitlines()[-1].endswith(" exit"), log


@pytest.mark.parametrize("how", ["kill", "int"])
def test_qmail_queued_going_away_mid_data_is_451_and_nothing_queued(tmp_path, how):
    """qmail-smtpd streams DATA into qmail-queued; the service killed, or stopped (svc -i)
    and its 10 seconds for the insertions under way over, before the client's final dot:
    451, never 250, and nothing in todo/."""
    home = tmp_path / "qmail"
    layout.create_queue(str(home))
    (home / "control").mkdir()
    (home / "control" / "me").write_text("mx.example.org\n")
    (home / "control" / "rcpthosts").write_text("example.org\n")
    service = Queued(home, os.environ, log=str(tmp_path / "queued.log")).start()
    env = dict(os.environ, QMAILHOME=str(home), **TCP_ENV)
    smtpd = subprocess.Popen([os.path.join(ROOT, "bin", "qmail-smtpd")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env)
    try:
        smtpd.stdin.write(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                          b"Subject: x\r\n\r\n" + b"x" * 100 + b"\r\n")
        smtpd.stdin.flush()
        replies = b""
        while replies.count(b"\r\n") < 5:
            replies += smtpd.stdout.read1(4096)
        assert replies.split(b"\r\n")[4] == b"354 go ahead"
        wait_for(lambda: any(os.listdir(home / "queue" / "mess" / str(i)) for i in range(23)), what="its mess file")
        if how == "kill":
            service.kill()
        else:
            service.proc.send_signal(signal.SIGINT)
            wait_for(lambda: b"exiting" in (tmp_path / "queued.log").read_bytes(), timeout=30, what="exiting")
        smtpd.stdin.write((b"y" * 998 + b"\r\n") * 200 + b".\r\nQUIT\r\n")
        smtpd.stdin.close()
        rest = smtpd.stdout.read().split(b"\r\n")
        assert smtpd.wait(timeout=30) == 0
    finally:
        service.kill()
        if smtpd.poll() is None:
            smtpd.kill()
    assert rest == [b"451 communication with mail server failed (#4.4.2)", b"221 mx.example.org", b""]
    assert os.listdir(home / "queue" / "todo") == []
