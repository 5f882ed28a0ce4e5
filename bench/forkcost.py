"""What the fork of each delivery costs: one qmail-remote delivery in a forked child, and in process.

usage: .venv/bin/python bench/forkcost.py [N] [ROUNDS]    (N deliveries per mode and round, default 300; 3 rounds)

Not part of `make bench`: a narrow driver for issue 15's open question,
whether qmail-rspawn may run deliveries in reused processes. As qmail-rspawn
does (qmailpy.spawn.fork), this process preloads qmail-remote's modules, then
delivers one queued 2 KB message into Postfix's smtp-sink on a free
127.0.0.1 port N times per mode, the modes taking turns:

- fork: a child per delivery (fork.start), as qmail-rspawn runs it today;
- in process: qmail-remote's main() called here, with the message on fd 0
  and the report pipe on fd 1, as a reused worker would run it (no fork,
  nothing copied on write, caches warm).

It prints wall time, this process's CPU and its children's CPU per delivery
and the children's page faults. The difference between the two modes is
what reusing delivery processes could save per delivery; the rest of
qmail-send's path (qmail-send, qmail-todo, qmail-clean) it does not touch.
"""
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import spawnmodes  # noqa: E402


class Delivery:
    """One message, one route, delivered either way; each run checks the report says K."""

    def __init__(self, home, mess):
        from qmailpy.spawn import fork
        self.home, self.mess, self.fork = home, mess, fork
        self.args = [os.fsencode(fork.beside_me("qmail-remote")), b"remote.example", b"a@spawn.example",
                     b"r@remote.example"]
        self.saved = os.dup(0), os.dup(1)

    def forked(self):
        fd = os.open(self.mess, os.O_RDONLY)
        r, w = os.pipe()
        child = self.fork.start("qmailpy.remote.main:main", self.args, fd, w, self.home, os.environ, (111, 100))
        os.close(fd)
        os.close(w)
        self.check(r)
        child.wait()

    def in_process(self):
        import qmailpy.remote.main as remote
        fd = os.open(self.mess, os.O_RDONLY)
        r, w = os.pipe()
        os.dup2(fd, 0)
        os.dup2(w, 1)
        os.close(fd)
        os.close(w)
        argv, sys.argv = sys.argv, [os.fsdecode(a) for a in self.args]
        try:
            remote.main()
        except SystemExit:
            pass
        finally:
            sys.stdout.flush()
            sys.argv = argv
            os.dup2(self.saved[0], 0)
            os.dup2(self.saved[1], 1)
        self.check(r)

    @staticmethod
    def check(r):
        with os.fdopen(r, "rb") as f:
            report = f.read()
        if b"K" not in report:
            raise SystemExit("delivery failed: %r" % report)


def measure(fn, n):
    """(wall ms, own CPU ms, children's CPU ms, children's faults) per delivery."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    wall = time.perf_counter() - t
    me2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

    def cpu(a, b):
        return (b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime) / n * 1e3
    return wall / n * 1e3, cpu(me, me2), cpu(kids, kids2), (kids2.ru_minflt - kids.ru_minflt) / n


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with spawnmodes.preloaded_remote("qmailpy-forkcost.") as (home, mess):
        d = Delivery(home, mess)
        modes = (("fork", d.forked), ("in process", d.in_process))
        for _, fn in modes:              # warm both paths (and the sink) before measuring
            for _ in range(5):
                fn()
        got = {name: [] for name, _ in modes}
        for r in range(rounds):
            for name, fn in modes:
                got[name].append(measure(fn, n))
                print("round %d %-10s wall %.2f ms, CPU %.2f ms here + %.2f ms in children "
                      "(%.0f faults) per delivery" % ((r, name) + got[name][-1]), flush=True)
        import statistics            # not before the forks: it imports random, whose at-fork handler would run in each
        for name, samples in got.items():
            wall, own, kids, faults = (statistics.median(s[i] for s in samples) for i in range(4))
            print("%-10s median: wall %.2f ms, CPU %.2f ms per delivery (%.0f faults in children)"
                  % (name, wall, own + kids, faults))


if __name__ == "__main__":
    main()
