"""make bench: qmailpy measured against peers on the same machine, in the same run.

usage: .venv/bin/python bench/run.py [--quick] [--runs N] [--out DIR]

These shared machines drift by up to 3x from minute to minute
(/work/shared/design/performance-facts.md), so an absolute figure says little:
every row is a ratio qmailpy / peer, the two measured back to back in the same
run; the bench repeats the runs (3 by default, 1 with --quick) and reports
medians. Output: a Markdown table on stdout, raw samples and medians in
DIR/latest.json (default bench/results), and the table in docs/performance.md.

It fails (exit 1) when a plain qmail-smtpd session imports click, dns, spf or
pymysql, when a server loses a message, or when a program exits non-zero.
Every server runs on a free 127.0.0.1 port from a temporary qmail home and is
stopped by pid.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VPY = os.path.join(ROOT, ".venv", "bin", "python3")
DOC = os.path.join(ROOT, "docs", "performance.md")
DOC_START, DOC_END = "<!-- bench:start -->", "<!-- bench:end -->"
DOMAIN = "bench.example"
HEAVY = ("click", "dns", "spf", "pymysql")
# what tcpserver puts in qmail-smtpd's environment, for sessions run without it
TCP_ENV = {"PROTO": "TCP", "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "25",
           "TCPLOCALHOST": "localhost", "TCPREMOTEIP": "127.0.0.1"}
MAIL_SESSION = ("HELO bench\r\nMAIL FROM:<bench@%s>\r\nRCPT TO:<rcpt@%s>\r\nDATA\r\n"
                "Subject: bench\r\n\r\n%s\r\n.\r\nQUIT\r\n" % (DOMAIN, DOMAIN, "x" * 70)).encode()
SIZES = {                      # per run; kept small so 3 runs take a few minutes on 2 cores
    "execs": 100,              # start-up: execs of each command
    "rss_execs": 5,            # memory: execs of each command
    "smtp_messages": 500,      # smtp-source -m, both modes
    "smtp_parallel": 20,       # 1 message per connection: smtp-source -s
    "smtp_d_sessions": 5,      # -d: 5 connections of ~100 messages each
    "message_bytes": 2000,     # smtp-source -l
    "queue_inserts": 200,      # qmail-queue exec'd, enqueue() and the raw disk, each
    "queue_bytes": 4096,       # message size for the queue rows, = the raw disk write
}


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


class Bench:
    """One temporary qmail home, the samples of every run, and the rows built from them."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.samples = {}                  # quantity -> one value per run
        self.home = os.path.join(tmp, "qmail")
        subprocess.run([VPY, os.path.join(ROOT, "tools", "install.py"), self.home, ROOT, VPY],
                       check=True, stdout=subprocess.DEVNULL)
        for name in ("me", "rcpthosts"):
            with open(os.path.join(self.home, "control", name), "w") as f:
                f.write(DOMAIN + "\n")
        self.smtpd = os.path.join(self.home, "bin", "qmail-smtpd")
        self.qq = os.path.join(self.home, "bin", "qmail-queue")
        self.todo = os.path.join(self.home, "queue", "todo")
        # No QMAILQUEUE: qmail-smtpd then runs its own qmail-queue in a forked child
        # (smtpd/queueclient.py), the way a production install runs.
        self.env = {k: v for k, v in os.environ.items() if k != "QMAILQUEUE"}
        self.env["QMAILHOME"] = self.home
        self.session_env = dict(self.env, **TCP_ENV)

    def record(self, name, value):
        self.samples.setdefault(name, []).append(value)

    # -- 1. start-up --------------------------------------------------------
    def imports(self):
        """Modules a plain session (HELO, QUIT) imports, from -X importtime on the real launcher."""
        with open(self.smtpd) as f:
            shebang = f.readline()[2:].split()
        argv = shebang + ["-X", "importtime", self.smtpd]
        r = subprocess.run(argv, input=b"HELO bench\r\nQUIT\r\n", env=self.session_env,
                           capture_output=True, timeout=60)
        if r.returncode:
            raise BenchFailure("qmail-smtpd session failed: %s" % r.stderr.decode()[-500:])
        mods = [line.rsplit("|", 1)[1].strip() for line in r.stderr.decode().splitlines()
                if line.startswith("import time:")]
        return [m for m in mods if m != "imported package"]

    def startup(self, execs):
        """One QUIT session against bare interpreters, interleaved exec by exec; ms, median per run."""
        python_path = tool("python3")
        cmds = {
            "smtpd_session_ms": ([self.smtpd], self.session_env, {0: b"QUIT\r\n"}),
            "python_path_ms": ([python_path, "-c", "pass"], os.environ, None),
            "python_venv_ms": ([VPY, "-c", "pass"], os.environ, None),
            "python_venv_IS_ms": ([VPY, "-I", "-S", "-c", "pass"], os.environ, None),
        }
        times = {name: [] for name in cmds}
        for _ in range(execs):
            for name, (argv, env, inputs) in cmds.items():
                times[name].append(spawn(argv, env, inputs) * 1000)
        for name, values in times.items():
            self.record(name, statistics.median(values))

    # -- 4. memory ------------------------------------------------------------
    def memory(self, execs):
        """Max RSS (MiB) of a QUIT session and of a session queueing one message, vs `-I -S -c pass`.

        Through /usr/bin/time: the ru_maxrss that wait4 reports for a child of
        this driver counts the driver's own ~15 MiB (its pre-exec address space).
        """
        gnu_time, out = tool("time"), os.path.join(self.tmp, "maxrss")
        cmds = {
            "smtpd_rss_quit_mib": ([self.smtpd], self.session_env, {0: b"QUIT\r\n"}),
            "smtpd_rss_mail_mib": ([self.smtpd], self.session_env, {0: MAIL_SESSION}),
            "python_rss_mib": ([VPY, "-I", "-S", "-c", "pass"], os.environ, None),
        }
        for name, (argv, env, inputs) in cmds.items():
            values = []
            for _ in range(execs):
                spawn([gnu_time, "-f", "%M", "-o", out] + argv, env, inputs)
                with open(out) as f:
                    values.append(int(f.read().split()[-1]) / 1024)
            self.record(name, statistics.median(values))

    # -- 3. the queue -----------------------------------------------------------
    def queue(self, n, run):
        """qmail-queue exec'd per message and enqueue() in-process vs create+write+fsync+rename."""
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        from qmailpy.queue.enqueue import enqueue

        body = b"Subject: bench\n\n" + b"x" * (SIZES["queue_bytes"] - 17) + b"\n"
        envelope = ("Fbench@%s\0Trcpt@%s\0\0" % (DOMAIN, DOMAIN)).encode()
        raw = os.path.join(self.tmp, "raw")
        os.makedirs(os.path.join(raw, "new"), exist_ok=True)
        block = b"x" * SIZES["queue_bytes"]

        def raw_disk():
            for i in range(n):
                tmp = os.path.join(raw, "%d.%d" % (run, i))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, block)
                os.fsync(fd)
                os.close(fd)
                os.rename(tmp, os.path.join(raw, "new", "%d.%d" % (run, i)))

        def exec_queue():
            for _ in range(n):
                spawn([self.qq], self.env, {0: body, 1: envelope})

        def in_process():
            uid, pid = os.getuid(), os.getpid()
            for _ in range(n):
                enqueue(self.home, body, envelope, uid, pid, time.time())

        for name, fn, queues in (("disk_raw_per_s", raw_disk, False),
                                 ("qq_exec_per_s", exec_queue, True),
                                 ("qq_enqueue_per_s", in_process, True)):
            before = len(os.listdir(self.todo))
            start = time.perf_counter()
            fn()
            self.record(name, n / (time.perf_counter() - start))
            if queues and len(os.listdir(self.todo)) - before != n:
                raise BenchFailure("%s: queued %d of %d" % (name, len(os.listdir(self.todo)) - before, n))

    # -- 2. SMTP ----------------------------------------------------------------
    def start_servers(self, servers, log):
        """smtp-sink, qmail-smtpd under tcpserver, aiosmtpd: name -> (port, directory to count or None)."""
        aio_dir = os.path.join(self.tmp, "aiosmtpd")
        os.makedirs(aio_dir)
        return {
            "sink": (servers.start([tool("smtp-sink")] + (["-u", "nobody"] if os.geteuid() == 0 else [])
                                   + ["127.0.0.1:PORT", "256"], os.environ, log), None),
            "qmail": (servers.start([tool("tcpserver"), "-R", "-H", "-l", "localhost", "-c", "100",
                                     "127.0.0.1", "PORT", self.smtpd], self.env, log), self.todo),
            "aio": (servers.start([VPY, os.path.join(ROOT, "bench", "aiosmtpd_sink.py"), "PORT",
                                   aio_dir], os.environ, log), aio_dir),
        }

    def smtp(self, ports):
        """smtp-source against each server in turn: messages/s, each message counted on disk."""
        m = SIZES["smtp_messages"]
        for mode, opts in (("1", ["-s", str(SIZES["smtp_parallel"])]),
                           ("d", ["-d", "-s", str(SIZES["smtp_d_sessions"])])):
            for name, (port, directory) in ports.items():
                argv = [tool("smtp-source")] + opts + [
                    "-m", str(m), "-l", str(SIZES["message_bytes"]), "-M", DOMAIN,
                    "-f", "bench@" + DOMAIN, "-t", "rcpt@" + DOMAIN, "127.0.0.1:%d" % port]
                before = len(os.listdir(directory)) if directory else 0
                start = time.perf_counter()
                r = subprocess.run(argv, capture_output=True, timeout=300)
                elapsed = time.perf_counter() - start
                if r.returncode:
                    raise BenchFailure("smtp-source against %s: %s" % (name, r.stderr.decode()[-500:]))
                if directory and len(os.listdir(directory)) - before != m:
                    raise BenchFailure("%s stored %d of %d messages"
                                       % (name, len(os.listdir(directory)) - before, m))
                self.record("%s_%s_msgs_per_s" % (name, mode), m / elapsed)


SINK, AIO = "Postfix smtp-sink (C, no disk)", "aiosmtpd, fsync per message"
DISK, PY_IS = "create+write 4 KiB+fsync+rename", "venv python `-I -S -c pass`"
SMTP_1, SMTP_D = "SMTP 1 msg/conn, 20 parallel, sessions/s ↑", "SMTP ~100 msgs/conn (-d, 5 conns), msgs/s ↑"
# measure, qmailpy quantity, peer, peer quantity
ROWS = [
    ("session wall time, ms ↓", "smtpd_session_ms", "`python3 -c pass` via PATH", "python_path_ms"),
    ("session wall time, ms ↓", "smtpd_session_ms", "venv python `-c pass`", "python_venv_ms"),
    ("session wall time, ms ↓", "smtpd_session_ms", PY_IS, "python_venv_IS_ms"),
    (SMTP_1, "qmail_1_msgs_per_s", SINK, "sink_1_msgs_per_s"),
    (SMTP_1, "qmail_1_msgs_per_s", AIO, "aio_1_msgs_per_s"),
    (SMTP_D, "qmail_d_msgs_per_s", SINK, "sink_d_msgs_per_s"),
    (SMTP_D, "qmail_d_msgs_per_s", AIO, "aio_d_msgs_per_s"),
    ("qmail-queue exec'd per message, inserts/s ↑", "qq_exec_per_s", DISK, "disk_raw_per_s"),
    ("enqueue() in-process, inserts/s ↑", "qq_enqueue_per_s", DISK, "disk_raw_per_s"),
    ("max RSS, QUIT session, MiB ↓", "smtpd_rss_quit_mib", PY_IS, "python_rss_mib"),
    ("max RSS, session queueing 1 message, MiB ↓", "smtpd_rss_mail_mib", PY_IS, "python_rss_mib"),
]


def fmt(x):
    """3 significant digits at most, whole numbers from 100 up."""
    return "%.0f" % x if x >= 100 else "%.3g" % x


def build_rows(samples):
    """Medians of each side, and the median of the per-run ratios (pairs measured together)."""
    rows = []
    for measure, q, peer, p in ROWS:
        ratios = [a / b for a, b in zip(samples[q], samples[p])]
        rows.append({"measure": measure, "qmailpy": statistics.median(samples[q]), "peer": peer,
                     "peer_value": statistics.median(samples[p]), "ratio": statistics.median(ratios),
                     "ratios": ratios, "qmailpy_quantity": q, "peer_quantity": p})
    return rows


def table(rows):
    lines = ["| measure | qmailpy | peer | peer value | ratio |", "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s× |" % (r["measure"], fmt(r["qmailpy"]), r["peer"],
                                                     fmt(r["peer_value"]), fmt(r["ratio"])))
    return "\n".join(lines) + "\n"


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    aio = subprocess.run([VPY, "-c", "import aiosmtpd; print(aiosmtpd.__version__)"],
                         capture_output=True, text=True)
    return {"nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
            "cpu": cpu, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "kernel": platform.release(), "python": platform.python_version(),
            "postfix": postfix.stdout.strip() or "?", "aiosmtpd": aio.stdout.strip() or "?",
            "python3_on_path": shutil.which("python3"), "venv_python": os.path.realpath(VPY)}


def write_doc(block):
    """Replace the bench block of docs/performance.md, keeping the prose around it."""
    text = open(DOC).read() if os.path.exists(DOC) else "# Performance\n\n"
    if DOC_START not in text:
        text = text.rstrip("\n") + "\n\n%s\n%s\n" % (DOC_START, DOC_END)
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    with open(DOC + ".tmp", "w") as f:
        f.write(head + DOC_START + "\n" + block + DOC_END + tail)
    os.rename(DOC + ".tmp", DOC)


def progress(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def measure(args):
    """Every sample of every run: (samples, modules a plain session imports)."""
    for name in ("smtp-source", "smtp-sink", "tcpserver", "time"):
        tool(name)
    servers = Servers()
    with tempfile.TemporaryDirectory(prefix="qmailpy-bench.") as tmp:
        bench = Bench(tmp)
        modules = bench.imports()
        print("A plain qmail-smtpd session (HELO, QUIT) imports %d modules:\n%s\n"
              % (len(modules), ", ".join(modules)))
        heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
        if heavy:
            raise BenchFailure("a plain qmail-smtpd session imports %s (must load only when used)"
                               % ", ".join(heavy))
        log = os.path.join(tmp, "servers.log")
        try:
            ports = bench.start_servers(servers, log)
            for run_no in range(args.runs):
                progress("run %d/%d: start-up" % (run_no + 1, args.runs))
                bench.startup(SIZES["execs"])
                bench.memory(SIZES["rss_execs"])
                progress("run %d/%d: queue" % (run_no + 1, args.runs))
                bench.queue(SIZES["queue_inserts"], run_no)
                progress("run %d/%d: SMTP" % (run_no + 1, args.runs))
                bench.smtp(ports)
        except BenchFailure as e:
            kept = os.path.join(args.out, "servers.log")    # the servers' stderr, for the post-mortem
            shutil.copyfile(log, kept)
            raise BenchFailure("%s (server logs: %s)" % (e, kept)) from None
        finally:
            servers.stop_all()
    return bench.samples, modules


def report(args, samples, modules, elapsed):
    """The table on stdout, latest.json, and the block of docs/performance.md."""
    rows = build_rows(samples)
    info = machine()
    head = ("Measured %s on %s CPU(s), %s; %d run(s)%s, medians; ratio = qmailpy ÷ peer "
            "(↑ higher is better, ↓ lower is better); bench took %.0f s. "
            "`python3` on PATH: %s.\n\n"
            % (info["date"], info["nproc"], info["cpu"], args.runs,
               " (--quick)" if args.quick else "", elapsed, info["python3_on_path"]))
    print(head + table(rows))
    result = {"machine": info, "runs": args.runs, "quick": args.quick, "sizes": SIZES,
              "elapsed_s": elapsed, "session_imports": modules, "samples": samples, "rows": rows}
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    write_doc(head + table(rows) + "\nA plain session imports %d modules: %s.\n"
              % (len(modules), ", ".join(modules)))
    progress("wrote %s and %s" % (os.path.join(args.out, "latest.json"), DOC))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run instead of three")
    ap.add_argument("--runs", type=int, help="number of runs (default 3, 1 with --quick)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"), help="where latest.json goes")
    args = ap.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    os.makedirs(args.out, exist_ok=True)
    began = time.monotonic()
    try:
        samples, modules = measure(args)
    except BenchFailure as e:
        print("bench: FAIL: %s" % e, file=sys.stderr)
        return 1
    report(args, samples, modules, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
