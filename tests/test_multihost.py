"""Two MX hosts, one users database, one mail store (issue 18; docs/operations.md,
"Running several MX hosts").

Hosts A and B each have their own qmail home, own loopback address (127.x.y.z, port 25)
and own host name (a UTS namespace for their daemons), and run qmail-queued, qmail-send
(with its real helpers) and tcpserver + qmail-smtpd. They share a MariaDB database of
their own (a private mariadbd, so it can be stopped mid-test without touching the
machine's) and one vpopmail directory (control vpopmaildir), where mailboxes made on one
host are delivered into by both. The test DNS server publishes both as MX of the domain
and routes remote.example to an aiosmtpd sink. Clients come from a third loopback address.

Why not two network namespaces: the DNS server, the sink and the database would have to
be reached from inside them, over addresses other than loopback; on loopback every piece
the hosts share is what they would share across machines (an SQL server, a file system,
DNS), and each host still has an address, a port 25, a host name and a home of its own.
"""
import os
import shutil
import base64
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dnsserver import DNSServer
from privatemariadb import PrivateMariadb
from smtpsink import Sink, loopback_address, need_root
from test_e2e_support import DOMAIN, IS_ROOT, MAIL_UID, World, inject, wait_until
from test_pop3 import need_dovecot, mysql_driver_present
from test_e2e_local import start_dovecot

from qmailpy.users import chkuser
from qmailpy.proto import replies as R

REMOTE = "remote.example"
NAMES = {"a": "mx-a.multi.test", "b": "mx-b.multi.test"}
PASSWORD = "pop pass"


class Smtp:
    """A client from `source`: each command's whole reply, exactly as the server wrote it."""

    def __init__(self, ip, source, port=25):
        self.sock = socket.create_connection((ip, port), timeout=20, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self):
        lines = []
        while True:
            raw = self.file.readline()
            assert raw.endswith(b"\r\n"), (lines, raw)
            lines.append(raw[:-2].decode())
            if raw[3:4] != b"-":
                return "\n".join(lines)

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def send(self, sender, rcpt, subject):
        """MAIL, RCPT, DATA: the RCPT reply, and the reply to the message (None if not sent)."""
        assert self.cmd("MAIL FROM:<%s>" % sender) == "250 ok"
        got = self.cmd("RCPT TO:<%s>" % rcpt)
        if not got.startswith("250"):
            return got, None
        assert self.cmd("DATA") == "354 go ahead"
        return got, self.cmd("Subject: %s\r\n\r\n%s\r\n." % (subject, subject))

    def close(self):
        try:
            self.cmd("QUIT")
        finally:
            self.sock.close()


def uts(name):
    """Put a daemon into a UTS namespace of its own with host name `name` (as root)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name] if IS_ROOT else []


class Cluster:
    def __init__(self, top):
        self.top = top
        self.db = PrivateMariadb(top / "mariadb").start()
        with self.db.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE vpopmail")
        self.shared = top / "shared" / "vpopmail"
        self.shared.mkdir(parents=True)
        os.chmod(top, 0o755)
        os.chmod(top / "shared", 0o755)
        if IS_ROOT:
            os.chown(self.shared, MAIL_UID, MAIL_UID)
        self.ip = {"a": loopback_address()}
        self.ip["b"] = wait_until(lambda: (lambda ip: ip != self.ip["a"] and ip)(loopback_address()))
        self.client = "127.0.18.%d" % (os.getpid() % 200 + 20)
        self.sink = Sink(loopback_address(), 25).start()
        self.dns = DNSServer({
            DOMAIN: {"MX": [(10, NAMES["a"]), (10, NAMES["b"])]},
            NAMES["a"]: {"A": [self.ip["a"]]},
            NAMES["b"]: {"A": [self.ip["b"]]},
            REMOTE: {"MX": [(10, "mx." + REMOTE)]},
            "mx." + REMOTE: {"A": [self.sink.host]},
        }).start()
        self.hosts, self.sends = {}, {}
        for h in ("a", "b"):
            controls = {"usersdb": self.db.usersdb_line("vpopmail"), "vpopmaildir": str(self.shared),
                        "me": NAMES[h], "locals": NAMES[h], "outgoingip": self.ip[h], "userchk": "1"}
            self.hosts[h] = World(controls, adddomain=(h == "a"), wrap=uts(NAMES[h]), dns_env=self.dns.environ())
            self.start(h)

    def start(self, h):
        world = self.hosts[h]
        self.sends[h] = world.send()
        self.sends[h].wait_line(r"^status: local 0/10 remote 0/20$")
        world.smtpd(self.ip[h], 25, local=NAMES[h])

    def stop(self, h):
        """Host h goes down: its tcpserver, qmail-send (and helpers) and qmail-queued stop."""
        world = self.hosts[h]
        assert self.sends[h].stop() == 0
        for proc in world.procs:
            if not hasattr(proc, "poll") or proc.poll() is not None:
                continue
            proc.terminate()
            proc.wait(timeout=15)

    def smtp(self, h, source=None):
        return Smtp(self.ip[h], source or self.client)

    def users(self, *args):
        return self.hosts["a"].users(*args)

    def sql(self, sql, args=()):
        with self.db.connect("vpopmail") as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def maildir(self, local):
        return self.shared / "domains" / DOMAIN / local / "Maildir"

    def logs(self):
        out = ["--- qmail-send on %s:\n%s" % (h, send.tail(15)) for h, send in self.sends.items()]
        for h, world in self.hosts.items():
            with open(os.path.join(world.top, "queued.log"), errors="replace") as f:
                out.append("--- qmail-queued on %s:\n%s" % (h, "".join(f.readlines()[-10:])))
        return "\n".join(out)

    def wait(self, predicate, what, timeout=30):
        try:
            return wait_until(predicate, timeout, what)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.logs())) from None

    def cleanup(self):
        for world in self.hosts.values():
            world.cleanup()
        self.dns.stop()
        self.sink.stop()
        self.db.cleanup()


@pytest.fixture(scope="module")
def cluster():
    need_root()                     # port 25 on two addresses, and host names of their own
    top = Path(tempfile.mkdtemp(prefix="qmailpy-multihost-"))   # traversable by the mailbox owner
    try:
        c = Cluster(top)
        try:
            yield c
        finally:
            c.cleanup()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def delivered(maildir):
    new = Path(maildir) / "new"
    return sorted(os.listdir(new)) if new.is_dir() else []


def test_both_hosts_are_mx_and_greet_with_their_names(cluster):
    for h in ("a", "b"):
        s = cluster.smtp(h)
        assert s.greeting == "220 %s ESMTP" % NAMES[h]
        s.close()


def test_pop3_login_on_a_opens_relay_on_b_until_it_expires(cluster):
    need_dovecot()
    assert mysql_driver_present(), "Dovecot's MySQL driver is not installed (dovecot-mysql)"
    cluster.users("adduser", "joe@" + DOMAIN, "-p", PASSWORD)
    # before any login: neither host relays for the client
    for h in ("a", "b"):
        s = cluster.smtp(h)
        assert s.send("joe@" + DOMAIN, "friend@" + REMOTE, "no") == (R.NOT_RCPTHOSTS, None)
        s.close()
    # a POP3 login on A (Dovecot, its post-login hook writes the shared relay table)
    from test_pop3 import Pop3
    pop = Pop3(start_dovecot(cluster.hosts["a"]), cluster.client)
    assert pop.login("joe@" + DOMAIN, PASSWORD) == "+OK Logged in."
    pop.cmd("QUIT")
    [(ip, stamp)] = cluster.sql("SELECT ip_addr, timestamp FROM relay")
    assert ip == cluster.client and abs(int(stamp) - time.time()) < 30
    # relay through B (and A) without AUTH; each host's qmail-remote reaches the one sink
    for h in ("b", "a"):
        s = cluster.smtp(h)
        rcpt, end = s.send("joe@" + DOMAIN, "friend@" + REMOTE, "via " + h)
        assert rcpt == "250 ok" and end.startswith("250 ok "), (rcpt, end)
        s.close()
    cluster.wait(lambda: len(cluster.sink.messages) == 2, "both relayed messages at the sink", 30)
    by_peer = {m.peer[0]: m for m in cluster.sink.messages}
    assert set(by_peer) == {cluster.ip["a"], cluster.ip["b"]}
    for h in ("a", "b"):
        m = by_peer[cluster.ip[h]]
        assert m.helo == NAMES[h] and m.rcpt_tos == ["friend@" + REMOTE]
        assert b"Subject: via %s" % h.encode() in m.data
    # someone else's address was never let in
    s = cluster.smtp("b", source=loopback_address())
    assert s.send("joe@" + DOMAIN, "friend@" + REMOTE, "other")[0] == R.NOT_RCPTHOSTS
    s.close()
    # the login ages past popbeforesmtptimeout (1800 s): both hosts refuse again
    cluster.sql("UPDATE relay SET timestamp = timestamp - 1801")
    for h in ("a", "b"):
        s = cluster.smtp(h)
        assert s.send("joe@" + DOMAIN, "friend@" + REMOTE, "late")[0] == R.NOT_RCPTHOSTS
        s.close()
    # and clearopensmtp on B forgets the login A recorded
    assert cluster.hosts["b"].users("clearopensmtp") == "cleared 1 relay entry\n"
    assert cluster.sql("SELECT ip_addr FROM relay") == ()


def test_mailbox_added_on_a_is_accepted_and_delivered_by_b_and_removed(cluster):
    rcpt = "newbie@" + DOMAIN
    s = cluster.smtp("b")
    assert s.send("alice@" + REMOTE, rcpt, "before")[0] == chkuser.CHKUSR_06_NORCPT
    s.close()
    cluster.users("adduser", rcpt, "-p", "x")
    box = cluster.maildir("newbie")
    for h in ("b", "a"):
        s = cluster.smtp(h)
        got, end = s.send("alice@" + REMOTE, rcpt, "through " + h)
        assert got == "250 ok" and end.startswith("250 ok "), (got, end, cluster.logs())
        s.close()
    names = cluster.wait(lambda: len(delivered(box)) == 2 and delivered(box), "two deliveries", 30)
    # each host's qmail-local named its file with its own host name
    hosts = sorted(n.split(".", 2)[2].split(",")[0] for n in names)
    if IS_ROOT:
        assert hosts == [NAMES["a"], NAMES["b"]]
    bodies = sorted((box / "new" / n).read_bytes().rsplit(b"\n\n", 1)[1] for n in names)
    assert bodies == [b"through a\n", b"through b\n"]
    cluster.users("deluser", rcpt)
    for h in ("b", "a"):
        s = cluster.smtp(h)
        assert s.send("alice@" + REMOTE, rcpt, "after")[0] == chkuser.CHKUSR_06_NORCPT
        s.close()



def test_domain_added_on_a_follows_on_b_with_syncdomains(cluster):
    """adddomain edits the controls of the host it runs on; `qmail-users syncdomains` on the
    others makes theirs follow the shared database (docs/operations.md)."""
    other = "other.example"
    a, b = cluster.hosts["a"], cluster.hosts["b"]
    out = cluster.users("adddomain", other)
    assert "control/rcpthosts: added %s" % other in out
    cluster.users("adduser", "ann@" + other, "-p", "x")
    s = cluster.smtp("b")
    assert s.send("alice@" + REMOTE, "ann@" + other, "not yet")[0] == R.NOT_RCPTHOSTS
    s.close()
    pm = ("control/virtualdomains: added postmaster@%s:alias (postmaster@%s gets what postmaster@ of "
          "control/me gets: ~alias/.qmail-postmaster)")
    # B's e2e.example line was written by hand (the fixture), without adddomain's postmaster line
    assert b.users("syncdomains").splitlines() == [pm % (DOMAIN, DOMAIN),
                                                   "control/rcpthosts: added %s" % other,
                                                   "control/virtualdomains: added %s:%s" % (other, other),
                                                   pm % (other, other)]
    assert b.users("syncdomains").splitlines() == []          # nothing more to do
    for h in ("a", "b"):
        assert open(os.path.join(cluster.hosts[h].home, "control", "virtualdomains")).read() == \
            open(os.path.join(a.home, "control", "virtualdomains")).read()
    cluster.sends["b"].proc.send_signal(signal.SIGHUP)          # what svc -h does under supervise
    s = cluster.smtp("b")
    got, end = s.send("alice@" + REMOTE, "ann@" + other, "to the new domain")
    assert got == "250 ok" and end.startswith("250 ok "), (got, end)
    s.close()
    box = cluster.shared / "domains" / other / "ann" / "Maildir"
    cluster.wait(lambda: len(delivered(box)) == 1, "B's delivery to the new domain")
    cluster.users("deldomain", other)
    assert "control/rcpthosts: removed %s" % other in b.users("syncdomains", other)
    s = cluster.smtp("b")
    assert s.send("alice@" + REMOTE, "ann@" + other, "gone")[0] == R.NOT_RCPTHOSTS
    s.close()

def test_database_stopped_both_hosts_defer_then_recover(cluster):
    cluster.users("adduser", "dora@" + DOMAIN, "-p", "x")
    box = cluster.maildir("dora")
    cluster.db.stop()
    try:
        for h in ("a", "b"):
            s = cluster.smtp(h)
            assert s.send("alice@" + REMOTE, "dora@" + DOMAIN, "down")[0] == chkuser.RESOURCE
            # whether the client logged in over POP3 cannot be told either: try later
            assert s.send("dora@" + DOMAIN, "friend@" + REMOTE, "relay")[0] == R.USERS_TEMPFAIL
            s.close()
        # mail that reaches the queue anyway (a local program's) waits there on both hosts
        for h in ("a", "b"):
            assert inject(cluster.hosts[h], b"Subject: queued on %s\n\nwhile down\n" % h.encode(),
                          "alice@" + REMOTE, ["dora@" + DOMAIN]) == 0
            cluster.sends[h].wait_line(r"deferral: Unable_to_read_the_users_database")
            assert cluster.hosts[h].queue_files() != []
        assert delivered(box) == []
    finally:
        cluster.db.start()
    # no restart: new connections ask the database again, qmail-send retries (ALRM: now)
    for h in ("a", "b"):
        s = cluster.smtp(h)
        got, end = s.send("alice@" + REMOTE, "dora@" + DOMAIN, "back on " + h)
        assert got == "250 ok" and end.startswith("250 ok "), (got, end, cluster.logs())
        s.close()
        cluster.sends[h].proc.send_signal(signal.SIGALRM)
    cluster.wait(lambda: len(delivered(box)) == 4, "four deliveries after the database returned", 60)
    for h in ("a", "b"):
        cluster.wait(lambda: cluster.hosts[h].queue_files() == [], "host %s's queue to empty" % h, 30)
    subjects = sorted((box / "new" / n).read_bytes().split(b"Subject: ", 1)[1].split(b"\n", 1)[0]
                      for n in delivered(box))
    assert subjects == [b"back on a", b"back on b", b"queued on a", b"queued on b"]


LOCKOUT = "421 too many failed authentications from your IP address, try again later (#4.7.0)"
FAILED, ACCEPTED = "535 authentication failed (#5.7.1)", "235 ok, go ahead (#2.0.0)"
LOOPBACK, LOOPBACK_FILE = "127.0.0.0/8", "127.0.0.0_8"     # the client authfaillimit counts (authlimit.failure_key)


def auth(cluster, h, port, source, user, password):
    """One connection from `source` to host h's `port`: EHLO, AUTH PLAIN; the AUTH reply."""
    s = Smtp(cluster.ip[h], source, port)
    try:
        assert s.cmd("EHLO client.example").startswith("250-")
        got = s.cmd("AUTH PLAIN " + base64.b64encode(b"\0%s\0%s" % (user.encode(), password.encode())).decode())
        if not got.startswith("421"):
            s.cmd("QUIT")
    finally:
        s.sock.close()
    return got


def test_auth_failures_counted_once_for_both_hosts_and_per_host_while_the_database_is_down(cluster):
    """authfailshared 1 (docs/operations.md): A's and B's failures from one IP are one count in
    the users database, so B locks out (421, even the right password) a client that failed on A;
    with the database stopped each host counts its own again (sessions/authfail/), and the
    shared count is back without a restart."""
    from test_e2e_support import ROOT
    cluster.users("adduser", "sam@" + DOMAIN, "-p", "right pass")
    checkpw = [sys.executable, str(ROOT / "tests" / "checkpassword.py")]    # good@example.org / secret
    controls = {"smtpauth": "1", "smtpauthplaintext": "1", "authfaillimit": "3", "authfailshared": "1"}
    port, cport = {}, {}
    try:
        for h in ("a", "b"):
            world = cluster.hosts[h]
            for name, value in controls.items():
                world.control(name, value)
            port[h] = world.smtpd(cluster.ip[h], local=NAMES[h], AUTHFAILDELAY="0")
            cport[h] = world.smtpd(cluster.ip[h], local=NAMES[h], argv=checkpw, AUTHFAILDELAY="0")
        ip = loopback_address()
        sam = "sam@" + DOMAIN
        assert auth(cluster, "a", port["a"], ip, sam, "guess 1") == FAILED
        assert auth(cluster, "b", port["b"], ip, sam, "right pass") == ACCEPTED    # does not count
        assert auth(cluster, "a", port["a"], ip, sam, "guess 2") == FAILED
        assert auth(cluster, "b", port["b"], ip, sam, "guess 3") == LOCKOUT       # the third, on B
        assert auth(cluster, "b", port["b"], ip, sam, "right pass") == LOCKOUT
        assert auth(cluster, "a", port["a"], ip, sam, "right pass") == LOCKOUT
        # the loopback network is one client (any local user may bind any 127.x.y.z)
        assert [r[0] for r in cluster.sql("SELECT ip_addr FROM qmailpy_authfail")] == [LOOPBACK] * 3
        for h in ("a", "b"):
            assert not os.path.exists(os.path.join(cluster.hosts[h].home, "sessions", "authfail", LOOPBACK_FILE))
        # the database stopped: passwords still checked (checkpassword), each host counts its own
        other = loopback_address()
        cluster.db.stop()
        try:
            assert [auth(cluster, "a", cport["a"], other, "good@example.org", "wrong %d" % i)
                    for i in range(3)] == [FAILED, FAILED, LOCKOUT]
            assert auth(cluster, "a", cport["a"], other, "good@example.org", "secret") == LOCKOUT
            assert auth(cluster, "b", cport["b"], other, "good@example.org", "secret") == ACCEPTED
            with open(os.path.join(cluster.hosts["a"].home, "sessions", "authfail", LOOPBACK_FILE)) as f:
                assert len(f.read().splitlines()) == 3
        finally:
            cluster.db.start()
        # back: B counts in the database again, no restart: its three checks lock the client out
        # there, where B's own files hold none
        assert auth(cluster, "b", cport["b"], other, "good@example.org", "secret") == LOCKOUT
        assert not os.path.exists(os.path.join(cluster.hosts["b"].home, "sessions", "authfail", LOOPBACK_FILE))
        assert [r[0] for r in cluster.sql("SELECT ip_addr FROM qmailpy_authfail")] == [LOOPBACK] * 3
    finally:
        for h in ("a", "b"):
            for name in controls:
                cluster.hosts[h].control(name, None)


def test_both_hosts_deliver_into_one_mailbox_at_once_within_its_quota(cluster):
    """Each host's qmail-send (qmail-lspawn, qmail-local) delivers 550 copies into the same Maildir
    at the same time: 1,000 files (the count quota holds across both), 100 bounced as over quota,
    maildirsize equal to a recount."""
    per_host, quota = 550, 1000
    cluster.users("adduser", "busy@" + DOMAIN, "-p", "x", "-q", "%dC" % quota)
    box = cluster.maildir("busy")
    before = len(cluster.sink.messages)
    for h in ("a", "b"):
        assert inject(cluster.hosts[h], b"Subject: busy from %s\n\nx\n" % h.encode(), "alice@" + REMOTE,
                      ["busy@" + DOMAIN] * per_host) == 0
    cluster.wait(lambda: all(cluster.hosts[h].queue_files() == [] for h in ("a", "b")), "both queues to empty", 120)
    names = delivered(box)
    assert len(names) == quota
    hosts = {n.split(".", 2)[2].split(",")[0] for n in names}
    assert hosts == {NAMES["a"], NAMES["b"]}, hosts
    from qmailpy import maildirpp
    state = maildirpp.read(str(box.parent / "Maildir" / maildirpp.NAME))
    assert state.definition == "%dC" % quota
    assert (state.size, state.count) == maildirpp.scan(str(box))
    # the rest bounced to the sender, through the sink: "User over quota."
    cluster.wait(lambda: len(cluster.sink.messages) == before + 2, "the two bounces", 30)
    over = sum(m.data.count(b"User over quota.") for m in cluster.sink.messages[before:])
    assert over == 2 * per_host - quota

def test_host_b_down_does_not_touch_mail_queued_on_a(cluster):
    cluster.users("adduser", "eve@" + DOMAIN, "-p", "x")
    before = len(cluster.sink.messages)
    cluster.stop("b")
    with pytest.raises(OSError):
        cluster.smtp("b")
    s = cluster.smtp("a", source=cluster.client)
    assert s.send("alice@" + REMOTE, "eve@" + DOMAIN, "while b is down") [0] == "250 ok"
    s.close()
    assert inject(cluster.hosts["a"], b"Subject: out while b is down\n\nx\n", "eve@" + DOMAIN,
                  ["friend@" + REMOTE]) == 0
    cluster.wait(lambda: len(delivered(cluster.maildir("eve"))) == 1, "A's local delivery", 30)
    cluster.wait(lambda: len(cluster.sink.messages) == before + 1, "A's remote delivery", 30)
    assert cluster.sink.messages[-1].peer[0] == cluster.ip["a"]
    cluster.wait(lambda: cluster.hosts["a"].queue_files() == [], "A's queue to empty", 30)
    # a sender elsewhere finds both MX hosts of the domain in DNS; B refuses connections, A takes it
    import subprocess
    world = cluster.hosts["a"]
    r = subprocess.run([os.path.join(world.home, "bin", "qmail-remote"), DOMAIN, "alice@" + REMOTE, "eve@" + DOMAIN],
                       input=b"Subject: by MX\n\nx\n", capture_output=True, timeout=60, env=world.env())
    assert r.returncode == 0 and r.stdout.startswith(b"r\0K%s accepted message.\nRemote host said: 250 ok " % cluster.ip["a"].encode()), r
    cluster.wait(lambda: len(delivered(cluster.maildir("eve"))) == 2, "the MX delivery through A", 30)
    assert ("%s" % DOMAIN, "MX", "udp") in cluster.dns.queries
