"""qmail-send's remote delivery rate, A/B between code trees, interleaved: a narrow driver for tuning.

usage: .venv/bin/python bench/sendrate.py [--n N] [--conc C] [--rounds R] [--profile DIR] ROOT [ROOT...]

Not part of `make bench` (its "remote deliveries" rows measure the same
thing once per run). Each ROOT is a qmailpy source tree (this one, or a
`git archive` of another commit): per round and per ROOT, a fresh home laid
out by that tree's tools/install.py, N messages queued in advance
(bench/qmailsend.py's inject), qmail-send with concurrencyremote C routed by
smtproutes into one smtp-sink, timed as bench/run.py times it: from the
first `starting delivery` to the last `end msg`. The trees take turns, and
the medians are printed, with the CPU time (user + system) qmail-send's
whole process tree spent per delivery, a figure a busy machine disturbs
far less than the rate. --profile DIR runs qmail-send, qmail-todo and
qmail-rspawn under cProfile (their launchers rewritten in the temporary
home) and writes DIR/<program>.<pid>.prof.
"""
import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import qmailsend  # noqa: E402
from procs import Servers, tool  # noqa: E402
from settings import temp_tree  # noqa: E402

VPY = os.path.join(ROOT, ".venv", "bin", "python3")
PROFILED = {"qmail-send": "qmailpy.send.main", "qmail-todo": "qmailpy.send.todo_main",
            "qmail-rspawn": "qmailpy.spawn.rspawn"}


def profiled_launcher(path, root, module, outdir):
    with open(path, "w") as f:
        f.write("#!%s -IS\nimport sys, os, cProfile, signal\nsys.path[:0] = [%r, %r]\n"
                "from %s import main\np = cProfile.Profile()\n"
                "def dump(*a):\n    p.disable(); p.dump_stats(os.path.join(%r, %r + '.%%d.prof' %% os.getpid()))\n"
                "import atexit; atexit.register(dump)\n"
                "rc = p.runcall(main)\nsys.exit(rc)\n"
                % (VPY, root, os.path.join(ROOT, ".venv/lib/python3.11/site-packages"), module, outdir,
                   os.path.basename(path)))


def one(tmp, root, tag, n, conc, sink, profile):
    from qmailpy.proto import qq
    home = os.path.join(tmp, tag)
    subprocess.run([VPY, os.path.join(root, "tools", "install.py"), home, root, VPY], check=True,
                   stdout=subprocess.DEVNULL)
    for key, value in {"me": "mx.bench.example", "smtproutes": ":127.0.0.1:%d" % sink,
                       "concurrencyremote": str(conc)}.items():
        with open(os.path.join(home, "control", key), "w") as f:
            f.write(value + "\n")
    if profile:
        for prog, module in PROFILED.items():
            profiled_launcher(os.path.join(home, "bin", prog), root, module, profile)
    body = b"Subject: bench\n\n" + (b"x" * 75 + b"\n") * 26
    writer = qmailsend.queue_writer(home)
    qmailsend.inject(home, ((body, qq.encode(b"bench@bench.example", [b"r%d@remote.example" % i]))
                            for i in range(n)), writer)
    cpu = _children_cpu()
    send = qmailsend.QmailSend(home, os.path.join(tmp, tag + ".log"))
    try:
        end = send.wait(lambda: send.counts["end"] >= n, 60 + n, "%d end msg lines" % n, interval=0.005)
        if send.counts["success"] != n:
            raise SystemExit("%s: %d successes for %d" % (tag, send.counts["success"], n))
        if os.environ.get("SENDRATE_SPLIT"):
            print("  CPU ms per delivery:", _split(send.proc.pid, n))
    finally:
        send.stop()
    cpu = _children_cpu() - cpu
    shutil.rmtree(home, ignore_errors=True)
    return n / (end - send.first["start"]), cpu * 1000 / n


def _split(pid, n):
    """Per process of qmail-send's tree: (own, waited-for children) CPU ms per delivery, and
    the children's minor page faults per delivery (pages a forked child copied)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for p in [pid] + qmailsend.children(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        own, kids = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        out.append("%s %.2f+%.2f (%d faults)" % (name, own * 1000 / tick / n, kids * 1000 / tick / n,
                                                  int(fields[8]) // n))
    return ", ".join(out)


def _children_cpu():
    """User + system seconds of every waited-for descendant so far (qmail-send's whole tree,
    once it has exited: qmail-todo, qmail-clean, the spawns and their children)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--conc", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile")
    ap.add_argument("roots", nargs="+")
    args = ap.parse_args(argv)
    servers = Servers()
    tmp = temp_tree("sendrate.")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)
    got = {r: [] for r in args.roots}
    cpus = {r: [] for r in args.roots}
    try:
        sink = servers.start([tool("smtp-sink")] + (["-u", "nobody"] if os.geteuid() == 0 else [])
                             + ["-m", "1024", "127.0.0.1:PORT", "1024"], os.environ, os.path.join(tmp, "sink.log"))
        for rnd in range(args.rounds):
            for i, root in enumerate(args.roots):
                rate, cpu = one(tmp, os.path.abspath(root), "r%d-%d" % (rnd, i), args.n, args.conc, sink,
                                args.profile)
                got[root].append(rate)
                cpus[root].append(cpu)
                print("round %d %s: %.1f/s, %.2f ms CPU per delivery" % (rnd, root, rate, cpu), flush=True)
    finally:
        servers.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    for root, rates in got.items():
        print("%s: median %.1f/s  (%s); CPU per delivery: median %.2f ms" % (
            root, statistics.median(rates), " ".join("%.1f" % r for r in rates), statistics.median(cpus[root])))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main(sys.argv[1:])
