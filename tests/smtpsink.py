"""SMTP peers for qmail-remote tests, on 127.0.0.0/8 only.

Sink: an aiosmtpd Controller (own thread and loop) recording messages and answering as told:
    sink = sinks()                       # 127.0.0.1:<free port>; sinks("127.9.8.7", 25) as root
    sink.answer("RCPT", "550 no such user", rcpt="bad@example.com")   # once (times=1)
    sink.answer("END", "451 try later")  # stages: EHLO MAIL RCPT DATA END (after the final dot)
    sink.answer("MAIL", "553 go away", times=None)                      # every time
    sink.pipelining = False              # do not advertise PIPELINING (8BITMIME always is)
    sink.messages  -> [Message(peer=(ip, port), helo, verb "EHLO"|"HELO", mail_from,
                        mail_options, rcpt_tos, data (dot-unstuffed, CRLF kept), accepted)]
A planned answer replaces the normal one (250, or 354 for DATA); rcpt=None matches
every recipient; a message refused after the dot is recorded with accepted=False.

Scripted: a raw TCP server running script(peer) per connection, for what aiosmtpd
cannot do (never answer, die after the dot, check pipelined or exact wire bytes):
peer.send(b".."), peer.line() (with its CRLF; b"" at EOF), peer.until(marker),
peer.raw (all bytes received). smtp_script(...) is the usual accept-all dialogue.

Fixtures `sinks` and `scripted` are factories; what they start is stopped after the
test. loopback_address() picks a free random 127.x.y.z for MX tests, which need port
25 (qmail-remote always uses 25 for MX hosts): root only, else need_root() skips.
"""
import collections
import os
import random
import socket
import threading

import pytest

Message = collections.namedtuple("Message", "peer helo verb mail_from mail_options rcpt_tos data accepted")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("binding port 25 needs root")


def loopback_address(port=25):
    """A random 127.x.y.z (never .0.0.1 or .0.0.2) where nothing listens on `port` yet."""
    for _ in range(100):
        ip = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(0, 255), random.randint(1, 254))
        with socket.socket() as s:
            try:
                s.bind((ip, port))
                return ip
            except OSError:
                continue
    raise RuntimeError("no free loopback address")


class Sink:
    """An aiosmtpd server whose handler is the Sink itself: planned answers, recorded messages."""

    def __init__(self, host="127.0.0.1", port=0):
        self.messages, self.plan, self.pipelining = [], [], True
        self.host = host
        if not port:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.port = port
        self.controller = _controller_class()(self, hostname=host, port=port,
                                              server_hostname="sink.test", decode_data=False)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def answer(self, stage, reply, times=1, rcpt=None):
        self.plan.append([stage, rcpt, reply, times])

    def planned(self, stage, rcpt=None):
        for entry in self.plan:
            if entry[0] == stage and entry[1] in (None, rcpt) and entry[3] != 0:
                if entry[3] is not None:
                    entry[3] -= 1
                return entry[2]
        return None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        reply = self.planned("EHLO")
        if reply:
            return [reply]
        session.host_name, session.verb = hostname, "EHLO"
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name, session.verb = hostname, "HELO"
        return "250 sink.test"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = self.planned("MAIL")
        if not reply:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply or "250 ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.planned("RCPT", address)
        if not reply:
            envelope.rcpt_tos.append(address)
        return reply or "250 ok"

    async def handle_DATA(self, server, session, envelope):
        reply = self.planned("END")
        self.messages.append(Message(
            session.peer, session.host_name, getattr(session, "verb", None), envelope.mail_from,
            list(envelope.mail_options), list(envelope.rcpt_tos), envelope.original_content, reply is None))
        return reply or "250 ok queued"


def _controller_class():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class PlannedSMTP(SMTP):
        async def smtp_DATA(self, arg):
            reply = self.event_handler.planned("DATA")
            if reply and self.envelope.rcpt_tos:
                await self.push(reply)
                return
            await super().smtp_DATA(arg)

    class PlannedController(Controller):
        def factory(self):
            return PlannedSMTP(self.handler, **self.SMTP_kwargs)

    return PlannedController


class Peer:
    """One connection of a Scripted server, seen from the script."""

    def __init__(self, conn):
        self.conn = conn
        self.raw = bytearray()
        self._pending = bytearray()
        conn.settimeout(10)

    def send(self, data):
        self.conn.sendall(data)

    def line(self, timeout=10):
        return self.until(b"\n", timeout)

    def until(self, marker, timeout=10):
        """Bytes up to and including marker; what arrived so far at EOF or time-out."""
        self.conn.settimeout(timeout)
        while marker not in self._pending:
            try:
                got = self.conn.recv(65536)
            except OSError:
                got = b""
            if not got:
                out, self._pending = bytes(self._pending), bytearray()
                return out
            self.raw += got
            self._pending += got
        end = self._pending.index(marker) + len(marker)
        out, self._pending = bytes(self._pending[:end]), self._pending[end:]
        return out


class Scripted:
    """A listening socket; each connection runs script(Peer) in its own thread."""

    def __init__(self, script, host="127.0.0.1", port=0):
        self.script, self.peers = script, []
        self.sock = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = self.sock.getsockname()[:2]

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.sock.close()           # the accept loop ends with an OSError

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.peers.append(Peer(conn))
            threading.Thread(target=self._run, args=(self.peers[-1],), daemon=True).start()

    def _run(self, peer):
        try:
            self.script(peer)
        except OSError:
            pass
        finally:
            peer.conn.close()


def smtp_script(ehlo=b"250-sink.test\r\n250 8BITMIME\r\n", end=b"250 ok\r\n", die_after_dot=False, answers=None):
    """An accept-all dialogue: every command gets 250 (DATA 354); `end` answers the final dot;
    `answers` maps a verb (b"MAIL") to another reply."""
    def script(peer):
        peer.send(b"220 sink.test ESMTP\r\n")
        while True:
            line = peer.line()
            verb = line[:4].upper()
            if not line or verb == b"QUIT":
                if line:
                    peer.send(b"221 bye\r\n")
                return
            if verb == b"EHLO":
                peer.send(ehlo)
            elif verb == b"DATA":
                peer.send(b"354 go ahead\r\n")
                peer.until(b"\r\n.\r\n")
                if die_after_dot:
                    return
                peer.send(end)
            else:
                peer.send((answers or {}).get(verb, b"250 ok\r\n"))
    return script


def silent_script(peer):
    """Accept the connection and never say anything (until the client gives up)."""
    peer.until(b"\0never\0", timeout=30)


def _started(cls):
    started = []

    def make(*args, **kw):
        started.append(cls(*args, **kw).start())
        return started[-1]
    yield make
    for server in started:
        server.stop()


@pytest.fixture
def sinks():
    """sinks(host="127.0.0.1", port=0) -> a started Sink; all stopped after the test."""
    yield from _started(Sink)


@pytest.fixture
def scripted():
    """scripted(script, host="127.0.0.1", port=0) -> a started Scripted server."""
    yield from _started(Scripted)
