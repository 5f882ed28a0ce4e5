"""qmail-users importvpasswd: the users of vpopmail's default (cdb) backend, kept in one
`vpasswd` file per domain and its domains in users/assign, into the users database, with
nothing lost: the rows exactly as vpasswd has them (old passwords keep working), safe to run
twice, a malformed line importing nothing of its domain. Both backends, the real program."""
import os
import subprocess

import pytest

from conftest import program
from mysql_fixture import backend, mysql_backend  # noqa: F401 (fixtures)
from qmailpy.users import importvpasswd
from qmailpy.users.base import UsersError

# crypt strings made by `openssl passwd` (not by qmailpy), as vpopmail left them in vpasswd
PM_HASH = "$1$pmSalt01$mwJoPsADAhsdXdswjFosK1"                 # postmaster pw
JOE_HASH = "$1$vpopSalt$boOMLNgMT3xx9UUu7atJ7/"                # joe-old-pw
LOCKED_HASH = "$1$lkSalt02$AEf/W8kgma4EQgEhKsWbc."             # locked pw
ANN_HASH = ("$6$Xy7.vpop/salt16$0.8ZqHpcnS1eYxPlSyeHArj9I5emwdSjSSJIu3R8hJmfx06lhII4Up0IgK85uX"
            "ykkFD4kmL5oKemAQOKtgfEK0")                         # ann pw 6
SAM_HASH = ("$6$samsalt.samsalt/$dBE3WbtnIyGnX1dyNT3.FugnFaXClWd1.c8yJFf7Gt9ap9svHkbwxJUsvNsT1k0ZPr"
            "0oYbkd7PeTE5n313JI91")                             # sam:colon

DIR_CONTROL_TAIL = (0, 3, 0, 0, 0, 61, 61, 61, 0, 2, 4, 0, 0, 0, "")   # admin.add_domain's row after cur_users


def vpopmail_tree(home, com_lines=None):
    """A qmail+vpopmail (cdb) host's files: users/assign, two domains' vpasswd (and vpasswd.cdb)
    and their Maildirs, example.net an alias domain of example.org. Returns (vp, org, com)."""
    vp = os.path.join(home.root, "vpopmail")
    org, com = os.path.join(vp, "domains", "example.org"), os.path.join(vp, "domains", "example.com")
    org_lines = [
        "postmaster:%s:1:0:Postmaster:%s/postmaster:NOQUOTA" % (PM_HASH, org),
        "joe:%s:1:0:Joe User:%s/joe:10000000S" % (JOE_HASH, org),
        "locked:%s:1:16:Locked Out:%s/0/locked:5000000S,1000C" % (LOCKED_HASH, org),
        "ann:%s:0:0:Ann Example:%s/ann:NOQUOTA:ann-clear" % (ANN_HASH, org),
    ]
    if com_lines is None:
        com_lines = ["sam:%s:1:0:sam:%s/sam:10485760S:sam:colon" % (SAM_HASH, com)]
    for d, lines in ((org, org_lines), (com, com_lines)):
        os.makedirs(d)
        with open(os.path.join(d, "vpasswd"), "w") as f:
            f.write("".join(line + "\n" for line in lines))
        with open(os.path.join(d, "vpasswd.cdb"), "wb") as f:
            f.write(b"\0" * 2048)
    for box in ("postmaster", "joe", "0/locked", "ann"):
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(org, box, "Maildir", sub))
    with open(os.path.join(org, "joe", "Maildir", "new", "1.2.host"), "w") as f:
        f.write("Subject: kept\n\nold mail\n")
    os.makedirs(os.path.join(home.root, "users"), exist_ok=True)
    with open(os.path.join(home.root, "users", "assign"), "w") as f:
        f.write("=vpopmail:vpopmail:89:89:%s:::\n" % vp
                + "+example.org-:example.org:89:89:%s:-::\n" % org
                + "+example.net-:example.org:89:89:%s:-::\n" % org
                + "+example.com-:example.com:89:89:%s:-::\n" % com
                + ".\n")
    home.control("rcpthosts", "localhost\nexample.org\n")
    home.control("virtualdomains", "example.org:example.org\n")
    return vp, org, com


def tree(path):
    """Every file and directory under path with what would show a change to it."""
    out = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(top, name)
            st = os.lstat(p)
            data = None
            if name in files:
                with open(p, "rb") as f:
                    data = f.read()
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
    return out


def state(backend):  # noqa: F811
    backend.open(create=True).domains()             # the tables, when nothing has made them yet
    return {t: sorted(backend.sql("SELECT * FROM %s" % t))
            for t in ("vpopmail", "dir_control", "aliasdomains")}


def controls(home):
    out = {}
    for name in ("rcpthosts", "virtualdomains"):
        with open(os.path.join(home.root, "control", name)) as f:
            out[name] = f.read()
    return out


def notes(err):
    """stderr without the note that qmail-send (not running here) is to be told."""
    return "".join(line for line in err.splitlines(True)
                   if not line.startswith("note: qmail-send reads control/virtualdomains at start"))


def run(home, *args):
    r = home.run("qmail-users", "importvpasswd", *args)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_import_keeps_every_row_and_password(backend):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    before = tree(vp)
    code, out, err = run(home)
    assert (code, notes(err)) == (0, ""), err
    assert out.splitlines() == [
        "added domain example.com (%s/vpasswd)" % com,
        "added sam@example.com",
        "added domain example.org (%s/vpasswd)" % org,
        "added postmaster@example.org",
        "added joe@example.org",
        "added locked@example.org",
        "added ann@example.org",
        "added alias domain example.net -> example.org",
        "control/rcpthosts: added example.com",
        "control/virtualdomains: added example.com:example.com",
        "control/virtualdomains: added postmaster@example.com:alias (postmaster@example.com gets what "
        "postmaster@ of control/me gets: ~alias/.qmail-postmaster)",
        "control/rcpthosts: added example.net",
        "control/virtualdomains: added example.net:example.net",
    ]
    rows = sorted(backend.sql("SELECT pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                              "pw_shell, pw_clear_passwd FROM vpopmail"))
    assert rows == sorted([
        ("postmaster", "example.org", PM_HASH, 1, 0, "Postmaster", org + "/postmaster", "NOQUOTA", ""),
        ("joe", "example.org", JOE_HASH, 1, 0, "Joe User", org + "/joe", "10000000S", ""),
        ("locked", "example.org", LOCKED_HASH, 1, 16, "Locked Out", org + "/0/locked", "5000000S,1000C", ""),
        ("ann", "example.org", ANN_HASH, 0, 0, "Ann Example", org + "/ann", "NOQUOTA", "ann-clear"),
        ("sam", "example.com", SAM_HASH, 1, 0, "sam", com + "/sam", "10485760S", "sam:colon"),
    ])
    assert sorted(backend.sql("SELECT * FROM dir_control")) == [
        ("example.com", 1) + DIR_CONTROL_TAIL, ("example.org", 4) + DIR_CONTROL_TAIL]
    assert backend.sql("SELECT alias, domain FROM aliasdomains") in ([("example.net", "example.org")],
                                                                     (("example.net", "example.org"),))
    users = backend.open()
    for login, pw in (("postmaster@example.org", "postmaster pw"), ("joe@example.org", "joe-old-pw"),
                      ("joe@example.net", "joe-old-pw"), ("locked@example.org", "locked pw"),
                      ("ann@example.org", "ann pw 6"), ("sam@example.com", "sam:colon")):
        assert users.verify_password(login, pw), login
        assert not users.verify_password(login, pw + "x"), login
    assert users.lookup("locked", "example.org").bounces
    assert not users.lookup("joe", "example.org").bounces
    assert users.lookup("joe", "example.org").maildir == org + "/joe/Maildir"
    assert users.account("ann", "example.org").cram_key == "ann-clear"
    assert tree(vp) == before                     # not one file or directory touched
    assert controls(home) == {
        "rcpthosts": "localhost\nexample.org\nexample.com\nexample.net\n",
        "virtualdomains": "example.org:example.org\nexample.com:example.com\npostmaster@example.com:alias\n"
                          "example.net:example.net\n"}


def test_twice_changes_nothing_and_never_overwrites(backend):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    from qmailpy.users import admin
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "newer password")      # made here since: stays as it is
    joe = backend.sql("SELECT * FROM vpopmail WHERE pw_name = 'joe'")
    code, out, err = run(home, "example.org")
    assert (code, notes(err)) == (0, "")
    assert out.splitlines() == [
        "domain exists: example.org (kept)",
        "added postmaster@example.org",
        "user exists: joe@example.org (kept)",
        "added locked@example.org",
        "added ann@example.org",
        "added alias domain example.net -> example.org",
        "control/rcpthosts: added example.net",
        "control/virtualdomains: added example.net:example.net"]
    assert backend.sql("SELECT * FROM vpopmail WHERE pw_name = 'joe'") == joe
    assert users.verify_password("joe@example.org", "newer password")
    assert sorted(backend.sql("SELECT * FROM dir_control")) == [("example.org", 4) + DIR_CONTROL_TAIL]
    assert backend.sql("SELECT * FROM vpopmail WHERE pw_domain = 'example.com'") in ([], ())

    code, out, err = run(home)
    assert (code, notes(err)) == (0, "")
    first, files, disk = state(backend), controls(home), tree(vp)
    code, out, err = run(home)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "domain exists: example.com (kept)",
        "user exists: sam@example.com (kept)",
        "domain exists: example.org (kept)",
        "user exists: postmaster@example.org (kept)",
        "user exists: joe@example.org (kept)",
        "user exists: locked@example.org (kept)",
        "user exists: ann@example.org (kept)",
        "alias domain exists: example.net (kept)"]
    assert (state(backend), controls(home), tree(vp)) == (first, files, disk)


def test_malformed_line_imports_nothing_of_its_domain(backend):  # noqa: F811
    home = backend.home
    com = os.path.join(home.root, "vpopmail", "domains", "example.com")
    vpopmail_tree(home, ["sam:%s:1:0:sam:%s/sam:NOQUOTA" % (SAM_HASH, com), "bob:%s:1:0:Bob:%s/bob" % (SAM_HASH, com)])
    files = controls(home)
    code, out, err = run(home, "example.com")
    assert code == 1
    assert err == ("qmail-users: %s/vpasswd:2: 6 fields, 7 or 8 needed (pw_name:pw_passwd:pw_uid:pw_gid:"
                   "pw_gecos:pw_dir:pw_shell[:pw_clear_passwd]): nothing of example.com imported\n" % com)
    assert out == ""
    assert state(backend) == {"vpopmail": [], "dir_control": [], "aliasdomains": []}
    assert controls(home) == files
    code, out, err = run(home)                   # the other domains go on; exit 1 still
    assert code == 1 and err.count("nothing of example.com imported") == 1
    assert "added domain example.org" in out and "example.com" not in out
    assert [r[0] for r in sorted(backend.sql("SELECT domain FROM dir_control"))] == ["example.org"]


def test_dry_run_only_says(backend):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    disk, files = tree(vp), controls(home)
    code, out, err = run(home, "--dry-run", "example.org")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "would add domain example.org (%s/vpasswd)" % org,
        "would add postmaster@example.org",
        "would add joe@example.org",
        "would add locked@example.org",
        "would add ann@example.org",
        "would add alias domain example.net -> example.org",
        "would add example.org, example.net to control/rcpthosts and control/virtualdomains where missing"]
    assert state(backend) == {"vpopmail": [], "dir_control": [], "aliasdomains": []}
    assert (tree(vp), controls(home)) == (disk, files)


def test_unknown_domain_refused(backend):  # noqa: F811
    home = backend.home
    vpopmail_tree(home)
    code, out, err = run(home, "nowhere.test", "example.net")
    assert code == 1
    assert err == ("qmail-users: nowhere.test: not a vpopmail domain of users/assign (with a vpasswd file)\n"
                   "qmail-users: example.net: an alias domain of example.org in users/assign: "
                   "import example.org\n")
    assert state(backend) == {"vpopmail": [], "dir_control": [], "aliasdomains": []}


def test_a_domain_qmail_users_cannot_host_is_not_passed_over_in_silence(backend):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    odd = os.path.join(vp, "domains", "odd_name.example")
    os.makedirs(odd)
    with open(os.path.join(odd, "vpasswd"), "w") as f:
        f.write("kim:%s:1:0:kim:%s/kim:NOQUOTA\n" % (JOE_HASH, odd))
    with open(os.path.join(home.root, "users", "assign"), "r+") as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace(".\n", "+odd_name.example-:odd_name.example:89:89:%s:-::\n.\n" % odd))
    code, out, err = run(home)
    assert code == 1
    assert notes(err) == ("qmail-users: users/assign: 'odd_name.example' (%s) is not a domain name qmail-users "
                          "can host: its users are not imported\n" % odd)
    assert "added sam@example.com" in out and "added joe@example.org" in out


def test_a_row_the_database_cannot_keep_whole_imports_nothing(mysql_backend):  # noqa: F811
    """vpopmail 5.4's pw_passwd char(40): a $6$ hash does not fit (strict MySQL refuses it)."""
    home = mysql_backend.home
    vp, org, com = vpopmail_tree(home)
    mysql_backend.open(create=True).domains()
    mysql_backend.sql("ALTER TABLE vpopmail MODIFY pw_passwd char(40)")
    code, out, err = run(home, "example.org", "example.com")
    assert (code, out) == (1, "")
    assert err == ("qmail-users: %s/vpasswd:4: Data too long for column 'pw_passwd' at row 1: nothing of "
                   "example.org imported\n"
                   "qmail-users: %s/vpasswd:1: Data too long for column 'pw_passwd' at row 1: nothing of "
                   "example.com imported\n" % (org, com))
    assert state(mysql_backend) == {"vpopmail": [], "dir_control": [], "aliasdomains": []}


def test_a_row_the_database_changes_imports_nothing(home):
    """A database that cuts a value short instead of refusing it (MySQL without a strict
    sql_mode, here a SQLite trigger doing the same): the row is read back and compared."""
    import sqlite3
    vp, org, com = vpopmail_tree(home)
    os.makedirs(os.path.join(home.root, "users"), exist_ok=True)
    from qmailpy.ctl.reader import Controls
    from qmailpy.users.base import open_users
    open_users(home.root, Controls(home.root, {}), create=True).domains()
    conn = sqlite3.connect(os.path.join(home.root, "users", "vpopmail.sqlite"))
    conn.execute("CREATE TRIGGER cut AFTER INSERT ON vpopmail BEGIN UPDATE vpopmail SET pw_passwd = "
                 "substr(pw_passwd, 1, 40) WHERE pw_name = NEW.pw_name AND pw_domain = NEW.pw_domain; END")
    conn.commit()
    code, out, err = run(home, "example.org")
    assert code == 1
    assert notes(err) == ("qmail-users: %s/vpasswd:4: the database did not keep the row of ann@example.org as "
                          "vpasswd has it (a column narrower than vpopmail 5.6's?): nothing of example.org "
                          "imported\n" % org)
    assert conn.execute("SELECT count(*) FROM vpopmail").fetchall() == [(0,)]
    assert conn.execute("SELECT count(*) FROM dir_control").fetchall() == [(0,)]
    conn.close()


def test_chkuser_may_look_into_the_imported_domains_as_root(home, monkeypatch):
    """Root in production (not single-user): as adddomain, chkuser's reader (qmailu, or qmaild)
    gets search on each imported domain directory and read on its .qmail-default (an ACL
    entry); without it chkuser answered 451 for every address of the imported domains."""
    from click.testing import CliRunner

    from qmailpy.cli.users import cli
    from qmailpy.users import access
    vp, org, com = vpopmail_tree(home)
    with open(os.path.join(org, ".qmail-default"), "w") as f:
        f.write("| vdelivermail '' bounce-no-mailbox\n")
    monkeypatch.setattr(access, "chkuser_uid", lambda home: 40093)
    env = {"QMAILHOME": home.root, "QMAILPY_SINGLEUSER": "0"}
    got = CliRunner().invoke(cli, ["importvpasswd", "--dry-run"], env=env)
    assert got.exit_code == 0 and (access.USER, 40093) not in access._entries(org)
    got = CliRunner().invoke(cli, ["importvpasswd"], env=env)
    assert got.exit_code == 0, got.output
    for path, perm in ((vp, 1), (os.path.join(vp, "domains"), 1), (org, 1), (com, 1),
                       (os.path.join(org, ".qmail-default"), 4)):
        assert access._entries(path)[(access.USER, 40093)] == perm, path


def test_another_vpopmaildir_is_noted(backend, tmp_path):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    home.control("vpopmaildir", "%s\n" % (tmp_path / "elsewhere"))
    code, out, err = run(home, "example.com")
    assert (code, notes(err)) == (0, "note: example.com: its mailboxes stay under %s; those qmail-users adds go "
                                     "under %s/domains/example.com (control vpopmaildir)\n"
                                     % (com, tmp_path / "elsewhere"))
    assert backend.open().lookup("sam", "example.com").dir == com + "/sam"
    assert not (tmp_path / "elsewhere").exists()


COM = "/vp/domains/example.com"


@pytest.mark.parametrize("line, why", [
    ("sam:x:1:0:sam:%s/sam:NOQUOTA" % COM, None),
    ("sam:x:1:0:sam:%s/sam:NOQUOTA:c:w:colons" % COM, None),
    ("sam:x:1:0:sam:%s/sam" % COM, "6 fields, 7 or 8 needed"),
    ("Sam:x:1:0:sam:%s/sam:NOQUOTA" % COM, "user name 'Sam' is not one qmail-users can look up"),
    ("sam:x:one:0:sam:%s/sam:NOQUOTA" % COM, "pw_uid is not a number: 'one'"),
    ("sam:x:1:0x10:sam:%s/sam:NOQUOTA" % COM, "pw_gid is not a number: '0x10'"),
    ("sam:x:1:0:sam:sam:NOQUOTA", "pw_dir is not an absolute path: 'sam'"),
    ("sam:x:1:0:sam:%s/sam:lots" % COM, "pw_shell is not a quota (NOQUOTA or Maildir++): 'lots'"),
    ("sam:x:1:0:sam:%s/sam:NOQUOTA:%s" % (COM, "c" * 17), "pw_clear_passwd longer than 16 characters"),
    ("sam:%s:1:0:sam:%s/sam:NOQUOTA" % ("x" * 129, COM), "pw_passwd longer than 128 characters"),
    ("sam:x:1:0:%s:%s/sam:NOQUOTA" % ("g" * 49, COM), "pw_gecos longer than 48 characters"),
])
def test_vpasswd_lines(line, why):
    data = ("joe:x:1:0:joe:%s/joe:NOQUOTA\n%s\n" % (COM, line)).encode()
    if why is None:
        rows = importvpasswd.parse_vpasswd(data, "vpasswd")
        assert [r.name for r in rows] == ["joe", "sam"]
        return
    with pytest.raises(UsersError) as e:
        importvpasswd.parse_vpasswd(data, "vpasswd")
    assert str(e.value).startswith("vpasswd:2: " + why), str(e.value)


def test_vpasswd_twice_the_same_name_and_bad_bytes():
    line = "joe:x:1:0:joe:%s/joe:NOQUOTA\n" % COM
    with pytest.raises(UsersError, match=r"^vpasswd:2: joe is on line 1 already$"):
        importvpasswd.parse_vpasswd((line + line).encode(), "vpasswd")
    with pytest.raises(UsersError, match=r"^vpasswd:1: not UTF-8"):
        importvpasswd.parse_vpasswd(b"joe:x:1:0:J\xf6e:/vp/joe:NOQUOTA\n", "vpasswd")


def test_no_users_assign(home):
    code, out, err = run(home)
    assert (code, out, err) == (1, "", "qmail-users: unable to read users/assign: file does not exist\n")


def test_a_domain_that_is_an_alias_here_is_refused(backend):  # noqa: F811
    home = backend.home
    vp, org, com = vpopmail_tree(home)
    from qmailpy.users import admin
    users = backend.open(create=True)
    admin.add_domain(users, "example.net")
    admin.add_alias_domain(users, "example.net", "example.com")
    before = state(backend)
    code, out, err = run(home, "example.com")
    assert (code, out) == (1, "")
    assert err == ("qmail-users: example.com is an alias domain of example.net in the users database: "
                   "nothing of example.com imported\n")
    assert state(backend) == before


def test_vpasswd_is_read_as_the_owner_of_its_directory(home, tmp_path):
    """Root reads vpasswd as the owner of the domain directory (vpopmail, whom every mailbox's
    |program runs as): a link that owner put there to a file only root may read imports nothing."""
    vp, org, com = vpopmail_tree(home)
    secret = tmp_path / "root-only"
    secret.write_text("sam:%s:1:0:sam:%s/sam:NOQUOTA\n" % (SAM_HASH, com))
    os.chmod(secret, 0o600)
    os.remove(os.path.join(com, "vpasswd"))
    os.symlink(str(secret), os.path.join(com, "vpasswd"))
    for top, dirs, files in os.walk(vp):
        for name in [top] + [os.path.join(top, n) for n in files]:
            os.lchown(name, 40094, 40094)
    code, out, err = run(home, "example.com")
    assert (code, out) == (1, "")
    assert err == ("qmail-users: cannot read %s/vpasswd: Permission denied: nothing of example.com imported\n"
                   % com)
    code, out, err = run(home, "example.org")           # the owner's own file: read
    assert code == 0 and "added joe@example.org" in out


def test_a_vpasswd_that_is_no_file_is_never_read(home):
    """A FIFO (or a device) in vpasswd's place is not opened for reading (no writer let go, no
    device woken): that domain imports nothing, the others go on."""
    vp, org, com = vpopmail_tree(home)
    os.remove(os.path.join(com, "vpasswd"))
    os.mkfifo(os.path.join(com, "vpasswd"))
    code, out, err = run(home)
    assert code == 1
    assert err.splitlines()[0] == "qmail-users: %s/vpasswd: not a file: nothing of example.com imported" % com
    assert "added domain example.org" in out and "example.com" not in out


def test_an_output_that_cannot_be_written_stops_nothing_of_the_import(home):
    """stdout on a full disk: exit 111 with qmail's fatal line, but only after every domain is
    imported and the control files follow (printing as it went ended it after the first domain,
    its rcpthosts line never written)."""
    vp, org, com = vpopmail_tree(home)
    with open("/dev/full", "wb") as out:
        r = subprocess.run([program("qmail-users"), "importvpasswd"], stdout=out, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=home.env(), timeout=60)
    assert r.returncode == 111, r.stderr
    assert notes(r.stderr.decode()) == "qmail-users: fatal: unable to write output: out of disk space\n"
    assert controls(home)["rcpthosts"] == "localhost\nexample.org\nexample.com\nexample.net\n"
    assert home.run("qmail-users", "list").stdout.decode() == "example.com\nexample.org\nexample.net -> example.org\n"
