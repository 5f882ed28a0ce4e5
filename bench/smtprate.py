"""SMTP 1 msg/conn into qmail-tcpserver + qmail-smtpd + qmail-queued, A/B between code trees, interleaved.

usage: .venv/bin/python bench/smtprate.py [--m M] [--s S] [--rounds R] [--steps] [--strace P] [--profile DIR] [-d] ROOT [ROOT...]

Not part of `make bench` (its qmail-tcpserver rows measure this once per
run): a narrow driver for tuning. Per round and per ROOT: a fresh home from
that tree's tools/install.py, its qmail-queued and qmail-tcpserver
(-R -H -l localhost -c 100, -u/-g as the queue's writer, as bench/run.py
starts them), `smtp-source -s S -m M -l 2000` (1 message per connection; with -d,
the S connections share the messages),
every message counted in queue/todo; with the CPU time qmail-queued and
qmail-tcpserver (with its workers) spent per message. --profile DIR runs each
worker's sessions under cProfile (the home's qmail-tcpserver launcher
rewritten) and writes DIR/session.<pid>.prof after every session. --strace PREFIX counts the system
calls of qmail-queued and of qmail-tcpserver with its children ($SMTPRATE_STRACE replaces strace's
`-c -w`: `SMTPRATE_STRACE=-tt` writes every call with its time instead). --steps also times one session's
steps (greeting, EHLO, MAIL, RCPT, DATA, the dot, QUIT) with a Python client.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import qmailsend  # noqa: E402
import tcpserver_rows  # noqa: E402
from procs import Servers, count_files, tool  # noqa: E402
from settings import temp_tree  # noqa: E402

VPY = os.path.join(ROOT, ".venv", "bin", "python3")
DOMAIN = "bench.example"


def steps(port):
    """Seconds per step of one session."""
    out = []
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    t = time.perf_counter()

    def step(name, data=None, lines=1):
        nonlocal t
        if data:
            s.sendall(data)
        for _ in range(lines):
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
        now = time.perf_counter()
        out.append("%s %.2f ms" % (name, (now - t) * 1000))
        t = now
    step("greeting")
    step("EHLO", b"EHLO x\r\n")
    step("MAIL", b"MAIL FROM:<a@%s>\r\n" % DOMAIN.encode())
    step("RCPT", b"RCPT TO:<b@%s>\r\n" % DOMAIN.encode())
    step("DATA", b"DATA\r\n")
    step("dot", b"Subject: x\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
    step("QUIT", b"QUIT\r\n")
    s.close()
    return ", ".join(out)


class _Bench:
    """What tcpserver_rows.start() needs of bench/run.py's Bench."""

    def __init__(self, home, env, log):
        self.home, self.env, self.log = home, env, log


def _cpu(pid):
    """User + system seconds of a process, its threads, its reaped children and its living
    descendants (qmail-tcpserver's workers), from /proc."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(p) for p in f.read().split()]
    except OSError:                 # it ended meanwhile: its parent's reaped-children figure has it
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK") + sum(_cpu(k) for k in kids)


PROFILED_FRONT = """#!%s -IS
import sys, os, cProfile
sys.path[:0] = [%r, %r]
from qmailpy.tcpserver import child
session, profile = child.session, cProfile.Profile()

def profiled(*args):
    profile.enable()
    try:
        return session(*args)
    finally:
        profile.disable()
        profile.dump_stats(os.path.join(%r, "session.%%d.prof" %% os.getpid()))
child.session = profiled
from qmailpy.tcpserver.main import main
sys.exit(main())
"""


def one(tmp, root, tag, m, par, do_steps, trace=None, profile=None, reuse=False):
    home = os.path.join(tmp, tag)
    subprocess.run([VPY, os.path.join(root, "tools", "install.py"), home, root, VPY], check=True,
                   stdout=subprocess.DEVNULL)
    if profile:
        with open(os.path.join(home, "bin", "qmail-tcpserver"), "w") as f:
            f.write(PROFILED_FRONT % (VPY, root, os.path.join(ROOT, ".venv/lib/python3.11/site-packages"),
                                      os.path.abspath(profile)))
    for key, value in {"me": DOMAIN, "rcpthosts": DOMAIN}.items():
        with open(os.path.join(home, "control", key), "w") as f:
            f.write(value + "\n")
    env = {k: v for k, v in os.environ.items() if k not in qmailsend.ENV_DROP}
    env["QMAILHOME"] = home
    servers, log = Servers(), os.path.join(tmp, tag + ".log")
    try:
        servers.start_queued(home, env if qmailsend.queue_writer(home) else dict(env, QMAILPY_SINGLEUSER="1"), log)
        port = tcpserver_rows.start(_Bench(home, env, log), servers, tool)    # as make bench starts it
        detail = steps(port) if do_steps else ""
        todo = os.path.join(home, "queue", "todo")
        before = count_files(todo)
        how = (os.environ.get("SMTPRATE_STRACE") or "-c -w").split()
        tracers = [subprocess.Popen(["strace"] + how + ["-f", "-o", "%s.%s" % (trace, name), "-p", str(proc.pid)])
                   for name, proc in (("queued", servers.procs[0]), ("tcpserver", servers.procs[1]))] if trace else []
        time.sleep(0.5 if trace else 0)
        cpu0 = [_cpu(p.pid) for p in servers.procs]
        start = time.perf_counter()
        subprocess.run([tool("smtp-source")] + (["-d"] if reuse else []) + ["-s", str(par), "-m", str(m), "-l", "2000", "-f", "a@" + DOMAIN,
                        "-t", "b@" + DOMAIN, "127.0.0.1:%d" % port], check=True, capture_output=True, timeout=300)
        rate = m / (time.perf_counter() - start)
        time.sleep(0.2)                  # the last children reaped
        cpu = [(_cpu(p.pid) - c) * 1000 / m for p, c in zip(servers.procs, cpu0)]
        detail = ("CPU ms per message: qmail-queued %.2f, qmail-tcpserver and sessions %.2f " % tuple(cpu)) + detail
        for t in tracers:
            t.send_signal(2)
            t.wait()
        if count_files(todo) - before != m:
            raise SystemExit("%s: %d messages in todo/ for %d sent" % (tag, count_files(todo) - before, m))
    finally:
        servers.stop_all()
    shutil.rmtree(home, ignore_errors=True)
    return rate, detail


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=300)
    ap.add_argument("--s", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--strace", help="strace -c -f qmail-queued and qmail-tcpserver into STRACE.queued/.tcpserver")
    ap.add_argument("-d", dest="reuse", action="store_true", help="smtp-source -d: messages share connections")
    ap.add_argument("--profile", help="cProfile the workers' sessions into PROFILE/session.<pid>.prof")
    ap.add_argument("roots", nargs="+")
    args = ap.parse_args(argv)
    tmp = temp_tree("smtprate.")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)
    got = {r: [] for r in args.roots}
    try:
        for rnd in range(args.rounds):
            for i, root in enumerate(args.roots):
                rate, detail = one(tmp, os.path.abspath(root), "r%d-%d" % (rnd, i), args.m, args.s, args.steps, args.strace,
                                   args.profile, args.reuse)
                got[root].append(rate)
                print("round %d %s: %.1f/s %s" % (rnd, root, rate, detail), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for root, rates in got.items():
        print("%s: median %.1f/s  (%s)" % (root, statistics.median(rates), " ".join("%.1f" % r for r in rates)))


if __name__ == "__main__":
    main(sys.argv[1:])
