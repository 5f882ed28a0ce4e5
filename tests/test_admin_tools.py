"""qmail-newmrh, qmail-newu, qmail-tcpok and maildirmake as real programs, with their readers.

qmail-newmrh's cdb is read by bin/qmail-smtpd and qmail-newu's by bin/qmail-lspawn in the same
test; a bad line is refused with its number and the old cdb stays, byte for byte.
"""
import os
import stat
import subprocess

import pytest

from conftest import program
from qmailpy.ctl.cdbmap import open_cdb
from qmailpy.remote.tcpto import SIZE, TcpTo
from test_send_support import (DELIVERY_UID, NOBODY, SpawnClient, queue_message,
                               scratch)  # noqa: F401 (scratch: fixture)
from test_sendmail import qhome  # noqa: F401  (fixture)


def run(home, name, *args, **env):
    return subprocess.run([program(name), *args], capture_output=True, env=home.env(**env), timeout=60)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# -- qmail-newmrh

def rcpt_replies(home, *domains):
    """qmail-smtpd's answers to RCPT TO:<x@domain> for a client that may not relay."""
    session = b"HELO c\r\nMAIL FROM:<a@b.example>\r\n" + b"".join(
        b"RCPT TO:<x@%s>\r\n" % d.encode() for d in domains) + b"QUIT\r\n"
    env = home.env(TCPREMOTEIP="192.0.2.9", TCPLOCALIP="127.0.0.1", TCPLOCALHOST="localhost",
                   QMAILQUEUE=program("qmail-queue"))
    env.pop("RELAYCLIENT", None)
    r = subprocess.run([program("qmail-smtpd")], input=session, capture_output=True, env=env, timeout=60)
    return [line.split(" ")[0] for line in r.stdout.decode().split("\r\n")[3:3 + len(domains)]]


def test_newmrh_builds_what_qmail_smtpd_reads(qhome):
    qhome.control("rcpthosts", "host.example\n")
    qhome.control("morercpthosts", "# hosted\nOne.Example  \n.two.example\t\n\n[192.0.2.1]\r\n")
    r = run(qhome, "qmail-newmrh")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    cdb_path = os.path.join(qhome.root, "control", "morercpthosts.cdb")
    import cdblib
    with open(cdb_path, "rb") as f:
        assert sorted(cdblib.Reader(f.read()).keys()) == [b".two.example", b"[192.0.2.1]", b"one.example"]
    assert stat.S_IMODE(os.stat(cdb_path).st_mode) == 0o644
    domains = ("one.example", "ONE.example", "sub.two.example", "two.example", "[192.0.2.1]", "three.example")
    assert rcpt_replies(qhome, *domains) == ["250", "250", "250", "553", "250", "553"]

    before = read(cdb_path)
    qhome.control("morercpthosts", "one.example\nthree.example\nbad domain.example\n")
    r = run(qhome, "qmail-newmrh")
    assert (r.returncode, r.stderr) == (
        111, b"qmail-newmrh: fatal: control/morercpthosts:3: one domain a line: bad domain.example\n")
    assert read(cdb_path) == before
    assert rcpt_replies(qhome, "one.example", "three.example") == ["250", "553"]
    assert [n for n in os.listdir(os.path.join(qhome.root, "control")) if "tmp" in n] == []


@pytest.mark.parametrize("line, why", [
    (" lead.example", "white space in front"),
    ("joe@x.example", "a domain, not an address"),
    ("*.example", "not a host name"),
    ("x..example", "not a host name"),
    ("caf\u00e9.example", "not a host name"),
])
def test_newmrh_refuses_lines_smtpd_cannot_match(qhome, line, why):
    qhome.control("morercpthosts", "ok.example\n%s\n" % line)
    r = run(qhome, "qmail-newmrh")
    assert r.returncode == 111
    assert r.stderr.decode().startswith("qmail-newmrh: fatal: control/morercpthosts:2: %s: " % why)
    assert not os.path.exists(os.path.join(qhome.root, "control", "morercpthosts.cdb"))


def test_newmrh_needs_its_text_and_no_arguments(qhome):
    r = run(qhome, "qmail-newmrh")
    assert (r.returncode, r.stderr) == (
        111, b"qmail-newmrh: fatal: unable to read control/morercpthosts: file does not exist\n")
    r = run(qhome, "qmail-newmrh", "extra")
    assert (r.returncode, r.stderr) == (100, b"qmail-newmrh: usage: qmail-newmrh\n")


@pytest.mark.parametrize("name, text", [("qmail-newmrh", "morercpthosts"), ("qmail-newfilters", "clamavclients")])
def test_a_cdb_that_cannot_be_replaced_is_said_as_qmail_says_it(qhome, name, text):
    """A directory where the cdb goes: 'unable to write control/NAME.cdb: is a directory' (qmail's
    error_str), exit 111, no temporary file left beside it. qmail-newfilters named its temporary
    file ('.../.clamavclients.cdb.tmp.PID: Is a directory')."""
    control = os.path.join(qhome.root, "control")
    qhome.control(text, "a.example\n")
    os.mkdir(os.path.join(control, text + ".cdb"))
    before = sorted(os.listdir(control))
    r = run(qhome, name)
    assert (r.returncode, r.stderr.decode()) == (
        111, "%s: fatal: unable to write control/%s.cdb: is a directory\n" % (name, text))
    assert sorted(os.listdir(control)) == before


def test_newmrh_writes_the_bytes_cdb_make_writes(qhome, tmp_path):
    """qmail's qmail-newmrh adds each line with cdb_make (cdbmss), as ucspi-tcp's tcprules does:
    the same keys in the same order with empty values (tcprules' `key:allow`) give the same file,
    byte for byte, so a cdb made by either is read the same by the other's readers."""
    domains = ["d%d.example" % i for i in range(400)] + [".sub.example", "[192.0.2.1]"]
    qhome.control("morercpthosts", "\n".join(domains) + "\n")
    assert run(qhome, "qmail-newmrh").returncode == 0
    rules = "".join("%s:allow\n" % d for d in domains)
    subprocess.run(["tcprules", str(tmp_path / "ref.cdb"), str(tmp_path / "ref.tmp")], input=rules.encode(),
                   check=True)
    assert read(os.path.join(qhome.root, "control", "morercpthosts.cdb")) == read(tmp_path / "ref.cdb")


# -- qmail-newu

def assign(home, text):
    with open(os.path.join(home, "users", "assign"), "w") as f:
        f.write(text)


def test_newu_builds_what_qmail_lspawn_reads(scratch):
    fake = scratch.fake
    assign(scratch.home, "=Joe:joe:%d:%d:%s:::\n"
                         "+list-:lists:%d:%d:%s:-:post-:\n"
                         "+:nobody:%d:%d:%s:-::\n"
                         ".\n" % ((NOBODY, NOBODY, fake) * 3))
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")
    db = open_cdb(os.path.join(scratch.home, "users", "cdb"))
    assert db.get(b"!joe\0") == b"joe\0%d\0%d\0%s\0\0" % (NOBODY, NOBODY, fake.encode())
    assert db.get(b"!list-") == b"lists\0%d\0%d\0%s\0-\0post-" % (NOBODY, NOBODY, fake.encode())
    assert db.get(b"") == b"-"
    db.close()
    spawn = SpawnClient("qmail-lspawn", scratch.env())
    try:
        messid = queue_message(scratch.home)
        for n, rcpt in enumerate((b"JOE@localhost", b"list-Announce@localhost", b"other@localhost")):
            assert spawn.one(messid, b"a@b.example", rcpt, delnum=n) == b"Kdid 0+0+1\n"
    finally:
        spawn.close()
    calls = [line.split(" ", 4)[1:] for line in open(os.path.join(fake, "local.log")).read().splitlines()]
    assert calls == [
        [str(DELIVERY_UID), "JOE@localhost", "<a@b.example>", "joe|%s|||./Maildir/|" % fake],
        [str(DELIVERY_UID), "list-Announce@localhost", "<a@b.example>", "lists|%s|-|post-Announce|./Maildir/|" % fake],
        [str(DELIVERY_UID), "other@localhost", "<a@b.example>", "nobody|%s|-|other|./Maildir/|" % fake],
    ]


@pytest.mark.parametrize("text, message", [
    ("=joe:joe:1:1:/h:::\n=ann:ann:x:1:/h:::\n.\n", "users/assign:2: uid is not a number: 'x'"),
    ("=joe:joe:1:1:/h:::\n", "users/assign:2: no line '.' at the end (is the file cut short?)"),
    ("=joe:joe:1:1:/h:::\n=ann:ann:1:1:/h::\n.\n", "users/assign:2: 5 fields after the address, 6 needed "
     "(=local:user:uid:gid:homedir:dash:ext: or +prefix:user:uid:gid:homedir:dash:pre:)"),
    ("\n.\n", "users/assign:1: not a line of users/assign (=local:user:uid:gid:homedir:dash:ext: or "
     "+prefix:user:uid:gid:homedir:dash:pre:, or '.' at the end)"),
    ("=joe\n.\n", "users/assign:1: no ':' after the address"),
    ("=root:root:0:0:/root:::\n.\n", "users/assign:1: uid 0: qmail-lspawn never delivers as root"),
    ("=joe:joe:1:1:home:::\n.\n", "users/assign:1: the home directory is not an absolute path: 'home'"),
    ("=joe::1:1:/h:::\n.\n", "users/assign:1: no user name"),
    ("=joe:joe:1:1:/h:x::\n.\n", "users/assign:1: dash is empty or '-', not 'x'"),
    ("=joe:joe:1:1:/h:::\n=a\0b:a:1:1:/h:::\n.\n", "users/assign:2: a NUL byte"),
])
def test_newu_refuses_a_bad_line_and_keeps_the_old_cdb(scratch, text, message):
    cdb = os.path.join(scratch.home, "users", "cdb")
    before = read(cdb)
    assign(scratch.home, text)
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-newu: fatal: %s\n" % message)
    assert read(cdb) == before


def test_newu_ignores_what_follows_the_end(scratch):
    assign(scratch.home, "=joe:joe:1:1:/h:::\n.\nanything\n")
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert r.returncode == 0
    db = open_cdb(os.path.join(scratch.home, "users", "cdb"))
    assert len(db) == 2
    db.close()


# -- qmail-tcpok

def test_tcpok_clears_the_table(qhome):
    path = os.path.join(qhome.root, "queue", "lock", "tcpto")
    now = [1000000]
    t = TcpTo(path, now=lambda: now[0], pid=0)
    t.is_down("192.0.2.1")
    t.record("192.0.2.1", True)
    now[0] += 200
    t.record("192.0.2.1", True)
    assert t.is_down("192.0.2.1")
    r = run(qhome, "qmail-tcpok")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert read(path) == bytes(SIZE)
    assert not t.is_down("192.0.2.1")


def test_tcpok_without_a_table(qhome):
    os.unlink(os.path.join(qhome.root, "queue", "lock", "tcpto"))
    r = run(qhome, "qmail-tcpok")
    assert (r.returncode, r.stderr.decode()) == (
        111, "qmail-tcpok: fatal: unable to clear %s/queue/lock/tcpto: file does not exist\n" % qhome.root)
    assert not os.path.exists(os.path.join(qhome.root, "queue", "lock", "tcpto"))


def test_tcpok_never_writes_through_a_link_or_into_a_fifo(qhome, tmp_path):
    """qmail-tcpok runs as root, and lock/ is qmailq's: a link put there in tcpto's place would
    have root zero the first 1024 bytes of any file or disk (/etc/shadow, /dev/sda); a FIFO
    with a reader would take the zeros. Neither is written; the table is left to its owner."""
    path = os.path.join(qhome.root, "queue", "lock", "tcpto")
    victim = tmp_path / "shadow"
    victim.write_bytes(b"root:$6$secret:19000::::::\n" * 50)
    os.unlink(path)
    os.symlink(victim, path)
    r = run(qhome, "qmail-tcpok")
    assert (r.returncode, r.stderr.decode()) == (
        111, "qmail-tcpok: fatal: unable to clear %s: symbolic link loop\n" % path)
    assert victim.read_bytes() == b"root:$6$secret:19000::::::\n" * 50
    os.unlink(path)
    os.mkfifo(path, 0o622)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = run(qhome, "qmail-tcpok")
        assert (r.returncode, r.stderr.decode()) == (
            111, "qmail-tcpok: fatal: unable to clear %s: not a regular file\n" % path)
        assert os.read(reader, SIZE) == b""         # nothing written, and the writer gone
    finally:
        os.close(reader)


# -- maildirmake

def tree(path):
    out = []
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            out.append((os.path.relpath(full, path), stat.S_IMODE(os.stat(full).st_mode)))
    return sorted(out)


def mdm(tmp_path, *args):
    return subprocess.run([program("maildirmake"), *args], capture_output=True, cwd=str(tmp_path), timeout=60)


def test_maildirmake_as_qmail(tmp_path):
    r = mdm(tmp_path, "Maildir")
    assert (r.returncode, r.stderr) == (0, b"")
    assert stat.S_IMODE(os.stat(tmp_path / "Maildir").st_mode) == 0o700
    assert tree(tmp_path / "Maildir") == [("cur", 0o700), ("new", 0o700), ("tmp", 0o700)]
    r = mdm(tmp_path, "Maildir")
    assert (r.returncode, r.stderr) == (111, b"maildirmake: fatal: unable to mkdir Maildir: file already exists\n")
    for args in ((), ("a", "b"), ("-z", "x")):
        r = mdm(tmp_path, *args)
        assert r.returncode == 100 and r.stderr.endswith(
            b"maildirmake: usage: maildirmake [ -q quota ] [ -f folder ] dir\n")


def test_maildirmake_folder_and_quota_as_courier(tmp_path):
    assert mdm(tmp_path, "Maildir").returncode == 0
    assert mdm(tmp_path, "-f", "Sent", "Maildir").returncode == 0
    assert ("Sent/maildirfolder", 0o600) not in tree(tmp_path / "Maildir")
    assert (".Sent/maildirfolder", 0o600) in tree(tmp_path / "Maildir")
    (tmp_path / "Maildir" / "cur" / "1.2.host,S=1200:2,S").write_bytes(b"x" * 1300)
    (tmp_path / "Maildir" / ".Sent" / "new" / "3.4.host").write_bytes(b"y" * 50)
    r = mdm(tmp_path, "-q", "10M", "Maildir")
    assert (r.returncode, r.stderr) == (0, b"")
    assert (tmp_path / "Maildir" / "maildirsize").read_bytes() == b"10485760S\n1250 2\n"
    assert mdm(tmp_path, "-q", "5000S,100C", "Maildir").returncode == 0
    assert (tmp_path / "Maildir" / "maildirsize").read_bytes() == b"5000S,100C\n1250 2\n"
    assert mdm(tmp_path, "-q", "NOQUOTA", "Maildir").returncode == 0
    assert not (tmp_path / "Maildir" / "maildirsize").exists()
    r = mdm(tmp_path, "-q", "lots", "Maildir")
    assert r.returncode == 100 and r.stderr.startswith(b"maildirmake: fatal: invalid quota: 'lots'")
    r = mdm(tmp_path, "-f", "../x", "Maildir")
    assert r.returncode == 100
    r = mdm(tmp_path, "-f", "Drafts", "nothere")
    assert (r.returncode, r.stderr) == (111, b"maildirmake: fatal: nothere is not a Maildir\n")
    assert mdm(tmp_path, "-q", "1000C", "New").returncode == 0
    assert (tmp_path / "New" / "maildirsize").read_bytes() == b"1000C\n0 0\n"
    (tmp_path / "plain").mkdir()                 # there, and no Maildir: -q makes nothing in it
    r = mdm(tmp_path, "-q", "1000C", "plain")
    assert (r.returncode, r.stderr, os.listdir(tmp_path / "plain")) == (
        111, b"maildirmake: fatal: plain is not a Maildir\n", [])
    (tmp_path / "New" / "maildirsize").unlink()
    (tmp_path / "New" / "maildirsize").mkdir()    # maildirsize that cannot be written or removed
    for quota in ("10M", "NOQUOTA"):
        r = mdm(tmp_path, "-q", quota, "New")
        assert (r.returncode, r.stderr) == (111, b"maildirmake: fatal: unable to write New/maildirsize: is a directory\n")


def test_maildirmake_noquota_waits_for_a_delivery_recounting(tmp_path, monkeypatch):
    """maildirmake -q NOQUOTA run while a delivery holds the maildirsize lock and recounts: it
    removed the file between the delivery's read and its rewrite, and the rewrite put the old
    quota back. Here maildirmake is started from inside the delivery's recount; it now waits
    for the lock, and the file is gone when both are done."""
    from qmailpy import maildirpp
    from qmailpy.local import maildir as maildir_delivery
    assert mdm(tmp_path, "Maildir").returncode == 0
    box = str(tmp_path / "Maildir")
    with open(os.path.join(box, "maildirsize"), "w") as f:
        f.write("1000S\n2000 1\n0 0\n")             # says over: the delivery recounts, locked
    real_scan = maildirpp.scan
    started = []

    def scan(root):
        if not started:
            started.append(subprocess.Popen([program("maildirmake"), "-q", "NOQUOTA", box],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            try:
                started[0].wait(3)      # unlocked, it removes the file now
            except subprocess.TimeoutExpired:
                pass                    # waiting for the lock this delivery holds
        return real_scan(root)
    monkeypatch.setattr(maildirpp, "scan", scan)
    msg = tmp_path / "msg"
    msg.write_bytes(b"Subject: x\n\nbody\n")
    with open(msg, "rb") as f:
        maildir_delivery.deliver(box, f.fileno(), b"", {})
    out, err = started[0].communicate(timeout=60)
    assert (started[0].returncode, err) == (0, b"")
    assert not os.path.exists(os.path.join(box, "maildirsize"))
    assert len(os.listdir(os.path.join(box, "new"))) == 1


@pytest.mark.parametrize("name", ["qmail-newmrh", "qmail-newu", "qmail-tcpok", "maildirmake", "qmail-inject",
                                  "sendmail"])
def test_help(name):
    r = subprocess.run([program(name), "--help"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(b"usage: " + name.encode())


@pytest.mark.parametrize("name", ["qmail-queued", "qmail-usersd"])
def test_services_refuse_an_argument(tmp_path, name):
    """docs/qmail-queued.md and qmail-usersd.md: any argument but --help is a usage error, exit 100,
    before anything is bound (no sock/ is made)."""
    env = dict(os.environ, QMAILHOME=str(tmp_path), QMAILPY_SINGLEUSER="1")
    r = subprocess.run([program(name), "x"], capture_output=True, timeout=60, env=env)
    assert (r.returncode, r.stdout, r.stderr.split(b"\n")[0]) == (100, b"", b"usage: " + name.encode())
    assert os.listdir(str(tmp_path)) == []


def test_qstat_without_a_queue_is_111(tmp_path):
    """docs/qmail-qstat.md: 111 with a message on stderr when the queue cannot be read."""
    r = subprocess.run([program("qmail-qstat")], capture_output=True, timeout=60,
                       env=dict(os.environ, QMAILHOME=str(tmp_path)))
    assert (r.returncode, r.stdout) == (111, b"")
    assert r.stderr == ("qmail-qstat: fatal: unable to read the queue: [Errno 2] No such file or directory: "
                        "'%s/queue/mess'\n" % tmp_path).encode()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (chown)")
def test_newu_as_root_builds_only_roots_assign(scratch):
    """qmail-lspawn takes users/cdb only from root, since users/ is qmailu's; qmailu could still
    put its own users/assign there for the admin's next qmail-newu (as root) to build into a
    users/cdb root owns. Run by root, qmail-newu builds only an assign root owns."""
    cdb = os.path.join(scratch.home, "users", "cdb")
    before = read(cdb)
    path = os.path.join(scratch.home, "users", "assign")
    assign(scratch.home, "=joe:joe:1:1:/h:::\n.\n")
    os.chown(path, NOBODY, NOBODY)
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert (r.returncode, r.stderr.decode()) == (111, "qmail-newu: fatal: users/assign belongs to uid %d, not "
                                                      "root: not built (chown root users/assign if it is yours)\n"
                                                 % NOBODY)
    assert read(cdb) == before
    os.chown(path, 0, 0)
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert (r.returncode, r.stderr) == (0, b"")



@pytest.mark.skipif(os.getuid() != 0, reason="needs root (its own devices)")
def test_newu_as_root_never_opens_a_device_linked_as_assign(scratch):
    """qmailu may link users/assign to a device root owns (/dev/zero would be read for ever,
    /dev/watchdog's open starts the watchdog): root's qmail-newu opens no such thing."""
    cdb = os.path.join(scratch.home, "users", "cdb")
    before = read(cdb)
    path = os.path.join(scratch.home, "users", "assign")
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink("/dev/null", path)
    r = subprocess.run([program("qmail-newu")], capture_output=True, env=scratch.env(), timeout=60)
    assert (r.returncode, r.stderr) == (111, b"qmail-newu: fatal: unable to read users/assign: not a file\n")
    assert read(cdb) == before