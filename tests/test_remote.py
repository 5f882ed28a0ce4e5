"""bin/qmail-remote against real SMTP servers on 127.0.0.1, routed by control/smtproutes.

Every report is compared byte for byte with qmail's texts (reference section 5).
DNSCACHEIP always points at the local test DNS server, so nothing leaves 127.0.0.1.
"""
import os
from pathlib import Path
import socket
import subprocess
import time

import pytest

from conftest import program
from dnsserver import dns_server  # noqa: F401  (fixture)
from qmailpy.remote.main import run
from smtpsink import scripted, sinks, smtp_script  # noqa: F401  (fixtures)

MSG = b"Subject: test\n\nhello\n"
OK_REPORT = b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0"


@pytest.fixture
def remote(home, dns_server):
    """qmail-remote runner: remote(host, sender, *recips, message=..) -> stdout (exit 0 checked)."""
    home.control("me", "test.example\n")

    def go(host, sender, *recips, message=MSG, timeout=30):
        env = home.env(**dns_server.environ())
        p = subprocess.run([program("qmail-remote"), host, sender, *recips], input=message,
                           capture_output=True, env=env, timeout=timeout)
        assert p.returncode == 0, p.stderr
        assert p.stderr == b""
        return p.stdout
    go.home = home
    return go


def route_to(remote, port, host="127.0.0.1"):
    remote.home.control("smtproutes", ":%s:%d\n" % (host, port))


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accepted(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    assert remote("example.com", "a@b.example", "c@example.com") == OK_REPORT
    (m,) = sink.messages
    assert (m.helo, m.verb, m.mail_from, m.rcpt_tos) == ("test.example", "EHLO", "a@b.example", ["c@example.com"])
    assert m.data == b"Subject: test\r\n\r\nhello\r\n"
    assert m.mail_options == []             # 7-bit message: no BODY=8BITMIME


def test_temporary_then_accepted(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("END", "451 try again later")
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"r\0Z127.0.0.1 failed after I sent the message.\nRemote host said: 451 try again later\n\0")
    assert remote("example.com", "a@b.example", "c@example.com") == OK_REPORT
    assert [m.accepted for m in sink.messages] == [False, True]


def test_permanent_after_dot(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("END", "554 spam")
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"r\0D127.0.0.1 failed after I sent the message.\nRemote host said: 554 spam\n\0")


def test_per_recipient_replies(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("RCPT", "550 no such user", rcpt="bad@example.com")
    sink.answer("RCPT", "452 mailbox full", rcpt="full@example.com")
    out = remote("example.com", "a@b.example", "bad@example.com", "good@example.com", "full@example.com")
    assert out == (b"h127.0.0.1 does not like recipient.\nRemote host said: 550 no such user\n\0"
                   b"r\0"
                   b"s127.0.0.1 does not like recipient.\nRemote host said: 452 mailbox full\n\0"
                   b"K127.0.0.1 accepted message.\nRemote host said: 250 ok queued\n\0")
    assert sink.messages[0].rcpt_tos == ["good@example.com"]


def test_every_recipient_refused(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("RCPT", "550 no", times=None)
    assert remote("example.com", "a@b.example", "x@example.com", "y@example.com") == (
        b"h127.0.0.1 does not like recipient.\nRemote host said: 550 no\n\0" * 2
        + b"DGiving up on 127.0.0.1.\n\0")
    assert sink.messages == []


@pytest.mark.parametrize("reply,kind", [("553 sender refused", b"D"), ("451 greylisted", b"Z")])
def test_sender_rejected(remote, sinks, reply, kind):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("MAIL", reply)
    assert remote("example.com", "a@b.example", "c@example.com") == (
        kind + b"Connected to 127.0.0.1 but sender was rejected.\nRemote host said: "
        + reply.encode() + b"\n\0")


@pytest.mark.parametrize("reply,kind", [("554 no data for you", b"D"), ("451 not now", b"Z")])
def test_data_command_rejected(remote, sinks, reply, kind):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("DATA", reply)
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"r\0" + kind + b"127.0.0.1 failed on DATA command.\nRemote host said: " + reply.encode() + b"\n\0")


def test_ehlo_refused_falls_back_to_helo(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    sink.answer("EHLO", "502 what is EHLO")
    assert remote("example.com", "a@b.example", "c@example.com", message=b"caf\xc3\xa9\n") == OK_REPORT
    (m,) = sink.messages
    assert (m.verb, m.helo, m.mail_options) == ("HELO", "test.example", [])   # no 8BITMIME without EHLO


def test_8bitmime(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    assert remote("example.com", "a@b.example", "c@example.com", message=b"caf\xc3\xa9\n") == OK_REPORT
    assert sink.messages[0].mail_options == ["BODY=8BITMIME"]
    assert sink.messages[0].data == b"caf\xc3\xa9\r\n"


def test_connection_refused(remote):
    route_to(remote, closed_port())
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0")


def test_partial_final_line(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    assert remote("example.com", "a@b.example", "c@example.com", message=b"Subject: x\n\nno newline") == (
        b"r\0DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n\0")
    time.sleep(0.2)
    assert sink.messages == []


def test_outgoingip_is_the_source_address(remote, sinks):
    sink = sinks()
    route_to(remote, sink.port)
    remote.home.control("outgoingip", "127.0.0.2\n")
    assert remote("example.com", "a@b.example", "c@example.com") == OK_REPORT
    assert sink.messages[0].peer[0] == "127.0.0.2"


def test_outgoingip_malformed(remote, sinks):
    remote.home.control("outgoingip", "not-an-ip\n")
    assert remote("example.com", "a@b", "c@d") == b"Zinvalid ipaddr in control/outgoingip (#4.3.0)\n\0"


def test_smtproutes_suffix_and_explicit_mx(remote, sinks, dns_server):
    sink = sinks()
    remote.home.control("smtproutes", "other.example:127.0.0.1:%d\n.example.com:127.0.0.1:%d\n"
                        "example.com:\n" % (closed_port(), sink.port))
    assert remote("sub.example.com", "a@b", "c@sub.example.com") == OK_REPORT
    # example.com itself has an empty relay: MX lookup (here: NXDOMAIN), not the .example.com route
    assert remote("example.com", "a@b", "c@example.com") == (
        b"DSorry, I couldn't find any host named example.com. (#5.1.2)\n\0")
    assert ("example.com", "MX", "udp") in dns_server.queries


def test_usage_and_home(remote, home):
    assert remote("example.com", "a@b") == b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"
    env = dict(home.env(), QMAILHOME=str(home.root) + "/missing")
    p = subprocess.run([program("qmail-remote"), "h", "s", "r"], input=b"", capture_output=True, env=env)
    assert (p.returncode, p.stdout) == (0, b"ZUnable to switch to home directory. (#4.3.0)\n\0")


def test_run_in_process(home, sinks, dns_server):
    """run(argv, fd0, fd1, environ) is the whole program: usable without an exec."""
    sink = sinks()
    home.control("me", "test.example\n")
    home.control("smtproutes", ":127.0.0.1:%d\n" % sink.port)
    msg_r, msg_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(msg_w, MSG)
    os.close(msg_w)
    env = dict(QMAILHOME=home.root, **dns_server.environ())
    assert run(["qmail-remote", "example.com", "a@b", "c@d"], msg_r, out_w, env) == 0
    os.close(out_w)
    assert os.read(out_r, 4096) == OK_REPORT
    os.close(msg_r)
    os.close(out_r)


def run_here(home, dns_server, port, fd0=None, report=True):
    """run() in this process, to 127.0.0.1:port, the message MSG on a pipe unless fd0 is given:
    (exit code, report bytes); report=False: the report pipe's reader is gone before it runs."""
    home.control("me", "test.example\n")
    home.control("smtproutes", ":127.0.0.1:%d\n" % port)
    mine = fd0 is None
    if mine:
        fd0, msg_w = os.pipe()
        os.write(msg_w, MSG)
        os.close(msg_w)
    out_r, out_w = os.pipe()
    if not report:
        os.close(out_r)
    try:
        code = run(["qmail-remote", "example.com", "a@b", "c@d"], fd0, out_w,
                   dict(QMAILHOME=home.root, **dns_server.environ()))
        os.close(out_w)
        return code, os.read(out_r, 4096) if report else None
    finally:
        if report:
            os.close(out_r)
        if mine:
            os.close(fd0)


def test_tcpto_skips_hosts_that_keep_timing_out(remote, sinks):
    from qmailpy.queue.layout import create_queue
    sink = sinks()
    route_to(remote, sink.port)
    create_queue(remote.home.root)
    path = os.path.join(remote.home.root, "queue", "lock", "tcpto")
    record = bytearray(1024)
    record[0:4] = socket.inet_aton("127.0.0.1")
    record[4] = 2
    record[8:12] = int(time.time()).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(record)
    assert remote("example.com", "a@b", "c@d") == (
        b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0")
    record[4] = 1                                    # one time-out only: tried, and cleared
    with open(path, "wb") as f:
        f.write(record)
    assert remote("example.com", "a@b", "c@d") == OK_REPORT
    with open(path, "rb") as f:
        assert f.read()[4] == 0


@pytest.mark.parametrize("name,text,problem", [
    ("timeoutremote", "20m\n", "control/timeoutremote:1: not a number: '20m'"),
    ("timeoutconnect", "-1\n", "control/timeoutconnect:1: not a number: '-1'"),
    ("options", "timeoutconnect: soon\n", "control/options:1: timeoutconnect: not a number: 'soon'"),
    ("smtproutes", None, "control/smtproutes: unable to read: Is a directory"),
    ("helohost", None, "control/helohost: unable to read: Is a directory"),
])
def test_control_it_cannot_use_defers_naming_the_file(home, name, text, problem):
    """Never a guess (a default time-out, no routes): qmail's temporary 'Unable to read control files',
    with the file and line in the report (qmail-remote's stderr is its report pipe)."""
    home.control("me", "test.example\n")
    if text is None:
        os.makedirs(os.path.join(home.root, "control", name))
    else:
        home.control(name, text)
    p = subprocess.run([program("qmail-remote"), "example.com", "a@b", "c@example.com"], input=MSG,
                       capture_output=True, env=home.env(), timeout=30)
    assert (p.returncode, p.stdout) == (0, b"ZUnable to read control files: %s (#4.3.0)\n\0" % problem.encode())


ROOT = Path(__file__).resolve().parents[1]
PRELOADED_DELIVERY = r"""
import os, sys
from qmailpy.spawn import fork, rspawn
fork.preload(rspawn.PRELOAD)
before = set(sys.modules)
from qmailpy.remote.main import run
r, w = os.pipe()
code = run(["qmail-remote", "example.com", "a@b.example", "c@example.com"], 0, w, os.environ)
os.close(w)
print(code, os.read(r, 4096).decode(), "|", " ".join(sorted(m for m in set(sys.modules) - before
                                                              if m.startswith("qmailpy"))))
"""


def test_rspawn_preloads_what_a_delivery_imports(remote, scripted):
    """A forked qmail-remote delivering one message imports no qmailpy module that
    qmail-rspawn did not load before forking (each child would import it again)."""
    server = scripted(smtp_script())
    route_to(remote, server.port)
    env = remote.home.env(PYTHONPATH=str(ROOT))
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "python3"), "-c", PRELOADED_DELIVERY], input=MSG,
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    out, _, imported = r.stdout.decode().partition("|")
    assert "K127.0.0.1 accepted message." in out
    assert imported.strip() == ""


def _counting_sink():
    """One SMTP session on 127.0.0.1 that keeps only the sha256 and length of the DATA bytes:
    (port, thread, result)."""
    import hashlib
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = {}

    def run():
        conn, _ = srv.accept()
        srv.close()
        with conn, conn.makefile("rb") as f:
            conn.sendall(b"220 sink\r\n")
            for _ in range(4):                                  # EHLO, MAIL, RCPT, DATA
                got.setdefault("commands", []).append(f.readline())
                conn.sendall(b"354 go\r\n" if got["commands"][-1] == b"DATA\r\n" else b"250 ok\r\n")
            digest, size, tail = hashlib.sha256(), 0, b""
            while not tail.endswith(b"\r\n.\r\n"):
                data = f.read1(65536)
                if not data:
                    return
                digest.update(data)
                size += len(data)
                tail = (tail + data)[-5:]
            got["data"] = (size, digest.hexdigest())
            conn.sendall(b"250 ok queued\r\n")
            f.readline()
            conn.sendall(b"221 bye\r\n")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t, got


def _send_big(remote, tmp_path, head, line, wire_line, count=1600000):
    """qmail-remote under a 128 MB RLIMIT_AS sends a mess file of head + count lines (about
    160 MB) to a sink: (its run, the sink's result, the sha256 the DATA bytes must have)."""
    import hashlib
    import resource
    path = tmp_path / "mess"
    with open(path, "wb") as f:
        f.write(head)
        for _ in range(count // 10000):
            f.write(line * 10000)
    wire = hashlib.sha256(head.replace(b"\n", b"\r\n"))
    for _ in range(count // 10000):
        wire.update(wire_line * 10000)
    wire.update(b".\r\n")
    port, t, got = _counting_sink()
    route_to(remote, port)
    with open(path, "rb") as m:
        p = subprocess.run([program("qmail-remote"), "example.com", "a@b.example", "c@example.com"], stdin=m,
                           capture_output=True, env=remote.home.env(), timeout=60,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (128 << 20, 128 << 20)))
    t.join(30)
    return p, got, wire.hexdigest()


def test_a_message_bigger_than_memory_is_sent_from_the_file(remote, tmp_path):
    # qmail-remote.c's blast() streams the mess file qmail-rspawn gives it on fd 0; a 160 MB
    # message under a 128 MB RLIMIT_AS must go out whole, dot-stuffed (it read it all: exit 111)
    line = b"." + b"x" * 98 + b"\n"
    p, got, wire = _send_big(remote, tmp_path, b"", line, b"." + line[:-1] + b"\r\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, OK_REPORT, b"")
    assert got["commands"][1:] == [b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@example.com>\r\n", b"DATA\r\n"]
    assert got["data"] == (1600000 * 102 + 3, wire)


def test_a_message_on_a_file_not_at_its_start_is_sent_from_where_it_stands(remote, tmp_path):
    port, t, got = _counting_sink()
    route_to(remote, port)
    path = tmp_path / "mess"
    path.write_bytes(b"skipped\n" + MSG)
    with open(path, "rb") as m:
        m.seek(8)
        p = subprocess.run([program("qmail-remote"), "example.com", "a@b.example", "c@example.com"], stdin=m,
                           capture_output=True, env=remote.home.env(), timeout=60)
    t.join(30)
    import hashlib
    assert (p.returncode, p.stdout, p.stderr) == (0, OK_REPORT, b"")
    assert got["data"] == (len(MSG) + 6, hashlib.sha256(b"Subject: test\r\n\r\nhello\r\n.\r\n").hexdigest())


def test_a_big_message_no_key_signs_is_not_read_whole_when_other_domains_have_keys(remote, tmp_path):
    # control/domainkeys/ holds another domain's key: the key choice reads the header (From:,
    # then the sender's domain), so a 160 MB message of b.example still goes out under a
    # 128 MB RLIMIT_AS (the whole message was read to find its From: exit 111, MemoryError)
    os.makedirs(os.path.join(remote.home.root, "control", "domainkeys", "other.example"))
    Path(remote.home.root, "control", "domainkeys", "other.example", "default").write_bytes(b"not read\n")
    head, line = b"From: a@b.example\nSubject: big\n\n", b"x" * 99 + b"\n"
    p, got, wire = _send_big(remote, tmp_path, head, line, line[:-1] + b"\r\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, OK_REPORT, b"")
    assert got["data"] == (len(head) + 3 + 1600000 * 101 + 3, wire)


class FullBacklog:
    """A listener on 127.0.0.1 whose accept queue is full: the kernel drops every new SYN,
    so a connect() waits until it times out (a host that does not answer)."""

    def __enter__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.held = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", self.port))
            self.held.append(c)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        for s in self.held + [self.listener]:
            s.close()


def test_a_connect_time_out_is_counted_in_tcpto_once_per_two_minutes(remote):
    """A host that does not answer within timeoutconnect: qmail's temporary 'Sorry, I wasn't
    able to establish', and queue/lock/tcpto counts the time-out as tcpto_err() does: the
    address, count 1, now; a second time-out within 120 s is not counted again."""
    from qmailpy.queue.layout import create_queue
    from test_remote_units import record_of, tcpto_file
    create_queue(remote.home.root)
    remote.home.control("timeoutconnect", "1\n")
    path = tcpto_file(Path(remote.home.root, "queue", "lock"))
    with FullBacklog() as host:
        route_to(remote, host.port)
        before = int(time.time())
        records = []
        for _ in range(2):
            assert remote("example.com", "a@b", "c@d") == (
                b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0")
            records.append(record_of(path, 0))
        ip, count, when = records[0]
        assert (ip, count) == ("127.0.0.1", 1) and before <= when <= time.time()
        assert records[1] == records[0]
        assert path.read_bytes()[16:] == bytes(1024 - 16)


def test_no_socket_to_be_had_is_a_failed_connection_not_a_time_out(home, dns_server, monkeypatch):
    """socket() itself fails (out of fds): the address counts as not reached (the next one,
    then 'Sorry, I wasn't able to establish', a deferral), never as a time-out in tcpto."""
    from qmailpy.queue.layout import create_queue
    from qmailpy.remote import connect
    from test_remote_units import tcpto_file
    create_queue(home.root)
    path = tcpto_file(Path(home.root, "queue", "lock"))
    port = closed_port()

    def no_fds(*args):
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(connect.socket, "socket", no_fds)
    assert run_here(home, dns_server, port) == (
        0, b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0")
    assert path.read_bytes() == bytes(1024)


def test_a_peer_that_stops_reading_the_message_is_a_deferral(remote, scripted):
    """The server answers 354 and then reads nothing: the write waits timeoutremote and the
    connection counts as died before the final dot went out: qmail's temporary 'connection
    died', without 'Possible duplicate!' (the server cannot have accepted the message)."""
    import threading
    release = threading.Event()

    def script(peer):
        peer.send(b"220 sink.test ESMTP\r\n")
        for reply in (b"250 sink.test\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go ahead\r\n"):
            peer.line()
            peer.send(reply)
        release.wait(30)                # reads nothing more while qmail-remote writes
    server = scripted(script)
    route_to(remote, server.port)
    remote.home.control("timeoutremote", "1\n")
    try:
        assert remote("example.com", "a@b", "c@d", message=b"Subject: big\n\n" + (b"x" * 998 + b"\n") * 20000
                      ) == b"r\0ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0"
    finally:
        release.set()


def test_a_bug_prints_no_report_and_exits_111(home, sinks, dns_server, monkeypatch, capfd):
    """An exception that is no Stop (a bug): nothing on the report pipe, so qmail-rspawn defers
    with 'Unable to run qmail-remote' rather than read a half report; one log line, exit 111.
    Recipient reports already gathered are not printed either."""
    from qmailpy.remote import client
    sink = sinks()

    def broken(*args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(client, "Stuffer", broken)
    assert run_here(home, dns_server, sink.port) == (111, b"")
    assert capfd.readouterr().err.startswith("qmail-remote: internal bug: ZeroDivisionError: division by zero at ")
    assert sink.messages == []


@pytest.mark.parametrize("fault", ["fd 0 closed", "lseek EIO"])
def test_a_message_it_cannot_read_is_a_deferral_and_nothing_is_sent(home, sinks, dns_server, monkeypatch,
                                                                     tmp_path, fault):
    """qmail's temp_read(): fd 0 that cannot be looked at (closed; a regular file whose offset
    cannot be read, EIO) is 'ZUnable to read message', before any connection."""
    from qmailpy.remote import message
    sink = sinks()
    mess = tmp_path / "mess"
    mess.write_bytes(MSG)
    if fault == "fd 0 closed":
        fd0 = 999                   # a number no file has here (nor the pipes run_here makes)
        with pytest.raises(OSError):
            os.fstat(fd0)
    else:
        def eio(*args):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(message.os, "lseek", eio)
        fd0 = os.open(mess, os.O_RDONLY)
    try:
        assert run_here(home, dns_server, sink.port, fd0) == (0, b"ZUnable to read message. (#4.3.0)\n\0")
    finally:
        if fault != "fd 0 closed":
            os.close(fd0)
    assert sink.messages == []


def test_a_read_error_in_the_middle_of_the_message_never_sends_the_dot(home, scripted, dns_server, monkeypatch,
                                                                        tmp_path):
    """The mess file gives EIO after its first block, with DATA under way: qmail's
    temp_read(), 'ZUnable to read message', and the connection is closed without the final
    dot, so the server cannot take the half message for the whole one."""
    from qmailpy.remote import message
    peer = scripted(smtp_script(ehlo=b"250 sink.test\r\n"))
    mess = tmp_path / "mess"
    mess.write_bytes(b"Subject: big\n\n" + b"line\n" * 40000)
    real_pread = os.pread

    def eio_after_the_first_block(fd, n, offset):
        if offset > 0 and n > 1:
            raise OSError(5, "Input/output error")
        return real_pread(fd, n, offset)
    monkeypatch.setattr(message.os, "pread", eio_after_the_first_block)
    fd0 = os.open(mess, os.O_RDONLY)
    try:
        assert run_here(home, dns_server, peer.port, fd0) == (0, b"r\0ZUnable to read message. (#4.3.0)\n\0")
    finally:
        os.close(fd0)
    time.sleep(0.2)
    [got] = peer.peers
    assert b"DATA\r\n" in got.raw and b"line\r\nline\r\n" in got.raw and not got.raw.endswith(b"\r\n.\r\n")


def test_a_report_pipe_closed_early_still_exits_0(home, sinks, dns_server):
    """qmail-rspawn gone (its end of the report pipe closed): qmail's _exit(0) after the
    failed write, no traceback and no other exit code; the delivery itself was done."""
    sink = sinks()
    assert run_here(home, dns_server, sink.port, report=False) == (0, None)
    assert [m.rcpt_tos for m in sink.messages] == [["c@d"]]


def test_an_empty_message_goes_as_an_empty_data(remote, sinks):
    """Nothing on fd 0 is a message of no lines (not a partial line): DATA, then the dot alone."""
    sink = sinks()
    route_to(remote, sink.port)
    assert remote("example.com", "a@b.example", "c@example.com", message=b"") == OK_REPORT
    assert [m.data for m in sink.messages] == [b""]
