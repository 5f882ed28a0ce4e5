"""Processes for the bench: required tools, one exec timed, free ports, every server stopped by pid."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time


class BenchFailure(Exception):
    """Why the bench fails: printed, exit status 1."""


def tool(name):
    """Absolute path of a required program (Postfix keeps its tools in /usr/sbin)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path:
        hint = {"smtp-source": "postfix", "smtp-sink": "postfix", "time": "time"}.get(name, "ucspi-tcp")
        raise BenchFailure("%s not found (apt-get install %s)" % (name, hint))
    return path


def spawn(argv, env, inputs=None):
    """Exec argv once; fd -> bytes in `inputs` arrive on pipes, the rest of 0-2 is /dev/null.

    posix_spawn keeps the driver's own cost per exec small. Returns wall seconds.
    """
    null = os.open(os.devnull, os.O_RDWR)
    actions, readers = [], []
    for fd in (0, 1, 2):
        if inputs and fd in inputs:
            r, w = os.pipe()      # inputs are small: they fit in the pipe buffer before the exec
            os.write(w, inputs[fd])
            os.close(w)
            readers.append(r)
            actions.append((os.POSIX_SPAWN_DUP2, r, fd))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, null, fd))
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    status = os.waitpid(pid, 0)[1]
    elapsed = time.perf_counter() - start
    for fd in readers + [null]:
        os.close(fd)
    if status:
        raise BenchFailure("%s exited with status %#x" % (" ".join(argv), status))
    return elapsed


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_files(directory):
    with os.scandir(directory) as it:
        return sum(1 for _ in it)


class Servers:
    """Every server the bench starts, so each one is stopped by its pid."""

    def __init__(self):
        self.procs = []

    def start(self, argv, env, log):
        """Start argv with output to `log`; return its port once it accepts connections."""
        port = free_port()
        argv = [a.replace("PORT", str(port)) for a in argv]
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.procs.append(proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchFailure("%s exited with %s; see %s" % (argv[0], proc.returncode, log))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.05)
        raise BenchFailure("%s did not listen on 127.0.0.1:%d" % (argv[0], port))

    def start_queued(self, home, env, log, ids=None):
        """bin/qmail-queued of `home` (as ids = (uid, gid) when given), once its socket accepts."""
        path = os.path.join(home, "sock", "qmail-queue")
        with open(log, "ab") as out:
            proc = subprocess.Popen([os.path.join(home, "bin", "qmail-queued")], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, **(dict(user=ids[0], group=ids[1], extra_groups=[])
                                                               if ids else {}))
        self.procs.append(proc)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise BenchFailure("qmail-queued exited with %s; see %s" % (proc.returncode, log))
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(path)
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise BenchFailure("qmail-queued did not listen on %s" % path) from None
            time.sleep(0.02)

    def stop_all(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs = []


def progress(msg):
    print("bench: %s" % msg, file=sys.stderr, flush=True)
