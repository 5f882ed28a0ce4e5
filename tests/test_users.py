"""The users database against SQLite and MySQL: vpopmail's schema, domains, mailboxes,
passwords, CRAM-MD5, the POP-before-SMTP relay table, and SMTP AUTH."""
import os

import pytest

from mysql_fixture import backend  # noqa: F401 (fixture)
from qmailpy.users import admin, schema
from qmailpy.users.auth import authenticate
from qmailpy.users.base import Mailbox, UsersError
from qmailpy.users.passwords import hash_password
from qmailpy.users.schema import NO_RELAY, NO_SMTP

# vpopmail's tables, column by column, as vmysql.h defines them (MANY_DOMAINS +
# CLEAR_PASS layout; sagredo-dev/vpopmail vmysql.h; brunonymous/vpopmail for 5.4).
VPOPMAIL_COLUMNS = {
    "vpopmail": ["pw_name", "pw_domain", "pw_passwd", "pw_uid", "pw_gid", "pw_gecos", "pw_dir",
                 "pw_shell", "pw_clear_passwd"],
    "relay": ["ip_addr", "timestamp"],
    "lastauth": ["user", "domain", "remote_ip", "timestamp"],
    "dir_control": ["domain", "cur_users", "level_cur", "level_max", "level_start0", "level_start1",
                    "level_start2", "level_end0", "level_end1", "level_end2", "level_mod0", "level_mod1",
                    "level_mod2", "level_index0", "level_index1", "level_index2", "the_dir"],
    "aliasdomains": ["alias", "domain"],
}


@pytest.fixture
def users(backend):  # noqa: F811
    u = backend.open(create=True)
    admin.add_domain(u, "example.org")
    return u


def test_schema_columns_are_vpopmails(backend):  # noqa: F811
    backend.open(create=True).domains()
    assert sorted(schema.TABLES) == sorted(VPOPMAIL_COLUMNS)
    for table, columns in VPOPMAIL_COLUMNS.items():
        assert schema.column_names(schema.TABLES[table]) == columns, table
        assert backend.columns(table) == columns, table


def test_domains_and_aliases(users):
    assert users.has_domain("example.org") and users.has_domain("EXAMPLE.ORG.")
    assert users.domain_of("example.org") == "example.org"
    assert not users.has_domain("example.net") and users.domain_of("example.net") is None
    assert os.path.isdir(users.domain_dir("example.org"))
    with pytest.raises(UsersError):
        admin.add_domain(users, "example.org")
    with pytest.raises(UsersError):
        admin.add_domain(users, "bad_domain!")
    assert admin.add_alias_domain(users, "example.net", "example.org") == ("example.net", "example.org")
    assert users.domain_of("example.net") == "example.org"
    assert users.domains() == (["example.org"], {"example.net": "example.org"})
    admin.add_user(users, "joe@example.org", "pw")
    assert users.lookup("joe", "example.net").domain == "example.org"
    assert admin.del_domain(users, "example.net") == "alias"
    assert not users.has_domain("example.net") and users.has_domain("example.org")
    assert admin.del_domain(users, "example.org") == "domain"
    assert not users.has_domain("example.org") and users.lookup("joe", "example.org") is None
    assert not os.path.exists(users.domain_dir("example.org"))
    with pytest.raises(UsersError):
        admin.del_domain(users, "example.org")


def test_add_user_makes_maildir(users):
    box = admin.add_user(users, "Joe@Example.org", "secret", gecos="Joe User")
    assert isinstance(box, Mailbox)
    assert (box.name, box.domain, box.quota, box.gecos, box.flags) == ("joe", "example.org", None, "Joe User", 0)
    assert box.dir == os.path.join(users.vpopmaildir, "domains", "example.org", "joe")
    assert os.path.isabs(box.dir) and box.maildir == os.path.join(box.dir, "Maildir")
    for sub in ("cur", "new", "tmp"):
        assert os.path.isdir(os.path.join(box.maildir, sub))
    assert not os.path.exists(os.path.join(box.maildir, "maildirsize"))
    assert (box.uid, box.gid) == (os.stat(box.dir).st_uid, os.stat(box.dir).st_gid)
    assert users.lookup("JOE", "example.org").dir == box.dir
    assert users.lookup("nobody", "example.org") is None
    assert users.lookup("joe", "example.net") is None
    with pytest.raises(UsersError):
        admin.add_user(users, "joe@example.org", "again")
    with pytest.raises(UsersError):
        admin.add_user(users, "ann@example.net", "pw")      # no such domain
    with pytest.raises(UsersError):
        admin.add_user(users, "a/b@example.org", "pw")      # not a vpopmail user name
    admin.del_user(users, "joe@example.org")
    assert users.lookup("joe", "example.org") is None and not os.path.exists(box.dir)


def test_row_is_stored_as_vpopmail_stores_it(users, backend):  # noqa: F811
    admin.add_user(users, "joe@example.org", "secret", quota="10M")
    row = backend.sql("SELECT pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_dir, pw_shell, pw_clear_passwd "
                      "FROM vpopmail")
    assert len(row) == 1
    name, domain, crypted, uid, gid, pw_dir, shell, clear = row[0]
    assert (name, domain, uid, gid, shell, clear) == ("joe", "example.org", 0, 0, "10485760S", "")
    assert crypted.startswith("$1$") and pw_dir == users.lookup("joe", "example.org").dir
    cur = backend.sql("SELECT cur_users FROM dir_control WHERE domain = ?", ("example.org",))
    assert cur[0][0] == 1


def test_quota_and_maildirsize(users):
    box = admin.add_user(users, "joe@example.org", "pw", quota="10000000S")
    assert box.quota == "10000000S"
    with open(os.path.join(box.maildir, "maildirsize")) as f:
        assert f.read().splitlines() == ["10000000S", "0 0"]
    with open(os.path.join(box.maildir, "new", "1.2.host,S=1234"), "w") as f:
        f.write("x")
    box = admin.set_quota(users, "joe@example.org", "512k")
    assert box.quota == "524288S"
    with open(os.path.join(box.maildir, "maildirsize")) as f:
        assert f.read().splitlines() == ["524288S", "1234 1"]
    assert admin.set_quota(users, "joe@example.org", "NOQUOTA").quota is None
    assert not os.path.exists(os.path.join(box.maildir, "maildirsize"))
    assert admin.set_quota(users, "joe@example.org", "5000000S,100C").quota == "5000000S,100C"
    with pytest.raises(UsersError):
        admin.set_quota(users, "joe@example.org", "lots")


@pytest.mark.parametrize("scheme,prefix", [("md5", "$1$"), ("sha256", "$5$"), ("sha512", "$6$")])
def test_password_schemes(users, scheme, prefix):
    admin.add_user(users, "joe@example.org", "s3cret pass", scheme=scheme)
    assert users.account("joe", "example.org").passwd.startswith(prefix)
    assert users.verify_password("joe@example.org", "s3cret pass")
    assert users.verify_password("JOE%example.org", "s3cret pass")          # vpopmail's user%domain
    assert not users.verify_password("joe@example.org", "s3cret pas")
    assert not users.verify_password("joe@example.org", "")
    assert not users.verify_password("ann@example.org", "s3cret pass")
    assert not users.verify_password("joe", "s3cret pass")
    admin.set_password(users, "joe@example.org", "new one", scheme="sha512")
    assert users.verify_password("joe@example.org", "new one")
    assert not users.verify_password("joe@example.org", "s3cret pass")


def test_hashes_written_by_others_verify(users, backend):  # noqa: F811
    """Rows vpopmail (or anything using crypt(3)) wrote: $1$, $6$ and traditional DES."""
    for name, crypted in [("md5", "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"),
                          ("sha", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OT"
                                  "LiBFdcbYEdFCoEOfaS35inz1"),
                          ("des", "saHW9GdxihkGQ")]:
        backend.sql("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                    "pw_shell) VALUES (?, 'example.org', ?, 0, 0, '', '', 'NOQUOTA')", (name, crypted))
    assert users.verify_password("md5@example.org", "Hello world!")
    assert users.verify_password("sha@example.org", "Hello world!")
    # vpopmail 5.6's vauth_crypt() drops a Dovecot-style scheme prefix ("remove {XXX-CRYPT}")
    for name, crypted in [("pmd5", "{MD5-CRYPT}$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"),
                          ("psha", "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnI"
                                   "FNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")]:
        backend.sql("INSERT INTO vpopmail (pw_name, pw_domain, pw_passwd, pw_uid, pw_gid, pw_gecos, pw_dir, "
                    "pw_shell) VALUES (?, 'example.org', ?, 0, 0, '', '', 'NOQUOTA')", (name, crypted))
        assert users.verify_password(name + "@example.org", "Hello world!"), crypted
        assert not users.verify_password(name + "@example.org", "Hello world?"), crypted
        assert authenticate(users, "PLAIN", name + "@example.org", "Hello world!", None) is True
    from qmailpy.users.passwords import _system_crypt
    if _system_crypt(b"x", b"ab") is not None:
        assert users.verify_password("des@example.org", "secret")
        assert not users.verify_password("des@example.org", "secreT")


def test_cram_md5(users):
    challenge = "<1896.697170952@postoffice.reston.mci.net>"          # RFC 2195's example
    admin.add_user(users, "tim@example.org", "tanstaaftanstaaf", clear=True)
    assert users.verify_cram_md5("tim@example.org", challenge, "b913a602c7eda7a495b4e6e7334d3890")
    assert users.verify_cram_md5("tim@example.org", challenge, "B913A602C7EDA7A495B4E6E7334D3890")
    assert not users.verify_cram_md5("tim@example.org", challenge, "b913a602c7eda7a495b4e6e7334d3891")
    assert not users.verify_cram_md5("tim@example.org", "<other@challenge>", "b913a602c7eda7a495b4e6e7334d3890")
    admin.add_user(users, "ann@example.org", "tanstaaftanstaaf")            # no pw_clear_passwd
    assert not users.verify_cram_md5("ann@example.org", challenge, "b913a602c7eda7a495b4e6e7334d3890")
    with pytest.raises(UsersError):
        admin.add_user(users, "long@example.org", "x" * 17, clear=True)  # pw_clear_passwd is 16 wide
    admin.set_password(users, "tim@example.org", "tanstaaftanstaaf")        # without --clear: emptied
    assert not users.verify_cram_md5("tim@example.org", challenge, "b913a602c7eda7a495b4e6e7334d3890")


def test_authenticate(users, backend):  # noqa: F811
    admin.add_user(users, "joe@example.org", "pw", clear=True)
    assert authenticate(users, "LOGIN", "joe@example.org", "pw", None) is True
    assert authenticate(users, "PLAIN", "joe@example.org", "pw", None) is True
    assert authenticate(users, "PLAIN", "joe@example.org", "wrong", None) is False
    assert authenticate(users, "LOGIN", "nobody@example.org", "pw", None) is False
    assert authenticate(users, "LOGIN", "joe@elsewhere.test", "pw", None) is False
    import hmac
    challenge = "<123.456@mx.example.org>"
    digest = hmac.new(b"pw", challenge.encode(), "md5").hexdigest()
    assert authenticate(users, "CRAM-MD5", "joe@example.org", digest, challenge) is True
    assert authenticate(users, "CRAM-MD5", "joe@example.org", "0" * 32, challenge) is False
    assert authenticate(users, "DIGEST-MD5", "joe@example.org", "pw", None) is False
    # an account without pw_passwd has no login (vchkpw: "user has no password"), CRAM-MD5 neither
    backend.sql("UPDATE vpopmail SET pw_passwd = '' WHERE pw_name = 'joe'")
    assert authenticate(users, "CRAM-MD5", "joe@example.org", digest, challenge) is False
    assert authenticate(users, "PLAIN", "joe@example.org", "pw", None) is False
    assert not users.verify_cram_md5("joe@example.org", challenge, digest)
    backend.sql("UPDATE vpopmail SET pw_passwd = ? WHERE pw_name = 'joe'", (hash_password("pw"),))
    assert authenticate(users, "CRAM-MD5", "joe@example.org", digest, challenge) is True
    backend.sql("UPDATE vpopmail SET pw_gid = ? WHERE pw_name = 'joe'", (NO_SMTP,))
    assert authenticate(users, "LOGIN", "joe@example.org", "pw", None) is False
    assert authenticate(users, "CRAM-MD5", "joe@example.org", digest, challenge) is False


def test_relay_window(users):
    t = 1_700_000_000
    assert not users.relay_allowed("192.0.2.1", t, 1800)
    users.record_relay("192.0.2.1", t)
    assert users.relay_allowed("192.0.2.1", t, 1800)
    assert users.relay_allowed("192.0.2.1", t + 1799, 1800)
    assert not users.relay_allowed("192.0.2.1", t + 1800, 1800)
    assert not users.relay_allowed("192.0.2.2", t, 1800)
    assert not users.relay_allowed("192.0.2.1", t, 0)
    users.record_relay("::ffff:192.0.2.1", t + 1000)                      # a later login moves it on
    assert users.relay_allowed("192.0.2.1", t + 2500, 1800)
    users.record_relay("2001:db8::25", t)
    assert users.relays() == [("192.0.2.1", t + 1000), ("2001:db8::25", t)]
    assert users.purge_relay(t) == 1                                       # vpopmail: timestamp <= cut
    assert users.relays() == [("192.0.2.1", t + 1000)]


def test_relay_row_with_junk_in_its_time_opens_nothing(users, backend):  # noqa: F811
    """vpopmail 5.4's relay.timestamp is char(12): a row whose time is no number (hand-made,
    another tool's) lets that IP relay never, and a text spelling of an address that is no IP
    is matched only as written."""
    if backend.kind == "mysql":
        backend.sql("ALTER TABLE relay MODIFY timestamp CHAR(12)")
    backend.sql("INSERT INTO relay (ip_addr, timestamp) VALUES ('192.0.2.9', 'soon')")
    assert not users.relay_allowed("192.0.2.9", 1_700_000_000, 1800)
    users.record_relay(" 2001:db8:: x ", 1_700_000_000)
    assert users.relay_allowed("2001:db8:: x", 1_700_000_001, 1800)
    assert not users.relay_allowed("2001:db8::", 1_700_000_001, 1800)


def test_relay_ipv6_spellings_are_one_address(users):
    """Dovecot's $IP is inet_ntop's spelling; ucspi-tcp6's tcpserver puts ip6_fmt's in
    TCPREMOTEIP (a lone zero group compressed to '::'; older ones no '::' at all)."""
    t = 1_700_000_000
    users.record_relay("2001:db8:0:1:1:1:1:1", t)                         # Dovecot (inet_ntop)
    for spelling in ("2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1", "2001:DB8:0:1:1:1:1:1",
                     "2001:0db8:0000:0001:0001:0001:0001:0001"):
        assert users.relay_allowed(spelling, t + 1, 1800), spelling
    users.record_relay("2001:DB8:0:0:0:0:0:25", t + 5)                    # another spelling, same row
    assert users.relay_allowed("2001:db8::25", t + 6, 1800)
    assert not users.relay_allowed("2001:db8::26", t + 6, 1800)
    users.record_relay("::FFFF:192.0.2.1", t)
    assert users.relay_allowed("192.0.2.1", t, 1800)
    assert users.relays() == [("192.0.2.1", t), ("2001:db8:0:1:1:1:1:1", t), ("2001:db8::25", t + 5)]
    assert users.purge_relay(t + 5) == 3


def test_relay_table_made_on_demand(backend):  # noqa: F811
    """A vpopmail database without a relay table: no relaying, and the first login creates it."""
    users = backend.open(create=True)
    users.domains()
    backend.sql("DROP TABLE relay")
    assert not users.relay_allowed("192.0.2.1", 100, 1800)
    users.record_relay("192.0.2.1", 100)
    assert users.relay_allowed("192.0.2.1", 100, 1800)


def test_record_login_fills_lastauth(users, backend):  # noqa: F811
    admin.add_user(users, "joe@example.org", "pw")
    users.record_login("joe@example.org", "192.0.2.9", 1234)
    rows = backend.sql("SELECT user, domain, remote_ip, timestamp FROM lastauth")
    assert [tuple(r) for r in rows] == [("joe", "example.org", "192.0.2.9", 1234)]


def test_pop_login_opens_the_relay_unless_no_relay(users, backend):  # noqa: F811
    """vchkpw after a POP3 login: lastauth always, the relay row only without NO_RELAY (0x20)."""
    admin.add_user(users, "joe@example.org", "pw")
    admin.add_user(users, "ann@example.org", "pw")
    admin.add_alias_domain(users, "example.net", "example.org")
    backend.sql("UPDATE vpopmail SET pw_gid = ? WHERE pw_name = 'ann'", (NO_RELAY | NO_SMTP,))
    assert users.record_pop_login("joe@example.org", "192.0.2.1", 100) is True
    assert users.record_pop_login("ANN@example.org", "192.0.2.2", 101) is False
    assert users.record_pop_login("ann@example.net", "::ffff:192.0.2.3", 102) is False
    assert users.relays() == [("192.0.2.1", 100)]
    assert not users.relay_allowed("192.0.2.2", 101, 1800)
    rows = backend.sql("SELECT user, domain, remote_ip, timestamp FROM lastauth ORDER BY timestamp")
    assert [tuple(r) for r in rows] == [("joe", "example.org", "192.0.2.1", 100),
                                        ("ann", "example.org", "192.0.2.3", 102)]


def test_database_written_by_vpopmail(backend):  # noqa: F811
    """A domain vpopmail made: users rows only (no dir_control row), legacy quota text."""
    users = backend.open(create=True)
    users.domains()
    crypted = hash_password("pw")
    backend.sql("INSERT INTO vpopmail VALUES ('postmaster', 'legacy.test', ?, 0, 0, 'Postmaster', "
                "'/home/vpopmail/domains/legacy.test/postmaster', '10M', 'pw')", (crypted,))
    reader = backend.open()
    assert reader.has_domain("legacy.test")
    box = reader.lookup("postmaster", "legacy.test")
    assert box.dir == "/home/vpopmail/domains/legacy.test/postmaster" and box.quota == "10485760S"
    assert reader.verify_password("postmaster@legacy.test", "pw")
    assert reader.domains() == (["legacy.test"], {})


def test_missing_sqlite_file_is_an_empty_database(home):
    from qmailpy.ctl.reader import Controls
    from qmailpy.users.base import open_users
    users = open_users(home.root, Controls(home.root, {}))
    assert not users.has_domain("example.org")
    assert users.lookup("joe", "example.org") is None
    assert not users.verify_password("joe@example.org", "pw")
    assert not os.path.exists(os.path.join(home.root, "users"))


def test_vpopmaildir_control(backend, tmp_path):  # noqa: F811
    backend.home.control("vpopmaildir", str(tmp_path / "vpop") + "\n")
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    box = admin.add_user(users, "joe@example.org", "pw")
    assert box.dir == str(tmp_path / "vpop" / "domains" / "example.org" / "joe")
    assert os.path.isdir(os.path.join(box.dir, "Maildir", "new"))



# -- exact names (issue 22): look-alikes of a mailbox are nobody, on every backend and table

LOOKALIKES = ["jóe", "joé", "joe ", " joe", "joe\\ ", "joe\\", "jo\u0301e", "\u212aate", "j\u00f6e", "joe\t", "joe\0"]


def _lookalikes_are_nobody(users):
    admin.add_user(users, "joe@example.org", "pw", clear=True)
    admin.add_user(users, "kate@example.org", "pw")
    for name in LOOKALIKES:
        for domain in ("example.org", "EXAMPLE.org", "example.org "):
            assert users.lookup(name, domain) is None, (name, domain)
        login = name + "@example.org"
        assert not users.verify_password(login, "pw"), name
        assert authenticate(users, "PLAIN", login, "pw", None) is False, name
    assert users.lookup("joe", "exámple.org") is None and users.domain_of("exámple.org") is None
    assert users.lookup("joe", "example.org ") is None
    # A-Z fold to a-z (vpopmail lower-cases names, qmail domains): JOE is joe, for everything
    assert users.lookup("JOE", "Example.ORG").address == "joe@example.org"
    assert authenticate(users, "LOGIN", "JOE@EXAMPLE.ORG", "pw", None) is True
    assert users.find_address(b"JoE", b"example.org") == b"joe@example.org"
    assert users.find_address("jóe".encode(), b"example.org") is None


def test_lookalike_names_are_nobody(users):
    _lookalikes_are_nobody(users)


def test_lookalikes_on_tables_with_the_servers_collation(backend):  # noqa: F811
    """Tables made by vpopmail (or anyone) without a collation: MariaDB's utf8mb4_general_ci, where
    'jóe', 'joe ' and 'JOE' equal 'joe'. Lookups still match the exact name."""
    if backend.kind == "mysql":
        for stmt in schema.create_statements():          # vpopmail's DDL, the server's defaults
            backend.sql(stmt)
        [(collation,)] = backend.sql(
            "SELECT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND table_name = 'vpopmail' AND column_name = 'pw_name'")
        assert collation != "utf8mb4_bin"                 # the test is about folding tables
        assert backend.sql("SELECT pw_name FROM vpopmail WHERE pw_name = 'x'") == ()
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    if backend.kind == "mysql":                           # the server would fold them...
        admin.add_user(users, "joe@example.org", "pw", clear=True)
        got = backend.sql("SELECT pw_name FROM vpopmail WHERE pw_name = 'jóe' AND pw_name = 'joe ' "
                          "AND pw_name = 'JOE'")
        assert [r[0] for r in got] == ["joe"]
        admin.del_user(users, "joe@example.org")
    _lookalikes_are_nobody(users)                         # ...qmailpy does not


def test_tables_compare_bytes(backend):  # noqa: F811
    """The tables qmailpy makes compare bytes (MySQL: utf8mb4_bin; SQLite: its BINARY default), so the
    database itself, asked without BINARY, does not fold a look-alike into joe either."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "pw")
    if backend.kind == "mysql":
        rows = backend.sql("SELECT table_name, table_collation FROM information_schema.tables "
                           "WHERE table_schema = DATABASE() ORDER BY table_name")
        assert [tuple(r) for r in rows] == [(t, "utf8mb4_bin") for t in sorted(schema.TABLES)]
    for name in ("JOE", "jóe"):
        assert list(backend.sql("SELECT pw_name FROM vpopmail WHERE pw_name = ?", (name,))) == []


def test_a_new_mailbox_directory_swapped_for_a_symlink_does_not_lend_its_owner_to_the_target(tmp_path, monkeypatch):
    """Run as root, qmail-users makes a mailbox's directories in vpopmail's domain directory
    and chowns them to vpopmail. The domain directory is vpopmail's: between the mkdir and the
    chown it can put a symlink where the new directory was, and a chown that follows it hands
    the target (/etc/shadow) to vpopmail. The chown is of the name itself, never a link's
    target."""
    from qmailpy.users import maildir
    target = tmp_path / "shadow"
    target.write_text("root's\n")
    box = tmp_path / "domains" / "example.org" / "u"
    real_mkdir, reached = os.mkdir, []

    def racing_mkdir(path, mode=0o777):
        real_mkdir(path, mode)
        if path == str(box):        # vpopmail swaps the new directory for a symlink
            os.rmdir(path)
            os.symlink(target, path)

    def chown(path, uid, gid, follow_symlinks=True):
        reached.append(os.path.realpath(path) if follow_symlinks else path)

    monkeypatch.setattr(maildir.os, "mkdir", racing_mkdir)
    monkeypatch.setattr(maildir.os, "chown", chown)
    maildir.make_dir(str(box), maildir.DIR_MODE, (os.getuid(), os.getgid()))
    assert str(box) in reached and str(target) not in reached


def test_a_relay_row_dated_ahead_opens_no_relay(users):
    """A row written while the clock ran ahead (or by hand) is not a recent login: vpopmail's
    clearopensmtp never purges it (timestamp <= now - window), so it would let the IP relay for
    as long as the clock is behind it. A login up to one window after the connection began (POP
    while the SMTP session is open) still counts."""
    t = 1_700_000_000
    users.record_relay("192.0.2.1", t + 1799)
    assert users.relay_allowed("192.0.2.1", t, 1800)
    users.record_relay("192.0.2.1", t + 1800)
    assert not users.relay_allowed("192.0.2.1", t, 1800)
    users.record_relay("192.0.2.1", t + 10 * 365 * 86400)
    assert not users.relay_allowed("192.0.2.1", t, 1800)
    assert users.purge_relay(t - 1800) == 0                    # vpopmail's cut leaves it in place


def test_clearopensmtp_purges_a_relay_row_dated_a_window_ahead(users):
    """The row dated ahead opens nothing now, but once the clock catches up with it (days
    after a step back) it would open the relay for that IP, which may be someone else's by
    then. clearopensmtp's purge also takes rows dated one window or more ahead."""
    t = 1_700_000_000
    users.record_relay("192.0.2.1", t + 2 * 86400)
    users.record_relay("192.0.2.2", t + 1799)
    users.record_relay("192.0.2.3", t - 1800)
    assert users.purge_relay(t - 1800, t + 1800) == 2
    assert users.relays() == [("192.0.2.2", t + 1799)]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (chown)")
@pytest.mark.parametrize("what", ["user", "domain"])
def test_removing_a_mailbox_or_domain_never_follows_the_owners_links_as_root(users, tmp_path, what):
    """qmail-users runs as root, but the vpopmail directory and everything below it belong to the
    mailbox owner (vpopmail), whom any mailbox's |program runs as. Such a program can put a link
    where domains/ or a domain directory was; deluser and deldomain then removed, as root, the
    tree the link points into (here outside/joe, root's: /home/joe, say). The tree is removed as
    the owner of the vpopmail directory: what it could not remove itself stays."""
    import shutil
    nobody = 65534
    box = admin.add_user(users, "joe@example.org", "pw")
    for root, dirs, files in os.walk(users.vpopmaildir):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            os.chown(name, nobody, nobody)
    outside = tmp_path / "outside"
    (outside / "example.org" / "joe").mkdir(parents=True)
    (outside / "example.org" / "joe" / "keep").write_text("root's\n")
    domains = os.path.join(users.vpopmaildir, "domains")
    shutil.move(domains, domains + ".moved")       # what the owner may do in its own directory
    os.symlink(str(outside), domains)
    if what == "user":
        admin.del_user(users, "joe@example.org")
    else:
        admin.del_domain(users, "example.org")
    assert (outside / "example.org" / "joe" / "keep").read_text() == "root's\n"
    os.unlink(domains)
    shutil.move(domains + ".moved", domains)
    assert os.path.isdir(box.maildir)               # not removed either: it was not where the row said
    if what == "user":                              # the owner's own tree is removed as before
        ann = admin.add_user(users, "ann@example.org", "pw")
        assert os.stat(ann.dir).st_uid == nobody
        admin.del_user(users, "ann@example.org")
        assert not os.path.exists(ann.dir)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root (chown)")
@pytest.mark.parametrize("what", ["user", "domain"])
def test_making_a_mailbox_or_domain_never_follows_the_owners_links_as_root(users, tmp_path, what):
    """The same links, for adduser and adddomain: root made the directory where the link pointed
    and gave it to vpopmail (domains/example.org -> /etc/systemd/system and `adduser
    ssh.service.d@example.org`: a drop-in directory of vpopmail's, whose ExecStartPre= root would
    run). The directories are made as the owner: through the link it may make nothing, and the
    operation fails as for any directory that cannot be made, adding no row."""
    import shutil
    nobody = 65534
    for root, dirs, files in os.walk(users.vpopmaildir):
        for name in [root] + [os.path.join(root, f) for f in dirs + files]:
            os.chown(name, nobody, nobody)
    outside = tmp_path / "outside"
    (outside / "example.org").mkdir(parents=True)
    domains = os.path.join(users.vpopmaildir, "domains")
    shutil.move(domains, domains + ".moved")
    os.symlink(str(outside), domains)
    with pytest.raises(UsersError) as e:
        if what == "user":
            admin.add_user(users, "ssh.service.d@example.org", "pw")
        else:
            admin.add_domain(users, "ssh.service.d")
    made = "example.org/ssh.service.d" if what == "user" else "ssh.service.d"
    assert str(e.value) == "cannot make the %s %s: Permission denied" % (
        "mailbox" if what == "user" else "domain directory", os.path.join(domains, made))
    assert sorted(os.listdir(outside / "example.org")) == []
    assert users.lookup("ssh.service.d", "example.org") is None and not users.has_domain("ssh.service.d")
    os.unlink(domains)
    shutil.move(domains + ".moved", domains)
    box = admin.add_user(users, "ann@example.org", "pw", quota="1M")     # made as the owner, as before
    assert os.stat(box.maildir).st_uid == nobody and os.path.isdir(os.path.join(box.maildir, "new"))
    assert open(os.path.join(box.maildir, "maildirsize")).read() == "1048576S\n0 0\n"
    assert os.stat(os.path.join(box.maildir, "maildirsize")).st_uid == nobody
    admin.add_domain(users, "example.net")
    assert os.stat(users.domain_dir("example.net")).st_uid == nobody


def test_adduser_into_a_domain_deleted_meanwhile_is_refused(backend, monkeypatch):  # noqa: F811
    """qmail-users deldomain run between adduser's look at the domain and its transaction (here
    while adduser hashes the password): the user row went into a domain that no longer existed,
    which brought the domain back as 'real' (a vpopmail row names it), without its dir_control
    row, rcpthosts or virtualdomains lines. adduser now finds the domain inside its transaction."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    real = admin.hash_password

    def hash_then_deldomain(password, scheme):
        r = backend.home.run("qmail-users", "deldomain", "example.org")
        assert r.returncode == 0, r.stderr
        return real(password, scheme)
    monkeypatch.setattr(admin, "hash_password", hash_then_deldomain)
    with pytest.raises(UsersError) as e:
        admin.add_user(users, "joe@example.org", "secret")
    assert str(e.value) == "no such domain: example.org"
    assert users.lookup("joe", "example.org") is None and not users.has_domain("example.org")
    assert list(backend.sql("SELECT pw_name FROM vpopmail")) == []
    assert not os.path.exists(users.domain_dir("example.org"))


def test_deluser_then_adduser_of_the_same_name_keeps_the_new_mailbox(backend, monkeypatch):  # noqa: F811
    """qmail-users adduser joe run while deluser joe, its row deleted and committed, was still
    removing the old directory: the new joe's row was made, and then its Maildir removed with
    the old one's tree (mail to it deferred, then bounced). deluser now moves the directory
    aside inside its transaction and removes it under that other name."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    old = admin.add_user(users, "joe@example.org", "secret")
    with open(os.path.join(old.maildir, "new", "1.2.host"), "w") as f:
        f.write("old mail\n")
    real = admin.maildir.remove_tree

    def adduser_then_remove(path, owner=None):
        r = backend.home.run("qmail-users", "adduser", "joe@example.org", "-p", "again")
        assert r.returncode == 0, r.stderr
        return real(path, owner)
    monkeypatch.setattr(admin.maildir, "remove_tree", adduser_then_remove)
    admin.del_user(users, "joe@example.org")
    new = users.lookup("joe", "example.org")
    assert new is not None and new.dir == old.dir
    assert sorted(os.listdir(new.maildir)) == ["cur", "new", "tmp"] and os.listdir(os.path.join(new.maildir, "new")) == []
    assert os.listdir(users.domain_dir("example.org")) == ["joe"]


def test_two_delusers_of_one_user_count_it_out_once(backend, monkeypatch):  # noqa: F811
    """Two qmail-users deluser joe at once both found joe, and the second, waiting on the first's
    transaction, then deleted no row but still took one off vpopmail's cur_users count."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "ann@example.org", "secret")
    box = admin.add_user(users, "joe@example.org", "secret")
    admin.del_user(users, "joe@example.org")
    monkeypatch.setattr(users, "lookup", lambda *a: box)      # as the second one found joe
    with pytest.raises(UsersError, match="^no such user: joe@example.org$"):
        admin.del_user(users, "joe@example.org")
    assert [tuple(r) for r in backend.sql("SELECT cur_users FROM dir_control WHERE domain = ?", ("example.org",))] == [(1,)]
    monkeypatch.undo()
    assert users.lookup("ann", "example.org") is not None


def test_deldomain_then_adddomain_of_the_same_name_keeps_the_new_directory(backend, monkeypatch):  # noqa: F811
    """The same for deldomain and adddomain: the new domain's directory was removed with the old."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "secret")
    real = admin.maildir.remove_tree

    def adddomain_then_remove(path, owner=None):
        r = backend.home.run("qmail-users", "adddomain", "example.org", "--no-rcpthosts", "--no-virtualdomains")
        assert r.returncode == 0, r.stderr
        return real(path, owner)
    monkeypatch.setattr(admin.maildir, "remove_tree", adddomain_then_remove)
    assert admin.del_domain(users, "example.org") == "domain"
    assert users.has_domain("example.org") and users.lookup("joe", "example.org") is None
    assert os.listdir(users.domain_dir("example.org")) == []
    assert os.listdir(os.path.dirname(users.domain_dir("example.org"))) == ["example.org"]


def _killed_at(backend, hook, *args):  # noqa: F811
    """qmail-users ARGS run as its launcher runs it, SIGKILLed right after maildir.set_aside has
    run (hook "set_aside") or right before maildir.remove_tree would (hook "remove_tree")."""
    import subprocess
    from conftest import program
    with open(program("qmail-users")) as f:
        launcher = f.read().splitlines()
    hooked = ("import os, signal\nfrom qmailpy.users import maildir\nreal = maildir.%s\n"
              "def killed(*a, **k):\n    if real.__name__ == 'set_aside':\n        real(*a, **k)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "maildir.%s = killed\nfrom qmailpy.cli.users import main" % (hook, hook))
    code = "\n".join(line if line.strip() != "from qmailpy.cli.users import main" else
                     "\n".join(line[:len(line) - len(line.lstrip())] + h for h in hooked.splitlines())
                     for line in launcher[1:])
    assert "maildir.%s = killed" % hook in code, launcher
    r = subprocess.run([launcher[0][2:].split()[0], "-IS", "-c", code, *args], capture_output=True,
                       env=backend.home.env(), timeout=60)
    assert r.returncode == -9, r.stderr


def test_deluser_killed_before_its_commit_gets_its_directory_back(backend):  # noqa: F811
    """deluser killed after moving joe's directory aside and before its COMMIT: the row stayed,
    the directory was gone for good (joe's mail deferred, then bounced). The next command on
    the domain puts it back; one killed after the COMMIT leaves a tree that is removed then."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    box = admin.add_user(users, "joe@example.org", "secret")
    with open(os.path.join(box.maildir, "new", "1.2.host"), "w") as f:
        f.write("old mail\n")
    domain_dir = users.domain_dir("example.org")
    _killed_at(backend, "set_aside", "deluser", "joe@example.org")
    assert [n.startswith(".deleted.joe.") for n in os.listdir(domain_dir)] == [True]
    r = backend.home.run("qmail-users", "adduser", "joe@example.org", "-p", "again")
    assert (r.returncode, r.stderr) == (1, b"qmail-users: user exists: joe@example.org\n")
    assert os.listdir(domain_dir) == ["joe"]
    assert os.listdir(os.path.join(box.maildir, "new")) == ["1.2.host"]
    _killed_at(backend, "remove_tree", "deluser", "joe@example.org")
    users = backend.open()
    assert users.lookup("joe", "example.org") is None
    assert [n.startswith(".deleted.joe.") for n in os.listdir(domain_dir)] == [True]
    r = backend.home.run("qmail-users", "adduser", "joe@example.org", "-p", "again")
    assert r.returncode == 0, r.stderr
    assert os.listdir(domain_dir) == ["joe"] and os.listdir(os.path.join(box.maildir, "new")) == []


def test_deldomain_killed_before_its_commit_gets_its_directory_back(backend):  # noqa: F811
    """The same for deldomain: its domain directory comes back while the domain is there."""
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "secret")
    domains = os.path.dirname(users.domain_dir("example.org"))
    _killed_at(backend, "set_aside", "deldomain", "example.org", "--no-rcpthosts", "--no-virtualdomains")
    assert [n.startswith(".deleted.example.org.") for n in os.listdir(domains)] == [True]
    r = backend.home.run("qmail-users", "adddomain", "example.org", "--no-rcpthosts", "--no-virtualdomains")
    assert (r.returncode, r.stderr) == (1, b"qmail-users: domain exists: example.org\n")
    assert os.listdir(domains) == ["example.org"]
    assert os.path.isdir(backend.open().lookup("joe", "example.org").maildir)
    r = backend.home.run("qmail-users", "deldomain", "example.org", "--no-rcpthosts", "--no-virtualdomains")
    assert r.returncode == 0, r.stderr
    assert os.listdir(domains) == []


def test_a_command_during_a_deluser_does_not_put_its_directory_back(backend, monkeypatch):  # noqa: F811
    """recover() must not take a deluser still at work for a dead one: a qmail-users adduser of
    the same name started after the directory was moved aside, before the COMMIT, would have put
    it back (the row still there for it), and the old mailbox would outlive its row. It waits
    for the deleting transaction, then finds the row gone and the tree to remove."""
    import subprocess
    from conftest import program
    users = backend.open(create=True)
    admin.add_domain(users, "example.org")
    old = admin.add_user(users, "joe@example.org", "secret")
    real = admin.maildir.set_aside
    second = []

    def set_aside_then_adduser(path, owner=None):
        aside = real(path, owner)
        second.append(subprocess.Popen([program("qmail-users"), "adduser", "joe@example.org", "-p", "again"],
                                       env=backend.home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        try:
            second[0].wait(3)           # unlocked, it puts the tree back now
        except subprocess.TimeoutExpired:
            pass                        # waiting for our transaction
        return aside
    monkeypatch.setattr(admin.maildir, "set_aside", set_aside_then_adduser)
    admin.del_user(users, "joe@example.org")
    out, err = second[0].communicate(timeout=60)
    assert second[0].returncode == 0, err
    new = backend.open().lookup("joe", "example.org")
    assert new is not None and new.dir == old.dir
    assert os.listdir(users.domain_dir("example.org")) == ["joe"]
