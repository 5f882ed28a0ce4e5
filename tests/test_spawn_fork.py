"""Forked qmail-local / qmail-remote (qmailpy.spawn.fork) against exec'd ones.

A probe program stands in for qmail-local and qmail-remote: exec'd, it is a
script named by $QMAILLOCAL/$QMAILREMOTE; forked, the spawn runs with the
probe patched in as qmail-local's/qmail-remote's main() (a driver that imports
qmail-lspawn/-rspawn with the patch, then runs its main()). The probe reports
what a delivery program sees: argv, open fds, signal masks, ids, cwd, umask,
environment. Both modes must report the same; a child that segfaults, or a
forked one whose main() raises, gives the report of a crashed program.
"""
import os
import re
import subprocess
import signal
import sys
import sysconfig

import pytest

from test_send_support import (DELIVERY_UID, NOBODY, ROOT, SpawnClient, queue_message,
                               scratch)  # noqa: F401 (scratch: fixture)

PROBE = r'''
import os, sys

def main():
    how = os.fsencode(sys.argv[4 if len(sys.argv) > 8 else 3]).split(b"@")[0]   # local part / recipient
    if how == b"segv":
        import ctypes
        ctypes.string_at(0)
    if how == b"raise":
        raise RuntimeError("a bug in the delivery program")
    if how == b"exit":
        sys.exit(75)
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigBlk", "SigIgn", "SigCgt", "NoNewPrivs", "CapEff", "CapPrm"):
                status[key] = value.strip()
    import json                                         # a module's state: never the last child's
    mark, json.probe_mark = getattr(json, "probe_mark", None), sys.argv
    umask = os.umask(0)
    os.umask(umask)
    env = {k: v for k, v in os.environ.items() if k not in ("QMAILLOCAL", "QMAILREMOTE")}
    import hashlib      # a digest: the whole environment would pass qmail-lspawn's 3,000-byte report limit
    env = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    seen = dict(argv=sys.argv[1:], fds=fds, status=status, uid=os.getresuid(), gid=os.getresgid(),
                groups=sorted(os.getgroups()), cwd=os.getcwd(), umask=umask, env=env,
                mess=os.read(0, 100).decode(), fd1=os.readlink("/proc/self/fd/1").split(":")[0],
                same12=os.path.sameopenfile(1, 2), mark=mark, comm=open("/proc/self/comm").read().strip())
    text = repr(seen) + "\n"
    assert len(text) < 2500, text       # within qmail-lspawn's truncreport, whatever the caller's environment
    os.write(1, (text if len(sys.argv) > 8 else "r\0K" + text + "\0").encode())   # qmail-remote: r + K
    return 0
'''

DRIVER = r'''
import sys
sys.path[:0] = %(paths)r
exec(%(probe)r)
import qmailpy.%(target)s as target
target.main = main
from qmailpy.spawn.%(spawn)s import main as spawn_main
sys.exit(spawn_main())
'''


def probe_script(scratch):
    path = os.path.join(scratch.fake, "probe")
    with open(path, "w") as f:
        f.write("#!%s -IS\n%s\nsys.exit(main())\n" % (sys.executable, PROBE))
    os.chmod(path, 0o755)
    return path


def client(scratch, which, mode, log=None, preexec_fn=None):
    """A qmail-lspawn ("local") or qmail-rspawn ("remote") whose deliveries run the probe."""
    var = "QMAILLOCAL" if which == "local" else "QMAILREMOTE"
    if mode == "exec":
        return SpawnClient("qmail-%sspawn" % which[0], scratch.env(**{var: probe_script(scratch)}), stderr=log,
                           preexec_fn=preexec_fn)
    env = scratch.env()
    del env["QMAILLOCAL"], env["QMAILREMOTE"]
    driver = DRIVER % dict(paths=[str(ROOT), sysconfig.get_paths()["purelib"]], probe=PROBE, target="%s.main" % which, spawn="%sspawn" % which[0])
    return SpawnClient(None, env, argv=[sys.executable, "-IS", "-c", driver, "./Maildir/"], stderr=log,
                       preexec_fn=preexec_fn)


def deliver(scratch, which, mode, recipients, log=None, messid=None, preexec_fn=None):
    spawn = client(scratch, which, mode, log, preexec_fn)
    try:
        messid = messid or queue_message(scratch.home, b"Subject: probe\n\nbody\n")
        got = [spawn.one(messid, b"alice@localhost", r) for r in recipients]
    finally:
        code, rest = spawn.close()
    assert (code, rest) == (0, b"")
    return got


@pytest.mark.parametrize("which,recipient", [("local", b"joe@localhost"), ("remote", b"bob@far.example")])
def test_a_forked_child_sees_what_an_execd_program_sees(scratch, which, recipient):
    messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")     # one message: the same Received line
    [execd] = deliver(scratch, which, "exec", [recipient], messid=messid)
    [forked] = deliver(scratch, which, "fork", [recipient], messid=messid)
    assert forked[:1] == b"K", forked
    seen = eval(forked[1:].decode().splitlines()[0])
    assert seen["fds"] == [0, 1, 2, 3]                 # 3: the listing's own directory
    assert seen["mess"].endswith("Subject: probe\n\nbody\n") and seen["same12"]
    assert seen["fd1"] == "pipe"
    if which == "local":
        assert seen["uid"] == (DELIVERY_UID,) * 3
        if os.getuid() == 0:
            assert seen["gid"] == (NOBODY,) * 3 and seen["groups"] == [NOBODY]
            assert seen["status"]["CapEff"] == "0000000000000000"
        assert seen["cwd"] == scratch.home and seen["umask"] == 0o022
    assert seen["comm"] == "qmail-" + which           # as ps shows an exec'd qmail-local/-remote
    assert execd.replace(b"'comm': 'probe'", b"'comm': 'qmail-%s'" % which.encode()) == forked


def ignore_quit():
    """A spawn started the way a shell's trap '' QUIT would start it."""
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


@pytest.mark.parametrize("which,recipient", [("local", b"joe@localhost"), ("remote", b"bob@far.example")])
def test_a_signal_ignored_by_the_spawns_parent_stays_ignored_in_forked_children_as_across_exec(scratch, which, recipient):
    # execve keeps an ignored signal ignored: an exec'd qmail-local/-remote started by a spawn
    # whose parent ignored SIGQUIT has it ignored too; a forked child must not reset it.
    messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")
    [execd] = deliver(scratch, which, "exec", [recipient], messid=messid, preexec_fn=ignore_quit)
    [forked] = deliver(scratch, which, "fork", [recipient], messid=messid, preexec_fn=ignore_quit)
    ignored = int(eval(forked[1:].decode().splitlines()[0])["status"]["SigIgn"], 16)
    assert ignored & (1 << (signal.SIGQUIT - 1))
    assert execd.replace(b"'comm': 'probe'", b"'comm': 'qmail-%s'" % which.encode()) == forked


CRASHED = {"local": b"Zqmail-local crashed.\n", "remote": b"Zqmail-remote crashed.\n"}


@pytest.mark.parametrize("which", ["local", "remote"])
@pytest.mark.parametrize("mode,how", [("exec", "segv"), ("fork", "segv"), ("fork", "raise")])
def test_a_crashed_child_is_a_deferral_and_the_spawn_goes_on(scratch, which, mode, how):
    host = b"localhost" if which == "local" else b"far.example"
    recipients = [b"%s@%s" % (local, host) for local in (how.encode(), b"exit", b"joe")]
    logpath = os.path.join(scratch.fake, "spawn.log")
    messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")
    with open(logpath, "wb") as log:
        crashed, exited, fine = deliver(scratch, which, mode, recipients, log, messid=messid)
    assert crashed == CRASHED[which]
    # a forked child's last words (one line: log.write_bug, never a traceback) are the log's;
    # the report stays the fixed text. The line names the message and recipient as qmail-send's
    # `starting delivery N: msg M to local R` does (the spawn never knows qmail-send's N)
    with open(logpath, "rb") as log:
        lines = log.read().decode().splitlines()
    if how == "raise":
        assert len(lines) == 1 and re.fullmatch(
            r"alert: delivery of msg %s to %s raise@%s crashed \(signal 9\): qmail-%s: internal bug: "
            r"RuntimeError: a bug in the delivery program at <string>:\d+:main < qmailpy/spawn/fork\.py:\d+:_child"
            r" < .*" % (messid.split("/")[1], which, host.decode(), which), lines[0]), lines
    else:
        assert lines == [], lines
    # sys.exit(75): qmail-local's temporary code; qmail-remote: any code but 0/111 is "Unable to run"
    assert exited == (b"Z" if which == "local" else b"DUnable to run qmail-remote.\n")
    assert fine[:1] == b"K"


BUG_DRIVER = r'''
import sys
sys.path[:0] = %(paths)r
import qmailpy.local.deliver
def report_parts(*args):
    raise KeyError("a bug\nsecond line")
qmailpy.local.deliver.report_parts = report_parts
from qmailpy.spawn.lspawn import main as spawn_main
sys.exit(spawn_main())
'''


def test_a_bug_in_forked_qmail_locals_main_is_one_line_and_a_deferral(scratch):
    """qmail-local's main() is log.guard's in a forked child too: a bug there (here: report_parts()
    itself) is the one line `qmail-local: internal bug: ...` on the report pipe and exit 111,
    which qmail-lspawn reports as a deferral with that line; nothing in qmail-lspawn's log."""
    env = scratch.env()
    del env["QMAILLOCAL"], env["QMAILREMOTE"]
    driver = BUG_DRIVER % dict(paths=[str(ROOT), sysconfig.get_paths()["purelib"]])
    logpath = os.path.join(scratch.fake, "spawn.log")
    with open(logpath, "wb") as log:
        spawn = SpawnClient(None, env, argv=[sys.executable, "-IS", "-c", driver, "./Maildir/"], stderr=log)
        try:
            got = spawn.one(queue_message(scratch.home, b"Subject: probe\n\nbody\n"), b"alice@localhost",
                            b"joe@localhost")
        finally:
            assert spawn.close() == (0, b"")
    assert re.fullmatch(rb"Zqmail-local: internal bug: KeyError: 'a bug\\\\nsecond line' at <string>:6:report_parts"
                        rb" < qmailpy/local/main\.py:\d+:main\n", got), got
    with open(logpath, "rb") as log:
        assert log.read() == b""


REMOTE_BUG_DRIVER = r'''
import sys
sys.path[:0] = %(paths)r
import qmailpy.remote.main
def _dkim_sign(controls, message, sender):
    raise KeyError("a bug")
qmailpy.remote.main._dkim_sign = _dkim_sign
from qmailpy.spawn.rspawn import main as spawn_main
sys.exit(spawn_main())
'''


def test_a_bug_in_forked_qmail_remotes_main_is_logged_by_qmail_rspawn(scratch):
    """qmail-rspawn's report for qmail-remote's exit 111 is qmail's fixed "Unable to run
    qmail-remote." (a deferral), which drops what the child wrote: the bug's one line goes to
    qmail-rspawn's log instead, or no admin would ever see it."""
    env = scratch.env()
    del env["QMAILLOCAL"], env["QMAILREMOTE"]
    driver = REMOTE_BUG_DRIVER % dict(paths=[str(ROOT), sysconfig.get_paths()["purelib"]])
    logpath = os.path.join(scratch.fake, "spawn.log")
    with open(logpath, "wb") as log:
        spawn = SpawnClient(None, env, argv=[sys.executable, "-IS", "-c", driver], stderr=log)
        messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")
        try:
            got = spawn.one(messid, b"alice@localhost", b"joe@far.example")
        finally:
            assert spawn.close() == (0, b"")
    assert got == b"ZUnable to run qmail-remote.\n"
    with open(logpath, "rb") as log:
        assert re.fullmatch(rb"alert: delivery of msg " + messid.split("/")[1].encode() +
                            rb" to remote joe@far\.example exited 111: "
                            rb"qmail-remote: internal bug: KeyError: 'a bug'"
                            rb" at <string>:6:_dkim_sign < qmailpy/remote/main\.py:\d+:_deliver"
                            rb" < qmailpy/remote/main\.py:\d+:run\n", log.read())


def test_the_spawner_closes_what_it_holds_and_children_die_with_signals_default(scratch):
    """Several deliveries at once, then one after another: no child sees another's pipe or
    the spawner's pipes, nor what an earlier child left in a module."""
    spawn = client(scratch, "local", "fork")
    try:
        messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")
        for n in range(5):
            spawn.send(n, messid, b"alice@localhost", b"joe%d@localhost" % n)
        got = spawn.reports(5)
        got.update({5 + n: spawn.one(messid, b"alice@localhost", b"joe@localhost") for n in range(2)})
    finally:
        spawn.close()
    for n in range(7):
        seen = eval(got[n][1:].decode().splitlines()[0])
        assert seen["fds"] == [0, 1, 2, 3] and seen["mark"] is None
        caught = int(seen["status"]["SigCgt"], 16)
        assert caught == 1 << (signal.SIGINT - 1)      # only Python's own SIGINT handler, as exec'd
        assert int(seen["status"]["SigBlk"], 16) == 0


PRELOADED_LOCAL = r"""
import os, sys
from qmailpy.spawn import fork, lspawn
fork.preload(lspawn.PRELOAD)
before = set(sys.modules)
from qmailpy.local.deliver import deliver
home = sys.argv[1]
os.chdir(home)
code, report = deliver(["--", "joe", home, "joe", "", "", "example.com", "a@b.example", "./Maildir/"], 0,
                       dict(os.environ, QMAILHOME=home))
print(code, report.strip(), "|", " ".join(sorted(m for m in set(sys.modules) - before if m.startswith("qmailpy"))))
"""


AT_FORK = r"""
import sys
sys.path[:0] = [%r, %r]                   # as bin/'s launchers, which run python -IS
from qmailpy.spawn import fork
from qmailpy.spawn.%s import main, PRELOAD
fork.preload(PRELOAD)
print(sorted(m for m in ("threading", "subprocess", "random", "logging", "concurrent.futures") if m in sys.modules))
"""


@pytest.mark.parametrize("spawn", ["lspawn", "rspawn"])
def test_spawners_load_no_module_whose_at_fork_handler_would_run_in_every_child(spawn):
    """threading (which subprocess imports) and random register handlers that run in every
    child forked after they are imported: in qmail-lspawn that was about 90 more copied
    pages per delivery. What the spawner and its preload import must not load them."""
    script = AT_FORK % (str(ROOT), sysconfig.get_paths()["purelib"], spawn)
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), "-IS", "-c", script],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "[]\n"


def test_lspawn_preloads_what_a_forward_imports(tmp_path):
    """A forward (`&address`) asks qmail-queued's socket first: its client modules are
    preloaded too (2.8 ms of CPU in each forwarding child otherwise). No queue here, so the
    forward defers; what it imported on the way is the question."""
    (tmp_path / "mess").write_bytes(b"Subject: x\n\nhi\n")
    script = PRELOADED_LOCAL.replace('"./Maildir/"', '"&joe@elsewhere.example"')
    with open(tmp_path / "mess", "rb") as mess:
        r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), "-c", script, str(tmp_path)],
                           stdin=mess, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    code, _, imported = r.stdout.decode().partition("|")
    assert code.startswith("111 Unable to forward message") and imported.strip() == "", r.stdout


def test_lspawn_preloads_what_a_maildir_delivery_imports(tmp_path):
    """A forked qmail-local delivering into a Maildir imports no qmailpy module that
    qmail-lspawn did not load before forking (each child would import it again)."""
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True)
    (tmp_path / "mess").write_bytes(b"Subject: x\n\nhi\n")      # seekable, as a mess file is
    with open(tmp_path / "mess", "rb") as mess:
        r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), "-c", PRELOADED_LOCAL, str(tmp_path)],
                           stdin=mess, capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "0 did 1+0+0 | \n"
    assert len(os.listdir(tmp_path / "Maildir" / "new")) == 1


ENV_PROBE = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from qmailpy.fileio import read_all
from qmailpy.spawn import fork
os.environ.update(KEEP="same", CHANGE="old", DROP="gone")
env = dict(os.environ, CHANGE="new", ADD="added")
del env["DROP"]
for given in (env, os.environ):
    r, w = os.pipe()
    child = fork.start("envprobe:main", [b"probe"], 0, w, "/", given)
    os.close(w)
    got = read_all(r)
    want = sorted("%s=%s" % kv for kv in given.items())
    python, _, c = got.decode().partition("|")
    print(child.wait(), sorted(python.split("\0")[:-1]) == want, sorted(c.split("\0")[:-1]) == want)
"""


def test_a_forked_child_has_exactly_the_environment_it_was_given(tmp_path):
    """Changed, added and removed variables, in os.environ and in the C environment (what
    env(1) exec'd by the child prints), as exec would give them; and the spawner's own
    environment when that is what it passes."""
    (tmp_path / "envprobe.py").write_text(
        "import os\n"
        "def main():\n"
        "    os.write(1, ''.join('%s=%s\\0' % kv for kv in os.environ.items()).encode() + b'|')\n"
        "    os.execv('/usr/bin/env', ['env', '-0'])       # the C environment, as a program exec'd gets it\n")
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python3"), "-c", ENV_PROBE, str(tmp_path)],
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "0 True True\n0 True True\n"


NO_FORK_DRIVER = r'''
import errno, os, sys
sys.path[:0] = %(paths)r
exec(%(probe)r)
import qmailpy.%(target)s as target
target.main = main
real_fork, refused = os.fork, []

def fork():                       # the kernel refuses the first fork (EAGAIN: RLIMIT_NPROC, memory)
    if not refused:
        refused.append(1)
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
    return real_fork()

os.fork = fork
from qmailpy.spawn.%(spawn)s import main as spawn_main
sys.exit(spawn_main())
'''


@pytest.mark.parametrize("which", ["local", "remote"])
def test_a_fork_the_kernel_refuses_is_a_deferral_and_the_spawn_goes_on(scratch, which):
    """spawn.c: a delivery that cannot be forked is "Zqmail-spawn unable to fork." and the
    spawn serves the next command; a spawn that died instead took qmail-send down with it
    ("lost spawn connection"), and every delivery it was running got its report lost."""
    env = scratch.env()
    del env["QMAILLOCAL"], env["QMAILREMOTE"]
    driver = NO_FORK_DRIVER % dict(paths=[str(ROOT), sysconfig.get_paths()["purelib"]], probe=PROBE,
                                   target="%s.main" % which, spawn="%sspawn" % which[0])
    spawn = SpawnClient(None, env, argv=[sys.executable, "-IS", "-c", driver, "./Maildir/"])
    host = b"localhost" if which == "local" else b"far.example"
    try:
        messid = queue_message(scratch.home, b"Subject: probe\n\nbody\n")
        refused = spawn.one(messid, b"alice@localhost", b"joe@" + host)
        fine = spawn.one(messid, b"alice@localhost", b"joe@" + host)
    finally:
        code, rest = spawn.close()
    assert refused == b"Zqmail-spawn unable to fork. (#4.3.0)\n"
    assert fine[:1] == b"K", fine
    assert (code, rest) == (0, b"")


EXITS = r'''
import os, sys

def main():
    how = sys.argv[1]
    os.write(1, b"ran as %d\n" % os.getuid())
    if how == "none":
        return None
    if how == "text":
        sys.exit("qmail-local: a word for the report")
    if how == "big":
        sys.exit(300)
    return int(how)
'''


def forked(tmp_path, how, ids=None):
    """fork.start of EXITS's main with argv [x, how]: (exit code, what it wrote on fds 1 and 2)."""
    from qmailpy.fileio import read_all
    from qmailpy.spawn import fork
    (tmp_path / "exitprobe.py").write_text(EXITS)
    sys.path.insert(0, str(tmp_path))
    r, w = os.pipe()
    try:
        child = fork.start("exitprobe:main", [b"x", how.encode()], 0, w, str(tmp_path), os.environ, ids, 112)
    finally:
        os.close(w)
        sys.path.remove(str(tmp_path))
    try:
        got = read_all(r)
    finally:
        os.close(r)
    return child.wait(), child.wait(), got


@pytest.mark.parametrize("how,code,said", [
    ("none", 0, b""), ("7", 7, b""), ("big", 300 & 0xFF, b""),
    ("text", 1, b"qmail-local: a word for the report\n"),          # as sys.exit("text") in an exec'd program
])
def test_a_forked_mains_return_and_exit_are_an_execd_programs_exit_status(tmp_path, how, code, said):
    assert forked(tmp_path, how) == (code, code, b"ran as %d\n" % os.getuid() + said)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (the id switch)")
@pytest.mark.parametrize("errno", [11, 1])          # EAGAIN (RLIMIT_NPROC), EPERM (no CAP_SETUID)
def test_a_failed_id_switch_never_runs_the_delivery_and_exits_refused(tmp_path, monkeypatch, errno):
    """setresuid() refused in the child: main() never runs, as root or as anyone, and the
    exit code is `refused` whatever the errno (qmail-lspawn's QLX_USAGE, a deferral)."""
    def refused(*ids):
        raise OSError(errno, os.strerror(errno))
    monkeypatch.setattr(os, "setresuid", refused)
    ids = dict(user=NOBODY, group=NOBODY, extra_groups=[NOBODY])
    assert forked(tmp_path, "0", ids) == (112, 112, b"")


def test_a_module_that_cannot_be_preloaded_is_a_warning_and_left_to_the_child(capfd):
    import gc
    from qmailpy.spawn import fork
    fork.preload(["qmailpy.no_such_module"])
    gc.unfreeze()                       # pytest's own objects: collectable again
    assert capfd.readouterr().err == ("warning: cannot preload qmailpy.no_such_module: ModuleNotFoundError: "
                                      "No module named 'qmailpy.no_such_module'\n")
