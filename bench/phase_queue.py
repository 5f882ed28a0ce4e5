"""Row 3: queue insertions (exec'd, in-process, with clamd and spamd) against the raw fsync rate."""
import os
import shutil
import time

import daemons
from procs import BenchFailure, count_files, progress, spawn
from settings import DOMAIN, SIZES


class QueueRows:
    """Bench's queue rows (a mixin: the state is Bench's)."""
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
