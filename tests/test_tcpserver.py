"""qmail-tcpserver against the real tcpserver (ucspi-tcp): the same environment byte for byte,
the same log lines, the same refusals; and what a long-running front end must survive."""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, program
from dnsserver import dns_server  # noqa: F401  (fixture)
from smtpsink import loopback_address
from qmailpy.queue.layout import create_queue

sys.path.insert(0, ROOT)

GREETING = b"220 test.example ESMTP\r\n"
# The queue program qmail-smtpd starts ($QMAILQUEUE) writes the environment it was given,
# as `env` prints it: what qmail-smtpd's child sees is what the front end gave qmail-smtpd.
DUMP_QUEUE = """#!/bin/sh
env > "$DUMPDIR/env.$$"
cat >/dev/null
cat <&1 >/dev/null
exit 0
"""


@pytest.fixture
def qhome(home):
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    create_queue(home.root)
    real_env = home.env
    home.env = lambda **extra: real_env(**{"QMAILQUEUE": program("qmail-queue"), **extra})
    return home


def tcprules(tmp_path, text, program="tcprules"):
    rules = tmp_path / "tcp.smtp"
    rules.write_text(text)
    cdb = str(tmp_path / "tcp.smtp.cdb")
    subprocess.run([program, cdb, cdb + ".tmp"], input=text.encode(), check=True)
    return cdb


# Debian's ucspi-tcp-ipv6 conflicts with ucspi-tcp, so `make deps` unpacks its tcpserver and
# tcprules here instead of installing it: the real IPv6 tcpserver qmail-tcpserver is compared with.
UCSPI6 = os.path.join(ROOT, "vendor", "ucspi-tcp-ipv6")


def ucspi6(name):
    path = os.path.join(UCSPI6, name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s missing: run make deps (it unpacks Debian's ucspi-tcp-ipv6 there)" % path)
    return path


class Front:
    """tcpserver or qmail-tcpserver on 127.0.0.1, a free port (-1 tells which); stderr kept."""

    def __init__(self, front, opts, env, tmp_path, host="127.0.0.1", args=()):
        self.errpath = tmp_path / ("%s.%d.err" % (os.path.basename(front), time.monotonic_ns()))
        self.err = open(self.errpath, "wb")
        cmd = [front, "-1", *opts, host, "0", program("qmail-smtpd"), *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self.err)
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), "%s did not start: %s" % (front, self.errpath.read_text())
        self.port, self.host = int(line), host

    def connect(self):
        return socket.create_connection((self.host, self.port), timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.err.close()
        return code

    def log(self):
        return self.errpath.read_text()


def fronts():
    return [pytest.param("tcpserver", id="tcpserver"), pytest.param("qmail-tcpserver", id="qmail-tcpserver")]


def front_path(name):
    """tcpserver: ucspi-tcp 0.88's; tcpserver6: Debian's ucspi-tcp-ipv6's."""
    if name == "tcpserver6":
        return ucspi6("tcpserver")
    return name if name == "tcpserver" else program(name)


def recv_until(sock, ending, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(ending):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def one_message(front):
    """A whole SMTP transaction with a message: the replies."""
    with front.connect() as s:
        assert recv_until(s, b"\r\n") == GREETING
        s.sendall(b"HELO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        got = recv_until(s, b"354 go ahead\r\n")
        s.sendall(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        got += recv_until(s, b"221 test.example\r\n")
    return got


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.02)


def ended(front, count):
    return lambda: front.log().count("tcpserver: end ") >= count


def normalized(log, ports):
    """The log with pids, qp numbers and the given port numbers as tokens."""
    for port, name in ports.items():
        log = re.sub(r"(?<=[:=])%d\b" % port, name, log)
    log = re.sub(r"\b(pid|ok|deny|end|qmail-smtpd:) \d+", r"\1 PID", log)
    return re.sub(r"\bqp=\d+", "qp=N", log)


def run_env_dump(tmp_path, qhome, name, cdb, opts=("-v", "-H", "-R", "-l", "localhost"), host="127.0.0.1",
                 client_host=None, source=None):
    """(env lines of the one message's queue program, the log, server port, client port);
    the server listens on `host`, the client connects to `client_host` (or `host`) from
    `source` (an address; by default the kernel's choice)."""
    dumpdir = tmp_path / ("dump-" + name)
    dumpdir.mkdir()
    queue = tmp_path / "dumpqueue"
    queue.write_text(DUMP_QUEUE)
    queue.chmod(0o755)
    # a variable the rule replaces, one it adds, and the order pathexec gives them
    env = qhome.env(QMAILQUEUE=str(queue), DUMPDIR=str(dumpdir), OVERRIDDEN="parent", LAST="last")
    front = Front(front_path(name), [*opts, "-x", cdb], env, tmp_path, host=host)
    try:
        src = (source, 0) if source else None
        with socket.create_connection((client_host or host, front.port), timeout=10, source_address=src) as s:
            client_port = s.getsockname()[1]
            assert recv_until(s, b"\r\n") == GREETING
            s.sendall(b"HELO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
            assert recv_until(s, b"354 go ahead\r\n").endswith(b"354 go ahead\r\n")
            s.sendall(b"hello\r\n.\r\nQUIT\r\n")
            assert recv_until(s, b"221 test.example\r\n").endswith(b"221 test.example\r\n")
        if "-q" in opts:
            wait_for(lambda: os.listdir(dumpdir), what="the dump")
        else:
            wait_for(ended(front, 1), what="the session's end")
    finally:
        assert front.stop() == 0
    dumps = os.listdir(dumpdir)
    assert len(dumps) == 1, dumps
    text = (dumpdir / dumps[0]).read_text()
    text = text.replace(str(dumpdir), "DUMPDIR")
    return text, front.log(), front.port, client_port


def differences(results):
    """What qmail-tcpserver gave that tcpserver did not, as a unified diff of each text of
    both_fronts()' results ("" when both are the same): what a failed comparison shows."""
    import difflib
    theirs, ours = results["tcpserver"], results["qmail-tcpserver"]
    return "".join("".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "tcpserver", "qmail-tcpserver"))
                   for a, b in zip(theirs, ours))


def both_fronts(tmp_path, qhome, cdb, opts, source=None):
    """{front: (env dump, log)} of one session under tcpserver and qmail-tcpserver (run_env_dump),
    ports as SERVERPORT and CLIENTPORT."""
    results = {}
    for name in ("tcpserver", "qmail-tcpserver"):
        env, log, port, client = run_env_dump(tmp_path, qhome, name, cdb, opts=opts, source=source)
        ports = {port: "SERVERPORT", client: "CLIENTPORT"}
        results[name] = (normalized(env, ports), normalized(log, ports))
    return results


def test_same_environment_and_log_lines_as_tcpserver(tmp_path, qhome):
    """The program sees, entry for entry and in the same order, what tcpserver gives it:
    PROTO, TCPLOCAL*, TCPREMOTE*, the rule's assignments (one replacing a variable of the
    parent, one replacing tcpserver's own TCPLOCALHOST); and both log the same lines."""
    cdb = tcprules(tmp_path, '127.0.0.1:allow,RELAYCLIENT="",OVERRIDDEN="rule",TCPLOCALHOST="ruled",'
                             'GREET="a b"\n:deny\n')
    results = {}
    for name in ("tcpserver", "qmail-tcpserver"):
        env, log, port, client = run_env_dump(tmp_path, qhome, name, cdb)
        ports = {port: "SERVERPORT", client: "CLIENTPORT"}
        results[name] = (normalized(env, ports), normalized(log, ports))
    assert results["qmail-tcpserver"][0] == results["tcpserver"][0]
    assert "\nRELAYCLIENT=\n" in results["tcpserver"][0]
    assert "\nOVERRIDDEN=rule\n" in results["tcpserver"][0]
    assert "TCPLOCALHOST=ruled\n" in results["tcpserver"][0]
    assert "TCPREMOTEHOST" not in results["tcpserver"][0]      # -H: removed, not empty
    assert results["qmail-tcpserver"][1] == results["tcpserver"][1]
    assert "tcpserver: ok PID localhost:127.0.0.1:SERVERPORT :127.0.0.1::CLIENTPORT\n" in results["tcpserver"][1]


def test_environment_without_rules_and_with_remote_lookups_off(tmp_path, qhome):
    """No -x, -l given: TCPLOCALHOST is the name given; nothing else differs from tcpserver."""
    cdb = tcprules(tmp_path, ":allow\n")
    results = {}
    for name in ("tcpserver", "qmail-tcpserver"):
        env, log, port, client = run_env_dump(tmp_path, qhome, name, cdb, opts=("-q", "-HR", "-l0"))
        results[name] = normalized(env, {port: "SERVERPORT", client: "CLIENTPORT"})
        assert "tcpserver:" not in log                          # -q: no line of its own
    assert results["qmail-tcpserver"] == results["tcpserver"]
    assert "TCPLOCALHOST=0\n" in results["tcpserver"]


@pytest.mark.parametrize("name", ["tcpserver", "qmail-tcpserver"])
def test_denied_client_is_dropped_as_tcpserver_does(tmp_path, qhome, name):
    """A deny rule: the connection closes without a byte, `deny` is logged, the child exits 100;
    the cdb is read per connection, so a new tcprules run counts from the next client."""
    cdb = tcprules(tmp_path, "127.0.0.1:deny\n")
    front = Front(front_path(name), ["-v", "-HR", "-l", "localhost", "-x", cdb], qhome.env(), tmp_path)
    try:
        with front.connect() as s:
            client = s.getsockname()[1]
            assert recv_until(s, b"\n") == b""
        wait_for(ended(front, 1))
        tcprules(tmp_path, "127.0.0.1:allow\n")
        with front.connect() as s:
            assert recv_until(s, b"\r\n") == GREETING
            s.sendall(b"QUIT\r\n")
            recv_until(s, b"\r\n")
        wait_for(ended(front, 2))
    finally:
        front.stop()
    log = normalized(front.log(), {front.port: "P", client: "C"})
    assert "tcpserver: deny PID localhost:127.0.0.1:P :127.0.0.1::C\ntcpserver: end PID status 25600\n" in log


def dropped_log(name, rules, qhome, tmp_path):
    """The -v log of front end `name` (-x rules) after one client it closed on without a byte."""
    front = Front(front_path(name), ["-v", "-HR", "-l", "h", "-x", rules], qhome.env(), tmp_path)
    try:
        with front.connect() as s:
            assert recv_until(s, b"\n") == b""
        wait_for(ended(front, 1))
    finally:
        front.stop()
    return front.log()


def test_rules_allowing_by_default_as_tcpserver(tmp_path, qhome):
    """-X with no rules file, and a rules cdb with no rule for the client: the session runs,
    with the environment and the log lines tcpserver gives it (`ok`, no rule's variables)."""
    nomatch = tcprules(tmp_path, "10.0.0.1:deny\n")
    for cdb, opts in ((str(tmp_path / "none.cdb"), ("-v", "-HR", "-l", "localhost", "-X")),
                      (nomatch, ("-v", "-HR", "-l", "localhost"))):
        top = tmp_path / ("run-" + os.path.basename(cdb))
        top.mkdir()
        results = both_fronts(top, qhome, cdb, opts)
        assert differences(results) == "", cdb
        assert "tcpserver: ok PID localhost:127.0.0.1:SERVERPORT :127.0.0.1::CLIENTPORT\n" in results["tcpserver"][1]
        assert "RELAYCLIENT" not in results["tcpserver"][0]


def test_a_corrupt_rules_cdb_drops_the_connection_with_exit_111(tmp_path, qhome):
    """A rules cdb that does not parse: the client gets nothing, the session ends 111 with
    tcpserver's `unable to read` warning; its reason names the fault (tcpserver says only
    `protocol error`), so the line starts as tcpserver's does."""
    cdb = tmp_path / "short.cdb"
    cdb.write_bytes(b"\0" * 4)
    logs = {name: re.sub(r"\b(pid|end) \d+", r"\1 PID", dropped_log(name, str(cdb), qhome, tmp_path))
            for name in ("tcpserver", "qmail-tcpserver")}
    drop = "tcpserver: warning: dropping connection, unable to read %s: " % cdb
    assert drop + "protocol error\ntcpserver: end PID status 28416\n" in logs["tcpserver"]
    assert (drop + "corrupt cdb: truncated: 4 bytes, shorter than the header\n"
            "tcpserver: end PID status 28416\n") in logs["qmail-tcpserver"]


def test_banner_goes_first_as_tcpserver_s_b(tmp_path, qhome):
    """-B: the banner is written to the client before the program runs, as tcpserver does."""
    got = {}
    for name in ("tcpserver", "qmail-tcpserver"):
        front = Front(front_path(name), ["-HR", "-l", "h", "-B", "hello there\r\n"], qhome.env(), tmp_path)
        try:
            with front.connect() as s:
                got[name] = recv_until(s, GREETING)
                s.sendall(b"QUIT\r\n")
                recv_until(s, b"\r\n")
        finally:
            front.stop()
    assert got["qmail-tcpserver"] == got["tcpserver"] == b"hello there\r\n" + GREETING


def test_missing_rules_drop_the_connection(tmp_path, qhome):
    """-x naming no file: tcpserver's warning and exit 111 per connection (unless -X)."""
    missing = str(tmp_path / "none.cdb")
    for name in ("tcpserver", "qmail-tcpserver"):
        log = dropped_log(name, missing, qhome, tmp_path)
        assert ("tcpserver: warning: dropping connection, unable to read %s: file does not exist\n"
                "tcpserver: end" % missing) in log
        assert re.search(r"tcpserver: end \d+ status 28416\n", log)


def test_refuses_a_program_it_cannot_preload(tmp_path):
    got = subprocess.run([program("qmail-tcpserver"), "127.0.0.1", "0", "/bin/cat"], capture_output=True,
                         timeout=30)
    assert got.returncode == 111
    assert got.stderr == (b"tcpserver: fatal: qmail-tcpserver runs qmail-smtpd only, not /bin/cat: "
                          b"run /bin/cat under tcpserver\n")
    fake = tmp_path / "qmail-smtpd"
    fake.write_text("#!/bin/sh\necho hi\n")
    fake.chmod(0o755)
    got = subprocess.run([program("qmail-tcpserver"), "127.0.0.1", "0", str(fake)], capture_output=True,
                         timeout=30)
    assert got.returncode == 111
    assert b"is not qmailpy's qmail-smtpd: run it under tcpserver" in got.stderr
    got = subprocess.run([program("qmail-tcpserver"), "-Z", "127.0.0.1"], capture_output=True, timeout=30)
    assert got.returncode == 100 and got.stderr.startswith(b"qmail-tcpserver: usage: ")
    missing = str(tmp_path / "bin" / "qmail-smtpd")
    got = subprocess.run([program("qmail-tcpserver"), "127.0.0.1", "0", missing], capture_output=True, timeout=30)
    assert (got.returncode, got.stderr) == (
        111, b"tcpserver: fatal: unable to read %s: file does not exist\n" % missing.encode())


def test_a_program_named_without_a_path_is_qmailpy_s_qmail_smtpd(tmp_path, qhome):
    """`qmail-tcpserver ... qmail-smtpd` (no slash, as a run file found by $PATH writes it):
    nothing to read, the session is qmailpy's qmail-smtpd."""
    cmd = [program("qmail-tcpserver"), "-1", "-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"]
    proc = subprocess.Popen(cmd, env=qhome.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert recv_until(s, b"\r\n") == GREETING
            s.sendall(b"QUIT\r\n")
            assert recv_until(s, b"\r\n") == b"221 test.example\r\n"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
        proc.stderr.close()


def child_pids(front, count):
    wait_for(lambda: len(re.findall(r"tcpserver: pid (\d+) from", front.log())) >= count)
    return [int(p) for p in re.findall(r"tcpserver: pid (\d+) from", front.log())]


def test_kill_9_of_a_child_leaves_the_listener_serving(tmp_path, qhome):
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h"], qhome.env(), tmp_path)
    try:
        victim = front.connect()
        assert recv_until(victim, b"\r\n") == GREETING
        other = front.connect()
        assert recv_until(other, b"\r\n") == GREETING
        pid = child_pids(front, 2)[0]
        os.kill(pid, signal.SIGKILL)
        assert recv_until(victim, b"\n") == b""
        wait_for(lambda: "tcpserver: end %d status 9\n" % pid in front.log())
        assert b"250 ok" in one_message(front)             # a new session: the listener is fine
        other.sendall(b"QUIT\r\n")                         # and the other session never noticed
        assert recv_until(other, b"\r\n") == b"221 test.example\r\n"
        other.close()
        victim.close()
        assert front.proc.poll() is None
    finally:
        assert front.stop() == 0


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def workers(pid):
    """The pids of a front end's living children (its workers)."""
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


def test_a_thousand_connections_leave_no_fd_or_memory_behind(tmp_path, qhome):
    """1,000 connections, half ended by QUIT, half dropped: once the workers are retired
    (idle 1 s), the parent has the fds and the memory it had before them."""
    front = Front(program("qmail-tcpserver"), ["-q", "-HR", "-l", "h", "-c", "20"],
                  qhome.env(QMAILPY_MAXIDLE="1"), tmp_path)
    pid = front.proc.pid

    def churn(n):
        for i in range(n):
            with front.connect() as s:
                assert recv_until(s, b"\r\n") == GREETING
                if i % 2:
                    s.sendall(b"QUIT\r\n")            # half end with QUIT, half just go away
                    assert recv_until(s, b"\r\n") == b"221 test.example\r\n"
    try:
        churn(50)
        wait_for(lambda: not workers(pid), what="the workers retired")
        before_fds, before_rss = fds(pid), rss_kb(pid)
        churn(1000)
        assert 1 <= len(workers(pid)) <= 20
        wait_for(lambda: not workers(pid), what="the workers retired")
        assert fds(pid) == before_fds
        assert rss_kb(pid) - before_rss < 1024, (before_rss, rss_kb(pid))
        assert front.proc.poll() is None
    finally:
        assert front.stop() == 0
    assert "tcpserver:" not in front.log()


def session_pids(front):
    return [int(p) for p in re.findall(r"tcpserver: pid (\d+) from", front.log())]


@pytest.mark.parametrize("max_use, distinct", [("", 1), ("3", 4), ("1", 10)])
def test_a_worker_serves_sessions_one_after_another_up_to_maxuse(tmp_path, qhome, max_use, distinct):
    """-c 1: ten sessions in turn go to one worker (a fresh session each); $QMAILPY_MAXUSE
    sessions later it is retired and a new one forked; 1 is a process per connection."""
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h", "-c", "1"],
                  qhome.env(QMAILPY_MAXUSE=max_use), tmp_path)
    try:
        for _ in range(10):
            assert b"250 ok" in one_message(front)
        wait_for(ended(front, 10))
    finally:
        assert front.stop() == 0
    assert len(set(session_pids(front))) == distinct
    ends = re.findall(r"tcpserver: end (\d+) status (\d+)", front.log())
    assert [int(p) for p, _ in ends] == session_pids(front) and {s for _, s in ends} == {"0"}


def test_a_session_state_never_reaches_the_next_session_of_its_worker(tmp_path, qhome):
    """One worker (-c 1), two clients in turn: RELAYCLIENT from 127.0.0.2's rule lets the
    first relay; the second, from 127.0.0.1 (no rule), is refused, and its environment
    has none of the first's variables."""
    cdb = tcprules(tmp_path, '127.0.0.2:allow,RELAYCLIENT="",FIRST="yes"\n:allow\n')
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h", "-c", "1", "-x", cdb], qhome.env(),
                  tmp_path)
    replies = []
    try:
        for source in ("127.0.0.2", "127.0.0.1", "127.0.0.2"):
            with socket.create_connection(("127.0.0.1", front.port), timeout=10,
                                          source_address=(source, 0)) as s:
                assert recv_until(s, b"\r\n") == GREETING
                got = b""
                for command in (b"HELO client", b"MAIL FROM:<a@example.org>", b"RCPT TO:<x@elsewhere.example>"):
                    s.sendall(command + b"\r\n")
                    got += recv_until(s, b"\r\n")
                replies.append(got)
                s.sendall(b"QUIT\r\n")
                recv_until(s, b"221 test.example\r\n")
        wait_for(ended(front, 3))
    finally:
        assert front.stop() == 0
    assert len(set(session_pids(front))) == 1
    assert replies[0].endswith(b"250 ok\r\n") and replies[2] == replies[0]
    assert replies[1].endswith(b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n")


@pytest.mark.parametrize("name", ["tcpserver", "qmail-tcpserver"])
def test_sigterm_exits_at_once_and_sessions_go_on(tmp_path, qhome, name):
    """SIGTERM: the server exits 0 at once (supervise's `svc -t` starts the new one without
    waiting for anybody's session) and new clients are refused; a running session goes on
    alone to its end and queues its message; nothing else is logged, as under tcpserver."""
    front = Front(front_path(name), ["-v", "-HR", "-l", "h"], qhome.env(), tmp_path)
    try:
        s = front.connect()
        assert recv_until(s, b"\r\n") == GREETING
        s.sendall(b"HELO client\r\nMAIL FROM:<a@example.org>\r\n")
        assert recv_until(s, b"250 ok\r\n").endswith(b"250 ok\r\n")
        front.proc.send_signal(signal.SIGTERM)
        assert front.proc.wait(timeout=10) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", front.port), timeout=2).close()
        s.sendall(b"RCPT TO:<b@example.org>\r\nDATA\r\n")
        assert recv_until(s, b"354 go ahead\r\n").endswith(b"354 go ahead\r\n")
        s.sendall(b"hello\r\n.\r\nQUIT\r\n")
        got = recv_until(s, b"221 test.example\r\n")
        assert re.match(rb"250 ok \d+ qp \d+\r\n221 test.example\r\n$", got), got
        assert recv_until(s, b"\n") == b""                  # and the session's end closes it
        s.close()
    finally:
        front.stop()
    log = front.log()
    assert "tcpserver: end" not in log and re.search(r"qmail-smtpd: \d+ accept sender=<a@example.org>", log)


def test_sighup_changes_nothing(tmp_path, qhome):
    front = Front(program("qmail-tcpserver"), ["-q", "-HR", "-l", "h"], qhome.env(), tmp_path)
    try:
        front.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert front.proc.poll() is None
        assert b"250 ok" in one_message(front)
    finally:
        assert front.stop() == 0


@pytest.mark.parametrize("name", ["tcpserver", "qmail-tcpserver"])
def test_concurrency_limit_defers_accepting(tmp_path, qhome, name):
    """-c 1: a second client waits in the backlog, unanswered, until the first session ends."""
    front = Front(front_path(name), ["-v", "-HR", "-l", "h", "-c", "1"], qhome.env(), tmp_path)
    try:
        first = front.connect()
        assert recv_until(first, b"\r\n") == GREETING
        second = front.connect()
        second.settimeout(0.5)
        with pytest.raises(socket.timeout):
            second.recv(100)
        first.sendall(b"QUIT\r\n")
        recv_until(first, b"\r\n")
        first.close()
        assert recv_until(second, b"\r\n") == GREETING
        second.close()
        wait_for(ended(front, 2))
    finally:
        front.stop()
    statuses = re.findall(r"tcpserver: status: (\d+/\d+)", front.log())
    assert statuses == ["0/1", "1/1", "0/1", "1/1", "0/1"]


@pytest.mark.parametrize("name", ["tcpserver", "qmail-tcpserver"])
def test_periplimit_counts_sessions_under_either_front_end(tmp_path, qhome, name):
    qhome.control("periplimit", "1\n")
    front = Front(front_path(name), ["-q", "-HR", "-l", "h"], qhome.env(), tmp_path)
    try:
        first = front.connect()
        assert recv_until(first, b"\r\n") == GREETING
        with front.connect() as second:
            assert recv_until(second, b"\r\n") == (
                b"421 too many connections from your IP address, try again later (#4.3.2)\r\n")
        first.close()
    finally:
        front.stop()


def test_ipv6_listener(tmp_path, qhome):
    """An IPv6 host: an IPv6 socket; PROTO=TCP6 and the addresses in the TCP* names qmail-smtpd
    reads, each followed by its TCP6* twin, as the IPv6 tcpserver sets them."""
    dumpdir = tmp_path / "dump"
    dumpdir.mkdir()
    queue = tmp_path / "dumpqueue"
    queue.write_text(DUMP_QUEUE)
    queue.chmod(0o755)
    env = qhome.env(QMAILQUEUE=str(queue), DUMPDIR=str(dumpdir))
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h"], env, tmp_path, host="::1")
    try:
        assert b"250 ok" in one_message(front)
        wait_for(ended(front, 1))
    finally:
        assert front.stop() == 0
    [dump] = os.listdir(dumpdir)
    seen = (dumpdir / dump).read_text().splitlines()
    # what Debian's ucspi-tcp-ipv6 tcpserver -HR -l h ::1 gives (its order: test_tcp6_changes_order)
    p = str(front.port)
    [client] = {line.split("=")[1] for line in seen if "REMOTEPORT=" in line}
    assert sorted(line for line in seen if line.startswith(("PROTO=", "TCP"))) == sorted([
        "PROTO=TCP6", "TCPLOCALIP=::1", "TCP6LOCALIP=::1", "TCPLOCALPORT=" + p, "TCP6LOCALPORT=" + p,
        "TCPLOCALHOST=h", "TCP6LOCALHOST=h", "TCPREMOTEIP=::1", "TCP6REMOTEIP=::1",
        "TCPREMOTEPORT=" + client, "TCP6REMOTEPORT=" + client])
    assert "tcpserver: ok %s h:::1:%d :::1::" % (re.search(r"pid (\d+)", front.log()).group(1), front.port) \
        in front.log()


def same_as_the_ipv6_tcpserver(tmp_path, qhome, rules, host="::1", client_host=None):
    """(env dump, log) of one message under Debian's ucspi-tcp-ipv6 tcpserver, with the rules
    compiled by its tcprules, after asserting qmail-tcpserver gives the same bytes."""
    cdb = tcprules(tmp_path, rules, ucspi6("tcprules"))
    results = {}
    for name in ("tcpserver6", "qmail-tcpserver"):
        env, log, port, client = run_env_dump(tmp_path, qhome, name, cdb, host=host, client_host=client_host)
        ports = {port: "SERVERPORT", client: "CLIENTPORT"}
        results[name] = (normalized(env, ports), normalized(log, ports))
    assert results["qmail-tcpserver"][0] == results["tcpserver6"][0]
    assert results["qmail-tcpserver"][1] == results["tcpserver6"][1]
    return results["tcpserver6"]


def test_ipv6_client_same_environment_and_log_lines_as_the_ipv6_tcpserver(tmp_path, qhome):
    """On ::1, entry for entry and in order what the IPv6 tcpserver gives: PROTO=TCP6, each TCP*
    name and its TCP6* twin, the rule's assignments (one replacing a TCP6* variable); the
    same log lines."""
    env, log = same_as_the_ipv6_tcpserver(
        tmp_path, qhome, '::1:allow,RELAYCLIENT="",OVERRIDDEN="rule",TCP6LOCALHOST="ruled",GREET="a b"\n:deny\n')
    assert "\nPROTO=TCP6\n" in env and "\nTCP6REMOTEIP=::1\n" in env and "\nTCPREMOTEIP=::1\n" in env
    assert "\nRELAYCLIENT=\n" in env and "\nTCP6LOCALHOST=ruled\n" in env and "\nOVERRIDDEN=rule\n" in env
    assert "tcpserver: ok PID localhost:::1:SERVERPORT :::1::CLIENTPORT\n" in log


def test_ipv6_rule_on_a_prefix_ending_in_a_colon_as_the_ipv6_tcpserver(tmp_path, qhome):
    """`:::allow` is the key "::" (the IPv6 tcprules'), a prefix of ::1 the IPv6 tcpserver
    tries before the default; another address's rule does not match."""
    env, log = same_as_the_ipv6_tcpserver(
        tmp_path, qhome, '::2:allow,RULE="other"\n:::allow,RELAYCLIENT="",RULE="prefix"\n:allow,RULE="default"\n')
    assert "\nRULE=prefix\n" in env and "\nRELAYCLIENT=\n" in env


def test_ipv4_client_of_an_ipv6_listener_as_the_ipv6_tcpserver(tmp_path, qhome):
    """An IPv4 client on a `::` listener (::0: the IPv6 tcpserver cannot read `::` alone):
    PROTO=TCP, a.b.c.d in the TCP* names and ::ffff:a.b.c.d in their TCP6* twins and the
    log line; its rule is the IPv4 address's."""
    env, log = same_as_the_ipv6_tcpserver(
        tmp_path, qhome, '127.0.0.1:allow,RULE="v4"\n::ffff:127.0.0.1:allow,RULE="mapped"\n:allow,RULE="default"\n',
        host="::0", client_host="127.0.0.1")
    assert "\nPROTO=TCP\n" in env and "\nTCPREMOTEIP=127.0.0.1\n" in env and "\nRULE=v4\n" in env
    assert "\nTCP6REMOTEIP=::ffff:127.0.0.1\n" in env and "\nTCP6LOCALIP=::ffff:127.0.0.1\n" in env
    assert "tcpserver: pid PID from 127.0.0.1\n" in log
    assert "tcpserver: ok PID localhost:::ffff:127.0.0.1:SERVERPORT :::ffff:127.0.0.1::CLIENTPORT\n" in log


def test_ipv6_deny_rule_as_the_ipv6_tcpserver(tmp_path, qhome):
    """A deny rule for ::1: closed without a byte, the same `deny` and `end` lines."""
    cdb = tcprules(tmp_path, "::1:deny\n:allow\n", ucspi6("tcprules"))
    logs = {}
    for name in ("tcpserver6", "qmail-tcpserver"):
        front = Front(front_path(name), ["-v", "-HR", "-l", "localhost", "-x", cdb], qhome.env(), tmp_path,
                      host="::1")
        try:
            with front.connect() as s:
                client = s.getsockname()[1]
                assert recv_until(s, b"\n") == b""
            wait_for(ended(front, 1))
        finally:
            assert front.stop() == 0
        logs[name] = normalized(front.log(), {front.port: "P", client: "C"})
    assert logs["qmail-tcpserver"] == logs["tcpserver6"]
    assert "tcpserver: deny PID localhost:::1:P :::1::C\ntcpserver: end PID status 25600\n" in logs["tcpserver6"]


def test_ipv6_rules_prefix_ending_in_a_colon(tmp_path, qhome):
    """Debian's ucspi-tcp-ipv6 tcprules writes `:::allow,...` as the key "::", and its
    tcpserver tries it for ::1 (a prefix ending in ':'): so does qmail-tcpserver."""
    import cdblib
    cdb = tmp_path / "tcp6.cdb"
    with open(cdb, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"::", b'+RELAYCLIENT=\0')
        w.put(b"", b"D\0")
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h", "-x", str(cdb)], qhome.env(),
                  tmp_path, host="::1")
    try:
        with front.connect() as s:
            assert recv_until(s, b"\r\n") == GREETING
            s.sendall(b"HELO client\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@elsewhere.example>\r\nQUIT\r\n")
            assert recv_until(s, b"221 test.example\r\n") == (
                b"250 test.example\r\n250 ok\r\n250 ok\r\n221 test.example\r\n")
    finally:
        assert front.stop() == 0


def test_tcp6_changes_order():
    """An IPv6 connection's variables in the order Debian's ucspi-tcp-ipv6 tcpserver sets them
    (each TCP* name, then its TCP6* twin; a name not found removes both); IPv4: ucspi-tcp 0.88's."""
    from qmailpy.tcpserver.child import Connection
    from qmailpy.tcpserver.tcpenv import tcp_changes

    class Sock:
        def __init__(self, ip):
            self.ip = ip

        def getsockname(self):
            return (self.ip, 25)

    conn = Connection(Sock("::1"), ("::1", 4000))
    conn.local_host, conn.remote_info = "h", "joe"
    assert tcp_changes(conn) == [
        ("PROTO", "TCP6"), ("TCPLOCALIP", "::1"), ("TCP6LOCALIP", "::1"), ("TCPLOCALPORT", "25"),
        ("TCP6LOCALPORT", "25"), ("TCPLOCALHOST", "h"), ("TCP6LOCALHOST", "h"),
        ("TCPREMOTEIP", "::1"), ("TCP6REMOTEIP", "::1"), ("TCPREMOTEPORT", "4000"),
        ("TCP6REMOTEPORT", "4000"), ("TCPREMOTEHOST", None), ("TCP6REMOTEHOST", None),
        ("TCPREMOTEINFO", "joe"), ("TCP6REMOTEINFO", "joe")]
    conn = Connection(Sock("127.0.0.1"), ("127.0.0.1", 4000))
    assert [name for name, _ in tcp_changes(conn)] == [
        "PROTO", "TCPLOCALIP", "TCPLOCALPORT", "TCPLOCALHOST", "TCPREMOTEIP", "TCPREMOTEPORT",
        "TCPREMOTEHOST", "TCPREMOTEINFO"]


@pytest.mark.parametrize("peer,text", [
    ("::1", "::1"), ("::", "::"),
    ("2001:db8:0:1:2:3:4:5", "2001:db8::1:2:3:4:5"),       # a lone zero group: '::' too
    ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),         # the first of the longest runs
    ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7::"), ("0:1:2:3:4:5:6:7", "::1:2:3:4:5:6:7"),
    ("::1.2.3.4", "::102:304"), ("fe80::1%lo", "fe80::1"),
    ("::ffff:192.0.2.1", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"),
    ("2001:DB8:a:b:c:d:e:f", "2001:db8:a:b:c:d:e:f"),       # no zero group: no '::'
])
def test_client_address_spelled_as_the_ipv6_tcpserver_spells_it(peer, text):
    """TCPREMOTEIP (and so the rules keys tried) as ucspi-tcp-ipv6's ip6_fmt() writes the
    address, not as inet_ntop does: a rule copied from tcpserver's log matches alike."""
    from qmailpy.tcpserver.child import Connection

    class Sock:
        def getsockname(self):
            return ("::1", 25)

    conn = Connection(Sock(), (peer, 4000))
    assert conn.remote_ip == text
    assert conn.remote_addr == (peer[7:] if peer.startswith("::ffff:") else peer)   # ident's: %lo kept


def test_paranoid_name_of_an_ipv6_client_whose_spellings_differ(dns_server):
    """-p keeps the PTR name when its AAAA record is the client, compared as addresses (as
    tcpserver's byte_equal): the AAAA comes back as 2001:db8:0:1:2:3:4:5, the client is
    spelled 2001:db8::1:2:3:4:5 (ip6_fmt's way)."""
    from qmailpy.dns.resolver import Resolver
    from qmailpy.tcpserver.names import host_name
    nibbles = ".".join(reversed("20010db8000000010002000300040005")) + ".ip6.arpa"
    dns_server.zones = {nibbles: {"PTR": ["mx.example.org"]},
                        "mx.example.org": {"AAAA": ["2001:db8:0:1:2:3:4:5"]},
                        "liar.example.org": {"AAAA": ["2001:db8::9"]},
                        "9" + nibbles[1:]: {"PTR": ["liar.example.org"]}}
    resolver = Resolver(dns_server.environ())
    assert host_name(resolver, "2001:db8::1:2:3:4:5", paranoid=True) == "mx.example.org"
    assert host_name(resolver, "2001:db8::1:2:3:4:9", paranoid=True) is None
    assert host_name(resolver, "2001:db8::1:2:3:4:9") == "liar.example.org"


def test_pathexec_order():
    """ucspi-tcp's pathexec: a replaced entry's place goes to the last entry, new ones at the end."""
    from qmailpy.tcpserver.tcpenv import pathexec_apply
    base = ["A=1", "B=2", "C=3", "D=4"]
    assert pathexec_apply(base, [("B", "x")]) == ["A=1", "D=4", "C=3", "B=x"]
    assert pathexec_apply(base, [("D", None)]) == ["A=1", "B=2", "C=3"]
    assert pathexec_apply(base, [("E", None), ("A", "y"), ("AB", "z")]) == ["D=4", "B=2", "C=3", "A=y", "AB=z"]
    assert pathexec_apply(["AB=1", "A=2"], [("A", None)]) == ["AB=1"]      # the whole name, not a prefix


ENV_NAMES = st.sampled_from(["A", "B", "AB", "A=B", "", "PATH"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.builds("{}={}".format, ENV_NAMES, st.sampled_from(["", "1", "=2"])), ENV_NAMES)),
       st.lists(st.tuples(ENV_NAMES, st.one_of(st.none(), st.sampled_from(["", "x", "y=z"])))))
def test_pathexec_with_its_index_is_pathexec(base, changes):
    """The indexed pathexec_apply gives what pathexec's own scan gives, for any base (repeated
    names, entries without "=") and any changes (names holding "=")."""
    from qmailpy.tcpserver.tcpenv import _scan, pathexec_apply
    assert pathexec_apply(base, changes) == _scan(list(base), changes)


def test_safecats():
    from qmailpy.log import ucspi_safe
    assert ucspi_safe("mx.example.org") == "mx.example.org"
    assert ucspi_safe("a b:c%d\x7f\xe9") == "a?b?c?d???"      # é is two bytes, as in C
    assert ucspi_safe(b"\xc3\xa9") == "??"
    assert ucspi_safe("x" * 99) == "x" * 99
    assert ucspi_safe("x" * 100) == "x" * 100 + "..."
    assert ucspi_safe("x" * 150) == "x" * 100 + "..."


def test_options_as_tcpserver_reads_them():
    from qmailpy.tcpserver.options import UsageError, parse
    o = parse(["-vRHc", "12x", "-l0", "-x", "r.cdb", "0", "smtp", "qmail-smtpd", "-v", "/bin/true"], {})
    assert (o.verbosity, o.remoteinfo, o.remotehost, o.limit, o.localhost, o.rules) == (2, False, False, 12, "0",
                                                                                       "r.cdb")
    assert (o.host, o.port, o.program, o.args) == ("0.0.0.0", "smtp", "qmail-smtpd", ["-v", "/bin/true"])
    o = parse(["-U", "::1", "25", "qmail-smtpd"], {"UID": "105", "GID": "107"})
    assert (o.uid, o.gid, o.limit, o.backlog, o.host) == (105, 107, 40, 20, "::1")
    for env, ids in (({"UID": "105"}, (105, 0)), ({"GID": "107"}, (0, 107)), ({}, (0, 0))):
        o = parse(["-U", "0", "25", "qmail-smtpd"], env)    # -U: what is unset is kept (0)
        assert (o.uid, o.gid) == ids
    for bad in (["-Z", "0", "25", "qmail-smtpd"], ["0", "25"], ["-c"]):
        with pytest.raises(UsageError):
            parse(bad, {})


def fatal_lines(front, args, **popen):
    """Exit code and stderr of a front end that cannot start, its program a qmail-smtpd."""
    got = subprocess.run([front_path(front), *args, program("qmail-smtpd")], capture_output=True,
                         timeout=30, **popen)
    return got.returncode, got.stderr


def test_start_up_failures_are_tcpserver_s_fatal_lines(tmp_path):
    """A port in use, an address not this host's, a port name /etc/services does not know:
    exit 111 with tcpserver's line, in qmail's errno wording (error_str: `address already
    used`, not strerror's), so a log watcher written for tcpserver reads them the same."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = {("127.0.0.1", port): b"tcpserver: fatal: unable to bind: address already used\n",
                 ("192.0.2.1", "0"): b"tcpserver: fatal: unable to bind: address not available\n",
                 ("127.0.0.1", "no-such-service"):
                     b"tcpserver: fatal: unable to figure out port number for no-such-service\n"}
        for args, line in cases.items():
            for front in ("tcpserver", "qmail-tcpserver"):
                assert fatal_lines(front, args) == (111, line), front


def test_unable_to_drop_privileges_is_tcpserver_s_fatal_line(tmp_path):
    """-g or -u that the server may not take (started as an ordinary user): exit 111 with
    tcpserver's `unable to set gid` / `unable to set uid` line, never a server running as
    the wrong user."""
    def as_nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    for opts, line in ((["-g", "1"], b"tcpserver: fatal: unable to set gid: permission denied\n"),
                       (["-u", "1"], b"tcpserver: fatal: unable to set uid: permission denied\n")):
        for front in ("tcpserver", "qmail-tcpserver"):
            assert fatal_lines(front, [*opts, "127.0.0.1", "0"], preexec_fn=as_nobody, cwd="/") \
                == (111, line), front


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_drops_privileges_as_tcpserver_u_g(tmp_path):
    """-u/-g after binding: the server and every session run as that uid with that gid only."""
    import shutil
    import tempfile
    from conftest import Home
    top = tempfile.mkdtemp(prefix="qmailpy-tcpserver-")      # a home the switched user can read
    os.chmod(top, 0o755)
    qhome = Home(os.path.join(top, "qmail"))
    qhome.control("me", "test.example\n")
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h", "-u", "65534", "-g", "65533"],
                  qhome.env(), tmp_path)
    try:
        with front.connect() as s:
            assert recv_until(s, b"\r\n") == GREETING
            [pid] = child_pids(front, 1)
            for who in (front.proc.pid, pid):
                with open("/proc/%d/status" % who) as f:
                    status = dict(line.split(":", 1) for line in f)
                assert status["Uid"].split() == ["65534"] * 4
                assert status["Gid"].split() == ["65533"] * 4
                assert status["Groups"].split() == ["65533"]
            s.sendall(b"QUIT\r\n")
            assert recv_until(s, b"\r\n") == b"221 test.example\r\n"
    finally:
        assert front.stop() == 0
        shutil.rmtree(top)


class FakeIdentd:
    """An RFC 1413 server on port 113 of a random 127.x.y.z (so that two suites running at
    once do not meet there) that names every connection's user `answer` (or replies
    whole(request) instead)."""

    def __init__(self, answer, whole=None):
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ip = loopback_address(113)
        self.sock.bind((self.ip, 113))
        self.sock.listen(5)
        self.answer, self.whole, self.asked = answer, whole, []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(100)
                self.asked.append(request)
                if self.whole is not None:          # the whole reply, e.g. an ERROR, or b"": none
                    conn.sendall(self.whole(request))
                else:
                    conn.sendall(request.rstrip(b"\r\n") + b" : USERID : UNIX :  " + self.answer + b"\r\n")

    def close(self):
        self.sock.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for port 113")
def test_ident_as_tcpserver(tmp_path, qhome):
    """Without -R: the client's identd is asked, TCPREMOTEINFO set, and rules keyed
    `user@ip` apply, in both."""
    identd = FakeIdentd(b"al ice")          # remoteinfo.c drops the spaces
    ip = identd.ip                          # the client's address, where its identd listens
    cdb = tcprules(tmp_path, '%s:allow,WHO="ip"\nalice@%s:allow,WHO="info"\n' % (ip, ip))
    try:
        results = both_fronts(tmp_path, qhome, cdb, ("-v", "-H", "-l", "h"), source=ip)
    finally:
        identd.close()
    assert differences(results) == ""
    assert "TCPREMOTEINFO=alice\n" in results["tcpserver"][0] and "WHO=info\n" in results["tcpserver"][0]
    assert "TCPREMOTEIP=%s\n" % ip in results["tcpserver"][0]
    assert ":%s:alice:CLIENTPORT\n" % ip in results["tcpserver"][1]
    assert len(identd.asked) == 2 and all(re.match(rb"\d+ , \d+\r\n$", r) for r in identd.asked)


@pytest.mark.parametrize("whole,info", [
    pytest.param(lambda request: request.rstrip(b"\r\n") + b" : ERROR : NO-USER\r\n", "", id="error"),
    pytest.param(lambda request: request.rstrip(b"\r\n") + b" : USERID : UNIX : \r\n", "", id="empty"),
    pytest.param(lambda request: b"", None, id="closed"),
    pytest.param(None, None, id="no-identd"),
])
def test_ident_that_names_nobody_as_tcpserver(tmp_path, qhome, whole, info):
    """remoteinfo.c: a reply line with no user after its third colon (an ERROR has fewer
    colons) sets TCPREMOTEINFO empty, and the rules try `@ip`; no line at all (closed, or no
    identd: port 113 refused) leaves it unset. The same environment and log in both."""
    if whole is None:
        identd, ip = None, loopback_address(113)        # nothing listens there
    else:
        identd = FakeIdentd(b"", whole)
        ip = identd.ip
    cdb = tcprules(tmp_path, '@%s:allow,WHO="empty-info"\n%s:allow,WHO="ip"\n' % (ip, ip))
    try:
        results = both_fronts(tmp_path, qhome, cdb, ("-v", "-H", "-l", "h"), source=ip)
    finally:
        if identd is not None:
            identd.close()
    assert differences(results) == ""
    env, log = results["tcpserver"]
    if info is None:
        assert "TCPREMOTEINFO" not in env and "WHO=ip\n" in env
    else:
        assert "\nTCPREMOTEINFO=\n" in env and "WHO=empty-info\n" in env
    assert ":%s::CLIENTPORT\n" % ip in log


def test_started_with_sigchld_ignored(tmp_path, qhome):
    """A parent that ignores SIGCHLD (inherited across exec) must not make children vanish
    unreported: qmail-tcpserver still sees every end and its status."""
    import signal as sig
    front_env = qhome.env()
    old = sig.signal(sig.SIGCHLD, sig.SIG_IGN)
    try:
        front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h"], front_env, tmp_path)
    finally:
        sig.signal(sig.SIGCHLD, old)
    try:
        assert b"250 ok" in one_message(front)
        wait_for(ended(front, 1))
    finally:
        assert front.stop() == 0
    assert re.search(r"tcpserver: end \d+ status 0\ntcpserver: status: 0/40\n", front.log())


def test_ssl_is_preloaded_only_for_a_home_with_a_certificate(tmp_path):
    from qmailpy.tcpserver.programs import tls_wanted
    (tmp_path / "control").mkdir()
    assert not tls_wanted({"QMAILHOME": str(tmp_path)})
    assert tls_wanted({"QMAILHOME": str(tmp_path), "SMTPS": "1"})
    (tmp_path / "control" / "servercert.pem").write_text("cert and key\n")
    assert tls_wanted({"QMAILHOME": str(tmp_path)})


def test_a_worker_environment_is_the_new_session_s_alone():
    """Between sessions a worker's os.environ (what C code and exec'd programs see) becomes
    the new connection's: the last one's extra variables removed, changed ones set."""
    import ctypes
    from qmailpy.tcpserver.child import replace_environ
    saved = dict(os.environ)
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    try:
        os.environ.update(QP_LAST="last session", QP_SAME="same", QP_CHANGED="old")
        wanted = dict(saved, QP_SAME="same", QP_CHANGED="new", QP_NEW="new")
        replace_environ(wanted)
        assert dict(os.environ) == wanted
        assert libc.getenv(b"QP_LAST") is None and libc.getenv(b"QP_CHANGED") == b"new"
        assert libc.getenv(b"QP_NEW") == b"new"
    finally:
        replace_environ(saved)
    assert dict(os.environ) == saved


def test_each_session_of_a_worker_starts_with_fresh_signal_dispositions(tmp_path):
    """A session that ignores a signal does not hand that to the next session of its worker
    (an exec'd qmail-smtpd starts with the dispositions of a new program); a signal the server
    was started with ignored stays ignored in every session, as across tcpserver's exec."""
    from qmailpy.tcpserver import options, server
    opts = options.parse(["-q", "-HR", "-l", "h", "-c", "1", "127.0.0.1", "0", "qmail-smtpd"], {})

    def runner(args, environ):
        ignored = signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        inherited = signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
        os.write(1, b"pid %d ignored %d %d\n" % (os.getpid(), ignored, inherited))
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return 0
    listener = server.listen(opts)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)   # as started by a parent that ignores it
            front = server.Server(opts, runner, listener, [])
            front.catch_signals()
            code = front.run()
        finally:
            os._exit(code)
    listener.close()
    try:
        seen = []
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                seen.append(recv_until(s, b"\n"))
        pids = {line.split()[1] for line in seen}
        assert len(pids) == 1, seen                         # one worker ran both sessions
        assert [line.split()[3:] for line in seen] == [[b"0", b"1"], [b"0", b"1"]]
    finally:
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_idle_worker_killed_is_replaced_and_logs_no_end(tmp_path, qhome):
    """kill -9 of a worker between sessions: no session ended, so no `end` line; the next
    client is served by a new worker."""
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "h", "-c", "1"], qhome.env(), tmp_path)
    try:
        assert b"250 ok" in one_message(front)
        wait_for(ended(front, 1))
        [idle] = workers(front.proc.pid)
        os.kill(idle, signal.SIGKILL)
        wait_for(lambda: idle not in workers(front.proc.pid), what="the killed worker reaped")
        assert b"250 ok" in one_message(front)
        wait_for(ended(front, 2))
    finally:
        assert front.stop() == 0
    ends = re.findall(r"tcpserver: end (\d+) status (\d+)", front.log())
    assert [s for _, s in ends] == ["0", "0"] and int(ends[1][0]) != idle


def test_no_fd_for_a_worker_drops_the_connection_and_the_server_goes_on(monkeypatch):
    """Out of fds (no socket pair for a new worker): the connection is dropped with
    tcpserver's `unable to fork` warning; nothing is raised into the accept loop."""
    from qmailpy.tcpserver import options, pool
    opts = options.parse(["-v", "127.0.0.1", "0", "qmail-smtpd"], {})
    lines = []
    p = pool.Pool(opts, None, [], lines.append, lambda: None)

    def no_fds(*args):
        raise OSError(24, "Too many open files")
    a, b = socket.socketpair()
    monkeypatch.setattr(pool.socket, "socketpair", no_fds)
    try:
        assert p.hand(a, ("127.0.0.1", 4000), [], []) is False
    finally:
        a.close()
        b.close()
    assert lines == ["tcpserver: warning: dropping connection, unable to fork: process cannot open more files"]
    assert p.busy == 0 and not p.workers


# Both front ends in a private network namespace with a DNS server on 127.0.0.1:53 (tcpserver's
# djbdns client asks $DNSCACHEIP's port 53): PTR names, -p, and rules by =host.
NETNS_NAMES = r"""
import json, os, pathlib
from dnsserver import DNSServer
import test_tcpserver as t
cfg = json.loads(os.environ["NETNS_CFG"])

class Home:
    def env(self, **extra):
        return {**os.environ, "DNSCACHEIP": "127.0.0.1", **extra}

out = {}
with DNSServer(cfg["zones"], port=53):
    for run, opts in enumerate(cfg["runs"]):
        top = pathlib.Path(cfg["tmp"]) / ("run%d" % run)
        top.mkdir()
        for name in ("tcpserver", "qmail-tcpserver"):
            env, log, port, client = t.run_env_dump(top, Home(), name, cfg["cdb"], opts=opts)
            ports = {port: "SERVERPORT", client: "CLIENTPORT"}
            env = env.replace(str(top), "TOP")
            out.setdefault(name, []).append([t.normalized(env, ports), t.normalized(log, ports)])
print(json.dumps(out))
"""


def names_in_netns(tmp_path, qhome, zones, rules, runs):
    """{front: [(env dump, log) per run]} for both front ends, with `zones` served on 127.0.0.1:53."""
    import json
    from netns import in_netns
    cdb = tcprules(tmp_path, rules)
    cfg = {"zones": zones, "cdb": cdb, "tmp": str(tmp_path), "runs": [list(r) for r in runs]}
    env = qhome.env(QMAILQUEUE=program("qmail-queue"), NETNS_CFG=json.dumps(cfg))
    return json.loads(in_netns(NETNS_NAMES, env=env, timeout=240))


HOST_RULES = ('=mx.example.org:allow,RELAYCLIENT="",RULE="host"\n'
              '=.example.net:allow,RULE="domain"\n'
              ':allow,RULE="default"\n')


def test_host_names_and_host_rules_as_tcpserver(tmp_path, qhome):
    """A PTR name is written as tcpserver's djbdns client writes it (lower case), for
    TCPREMOTEHOST, TCPLOCALHOST, the log and the `=host` rules: a PTR of MX.Example.ORG
    matches `=mx.example.org`, as under tcpserver; -p keeps a name that resolves back."""
    zones = {"1.0.0.127.in-addr.arpa": {"PTR": ["MX.Example.ORG"]}, "mx.example.org": {"A": ["127.0.0.1"]}}
    got = names_in_netns(tmp_path, qhome, zones, HOST_RULES, [("-v", "-R"), ("-v", "-R", "-p")])
    assert got["qmail-tcpserver"] == got["tcpserver"]
    plain, paranoid = got["tcpserver"]
    assert "TCPREMOTEHOST=mx.example.org\n" in plain[0] and "RULE=host\n" in plain[0]
    assert "\nRELAYCLIENT=\n" in plain[0] and "TCPLOCALHOST=mx.example.org\n" in plain[0]
    assert "tcpserver: ok PID mx.example.org:127.0.0.1:SERVERPORT mx.example.org:127.0.0.1::CLIENTPORT\n" \
        in plain[1]
    assert paranoid == plain



def test_odd_and_unverified_host_names_as_tcpserver(tmp_path, qhome):
    """A PTR name with a byte djbdns escapes (`*` as \\052) matches `=.example.net` as under
    tcpserver; with -p a name whose A record is not the client's address is dropped (no
    TCPREMOTEHOST, no `=host` rule), in both."""
    zones = {"1.0.0.127.in-addr.arpa": {"PTR": ["Odd*Name.Example.NET"]},
             "odd*name.example.net": {"A": ["192.0.2.1"]}}
    got = names_in_netns(tmp_path, qhome, zones, HOST_RULES, [("-v", "-R"), ("-v", "-R", "-p")])
    assert got["qmail-tcpserver"] == got["tcpserver"]
    plain, paranoid = got["tcpserver"]
    assert "TCPREMOTEHOST=odd\\052name.example.net\n" in plain[0] and "RULE=domain\n" in plain[0]
    assert "TCPREMOTEHOST" not in paranoid[0] and "RULE=default\n" in paranoid[0]


def test_a_cram_md5_answer_is_not_good_for_the_next_session_of_its_worker(tmp_path, qhome):
    """CRAM-MD5's challenge is qmail's <pid.time@host>, unique per exec'd qmail-smtpd (a pid
    per connection). A worker's sessions share its pid, so two in one second had the same
    challenge: an answer seen on the wire (smtpauthplaintext: AUTH in clear) logged the
    next client of that worker in. Each session's challenge is its own now, and the answer
    replayed is refused."""
    import base64
    import hashlib
    import hmac
    qhome.control("smtpauth", "1\n")
    qhome.control("smtpauthplaintext", "1\n")
    front = Front(program("qmail-tcpserver"), ["-v", "-HR", "-l", "localhost", "-c", "1"],
                  qhome.env(AUTHFAILDELAY="0"), tmp_path,
                  args=(sys.executable, os.path.join(ROOT, "tests", "checkpassword.py")))

    def auth(answer=None):
        """(challenge, reply) of an AUTH CRAM-MD5 answered right, or with `answer`."""
        with front.connect() as s:
            assert recv_until(s, b"\r\n") == GREETING
            s.sendall(b"EHLO c\r\nAUTH CRAM-MD5\r\n")
            got = b""
            while b"334 " not in got or not got.endswith(b"\r\n"):
                got += recv_until(s, b"\r\n")
            challenge = base64.b64decode(got.split(b"334 ")[1][:-2])
            if answer is None:
                digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest().encode()
                answer = base64.b64encode(b"good@example.org " + digest) + b"\r\n"
            s.sendall(answer + b"QUIT\r\n")
            return challenge, answer, recv_until(s, b"\r\n221 test.example\r\n").split(b"\r\n")[0]
    try:
        for _ in range(20):             # until two sessions fall in one second
            first, answer, reply = auth()
            assert reply == b"235 ok, go ahead (#2.0.0)"
            second, _, replayed = auth(answer)
            if first.split(b".")[1] == second.split(b".")[1]:      # one worker, one second
                break
    finally:
        assert front.stop() == 0
    assert len(set(session_pids(front))) == 1
    assert first.split(b".")[1] == second.split(b".")[1], "never two sessions in one second"
    assert first != second and replayed == b"535 authentication failed (#5.7.1)"


def accepted_pair():
    """(server side, client side) of one TCP connection on 127.0.0.1."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def test_a_banner_that_cannot_be_written_drops_the_connection_with_111():
    """-B to a client that is gone: tcpserver's `unable to print banner` warning (qmail's
    errno wording) and the session's exit 111, before any program runs."""
    from qmailpy.tcpserver import child, options
    opts = options.parse(["-HR", "-l", "h", "-B", "hello\r\n", "127.0.0.1", "0", "qmail-smtpd"], {})
    server, client = accepted_pair()
    try:
        server.shutdown(socket.SHUT_WR)
        with pytest.raises(child.Dropped) as dropped:
            child.prepare(server, child.Connection(server, client.getsockname()), opts, [], lambda line: None)
    finally:
        server.close()
        client.close()
    assert dropped.value.args == ("unable to print banner: broken pipe", 111)   # session(): DROP + it, exit 111


@pytest.mark.parametrize("flag,nodelay", [("-D", 1), ("-d", 0)])
def test_nodelay_as_tcpserver_d_and_D(flag, nodelay):
    """-D sets TCP_NODELAY on the session's socket, -d (the default) leaves Nagle on."""
    from qmailpy.tcpserver import child, options
    opts = options.parse(["-HR", "-l", "h", flag, "127.0.0.1", "0", "qmail-smtpd"], {})
    server, client = accepted_pair()
    try:
        conn = child.Connection(server, client.getsockname())
        child.prepare(server, conn, opts, [], lambda line: None)
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == nodelay
    finally:
        server.close()
        client.close()


class FakeForks:
    """Pool._fork stand-in: each call makes a Worker on a SEQPACKET pair and keeps the worker's
    end here (`ends`); dead=True closes that end at once (a worker that died)."""

    def __init__(self, p, dead=()):
        self.p, self.dead, self.ends = p, list(dead), []

    def __call__(self, parent_socks, parent_fds):
        from qmailpy.tcpserver import pool
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if self.dead and self.dead.pop(0):
            theirs.close()
        else:
            self.ends.append(theirs)
        w = pool.Worker(100000 + len(self.ends), mine)
        mine.setblocking(False)
        self.p.workers[w.pid] = w
        self.p.by_fd[mine.fileno()] = w
        self.p.poller.register(mine.fileno(), select.POLLIN)
        return w


def test_a_connection_for_an_idle_worker_that_died_goes_to_a_new_one(monkeypatch):
    """The idle worker died and is not reaped yet: the hand-over fails, that worker is retired,
    and the connection goes to a new worker; nothing is dropped or logged."""
    from qmailpy.tcpserver import options, pool
    opts = options.parse(["-v", "127.0.0.1", "0", "qmail-smtpd"], {})
    lines = []
    p = pool.Pool(opts, None, [], lines.append, lambda: None)
    forks = FakeForks(p, dead=[True])
    monkeypatch.setattr(p, "_fork", forks)
    gone = forks([], [])
    p.idle.append(gone)
    a, b = socket.socketpair()
    try:
        assert p.hand(a, ("127.0.0.1", 4000), [], []) is True
        [end] = forks.ends
        data, fds, _, _ = socket.recv_fds(end, 128, 1)
        for fd in fds:
            os.close(fd)
        assert (data, len(fds)) == (b"127.0.0.1 4000", 1)
    finally:
        a.close()
        b.close()
    assert lines == [] and p.busy == 1 and p.idle == [] and gone.chan.fileno() == -1


@pytest.mark.parametrize("fault,line", [
    ("hand", "tcpserver: warning: dropping connection, unable to hand over: broken pipe"),
    ("fork", "tcpserver: warning: dropping connection, unable to fork: temporary failure"),
])
def test_a_new_worker_that_cannot_take_the_connection_drops_it(monkeypatch, fault, line):
    """A new worker that died before the hand-over, or no fork to be had (EAGAIN): the
    connection is dropped with tcpserver's warning in qmail's wording; the server goes on."""
    from qmailpy.tcpserver import options, pool
    opts = options.parse(["-v", "127.0.0.1", "0", "qmail-smtpd"], {})
    lines = []
    p = pool.Pool(opts, None, [], lines.append, lambda: None)
    if fault == "hand":
        monkeypatch.setattr(p, "_fork", FakeForks(p, dead=[True]))
    else:
        def no_fork():
            raise OSError(11, "Resource temporarily unavailable")
        monkeypatch.setattr(pool.os, "fork", no_fork)
    a, b = socket.socketpair()
    try:
        assert p.hand(a, ("127.0.0.1", 4000), [], []) is False
    finally:
        a.close()
        b.close()
    assert lines == [line]
    assert p.busy == 0 and p.idle == [] and not p.by_fd


def forked_worker():
    """(pid, parent's channel) of a worker forked from this process, serving its channel."""
    from qmailpy.tcpserver import options, worker
    opts = options.parse(["-q", "-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"], {})
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        mine.close()
        worker.serve(theirs, opts, None, [])        # never returns
    theirs.close()
    mine.settimeout(10)
    return pid, mine


def exit_code(pid, wait=30):
    """The exit of a forked worker, killed (and the test failed) when it is not over in `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("worker %d still running after %d s" % (pid, wait))
        time.sleep(0.01)


def test_a_worker_s_life_on_its_channel():
    """A message without a socket is answered `end 111` (no session: tcpserver's exit for a
    connection it cannot serve) and the worker waits for the next; the channel's end is its
    exit 0, also when the parent closed it with the worker's last `end` unread; SIGINT while
    idle is exit 130, as an interrupted program's, without a traceback."""
    pid, chan = forked_worker()
    chan.send(b"127.0.0.1 4000")
    assert chan.recv(128) == b"end 111"
    chan.send(b"127.0.0.1 4001")
    assert chan.recv(128) == b"end 111"
    chan.close()
    assert exit_code(pid) == 0
    pid, chan = forked_worker()
    chan.send(b"127.0.0.1 4000")
    time.sleep(0.2)                             # its `end 111` is sent, and never read
    chan.close()
    assert exit_code(pid) == 0
    pid, chan = forked_worker()
    chan.send(b"127.0.0.1 4000")
    assert chan.recv(128) == b"end 111"         # idle now
    os.kill(pid, signal.SIGINT)
    assert exit_code(pid) == 130
    chan.close()


def verbose_pool(monkeypatch):
    """(Pool with -v, its log lines, FakeForks) for driving the parent's side by hand."""
    from qmailpy.tcpserver import options, pool
    opts = options.parse(["-v", "127.0.0.1", "0", "qmail-smtpd"], {})
    lines = []
    p = pool.Pool(opts, None, [], lines.append, lambda: None)
    forks = FakeForks(p)
    monkeypatch.setattr(p, "_fork", forks)
    return p, lines, forks


def busy_worker(p, forks, read=True):
    """A worker of p given one connection: (Worker, its end of the channel); read=False: the
    worker has not taken the connection off its channel."""
    a, b = socket.socketpair()
    try:
        assert p.hand(a, ("127.0.0.1", 4000), [], []) is True
    finally:
        a.close()
        b.close()
    [w] = p.workers.values()
    end = forks.ends[-1]
    if read:
        _, fds, _, _ = socket.recv_fds(end, 128, 1)
        for fd in fds:
            os.close(fd)
    return w, end


def reap_as(monkeypatch, pid, status):
    """os.waitpid as it answers once `pid` died with `status`, then nothing more."""
    from qmailpy.tcpserver import pool
    answers = [(pid, status)]
    monkeypatch.setattr(pool.os, "waitpid", lambda *args: answers.pop(0) if answers else (0, 0))


def test_a_worker_s_messages_other_than_its_end_are_ignored(monkeypatch):
    """Anything but `end CODE` on a channel (garbage; an `end` while no session runs) logs
    nothing and changes no count: only a session's end is an `end` line."""
    p, lines, forks = verbose_pool(monkeypatch)
    w, end = busy_worker(p, forks)
    for junk in (b"hello", b"end", b"end x1"):
        end.send(junk)
        assert p.wait([], 0) == []
    assert lines == [] and p.busy == 1 and w.busy
    end.send(b"end 0")
    p.wait([], 0)
    assert lines == ["tcpserver: end %d status 0" % w.pid] and p.busy == 0 and p.idle == [w]
    end.send(b"end 0")                          # idle: no session to end
    p.wait([], 0)
    assert len(lines) == 1 and p.busy == 0


def test_an_end_sent_just_before_the_worker_died_is_the_session_s_end(monkeypatch):
    """The worker sent `end 0` and was killed before the parent read it: the session's end
    line has its exit code (status 0), once, not the kill's wait status."""
    p, lines, forks = verbose_pool(monkeypatch)
    w, end = busy_worker(p, forks)
    end.send(b"end 0")
    reap_as(monkeypatch, w.pid, 9)
    p.reap()
    assert lines == ["tcpserver: end %d status 0" % w.pid]
    assert p.busy == 0 and not p.workers and not p.by_fd and w.chan.fileno() == -1


def test_a_worker_that_dies_with_its_connection_unread_ends_the_session_with_its_status(monkeypatch):
    """The worker died before it read the connection handed to it (its channel reset): the
    channel's news is its end; reaping logs the session's end with the raw wait status."""
    p, lines, forks = verbose_pool(monkeypatch)
    w, end = busy_worker(p, forks, read=False)
    end.close()
    assert p.wait([], 0) == [] and w.chan.fileno() not in p.by_fd
    reap_as(monkeypatch, w.pid, 9)
    p.reap()
    assert lines == ["tcpserver: end %d status 9" % w.pid] and p.busy == 0 and not p.workers


def test_accept_failures_and_a_dropped_hand_over_as_tcpserver_counts_them(monkeypatch):
    """A connection no worker took: counted before the hand-over and again after it, as
    tcpserver prints its status around a fork that failed (`status: 1/40`, `status: 0/40`),
    and closed. accept() out of fds: nothing logged, nothing counted, the loop goes on."""
    from qmailpy.tcpserver import options, server
    opts = options.parse(["-v", "127.0.0.1", "0", "qmail-smtpd"], {})
    with socket.create_server(("127.0.0.1", 0)) as listener:
        srv = server.Server(opts, None, listener, [])
        lines = []
        srv.log = lines.append
        srv.wake_r = srv.wake_w = -1
        monkeypatch.setattr(srv.pool, "hand", lambda *args: False)
        with socket.create_connection(listener.getsockname(), timeout=10) as client:
            srv.accept()
            assert client.recv(10) == b""               # closed by the server
        assert lines == ["tcpserver: status: 1/40", "tcpserver: status: 0/40"]

        class OutOfFds:
            def accept(self):
                raise OSError(24, "Too many open files")
        srv.listener = OutOfFds()
        srv.accept()
        assert lines == ["tcpserver: status: 1/40", "tcpserver: status: 0/40"] and srv.pool.busy == 0


def session_in_child(runner, opts=None, wrap=None):
    """(exit code, stderr) of child.session() run with `runner` in a forked child, on a real
    connection (`wrap(socket)` instead when given), its log lines on fd 2: fds 0, 1 and 2 are
    the child's to change."""
    import tempfile
    from qmailpy.log import write_line
    from qmailpy.tcpserver import child, options
    opts = opts or options.parse(["-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"], {})
    server, client = accepted_pair()
    r, w = os.pipe()
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(err.fileno(), 2)
                code = child.session(wrap(server) if wrap else server, client.getsockname(), opts, runner, [],
                                     lambda line: write_line(2, line))
                os.write(w, b"%d" % code)
            finally:
                os._exit(0)
        os.close(w)
        server.close()
        try:
            code = int(os.read(r, 32))
        finally:
            os.close(r)
            os.waitpid(pid, 0)
            client.close()
        err.seek(0)
        return code, err.read().decode()


@pytest.mark.parametrize("end,code", [
    (SystemExit(None), 0), (SystemExit(3), 3), (SystemExit("gone"), 1), (ZeroDivisionError("oops"), 1)])
def test_a_session_s_exit_code_as_an_exec_d_program_s(end, code):
    """What the program raises is the session's exit code, as its exit would be: sys.exit()
    0, sys.exit(3) 3, sys.exit("text") 1; a bug (any other exception) is one line
    `qmail-tcpserver: internal bug: ...` and 1, never a traceback."""
    def runner(args, environ):
        raise end
    got, err = session_in_child(runner)
    assert got == code
    if isinstance(end, SystemExit):
        assert err == ""
    else:
        assert err.startswith("qmail-tcpserver: internal bug: ZeroDivisionError: oops at ") and err.count("\n") == 1


NETNS_LISTEN = r"""
import json, os, subprocess
from dnsserver import DNSServer
from conftest import program
zones = {"listen.example": {"A": ["127.0.0.1"]}}
out = {}
with DNSServer(zones, port=53):
    for front in ("tcpserver", program("qmail-tcpserver")):
        got = []
        for host in ("listen.example", "gone.example"):
            p = subprocess.Popen([front, "-1", host, "0", program("qmail-smtpd")], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=dict(os.environ, DNSCACHEIP="127.0.0.1"))
            line = p.stdout.readline()
            if line:
                p.terminate()
            p.wait(timeout=30)
            got.append([p.returncode if not line else "listening", p.stderr.read().decode()])
            p.stdout.close()
            p.stderr.close()
        out[os.path.basename(front)] = got
print(json.dumps(out))
"""


def test_a_host_name_to_listen_on_as_tcpserver():
    """A host name for the listener is looked up (its first address); one DNS does not have
    is tcpserver's `no IP address for NAME` and exit 111."""
    import json
    from netns import in_netns
    got = json.loads(in_netns(NETNS_LISTEN, resolv_conf="nameserver 127.0.0.1\n", timeout=120))
    assert got["qmail-tcpserver"] == got["tcpserver"] == [
        ["listening", ""], [111, "tcpserver: fatal: no IP address for gone.example\n"]]


def test_a_client_name_dns_cannot_give_is_none(dns_server):
    """No TCPREMOTEHOST when the PTR lookup fails softly (SERVFAIL) or finds nothing; a PTR to
    the root is written as djbdns writes the root, `.`."""
    from qmailpy.dns import servers
    from qmailpy.dns.resolver import Resolver
    from qmailpy.tcpserver import names
    dns_server.zones = {"9.0.0.127.in-addr.arpa": "SERVFAIL", "8.0.0.127.in-addr.arpa": {"PTR": ["."]}}
    resolver = Resolver(config=servers.Config([("127.0.0.1", dns_server.port)], timeout=0.5, attempts=1))
    assert names.host_name(resolver, "127.0.0.9") is None
    assert names.host_name(resolver, "127.0.0.7") is None
    assert names.host_name(resolver, "127.0.0.8") == "."


# -- system calls that fail (tests/test_faults_tcpserver.py makes each fail under strace)

class Unreadable:
    """A worker's channel whose reads fail (EIO), its other calls the real one's."""

    def __init__(self, chan):
        self.chan = chan

    def recv(self, *args):
        raise OSError(5, "Input/output error")

    def __getattr__(self, name):
        return getattr(self.chan, name)


def test_a_channel_the_parent_cannot_read_lets_its_worker_go_and_its_exit_ends_the_session(monkeypatch):
    """The worker's `end` cannot be read: the parent closes the channel (the worker exits when it
    sees that) and logs the session's end when it reaps the worker, freeing its slot; before, the
    slot was held for ever (`status: 1/40` after every later session) and the worker left waiting."""
    p, lines, forks = verbose_pool(monkeypatch)
    w, end = busy_worker(p, forks)
    end.send(b"end 0")
    real = w.chan
    w.chan = Unreadable(real)
    assert p.wait([], 0) == []
    assert real.fileno() == -1 and lines == [] and p.busy == 1      # the worker sees its channel's end
    with pytest.raises(ConnectionResetError):  # closed with the `end` unread: the worker's exit
        end.recv(128)
    reap_as(monkeypatch, w.pid, 0)
    p.reap()
    assert lines == ["tcpserver: end %d status 0" % w.pid] and p.busy == 0 and not p.workers


def test_the_loop_outlives_a_failed_waitpid_poll_and_signal_pipe_read(monkeypatch, tmp_path):
    """waitpid failing (EIO, or ECHILD with workers counted) is tried again a second later, a
    poll that fails (ENOMEM) is nothing ready, a signal pipe that cannot be read is left for the
    next poll: each is a pause, never the parent's end (it ended with `internal bug`)."""
    from qmailpy.tcpserver import pool, server
    p, lines, forks = verbose_pool(monkeypatch)
    busy_worker(p, forks)
    for errno in (5, 10):
        def failing(*args, errno=errno):
            raise OSError(errno, os.strerror(errno))
        monkeypatch.setattr(pool.os, "waitpid", failing)
        assert p.reap() is False and p.busy == 1

    class NoMemory:
        def register(self, *args):
            pass

        unregister = register

        def poll(self, timeout):
            raise OSError(12, "Cannot allocate memory")
    p.poller = NoMemory()
    assert p.wait([0], 0) == []
    fd = os.open(tmp_path, os.O_RDONLY)         # read(): EISDIR
    try:
        server.Server.drain(fd)
    finally:
        os.close(fd)
    assert lines == []


class Nameless:
    """An accepted socket whose getsockname fails (or setsockopt, with nodelay=True)."""

    def __init__(self, sock, nodelay=False):
        self.sock, self.nodelay = sock, nodelay

    def getsockname(self):
        if self.nodelay:
            return self.sock.getsockname()
        raise OSError(105, "No buffer space available")

    def setsockopt(self, level, name, value):
        if self.nodelay and name == socket.TCP_NODELAY:
            raise OSError(12, "Cannot allocate memory")
        return self.sock.setsockopt(level, name, value)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def test_a_local_address_that_cannot_be_had_drops_the_connection_as_tcpserver():
    """getsockname failing: tcpserver's `pid` line, then its `unable to get local address`
    warning in qmail's wording, and the session's 111 (it was an internal bug line, exit 1)."""
    from qmailpy.tcpserver import options
    opts = options.parse(["-v", "-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"], {})
    code, err = session_in_child(None, opts=opts, wrap=Nameless)
    assert code == 111
    assert err == ("tcpserver: pid %d from 127.0.0.1\n"
                   "tcpserver: warning: dropping connection, unable to get local address: out of buffer space\n"
                   % int(err.split()[2]))


def test_a_nodelay_that_cannot_be_set_is_ignored_as_tcpserver_ignores_it():
    """-D: a setsockopt(TCP_NODELAY) that fails changes nothing (tcpserver ignores what
    socket_tcpnodelay() returns); the session goes on."""
    from qmailpy.tcpserver import child, options
    opts = options.parse(["-D", "-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"], {})
    server, client = accepted_pair()
    try:
        sock = Nameless(server, nodelay=True)
        env = child.prepare(sock, child.Connection(sock, client.getsockname()), opts, [], lambda line: None)
    finally:
        server.close()
        client.close()
    assert env["TCPLOCALHOST"] == "h"


def test_rules_that_cannot_be_opened_without_proc_drop_the_connection_even_with_X(tmp_path, monkeypatch):
    """-X allows a client only when there is no rules file; a rules cdb that is there but cannot
    be opened (no /proc for open_regular's second open) drops the connection, as any cdb it
    cannot read. It was taken for no file: the denied client was served, without rules."""
    from test_fileio import without_proc
    from qmailpy.tcpserver import child, options
    cdb = tcprules(tmp_path, "127.0.0.1:deny\n")
    opts = options.parse(["-X", "-x", cdb, "-HR", "-l", "h", "127.0.0.1", "0", "qmail-smtpd"], {})
    conn = child.Connection(type("S", (), {"getsockname": lambda self: ("127.0.0.1", 25)})(), ("127.0.0.1", 4000))
    assert child.rule_for(opts, conn) == ("deny", {})
    without_proc(monkeypatch)
    with pytest.raises(child.Dropped) as dropped:
        child.rule_for(opts, conn)
    assert dropped.value.args[1] == 111 and dropped.value.args[0].startswith("unable to read %s: " % cdb)
