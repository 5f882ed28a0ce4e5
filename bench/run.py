"""make bench: qmailpy measured against peers on the same machine, in the same run.

usage: .venv/bin/python bench/run.py [--quick] [--runs N] [--out DIR] [--from-json LATEST]

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
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import daemons  # noqa: E402  (bench/, beside this file)
import qmailsend  # noqa: E402
import tcpserver_rows  # noqa: E402  (qmail-tcpserver's rows)
from procs import BenchFailure, Servers, progress, tool  # noqa: E402
from report import DOC, build_rows, create_cost, machine, table, write_doc  # noqa: E402
from phase_queue import QueueRows  # noqa: E402
from phase_remote import RemoteRows  # noqa: E402
from phase_smtp import SmtpRows  # noqa: E402
from phase_startup import StartupRows  # noqa: E402
from rows import ROWS  # noqa: E402
from settings import DOMAIN, HEAVY, SIZES, TCP_ENV, TREE_PARENT, VPY  # noqa: E402



class Bench(StartupRows, QueueRows, SmtpRows, RemoteRows):
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




def measure(args):
    """Every sample of every run: (bench, modules a plain session imports, machine facts)."""
    for name in ("smtp-source", "smtp-sink", "tcpserver", "time"):
        tool(name)
    if not args.journal:
        return measure_in(args, TREE_PARENT)
    from journalfs import JournalError, journaled_tree
    try:
        with journaled_tree(TREE_PARENT) as parent:
            return measure_in(args, parent)
    except JournalError as e:
        raise BenchFailure(str(e)) from None


def measure_in(args, parent):
    """measure() with the bench's tree in `parent` (None: the system's temporary directory)."""
    servers = Servers()
    with tempfile.TemporaryDirectory(prefix="qmailpy-bench.", dir=parent) as tmp:
        create_ms = create_cost(tmp)
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
        info["create_ms_at_start"] = create_ms
    return bench, modules, info


class Saved:
    """What report() needs of a Bench, from a saved latest.json."""

    def __init__(self, saved):
        self.samples, self.na, self.details = saved["samples"], saved["not_measured"], saved["details"]
        self.privileges = saved["privileges"]

    def who(self):
        return self.privileges


def report(args, bench, modules, info, elapsed):
    """The table on stdout, latest.json, and the block of docs/performance.md."""
    rows = build_rows(ROWS, bench.samples, bench.na)
    head = ("Measured %s on %s CPU(s), %s, %d MiB RAM, the bench's tree on %s, Linux %s, "
            "Python %s; %s. %d run(s)%s, medians; ratio = qmailpy ÷ peer (↑ higher is better, "
            "↓ lower is better); bench took %.0f s. `python3` on PATH: %s. Creating a file in a new "
            "directory of the bench's tree cost %.3f ms of CPU at the start, %.3f ms at the end "
            "(bench/settings.py says why that matters).\n\n"
            % (info["date"], info["nproc"], info["cpu"], info["mem_mib"], info["tmp_fs"], info["kernel"],
               info["python"], bench.who(), args.runs, " (--quick)" if args.quick else "", elapsed,
               info["python3_on_path"], info["create_ms_at_start"], info["create_ms_at_end"]))
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
    ap.add_argument("--from-json", metavar="LATEST",
                    help="measure nothing: the table and docs/performance.md again from a saved "
                         "latest.json (after a change to the rows)")
    ap.add_argument("--journal", action="store_true",
                    help="put the bench's tree on a new loop-mounted ext4 with a journal (root; "
                         "bench/journalfs.py), for machines whose own file system has none")
    args = ap.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    os.makedirs(args.out, exist_ok=True)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        args.runs, args.quick = saved["runs"], saved["quick"]
        report(args, Saved(saved), saved["session_imports"], saved["machine"], saved["elapsed_s"])
        return 0
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
