"""TLS test material made at run time (never committed) and a STARTTLS-capable SMTP peer.

    certs = tls_certs          # fixture (session): a CA and certificates made by openssl now
    certs.ca                   # the CA certificate (PEM path): what a verifying client trusts
    certs.server("mx.test.example")  -> (cert path, key path), signed by the CA, SAN DNS:name,
                                        IP:127.0.0.1, IP:::1
    certs.selfsigned           # (cert, key) of `openssl req -x509` alone: trusted by nobody
    sink = TlsSink(cert=certs.server(...), host="127.0.0.1", port=0).start()
    sink.messages              # as smtpsink.Sink's; sink.tls[i] is aiosmtpd's session.ssl
                               # of message i (None: it came without TLS)
    sink.connections           # how many connections were made

cert=None gives a plain aiosmtpd peer without STARTTLS; smtputf8=True advertises
SMTPUTF8. Hosts are loopback only; host may be "::1".
"""
import os
import socket
import subprocess

import pytest

from smtpsink import Sink, _controller_class


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Certs:
    def __init__(self, where):
        self.where = str(where)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=qmailpy test CA", cwd=self.where)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key", "-out", "self.pem",
                "-days", "2", "-subj", "/CN=mx.test.example",
                "-addext", "subjectAltName=DNS:mx.test.example,IP:127.0.0.1", cwd=self.where)
        self.ca = os.path.join(self.where, "ca.pem")
        self.selfsigned = (os.path.join(self.where, "self.pem"), os.path.join(self.where, "self.key"))
        self._made = {}

    def server(self, name):
        if name not in self._made:
            base = os.path.join(self.where, name)
            with open(base + ".ext", "w") as f:
                f.write("subjectAltName=DNS:%s,IP:127.0.0.1,IP:::1\n" % name)
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", base + ".key", "-out", base + ".csr",
                    "-subj", "/CN=" + name, cwd=self.where)
            openssl("x509", "-req", "-in", base + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", base + ".pem", "-days", "2", "-extfile", base + ".ext", cwd=self.where)
            self._made[name] = (base + ".pem", base + ".key")
        return self._made[name]


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("tlscerts"))


def free_port(host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TlsSink(Sink):
    """smtpsink.Sink with STARTTLS (when cert is given), SMTPUTF8 on request, TLS recorded."""

    def __init__(self, cert=None, host="127.0.0.1", port=0, smtputf8=False):
        import ssl
        port = port or free_port(host)
        self.tls, self.peers = [], set()
        super().__init__("127.0.0.1", free_port("127.0.0.1"))     # replaced below
        self.host, self.port = host, port
        kwargs = {"enable_SMTPUTF8": smtputf8}       # aiosmtpd's Controller offers it by default
        if cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*cert)
            kwargs["tls_context"] = ctx
        self.controller = _controller_class()(self, hostname=host, port=port, server_hostname="sink.test",
                                              decode_data=False, **kwargs)

    @property
    def connections(self):
        return len(self.peers)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.peers.add(session.peer)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_DATA(self, server, session, envelope):
        self.tls.append(session.ssl)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def tls_sinks():
    started = []

    def make(*args, **kw):
        sink = TlsSink(*args, **kw).start()
        started.append(sink)
        return sink
    yield make
    for sink in started:
        sink.stop()
