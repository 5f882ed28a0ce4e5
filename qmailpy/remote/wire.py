"""An SMTP connection as qmail-remote uses it: timed writes and qmail's reply reader.

Every read and every write waits at most `timeout` seconds (timeoutremote;
per system call, like qmail's timeoutread/timeoutwrite, so a big message on
a slow link is fine); a time-out, EOF or error raises Dropped. reply()
follows qmail's smtpcode() byte for byte: the code is the first three bytes,
lines whose fourth byte is '-' continue the reply, and the text kept for
"Remote host said:" is the whole reply without CRs, capped at 5000 bytes.
starttls() turns the connection into a TLS one in place (remote.tls).
cork() holds partial segments back (TCP_CORK) while the message and its
final dot go out in two writes: without it, Nagle's algorithm keeps the dot
until the partner acknowledges the message's last segment, which a delayed
ACK puts off by up to 40 ms per delivery.
"""
import socket

HUGESMTPTEXT = 5000
CHUNK = 65536


class Dropped(Exception):
    """The connection died or timed out."""


class Conn:
    """A connected socket, the partner's address as text, the last reply's text."""

    def __init__(self, sock, partner, timeout):
        self.sock = sock
        self.partner = partner          # bytes, as printed in reports
        self.text = b""                 # qmail's smtptext
        self.critical = False           # the final dot is out: a drop may duplicate
        self.tls = b""                  # the report's "TLS: ..." line once TLS was used or tried
        self._buf = b""
        self._pos = 0
        sock.settimeout(timeout)

    def send(self, data):
        view = memoryview(data)
        try:
            while view:
                n = self.sock.send(view[:CHUNK])
                view = view[n:]
        except OSError:                 # socket.timeout is an OSError
            raise Dropped() from None

    def cork(self, on):
        """TCP_CORK on or off (off sends what is held); nothing where the socket has no TCP_CORK."""
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1 if on else 0)
        except (OSError, AttributeError):
            pass

    def _byte(self):
        if self._pos >= len(self._buf):
            try:
                self._buf = self.sock.recv(128)
            except OSError:
                raise Dropped() from None
            if not self._buf:
                raise Dropped()
            self._pos = 0
        ch = self._buf[self._pos]
        self._pos += 1
        return ch

    def reply(self):
        """The next reply's code (qmail's arithmetic: garbage gives a huge code)."""
        text = bytearray()

        def get():
            ch = self._byte()
            if ch != 13 and len(text) < HUGESMTPTEXT:
                text.append(ch)
            return ch

        code = get() - 48
        code = code * 10 + get() - 48
        code = code * 10 + get() - 48
        while True:
            ch = get()
            if ch != 45:                # '-': a continuation line follows
                break
            while ch != 10:
                ch = get()
            get()
            get()
            get()
        while ch != 10:
            ch = get()
        self.text = bytes(text)
        return code % (1 << 64)         # C's unsigned long

    def starttls(self, context, hostname):
        """Run the TLS handshake on this connection (after the server's 220 to STARTTLS).

        Bytes the server sent after that 220 are dropped unread: nothing from
        before the handshake may be taken as said under TLS (RFC 3207 4.2).
        Raises what the handshake raises (ssl.SSLError, OSError, a time-out).
        """
        self._buf, self._pos = b"", 0
        server_name = hostname.rstrip(".") if hostname and ":" not in hostname else hostname
        self.sock = context.wrap_socket(self.sock, server_hostname=server_name or None,
                                        do_handshake_on_connect=False)
        self.sock.do_handshake()

    def take_text(self):
        """The last reply's text, once: qmail prints it with one report only."""
        text, self.text = self.text, b""
        return text

    def quit(self):
        """Send QUIT without waiting for the answer ("just too ridiculous"); errors do not matter now."""
        try:
            self.sock.send(b"QUIT\r\n")
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
