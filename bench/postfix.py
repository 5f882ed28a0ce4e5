"""A private Postfix instance for bench/run.py: the C MTA peer of the SMTP, end-to-end and remote rows.

Debian's postfix package (installed by `make deps` with "No configuration":
no /etc/postfix/main.cf, nothing listening) gives the programs; each instance
here has its own config directory (main.cf, master.cf), queue_directory and
data_directory under the bench's temporary tree, and is run as root with
`postfix -c DIR check` and `postfix -c DIR start`, and stopped by the pid of
its master (`DIR/../queue/pid/master.pid`); `postfix -c DIR stop` first, a
SIGKILL to the master's process group if that does not end it.

Two instances, each with smtpd on a free 127.0.0.1 port:

- "accept": smtpd, cleanup and trivial-rewrite but no queue manager, so an
  accepted message stays in queue/incoming, fsync'd, as a qmail-smtpd message
  stays in queue/todo when no qmail-send runs: the SMTP rows count those files
  (in_flow_delay 0: the 1 s wait for a queue manager's token would be the whole
  figure otherwise);
- "mta": the whole of Postfix; mail for bench.example goes by virtual(8) to
  the Maildir of rcpt (texthash virtual_mailbox_maps, no postmap), everything
  else to `relayhost = [127.0.0.1]:<smtp-sink>`. Postfix's own defaults
  otherwise (its SMTP connection cache included: a backlog to the sink is
  sent several messages per connection, which qmail-remote never does), but
  the destination concurrency starts at the row's concurrency, as
  concurrencyremote does, instead of slow-starting from 5.

A third, "tls" (start_tls()), is the peer of the TLS handshake rows: the "accept"
instance with smtpd in wrapper mode (SMTPS: TLS from the first byte) and the
certificate qmail-smtpd uses, plus tlsmgr.

Postfix needs its `postfix` user and `postdrop` group (the Debian package
made them) and must be started as root.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

DAEMONS = "/usr/lib/postfix/sbin"


class PostfixUnavailable(Exception):
    """Why no private Postfix can run here (the rows say n/a with it)."""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path:
        raise PostfixUnavailable("%s not found (Debian postfix)" % name)
    return path


def check_host():
    """A reason Postfix cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private Postfix must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (install Debian postfix)"
    for name in ("postfix", "postconf", "postqueue"):
        if not (shutil.which(name) or shutil.which(name, path="/usr/sbin")):
            return "%s not found (install Debian postfix)" % name
    if not os.path.exists(os.path.join(DAEMONS, "master")):
        return "%s/master not found" % DAEMONS
    return None


MASTER_ACCEPT = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
rewrite   unix - - n - - trivial-rewrite
anvil     unix - - n - 1 anvil
postlog   unix-dgram n - n - 1 postlogd
"""

MASTER_MTA = MASTER_ACCEPT + """\
pickup    unix n - n 60 1 pickup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
virtual   unix - n n - - virtual
lmtp      unix - - n - - lmtp
scache    unix - - n - 1 scache
"""


class Postfix:
    """One private instance under root/: root/etc (config), root/queue, root/data, root/mail."""

    def __init__(self, root, name, domain, mailbox_ids=None, relay_port=None, full=True, tls=None):
        self.root, self.name, self.domain, self.full, self.tls = root, name, domain, full, tls
        self.config = os.path.join(root, "etc")
        self.queue = os.path.join(root, "queue")
        self.mail = os.path.join(root, "mail")
        self.maillog = os.path.join(root, "maillog")
        self.port = _free_port()
        for d in (self.config, os.path.join(root, "data"), self.mail, self.queue):
            os.makedirs(d, exist_ok=True)
        os.chmod(root, 0o755)
        owner = pwd.getpwnam("postfix")
        os.chown(os.path.join(root, "data"), owner.pw_uid, owner.pw_gid)     # master.lock, caches
        uid, gid = mailbox_ids or (pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
        os.chown(self.mail, uid, gid)
        vmailbox = os.path.join(self.config, "vmailbox")
        with open(vmailbox, "w") as f:
            f.write("rcpt@%s %s/rcpt/Maildir/\n" % (domain, domain))
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue,
            "data_directory": os.path.join(root, "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.%s.%s" % (name, domain),
            "mydomain": "%s.%s" % (name, domain),
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": root,
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": "texthash:" + vmailbox,
            "virtual_uid_maps": "static:%d" % uid,
            "virtual_gid_maps": "static:%d" % gid,
            "virtual_minimum_uid": "1",
            "default_process_limit": "600",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "anvil_rate_time_unit": "60s",
            "smtp_tls_security_level": "none",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relayhost": "[127.0.0.1]:%d" % relay_port if relay_port else "",
            "defer_transports": "smtp relay" if relay_port else "",
        }
        if not full:
            # in_flow_delay: smtpd waits up to 1 s for a token from the queue manager, which gives
            # them as it delivers; with none running every message would wait the whole second
            settings["in_flow_delay"] = "0"
        if tls is not None:                 # (certificate, key): SMTPS, as qmail-smtpd with SMTPS=1
            settings.update(smtpd_tls_cert_file=tls[0], smtpd_tls_key_file=tls[1], smtpd_tls_wrappermode="yes",
                            smtpd_tls_security_level="encrypt")
        with open(os.path.join(self.config, "main.cf"), "w") as f:
            for key, value in settings.items():
                f.write("%s = %s\n" % (key, value))
        with open(os.path.join(self.config, "master.cf"), "w") as f:
            f.write((MASTER_MTA if full else MASTER_ACCEPT + ("tlsmgr    unix - - n 1000? 1 tlsmgr\n" if tls else ""))
                    .format(port=self.port))

    def postfix(self, *args, check=True):
        r = subprocess.run([_tool("postfix"), "-c", self.config, *args], capture_output=True, text=True,
                           timeout=120)
        if check and r.returncode:
            raise PostfixUnavailable("postfix -c %s %s: %s" % (self.config, " ".join(args),
                                                               (r.stderr or r.stdout).strip()[-300:]
                                                               or self.log_tail(3)))
        return r

    def postconf(self, **settings):
        """Change main.cf (postconf -e) and make the running instance read it (postfix reload)."""
        subprocess.run([_tool("postconf"), "-c", self.config, "-e"]
                       + ["%s=%s" % kv for kv in settings.items()], check=True, capture_output=True, timeout=60)
        self.postfix("reload")

    def start(self, timeout=30):
        """postfix check (which also makes the queue's directories), start; wait for smtpd's greeting."""
        self.postfix("check")
        self.postfix("start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if self.tls is not None:
                        import ssl
                        ctx = ssl.create_default_context()
                        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                        s = ctx.wrap_socket(s)
                    if s.recv(100).startswith(b"220"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise PostfixUnavailable("private Postfix %s did not greet on 127.0.0.1:%d; %s"
                                         % (self.name, self.port, self.log_tail()))
            time.sleep(0.1)

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        """postfix stop, then make sure by the master's pid (its process group: the master's children)."""
        pid = self.master_pid()
        self.postfix("stop", check=False)
        if pid is None:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_tail(self, n=5):
        try:
            with open(self.maillog, "rb") as f:
                return " / ".join(f.read().decode("utf-8", "replace").strip().splitlines()[-n:])
        except OSError:
            return "(no maillog)"

    def log_count(self, needle):
        try:
            with open(self.maillog, "rb") as f:
                return f.read().count(needle)
        except OSError:
            return 0

    # -- what the rows count
    def incoming(self):
        return os.path.join(self.queue, "incoming")

    def maildir_new(self):
        return os.path.join(self.mail, self.domain, "rcpt", "Maildir", "new")

    def queued(self, *queues):
        """Files in these queues (their hashed subdirectories included)."""
        n = 0
        for q in queues:
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n


# -- the rows' measurements (bench/run.py calls these) ----------------------------------------
def start_pair(root, domain, mailbox_ids, sink_port):
    """The "accept" and "mta" instances, started; PostfixUnavailable when Postfix cannot run here."""
    reason = check_host()
    if reason:
        raise PostfixUnavailable(reason)
    started = []
    try:
        for name, kw in (("accept", dict(full=False)), ("mta", dict(relay_port=sink_port))):
            pf = Postfix(os.path.join(root, name), name, domain, mailbox_ids, **kw)
            started.append(pf)
            pf.start()
    except (PostfixUnavailable, OSError, subprocess.SubprocessError) as e:
        for pf in started:
            pf.stop()
        raise PostfixUnavailable(str(e)) from None
    return started


def start_tls(root, domain, cert, key):
    """The "tls" instance (SMTPS with this certificate and key), started; PostfixUnavailable when
    Postfix cannot run here."""
    reason = check_host()
    if reason:
        raise PostfixUnavailable(reason)
    pf = Postfix(os.path.join(root, "tls"), "tls", domain, full=False, tls=(cert, key))
    try:
        return pf.start()
    except (PostfixUnavailable, OSError, subprocess.SubprocessError) as e:
        pf.stop()
        raise PostfixUnavailable(str(e)) from None


def _wait(predicate, timeout, what, pf):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise PostfixUnavailable("private Postfix %s: no %s after %d s; %s" % (pf.name, what, timeout,
                                                                               pf.log_tail()))
        time.sleep(0.005)
    return time.perf_counter()


def _count(directory):
    try:
        with os.scandir(directory) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def end_to_end(pf, source_argv, m):
    """smtp-source (source_argv) into smtpd, timed until m more files are in rcpt's Maildir/new."""
    new = pf.maildir_new()
    before = _count(new)
    start = time.perf_counter()
    source = subprocess.Popen(source_argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        end = _wait(lambda: _count(new) - before >= m, 60 + m, "%d Maildir files" % m, pf)
    finally:
        err = source.communicate(timeout=120)[1]
    if source.returncode:
        raise PostfixUnavailable("smtp-source into private Postfix: %s" % err.decode()[-300:])
    if _count(new) - before != m:
        raise PostfixUnavailable("private Postfix delivered %d of %d" % (_count(new) - before, m))
    return m / (end - start)


def remote(pf, source_argv, m, concurrency):
    """m messages for the relayhost (the smtp-sink) queued by smtp-source while the smtp transport
    is deferred, then `postqueue -f`: timed until the queue is empty and m more are logged sent."""
    pf.postconf(smtp_destination_concurrency_limit=str(concurrency),
                initial_destination_concurrency=str(concurrency))
    sent = pf.log_count(b" status=sent ")
    r = subprocess.run(source_argv, capture_output=True, timeout=300)
    if r.returncode:
        raise PostfixUnavailable("smtp-source into private Postfix: %s" % r.stderr.decode()[-300:])
    _wait(lambda: pf.queued("deferred") >= m and not pf.queued("incoming", "active"), 120,
          "%d deferred messages" % m, pf)
    start = time.perf_counter()
    subprocess.run([_tool("postqueue"), "-c", pf.config, "-f"], check=True, capture_output=True, timeout=60)
    end = _wait(lambda: not pf.queued("deferred", "active", "incoming")
                and pf.log_count(b" status=sent ") - sent >= m, 60 + m, "empty queue", pf)
    if pf.log_count(b" status=sent ") - sent != m:
        raise PostfixUnavailable("private Postfix sent %d of %d" % (pf.log_count(b" status=sent ") - sent, m))
    return m / (end - start)
