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
])
def test_lookup_matches_tcpserver(tcpcdb, ip, host, info, key, verdict, env):
    db, path = tcpcdb
    assert tcprules_lookup(db, ip, host, info) == (key, verdict, env)
    told = tcprulescheck(path, ip, host, info)
    assert ("rule %s:" % key) in told and (verdict in told)


def test_keys_order():
    assert list(tcprules_keys("1.2.3.4", "a.b.c")) == [
        "1.2.3.4", "=a.b.c", "1.2.3.", "1.2.", "1.", "=.b.c", "=.c", "=", ""]


def test_absent_cdb_is_none(tmp_path):
    assert open_cdb(str(tmp_path / "nothing.cdb")) is None
