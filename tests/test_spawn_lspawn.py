"""qmail-lspawn as a real process: qmail-local's arguments, uid, exit-code mapping, spawn.c's checks."""
import os
import sys
import types

import pytest

from qmailpy.proto import spawnwire
from qmailpy.spawn import lspawn, mailbox, passwd
from qmailpy.users import domainfiles
from test_send_support import (BIN, DELIVERY_UID, NOBODY, ROOT_ONLY, SpawnClient, no_hang, queue_message, scratch,
                               write_users_cdb)  # noqa: F401 (scratch: fixture)


@pytest.fixture
def spawn(scratch):
    client = SpawnClient("qmail-lspawn", scratch.env())
    yield client
    client.close()


def test_limit_and_a_delivery(scratch, spawn):
    assert spawn.decoder.feed(b"") == [] and spawn.decoder.limit is None
    messid = queue_message(scratch.home)
    assert spawn.one(messid, b"alice@localhost", b"Joe-Ext@localhost") == b"Kdid 0+0+1\n"
    assert spawn.decoder.limit == 500
    [line] = open(os.path.join(scratch.fake, "local.log")).read().splitlines()
    _, uid, rcpt, sender, args = line.split(" ", 4)
    # users/cdb's catch-all `+:nobody:65534:65534:<fake>:-::` gives ext = the whole local part
    assert (int(uid), rcpt, sender) == (DELIVERY_UID, "Joe-Ext@localhost", "<alice@localhost>")
    assert args == "nobody|%s|-|Joe-Ext|./Maildir/|" % scratch.fake


@pytest.mark.parametrize("code,report", [
    (0, b"Kexit 0\n"), (111, b"Zexit 111\n"), (71, b"Zexit 71\n"), (74, b"Zexit 74\n"), (75, b"Zexit 75\n"),
    (100, b"Dexit 100\n"), (1, b"Dexit 1\n"), (99, b"Dexit 99\n"),
    (112, b"ZInternal qmail-lspawn bug.\n"), (113, b"ZNot allowed to perform deliveries as root.\n"),
    (115, b"ZNFS failure in qmail-local.\n"), (116, b"ZUnable to find alias user!\n"),
    (117, b"ZTrouble reading users/cdb in qmail-lspawn.\n"), (118, b"ZTemporary failure in qmail-lspawn.\n"),
    (119, b"ZOut of memory in qmail-lspawn.\n"), (120, b"ZUnable to run qmail-local.\n"),
    (121, b"ZUnable to run qmail-getpw.\n"), (126, b"DUnable to run qmail-local.\n"),
])
def test_exit_codes(code, report):
    assert lspawn.report(code, b"exit %d\n" % code) == report


def test_many_at_once_crash_and_long_report(scratch, spawn):
    messid = queue_message(scratch.home)
    for n, local in enumerate((b"exit-111-x", b"crash", b"long", b"exit-100-y", b"fine")):
        spawn.send(n, messid, b"alice@localhost", local + b"@localhost")
    got = spawn.reports(5)
    assert got[0] == b"Zexit 111\n"
    assert got[1] == b"Zqmail-local crashed.\n"
    assert got[2].startswith(b"D0123456789\n") and got[2].endswith(b"\nError report too long, sorry.\n")
    assert len(got[2]) == 1 + 3000 - 3
    assert got[3] == b"Dexit 100\n"
    assert got[4] == b"Kdid 0+0+1\n"


def test_spawn_checks(scratch, spawn):
    messid = queue_message(scratch.home)
    assert spawn.one(messid, b"a@b", b"no-at-sign") == b"DSorry, address must include host name. (#5.1.3)\n"
    assert spawn.one(b"1/x", b"a@b", b"joe@localhost") == b"DInternal error: messid has nonnumerics. (#5.3.5)\n"
    assert spawn.one(b"", b"a@b", b"joe@localhost") == b"DInternal error: messid too short. (#5.3.5)\n"
    assert spawn.one(b"1/999999999", b"a@b", b"joe@localhost") == b"Zqmail-spawn unable to open message. (#4.3.0)\n"
    assert spawn.one(messid, b"a@b", b"joe@localhost", delnum=500) == b"ZInternal error: delnum too big. (#4.3.5)\n"
    assert spawn.one(messid, b"a@b", b"@localhost") == b"K"


def test_a_fifo_or_link_in_mess_is_never_opened(scratch, spawn, tmp_path):
    """qmail-lspawn runs as root and mess/ is qmailq's: a FIFO named as a message would hold root's
    open() (and every local delivery after it) until someone writes it, a link to a device would
    have root open that (/dev/watchdog starts the watchdog). Neither is opened: spawn.c's wrong
    type, at once, and the next delivery goes on."""
    messid = queue_message(scratch.home)
    fifo = os.path.join(scratch.home, "queue", "mess", "7", "999990007")
    os.mkfifo(fifo, 0o600)
    import threading
    import time

    def writer():               # what a waiting open() needs to return: the test ends either way
        fd = os.open(fifo, os.O_WRONLY)
        os.close(fd)
    release = threading.Timer(5, writer)
    release.daemon = True
    release.start()
    began = time.monotonic()
    spawn.send(0, b"7/999990007", b"a@b", b"joe@localhost")
    got = spawn.reports(1, timeout=30)
    waited = time.monotonic() - began
    release.cancel()
    assert got == {0: b"ZSorry, message has wrong type. (#4.3.5)\n"}
    assert waited < 4, "qmail-lspawn waited %.1f s on a FIFO in mess/" % waited
    link = os.path.join(scratch.home, "queue", "mess", "8", "999990008")
    os.symlink(fifo, link)
    assert spawn.one(b"8/999990008", b"a@b", b"joe@localhost") == b"ZSorry, message has wrong type. (#4.3.5)\n"
    assert spawn.one(messid, b"a@b", b"@localhost") == b"K"


@pytest.mark.skipif(**ROOT_ONLY)
def test_users_cdb_exact_entry_and_root_refused(scratch):
    write_users_cdb(scratch.home, {
        b"!joe\0": (b"joe", NOBODY, NOBODY, b"/home/joe", b"", b""),
        b"!rootbox\0": (b"root", 0, 0, b"/root", b"", b""),
        b"!list-": (b"lists", NOBODY, NOBODY, b"/var/lists", b"-", b"x-"),
    }, wild=b"-")
    client = SpawnClient("qmail-lspawn", scratch.env(), ["./Mailbox"])
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"Joe@localhost") == b"Kdid 0+0+1\n"
        assert client.one(messid, b"a@b", b"rootbox@localhost") == b"ZNot allowed to perform deliveries as root.\n"
        assert client.one(messid, b"a@b", b"list-Sub@localhost") == b"Kdid 0+0+1\n"
        assert client.one(messid, b"a@b", b"nobody-here@localhost") == b"ZUnable to find alias user!\n"
    finally:
        client.close()
    args = [line.split(" ", 4)[4] for line in open(os.path.join(scratch.fake, "local.log")).read().splitlines()]
    assert args == ["joe|/home/joe|||./Mailbox|", "lists|/var/lists|-|x-Sub|./Mailbox|"]


@pytest.mark.skipif(**ROOT_ONLY)
def test_users_cdb_that_root_does_not_own_is_trouble(scratch):
    """users/ belongs to the users service's qmailu (its SQLite database and journals live there),
    so qmailu can put any file at users/cdb; qmail-lspawn, as root, took from it the uid and home
    of any delivery (any uid but 0, a home of qmailu's with a .qmail of qmailu's). It takes only a
    users/cdb root owns, as qmail-newu writes it; another is CDB_TROUBLE (a deferral), and so is
    a FIFO there, which is never waited on."""
    from qmailpy.ctl.reader import Controls
    write_users_cdb(scratch.home, {b"!joe\0": (b"joe", NOBODY, NOBODY, b"/home/joe", b"", b"")})
    cdb = os.path.join(scratch.home, "users", "cdb")
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=False)
    joe = mailbox.Assignment(b"joe", NOBODY, NOBODY, b"/home/joe", b"", b"")
    assert r.resolve(b"joe", b"localhost") == joe
    os.chown(cdb, NOBODY, NOBODY)
    assert r.resolve(b"joe", b"localhost") == mailbox.CDB_TROUBLE
    assert mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=True).resolve(
        b"joe", b"localhost") == joe                # single-user mode: the invoking user's files
    os.unlink(cdb)
    os.mkfifo(cdb)
    with no_hang(5, "users/cdb opened blocking"):
        assert r.resolve(b"joe", b"localhost") == mailbox.CDB_TROUBLE


def test_a_users_cdb_entry_or_file_qmail_newu_would_not_write_is_trouble(scratch):
    """An entry with fewer than six fields or a uid that is no number, or a users/cdb without
    the wildcard-characters key qmail-newu always writes (qmail-lspawn.c reads it first: a
    cdb_seek of "" that is not 1 is QLX_CDB for every recipient, listed or not): `Trouble
    reading users/cdb`, a deferral; never a delivery as some default uid."""
    import cdblib
    from qmailpy.ctl.reader import Controls
    write_users_cdb(scratch.home, {b"!short\0": (b"short", NOBODY, NOBODY, b"/home/short"),
                                   b"!word\0": (b"word", b"nobody", NOBODY, b"/home/word", b"", b""),
                                   b"!joe\0": (b"joe", NOBODY, NOBODY, b"/home/joe", b"", b"")})
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=True)
    assert r.resolve(b"short", b"localhost") == mailbox.CDB_TROUBLE
    assert r.resolve(b"word", b"localhost") == mailbox.CDB_TROUBLE
    assert r.resolve(b"joe", b"localhost") == mailbox.Assignment(b"joe", NOBODY, NOBODY, b"/home/joe", b"", b"")
    with open(os.path.join(scratch.home, "users", "cdb"), "wb") as f:
        w = cdblib.Writer(f)
        w.put(b"!joe\0", b"\0".join((b"joe", b"65534", b"65534", b"/home/joe", b"", b"")))
        w.finalize()
    assert r.resolve(b"ann", b"localhost") == mailbox.CDB_TROUBLE
    assert r.resolve(b"joe", b"localhost") == mailbox.CDB_TROUBLE       # read before any entry, as qmail

def test_missing_qmail_local(scratch):
    client = SpawnClient("qmail-lspawn", scratch.env(QMAILLOCAL="/nonexistent/qmail-local"))
    try:
        assert client.one(queue_message(scratch.home), b"a@b", b"joe@localhost") == b"DUnable to run qmail-local.\n"
    finally:
        client.close()


def test_end_of_input_waits_for_running_deliveries(scratch):
    client = SpawnClient("qmail-lspawn", scratch.env())
    client.send(3, queue_message(scratch.home), b"a@b", b"joe@localhost")
    code, rest = client.close()
    assert code == 0
    assert spawnwire.ReportDecoder().feed(rest) == [
        spawnwire.Report(3, b"K", b"did 0+0+1\n")]


class FakeUsers:
    """What qmailpy.users will provide: open_users() -> .lookup(user, domain)."""

    class UsersUnavailable(Exception):
        pass

    def __init__(self, boxes, down=False, domains=None):
        self.boxes, self.down, self.domains = boxes, down, domains or {}
        self.module = types.ModuleType("qmailpy.users")
        self.module.open_users = lambda home, controls: self
        self.module.UsersUnavailable = self.UsersUnavailable
        self.module.domainfiles = domainfiles

    def lookup(self, user, domain):
        if self.down:
            raise self.UsersUnavailable("db down")
        return self.boxes.get((user, domain))

    def domain_of(self, domain):
        if self.down:
            raise self.UsersUnavailable("db down")
        return domain if domain in self.domains else None

    def domain_dir(self, domain):
        return self.domains[domain]


def test_virtual_mailbox_from_users_database(scratch, monkeypatch, tmp_path):
    box = types.SimpleNamespace(name="joe", domain="virt.example", dir="/vpopmail/virt.example/joe",
                                quota="10000000S", uid=89, gid=89)
    # a mailbox whose directory the database could not give an owner for: no uid to run as
    homeless = types.SimpleNamespace(name="old", domain="virt.example", dir="/gone", quota=None, uid=None, gid=None)
    users = FakeUsers({("joe", "virt.example"): box, ("old", "virt.example"): homeless},
                      domains={"virt.example": str(tmp_path)})
    monkeypatch.setitem(sys.modules, "qmailpy.users", users.module)
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    from qmailpy.ctl.reader import Controls
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=False)
    assert r.resolve(b"virt.example-Joe", b"virt.example") == mailbox.Assignment(
        b"joe", 89, 89, b"/vpopmail/virt.example/joe", b"", b"", "10000000S")
    assert r.resolve(b"virt.example-ann", b"virt.example") == mailbox.NO_MAILBOX
    assert r.resolve(b"virt.example-old", b"virt.example") == mailbox.NO_OWNER
    users.down = True
    assert r.resolve(b"virt.example-joe", b"virt.example") == mailbox.USERS_DOWN


def test_passwd_file_users_and_the_alias_user(scratch, tmp_path):
    """qmail-getpw over $QMAILPY_PASSWD: the longest user-ext with an entry whose home it owns
    (uid 0 never), else the alias user with the whole local part as ext."""
    mine = tmp_path / "joe"
    mine.mkdir()
    uid, gid = os.getuid() or 1, os.getgid()
    os.chown(mine, uid, gid)
    with open(scratch.passwd, "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
        f.write("joe:x:%d:%d::%s:/bin/sh\n" % (uid, gid, mine))
        f.write("alias:x:7790:7790::/var/qmail/alias:/bin/false\n")
        f.write("broken line\n")
    users = passwd.lookup({"QMAILPY_PASSWD": scratch.passwd})
    assert mailbox.getpw(b"joe-list-x", getpwnam=users) == mailbox.Assignment(
        b"joe", uid, gid, str(mine).encode(), b"-", b"list-x")
    assert mailbox.getpw(b"Joe", getpwnam=users) == mailbox.Assignment(b"joe", uid, gid, str(mine).encode(), b"", b"")
    assert mailbox.getpw(b"root", getpwnam=users) == mailbox.Assignment(
        b"alias", 7790, 7790, b"/var/qmail/alias", b"-", b"root")
    with open(scratch.passwd, "w") as f:                       # qmail-getpw without an alias user
        f.write("joe:x:%d:%d::%s:/bin/sh\n" % (uid, gid, mine))
    users = passwd.lookup({"QMAILPY_PASSWD": scratch.passwd})
    assert mailbox.getpw(b"nobody-here", getpwnam=users) == mailbox.NOALIAS


@pytest.mark.skipif(**ROOT_ONLY)
def test_without_an_alias_user_home_alias_stands_in_as_its_owner(scratch):
    """`make run` as root makes no alias user: qmail-lspawn (root) took postmaster's mail,
    double bounces included, for `Unable to find alias user!` and deferred it for good. With
    no alias user, $QMAILHOME/alias stands in, run as its owner (the demo gives it to
    vpopmail); a root-owned or absent alias/ stays qmail's NOALIAS, and single-user mode
    (not root) runs it as itself. `alias-postmaster` (qmail-users adddomain's
    postmaster@domain:alias) looked for .qmail-alias-postmaster: no mailbox."""
    from qmailpy.ctl.reader import Controls
    os.unlink(os.path.join(scratch.home, "users", "cdb"))           # its catch-all would answer first
    users = passwd.lookup({"QMAILPY_PASSWD": scratch.passwd})       # an empty passwd file: no alias user
    root = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), False, users)
    alias = os.path.join(scratch.home, "alias")
    assert root.resolve(b"postmaster", b"localhost") == mailbox.NOALIAS
    os.mkdir(alias)
    assert root.resolve(b"postmaster", b"localhost") == mailbox.NOALIAS
    os.chown(alias, NOBODY, NOBODY + 1)
    assert root.resolve(b"postmaster", b"localhost") == mailbox.Assignment(
        b"alias", NOBODY, NOBODY + 1, alias.encode(), b"-", b"postmaster")
    # virtualdomains' postmaster@domain:alias: the alias user by name, as qmail-getpw finds it
    assert root.resolve(b"alias-Postmaster", b"virt.example") == mailbox.Assignment(
        b"alias", NOBODY, NOBODY + 1, alias.encode(), b"-", b"Postmaster")
    assert root.resolve(b"alias", b"localhost") == mailbox.Assignment(
        b"alias", NOBODY, NOBODY + 1, alias.encode(), b"", b"")
    assert root.resolve(b"aliases", b"localhost") == mailbox.Assignment(
        b"alias", NOBODY, NOBODY + 1, alias.encode(), b"-", b"aliases")
    single = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), True, users)
    assert single.resolve(b"postmaster", b"localhost") == mailbox.Assignment(
        b"alias", os.getuid(), os.getgid(), alias.encode(), b"-", b"postmaster")
    assert single.resolve(b"alias-postmaster", b"localhost") == mailbox.Assignment(
        b"alias", os.getuid(), os.getgid(), alias.encode(), b"-", b"postmaster")


@pytest.mark.skipif(**ROOT_ONLY)
@pytest.mark.parametrize("files, local, dash, ext", [
    ([], b"joe-lists", b"", b""),
    ([".qmail"], b"joe-lists", b"", b""),
    ([".qmail-lists"], b"joe-Lists", b"-", b"Lists"),
    ([".qmail-default"], b"joe-lists", b"-", b"lists"),
    ([".qmail-lists-default"], b"joe-lists-x", b"-", b"lists-x"),
    ([".qmail-other"], b"joe-lists", b"", b""),
])
def test_a_mailboxs_extension_without_its_dotqmail_file_goes_to_the_mailbox(
        scratch, monkeypatch, tmp_path, files, local, dash, ext):
    """joe-lists@ of a users-database mailbox, as vpopmail's QMAIL_EXT delivers it (vdelivermail's
    check_forward_deliver): .qmail-lists, .qmail-<prefix>-default, .qmail-default in the mailbox
    directory, else its .qmail, else its Maildir. qmail-local was handed dash '-' and ext
    'lists' anyway, found no file and bounced (no mailbox here) what chkuser had accepted."""
    from qmailpy.ctl.reader import Controls
    for name in files:
        (tmp_path / name).write_text("./Maildir/\n")
    box = types.SimpleNamespace(name="joe", domain="virt.example", dir=str(tmp_path),
                                quota="10000000S", uid=89, gid=89)
    monkeypatch.setitem(sys.modules, "qmailpy.users", FakeUsers({("joe", "virt.example"): box}).module)
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=False)
    assert r.resolve(b"virt.example-" + local, b"virt.example") == mailbox.Assignment(
        b"joe", 89, 89, os.fsencode(tmp_path), dash, ext, "10000000S")


def test_virtual_mailbox_from_the_real_users_database(scratch):
    """No users/cdb: qmail-lspawn asks qmailpy.users (SQLite) and runs qmail-local as the mailbox owner."""
    import shutil
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    users = open_users(scratch.home, Controls(scratch.home, {}), create=True)
    try:
        admin.add_domain(users, "virt.example")
        box = admin.add_user(users, "joe@virt.example", "secret", quota="10M")
    finally:
        users.close()
    for root, dirs, files in os.walk(os.path.join(scratch.home, "vpopmail")):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            shutil.chown(name, NOBODY, NOBODY)
    client = SpawnClient("qmail-lspawn", scratch.env(MAILDIRQUOTA="stale"))
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"virt.example-joe@virt.example") == b"Kdid 0+0+1\n"
        assert client.one(messid, b"a@b", b"virt.example-ann@virt.example") == mailbox.NO_MAILBOX
        assert client.one(messid, b"a@b", b"joe@localhost") == b"ZUnable to find alias user!\n"
    finally:
        client.close()
    [line] = open(os.path.join(scratch.fake, "local.log")).read().splitlines()
    _, uid, rcpt, _, args = line.split(" ", 4)
    assert (int(uid), rcpt) == (NOBODY, "virt.example-joe@virt.example")
    assert args == "joe|%s|||./Maildir/|10485760S" % box.dir


@pytest.mark.skipif(**ROOT_ONLY)
def test_noquota_mailbox_gets_maildirquota_noquota(scratch):
    """qmail-users setquota NOQUOTA removes maildirsize; a delivery started before it (its
    $MAILDIRQUOTA the old quota) may recount and write the file again, with the old definition.
    qmail-lspawn left $MAILDIRQUOTA unset for a NOQUOTA mailbox, so every later delivery took
    that definition from the file and bounced mail as over quota for good. pw_shell decides, as
    in vdelivermail: a NOQUOTA mailbox's deliveries get MAILDIRQUOTA=NOQUOTA."""
    import shutil
    from qmailpy import maildirpp
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    users = open_users(scratch.home, Controls(scratch.home, {}), create=True)
    try:
        admin.add_domain(users, "virt.example")
        box = admin.add_user(users, "joe@virt.example", "secret", quota="1000")
        admin.set_quota(users, "joe@virt.example", "NOQUOTA")
    finally:
        users.close()
    maildirpp.recount(box.maildir, "1000S")         # what the delivery started before did meanwhile
    for root, dirs, files in os.walk(os.path.join(scratch.home, "vpopmail")):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            shutil.chown(name, NOBODY, NOBODY)
    client = SpawnClient("qmail-lspawn", scratch.env())
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"virt.example-joe@virt.example") == b"Kdid 0+0+1\n"
    finally:
        client.close()
    [line] = open(os.path.join(scratch.fake, "local.log")).read().splitlines()
    assert line.split(" ", 4)[4] == "joe|%s|||./Maildir/|NOQUOTA" % box.dir


def test_domain_directory_dotqmail_files(scratch, monkeypatch, tmp_path):
    """vpopmail domains keep aliases and catch-alls in the domain directory: chkuser's order."""
    ddir = str(tmp_path / "domains" / "virt.example")
    os.makedirs(ddir)
    st = os.stat(ddir)

    def put(name, text):
        with open(os.path.join(ddir, name), "w") as f:
            f.write(text)

    box = types.SimpleNamespace(name="joe", domain="virt.example", dir="/vp/joe", quota=None, uid=89, gid=89)
    locked = types.SimpleNamespace(name="old", domain="virt.example", dir="/vp/old", quota=None, uid=89, gid=89,
                                   bounces=True)
    users = FakeUsers({("joe", "virt.example"): box, ("old", "virt.example"): locked},
                      domains={"virt.example": ddir})
    monkeypatch.setitem(sys.modules, "qmailpy.users", users.module)
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    from qmailpy.ctl.reader import Controls
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=False)

    def resolve(user, domain=b"virt.example"):
        return r.resolve(b"virt.example-" + user, domain)

    def in_domain_dir(ext):
        return mailbox.Assignment(b"virt.example", st.st_uid, st.st_gid, ddir.encode(), b"-", ext)

    joe = mailbox.Assignment(b"joe", 89, 89, b"/vp/joe", b"", b"", "NOQUOTA")
    assert resolve(b"ann") == mailbox.NO_MAILBOX                  # nothing in the directory
    put(".qmail-info", "&joe@virt.example\n")
    put(".qmail-sales:team", "&joe@virt.example\n")
    put(".qmail-lists-default", "|true\n")
    put(".qmail-joe", "&ann@example.net\n")
    assert resolve(b"Info") == in_domain_dir(b"Info")
    assert resolve(b"sales.team") == in_domain_dir(b"sales.team")
    assert resolve(b"lists-x-y") == in_domain_dir(b"lists-x-y")
    assert resolve(b"joe") == in_domain_dir(b"joe")               # the alias file wins, as in vpopmail
    os.unlink(os.path.join(ddir, ".qmail-joe"))
    assert resolve(b"joe") == joe
    assert resolve(b"old") == b"Dvdelivermail: account is locked email bounced old@virt.example\n"
    assert resolve(b"joe-tag") == joe                             # /vp/joe has no .qmail-tag: its Maildir
    put(".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    assert resolve(b"ann") == in_domain_dir(b"ann")               # qmail-local bounces it, as vdelivermail
    assert resolve(b"joe-tag") == joe
    put(".qmail-default", "| /home/vpopmail/bin/vdelivermail '' joe@virt.example\n")
    assert resolve(b"ann") == in_domain_dir(b"ann")
    assert resolve(b"joe-tag") == in_domain_dir(b"joe-tag")       # a catch-all comes before joe's extensions
    os.unlink(os.path.join(ddir, ".qmail-default"))
    os.symlink(".qmail-default", os.path.join(ddir, ".qmail-default"))
    assert resolve(b"ann") == mailbox.DOMAIN_TROUBLE              # cannot look: defer, never bounce
    assert resolve(b"joe") == joe


def test_vpopmails_users_assign_line_still_reaches_the_mailboxes(scratch, monkeypatch, tmp_path):
    """A vpopmail host's users/assign has `+virt.example-:virt.example:89:89:<domain dir>:-::`
    for each domain (vadddomain), copied over as docs/operations.md says. In vpopmail that
    line runs vdelivermail for every user, mailboxes too; here the mailbox is found as for a
    recipient without the line, and the domain directory keeps what has no mailbox. Another
    users/assign line for a virtual domain is left as qmail-lspawn reads it."""
    ddir = str(tmp_path / "domains" / "virt.example")
    os.makedirs(ddir)
    with open(os.path.join(ddir, ".qmail-default"), "w") as f:
        f.write("| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    st = os.stat(ddir)
    box = types.SimpleNamespace(name="joe", domain="virt.example", dir="/vp/joe", quota=None, uid=89, gid=89)
    users = FakeUsers({("joe", "virt.example"): box}, domains={"virt.example": ddir})
    monkeypatch.setitem(sys.modules, "qmailpy.users", users.module)
    entry = (b"virt.example", st.st_uid, st.st_gid, ddir.encode(), b"-", b"")
    other = (b"lists", 7, 7, b"/home/lists", b"-", b"")
    write_users_cdb(scratch.home, {b"!virt.example-": entry, b"!other.example-": other}, wild=b"-")
    scratch.control("virtualdomains", "virt.example:virt.example\nother.example:other.example")
    from qmailpy.ctl.reader import Controls
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), single_user=False)
    assert r.resolve(b"virt.example-Joe", b"virt.example") == mailbox.Assignment(
        b"joe", 89, 89, b"/vp/joe", b"", b"", "NOQUOTA")
    assert r.resolve(b"virt.example-ann", b"virt.example") == mailbox.Assignment(
        b"virt.example", st.st_uid, st.st_gid, ddir.encode(), b"-", b"ann")
    assert r.resolve(b"other.example-joe", b"other.example") == mailbox.Assignment(*other[:5], b"joe")
    users.down = True
    assert r.resolve(b"virt.example-joe", b"virt.example") == mailbox.USERS_DOWN


@pytest.mark.skipif(**ROOT_ONLY)
def test_a_changed_virtualdomains_is_read_without_a_signal(scratch):
    """qmail-send runs as qmails and cannot SIGHUP the root qmail-lspawn (issue 13 item 3): a domain
    added to control/virtualdomains while qmail-lspawn runs must still find its mailboxes."""
    import shutil
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    users = open_users(scratch.home, Controls(scratch.home, {}), create=True)
    try:
        for domain, user in (("virt.example", "joe"), ("new.example", "ann")):
            admin.add_domain(users, domain)
            admin.add_user(users, "%s@%s" % (user, domain), "secret")
        ann = users.lookup("ann", "new.example")
    finally:
        users.close()
    for root, dirs, files in os.walk(os.path.join(scratch.home, "vpopmail")):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            shutil.chown(name, NOBODY, NOBODY)
    client = SpawnClient("qmail-lspawn", scratch.env())
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"virt.example-joe@virt.example") == b"Kdid 0+0+1\n"
        scratch.control("virtualdomains", "virt.example:virt.example\nnew.example:new.example")
        assert client.one(messid, b"a@b", b"new.example-ann@new.example") == b"Kdid 0+0+1\n"
    finally:
        client.close()
    lines = open(os.path.join(scratch.fake, "local.log")).read().splitlines()
    _, uid, rcpt, _, args = lines[-1].split(" ", 4)
    assert (int(uid), rcpt) == (NOBODY, "new.example-ann@new.example")
    assert args == "ann|%s|||./Maildir/|NOQUOTA" % ann.dir


def test_watched_controls_notice_a_changed_file(tmp_path):
    from qmailpy.ctl.watch import WatchedControls
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "locals").write_text("a.example\n")
    c = WatchedControls(str(home))
    assert c.value("locals") == ("a.example",) and c.value("virtualdomains") == ()
    assert not c.changed()
    (home / "control" / "virtualdomains").write_text("v.example:v.example\n")      # made
    assert c.changed()
    c = WatchedControls(str(home))
    c.value("virtualdomains")
    (home / "control" / "options").write_text("concurrencylocal: 5\n")             # options may set it
    assert c.changed()
    c = WatchedControls(str(home))
    c.value("locals")
    with open(home / "control" / "locals", "a") as f:                               # edited in place
        f.write("b.example\n")
    assert c.changed()


def test_watched_controls_see_a_file_made_after_their_listing_of_control(tmp_path):
    """Controls list control/ once and take a name it did not list as absent. A watcher that
    listed control/ (reading locals) before virtualdomains was made, and stamped virtualdomains
    after (when it came to read it), read the default and stamped the new file as seen: it
    never noticed, and qmail-todo or qmail-lspawn kept routing without the virtual domain until
    another change. A watcher reads each file itself, after its stamp."""
    from qmailpy.ctl.watch import WatchedControls
    home = tmp_path / "qmail"
    (home / "control").mkdir(parents=True)
    (home / "control" / "locals").write_text("a.example\n")
    c = WatchedControls(str(home))
    assert c.value("locals") == ("a.example",)
    (home / "control" / "virtualdomains").write_text("v.example:v.example\n")     # qmail-users adddomain
    assert c.value("virtualdomains") == ("v.example:v.example",) and not c.changed()


def test_home_stat_errors_are_qmail_getpw_temporary_ones(scratch, tmp_path, monkeypatch):
    """qmail-getpw.c: a stat of the user's home that fails with error_temp()'s errno (qmail's whole
    list: an NFS home's ECONNRESET or EHOSTDOWN too) is QLX_NFS, a deferral; another errno means
    no such user here (the alias user)."""
    import errno
    uid, gid = os.getuid() or 1, os.getgid()
    with open(scratch.passwd, "w") as f:
        f.write("joe:x:%d:%d::/nfs/joe:/bin/sh\n" % (uid, gid))
        f.write("alias:x:7790:7790::/var/qmail/alias:/bin/false\n")
    users = passwd.lookup({"QMAILPY_PASSWD": scratch.passwd})
    real_stat = os.stat
    for err, want in ((errno.ECONNRESET, mailbox.NFS), (errno.EHOSTDOWN, mailbox.NFS), (errno.ESTALE, mailbox.NFS),
                      (errno.ENOENT, mailbox.Assignment(b"alias", 7790, 7790, b"/var/qmail/alias", b"-", b"joe"))):
        def failing_stat(path, *a, err=err, **k):
            if path == "/nfs/joe":
                raise OSError(err, os.strerror(err), path)
            return real_stat(path, *a, **k)
        monkeypatch.setattr(os, "stat", failing_stat)
        assert mailbox.getpw(b"joe", getpwnam=users) == want, errno.errorcode[err]
        monkeypatch.setattr(os, "stat", real_stat)


@pytest.mark.parametrize("with_database", [True, False])
def test_a_virtual_domain_the_users_database_does_not_host_is_qmails(scratch, tmp_path, with_database):
    """virtualdomains as qmail's FAQ and INSTALL.vsm use it, for a domain that is not
    vpopmail's: `dom3.example:alias-dom3` (~alias/.qmail-dom3-default takes bob@dom3.example)
    or `dom4.example:joe` (joe's .qmail-bob). qmail-getpw answers them, as for any local
    part; vpopmail answered only for its own domains, through its users/assign line. Every
    prefix was taken for a users-database domain: bob@dom3.example bounced `Sorry, no mailbox
    here by that name. (#5.1.1)` (the admin's own alias domain, on a host with one vpopmail
    domain), or deferred `Unable to read the users database` on a host without one."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    os.unlink(os.path.join(scratch.home, "users", "cdb"))
    joe, alias = tmp_path / "joe", tmp_path / "alias"
    uid, gid = os.getuid() or 1, os.getgid()
    for home in (joe, alias):
        home.mkdir()
        os.chown(home, uid, gid)
    with open(scratch.passwd, "w") as f:
        f.write("joe:x:%d:%d::%s:/bin/sh\n" % (uid, gid, joe))
        f.write("alias:x:%d:%d::%s:/bin/false\n" % (uid, gid, alias))
    scratch.control("virtualdomains", "virt.example:virt.example\ndom3.example:alias-dom3\ndom4.example:joe")
    if with_database:
        users = open_users(scratch.home, Controls(scratch.home, {}), create=True)
        try:
            admin.add_domain(users, "virt.example")
        finally:
            users.close()
    r = mailbox.Resolver(scratch.home, Controls(scratch.home, {}), False,
                         passwd.lookup({"QMAILPY_PASSWD": scratch.passwd}))
    try:
        assert r.resolve(b"alias-dom3-bob", b"dom3.example") == mailbox.Assignment(
            b"alias", uid, gid, os.fsencode(alias), b"-", b"dom3-bob")
        assert r.resolve(b"joe-bob", b"dom4.example") == mailbox.Assignment(
            b"joe", uid, gid, os.fsencode(joe), b"-", b"bob")
        if with_database:       # the users database's own domain: still its answer
            assert r.resolve(b"virt.example-ann", b"virt.example") == mailbox.NO_MAILBOX
    finally:
        r.close()


def test_a_control_that_cannot_be_reread_keeps_the_old_ones_with_one_warning(scratch):
    """A control qmail-lspawn rereads (changed while it runs) that cannot be read: deliveries go
    on with the controls it has, one warning says so (again only when a file changes again),
    and a readable file is taken up at the next command."""
    logpath = os.path.join(scratch.fake, "spawn.log")
    vd = os.path.join(scratch.home, "control", "virtualdomains")
    with open(logpath, "wb") as log:
        client = SpawnClient("qmail-lspawn", scratch.env(), stderr=log)
        try:
            messid = queue_message(scratch.home)
            assert client.one(messid, b"a@b", b"joe@localhost") == b"Kdid 0+0+1\n"
            os.unlink(vd)
            os.mkdir(vd)
            assert client.one(messid, b"a@b", b"joe@localhost") == b"Kdid 0+0+1\n"
            assert client.one(messid, b"a@b", b"ann@localhost") == b"Kdid 0+0+1\n"
            os.rmdir(vd)
            scratch.control("virtualdomains", "virt.example:virt.example")
            assert client.one(messid, b"a@b", b"bob@localhost") == b"Kdid 0+0+1\n"
        finally:
            assert client.close() == (0, b"")
    with open(logpath, "rb") as log:
        assert log.read().decode() == ("warning: qmail-lspawn: unable to reread controls: control/virtualdomains: "
                                       "unable to read: Is a directory; keeping the old ones\n")
    assert [rcpt for _, _, rcpt, _ in scratch.local_log()] == [
        "joe@localhost", "joe@localhost", "ann@localhost", "bob@localhost"]


def test_a_reread_that_failed_once_is_made_again_at_the_next_command(scratch):
    """A changed control whose reread failed once (EIO, strace) is read again before the next
    command, silently: the old controls had kept the file's new stamp, so a passing fault
    left qmail-lspawn with the old virtualdomains, usersdb, ... until the next change."""
    import signal
    from test_faults_usersd import attach, need_strace
    need_strace()
    logpath = os.path.join(scratch.fake, "spawn.log")
    vd = os.path.join(scratch.home, "control", "virtualdomains")
    trace = os.path.join(scratch.fake, "trace")
    with open(logpath, "wb") as log:
        client = SpawnClient("qmail-lspawn", scratch.env(), stderr=log)
        try:
            messid = queue_message(scratch.home)
            assert client.one(messid, b"a@b", b"joe@localhost") == b"Kdid 0+0+1\n"
            pid = client.proc.pid
            tracer = attach(pid, [pid], ["-e", "trace=openat", "-P", vd, "-e", "inject=openat:error=EIO:when=1"],
                            trace)
            try:
                scratch.control("virtualdomains", "virt.example:virt.example\nnew.example:new.example")
                assert client.one(messid, b"a@b", b"ann@localhost") == b"Kdid 0+0+1\n"      # the old ones
                assert client.one(messid, b"a@b", b"bob@localhost") == b"Kdid 0+0+1\n"      # read again
                assert client.one(messid, b"a@b", b"cy@localhost") == b"Kdid 0+0+1\n"       # not a third time
            finally:
                tracer.send_signal(signal.SIGTERM)
                tracer.wait(10)
                tracer.stderr.close()
        finally:
            assert client.close() == (0, b"")
    with open("%s.%d" % (trace, pid)) as f:
        opened = [line.rstrip("\n") for line in f if line.startswith("openat(")]
    assert len(opened) == 2 and opened[0].endswith("(INJECTED)") and "= -1" not in opened[1], opened
    with open(logpath, "rb") as log:
        assert log.read().decode() == ("warning: qmail-lspawn: unable to reread controls: control/virtualdomains: "
                                       "unable to read: Input/output error; keeping the old ones\n")


def test_maildirquota_from_the_environment_never_reaches_a_mailbox_without_a_quota(scratch):
    """Only a users-database mailbox has a quota: a $MAILDIRQUOTA qmail-lspawn was started with
    (an admin's shell) is not passed to qmail-local, or every users/cdb mailbox would get it."""
    client = SpawnClient("qmail-lspawn", scratch.env(MAILDIRQUOTA="5000S"))
    try:
        assert client.one(queue_message(scratch.home), b"a@b", b"joe@localhost") == b"Kdid 0+0+1\n"
    finally:
        client.close()
    [line] = open(os.path.join(scratch.fake, "local.log")).read().splitlines()
    assert line.endswith("|./Maildir/|")


def test_signals_that_would_end_it_are_shrugged_off(scratch):
    """Only qmail-send closing fd 0 stops a spawn (no report lost): SIGTERM, SIGINT and SIGALRM
    are caught and ignored, and the deliveries go on."""
    import signal
    import time
    client = SpawnClient("qmail-lspawn", scratch.env())
    try:
        messid = queue_message(scratch.home)
        assert client.one(messid, b"a@b", b"joe@localhost") == b"Kdid 0+0+1\n"
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            client.proc.send_signal(sig)
        time.sleep(0.2)
        assert client.proc.poll() is None
        assert client.one(messid, b"a@b", b"ann@localhost") == b"Kdid 0+0+1\n"
    finally:
        assert client.close() == (0, b"")


@pytest.mark.skipif(**ROOT_ONLY)
@pytest.mark.parametrize("mode", ["exec", "fork"])
def test_a_uid_switch_refused_is_a_deferral_never_a_bounce(scratch, mode):
    """qmail-lspawn.c: prot_gid()/prot_uid() failing is QLX_USAGE, `ZInternal qmail-lspawn bug.`,
    whatever the errno. A qmail-lspawn without CAP_SETUID (a container's policy) gets EPERM for
    every delivery: as a failed exec's `DUnable to run qmail-local.` it bounced all local mail."""
    env = scratch.env()
    if mode == "fork":
        del env["QMAILLOCAL"]
    client = SpawnClient(None, env, argv=["setpriv", "--bounding-set=-setuid", "--inh-caps=-setuid",
                                          str(BIN / "qmail-lspawn")])
    try:
        assert client.one(queue_message(scratch.home), b"a@b", b"joe@localhost") == b"ZInternal qmail-lspawn bug.\n"
    finally:
        assert client.close() == (0, b"")
    assert not os.path.exists(os.path.join(scratch.fake, "local.log"))
