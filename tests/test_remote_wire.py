"""bin/qmail-remote against scripted raw SMTP peers: exact wire bytes, pipelining, dying peers."""
import time

from dnsserver import dns_server  # noqa: F401  (fixture)
from qmailpy.proto.dotstuff import stuff
from smtpsink import scripted, silent_script, smtp_script  # noqa: F401  (fixtures)
from test_remote import remote, route_to  # noqa: F401  (fixture)


def test_greeting_and_helo_failures(remote, scripted):
    def bad_greeting(peer):
        peer.send(b"554 go away\r\n")
        peer.line()
    server = scripted(bad_greeting)
    route_to(remote, server.port)
    assert remote("example.com", "a@b", "c@d") == (
        b"ZConnected to 127.0.0.1 but greeting failed.\nRemote host said: 554 go away\n\0")

    def bad_name(peer):
        peer.send(b"220 hi\r\n")
        peer.line()
        peer.send(b"500 EHLO unknown\r\n")
        peer.line()
        peer.send(b"501-bad name\r\n501 really\r\n")
        peer.line()
    server = scripted(bad_name)
    route_to(remote, server.port)
    assert remote("example.com", "a@b", "c@d") == (
        b"ZConnected to 127.0.0.1 but my name was rejected.\nRemote host said: 501-bad name\n501 really\n\0")


def test_silent_server_times_out(remote, scripted):
    server = scripted(silent_script)
    route_to(remote, server.port)
    remote.home.control("timeoutremote", "1\n")
    started = time.monotonic()
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0")
    assert time.monotonic() - started < 5


def test_death_after_dot_is_possible_duplicate(remote, scripted):
    server = scripted(smtp_script(die_after_dot=True))
    route_to(remote, server.port)
    assert remote("example.com", "a@b.example", "c@example.com") == (
        b"r\0ZConnected to 127.0.0.1 but connection died. Possible duplicate! (#4.4.2)\n\0")


def test_wire_bytes_transparency_and_quoting(remote, scripted):
    server = scripted(smtp_script(ehlo=b"250-sink.test\r\n250 HELP\r\n"))
    route_to(remote, server.port)
    message = (b"Subject: dots\n\n.leading dot\n..two dots\n.\nkept CRLF\r\n"
               b"bare CR\r.dot after CR\nend\n")
    assert remote("example.com", "john doe@b.example", "c@example.com", message=message) == (
        b"r\0K127.0.0.1 accepted message.\nRemote host said: 250 ok\n\0")
    time.sleep(0.2)
    (peer,) = server.peers
    data = (b"Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nkept CRLF\r\n"
            b"bare CR\r\n..dot after CR\r\nend\r\n.\r\n")
    assert data == stuff(message)
    assert bytes(peer.raw) == (b"EHLO test.example\r\n"
                               b'MAIL FROM:<"john doe"@b.example>\r\n'
                               b"RCPT TO:<c@example.com>\r\n"
                               b"DATA\r\n" + data + b"QUIT\r\n")


def test_pipelining_sends_mail_and_rcpts_in_one_batch(remote, scripted):
    seen = {}

    def script(peer):
        peer.send(b"220 hi\r\n")
        peer.line()
        peer.send(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        seen["mail"] = peer.line()
        peer.until(b"RCPT TO:<y@d>\r\n", timeout=3)       # a non-pipelining client would hang here
        seen["batch"] = bytes(peer.raw)
        peer.send(b"250 sender ok\r\n250 rcpt x ok\r\n550 not y\r\n")
        peer.line()
        peer.send(b"354 go\r\n")
        peer.until(b"\r\n.\r\n")
        peer.send(b"250 queued\r\n")
        peer.line()
    server = scripted(script)
    route_to(remote, server.port)
    assert remote("example.com", "a@b", "x@d", "y@d") == (
        b"r\0h127.0.0.1 does not like recipient.\nRemote host said: 550 not y\n\0"
        b"K127.0.0.1 accepted message.\nRemote host said: 250 queued\n\0")
    assert seen["batch"].endswith(b"MAIL FROM:<a@b>\r\nRCPT TO:<x@d>\r\nRCPT TO:<y@d>\r\n")
