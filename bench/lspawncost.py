"""What a forked local delivery costs, qmail-lspawn's own share apart, A/B between code trees.

usage: .venv/bin/python bench/lspawncost.py [--n N] [--rounds R] [--virtual] ROOT [ROOT...]   (as root)

Not part of `make bench` (its end-to-end rows run the whole path): a narrow
driver for tuning qmail-lspawn and qmail-local. Each ROOT is a qmailpy source
tree with its bin/ launchers (this one, or a `git archive` of another commit
with `tools/mklaunchers.py` and `compileall` run in it). Per round and per
ROOT, the trees taking turns: a fresh home with one queued 2 KB message,
that tree's bin/qmail-lspawn driven as qmail-send drives it (spawnwire
commands on fd 0, reports on fd 1), 20 deliveries to warm up, then N at
concurrency 10, every one counted in Maildir/new. The mailbox is a users/cdb
entry owned by nobody, or with --virtual a virtual domain's users-database
mailbox made by that tree's qmail-users (adddomain, adduser), as `make
bench`'s end-to-end row delivers. Printed per delivery: the rate, the CPU and
page faults of qmail-lspawn with its children, and qmail-lspawn's own
(/proc/PID/stat, read just before its input closes).
"""
import argparse
import os
import resource
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import spawnmodes  # noqa: E402

DOMAIN = "bench.example"
NOBODY = spawnmodes.NOBODY
CONCURRENCY = 10


def mailbox(tree, top, virtual):
    """(home, messid, recipient, Maildir/new, environment) for one round."""
    import subprocess
    controls = {"me": "mx." + DOMAIN, "locals": "mx." + DOMAIN}
    if virtual:
        controls.update(virtualdomains="%s:%s" % (DOMAIN, DOMAIN), rcpthosts=DOMAIN)
    home, messid = spawnmodes.make_home(top, controls)
    env = {k: v for k, v in os.environ.items() if k not in ("QMAILLOCAL", "QMAILPY_SINGLEUSER")}
    env["QMAILHOME"] = home
    if virtual:
        vdir = os.path.join(home, "vpopmail")         # qmail-users gives new mailboxes its owner
        os.makedirs(vdir, 0o755)
        os.chown(vdir, NOBODY, NOBODY)
        for argv in (["adddomain", DOMAIN, "--no-rcpthosts"], ["adduser", "rcpt@" + DOMAIN, "-p", "bench"]):
            subprocess.run([os.path.join(tree, "bin", "qmail-users")] + argv, env=env, check=True,
                           capture_output=True, timeout=60)
        new = os.path.join(vdir, "domains", DOMAIN, "rcpt", "Maildir", "new")
        return home, messid, ("%s-rcpt@%s" % (DOMAIN, DOMAIN)).encode(), new, env
    new, env["QMAILPY_PASSWD"] = spawnmodes.cdb_mailbox(top, home)
    return home, messid, b"joe@localhost", new, env


def drive(tree, env, messid, recipient, n):
    """n deliveries at CONCURRENCY: (per second, qmail-lspawn's own (faults, CPU s)); all K."""
    own = []
    rate, bad = spawnmodes.drive("qmail-lspawn", ["./Maildir/"], env, messid, recipient, n, CONCURRENCY,
                                 bindir=os.path.join(tree, "bin"), own=own)
    if bad:
        raise SystemExit("qmail-lspawn: %d reports not K: %r" % (len(bad), bad[0]))
    return rate, own


def one(tree, n, virtual):
    top = spawnmodes.temp_tree("qmailpy-lspawncost.")
    os.chmod(top, 0o755)
    try:
        home, messid, recipient, new, env = mailbox(tree, top, virtual)
        drive(tree, env, messid, recipient, 20)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        rate, (faults, cpu) = drive(tree, env, messid, recipient, n)
        kids2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if len(os.listdir(new)) != n + 20:
            raise SystemExit("%s: %d of %d messages in Maildir/new" % (tree, len(os.listdir(new)), n + 20))
        total = kids2.ru_utime + kids2.ru_stime - kids.ru_utime - kids.ru_stime
        return (rate, total / n * 1e3, (kids2.ru_minflt - kids.ru_minflt) / n, cpu / n * 1e3, faults / n)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--virtual", action="store_true", help="a virtual domain's users-database mailbox")
    ap.add_argument("roots", nargs="+")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: qmail-lspawn delivers as the mailbox owner")
    for r in range(args.rounds):
        for tree in args.roots:
            got = one(os.path.abspath(tree), args.n, args.virtual)
            print("round %d %s: %.0f/s, CPU %.2f ms and %.0f faults per delivery; qmail-lspawn itself "
                  "%.2f ms, %.0f faults" % ((r, tree) + got), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
