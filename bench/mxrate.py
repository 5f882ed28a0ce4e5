"""What a forked qmail-remote pays for an MX lookup, with dnspython loaded in qmail-rspawn or not
(docs/performance.md, "Deliveries that ask DNS").

usage: .venv/bin/python bench/mxrate.py [N] [ROUNDS]      # as root; N = 100, ROUNDS = 2

Not part of `make bench`, whose remote rows route by IP literal and ask no DNS. Here
qmail-rspawn's own code (qmailpy.spawn.rspawn.Remote: preload(), then ready_for() or not)
forks qmail-remote's main() for N deliveries to example.com, one at a time: its MX
(mx.example.com, 127.0.0.2) comes from tests/dnsserver.py, run in a process of its own (it
imports dnspython itself), and smtp-sink listens on 127.0.0.2:25. The modes take turns;
each prints the CPU time of a delivery child (its rusage from wait4) and deliveries/s.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DNS = r"""
import sys, time
sys.path.insert(0, %r)
from dnsserver import DNSServer
dns = DNSServer().start()
dns.zones = {"example.com": {"MX": [(10, "mx.example.com")]}, "mx.example.com": {"A": ["127.0.0.2"]}}
print("%%s:%%d" %% (dns.host, dns.port), flush=True)
sys.stdin.read()
"""

MODE = r"""
import os, sys, time
sys.path.insert(0, %r)
from qmailpy.spawn import rspawn
home, mode, n, mess = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spawner = rspawn.Remote(home, os.environ)
spawner.preload()
if mode == "loaded":
    spawner.ready_for(b"example.com")
from qmailpy.remote.main import run
cpu, start = 0.0, time.monotonic()
for _ in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(os.open(mess, os.O_RDONLY), 0)
        os._exit(run(["qmail-remote", "example.com", "a@b.example", "c@example.com"], 0, w, os.environ))
    os.close(w)
    out = b""
    while True:
        got = os.read(r, 4096)
        if not got:
            break
        out += got
    os.close(r)
    _, _, usage = os.wait4(pid, 0)
    cpu += usage.ru_utime + usage.ru_stime
    if not out.startswith(b"r\0K127.0.0.2"):
        sys.exit("not delivered: %%r" %% out)
assert ("dns.message" in sys.modules) == (mode == "loaded")
print("%%.1f %%.1f" %% (cpu / n * 1000, n / (time.monotonic() - start)))
"""


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    top = tempfile.mkdtemp(prefix="mxrate.")
    home = os.path.join(top, "home")
    os.makedirs(os.path.join(home, "control"))
    os.makedirs(os.path.join(home, "queue", "lock"))
    with open(os.path.join(home, "control", "me"), "w") as f:
        f.write("test.example\n")
    mess = os.path.join(top, "mess")
    with open(mess, "wb") as f:
        f.write(b"Subject: mxrate\n\n" + b"x" * 75 + b"\n" * 26)
    python = os.path.join(ROOT, ".venv", "bin", "python3")
    dns = subprocess.Popen([python, "-c", DNS % os.path.join(ROOT, "tests")], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "127.0.0.2:25", "100"])
    try:
        env = dict(os.environ, QMAILHOME=home, DNSCACHEIP=dns.stdout.readline().strip())
        time.sleep(0.5)
        print("| dnspython in qmail-rspawn | CPU per delivery child, ms | deliveries/s, one at a time |")
        print("|---|---:|---:|")
        for _ in range(rounds):
            for mode in ("not loaded", "loaded"):
                tcpto = os.path.join(home, "queue", "lock", "tcpto")
                if os.path.exists(tcpto):
                    os.unlink(tcpto)
                r = subprocess.run([python, "-c", MODE % ROOT, home, mode, str(n), mess], capture_output=True,
                                   text=True, env=env, timeout=600)
                if r.returncode:
                    sys.exit("%s: %s" % (mode, r.stderr[-2000:]))
                cpu, rate = r.stdout.split()
                print("| %s | %s | %s |" % (mode, cpu, rate))
    finally:
        sink.terminate()
        dns.stdin.close()
        dns.wait(10)
        sink.wait(10)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
