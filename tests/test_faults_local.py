"""bin/qmail-local under strace fault injection, at every occurrence of every file system call
of its own work, for each kind of destination (docs/qmail-local.md, docs/maildir.md): a Maildir, a Maildir++ with
its maildirsize file, one with $MAILDIRQUOTA and no file yet (recounted), a Maildir++ folder
(counted in its parent's maildirsize), an mbox, a forward through the real qmail-queue, a
|program, a .qmail-ext-default lookup and a vdelivermail line.

The fault model is a machine whose disk fails: EIO from every call that touches a file (and
ENOSPC from those that can fill a disk: write, fsync, openat, link, rename, mkdir), EAGAIN from a
fork, EMFILE from pipe2, EPIPE from a write into a pipe (its reader gone). Pipes, sockets and
anonymous inodes never give EIO, and those calls are left out; so is
close() of a pipe (strace skips an injected close(), so the descriptor stays open, which no
kernel does). strace counts `when=N` per process, each process from its first call, so the
N-th call of qmail-local is injected and so is the N-th of the programs it starts (a |program's
sh, qmail-queue): those faults must end as temporary too.

After every run: exit 0 or 111 (never 100: no injected fault here is one qmail bounces for), no
Python traceback, a one-line reason; exit 0 = delivered exactly once, complete, with its
Return-Path and Delivered-To lines, the tmp/ file fsynced before its link into new/ and new/
fsynced after it (and before maildirsize hears of it); 111 = no new message (tmp/ debris only
where the unlink of it was the fault), an mbox cut back to its old size, nothing queued;
maildirsize parses and its sums equal what new/ holds. Each injected run must have hit its
fault (strace's "(INJECTED)" in the trace), and the good run must list the calls each
destination is expected to make, or the sweep proves nothing.
"""
import glob
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ROOT, program
from qmailpy.queue import layout

MSG = b"Subject: hi\nFrom: a@b\n\nbody line\nFrom me\n"
SENDER = "bob@ex.org"
RP = b"Return-Path: <bob@ex.org>\n"
OLD_MBOX = b"From x Thu Jan  1 00:00:00 1970\nold\n\n"
JOBS = 3                            # injected runs at once: most of a run is strace's waiting

IO = ("openat", "read", "pread64", "write", "pwrite64", "fsync", "fdatasync", "close", "newfstatat",
      "fstat", "statx", "lseek", "link", "linkat", "rename", "renameat", "renameat2", "unlink",
      "unlinkat", "mkdir", "flock", "getdents64", "ftruncate", "access", "faccessat2", "chdir")
FAULTS = dict({name: ("EIO",) for name in IO}, clone=("EAGAIN",), clone3=("EAGAIN",),
              fork=("EAGAIN",), vfork=("EAGAIN",), pipe2=("EMFILE",))
for _name in ("write", "fsync", "openat", "link", "rename", "mkdir"):
    FAULTS[_name] = ("EIO", "ENOSPC")
NOT_A_FILE = ("<pipe:", "<socket:", "<anon_inode:", "<UNIX:")
IMPORTS = (ROOT.rstrip("/") + "/", "/usr/lib/python", "/.venv/", "site-packages", "__pycache__", ".so")
# `PID name(args) = result`, or a call strace had to leave `<unfinished ...>` (its `resumed`
# line is not another call); no PID without -f
CALL = re.compile(r"^(?:(\d+) +)?(\w+)\((.*)(?:\) += (.*)| <unfinished \.\.\.>)$")


def strace_ok():
    assert shutil.which("strace"), "strace is needed for the fault sweeps"


def calls(trace):
    """[(pid, name, args, result text)] of a `strace -y` trace's calls (pid 0 without -f; the
    result None for a call left unfinished)."""
    out = []
    for line in trace.splitlines():
        m = CALL.match(line)
        if m:
            out.append((int(m.group(1) or 0), m.group(2), m.group(3), m.group(4)))
    return out


def faults(name, args):
    """The errnos the fault model injects into this call: () for none (not the program's own
    work, or a call on a pipe, socket or anonymous inode, where only a write's EPIPE is real)."""
    if name not in FAULTS or any(mark in args for mark in IMPORTS):
        return ()
    if name in IO and any(mark in args.split(",", 1)[0] for mark in NOT_A_FILE):
        return ("EPIPE",) if name == "write" and "<pipe:" in args.split(",", 1)[0] else ()
    return FAULTS[name]


def occurrences(trace, begins):
    """[(name, n, args, errnos)] for the calls of the first process from the one `begins(name, args)`
    picks on: n its number among that process's calls of that name (strace's `when`)."""
    listed = calls(trace)
    assert listed, "empty trace"
    main = listed[0][0]
    counts, started, out = {}, False, []
    for pid, name, args, _ in listed:
        if pid != main:
            continue
        counts[name] = counts.get(name, 0) + 1
        started = started or begins(name, args)
        if started and faults(name, args):
            out.append((name, counts[name], args, faults(name, args)))
    return out


def traced(argv, inject=None, trace=None, **kw):
    """subprocess.run of argv under strace -f -y, `inject` = (name, errno, n)."""
    cmd = ["strace", "-f", "-y", "-qq", "-o", trace or os.devnull]
    if inject:
        cmd += ["-e", "inject=%s:error=%s:when=%d" % inject]
    return subprocess.run(cmd + argv, capture_output=True, timeout=120, **kw)


def sweep(run_one, cases, what):
    """run_one(name, errno, n, args) -> list of problems, for every case and its errnos, a few at
    once; fails with every problem found, each naming the call, N, the errno and the result."""
    jobs = [(name, errno, n, args) for name, n, args, errnos in cases for errno in errnos]
    with ThreadPoolExecutor(JOBS) as pool:
        found = list(pool.map(lambda job: (job, run_one(*job)), jobs))
    bad = ["%s#%d %s (%s): %s" % (name, n, errno, args[:80], "; ".join(problems))
           for (name, errno, n, args), problems in found if problems]
    assert not bad, "%s: %d of %d injected runs broke an invariant:\n%s" % (what, len(bad), len(jobs), "\n".join(bad))
    return len(jobs)


# -- qmail-local ---------------------------------------------------------------------------

class Scene:
    """One home for one destination kind, made afresh for each run under `base`."""

    def __init__(self, base, kind):
        self.base, self.kind = base, kind
        self.home = os.path.join(base, "home")
        self.maildir = os.path.join(self.home, "Maildir")
        self.qmailhome = os.path.join(base, "qmail")
        self.dash, self.ext, self.local = "", "", "joe"
        if kind == "ext":
            self.dash, self.ext, self.local = "-", "list-sub", "joe-list-sub"
        elif kind == "vdelivermail":
            self.dash, self.ext, self.local = "-", "ann", "joe-ann"
        self.dt = b"Delivered-To: %s@example.com\n" % self.local.encode()
        # where the message goes: a Maildir++ folder counts against its parent's maildirsize
        self.target = os.path.join(self.maildir, ".Spam") if kind == "folder" else self.maildir

    def make(self):
        shutil.rmtree(self.base, ignore_errors=True)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir, sub))
        os.chmod(self.home, 0o755)
        os.makedirs(self.qmailhome)
        with open(os.path.join(self.base, "msg"), "wb") as f:
            f.write(MSG)
        env = {"PATH": "/usr/bin:/bin", "QMAILHOME": self.qmailhome, "QMAILPY_SINGLEUSER": "1"}
        dotqmail = {"mbox": "./Mailbox\n", "program": "|cat > prog.out\n", "forward": "&fwd@example.net\n",
                    "folder": "./Maildir/.Spam/\n"}.get(self.kind)
        if dotqmail:
            self.write(".qmail", dotqmail.encode())
        if self.kind in ("maildirsize", "folder"):
            self.write("Maildir/maildirsize", b"100000S,100C\n0 0\n")
        if self.kind == "folder":
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.target, sub))
            self.write("Maildir/.Spam/maildirfolder", b"")
        elif self.kind == "maildirquota":            # no file: the first delivery counts and writes it
            env["MAILDIRQUOTA"] = "100000S"
        elif self.kind == "mbox":
            self.write("Mailbox", OLD_MBOX)
        elif self.kind == "forward":
            layout.create_queue(self.qmailhome)
            env["QMAILQUEUE"] = program("qmail-queue")
        elif self.kind == "ext":
            self.write(".qmail-list-default", b"./Maildir/\n")
        elif self.kind == "vdelivermail":
            self.write(".qmail-default", b"| /home/vpopmail/bin/vdelivermail '' %s\n" % self.home.encode())
        return env

    def write(self, name, data):
        with open(os.path.join(self.home, name), "wb") as f:
            f.write(data)

    def run(self, inject=None, trace=None):
        env = self.make()
        argv = [program("qmail-local"), "joe", self.home, self.local, self.dash, self.ext, "example.com",
                SENDER, "./Maildir/"]
        with open(os.path.join(self.base, "msg"), "rb") as m:
            return traced(argv, inject, trace, stdin=m, env=env, cwd=self.qmailhome)

    def begins(self, name, args):
        return name == "newfstatat" and '"%s"' % self.home in args      # check_home: the work begins

    # -- the invariants

    def check(self, p, fault, trace):
        problems = []
        said = (p.stdout + p.stderr).decode("utf-8", "replace")
        if p.returncode not in (0, 111):
            problems.append("exit %d" % p.returncode)
        if "Traceback" in said:
            problems.append("a traceback")
        if p.returncode == 111 and not said.strip():
            problems.append("no reason given")
        if "qmail-local: unexpected" in said or "internal bug" in said:
            problems.append("a bug's line, not qmail's reason")
        if self.kind in ("mbox",):
            problems += self.check_mbox(p.returncode)
        elif self.kind == "forward":
            problems += self.check_queue(p.returncode)
        elif self.kind == "program":
            if p.returncode == 0 and open(os.path.join(self.home, "prog.out"), "rb").read() != MSG:
                problems.append("the program got less than the message")
        if self.kind not in ("mbox", "forward", "program"):
            problems += self.check_maildir(p.returncode, fault, trace)
        if problems:
            problems.append("exit %d, said %r" % (p.returncode, said[-300:]))
        return problems

    def check_maildir(self, code, fault, trace):
        problems = []
        new = os.listdir(os.path.join(self.target, "new"))
        tmp = os.listdir(os.path.join(self.target, "tmp")) + os.listdir(os.path.join(self.maildir, "tmp"))
        if code == 0:
            if len(new) != 1:
                problems.append("exit 0 with new/ = %r" % new)
            elif open(os.path.join(self.target, "new", new[0]), "rb").read() != RP + self.dt + MSG:
                problems.append("new/%s is not the whole message" % new[0])
            else:
                problems += durable_order(trace, new[0])
        elif new:
            problems.append("a temporary failure left new/%s visible" % new)
        if tmp and fault[0] != "unlink":
            problems.append("tmp/ debris %r" % tmp)
        if os.path.lexists(os.path.join(self.maildir, "maildirsize.lock")):
            problems.append("maildirsize.lock left behind: deliveries wait for it, then defer, for 2 minutes")
        problems += maildirsize_sums(self.maildir, self.target, new)
        return problems

    def check_mbox(self, code):
        data = open(os.path.join(self.home, "Mailbox"), "rb").read()
        if code != 0:
            return [] if data == OLD_MBOX else ["the mbox was not cut back: %r" % data[len(OLD_MBOX):][:80]]
        appended = data[len(OLD_MBOX):]
        body = RP + self.dt + MSG.replace(b"\nFrom me", b"\n>From me") + b"\n"
        if not (data.startswith(OLD_MBOX) and appended.startswith(b"From bob@ex.org ") and appended.endswith(body)
                and appended.count(b"\n") == body.count(b"\n") + 1):
            return ["the mbox has not the message once: %r" % appended[:200]]
        return []

    def check_queue(self, code):
        mess = [open(f, "rb").read() for f in glob.glob(os.path.join(self.qmailhome, "queue/mess/*/*"))]
        todo = [f for f in glob.glob(os.path.join(self.qmailhome, "queue/todo/**"), recursive=True) if os.path.isfile(f)]
        if code == 0:
            if len(mess) != 1 or not mess[0].endswith(self.dt + MSG) or len(todo) != 1:
                return ["exit 0 but queued %d messages, %d todo" % (len(mess), len(todo))]
        elif mess or todo:
            return ["a temporary failure queued the forward anyway (%d, %d)" % (len(mess), len(todo))]
        return []


def durable_order(trace, name):
    """In the trace: fsync of tmp/<name> (its fd), then its link (or rename) into new/, then fsync
    of new/, then (when there is one) the write of maildirsize's line."""
    lines = [(n, a, r or "") for _, n, a, r in calls(trace)]

    def first(pred, after=-1):
        return next((i for i, (n, a, r) in enumerate(lines) if i > after and pred(n, a, r)), None)
    synced = first(lambda n, a, r: n == "fsync" and "/tmp/%s>" % name in a and r.startswith("0"))
    linked = first(lambda n, a, r: n in ("link", "rename") and "/new/%s" % name in a and r.startswith("0"))
    if synced is None or linked is None or synced > linked:
        return ["tmp/%s not fsynced before its link into new/ (%s, %s)" % (name, synced, linked)]
    dir_synced = first(lambda n, a, r: n == "fsync" and a.rstrip(">").endswith("/new") and r.startswith("0"), linked)
    if dir_synced is None:
        return ["new/ not fsynced after the link"]
    counted = first(lambda n, a, r: n == "write" and "/maildirsize>" in a)
    if counted is not None and counted < dir_synced:
        return ["maildirsize counted the message before new/ was fsynced"]
    return []


def maildirsize_sums(maildir, target, new):
    """maildirsize (of the Maildir++ root) parses and sums what target/new/ holds."""
    path = os.path.join(maildir, "maildirsize")
    if not os.path.exists(path):
        return []
    data = open(path, "rb").read()
    lines = data.split(b"\n")
    try:
        assert lines[-1] == b"" and lines[0]
        pairs = [tuple(int(x) for x in line.split(b" ")) for line in lines[1:-1]]
        assert all(len(p) == 2 for p in pairs)
    except (AssertionError, ValueError):
        return ["maildirsize does not parse: %r" % data]
    sums = (sum(p[0] for p in pairs), sum(p[1] for p in pairs))
    real = (sum(os.path.getsize(os.path.join(target, "new", n)) for n in new), len(new))
    return [] if sums == real else ["maildirsize sums %r, new/ holds %r: %r" % (sums, real, data)]


# what each destination's good run must do, or the sweep would inject into nothing that matters
EXPECTED = {
    "maildir": {"openat", "write", "fsync", "link", "unlink", "read", "lseek", "newfstatat"},
    "maildirsize": {"openat", "write", "fsync", "link", "unlink", "read"},
    "maildirquota": {"openat", "write", "fsync", "link", "unlink", "rename", "getdents64"},
    "mbox": {"openat", "write", "fsync", "flock", "lseek", "read"},
    "forward": {"openat", "read", "lseek", "write", "clone", "pipe2"},
    "program": {"openat", "read", "lseek", "clone", "pipe2"},
    "ext": {"openat", "write", "fsync", "link", "unlink"},
    "folder": {"openat", "write", "fsync", "link", "unlink", "newfstatat"},
    "vdelivermail": {"openat", "write", "fsync", "link", "unlink"},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_qmail_local_under_a_fault_at_every_call(tmp_path, kind):
    strace_ok()
    good = Scene(str(tmp_path / "good"), kind)
    good.run()                                  # bytecode caches written: the counts repeat
    trace = str(tmp_path / "good.trace")
    p = good.run(trace=trace)
    text = open(trace).read()
    assert good.check(p, ("", "", 0), text) == [] and p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    cases = occurrences(text, good.begins)
    missing = EXPECTED[kind] - {name for name, _, _, _ in cases}
    assert not missing, "the good run made none of %s: %s" % (sorted(missing), text[-3000:])

    def run_one(name, errno, n, args):
        base = str(tmp_path / ("%s-%s-%d" % (name, errno, n)))
        scene = Scene(base, kind)
        trace = base + ".trace"
        p = scene.run((name, errno, n), trace)
        text = open(trace).read()
        problems = scene.check(p, (name, errno, n), text)
        if "(INJECTED)" not in text:
            problems.append("the fault was never injected")
        shutil.rmtree(base, ignore_errors=True)
        os.unlink(trace)
        return problems
    assert sweep(run_one, cases, "qmail-local, %s" % kind) >= 15
