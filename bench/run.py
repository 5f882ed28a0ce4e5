"""make bench: qmailpy measured against peers on the same machine, in the same run.

usage: .venv/bin/python bench/run.py [--quick] [--runs N] [--out DIR]

These shared machines drift by up to 3x from minute to minute
(/work/shared/design/performance-facts.md), so an absolute figure says little:
every row is a ratio qmailpy / peer, the two measured back to back in the same
run; the bench repeats the runs (3 by default, 1 with --quick) and reports
medians. Output: a Markdown table on stdout, raw samples and medians in
DIR/latest.json (default bench/results), and the table in docs/performance.md.

What it measures, per run: start-up of one qmail-smtpd session; SMTP with
smtp-source against qmail-smtpd under tcpserver, smtp-sink, aiosmtpd and a
private Postfix (bench/postfix.py: its own config, queue and data directories
in the temporary tree, as root; SMTP -> Maildir and remote rows too);
queue insertions (qmail-queue exec'd, enqueue() in-process, qmail-queue with
clamd and with spamd filtering) against the raw fsync rate of the same disk;
SMTP -> Maildir end to end (tcpserver, qmail-smtpd, qmail-send, the real
qmail-local); remote deliveries to smtp-sink at concurrency 1, 20, 100, 500
against smtp-source at the same concurrency; memory of a session and of
qmail-send holding 10,000 queued messages. qmail-tcpserver's rows (the same
SMTP runs with qmail-smtpd forked instead of exec'd, and 100 idle sessions
under each front end) live in bench/tcpserver_rows.py.

It fails (exit 1) when a plain qmail-smtpd session imports click, dns, spf or
pymysql, when a server loses a message, when a delivery is deferred or fails,
or when a program exits non-zero. clamd and spamd rows say "n/a (reason)"
when the daemons cannot run here. Every server runs on a free 127.0.0.1 port
from a temporary qmail home and is stopped by pid; nothing asks an outside
resolver (DNSCACHEIP=127.0.0.1).
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import daemons  # noqa: E402  (bench/, beside this file)
import postfix  # noqa: E402
import qmailsend  # noqa: E402
import tcpserver_rows  # noqa: E402  (qmail-tcpserver's rows)
from procs import BenchFailure, Servers, count_files, spawn, tool  # noqa: E402
from report import DOC, build_rows, machine, table, write_doc  # noqa: E402

VPY = os.path.join(ROOT, ".venv", "bin", "python3")
DOMAIN = "bench.example"
HEAVY = ("click", "dns", "spf", "pymysql")
# what tcpserver puts in qmail-smtpd's environment, for sessions run without it
TCP_ENV = {"PROTO": "TCP", "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "25",
           "TCPLOCALHOST": "localhost", "TCPREMOTEIP": "127.0.0.1"}
MAIL_SESSION = ("HELO bench\r\nMAIL FROM:<bench@%s>\r\nRCPT TO:<rcpt@%s>\r\nDATA\r\n"
                "Subject: bench\r\n\r\n%s\r\n.\r\nQUIT\r\n" % (DOMAIN, DOMAIN, "x" * 70)).encode()
SIZES = {                      # per run; kept small so 3 runs stay well under 10 minutes on 2 cores
    "execs": 60,               # start-up: execs of each command
    "rss_execs": 5,            # memory: execs of each command
    "smtp_messages": 500,      # smtp-source -m, both modes
    "smtp_parallel": 20,       # 1 message per connection: smtp-source -s
    "smtp_d_sessions": 5,      # -d: 5 connections of ~100 messages each
    "message_bytes": 2000,     # smtp-source -l, and the remote deliveries' messages
    "queue_inserts": 200,      # qmail-queue exec'd and enqueue(), each
    "disk_writes": 500,        # the raw disk rate, measured right before each row that compares with it
    "queue_bytes": 4096,       # message size for the queue rows, = the raw disk write
    "filter_inserts": 60,      # qmail-queue with clamd, with spamd; clamdscan, spamc: each
    "e2e_messages": 200,       # SMTP -> Maildir: smtp-source -m, 1 message per connection
    "e2e_parallel": 20,        # smtp-source -s
    "remote": [[1, 100], [20, 200], [100, 300], [500, 1000]],   # [concurrencyremote, deliveries]
    "remote_peer_messages": 2000,   # smtp-source -s N into the sink: at least this many (too fast otherwise)
    "postfix_remote": [[20, 1000], [100, 1000]],   # [concurrency, deliveries] of the private Postfix
    "held_messages": 10000,    # queued while qmail-send holds its remote deliveries
    "held_concurrency": 20,    # concurrencyremote then: deliveries waiting for a greeting
    "tls_seconds": 3,          # openssl s_time -new -time N against each TLS server
}


class Bench:
    """The temporary qmail homes, the samples of every run, and the rows built from them."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.samples = {}                  # quantity -> one value per run
        self.na = {}                       # quantity -> why it could not be measured
        self.details = {"retries": []}     # JSON only: per-process memory, daemon start-up, ...
        self.mailbox = qmailsend.mailbox_owner()
        self.writers = set()               # who wrote the queues qmail-smtpd and qmail-send worked on
        if os.geteuid() == 0:
            os.chmod(tmp, 0o755)           # qmail's users and the mailbox owner pass through it
        # No QMAILQUEUE: qmail-smtpd then hands each message to the home's qmail-queued
        # (smtpd/queueclient.py, started by smtpd_server()), the way a production install runs.
        self.env = {k: v for k, v in os.environ.items() if k not in qmailsend.ENV_DROP}
        self.home = self.new_home("qmail", {"me": DOMAIN, "rcpthosts": DOMAIN})
        self.env["QMAILHOME"] = self.home
        self.smtpd = os.path.join(self.home, "bin", "qmail-smtpd")
        self.qq = os.path.join(self.home, "bin", "qmail-queue")
        self.todo = os.path.join(self.home, "queue", "todo")
        # Sessions exec'd by the bench itself stay the invoking user (as under tcpserver -u):
        # QMAILPY_SINGLEUSER keeps a root-started qmail-smtpd from switching to qmaild.
        self.session_env = dict(self.env, QMAILPY_SINGLEUSER="1", **TCP_ENV)
        self.log = os.path.join(tmp, "servers.log")
        self.daemons = {}
        self.sends = []                    # running QmailSend objects, stopped at the end

    def new_home(self, name, controls):
        """tools/install.py into tmp/name, plus these controls; its path."""
        home = os.path.join(self.tmp, name)
        subprocess.run([VPY, os.path.join(ROOT, "tools", "install.py"), home, ROOT, VPY],
                       check=True, stdout=subprocess.DEVNULL)
        for key, value in controls.items():
            self.control(home, key, value)
        return home

    @staticmethod
    def control(home, name, value):
        path = os.path.join(home, "control", name)
        if value is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        with open(path, "w") as f:
            f.write(value + "\n")

    def record(self, name, value):
        self.samples.setdefault(name, []).append(value)

    def smtpd_server(self, servers, home):
        """qmail-queued, then tcpserver + qmail-smtpd of `home` on a free port, as a production
        install runs them: the service as the owner of its queue (qmailq:qmail when install.py
        found qmail's users), else as we are; QMAILPY_SINGLEUSER keeps root processes from
        switching to qmail's users made meanwhile."""
        env = dict(self.env, QMAILHOME=home)
        writer, ids = qmailsend.queue_writer(home), []
        self.writers.add(qmailsend.describe(writer))
        # qmail-queued binds its socket in root's sock/ as root, then becomes qmailq itself
        # (queued/main.py); started as qmailq it could not reach sock/
        servers.start_queued(home, env if writer else dict(env, QMAILPY_SINGLEUSER="1"), self.log)
        if writer:
            ids = ["-u", str(writer[0]), "-g", str(writer[1])]
        elif os.geteuid() == 0:
            env["QMAILPY_SINGLEUSER"] = "1"
        return servers.start([tool("tcpserver"), "-R", "-H", "-l", "localhost", "-c", "100"] + ids
                             + ["127.0.0.1", "PORT", os.path.join(home, "bin", "qmail-smtpd")], env, self.log)

    def who(self):
        """Who ran what, for the report."""
        if os.geteuid() != 0:
            return "everything ran as uid %d" % os.geteuid()
        owner = self.details.get("maildir_file_owner") or (self.mailbox or ("?",))[0]
        return ("as root: queues written as %s%s; qmail-send's helpers as qmail's users when they exist; "
                "qmail-local as %s" % (" and ".join(sorted(self.writers)) or "?",
                                       " (qmail's users came or went during the bench)"
                                       if len(self.writers) > 1 else "", owner))

    def send_home(self, name, controls):
        """A fresh home for one qmail-send experiment, and who writes its queue."""
        home = self.new_home(name, controls)
        writer = qmailsend.queue_writer(home)
        self.writers.add(qmailsend.describe(writer))
        return home, writer

    def retrying(self, what, attempt):
        """attempt(n) once more (n = 2) when it failed while qmail's users were created or removed:
        a home laid out before that no longer matches who qmail-send's helpers run as."""
        for n in (1, 2):
            before = qmailsend.users()
            try:
                return attempt(n)
            except qmailsend.SendFailure as e:
                changed = qmailsend.users() != before
                if n == 1 and changed:
                    progress("%s: qmail's users changed meanwhile (another process); once more" % what)
                    self.details["retries"].append("%s: %s" % (what, str(e)[:300]))
                    continue
                raise BenchFailure("%s: %s%s" % (what, e, " (qmail's users were created or removed meanwhile"
                                                 " by another process)" if changed else "")) from None

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

    # -- 2. memory of a session ---------------------------------------------------
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
    def queue_message(self):
        body = b"Subject: bench\n\n" + b"x" * (SIZES["queue_bytes"] - 17) + b"\n"
        envelope = ("Fbench@%s\0Trcpt@%s\0\0" % (DOMAIN, DOMAIN)).encode()
        return body, envelope

    def disk(self, name):
        """The raw create + write 4 KiB + fsync + rename rate of the bench's file system, now."""
        n, block = SIZES["disk_writes"], b"x" * SIZES["queue_bytes"]
        raw = os.path.join(self.tmp, "raw")
        os.makedirs(os.path.join(raw, "new"), exist_ok=True)
        names = ["%s.%d" % (name, i) for i in range(n)]
        start = time.perf_counter()
        for i in names:
            tmp = os.path.join(raw, i)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, block)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(raw, "new", i))
        self.record(name, n / (time.perf_counter() - start))
        for i in names:
            os.unlink(os.path.join(raw, "new", i))

    def queue(self, n):
        """qmail-queue exec'd per message and enqueue() in-process vs create+write+fsync+rename."""
        from qmailpy.queue.enqueue import enqueue

        body, envelope = self.queue_message()

        def exec_queue():
            for _ in range(n):
                spawn([self.qq], self.env, {0: body, 1: envelope})

        def in_process():
            uid, pid = os.getuid(), os.getpid()
            for _ in range(n):
                enqueue(self.home, body, envelope, uid, pid, time.time())

        self.disk("disk_raw_per_s")
        for name, fn in (("qq_exec_per_s", exec_queue), ("qq_enqueue_per_s", in_process)):
            before = len(os.listdir(self.todo))
            start = time.perf_counter()
            fn()
            self.record(name, n / (time.perf_counter() - start))
            if len(os.listdir(self.todo)) - before != n:
                raise BenchFailure("%s: queued %d of %d" % (name, len(os.listdir(self.todo)) - before, n))

    def start_filters(self):
        """clamd and spamd (offline), and the home whose qmail-queue asks them."""
        self.daemons = daemons.start_filters(os.path.join(self.tmp, "daemons"))
        self.filter_home = self.new_home("filters", {"me": DOMAIN})
        for name, d in self.daemons.items():
            if isinstance(d, daemons.Daemon):
                self.details["%s_start_s" % name] = round(d.ready_after, 2)
                progress("%s ready after %.1f s" % (name, d.ready_after))
            else:
                progress("%s: n/a (%s)" % (name, d))

    def filters(self, n):
        """qmail-queue exec'd with clamd / spamd filtering every recipient, and the daemons' own C
        clients (clamdscan --stream, spamc) exec'd with the same message; inserts (scans) per second."""
        body, envelope = self.queue_message()
        self.disk("disk_raw_filters_per_s")
        qq = os.path.join(self.filter_home, "bin", "qmail-queue")
        env = dict(self.env, QMAILHOME=self.filter_home)
        todo = os.path.join(self.filter_home, "queue", "todo")
        for name, glob in (("clamd", "clamglobal"), ("spamd", "spamglobal")):
            ours, peer = "qq_%s_per_s" % name, "%s_client_per_s" % name
            d = self.daemons.get(name)
            if not isinstance(d, daemons.Daemon):
                self.na[ours] = self.na[peer] = str(d or "not started")
                continue
            if ours in self.na:                         # gave up in an earlier run
                continue
            for other in ("clamglobal", "spamglobal"):
                self.control(self.filter_home, other, "1" if other == glob else "0")
            self.control(self.filter_home, name + "socket", d.sock)
            if name == "clamd":
                client = [shutil.which("clamdscan") or "/usr/bin/clamdscan", "--config-file=" + d.conf,
                          "--stream", "--no-summary", "-"]
            else:
                client = [shutil.which("spamc") or "/usr/bin/spamc", "-U", d.sock, "-u", "rcpt@" + DOMAIN]
            try:
                before = count_files(todo)
                start = time.perf_counter()
                for _ in range(n):
                    spawn([qq], env, {0: body, 1: envelope})
                elapsed = time.perf_counter() - start
                if count_files(todo) - before != n:
                    raise BenchFailure("queued %d of %d" % (count_files(todo) - before, n))
                if not os.path.exists(client[0]):
                    raise BenchFailure("%s not installed" % os.path.basename(client[0]))
                start = time.perf_counter()
                for _ in range(n):
                    spawn(client, os.environ, {0: body})
                peer_elapsed = time.perf_counter() - start
            except BenchFailure as e:
                reason = "%s: %s; %s" % (name, e, d.tail()) if d.proc.poll() is not None else str(e)
                self.na[ours] = self.na[peer] = reason[:300]
                progress("%s rows: n/a (%s)" % (name, reason))
                continue
            self.record(ours, n / elapsed)
            self.record(peer, n / peer_elapsed)

    # -- TLS handshakes -------------------------------------------------------
    def start_tls(self, servers):
        """A certificate made now (openssl req -x509), qmail-smtpd with SMTPS=1 under tcpserver
        and under qmail-tcpserver using it as control/servercert.pem, and `openssl s_server`
        with the same one."""
        d = os.path.join(self.tmp, "tlscert")
        os.makedirs(d)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
        home = self.new_home("tls", {"me": DOMAIN, "rcpthosts": DOMAIN})
        with open(cert) as a, open(key) as b:
            self.control(home, "servercert.pem", a.read() + b.read().rstrip("\n"))
        env = dict(self.env, QMAILHOME=home, SMTPS="1", QMAILPY_SINGLEUSER="1")
        smtpd = ["-R", "-H", "-l", "localhost", "-c", "100", "127.0.0.1", "PORT", os.path.join(home, "bin", "qmail-smtpd")]
        self.tls_ports = {
            "qmail": servers.start([tool("tcpserver")] + smtpd, env, self.log),
            "qmail_fork": servers.start([os.path.join(home, "bin", "qmail-tcpserver")] + smtpd, env, self.log),
            "s_server": servers.start(["openssl", "s_server", "-quiet", "-accept", "127.0.0.1:PORT", "-cert", cert,
                                       "-key", key, "-naccept", "100000000"], os.environ, self.log),
        }
        self.postfix_tls = None
        try:
            self.postfix_tls = postfix.start_tls(os.path.join(self.tmp, "postfix"), DOMAIN, cert, key)
            self.tls_ports["postfix"] = self.postfix_tls.port
        except postfix.PostfixUnavailable as e:
            progress("private Postfix (TLS): n/a (%s)" % e)
            self.na["pf_tls_handshakes_per_s"] = str(e)[:300]

    def tls(self):
        """Full handshakes per second (openssl s_time -new) against each, one after the other."""
        for name, quantity in (("qmail", "tls_handshakes_per_s"), ("qmail_fork", "tls_handshakes_fork_per_s"),
                               ("s_server", "s_server_handshakes_per_s"), ("postfix", "pf_tls_handshakes_per_s")):
            if name not in self.tls_ports:
                continue
            start = time.perf_counter()
            r = subprocess.run(["openssl", "s_time", "-connect", "127.0.0.1:%d" % self.tls_ports[name], "-new",
                                "-time", str(SIZES["tls_seconds"])], capture_output=True, text=True, timeout=120)
            elapsed = time.perf_counter() - start
            got = re.search(r"(\d+) connections in [\d.]+ real seconds", r.stdout)
            if r.returncode != 0 or got is None or int(got.group(1)) == 0:
                raise BenchFailure("openssl s_time against %s: %s" % (name, (r.stdout + r.stderr)[-300:]))
            self.record(quantity, int(got.group(1)) / elapsed)

    # -- 4. SMTP ----------------------------------------------------------------
    def start_servers(self, servers):
        """smtp-sink, qmail-smtpd under tcpserver, aiosmtpd: name -> (port, directory to count or None)."""
        aio_dir = os.path.join(self.tmp, "aiosmtpd")
        os.makedirs(aio_dir)
        self.ports = {
            # -m: more simultaneous sessions than the 500 remote deliveries at once
            "sink": (servers.start([tool("smtp-sink")] + (["-u", "nobody"] if os.geteuid() == 0 else [])
                                   + ["-m", "1024", "127.0.0.1:PORT", "1024"], os.environ, self.log), None),
            "qmail": (self.smtpd_server(servers, self.home), self.todo),
            "fork": (tcpserver_rows.start(self, servers, tool), self.todo),
            "aio": (servers.start([VPY, os.path.join(ROOT, "bench", "aiosmtpd_sink.py"), "PORT",
                                   aio_dir], os.environ, self.log), aio_dir),
        }
        self.start_postfix()
        return self.ports

    # -- the private Postfix (bench/postfix.py) ------------------------------------------
    PF_QUANTITIES = ["pf_1_msgs_per_s", "pf_d_msgs_per_s", "pf_e2e_per_s"] + [
        "pf_remote_c%d_per_s" % c for c, _ in SIZES["postfix_remote"]]

    def start_postfix(self):
        """The "accept" instance joins the SMTP rows (its queue/incoming counted); "mta" is for the
        end-to-end and remote rows. Rows say n/a (reason) when Postfix cannot run here."""
        self.postfix = None
        try:
            accept, mta = postfix.start_pair(os.path.join(self.tmp, "postfix"), DOMAIN,
                                             self.mailbox[1:] if self.mailbox else None, self.ports["sink"][0])
        except postfix.PostfixUnavailable as e:
            progress("private Postfix: n/a (%s)" % e)
            self.postfix_na(str(e))
            return
        self.postfix = (accept, mta)
        self.ports["pf"] = (accept.port, accept.incoming())
        progress("private Postfix: accept on 127.0.0.1:%d, mta on 127.0.0.1:%d" % (accept.port, mta.port))

    def postfix_na(self, reason):
        for q in self.PF_QUANTITIES:
            self.na[q] = reason[:300]

    def postfix_e2e(self):
        if not self.postfix:
            return
        mta = self.postfix[1]
        m = SIZES["e2e_messages"]
        argv = self.smtp_source(["-s", str(SIZES["e2e_parallel"])], mta.port, m)
        try:
            self.record("pf_e2e_per_s", postfix.end_to_end(mta, argv, m))
        except postfix.PostfixUnavailable as e:
            raise BenchFailure(str(e)) from None

    def postfix_remote(self, run):
        if not self.postfix:
            return
        mta = self.postfix[1]
        for conc, m in SIZES["postfix_remote"]:
            argv = self.smtp_source(["-s", "20"], mta.port, m, rcpt="r@remote.example")
            try:
                self.record("pf_remote_c%d_per_s" % conc, postfix.remote(mta, argv, m, conc))
            except postfix.PostfixUnavailable as e:
                raise BenchFailure(str(e)) from None

    def stop_postfix(self):
        for pf in getattr(self, "postfix", None) or ():
            pf.stop()
        if getattr(self, "postfix_tls", None) is not None:
            self.postfix_tls.stop()

    def smtp_source(self, opts, port, m, rcpt="rcpt@" + DOMAIN):
        return [tool("smtp-source")] + opts + [
            "-m", str(m), "-l", str(SIZES["message_bytes"]), "-M", DOMAIN,
            "-f", "bench@" + DOMAIN, "-t", rcpt, "127.0.0.1:%d" % port]

    def smtp(self):
        """smtp-source against each server in turn: messages/s, each message counted on disk."""
        m = SIZES["smtp_messages"]
        for mode, opts in (("1", ["-s", str(SIZES["smtp_parallel"])]),
                           ("d", ["-d", "-s", str(SIZES["smtp_d_sessions"])])):
            for name, (port, directory) in self.ports.items():
                before = len(os.listdir(directory)) if directory else 0
                start = time.perf_counter()
                r = subprocess.run(self.smtp_source(opts, port, m), capture_output=True, timeout=300)
                elapsed = time.perf_counter() - start
                if r.returncode:
                    raise BenchFailure("smtp-source against %s: %s" % (name, r.stderr.decode()[-500:]))
                if directory and len(os.listdir(directory)) - before != m:
                    raise BenchFailure("%s stored %d of %d messages"
                                       % (name, len(os.listdir(directory)) - before, m))
                self.record("%s_%s_msgs_per_s" % (name, mode), m / elapsed)

    # -- 5. SMTP -> Maildir -------------------------------------------------------
    def start_e2e(self, servers):
        """A home with a virtual domain, one mailbox made by qmail-users, qmail-send and tcpserver."""
        home = self.new_home("e2e", {"me": "mx." + DOMAIN, "locals": "mx." + DOMAIN,
                                     "virtualdomains": "%s:%s" % (DOMAIN, DOMAIN), "rcpthosts": DOMAIN})
        vdir = os.path.join(home, "vpopmail")      # qmail-users gives new mailboxes this directory's owner
        os.makedirs(vdir, 0o755)
        if self.mailbox:
            os.chown(vdir, *self.mailbox[1:])
        env = dict(self.env, QMAILHOME=home)
        for argv in (["adddomain", DOMAIN, "--no-rcpthosts"], ["adduser", "rcpt@" + DOMAIN, "-p", "bench"]):
            r = subprocess.run([os.path.join(home, "bin", "qmail-users")] + argv, env=env,
                               capture_output=True, timeout=60)
            if r.returncode:
                raise BenchFailure("qmail-users %s: %s" % (" ".join(argv), r.stderr.decode()[-300:]))
        self.maildir_new = os.path.join(vdir, "domains", DOMAIN, "rcpt", "Maildir", "new")
        if not os.path.isdir(self.maildir_new):
            raise BenchFailure("qmail-users made no %s" % self.maildir_new)
        self.e2e_send = qmailsend.QmailSend(home, os.path.join(self.tmp, "e2e-send.log"))
        self.sends.append(self.e2e_send)
        self.e2e_send.ready()
        self.e2e_port = self.smtpd_server(servers, home)

    def e2e(self):
        """smtp-source into qmail-smtpd; done when every message is a file in the mailbox's Maildir/new."""
        m, send = SIZES["e2e_messages"], self.e2e_send
        self.disk("disk_raw_e2e_per_s")
        before = count_files(self.maildir_new)
        argv = self.smtp_source(["-s", str(SIZES["e2e_parallel"])], self.e2e_port, m)
        start = time.perf_counter()
        source = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            end = send.wait(lambda: count_files(self.maildir_new) - before >= m, 60 + m, "%d Maildir files" % m)
        except qmailsend.SendFailure as e:
            raise BenchFailure(str(e)) from None
        finally:
            err = source.communicate(timeout=120)[1]
        if source.returncode:
            raise BenchFailure("smtp-source into the e2e home: %s" % err.decode()[-500:])
        self.record("e2e_msgs_per_s", m / (end - start))
        if "maildir_file_owner" not in self.details:       # who qmail-local ran as
            with os.scandir(self.maildir_new) as it:
                uid = next(it).stat().st_uid
            try:
                import pwd
                self.details["maildir_file_owner"] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.details["maildir_file_owner"] = uid

    # -- 6. remote deliveries ------------------------------------------------------
    def remote_message(self):
        line = b"x" * 75 + b"\n"
        return b"Subject: bench\n\n" + line * (SIZES["message_bytes"] // len(line))

    def remote(self, run):
        """qmail-send + qmail-rspawn + the real qmail-remote into smtp-sink (control/smtproutes) at each
        concurrencyremote, timed from the first delivery's start to the last message's end; then
        smtp-source with as many parallel sessions, 1 message each, into the same sink."""
        from qmailpy.proto import qq
        sink, body = self.ports["sink"][0], self.remote_message()
        for conc, m in SIZES["remote"]:
            def attempt(n):
                home, writer = self.send_home("remote-%d-%d-%d" % (run, conc, n), {
                    "me": "mx." + DOMAIN, "smtproutes": ":127.0.0.1:%d" % sink, "concurrencyremote": str(conc)})
                qmailsend.inject(home, ((body, qq.encode(b"bench@" + DOMAIN.encode(),
                                                         [b"r%d@remote.example" % i])) for i in range(m)), writer)
                send = qmailsend.QmailSend(home, os.path.join(self.tmp, "remote-send.log"))
                self.sends.append(send)
                try:
                    end = send.wait(lambda: send.counts["end"] >= m, 60 + m, "%d end msg lines" % m)
                    if send.counts["success"] != m:
                        raise qmailsend.SendFailure("%d successes for %d messages" % (send.counts["success"], m))
                    if send.stop():
                        raise qmailsend.SendFailure("exited with %s after SIGTERM" % send.proc.returncode)
                finally:
                    send.stop()                     # no-op when stopped above
                shutil.rmtree(home, ignore_errors=True)
                return m / (end - send.first["start"])
            self.record("remote_c%d_per_s" % conc, self.retrying("remote, concurrency %d" % conc, attempt))
            peer_m = max(m, SIZES["remote_peer_messages"])
            argv = self.smtp_source(["-s", str(conc)], sink, peer_m, rcpt="r@remote.example")
            start = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, timeout=300)
            if r.returncode:
                raise BenchFailure("smtp-source -s %d into smtp-sink: %s" % (conc, r.stderr.decode()[-500:]))
            self.record("source_c%d_per_s" % conc, peer_m / (time.perf_counter() - start))

    # -- 7. qmail-send holding 10,000 messages ---------------------------------------
    def held(self, run):
        """qmail-send whose remote deliveries all wait for a greeting that never comes (a socket that
        listens and never accepts), while 10,000 tiny messages are queued; VmRSS/VmHWM from /proc once
        qmail-todo has handed every one of them over."""
        from qmailpy.proto import qq
        n, conc = SIZES["held_messages"], SIZES["held_concurrency"]

        def attempt(k):
            hold = socket.socket()
            hold.bind(("127.0.0.1", 0))
            hold.listen(4096)
            home, writer = self.send_home("held-%d-%d" % (run, k), {
                "me": "mx." + DOMAIN, "concurrencyremote": str(conc),
                "smtproutes": ":127.0.0.1:%d" % hold.getsockname()[1]})
            send = qmailsend.QmailSend(home, os.path.join(self.tmp, "held-send.log"))
            self.sends.append(send)
            todo = os.path.join(home, "queue", "todo")
            try:
                send.ready()
                time.sleep(0.5)
                idle = send.tree()
                body = b"Subject: held\n\nbody\n"
                qmailsend.inject(home, ((body, qq.encode(b"bench@" + DOMAIN.encode(), [b"h%d@remote.example" % i]))
                                        for i in range(n)), writer)
                send.wait(lambda: send.counts["new"] >= n and not count_files(todo), 600,
                          "%d new msg lines" % n, interval=0.1)
                time.sleep(1)
                full = send.tree()
                send.poll()
                return idle, full, send.counts["start"]
            finally:
                send.stop(after_term=hold.close)   # held qmail-remotes get a reset, qmail-send exits
                hold.close()
                shutil.rmtree(home, ignore_errors=True)

        idle, full, held = self.retrying("holding %d messages" % n, attempt)

        def by_role(tree, role):
            return [m for r, m in tree if r == role]
        sender = by_role(full, "send")[0]
        remotes = [m["rss"] for m in by_role(full, "grandchild") if m.get("name") == "qmail-remote"]
        if not remotes:
            raise BenchFailure("holding %d messages: no qmail-remote waiting (%d deliveries started)" % (n, held))
        self.record("send_rss_held_mib", sender["rss"])
        self.record("send_hwm_held_mib", sender["hwm"])
        self.record("send_rss_idle_mib", by_role(idle, "send")[0]["rss"])
        self.record("helpers_rss_held_mib", sum(m["rss"] for m in by_role(full, "helper")))
        self.record("helpers_rss_idle_mib", sum(m["rss"] for m in by_role(idle, "helper")))
        self.record("remote_rss_held_mib", statistics.median(remotes))
        def brief(tree):
            return ["%s uid %s: VmRSS %.1f, VmHWM %.1f MiB" % (m.get("name"), m.get("uid"), m["rss"], m["hwm"])
                    for r, m in tree if r != "grandchild"]
        self.details.setdefault("held_processes", []).append(
            {"idle": brief(idle), "full": brief(full), "qmail_remote_waiting": len(remotes),
             "deliveries_started": held})

    def stop_sends(self):
        for send in self.sends:
            if send.proc.poll() is None:
                send.stop()
        self.sends = []


SINK, AIO = "Postfix smtp-sink (C, no disk)", "aiosmtpd, fsync per message"
DISK, PY_IS = "create+write 4 KiB+fsync+rename", "venv python `-I -S -c pass`"
SMTP_1, SMTP_D = "SMTP 1 msg/conn, 20 parallel, sessions/s ↑", "SMTP ~100 msgs/conn (-d, 5 conns), msgs/s ↑"
CLAMD, SPAMD = "qmail-queue exec'd + clamd INSTREAM, inserts/s ↑", "qmail-queue exec'd + spamd, inserts/s ↑"
E2E = "SMTP → Maildir end to end, 1 msg/conn, 20 parallel, msgs/s ↑"
TLS_HS = "TLS handshakes (SMTPS, `openssl s_time -new`, one at a time), /s ↑"
PF_SMTP = "private Postfix smtpd (C, fsync'd queue, no qmgr)"
PF_E2E = "private Postfix, smtpd → virtual(8) → Maildir"
# measure, qmailpy quantity, peer, peer quantity
ROWS = [
    ("session wall time, ms ↓", "smtpd_session_ms", "`python3 -c pass` via PATH", "python_path_ms"),
    ("session wall time, ms ↓", "smtpd_session_ms", "venv python `-c pass`", "python_venv_ms"),
    ("session wall time, ms ↓", "smtpd_session_ms", PY_IS, "python_venv_IS_ms"),
    (SMTP_1, "qmail_1_msgs_per_s", SINK, "sink_1_msgs_per_s"),
    (SMTP_1, "qmail_1_msgs_per_s", AIO, "aio_1_msgs_per_s"),
    (SMTP_1, "qmail_1_msgs_per_s", PF_SMTP, "pf_1_msgs_per_s"),
    (SMTP_D, "qmail_d_msgs_per_s", SINK, "sink_d_msgs_per_s"),
    (SMTP_D, "qmail_d_msgs_per_s", AIO, "aio_d_msgs_per_s"),
    (SMTP_D, "qmail_d_msgs_per_s", PF_SMTP, "pf_d_msgs_per_s"),
    ("qmail-queue exec'd per message, inserts/s ↑", "qq_exec_per_s", DISK, "disk_raw_per_s"),
    ("enqueue() in-process, inserts/s ↑", "qq_enqueue_per_s", DISK, "disk_raw_per_s"),
    (CLAMD, "qq_clamd_per_s", DISK, "disk_raw_filters_per_s"),
    (CLAMD, "qq_clamd_per_s", "clamdscan --stream (C) exec'd, no queue", "clamd_client_per_s"),
    (SPAMD, "qq_spamd_per_s", DISK, "disk_raw_filters_per_s"),
    (SPAMD, "qq_spamd_per_s", "spamc (C) exec'd, no queue", "spamd_client_per_s"),
    (E2E, "e2e_msgs_per_s", DISK, "disk_raw_e2e_per_s"),
    (E2E, "e2e_msgs_per_s", PF_E2E, "pf_e2e_per_s"),
    (TLS_HS, "tls_handshakes_per_s", "`openssl s_server` (C), the same certificate", "s_server_handshakes_per_s"),
    (TLS_HS.replace("SMTPS", "SMTPS under qmail-tcpserver"), "tls_handshakes_fork_per_s",
     "`openssl s_server` (C), the same certificate", "s_server_handshakes_per_s"),
    (TLS_HS, "tls_handshakes_per_s", "private Postfix smtpd (C), SMTPS, the same certificate",
     "pf_tls_handshakes_per_s"),
    (TLS_HS.replace("SMTPS", "SMTPS under qmail-tcpserver"), "tls_handshakes_fork_per_s",
     "private Postfix smtpd (C), SMTPS, the same certificate", "pf_tls_handshakes_per_s"),
] + [
    ("remote deliveries, concurrency %d, msgs/s ↑" % c, "remote_c%d_per_s" % c,
     "smtp-source -s %d into the same smtp-sink" % c, "source_c%d_per_s" % c) for c, _ in SIZES["remote"]
] + [
    ("remote deliveries, concurrency %d, msgs/s ↑" % c, "remote_c%d_per_s" % c,
     "private Postfix smtp(8) → the same smtp-sink, concurrency %d" % c, "pf_remote_c%d_per_s" % c)
    for c, _ in SIZES["postfix_remote"]
] + [
    ("max RSS, QUIT session, MiB ↓", "smtpd_rss_quit_mib", PY_IS, "python_rss_mib"),
    ("max RSS, session queueing 1 message, MiB ↓", "smtpd_rss_mail_mib", PY_IS, "python_rss_mib"),
    ("qmail-send VmRSS, 10,000 messages queued, MiB ↓", "send_rss_held_mib",
     "the same qmail-send, empty queue", "send_rss_idle_mib"),
    ("qmail-send VmHWM, 10,000 messages queued, MiB ↓", "send_hwm_held_mib", PY_IS, "python_rss_mib"),
    ("qmail-send's 5 helpers, VmRSS total, 10,000 queued, MiB ↓", "helpers_rss_held_mib",
     "the same helpers, empty queue", "helpers_rss_idle_mib"),
    ("qmail-remote VmRSS, 1 delivery waiting for a greeting, MiB ↓", "remote_rss_held_mib", PY_IS,
     "python_rss_mib"),
] + tcpserver_rows.ROWS


def progress(msg):
    print("bench: %s" % msg, file=sys.stderr, flush=True)


def measure(args):
    """Every sample of every run: (bench, modules a plain session imports, machine facts)."""
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
        progress("qmail's users here now: %s; mailbox owner: %s"
                 % (", ".join(sorted(qmailsend.users())) or "none", (bench.mailbox or ("us",))[0]))
        try:
            bench.start_servers(servers)
            bench.start_filters()
            bench.start_e2e(servers)
            bench.start_tls(servers)
            phases = [
                ("start-up", lambda run: (bench.startup(SIZES["execs"]), bench.memory(SIZES["rss_execs"]))),
                ("queue", lambda run: bench.queue(SIZES["queue_inserts"])),
                ("filters", lambda run: bench.filters(SIZES["filter_inserts"])),
                ("SMTP", lambda run: bench.smtp()),
                ("%d idle sessions" % tcpserver_rows.IDLE_SESSIONS,
                 lambda run: tcpserver_rows.memory_phase(bench, servers)),
                ("SMTP -> Maildir", lambda run: (bench.e2e(), bench.postfix_e2e())),
                ("TLS handshakes", lambda run: bench.tls()),
                ("remote deliveries", lambda run: (bench.remote(run), bench.postfix_remote(run))),
                ("qmail-send holding %d messages" % SIZES["held_messages"], bench.held),
            ]
            for run_no in range(args.runs):
                began = time.monotonic()
                for name, phase in phases:
                    progress("run %d/%d: %s" % (run_no + 1, args.runs, name))
                    t0 = time.monotonic()
                    phase(run_no)
                    bench.details.setdefault("phase_s", {}).setdefault(name, []).append(
                        round(time.monotonic() - t0, 1))
                progress("run %d/%d took %.0f s" % (run_no + 1, args.runs, time.monotonic() - began))
        except BenchFailure as e:
            kept = os.path.join(args.out, "servers.log")    # the servers' stderr, for the post-mortem
            shutil.copyfile(bench.log, kept)
            for name in ("e2e-send.log", "remote-send.log", "held-send.log"):
                if os.path.exists(os.path.join(tmp, name)):
                    shutil.copyfile(os.path.join(tmp, name), os.path.join(args.out, name))
            raise BenchFailure("%s (logs: %s)" % (e, args.out)) from None
        finally:
            bench.stop_sends()
            bench.stop_postfix()
            servers.stop_all()
            for d in bench.daemons.values():
                if isinstance(d, daemons.Daemon):
                    d.stop()
        info = machine(tmp, VPY)
    return bench, modules, info


def report(args, bench, modules, info, elapsed):
    """The table on stdout, latest.json, and the block of docs/performance.md."""
    rows = build_rows(ROWS, bench.samples, bench.na)
    head = ("Measured %s on %s CPU(s), %s, %d MiB RAM, %s temporary file system, Linux %s, "
            "Python %s; %s. %d run(s)%s, medians; ratio = qmailpy ÷ peer (↑ higher is better, "
            "↓ lower is better); bench took %.0f s. `python3` on PATH: %s.\n\n"
            % (info["date"], info["nproc"], info["cpu"], info["mem_mib"], info["tmp_fs"], info["kernel"],
               info["python"], bench.who(), args.runs, " (--quick)" if args.quick else "", elapsed,
               info["python3_on_path"]))
    print(head + table(rows))
    result = {"machine": info, "runs": args.runs, "quick": args.quick, "sizes": SIZES,
              "elapsed_s": elapsed, "privileges": bench.who(), "session_imports": modules,
              "samples": bench.samples, "not_measured": bench.na, "details": bench.details, "rows": rows}
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
        bench, modules, info = measure(args)
    except BenchFailure as e:
        print("bench: FAIL: %s" % e, file=sys.stderr)
        return 1
    report(args, bench, modules, info, time.monotonic() - began)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
