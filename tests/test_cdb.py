"""cdb reading against files built by the real tcprules (ucspi-tcp)."""
import subprocess

import pytest

from qmailpy.ctl.cdbmap import open_cdb, tcprules_keys, tcprules_lookup

RULES = """\
127.0.0.1:allow,RELAYCLIENT="",DATABYTES="1000"
10.1.:allow,RELAYCLIENT=""
10.:deny
=trusted.example.org:allow,RELAYCLIENT="",MSG="host"
=.example.net:allow,SPFBEHAVIOR="3"
joe@192.0.2.7:allow,RELAYCLIENT=""
ann@=mx.example.org:allow,WHO="ann"
:allow
"""


@pytest.fixture
def tcpcdb(tmp_path):
    cdb = tmp_path / "tcp.smtp.cdb"
    subprocess.run(["tcprules", str(cdb), str(tmp_path / "tcp.tmp")], input=RULES.encode(), check=True)
    db = open_cdb(str(cdb))
    yield db, str(cdb)
    db.close()


def tcprulescheck(cdb, ip, host=None, info=None):
    env = {"TCPREMOTEIP": ip}
    if host:
        env["TCPREMOTEHOST"] = host
    if info:
        env["TCPREMOTEINFO"] = info
    return subprocess.run(["tcprulescheck", cdb], env=env, capture_output=True).stdout.decode()


@pytest.mark.parametrize("ip,host,info,key,verdict,env", [
    ("127.0.0.1", None, None, "127.0.0.1", "allow", {"RELAYCLIENT": "", "DATABYTES": "1000"}),
    ("10.1.2.3", None, None, "10.1.", "allow", {"RELAYCLIENT": ""}),
    ("10.9.9.9", None, None, "10.", "deny", {}),
    ("192.0.2.1", "trusted.example.org", None, "=trusted.example.org", "allow",
     {"RELAYCLIENT": "", "MSG": "host"}),
    ("192.0.2.1", "mx.example.net", None, "=.example.net", "allow", {"SPFBEHAVIOR": "3"}),
    ("192.0.2.7", None, "joe", "joe@192.0.2.7", "allow", {"RELAYCLIENT": ""}),
    ("198.51.100.1", None, None, "", "allow", {}),
    ("192.0.2.8", "mx.example.org", "ann", "ann@=mx.example.org", "allow", {"WHO": "ann"}),
    ("192.0.2.8", "mx.example.org", "joe", "", "allow", {}),
])
def test_lookup_matches_tcpserver(tcpcdb, ip, host, info, key, verdict, env):
    db, path = tcpcdb
    assert tcprules_lookup(db, ip, host, info) == (key, verdict, env)
    told = tcprulescheck(path, ip, host, info)
    assert ("rule %s:" % key) in told and (verdict in told)


def test_keys_order():
    assert list(tcprules_keys("1.2.3.4", "a.b.c")) == [
        "1.2.3.4", "=a.b.c", "1.2.3.", "1.2.", "1.", "=.b.c", "=.c", "=", ""]
    assert list(tcprules_keys("1.2.3.4", "a.b", "joe")) == [
        "joe@1.2.3.4", "joe@=a.b", "1.2.3.4", "=a.b", "1.2.3.", "1.2.", "1.", "=.b", "=", ""]


def test_no_rule_for_the_client_is_none(tmp_path):
    """Without a catch-all line a client no rule names gets none (tcpserver lets it in)."""
    cdb = tmp_path / "tcp.smtp.cdb"
    subprocess.run(["tcprules", str(cdb), str(tmp_path / "tcp.tmp")], input=b"10.:deny\n", check=True)
    db = open_cdb(str(cdb))
    try:
        assert tcprules_lookup(db, "192.0.2.1", "mx.example.org", "joe") is None
        assert tcprules_lookup(db, "10.0.0.1") == ("10.", "deny", {})
    finally:
        db.close()


# What Debian's ucspi-tcp-ipv6 tcprules writes for these lines (its key is the text before
# the last ':' ahead of allow/deny): `2001:db8:1::allow` -> "2001:db8:1:", and its
# tcprulescheck (rules.c under IPV6) tries the prefixes ending in ':' as those ending in '.'.
RULES6 = {b"::1": b"+WHO=loopback\0", b"2001:db8:1:": b"+WHO=net1\0", b"2001:db8:1:5:": b"D\0",
          b"2001:db8::": b"+WHO=db8\0", b"": b"+WHO=any\0"}


@pytest.mark.parametrize("ip,key,verdict,env", [
    ("::1", "::1", "allow", {"WHO": "loopback"}),
    ("2001:db8:1::7", "2001:db8:1:", "allow", {"WHO": "net1"}),
    ("2001:db8:1:5::7", "2001:db8:1:5:", "deny", {}),
    ("2001:db8::9", "2001:db8::", "allow", {"WHO": "db8"}),
    ("2001:db9::1", "", "allow", {"WHO": "any"}),
])
def test_ipv6_prefixes_end_in_a_colon_as_in_the_ipv6_tcpserver(tmp_path, ip, key, verdict, env):
    path = tmp_path / "tcp6.cdb"
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        for k, v in RULES6.items():
            w.put(k, v)
    db = open_cdb(str(path))
    try:
        assert tcprules_lookup(db, ip) == (key, verdict, env)
    finally:
        db.close()
    assert list(tcprules_keys("2001:db8:1::7", "a.b")) == [
        "2001:db8:1::7", "=a.b", "2001:db8:1::", "2001:db8:1:", "2001:db8:", "2001:", "=.b", "=", ""]


def test_absent_cdb_is_none(tmp_path):
    assert open_cdb(str(tmp_path / "nothing.cdb")) is None


# -- a cdb we cannot trust is a ControlError naming the file, never a crash, a hang or a guess

import os  # noqa: E402

import cdblib  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from qmailpy.ctl.cdbmap import CdbMap, CorruptCdb  # noqa: E402
from qmailpy.ctl.reader import ControlError  # noqa: E402

KEYS = [b"example.org", b".example.org", b"@domain.example", b"bob@example.net", b"x" * 300]


def cdb_bytes(tmp_path, keys=KEYS):
    path = tmp_path / "built.cdb"
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        for k in keys:
            w.put(k, b"")
    return path.read_bytes()


def write(tmp_path, data, name="x.cdb"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_valid_cdb_verifies_and_finds_every_key(tmp_path):
    db = CdbMap(write(tmp_path, cdb_bytes(tmp_path)), "control/x.cdb")
    assert db.verify() == len(KEYS) == len(db)
    assert all(k in db for k in KEYS) and b"nobody.example" not in db
    db.close()


def test_every_truncation_is_refused_at_open(tmp_path):
    data = cdb_bytes(tmp_path)
    for size in range(0, len(data)):
        with pytest.raises(CorruptCdb) as e:
            CdbMap(write(tmp_path, data[:size]), "control/morercpthosts.cdb")
        assert str(e.value).startswith("control/morercpthosts.cdb: corrupt cdb: truncated"), size


def test_a_directory_or_unreadable_cdb_is_a_control_error(tmp_path):
    os.mkdir(tmp_path / "d.cdb")
    with pytest.raises(ControlError) as e:
        open_cdb(str(tmp_path / "d.cdb"), "control/d.cdb")
    assert str(e.value) == "control/d.cdb: unable to read: Is a directory"


def test_a_cdb_that_is_no_file_is_never_opened(tmp_path):
    """qmail-lspawn opens users/cdb as root, and users/ is qmailu's: whatever qmailu links it to
    must not be opened for reading (a device's open has side effects: /dev/watchdog starts the
    watchdog; a FIFO's waiting writer is let go). Only a regular file is opened, through the
    O_PATH descriptor the name was resolved to; anything else is a ControlError."""
    from waitingfifo import writer_waiting_behind
    with writer_waiting_behind(tmp_path, "cdb"):
        with pytest.raises(ControlError) as e:
            open_cdb(str(tmp_path / "cdb"), "users/cdb")
        assert str(e.value) == "users/cdb: unable to read: not a file"


def test_full_table_does_not_hang_a_lookup(tmp_path):
    """Every slot of a table taken and no key matching: the probe stops after one round."""
    data = bytearray(cdb_bytes(tmp_path, [b"k%d" % i for i in range(50)]))
    db = CdbMap(write(tmp_path, bytes(data)))
    tables = list(db._tables)
    db.close()
    pos, slots = next(t for t in tables if t[1])
    for s in range(slots):                  # fill the empty slots with a hash nobody has
        if data[pos + 8 * s + 4:pos + 8 * s + 8] == b"\0\0\0\0":
            data[pos + 8 * s:pos + 8 * s + 8] = (0xFFFFFFFF).to_bytes(4, "little") + (2048).to_bytes(4, "little")
    db = CdbMap(write(tmp_path, bytes(data)), "control/x.cdb")
    i = tables.index((pos, slots))
    probe = next(k for k in (b"q%d" % n for n in range(100000)) if db._hash(k) & 255 == i)
    assert probe not in db
    with pytest.raises(CorruptCdb):
        db.verify()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=2048, max_size=4096), st.lists(st.binary(max_size=20), max_size=10))
def test_any_bytes_give_answers_or_control_errors_only(tmp_path_factory, data, probes):
    path = write(tmp_path_factory.mktemp("cdb"), data)
    try:
        db = CdbMap(path)
    except ControlError:
        return
    try:
        for k in probes + KEYS:
            db.get(k)
        db.verify()
    except ControlError:
        pass
    finally:
        db.close()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_keys_or_tables_are_found_by_verify(tmp_path_factory, data):
    """A changed byte in a key, a record header or a hash table: verify() notices.

    (The values here are empty: a changed value byte is something no cdb reader can notice.)"""
    tmp = tmp_path_factory.mktemp("cdb")
    good = cdb_bytes(tmp, [b"key%d" % i for i in range(20)])
    where = data.draw(st.integers(min_value=2048, max_value=len(good) - 1))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != good[where]))
    bad = bytearray(good)
    bad[where] = new
    try:
        db = CdbMap(write(tmp, bytes(bad)))
        db.verify()
        db.close()
    except CorruptCdb:
        return
    raise AssertionError("a change at %d was not noticed" % where)


def test_verify_names_a_full_table_and_a_record_no_table_holds(tmp_path):
    """Two damages a lookup may never meet: a table with no empty slot (cdbmake leaves half of
    them empty: a lookup of a missing key there would probe every slot) and a record no table
    points at (a key that is in the file and never found)."""
    good = cdb_bytes(tmp_path, [b"only.example"])
    db = CdbMap(write(tmp_path, good))
    i, (pos, slots) = next((i, t) for i, t in enumerate(db._tables) if t[1])
    db.close()
    assert slots == 2
    used = next(s for s in range(slots) if good[pos + 8 * s + 4:pos + 8 * s + 8] != b"\0\0\0\0")
    entry = good[pos + 8 * used:pos + 8 * used + 8]
    full = bytearray(good)
    for s in range(slots):
        full[pos + 8 * s:pos + 8 * s + 8] = entry
    lost = bytearray(good)
    lost[pos + 8 * used:pos + 8 * used + 8] = bytes(8)
    for data, why in ((full, "hash table %d is full" % i), (lost, "1 records, 0 in the hash tables")):
        db = CdbMap(write(tmp_path, bytes(data)), "control/x.cdb")
        with pytest.raises(CorruptCdb) as e:
            db.verify()
        db.close()
        assert str(e.value) == "control/x.cdb: corrupt cdb: " + why
