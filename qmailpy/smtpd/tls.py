"""qmail-smtpd's TLS: the server context from the controls, and a channel over MemoryBIOs.

The session never sees TLS: it asks for it (actions.StartTls) and is told the
cipher. The driver (qmailpy.smtpd.main) reads and writes through a channel;
TlsChannel puts an ssl.SSLObject between that channel and the plain one, so
the same select()-and-timeout reads serve both (no socket object: fd 0/1 may
be pipes under tcpserver). Imported only when a session starts TLS: a plain
session does not load ssl.

Controls, as the qmail TLS patch names them: control/servercert.pem (chain and
key), control/clientca.pem (client certificates asked for, the result logged),
control/tlsserverciphers or $TLSCIPHERS (TLS 1.2 and below), control/dh2048.pem
(DHE). SSLv2/SSLv3/TLS 1.0/1.1 are off (OpenSSL's defaults), renegotiation off.
With clientca.pem a client certificate is asked for (CERT_OPTIONAL): one that
does not verify against those CAs fails the handshake (Python's ssl has no
"verify but go on" callback, the qmail TLS patch's verify_cb).
"""
import ssl

from qmailpy.ctl.reader import ControlError

READ_SIZE = 65536


class TlsUnavailable(ControlError):
    """The controls give no usable server context: the file and why (qmail-showctl --check asks too)."""


class Info:
    """What the session is told about its TLS: the cipher and protocol version, whether a
    client certificate verified."""
    __slots__ = ("cipher", "version", "verified")

    def __init__(self, cipher, version, verified):
        self.cipher, self.version, self.verified = cipher, version, verified

    def __repr__(self):
        return "Info(%r, %r, %r)" % (self.cipher, self.version, self.verified)


def _load(name, load, *args):
    """load(*args), a control file that does not load being TlsUnavailable naming it."""
    try:
        load(*args)
    except (ssl.SSLError, OSError) as e:
        raise TlsUnavailable("control/" + name, 0, str(getattr(e, "reason", None) or e.strerror or e)) from None


def server_context(controls):
    """The ssl.SSLContext for qmail-smtpd (TlsUnavailable when servercert.pem cannot be used)."""
    cert = controls.value("servercert.pem")
    if cert is None:
        raise TlsUnavailable("control/servercert.pem", 0, "missing")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    _load("servercert.pem", ctx.load_cert_chain, cert)
    ciphers = controls.value("tlsserverciphers")
    if ciphers:
        _load("tlsserverciphers", ctx.set_ciphers, ciphers)
    dh = controls.value("dh2048.pem")
    if dh is not None:
        _load("dh2048.pem", ctx.load_dh_params, dh)
    ca = controls.value("clientca.pem")
    if ca is not None:
        _load("clientca.pem", ctx.load_verify_locations, ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class TlsChannel:
    """read()/write() of cleartext over `plain` (a channel of raw bytes: read() -> bytes, b"" at
    end of input, its own time-out exceptions; write(bytes))."""

    def __init__(self, ctx, plain):
        self.plain = plain
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_side=True)

    def handshake(self):
        """Run the handshake; the Info. ssl.SSLError when it fails (after sending the client
        OpenSSL's alert that says why, as a server on a socket does), EOFError when the client left."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()
            except ssl.SSLError:
                try:
                    self._flush()
                except OSError:     # a client gone or not reading: the handshake's error is the news
                    pass
                raise
        self._flush()
        cipher = self.obj.cipher()
        return Info(cipher[0] if cipher else "unknown", self.obj.version(), bool(self.obj.getpeercert()))

    def _fill(self):
        data = self.plain.read()
        if not data:
            raise EOFError("client went away during the TLS handshake")
        self._in.write(data)

    def _flush(self):
        data = self._out.read()
        if data:
            self.plain.write(data)

    def read(self):
        """Cleartext from the client; b"" at the end: a close_notify (SSLObject.read() gives b""
        for it) or the connection's end (the memory BIO is never given an EOF, so no SSLEOFError)."""
        while True:
            try:
                return self.obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.plain.read()
                if not data:
                    return b""
                self._in.write(data)

    def write(self, data):
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            view = view[n:]
            self._flush()
