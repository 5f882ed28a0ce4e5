"""The qmail-tcpserver rows of `make bench`: the same SMTP runs as tcpserver + qmail-smtpd, and
the memory of 100 idle sessions under each front end.

qmail-tcpserver serves the same home as the tcpserver rows (the same qmail-queued, the same
queue counted on disk) with the same options (-R -H -l localhost -c 100, -u/-g as the queue's
writer), so the two rows differ only in exec versus workers; and against aiosmtpd and the private
Postfix's smtpd measured in the same run. Memory: 100 sessions that have
had their greeting and then wait; the front end and its children summed, as PSS (each
shared page divided among the processes that share it: what the machine really spends)
and as the plain RSS sum (shared pages counted in every process).
"""
import os
import socket
import time

from procs import BenchFailure

IDLE_SESSIONS = 100
SMTP_1 = "SMTP, 1 msg/conn, 20 parallel, msgs/s ↑"
SMTP_D = "SMTP, ~100 msgs/conn, 5 sessions, msgs/s ↑"
EXEC = "tcpserver + qmail-smtpd exec'd (same home, same run)"
PF_SMTP = "private Postfix smtpd (C, fsync'd queue, no qmgr)"
ROWS = [
    (SMTP_1 + " (qmail-tcpserver)", "fork_1_msgs_per_s", EXEC, "qmail_1_msgs_per_s"),
    (SMTP_1 + " (qmail-tcpserver)", "fork_1_msgs_per_s", "aiosmtpd (long-running, fsync per message)",
     "aio_1_msgs_per_s"),
    (SMTP_1 + " (qmail-tcpserver)", "fork_1_msgs_per_s", PF_SMTP, "pf_1_msgs_per_s"),
    (SMTP_D + " (qmail-tcpserver)", "fork_d_msgs_per_s", EXEC, "qmail_d_msgs_per_s"),
    (SMTP_D + " (qmail-tcpserver)", "fork_d_msgs_per_s", "aiosmtpd (long-running, fsync per message)",
     "aio_d_msgs_per_s"),
    (SMTP_D + " (qmail-tcpserver)", "fork_d_msgs_per_s", PF_SMTP, "pf_d_msgs_per_s"),
    ("qmail-tcpserver + %d idle sessions, PSS total, MiB ↓" % IDLE_SESSIONS, "fork_idle_pss_mib",
     "tcpserver + %d exec'd qmail-smtpd, PSS total" % IDLE_SESSIONS, "exec_idle_pss_mib"),
    ("qmail-tcpserver + %d idle sessions, VmRSS sum, MiB ↓" % IDLE_SESSIONS, "fork_idle_rss_mib",
     "tcpserver + %d exec'd qmail-smtpd, VmRSS sum" % IDLE_SESSIONS, "exec_idle_rss_mib"),
]


def start(bench, servers, tool, home=None, name="fork"):
    """qmail-tcpserver + qmail-smtpd of `home` (bench.home by default; its qmail-queued already
    runs); its port. Its pid is bench.front_pids[name]."""
    from qmailsend import queue_writer
    home = home or bench.home
    env = dict(bench.env, QMAILHOME=home)
    writer, ids = queue_writer(home), []
    if writer:
        ids = ["-u", str(writer[0]), "-g", str(writer[1])]
    elif os.geteuid() == 0:
        env["QMAILPY_SINGLEUSER"] = "1"
    port = servers.start([os.path.join(home, "bin", "qmail-tcpserver"), "-R", "-H", "-l", "localhost",
                          "-c", "100"] + ids + ["127.0.0.1", "PORT", os.path.join(home, "bin", "qmail-smtpd")],
                         env, bench.log)
    bench.front_pids = getattr(bench, "front_pids", {})
    bench.front_pids[name] = servers.procs[-1].pid
    return port


def _children(pid):
    """Direct children of pid, from /proc (every thread's list)."""
    out = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def _memory_kib(pid):
    """(Pss, Rss) in KiB of one process."""
    pss = rss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def _read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        data += chunk
    return data


def idle_memory(bench, name, port, server_pid):
    """Open IDLE_SESSIONS sessions, wait for every greeting, sum the memory of the front end and
    its session processes: records NAME_idle_pss_mib and NAME_idle_rss_mib."""
    socks = []
    try:
        for _ in range(IDLE_SESSIONS):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(s)
        for s in socks:
            if not _read_line(s).startswith(b"220 "):
                raise BenchFailure("%s: no greeting" % name)
        deadline = time.monotonic() + 30
        while len(_children(server_pid)) < IDLE_SESSIONS:
            if time.monotonic() > deadline:
                raise BenchFailure("%s: %d of %d sessions running" % (name, len(_children(server_pid)),
                                                                     IDLE_SESSIONS))
            time.sleep(0.05)
        pss = rss = 0
        for pid in [server_pid] + sorted(_children(server_pid)):
            p, r = _memory_kib(pid)
            pss, rss = pss + p, rss + r
        bench.record("%s_idle_pss_mib" % name, pss / 1024)
        bench.record("%s_idle_rss_mib" % name, rss / 1024)
        bench.details.setdefault("idle_front_kib", {}).setdefault(name, []).append(_memory_kib(server_pid))
    finally:
        for s in socks:
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
            s.close()
    deadline = time.monotonic() + 30          # let them go before the next phase measures anything
    while _children(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def memory_phase(bench, servers):
    """Both front ends of bench.home with IDLE_SESSIONS idle sessions each."""
    port = str(bench.ports["qmail"][0])
    exec_pid = next(p.pid for p in servers.procs if os.path.basename(p.args[0]) == "tcpserver" and port in p.args)
    idle_memory(bench, "exec", bench.ports["qmail"][0], exec_pid)
    idle_memory(bench, "fork", bench.ports["fork"][0], bench.front_pids["fork"])
