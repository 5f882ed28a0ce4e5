"""qmail-lspawn and qmail-rspawn with forked (default) and exec'd ($QMAILLOCAL/$QMAILREMOTE) programs.

usage: .venv/bin/python bench/spawnmodes.py [N] [ROUNDS]   (as root; N deliveries per mode, default 300)

Not part of `make bench` (qmail-send's own rows there measure the whole
path). Here bin/qmail-lspawn and bin/qmail-rspawn are driven directly, as
qmail-send drives them (spawnwire commands on fd 0, reports on fd 1): N
deliveries of one queued 2 KB message at concurrency 10 (local: the real
qmail-local into a Maildir owned by nobody) and 20 (remote: the real
qmail-remote into Postfix's smtp-sink on a free 127.0.0.1 port), the two
modes taking turns ROUNDS times (default 2). Every report must be K and
every local delivery a file in Maildir/new.
"""
import contextlib
import os
import pwd
import shutil
import signal
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
from settings import temp_tree  # noqa: E402
BIN = os.path.join(ROOT, "bin")
NOBODY = 65534


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(port):
    """Postfix's smtp-sink on 127.0.0.1:port; its pid. Started with posix_spawn, not
    subprocess: subprocess imports threading, whose at-fork handler would then run in
    every child forkcost.py and forkpages.py fork (qmail-rspawn loads no threading)."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        return os.posix_spawn(shutil.which("smtp-sink") or "/usr/sbin/smtp-sink",
                              ["smtp-sink", "-u", "nobody", "-m", "1024", "127.0.0.1:%d" % port, "1024"],
                              os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
    finally:
        os.close(null)


def stop_sink(pid):
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)


def make_home(top, controls):
    from qmailpy.proto import qq
    from qmailpy.queue import layout
    from qmailpy.queue.enqueue import enqueue
    home = os.path.join(top, "qmail")
    layout.create_queue(home)
    os.makedirs(os.path.join(home, "control"))
    for key, value in controls.items():
        with open(os.path.join(home, "control", key), "w") as f:
            f.write(value + "\n")
    msgid = enqueue(home, b"Subject: spawn modes\n\n" + b"x" * 2000 + b"\n",
                    qq.encode(b"a@spawn.example", [b"joe@localhost"]), 0, os.getpid(), time.time())
    messid = "%d/%d" % (msgid % 23, msgid)
    try:                                     # spawn.c's check: the mess file is qmailq's when qmailq exists
        os.chown(os.path.join(home, "queue", "mess", messid), pwd.getpwnam("qmailq").pw_uid, -1)
    except KeyError:
        pass
    return home, messid.encode()


@contextlib.contextmanager
def preloaded_remote(prefix):
    """This process as qmail-rspawn: a home routing everything to Postfix's smtp-sink on a free
    127.0.0.1 port, one 2 KB message queued, qmail-remote's modules preloaded and frozen
    (qmailpy.spawn.fork.preload); yields (home, path of the mess file). For bench/forkpages.py
    and bench/forkcost.py, which fork or call qmail-remote's main() themselves."""
    port = free_port()
    sink = start_sink(port)
    top = temp_tree(prefix)
    try:
        time.sleep(0.5)
        home, messid = make_home(top, {"me": "mx.spawn.example", "helohost": "mx.spawn.example",
                                       "smtproutes": ":127.0.0.1:%d" % port})
        os.environ.update(QMAILHOME=home, QMAILPY_SINGLEUSER="1", DNSCACHEIP="127.0.0.1:1")
        from qmailpy.spawn import fork, rspawn
        fork.preload(rspawn.PRELOAD)
        loaded = [m for m in ("threading", "random", "logging") if m in sys.modules]
        if loaded:                           # each fork would run their at-fork handlers, as qmail-rspawn's do not
            raise SystemExit("this driver is not qmail-rspawn: it has loaded %s" % ", ".join(loaded))
        yield home, os.path.join(home, "queue", "mess", messid.decode())
    finally:
        stop_sink(sink)
        shutil.rmtree(top, ignore_errors=True)


def drive(program, args, env, messid, recipient, n, conc, bindir=BIN, own=None):
    """n deliveries, conc at a time; deliveries per second and the reports that were not K.
    bindir: whose bin/ to run; own: a list that gets the spawner's own (page faults, CPU
    seconds) over the deliveries (/proc/PID/stat, read before its input closes)."""
    import subprocess
    from qmailpy.proto import spawnwire
    p = subprocess.Popen([os.path.join(bindir, program)] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=env)
    decoder, fd = spawnwire.ReportDecoder(), p.stdout.fileno()
    while decoder.limit is None:
        decoder.feed(os.read(fd, 2))
    time.sleep(0.5)                          # the preload after the limit: not part of a delivery
    free, sent, done, bad = list(range(conc)), 0, 0, []
    before = _own_stat(p.pid)
    start = time.perf_counter()
    while done < n:
        while free and sent < n:
            p.stdin.write(spawnwire.encode_command(free.pop(), messid, b"a@spawn.example",
                                                   recipient % sent if b"%" in recipient else recipient))
            sent += 1
        p.stdin.flush()
        for r in decoder.feed(os.read(fd, 65536)):
            done += 1
            free.append(r.delnum)
            if r.kind != b"K":
                bad.append(r.kind + r.text)
    elapsed = time.perf_counter() - start
    if own is not None:
        after = _own_stat(p.pid)
        own[:] = [after[0] - before[0], after[1] - before[1]]
    p.stdin.close()
    p.wait()
    return n / elapsed, bad


def _own_stat(pid):
    """(minor faults, CPU seconds) of a running process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[7]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cdb_mailbox(top, home):
    """A Maildir under top/box owned by nobody, users/cdb sending joe@ there, and an empty
    passwd file for qmail-lspawn's other lookups; (Maildir/new, the passwd file)."""
    import cdblib
    box = os.path.join(top, "box")
    for d in ("", "Maildir", "Maildir/new", "Maildir/cur", "Maildir/tmp"):
        os.makedirs(os.path.join(box, d), exist_ok=True)
        os.chown(os.path.join(box, d), NOBODY, NOBODY)
    os.makedirs(os.path.join(home, "users"))
    with open(os.path.join(home, "users", "cdb"), "wb") as f:
        w = cdblib.Writer(f)
        w.put(b"!joe\0", b"\0".join([b"nobody", b"%d" % NOBODY, b"%d" % NOBODY, box.encode(), b"", b""]))
        w.put(b"", b"")
        w.finalize()
    passwd = os.path.join(home, "passwd")
    open(passwd, "w").close()
    return os.path.join(box, "Maildir", "new"), passwd


def local(top, n, rounds):
    home, messid = make_home(top, {"me": "mx.spawn.example", "locals": "localhost"})
    new, passwd = cdb_mailbox(top, home)
    results = {"fork": [], "exec": []}
    for _ in range(rounds):
        for mode in ("fork", "exec"):
            env = {k: v for k, v in os.environ.items() if k not in ("QMAILLOCAL", "QMAILPY_SINGLEUSER")}
            env.update(QMAILHOME=home, QMAILPY_PASSWD=passwd)
            if mode == "exec":
                env["QMAILLOCAL"] = os.path.join(BIN, "qmail-local")
            rate, bad = drive("qmail-lspawn", ["./Maildir/"], env, messid, b"joe@localhost", n, 10)
            if bad:
                raise SystemExit("qmail-lspawn %s: %d reports not K: %r" % (mode, len(bad), bad[0]))
            results[mode].append(rate)
    delivered = len(os.listdir(new))
    if delivered != 2 * rounds * n:
        raise SystemExit("qmail-local delivered %d of %d" % (delivered, 2 * rounds * n))
    return results


def remote(top, n, rounds):
    port = free_port()
    sink = start_sink(port)
    try:
        time.sleep(0.5)
        home, messid = make_home(top, {"me": "mx.spawn.example", "helohost": "mx.spawn.example",
                                       "smtproutes": ":127.0.0.1:%d" % port})
        results = {"fork": [], "exec": []}
        for _ in range(rounds):
            for mode in ("fork", "exec"):
                env = {k: v for k, v in os.environ.items() if k != "QMAILREMOTE"}
                env.update(QMAILHOME=home, QMAILPY_SINGLEUSER="1", DNSCACHEIP="127.0.0.1:1")
                if mode == "exec":
                    env["QMAILREMOTE"] = os.path.join(BIN, "qmail-remote")
                rate, bad = drive("qmail-rspawn", [], env, messid, b"r%d@remote.example", n, 20)
                if bad:
                    raise SystemExit("qmail-rspawn %s: %d reports not K: %r" % (mode, len(bad), bad[0]))
                results[mode].append(rate)
        return results
    finally:
        stop_sink(sink)


def main(argv):
    if os.geteuid() != 0:
        raise SystemExit("run as root: qmail-lspawn delivers as the mailbox owner")
    n = int(argv[0]) if argv else 300
    rounds = int(argv[1]) if len(argv) > 1 else 2
    top = temp_tree("qmailpy-spawnmodes.")
    os.chmod(top, 0o755)
    try:
        for name, fn, conc in (("qmail-lspawn + qmail-local", local, 10), ("qmail-rspawn + qmail-remote", remote, 20)):
            got = fn(os.path.join(top, name.split()[0]), n, rounds)
            print("%s, %d deliveries at concurrency %d, deliveries/s: forked %s; exec'd %s"
                  % (name, n, conc, ", ".join("%.0f" % r for r in got["fork"]),
                     ", ".join("%.0f" % r for r in got["exec"])))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
