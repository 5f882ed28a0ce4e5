"""The admin tools that write files a running mail system reads, under strace fault injection
at every occurrence of their file calls on the qmail home.

Each sweep runs the real program (bin/) once under `strace -f -y` on a scratch home, takes
every call it makes there (openat, write, pwrite64, fsync, fdatasync, rename, link, unlink,
mkdir, fchmod, fchown, close; read where the tool reads a source), then runs it again once
per occurrence with that call failing (EIO; ENOSPC too where a full disk can say it), each
in a home of its own, and checks what a reader would find afterwards:

- a non-zero exit leaves the old file (cdb, control, key file, database) whole, or, once the
  run has passed its rename, the new one whole; exit 0 leaves the new one;
- the exit is 111 (an I/O fault on our own disk is always temporary) with one qmail-style
  line that names the file, never `internal bug` or a traceback;
- no temp file is left behind (fileio.atomic_write removes its own);
- qmail-users: a failed transaction leaves the database and the vpopmail tree as before (no
  half-added user, no mailbox directory without its row), or the change is committed and
  the message says what is left to do.

An injected run must have hit the call the good run made at that place (strace's
`(INJECTED)` marker, compared by call and file): a sweep that injects nothing fails.
"""
import os
import re
import shutil
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor

from conftest import program
from test_send_support import write_users_cdb

WRITE_CALLS = ("openat", "write", "pwrite64", "fsync", "fdatasync", "rename", "link", "unlink",
               "mkdir", "fchmod", "fchown", "close", "flock")
FULL = {"openat", "write", "pwrite64", "fsync", "fdatasync", "rename", "link", "mkdir"}
LINE = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+|\?)(.*)$")
WORKERS = 4


def strace():
    path = shutil.which("strace")
    assert path, "strace is needed for the fault sweeps"
    return path


def tool_env(root, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMAIL", "MAIL", "USER", "LOGNAME"))}
    env.update(QMAILHOME=root, QMAILPY_SINGLEUSER="1", **extra)
    return env


def where(text, root, neutral=True):
    """The first file of `root` a call line names (a path argument or an fd's -y annotation),
    relative to `root`, its numbers (pids, fds) made neutral; None when it names none."""
    for found in re.finditer(r'<([^<>]*)>|"((?:[^"\\]|\\.)*)"', text):
        name = found.group(1) or found.group(2) or ""
        if name.startswith(root + "/") or name == root:
            name = name[len(root) + 1:] or "."
            return re.sub(r"\d+", "N", name) if neutral else name
    return None


def signature(args, root):
    """What an injected call is recognised by: the file it names, else its first argument
    (an open of /proc/self/fd/N: the file shows only in the good run's result); a word with a
    digit in it (a pid, a time, random hex in a temp name) counts as any other."""
    return re.sub(r"[0-9a-f]*[0-9][0-9a-f]*", "N", where(args, root, neutral=False) or args.split(",")[0])


class Event:
    __slots__ = ("pid", "call", "n", "args", "result", "index", "opened", "file")

    def __init__(self, pid, call, n, args, result, index, opened, file):
        self.pid, self.call, self.n, self.args, self.result = pid, call, n, args, result
        self.index, self.opened, self.file = index, opened, file

    def __repr__(self):
        return "%s #%d: %s(%s) = %s" % (self.call, self.n, self.call, self.args[:160], self.result[:80])


def parse(path, root):
    """[Event] of the calls on `root`'s files in a trace (a write's by its fd alone: the data
    may name the home too), each counted per process and call as strace's when= counts;
    `opened`: for a close, the openat of its fd; `file`: the file, relative to `root`."""
    counts, fds, found = {}, {}, []
    with open(path, errors="replace") as f:
        for index, line in enumerate(f):
            m = LINE.match(line)
            if not m:
                continue
            pid, call, args, ret, rest = m.groups()
            counts[(pid, call)] = counts.get((pid, call), 0) + 1
            opened = None
            if call == "openat" and ret.isdigit():
                fds[(pid, ret)] = args
            elif call == "close":
                opened = fds.get((pid, re.match(r"\d+", args).group(0)))
            named = args.split(",")[0] if call in ("write", "pwrite64", "read") else args + ret + rest
            file = where(named, root, neutral=False)
            if file is not None:
                found.append(Event(pid, call, counts[(pid, call)], args, ret + rest, index, opened, file))
    return found


class Sweep:
    """One program swept: `setup(root)` makes a home (its old state), `check(result, root,
    event, after_commit)` says what is wrong after one injected run (None: nothing)."""

    def __init__(self, tmp, argv, setup, check, calls=WRITE_CALLS, env=None, want=(), skip=None,
                 commit=("rename",)):
        self.tmp, self.argv, self.setup, self.check = str(tmp), argv, setup, check
        self.calls, self.env, self.want, self.skip, self.commit = calls, env or {}, want, skip, commit
        self.good_root = None

    def home(self, name):
        root = os.path.join(self.tmp, name)
        self.setup(root)
        return root

    def run(self, root, inject=None, out=None):
        cmd = [strace(), "-f", "-qq", "-y", "-s", "64", "-o", out or os.devnull,
               "-e", "trace=" + (inject[0] if inject else ",".join(self.calls))]
        if inject:
            cmd += ["-e", "inject=%s:error=%s:when=%d" % inject]
        argv = [a.replace("{root}", root) for a in self.argv]
        return subprocess.run(cmd + argv, capture_output=True, timeout=120,
                              env=tool_env(root, **self.env), input=b"")

    def events(self):
        root = self.home("warm")
        subprocess.run([a.replace("{root}", root) for a in self.argv], env=tool_env(root, **self.env),
                       capture_output=True, timeout=120, input=b"")    # bytecode written: counts stay put
        shutil.rmtree(root)
        root = self.good_root = self.home("good")
        out = os.path.join(self.tmp, "good.strace")
        r = self.run(root, out=out)
        assert r.returncode == 0, (self.argv, r.stderr)
        events = parse(out, root)
        calls = {e.call for e in events}
        assert set(self.want) <= calls, "the good run no longer makes %s: %s" % (set(self.want) - calls, events)
        return [e for e in events if e.call in self.calls and not (self.skip and self.skip(e))]

    def one(self, numbered):
        number, (event, errno, after_commit) = numbered
        for attempt in range(3):    # a run whose timing made its calls in another order (a lock
            root = self.home("run%03d.%d" % (number, attempt))  # taken at another moment) is made again
            out = root + ".strace"
            r = self.run(root, (event.call, errno, event.n), out)
            with open(out, errors="replace") as f:
                hit = [line for line in f if "(INJECTED)" in line]
            if not hit:
                return "nothing injected"
            m = LINE.match(hit[0])
            if m and m.group(2) == event.call and signature(m.group(3), root) == signature(event.args, self.good_root):
                break
            shutil.rmtree(root, ignore_errors=True)
        else:
            return "injected elsewhere: %s" % hit[0].strip()
        why = self.check(r, root, event, after_commit)
        if why:
            return "%s\n    exit %d, stderr %r" % (why, r.returncode, r.stderr.decode("utf-8", "replace")[-600:])
        shutil.rmtree(root, ignore_errors=True)
        return None

    def __call__(self):
        events = self.events()
        commit_at = min([e.index for e in events if e.call in self.commit] or [1 << 60])
        cases = [(e, errno, e.index > commit_at) for e in events
                 for errno in (("EIO", "ENOSPC") if e.call in FULL else ("EIO",))]
        assert cases
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(self.one, enumerate(cases)))
        failures = ["%s %s (%s): %s" % (event, errno, "after the commit" if late else "before it", why)
                    for (event, errno, late), why in zip(cases, results) if why]
        assert not failures, "%d of %d injected runs:\n%s" % (len(failures), len(cases), "\n".join(failures))
        print("%s: %d injected runs" % (os.path.basename(self.argv[0]), len(cases)))
        return cases


def read_only(event):
    """An open for reading only, or the close of one: a fault there can lose nothing written
    (what the reads do with it is swept on `read`); the qmail-users sweeps leave them out."""
    opened = event.args if event.call == "openat" else event.opened if event.call == "close" else None
    if opened is None:
        return event.call == "close"
    return not re.search(r"O_CREAT|O_WRONLY|O_RDWR", opened)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def debris(*dirs):
    return [os.path.join(d, n) for d in dirs if os.path.isdir(d) for n in os.listdir(d) if ".tmp" in n]


def cdb_of(pairs):
    from qmailpy.fileio import cdb_bytes
    return cdb_bytes(pairs)


def trouble(r, pattern):
    """Why the failed run's exit or message is wrong, or None."""
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != 111:
        return "exit %d, not 111" % r.returncode
    if not re.fullmatch(pattern, err):
        return "message %r is not %r" % (err, pattern)
    return None


# -- the cdb builders

ASSIGN_OLD, ASSIGN_NEW = b"=old:old:1000:1000:/home/old:::\n.\n", b"=new:new:1001:1001:/home/new:::\n.\n"


def test_qmail_newu_under_faults(tmp_path):
    from qmailpy.cli.newu import parse as assign_pairs
    old, new = cdb_of(assign_pairs(ASSIGN_OLD)), cdb_of(assign_pairs(ASSIGN_NEW))

    def setup(root):
        os.makedirs(os.path.join(root, "users"))
        with open(os.path.join(root, "users", "cdb"), "wb") as f:
            f.write(old)
        with open(os.path.join(root, "users", "assign"), "wb") as f:
            f.write(ASSIGN_NEW)

    def check(r, root, event, late):
        now, users = read(os.path.join(root, "users", "cdb")), os.path.join(root, "users")
        if debris(users):
            return "left %s" % debris(users)
        if r.returncode == 0:
            return None if now == new else "exit 0, users/cdb not the new one"
        if now != old and not (late and now == new):
            return "users/cdb neither the old nor the new one"
        return trouble(r, r"qmail-newu: fatal: unable to (read users/assign|write users/cdb): [a-z /]+\n")
    Sweep(tmp_path, [program("qmail-newu")], setup, check, calls=WRITE_CALLS + ("read",),
          want=("openat", "read", "write", "fchmod", "fsync", "rename", "close"))()


def test_qmail_newmrh_and_newfilters_under_faults(tmp_path):
    olds = {"morercpthosts": b"old.example\n", "clamavclients": b"a@old.example\n", "spamdclients": b"b@old.example\n"}
    news = {n: t.replace(b"old", b"new") for n, t in olds.items()}
    cdbs = {n: (cdb_of([(t.strip(), b"")]), cdb_of([(news[n].strip(), b"")])) for n, t in olds.items()}

    def setup(root):
        os.makedirs(os.path.join(root, "control"))
        for name in olds:
            with open(os.path.join(root, "control", name + ".cdb"), "wb") as f:
                f.write(cdbs[name][0])
            with open(os.path.join(root, "control", name), "wb") as f:
                f.write(news[name])

    def checker(prog, names):
        def check(r, root, event, late):
            control = os.path.join(root, "control")
            if debris(control):
                return "left %s" % debris(control)
            now = {n: read(os.path.join(control, n + ".cdb")) for n in names}
            if r.returncode == 0:
                bad = [n for n in names if now[n] != cdbs[n][1]]
                return "exit 0, not new: %s" % bad if bad else None
            # each cdb is replaced whole on its own: the old one or the new one
            bad = [n for n in names if now[n] not in cdbs[n]]
            if bad:
                return "half-written: %s" % bad
            return trouble(r, r"%s: fatal: unable to (read|write) control/(%s)(\.cdb)?: [a-z /]+\n"
                           % (prog, "|".join(names)))
        return check
    want = ("openat", "read", "write", "fsync", "rename")
    Sweep(tmp_path / "mrh", [program("qmail-newmrh")], setup, checker("qmail-newmrh", ["morercpthosts"]),
          calls=WRITE_CALLS + ("read",), want=want)()
    Sweep(tmp_path / "filters", [program("qmail-newfilters")], setup,
          checker("qmail-newfilters", ["clamavclients", "spamdclients"]), calls=WRITE_CALLS + ("read",), want=want)()


# -- control files and keys

def test_qmail_config_force_under_faults(tmp_path):
    """qmail-config --force replaces me, defaultdomain, plusdomain and adds to locals and
    rcpthosts, each file through its own atomic replacement under control/edit.lock."""
    names = ("me", "defaultdomain", "plusdomain", "locals", "rcpthosts")
    new = {"me": b"a.new.example\n", "defaultdomain": b"new.example\n", "plusdomain": b"new.example\n",
           "locals": b"old.example\na.new.example\n", "rcpthosts": b"old.example\na.new.example\n"}

    def setup(root):
        os.makedirs(os.path.join(root, "control"))
        for name in names:
            with open(os.path.join(root, "control", name), "wb") as f:
                f.write(b"old.example\n")

    def check(r, root, event, late):
        control = os.path.join(root, "control")
        if debris(control):
            return "left %s" % debris(control)
        now = {n: read(os.path.join(control, n)) for n in names}
        if r.returncode == 0:
            return None if now == new else "exit 0, files %r" % now
        bad = [n for n in names if now[n] not in (b"old.example\n", new[n])]
        if bad:
            return "half-written: %s" % bad
        return trouble(r, r"qmail-config: %s/control(/[a-z.]+)?: [A-Za-z /]+\n" % re.escape(root))
    Sweep(tmp_path, [program("qmail-config"), "--force", "a.new.example"], setup, check, skip=read_only,
          calls=WRITE_CALLS + ("read",), want=("openat", "write", "fchmod", "fchown", "fsync", "rename", "flock"))()


def test_setsrssecret_under_faults(tmp_path):
    """The new key goes on top of revers_srs_secrets, then srs_secrets, then the ages file, each
    replaced whole: whatever fails, the old key stays in both key files (mail signed with it
    still comes back), and the message names the file."""
    def setup(root):
        os.makedirs(os.path.join(root, "control", "srs"))
        for name, text in (("revers_srs_secrets", b"oldkey\n"), ("srs_secrets", b"oldkey\n"),
                           ("srs_secrets_age", b"x 1000\n")):
            with open(os.path.join(root, "control", "srs", name), "wb") as f:
                f.write(text)

    def check(r, root, event, late):
        srs = os.path.join(root, "control", "srs")
        if debris(srs):
            return "left %s" % debris(srs)
        rev, fwd = read(os.path.join(srs, "revers_srs_secrets")), read(os.path.join(srs, "srs_secrets"))
        if not (rev.endswith(b"\noldkey\n") or rev == b"oldkey\n") or not fwd.endswith(b"oldkey\n"):
            return "the old key is gone: %r %r" % (rev, fwd)
        if r.returncode == 0:
            ages = read(os.path.join(srs, "srs_secrets_age")).splitlines()
            return None if rev == fwd != b"oldkey\n" and len(ages) == 2 else "exit 0, files %r %r" % (rev, fwd)
        if fwd != b"oldkey\n" and fwd != rev:
            return "srs_secrets signs with a key revers_srs_secrets lacks"
        return trouble(r, r"setsrssecret: fatal: (%s/control/srs(/[a-z_.]+)?|unable to read controls: "
                          r"control/srs/srs_max_age: unable to read): [A-Za-z /]+\n" % re.escape(root))
    Sweep(tmp_path, [program("setsrssecret")], setup, check, calls=WRITE_CALLS + ("read",), skip=read_only,
          want=("openat", "read", "write", "fchmod", "fsync", "rename", "flock"))()


# -- Maildirs and qmail-remote's table

def test_maildirmake_quota_under_faults(tmp_path):
    def setup(root):
        os.makedirs(root)
        subprocess.run([program("maildirmake"), os.path.join(root, "M")], check=True)
        with open(os.path.join(root, "M", "new", "1.x,S=100"), "wb") as f:
            f.write(b"x" * 100)
        with open(os.path.join(root, "M", "maildirsize"), "wb") as f:
            f.write(b"5000S\n0 0\n")

    def check(r, root, event, late):
        maildir = os.path.join(root, "M")
        now = read(os.path.join(maildir, "maildirsize"))
        left = [n for n in os.listdir(os.path.join(maildir, "tmp"))]
        if left and not (event.call == "unlink" and event.file.endswith(".LoCk.vm")):  # the one it could not unlink
            return "left tmp/%s" % left
        if r.returncode == 0:
            return None if now == b"10000S\n100 1\n" else "exit 0, maildirsize %r" % now
        if now not in (b"5000S\n0 0\n", b"10000S\n100 1\n"):
            return "maildirsize %r" % now
        return trouble(r, r"maildirmake: fatal: unable to write %s/M/maildirsize: [a-z /]+\n" % re.escape(root))
    Sweep(tmp_path, [program("maildirmake"), "-q", "10000S", "{root}/M"], setup, check,
          want=("openat", "write", "fsync", "rename", "link"))()


def test_qmail_tcpok_under_faults(tmp_path):
    def setup(root):
        os.makedirs(os.path.join(root, "queue", "lock"))
        with open(os.path.join(root, "queue", "lock", "tcpto"), "wb") as f:
            f.write(b"\1" * 1024)

    def check(r, root, event, late):
        now = read(os.path.join(root, "queue", "lock", "tcpto"))
        if r.returncode == 0:
            return None if now == bytes(1024) else "exit 0, not cleared"
        return trouble(r, r"qmail-tcpok: fatal: unable to clear %s/queue/lock/tcpto: [a-z /]+\n" % re.escape(root))
    Sweep(tmp_path, [program("qmail-tcpok")], setup, check, calls=WRITE_CALLS + ("pwrite64",),
          want=("openat", "pwrite64", "close"))()


# -- qmail-users over the SQLite database, the vpopmail tree and the control files

def users_state(root):
    """(rows, control files, tree): the database as a reader finds it (SQLite rolls a hot
    journal back on open), rcpthosts and virtualdomains, and the vpopmail tree (trees a
    deletion left as .deleted.* are its documented leftovers, removed by the next command)."""
    rows = []
    db = os.path.join(root, "users", "vpopmail.sqlite")
    if os.path.exists(db):
        conn = sqlite3.connect(db)
        try:
            rows = [re.sub(r"\$[0-9]\$[^']*", "HASH", line).replace(root, "ROOT")
                    for line in conn.iterdump() if line.startswith("INSERT")]
        finally:
            conn.close()
    ctl = {n: read(os.path.join(root, "control", n)) for n in ("rcpthosts", "virtualdomains")}
    top = os.path.join(root, "vpopmail")
    tree = sorted(os.path.relpath(os.path.join(d, n), top) for d, ds, fs in os.walk(top)
                  for n in ds + fs if n != "maildirsize.lock" and ".LoCk." not in n)    # the lock's, as any tmp/ file
    return rows, ctl, [t for t in tree if ".deleted." not in t and t != "domains"]


def moved(template, root):
    """The users database of a copied home: its mailbox paths (pw_dir) in the copy."""
    db = os.path.join(root, "users", "vpopmail.sqlite")
    if not os.path.exists(db):
        return
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE vpopmail SET pw_dir = replace(pw_dir, ?, ?)", (template, root))
        conn.commit()
    finally:
        conn.close()


def users_sweep(tmp_path, args, before_args, want, calls=WRITE_CALLS):
    template = str(tmp_path / "template")
    os.makedirs(os.path.join(template, "control"))
    for name, text in (("me", "me.example\n"), ("rcpthosts", "me.example\n")):
        with open(os.path.join(template, "control", name), "w") as f:
            f.write(text)
    for step in before_args:
        r = subprocess.run([program("qmail-users"), *step], env=tool_env(template), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    before = users_state(template)
    done = str(tmp_path / "done")
    shutil.copytree(template, done, symlinks=True)
    moved(template, done)
    r = subprocess.run([program("qmail-users"), *args], env=tool_env(done), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    after = users_state(done)
    assert after != before

    def setup(root):
        shutil.copytree(template, root, symlinks=True)
        moved(template, root)

    def check(r, root, event, late):
        err = r.stderr.decode("utf-8", "replace")
        now = users_state(root)
        if r.returncode == 0:
            return None if now == after else "exit 0, state %r" % (now,)
        if r.returncode != 111:
            return "exit %d, not 111" % r.returncode
        if "internal bug" in err or "Traceback" in err or not err.startswith("qmail-users: ") or root not in err:
            return "message %r" % err
        if now == before:
            return None
        if now[0] == after[0] and " is changed" in err:     # committed; the message says what is left
            return None
        return "neither as before nor committed and said: %r" % (now,)
    return Sweep(tmp_path / "runs", [program("qmail-users"), *args], setup, check,
                 calls=calls, want=want, commit=("unlink",), skip=read_only)()


def test_qmail_users_adduser_under_faults(tmp_path):
    """A fault anywhere leaves no half-added user: no row, and no mailbox directory without
    its row (vadduser's back-out), exit 111 naming the file; or the user whole, exit 0.
    (Its maildirsize, with a quota, is setquota's code: swept there.)"""
    users_sweep(tmp_path, ["adduser", "joe@ex.org", "-p", "pw"], [["adddomain", "ex.org"]],
                want=("mkdir", "pwrite64", "fdatasync", "unlink"))


def test_qmail_users_adddomain_under_faults(tmp_path):
    users_sweep(tmp_path, ["adddomain", "ex.org"], [["list"]], want=("mkdir", "pwrite64", "fdatasync", "rename"))


def test_qmail_users_deluser_and_setquota_under_faults(tmp_path):
    users_sweep(tmp_path / "del", ["deluser", "joe@ex.org"],
                [["adddomain", "ex.org"], ["adduser", "joe@ex.org", "-p", "pw"]],
                want=("rename", "pwrite64", "fdatasync", "unlink"))
    users_sweep(tmp_path / "quota", ["setquota", "joe@ex.org", "5M"],
                [["adddomain", "ex.org"], ["adduser", "joe@ex.org", "-p", "pw", "-q", "10M"]],
                want=("pwrite64", "fdatasync", "rename", "link"))


def test_qmail_users_addaliasdomain_under_faults_its_reads_too(tmp_path):
    """The database's reads (pread64) as well: one after the commit (whether the real domain has
    a postmaster of its own, which its virtualdomains line needs) said `database unavailable`,
    as if nothing were kept, with the alias in the database and in no control file."""
    users_sweep(tmp_path, ["addaliasdomain", "ex.org", "ex.net"], [["adddomain", "ex.org"]],
                want=("pread64",), calls=("pread64",))


def test_qmail_users_importvpasswd_under_read_faults_controls_follow_the_database(tmp_path):
    """importvpasswd of two vpopmail domains (and an alias domain), the database's reads failing:
    whatever exit, every domain the database holds afterwards is in control/rcpthosts, or the
    message says the control files are behind (syncdomains). A read failing in the second
    domain's import ended the command with `database unavailable` (said as if nothing were
    kept) and the first domain, committed, in no control file."""
    from test_users_importvpasswd import vpopmail_tree

    class Shim:
        root = str(tmp_path / "template")

        def control(self, name, text):
            with open(os.path.join(self.root, "control", name), "w") as f:
                f.write(text)
    os.makedirs(os.path.join(Shim.root, "control"))
    vpopmail_tree(Shim())

    def hosted(root):
        db = os.path.join(root, "users", "vpopmail.sqlite")
        if not os.path.exists(db):
            return set()
        conn = sqlite3.connect(db)
        try:
            return ({d for (d,) in conn.execute("SELECT domain FROM dir_control")}
                    | {a for (a,) in conn.execute("SELECT alias FROM aliasdomains")})
        except sqlite3.OperationalError:        # no tables yet
            return set()
        finally:
            conn.close()

    def setup(root):
        shutil.copytree(Shim.root, root, symlinks=True)

    def check(r, root, event, late):
        err = r.stderr.decode("utf-8", "replace")
        if "internal bug" in err or "Traceback" in err:
            return "message %r" % err
        domains = hosted(root)
        if r.returncode == 0:
            return None if domains == {"example.com", "example.org", "example.net"} else "exit 0, %r" % domains
        if r.returncode != 111:
            return "exit %d, not 111" % r.returncode
        listed = set(read(os.path.join(root, "control", "rcpthosts")).decode().split())
        if domains <= listed or " is changed" in err:
            return None
        return "the database holds %s, rcpthosts %s, and nothing says so" % (sorted(domains), sorted(listed))
    Sweep(tmp_path / "runs", [program("qmail-users"), "importvpasswd"], setup, check,
          calls=("pread64",), want=("pread64",), commit=("unlink",))()


# -- qmail-showctl --check when reads fail

def test_showctl_check_reports_every_read_that_fails(tmp_path):
    """Each file --check reads (controls, the cdbs, users/cdb, postmaster's .qmail) failing
    to open, read or map is a finding naming it, exit 1: never a clean exit 0, never
    `internal bug`. A failed close of one of them loses nothing (read-only, all read: qmail
    leaves that close unchecked, fileio.close_quietly): no finding, and no bug either."""
    def setup(root):
        os.makedirs(os.path.join(root, "control"))
        for name, text in (("me", "mx.example.org\n"), ("rcpthosts", "example.org\n"),
                           ("morercpthosts", "more.example\n"), ("databytes", "1000000\n")):
            with open(os.path.join(root, "control", name), "w") as f:
                f.write(text)
        with open(os.path.join(root, "control", "morercpthosts.cdb"), "wb") as f:
            f.write(cdb_of([(b"more.example", b"")]))
        pm = os.path.join(root, "pm")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(pm, "Maildir", sub))
        with open(os.path.join(pm, ".qmail-postmaster"), "w") as f:
            f.write("./Maildir/\n")
        write_users_cdb(root, {b"!": (b"pm", os.getuid(), os.getgid(), pm.encode(), b"-", b"")})

    def check(r, root, event, late):
        out, err = r.stdout.decode(), r.stderr.decode()
        if r.returncode != 1 or err:
            return "exit %d, stderr %r, stdout %r" % (r.returncode, err, out)
        shown = event.file if event.file.startswith(("control/", "users/")) else os.path.basename(event.file)
        return None if shown in out else "no finding names %s: %r" % (shown, out)

    def check_close(r, root, event, late):
        out, err = r.stdout.decode(), r.stderr.decode()
        return None if (r.returncode, err) == (0, "") else "exit %d, stderr %r, stdout %r" % (r.returncode, err, out)

    def skip(event):
        # the first listing of control/ loses nothing (ctl.reader opens each file then)
        return event.call == "openat" and "O_DIRECTORY" in event.args

    Sweep(tmp_path, [program("qmail-showctl"), "--check"], setup, check,
          calls=("openat", "read", "mmap"), skip=skip, want=("openat", "read", "mmap"))()
    Sweep(tmp_path / "close", [program("qmail-showctl"), "--check"], setup, check_close,
          calls=("openat", "close"), skip=lambda e: e.call != "close" or e.opened is None,
          want=("openat", "close"))()
    # the listing behind "unknown control file": its failure is a finding too
    root = str(tmp_path / "listing")
    setup(root)
    r = subprocess.run([strace(), "-f", "-qq", "-o", os.devnull, "-P", os.path.join(root, "control"), "-e", "trace=getdents64",
                        "-e", "inject=getdents64:error=EIO:when=3", program("qmail-showctl"), "--check"],
                       env=tool_env(root), capture_output=True, timeout=60)
    assert (r.returncode, r.stdout.decode(), r.stderr) == (1, "control/: unable to list: Input/output error\n", b"")


def test_a_control_directory_that_cannot_be_looked_at_is_not_called_absent(tmp_path):
    """qmail-config and setsrssecret first check that control/ is there. A stat that fails with
    EIO is trouble with the disk, said as such: not "no control directory", which would send
    the admin to reinstall a home that is there. (strace's -P does not match a path with a
    trailing slash: the occurrence is counted in a good run.)"""
    root = str(tmp_path)
    os.mkdir(os.path.join(root, "control"))
    trace = os.path.join(root, "trace")
    for argv, absent in (([program("qmail-config"), "a.new.example"], "qmail-config: no %s/control/: install"),
                         ([program("setsrssecret")], "setsrssecret: fatal: no control directory in %s")):
        def traced(*inject):
            r = subprocess.run([strace(), "-qq", "-o", trace, "-e", "trace=newfstatat"] + list(inject) + argv,
                               capture_output=True, text=True, env=tool_env(root))
            return r, open(trace).read().splitlines()
        traced()                        # the first may write __pycache__: more calls than the next
        _, good = traced()
        n = 1 + next(i for i, line in enumerate(good) if '"%s/control/"' % root in line)
        r, lines = traced("-e", "inject=newfstatat:error=EIO:when=%d" % n)
        assert '"%s/control/"' % root in lines[n - 1] and "(INJECTED)" in lines[n - 1], lines[n - 1]
        assert r.returncode == 111 and absent % root not in r.stderr, r.stderr
        assert r.stderr.endswith("%s/control/: Input/output error\n" % root), r.stderr
