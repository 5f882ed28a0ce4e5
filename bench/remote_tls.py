"""What STARTTLS and DKIM signing cost one qmail-remote delivery (docs/performance.md, "TLS and DKIM").

usage: .venv/bin/python bench/remote_tls.py [N]

Runs bin/qmail-remote N times (default 60) in each mode, the modes taking
turns so that the machine's drift hits them alike, against aiosmtpd peers in
one separate process on 127.0.0.1 (no fsync: the peer's cost is not the
question):
  plain      a peer without STARTTLS (qmail's dialogue, no ssl import)
  tls        STARTTLS, certificate verified ($SSL_CERT_FILE = the test CA)
  tls-unver  STARTTLS, certificate not verifiable: the report says so after a
             second connection without the check (the `may` level's cost)
  dkim       plain peer, message signed with a 2048-bit RSA key
and, in this process, the parts: building the client context with the
machine's CA store, one handshake over loopback (TLS 1.3, RSA 2048), one
DKIM signature. Certificates and keys are made by openssl in a temporary
directory. Prints a Markdown table of medians (ms) and the differences.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from settings import TREE_PARENT  # noqa: E402
VPY = os.path.join(ROOT, ".venv", "bin", "python3")
REMOTE = os.path.join(ROOT, "bin", "qmail-remote")
MSG = b"From: bench@example.com\nTo: r@example.org\nSubject: bench\n\n" + (b"x" * 70 + b"\n") * 28

PEER = r"""
import signal, ssl, sys
from aiosmtpd.controller import Controller
class H:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
stop = {signal.SIGTERM, signal.SIGINT}
signal.pthread_sigmask(signal.SIG_BLOCK, stop)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
a = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
b = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[2]), tls_context=ctx)
a.start(); b.start()
print("ready", flush=True)
signal.sigwait(stop)
a.stop(); b.stop()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def material(tmp):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=bench CA", cwd=tmp)
    with open(os.path.join(tmp, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "mx.key", "-out", "mx.csr", "-subj", "/CN=localhost",
            cwd=tmp)
    openssl("x509", "-req", "-in", "mx.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            "mx.pem", "-days", "1", "-extfile", "ext", cwd=tmp)
    openssl("genrsa", "-out", "dkim.key", "2048", cwd=tmp)


def home(tmp, name, port, dkim=None):
    root = os.path.join(tmp, name)
    os.makedirs(os.path.join(root, "control"))
    with open(os.path.join(root, "control", "me"), "w") as f:
        f.write("bench.example\n")
    with open(os.path.join(root, "control", "smtproutes"), "w") as f:
        f.write(":[127.0.0.1]:%d\n" % port)
    if dkim:
        os.makedirs(os.path.join(root, "control", "domainkeys", "example.com"))
        with open(dkim, "rb") as src, open(os.path.join(root, "control", "domainkeys", "example.com", "sel"),
                                            "wb") as dst:
            dst.write(src.read())
    return root


def deliver(root, env):
    t0 = time.perf_counter()
    p = subprocess.run([REMOTE, "example.org", "bench@example.com", "r@example.org"], input=MSG,
                       capture_output=True, env=dict(env, QMAILHOME=root))
    took = (time.perf_counter() - t0) * 1000
    if not p.stdout.startswith(b"r\0K"):
        raise SystemExit("delivery failed: %r %r" % (p.stdout, p.stderr))
    return took, p.stdout


def parts(tmp, port_tls, n):
    """(context ms, handshake ms, DKIM signature ms) measured in this process."""
    import ssl
    from qmailpy.dkim.keys import Key
    from qmailpy.dkim.sign import signatures
    ctx_ms, hs_ms, sig_ms = [], [], []
    with open(os.path.join(tmp, "dkim.key"), "rb") as f:
        key = Key(b"example.com", b"sel", f.read(), "bench")
    for _ in range(n):
        t0 = time.perf_counter()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_default_certs()
        ctx.load_verify_locations(os.path.join(tmp, "ca.pem"))
        ctx_ms.append((time.perf_counter() - t0) * 1000)
        with socket.create_connection(("127.0.0.1", port_tls)) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO bench\r\n")
            while f.readline()[3:4] == b"-":
                pass
            s.sendall(b"STARTTLS\r\n")
            f.readline()
            t0 = time.perf_counter()
            tls = ctx.wrap_socket(s, server_hostname="localhost")
            hs_ms.append((time.perf_counter() - t0) * 1000)
            tls.close()
        t0 = time.perf_counter()
        signatures(MSG, [key])
        sig_ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ctx_ms), statistics.median(hs_ms), statistics.median(sig_ms)


def main(argv):
    n = int(argv[0]) if argv else 60
    with tempfile.TemporaryDirectory(prefix="qmailpy-bench-tls.", dir=TREE_PARENT) as tmp:
        material(tmp)
        plain_port, tls_port = free_port(), free_port()
        peer = subprocess.Popen([VPY, "-c", PEER, str(plain_port), str(tls_port), os.path.join(tmp, "mx.pem"),
                                 os.path.join(tmp, "mx.key")], stdout=subprocess.PIPE)
        try:
            assert peer.stdout.readline().strip() == b"ready"
            env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
            env.update(QMAILPY_SINGLEUSER="1", DNSCACHEIP="127.0.0.1:1")
            modes = {
                "plain": (home(tmp, "plain", plain_port), env),
                "tls": (home(tmp, "tls", tls_port), dict(env, SSL_CERT_FILE=os.path.join(tmp, "ca.pem"))),
                "tls-unver": (home(tmp, "unver", tls_port), env),
                "dkim": (home(tmp, "dkim", plain_port, os.path.join(tmp, "dkim.key")), env),
            }
            times = {m: [] for m in modes}
            reports = {}
            for _ in range(n):
                for mode, (root, e) in modes.items():
                    took, reports[mode] = deliver(root, e)
                    times[mode].append(took)
            ctx_ms, hs_ms, sig_ms = parts(tmp, tls_port, n)
        finally:
            peer.terminate()
            peer.wait()
    med = {m: statistics.median(t) for m, t in times.items()}
    print("%d deliveries per mode, qmail-remote exec'd each time, medians (ms):\n" % n)
    print("| mode | ms per delivery | minus plain |\n|---|---:|---:|")
    for mode in modes:
        print("| %s | %.1f | %+.1f |" % (mode, med[mode], med[mode] - med["plain"]))
    print("\nparts, in-process: client context with the machine's CA store %.1f ms; STARTTLS handshake "
          "(TLS 1.3, RSA 2048, loopback) %.1f ms; one DKIM signature (RSA 2048, dkimpy) %.1f ms"
          % (ctx_ms, hs_ms, sig_ms))
    for mode in ("tls", "tls-unver"):
        print("%s report: %r" % (mode, reports[mode].split(b"\n")[1].decode()))


if __name__ == "__main__":
    main(sys.argv[1:])
