"""timeoutsession and smtpminrate under real tcpserver (issue 16): clients that trickle a
byte at a time are cut off with 421, and the slots of tcpserver -c they held come free.
The numbers reached are printed (pytest -s) and in docs/security.md."""
import threading
import time

from test_smtpd_tls import Smtpd, make_home, read_lines
from test_smtpd import connect
from tlspeer import tls_certs  # noqa: F401  (fixture)

DEADLINE = "421 session time limit exceeded, closing connection (#4.4.2)"
TOO_SLOW = "421 you are sending too slowly, closing connection (#4.4.2)"


def trickle(port, every, until, said):
    """Send NOOP lines a byte every `every` seconds until the server closes or `until` passes;
    the lines it said, and when the last came, go to `said`."""
    s = connect(port)
    s.settimeout(every)
    start, buf = time.monotonic(), b""
    try:
        for byte in iter(lambda: b"NOOP\r\n", None):
            for b in byte:
                if time.monotonic() - start > until:
                    return
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    return
                try:
                    data = s.recv(4096)
                    if not data:
                        return
                    buf += data
                except TimeoutError:
                    pass
                except OSError:         # a byte sent after the server closed: RST
                    return
    finally:
        said.append((buf.decode().split("\r\n")[:-1], time.monotonic() - start))
        s.close()


def server_for(tmp_path, certs, controls, **kw):
    home = make_home(tmp_path / "qmail", certs, cert=False, auth=False)
    for name, value in controls.items():
        home.control(name, value)
    return Smtpd(home, **kw)


def test_session_deadline_cuts_a_trickling_client(tmp_path, tls_certs):  # noqa: F811
    server = server_for(tmp_path, tls_certs, {"timeoutsession": "3\n"})
    said = []
    try:
        trickle(server.port, 0.25, 20, said)
    finally:
        log = server.stop()
    [(lines, took)] = said
    print("timeoutsession 3: cut off after %.1f s, %d NOOPs answered" % (took, lines.count("250 ok")))
    assert lines[0].startswith("220 ") and lines[-1] == DEADLINE
    assert set(lines[1:-1]) == {"250 ok"}
    assert 3 <= took < 6
    assert " cutoff reason=deadline ip=127.0.0.1 " in log


def test_minimum_rate_cuts_a_trickling_client(tmp_path, tls_certs):  # noqa: F811
    server = server_for(tmp_path, tls_certs, {"smtpminrate": "10\n", "smtpminratewindow": "2\n"})
    said = []
    try:
        trickle(server.port, 0.5, 20, said)
    finally:
        log = server.stop()
    [(lines, took)] = said
    print("smtpminrate 10 B/s (window 2 s): a client at 2 B/s cut off after %.1f s" % took)
    assert lines[-1] == TOO_SLOW
    assert 2 <= took < 5
    assert " cutoff reason=rate ip=127.0.0.1 " in log


def test_default_is_qmails_no_limit(tmp_path, tls_certs):  # noqa: F811
    server = server_for(tmp_path, tls_certs, {})
    said = []
    try:
        trickle(server.port, 0.25, 4, said)
    finally:
        server.stop()
    [(lines, took)] = said
    assert took >= 4 and lines[-1] == "250 ok"


def test_ten_tricklers_no_longer_hold_every_slot(tmp_path, tls_certs):  # noqa: F811
    """The issue's case: 10 clients trickling into tcpserver -c 10. With timeoutsession 3 an
    eleventh client gets its greeting once the deadline frees the slots."""
    server = server_for(tmp_path, tls_certs, {"timeoutsession": "3\n"}, tcpserver_args=("-c", "10"))
    said = []
    try:
        threads = [threading.Thread(target=trickle, args=(server.port, 0.5, 30, said)) for _ in range(10)]
        for t in threads:
            t.start()
        time.sleep(1)
        start = time.monotonic()
        s = connect(server.port)
        greeting = read_lines(s, 1)
        waited = time.monotonic() - start
        s.close()
        for t in threads:
            t.join(30)
    finally:
        server.stop()
    print("tcpserver -c 10, 10 tricklers, timeoutsession 3: the 11th client waited %.1f s for its greeting; "
          "the tricklers were cut off after %s s" % (waited, ", ".join("%.1f" % took for _, took in said)))
    assert greeting == ["220 test.example ESMTP"]
    assert 1 <= waited < 5
    assert len(said) == 10 and all(lines[-1] == DEADLINE for lines, _ in said)
