"""qmail's add-ons from .qmail files, for real: djb's fastforward and dot-forward (Debian's).

An admin who swaps qmailpy in for qmail keeps `|fastforward` in ~alias/.qmail-default
and users keep `|dot-forward .forward`; these programs read qmail-local's environment
(SENDER, DTLINE, RECIPIENT, DEFAULT, EXT, HOST, USER, UFLINE, RPLINE), rewind the message
qmail-local gives them, read control/ (dot-forward: qmail-header's rules) and queue
what they forward by exec'ing the home's bin/qmail-queue. Debian builds them for the
home /var/lib/qmail (compiled in), so each delivery runs qmailpy's bin/qmail-local (as
qmail-lspawn runs it: message on fd 0, report on fd 1) in a private mount namespace
(`unshare -m`) where the test's qmail home is bind-mounted on /var/lib/qmail; the
machine's own /var/lib/qmail is never written. What they queue is read back from
the queue (envelope and message, exactly). Root only; `make deps` installs the packages.
"""
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

DEBIAN_HOME = "/var/lib/qmail"   # Debian's fastforward and dot-forward: auto_qmail
ME = "mx.addons.test"
MSG = b"Subject: hi\n\nbody\n"


class Addons:
    """A qmail home laid out by tools/install.py (its bin/qmail-queue is qmailpy's), world-traversable,
    and the private view the add-ons get of it: the home on /var/lib/qmail, and /etc under an
    overlay whose writes (newaliases' /etc/aliases.cdb) land in the test's directory."""

    def __init__(self):
        for name in ("fastforward", "setforward", "setmaillist", "newinclude", "dot-forward"):
            assert shutil.which(name), "%s missing: run make deps (Debian's fastforward, dot-forward)" % name
        assert os.path.isdir(DEBIAN_HOME), DEBIAN_HOME + " missing: run make deps"
        self.top = Path(tempfile.mkdtemp(prefix="qmailpy-addons-"))
        os.chmod(self.top, 0o755)
        self.home = self.top / "qmail"
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "install.py"), str(self.home), ROOT,
                            sys.executable], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        self.write("control/me", ME + "\n")
        self.etc = self.top / "etc"            # the overlay's upper directory: what the tests put in /etc
        os.makedirs(self.etc)
        os.makedirs(self.top / "etc.work")
        self.n = 0

    def write(self, name, text, mode=0o644):
        path = self.home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
        return path

    def run(self, argv, stdin=None, env=None):
        """argv in the private view, cwd /: (exit, stdout, stderr)."""
        script = ("mount -t overlay overlay -o lowerdir=/etc,upperdir=%s,workdir=%s /etc; mount --bind %s %s; "
                  "cd /; exec \"$@\"" % (self.etc, self.top / "etc.work", self.home, DEBIAN_HOME))
        environ = {"PATH": DEBIAN_HOME + "/bin:/usr/bin:/bin", "QMAILHOME": DEBIAN_HOME, "QMAILPY_SINGLEUSER": "1",
                   **(env or {})}
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script, "sh", *argv],
                           stdin=stdin, capture_output=True, env=environ, timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def local(self, user, homedir, local, dash, ext, sender, message=MSG, domain=ME, env=None):
        """bin/qmail-local as qmail-lspawn runs it (message on fd 0, report on fd 1, its own errors on fd 2):
        (exit, stdout, stderr).
        homedir: under /var/lib/qmail (the alias user's) or any other directory."""
        self.n += 1
        path = self.top / ("message%d" % self.n)
        path.write_bytes(message)
        with open(path, "rb") as m:
            return self.run([DEBIAN_HOME + "/bin/qmail-local", "--", user, str(homedir), local, dash, ext, domain,
                             sender, "./Maildir/"], stdin=m, env=env)

    def alias(self, local, sender="bob@remote.example", **kw):
        """A delivery to local@ME that qmail-lspawn gives the alias user (no such user): ext = local."""
        return self.local("alias", DEBIAN_HOME + "/alias", local, "-", local, sender, **kw)

    def queued(self):
        """(sender, recipients, message after qmail-queue's Received line, its qp) of each queued
        message, oldest first."""
        q = self.home / "queue"
        out = []
        for todo in sorted(q.glob("todo/*"), key=lambda p: (p.stat().st_mtime_ns, int(p.name))):
            mess = (q / "mess" / str(int(todo.name) % 23) / todo.name).read_bytes()
            received, rest = mess.split(b"\n", 1)
            m = re.match(rb"Received: \(qmail (\d+) invoked by uid 0\); \d+ \w+ \d{4} \d\d:\d\d:\d\d -0000$",
                         received)
            assert m, received
            qp = int(m.group(1))
            records = (q / "intd" / todo.name).read_bytes().split(b"\0")
            assert records[:2] == [b"u0", b"p%d" % qp] and records[-1] == b"", records
            sender = [r[1:].decode() for r in records if r[:1] == b"F"]
            rcpts = [r[1:].decode() for r in records if r[:1] == b"T"]
            out.append((sender[0], rcpts, rest, qp))
        return out


@pytest.fixture
def addons():
    a = Addons()
    yield a
    shutil.rmtree(a.top)


def make_cdb(src, table):
    """The table as an admin writes it into `src`, and setforward's `src`.cdb of it."""
    Path(src).write_text(table)
    with open(src) as f:
        r = subprocess.run(["setforward", str(src) + ".cdb", str(src) + ".tmp"], stdin=f, capture_output=True)
    assert r.returncode == 0, r.stderr


def setforward(addons, name, table):
    """setforward's cdb in ~alias; its path in the private view."""
    make_cdb(addons.home / "alias" / name, table)
    return "%s/alias/%s.cdb" % (DEBIAN_HOME, name)


def aliases(addons, table):
    """~alias/.qmail-default running fastforward on setforward's cdb of `table`."""
    addons.write("alias/.qmail-default", "| fastforward %s\n" % setforward(addons, "aliases", table))


def forwarded(report, queued, sender, rcpts, dtline, prog="fastforward", did="did 0+0+1\n"):
    """The report of a delivery whose program queued one message, and that message, exactly."""
    assert len(queued) == 1, queued
    got_sender, got_rcpts, mess, qp = queued[0]
    assert report == "%s: qp %d\n%s" % (prog, qp, did)
    assert (got_sender, got_rcpts, mess) == (sender, rcpts, dtline.encode() + MSG)


# -- fastforward: /etc/aliases as its ALIASES file sets it up

ETC_ALIASES = """# as fastforward's ALIASES and newaliases(1) describe it
root: alias
postmaster: root
Abuse: postmaster
staff: :include:/etc/staff-list, Boss <boss@hq.example>
bob: bob@far.example, \\bob
"""


def test_newaliases_and_fastforward_d(addons):
    """~alias/.qmail-default `| fastforward -d /etc/aliases.cdb` after newaliases: the forward
    keeps the envelope sender (SENDER), gets DTLINE first, and names every target once."""
    (addons.etc / "aliases").write_text(ETC_ALIASES)
    (addons.etc / "staff-list").write_text("ann, carl@far.example\nboss@hq.example\n")
    assert addons.run(["newinclude", "/etc/staff-list"]) == (0, "", "")
    assert addons.run(["/usr/sbin/qmail-newaliases"]) == (0, "", "")
    assert (addons.etc / "aliases.cdb").exists() and (addons.etc / "staff-list.bin").exists()
    addons.write("alias/.qmail-default", "| fastforward -d /etc/aliases.cdb\n")

    code, report, err = addons.alias("staff", sender="joe@remote.example")
    assert (code, err) == (0, "")
    forwarded(report, addons.queued(), "joe@remote.example",
              ["carl@far.example", "ann@" + ME, "boss@hq.example"], "Delivered-To: staff@%s\n" % ME)


def test_fastforward_d_chains_and_local_names(addons):
    """abuse -> postmaster@me (newaliases qualifies with control/me; its `user@` targets are not
    followed again, qmail-send delivers postmaster@me), looked up case-blind (qmail-local's DEFAULT
    keeps the case); `\\bob` is bob@me itself, not bob again."""
    (addons.etc / "aliases").write_text(ETC_ALIASES)
    (addons.etc / "staff-list").write_text("ann\n")
    assert addons.run(["/usr/sbin/qmail-newaliases"]) == (0, "", "")
    addons.write("alias/.qmail-default", "| fastforward -d /etc/aliases.cdb\n")
    code, report, _ = addons.alias("ABuse", sender="")
    assert code == 0
    forwarded(report, addons.queued(), "", ["postmaster@" + ME], "Delivered-To: ABuse@%s\n" % ME)
    code, report, _ = addons.alias("bob")
    assert code == 0
    forwarded(report, addons.queued()[1:], "bob@remote.example", ["bob@" + ME, "bob@far.example"],
              "Delivered-To: bob@%s\n" % ME)


def test_fastforward_unknown_alias_bounces(addons):
    aliases(addons, "joe@%s: j@far.example;\n" % ME)
    assert addons.alias("nobody") == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n", "")
    assert addons.queued() == []


def test_fastforward_pass_through(addons):
    """-p: an unknown address goes on to the next line (exit 0); a known one stops there (99)."""
    cdb = setforward(addons, "aliases", "joe@%s: j@far.example;\n" % ME)
    addons.write("alias/.qmail-default", "| fastforward -p %s\n./Maildir/\n" % cdb)
    assert addons.alias("nobody") == (0, "did 1+0+1\n", "")
    assert len(os.listdir(addons.home / "alias" / "Maildir" / "new")) == 1
    code, report, _ = addons.alias("joe")
    assert code == 0
    forwarded(report, addons.queued(), "bob@remote.example", ["j@far.example"], "Delivered-To: joe@%s\n" % ME)
    assert len(os.listdir(addons.home / "alias" / "Maildir" / "new")) == 1


def test_fastforward_owner_is_the_sender(addons):
    """A `?owner` target becomes the envelope sender, except for a bounce (<>) or a double bounce (#@[])."""
    aliases(addons, "list@%s: ?list-owner@%s, a@far.example, b@far.example;\n" % (ME, ME))
    for sender, expected in (("bob@remote.example", "list-owner@" + ME), ("", ""), ("#@[]", "#@[]")):
        assert addons.alias("list", sender=sender)[0] == 0
        assert [q[:2] for q in addons.queued()][-1] == (expected, ["a@far.example", "b@far.example"])


def test_fastforward_d_uses_ext_without_default(addons):
    """-d in ~alias/.qmail-staff (no -default file matched, no DEFAULT): $EXT@$HOST."""
    cdb = setforward(addons, "aliases", "staff@%s: s@far.example;\nwrong@%s: w@far.example;\n" % (ME, ME))
    addons.write("alias/.qmail-staff", "| fastforward -d %s\n" % cdb)
    code, report, _ = addons.alias("staff")
    assert code == 0
    forwarded(report, addons.queued(), "bob@remote.example", ["s@far.example"], "Delivered-To: staff@%s\n" % ME)


def test_fastforward_programs_rewind_the_message(addons):
    """`|prog` gets the message from its start each time (qmail-local's fd 0 is the file, seekable);
    `!prog` runs through preline (qmailpy's, on PATH), which adds UFLINE, RPLINE, DTLINE."""
    out = addons.top / "out"
    os.makedirs(out)
    os.chmod(out, 0o777)
    aliases(addons, "p@%s: !cat\\ >%s/bang, |cat\\ >%s/bar, x@far.example;\n" % (ME, out, out))
    code, report, _ = addons.alias("p")
    assert code == 0
    forwarded(report, addons.queued(), "bob@remote.example", ["x@far.example"], "Delivered-To: p@%s\n" % ME)
    bang = (out / "bang").read_bytes()
    ufline, rest = bang.split(b"\n", 1)
    assert re.fullmatch(rb"From bob@remote\.example \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}", ufline)
    assert rest == b"Return-Path: <bob@remote.example>\nDelivered-To: p@%s\n" % ME.encode() + MSG
    assert (out / "bar").read_bytes() == MSG


@pytest.mark.parametrize("program, code", [("exit 100", 100), ("exit 111", 111), ("exit 77", 100)])
def test_fastforward_program_failures(addons, program, code):
    aliases(addons, "p@%s: |%s, x@far.example;\n" % (ME, program.replace(" ", "\\ ")))
    assert addons.alias("p") == (code, "", "")
    assert addons.queued() == []


def test_fastforward_setmaillist_file(addons):
    """An external list (setmaillist's .bin) named in the table; a target reached twice is queued once."""
    src = addons.write("alias/list", "# the list\nx1@far.example\n&x2@far.example\n")
    with open(src) as f:
        assert subprocess.run(["setmaillist", str(src) + ".bin", str(src) + ".tmp"], stdin=f).returncode == 0
    aliases(addons, "all@%s: %s/alias/list.bin, x1@far.example, joe@%s;\njoe@%s: j@far.example;\n"
            % (ME, DEBIAN_HOME, ME, ME))
    code, report, _ = addons.alias("all")
    assert code == 0
    forwarded(report, addons.queued(), "bob@remote.example", ["x2@far.example", "x1@far.example", "j@far.example"],
              "Delivered-To: all@%s\n" % ME)


# -- what fastforward makes of qmailpy's qmail-queue failing (qmail.c's qmail_close() texts)

def test_queue_failures_through_fastforward(addons):
    """qmail-queue's exit codes as qmail's: 11 for an address over 1002 bytes (a bounce), 62 for
    a queue it cannot write in, no program at all (deferrals); nothing is queued."""
    aliases(addons, "joe@%s: j@far.example;\n" % ME)
    code, report, _ = addons.alias("joe", sender="s" * 1000 + "@x.example")
    assert (code, report.splitlines()[-1]) == (100, "fastforward: fatal: envelope address too long for qq (#5.1.3)")
    code, report, _ = addons.alias("joe", sender="s" * 990 + "@x.example")      # 1001 bytes: queued
    assert code == 0 and addons.queued()[0][0] == "s" * 990 + "@x.example"
    os.rename(addons.home / "queue" / "pid", addons.home / "queue" / "pid.away")
    code, report, _ = addons.alias("joe")
    assert (code, report.splitlines()[-1]) == (111, "fastforward: fatal: qq trouble creating files in queue (#4.3.0)")
    os.rename(addons.home / "queue" / "pid.away", addons.home / "queue" / "pid")
    os.rename(addons.home / "bin" / "qmail-queue", addons.home / "bin" / "qmail-queue.away")
    assert addons.alias("joe") == (111, "fastforward: fatal: unable to exec qq (#4.3.0)\n", "")
    assert len(addons.queued()) == 1


def test_forward_loop_ends_in_qmail_local(addons):
    """An alias that points back at itself through another host's alias: the message comes back
    with our Delivered-To line, and qmail-local bounces it instead of forwarding it again."""
    aliases(addons, "joe@%s: joe@%s;\n" % (ME, ME))
    assert addons.alias("joe") == (0, "did 0+0+1\n", "")        # fastforward drops a target it was given
    aliases(addons, "joe@%s: j@far.example;\n" % ME)
    assert addons.alias("joe")[0] == 0
    back = addons.queued()[0][2]
    assert addons.alias("joe", message=back) == (       # qmail-local's own error: fd 2
        100, "", "This message is looping: it already has my Delivered-To line. (#5.4.6)\n")
    assert len(addons.queued()) == 1


# -- dot-forward: a user's .forward read from ~/.qmail

@pytest.fixture
def joe(addons):
    """A user's home (not under the qmail home) with ./Maildir/ and `|dot-forward .forward` first."""
    home = addons.top / "joe"
    for sub in ("tmp", "new", "cur"):
        os.makedirs(home / "Maildir" / sub)
    os.chmod(home, 0o755)
    (home / ".qmail").write_text("|dot-forward .forward\n./Maildir/\n")
    return home


def dotforward(addons, joe, text, sender="bob@remote.example"):
    (joe / ".forward").write_text(text)
    return addons.local("joe", joe, "joe", "", "", sender)


def test_dot_forward_addresses(addons, joe):
    """RFC 822 addresses, qualified as qmail-header(5) says from the home's control/ (defaulthost,
    defaultdomain, plusdomain); then dot-forward exits 99 and ./Maildir/ gets nothing."""
    addons.write("control/defaultdomain", "dd.example\n")
    addons.write("control/plusdomain", "pd.example\n")
    code, report, err = dotforward(addons, joe, "jane@far.example, Bob Smith <bob@other.example>\n"
                                                "fred (a comment)\nsam@host\nann@host+\n")
    assert (code, err) == (0, "")
    forwarded(report, addons.queued(), "bob@remote.example",
              ["bob@other.example", "jane@far.example", "fred@" + ME, "sam@host.dd.example", "ann@host.pd.example"],
              "Delivered-To: joe@%s\n" % ME, prog="dot-forward: info")
    assert os.listdir(joe / "Maildir" / "new") == []


def test_dot_forward_keeps_a_copy(addons, joe):
    """`\\joe` is delivery to joe himself: dot-forward exits 0 and qmail-local goes on to ./Maildir/."""
    code, report, _ = dotforward(addons, joe, "\\joe, jane@far.example\n", sender="")
    assert code == 0
    forwarded(report, addons.queued(), "", ["jane@far.example"], "Delivered-To: joe@%s\n" % ME,
              prog="dot-forward: info", did="did 1+0+1\n")
    (name,) = os.listdir(joe / "Maildir" / "new")
    mailbox = (joe / "Maildir" / "new" / name).read_bytes()
    assert mailbox == b"Return-Path: <>\nDelivered-To: joe@%s\n" % ME.encode() + MSG


@pytest.mark.parametrize("text", ["", "joe\n"], ids=["empty", "just-me"])
def test_dot_forward_nothing_to_do(addons, joe, text):
    assert dotforward(addons, joe, text) == (0, "did 1+0+1\n", "")
    assert addons.queued() == []
    assert len(os.listdir(joe / "Maildir" / "new")) == 1


def test_dot_forward_program(addons, joe):
    """A "|program" line runs through preline (UFLINE, RPLINE, DTLINE from qmail-local), in the home."""
    code, report, _ = dotforward(addons, joe, '"|/bin/sh -c \'pwd; cat\' > out"\n')
    assert (code, report) == (0, "did 0+0+1\n")
    out = (joe / "out").read_bytes().split(b"\n", 2)
    assert out[0] == str(joe).encode()
    assert re.fullmatch(rb"From bob@remote\.example \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}", out[1])
    assert out[2] == b"Return-Path: <bob@remote.example>\nDelivered-To: joe@%s\n" % ME.encode() + MSG
    assert addons.queued() == [] and os.listdir(joe / "Maildir" / "new") == []


def test_dot_forward_queue_failure_defers(addons, joe):
    os.rename(addons.home / "queue" / "pid", addons.home / "queue" / "pid.away")
    code, report, _ = dotforward(addons, joe, "jane@far.example\n")
    assert (code, report.splitlines()[-1]) == (
        111, "dot-forward: fatal: unable to forward message: qq trouble creating files in queue (#4.3.0)")
    assert addons.queued() == [] and os.listdir(joe / "Maildir" / "new") == []



# -- the whole way: qmail-send, qmail-lspawn, qmail-queued, as installed

@contextlib.contextmanager
def world_on_debian_home():
    """(World, Namespace): an installed home with qmail-queued, its daemons and qmail-queue runs
    in a private mount namespace that has the home on /var/lib/qmail too."""
    from test_diskfull import Namespace
    from test_e2e_support import World
    ns = Namespace()
    world = World(wrap=ns.wrap)
    try:
        ns.sh("mount --bind %s %s" % (world.home, DEBIAN_HOME))
        yield world, ns
    finally:
        world.cleanup()
        ns.close()


def test_through_qmail_send(tmp_path):
    """inject -> qmail-send -> qmail-lspawn -> qmail-local (~alias, as alias/'s owner) -> fastforward ->
    bin/qmail-queue -> qmail-queued -> qmail-send -> qmail-local (a mailbox with `|dot-forward`) ->
    dot-forward -> the next mailbox: each hop's Delivered-To and Received lines, the sender kept,
    and the qp each program prints (its qmail-queue's pid) is the Received line's `qmail N` and
    qmail-send's `info msg ...: qp N`, as in qmail: how an admin follows a forward through the logs."""
    from test_e2e_support import DOMAIN, MAIL_UID, ME as E2E_ME, inject
    with world_on_debian_home() as (world, ns):
        passwd = tmp_path / "passwd"                 # no system user answers for staff@ (qmail-getpw: alias)
        passwd.write_text("")
        u1, u2 = world.adduser("u1"), world.adduser("u2")
        make_cdb(Path(world.home, "alias", "aliases"), "staff@%s: u1@%s;\n" % (E2E_ME, DOMAIN))
        Path(world.home, "alias", ".qmail-default").write_text("| fastforward -d %s/alias/aliases.cdb\n" % DEBIAN_HOME)
        os.chown(Path(world.home, "alias"), MAIL_UID, MAIL_UID)
        (u1.parent / ".qmail").write_text("|dot-forward .forward\n./Maildir/\n")
        (u1.parent / ".forward").write_text("u2@%s\n" % DOMAIN)
        send = world.send(QMAILPY_PASSWD=str(passwd), PATH="%s/bin:/usr/bin:/bin" % world.home)
        assert inject(world, MSG, "alice@remote.example", ["staff@" + E2E_ME], ns.wrap) == 0
        send.wait_for(lambda: os.listdir(u2 / "new"), 60, "u2's mailbox")
        (name,) = os.listdir(u2 / "new")
        got = (u2 / "new" / name).read_bytes().decode()
        assert os.listdir(u1 / "new") == []
        # qmail-send may start the forward's delivery before it logs the forwarding one's end
        qp1 = send.wait_line(r"^delivery \d+: success: fastforward:_qp_(\d+)/did_0\+0\+1/$")[0][1].group(1)
        qp2 = send.wait_line(r"^delivery \d+: success: dot-forward:_info:_qp_(\d+)/did_0\+0\+1/$")[0][1].group(1)
        log = "\n".join(send.lines()) + "\n"
    date = r"\d+ \w+ \d{4} \d\d:\d\d:\d\d -0000"
    assert re.fullmatch(r"Return-Path: <alice@remote\.example>\n"
                        r"Delivered-To: e2e\.example-u2@e2e\.example\n"
                        r"Received: \(qmail %s invoked by uid %d\); %s\n"
                        r"Delivered-To: e2e\.example-u1@e2e\.example\n"
                        r"Received: \(qmail %s invoked by uid %d\); %s\n"
                        r"Delivered-To: staff@mx\.e2e\.test\n"
                        r"Received: \(qmail \d+ invoked by uid 0\); %s\n"
                        r"Subject: hi\n\nbody\n" % (qp2, MAIL_UID, date, qp1, MAIL_UID, date, date), got), (got, log)
    for qp in (qp1, qp2):
        assert re.search(r"info msg \d+: bytes \d+ from <alice@remote\.example> qp %s uid %d\n" % (qp, MAIL_UID), log)


def test_debian_home_linked_to_qmailpys(addons, joe):
    """qmailpy in its own home, Debian's /var/lib/qmail holding only links to its bin/qmail-queue
    and control/ (as docs/operations.md says to migrate): dot-forward reads control/me through
    the link and its forward lands in qmailpy's queue."""
    home = str(addons.home)
    (joe / ".forward").write_text("fred\n")
    script = ('mount -t tmpfs -o mode=755 tmpfs %s; mkdir %s/bin; ln -s %s/bin/qmail-queue %s/bin/qmail-queue; '
              'ln -s %s/control %s/control; cd /; exec "$@"' % (DEBIAN_HOME, DEBIAN_HOME, home, DEBIAN_HOME,
                                                                   home, DEBIAN_HOME))
    (addons.top / "message").write_bytes(MSG)
    with open(addons.top / "message", "rb") as m:
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script, "sh",
                            os.path.join(home, "bin", "qmail-local"), "--", "joe", str(joe), "joe", "", "", ME,
                            "bob@remote.example", "./Maildir/"], stdin=m, capture_output=True, timeout=60,
                           env={"PATH": home + "/bin:/usr/bin:/bin", "QMAILHOME": home, "QMAILPY_SINGLEUSER": "1"})
    assert (p.returncode, p.stderr) == (0, b"")
    forwarded(p.stdout.decode(), addons.queued(), "bob@remote.example", ["fred@" + ME], "Delivered-To: joe@%s\n" % ME,
              prog="dot-forward: info")


def test_queued_down_defers(addons):
    """The home has qmail-queued's socket but nobody listens (the service is restarting): qmail-queue
    exits 73 and fastforward defers with qmail.c's text for it; nothing is queued."""
    import socket
    aliases(addons, "joe@%s: j@far.example;\n" % ME)
    os.makedirs(addons.home / "sock", exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(addons.home / "sock" / "qmail-queue"))
    s.close()
    code, report, _ = addons.alias("joe")
    assert (code, report.splitlines()[-1]) == (111, "fastforward: fatal: connection to mail server rejected (#4.4.1)")
    assert addons.queued() == []


def test_virtual_domain_catch_all(tmp_path):
    """fastforward -d in a vpopmail domain's .qmail-default (qmail-lspawn's catch-all, step 2.3):
    $DEFAULT@$HOST is the address looked up; one not in the table bounces with fastforward's text."""
    from test_e2e_support import DOMAIN, MAIL_UID, inject
    with world_on_debian_home() as (world, ns):
        u1 = world.adduser("u1")
        src = u1.parent.parent / "aliases"            # the domain's directory
        make_cdb(src, "Sales@%s: u1@%s;\n" % (DOMAIN, DOMAIN))
        (src.parent / ".qmail-default").write_text("| fastforward -d %s.cdb\n" % str(src).replace(world.home, DEBIAN_HOME))
        send = world.send(PATH="%s/bin:/usr/bin:/bin" % world.home)
        assert inject(world, MSG, "alice@remote.example", ["sales@" + DOMAIN, "nobody@" + DOMAIN], ns.wrap) == 0
        send.wait_line(r"^delivery \d+: failure: Sorry,_no_mailbox_here_by_that_name\._\(#5\.1\.1\)/$")
        qp = send.wait_line(r"^delivery \d+: success: fastforward:_qp_(\d+)/did_0\+0\+1/$")[0][1].group(1)
        send.wait_for(lambda: os.listdir(u1 / "new"), 60, "u1's mailbox")
        (name,) = os.listdir(u1 / "new")
        got = (u1 / "new" / name).read_bytes().decode()
    date = r"\d+ \w+ \d{4} \d\d:\d\d:\d\d -0000"
    assert re.fullmatch(r"Return-Path: <alice@remote\.example>\nDelivered-To: e2e\.example-u1@e2e\.example\n"
                        r"Received: \(qmail %s invoked by uid %d\); %s\nDelivered-To: e2e\.example-sales@e2e\.example\n"
                        r"Received: \(qmail \d+ invoked by uid 0\); %s\n" % (qp, MAIL_UID, date, date)
                        + re.escape(MSG.decode()), got), got
