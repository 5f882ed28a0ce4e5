"""The table: each row a measure, the qmailpy quantity, the peer and the peer quantity."""
import tcpserver_rows
from settings import SIZES

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
    (E2E.replace("end to end", "end to end under qmail-tcpserver"), "e2e_fork_msgs_per_s", PF_E2E, "pf_e2e_per_s"),
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
