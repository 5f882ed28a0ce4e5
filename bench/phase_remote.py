"""Rows 6-7: remote deliveries against smtp-source and Postfix, and qmail-send holding 10,000 messages."""
import os
import socket
import statistics
import subprocess
import time

import qmailsend
from procs import BenchFailure, count_files
from settings import DOMAIN, SIZES


class RemoteRows:
    """Bench's remote and held-queue rows (a mixin: the state is Bench's)."""
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
                # the home stays until the bench's tree goes: deleting its files now would slow
                # every file created in the next minutes (bench/settings.py)
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
                hold.close()                        # its home stays, as the remote rows' homes do

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
