"""What every part of the bench shares: where things are, the test domain, the sizes of a run."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VPY = os.path.join(ROOT, ".venv", "bin", "python3")
DOMAIN = "bench.example"
HEAVY = ("click", "dns", "spf", "pymysql")
# what tcpserver puts in qmail-smtpd's environment, for sessions run without it
TCP_ENV = {"PROTO": "TCP", "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": "25",
           "TCPLOCALHOST": "localhost", "TCPREMOTEIP": "127.0.0.1"}
MAIL_SESSION = ("HELO bench\r\nMAIL FROM:<bench@%s>\r\nRCPT TO:<rcpt@%s>\r\nDATA\r\n"
                "Subject: bench\r\n\r\n%s\r\n.\r\nQUIT\r\n" % (DOMAIN, DOMAIN, "x" * 70)).encode()
# Where the bench's temporary homes, queues and mailboxes go: $BENCH_TMPDIR, else the
# system's temporary directory. The CPU cost of creating a file there depends on the file
# system, and on this project's machines it moves between 0.03 and 1 ms: their ext4 runs
# without a journal, and ext4 without a journal will not hand out an inode freed in the
# last 60 s (360 s while its inode table block is dirty) if it can help it, so each new
# inode first passes over every such one in its block group (perf: find_inode_bit,
# recently_deleted, find_get_block_common; 30-50% of qmail-queued's CPU right after a run
# deleted its tree). What every run and the test suite delete therefore slows the next
# minutes' creates, for qmailpy and its peers alike; qmail's queue creates two inodes per
# message and qmail-todo two more per delivery where Postfix's queue creates one, so it
# pays more. The header says which file system the tree was on (report.file_system) and
# what a create cost at the start and at the end: run the bench twice before trusting a
# ratio that moved. `bench/run.py --journal` (bench/journalfs.py) puts the tree on a
# loop-mounted ext4 with a journal instead, where none of this applies.
TREE_PARENT = os.environ.get("BENCH_TMPDIR") or None


def temp_tree(prefix):
    """A new temporary directory for one run, mode 0700 (the caller removes it). Made as
    tempfile.mkdtemp makes one, without tempfile: it imports random, whose at-fork handler
    would run in every child bench/forkcost.py and bench/forkpages.py fork."""
    parent = TREE_PARENT or os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(parent, prefix + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


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

