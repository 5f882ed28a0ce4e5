"""qmail-policytest: the policy's checks, verdicts and deciding lines for one client."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT, Home
from dnsserver import dns_server  # noqa: F401  (fixture)
from qmailpy.cli.policytest import cli


@pytest.fixture
def phome(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "mx.test.example\n")
    home.control("rcpthosts", "example.org\n")
    return home


def run(home, *args, env=None):
    result = CliRunner().invoke(cli, list(args), env=dict({"QMAILHOME": home.root}, **(env or {})),
                                catch_exceptions=False)
    return result.exit_code, result.output


def lines_of(output, check):
    return [line.split() for line in output.splitlines() if line.split()[:1] == [check]]


def test_accepted_client_exit_0(phome):
    phome.control("badmailfrom", "@bulk.example\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--helo", "c.example", "--from", "a@example.com",
                    "--rcpt", "b@example.org")
    assert code == 0, out
    assert out.splitlines()[0] == "client 192.0.2.7 host=unknown helo=c.example home=%s" % phome.root
    assert lines_of(out, "badmailfrom")[0][:3] == ["badmailfrom", "accept", "control/badmailfrom"]
    assert lines_of(out, "relay")[0][:3] == ["relay", "accept", "control/rcpthosts"]
    assert out.splitlines()[-1] == "  => 250 ok"


def test_refusal_names_the_deciding_line_and_shows_the_rest(phome):
    phome.control("badmailfrom", "# spammers\n@bulk.example\n")
    phome.control("badrcptto", "trap@example.org\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--helo", "c.example", "--from", "x@bulk.example",
                    "--rcpt", "trap@example.org")
    assert code == 1
    assert lines_of(out, "badmailfrom")[0][:3] == ["badmailfrom", "refuse", "control/badmailfrom:2"]
    badrcptto = " ".join(lines_of(out, "badrcptto")[0])
    assert badrcptto.startswith("badrcptto refuse control/badrcptto:1") and "[not reached in a session]" in badrcptto
    assert "  => 553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)" in out


def test_given_dns_answers_spf_and_rbl(phome):
    phome.control("spfbehavior", "3\n")
    phome.control("rblhosts", "bl.example\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--helo", "c.example", "--from", "joe@fail.example",
                    "--rcpt", "b@example.org", "--dns", "fail.example TXT v=spf1 -all",
                    "--dns", "7.2.0.192.bl.example TXT not an A record")
    assert code == 1
    assert "  Received-SPF: fail (mx.test.example: SPF record at fail.example does not designate 192.0.2.7 " \
           "as permitted sender) client-ip=192.0.2.7; envelope-from=joe@fail.example;" in out
    assert lines_of(out, "spf")[1][:3] == ["spf", "refuse", "control/spfbehavior:1"]
    assert "  => 550 See http://spf.pobox.com/why.html?sender=joe%40fail.example&ip=192.0.2.7" \
           "&receiver=mx.test.example (#5.7.1)" in out


def test_temporary_failure_exit_3_and_answers_file(phome, tmp_path):
    phome.control("mfdnscheck", "1\n")
    answers = tmp_path / "answers"
    answers.write_text("# test answers\nsoft.example SERVFAIL\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@soft.example", "--rcpt", "b@example.org",
                    "--answers", str(answers))
    assert code == 3
    assert "  => 451 DNS temporary failure (#4.3.0)" in out


def test_env_whitelist_auth_and_blackholed(phome):
    phome.control("blackholedsender", "*@bulk.example\n")
    phome.control("rblhosts", "bl.example\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "x@bulk.example", "--rcpt", "b@example.org",
                    "--env", "WHITELIST=", "--dns", "7.2.0.192.bl.example A 127.0.0.2")
    assert code == 0 and "WHITELIST is set" in out
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "x@bulk.example", "--rcpt", "b@example.org")
    assert code == 1 and "  => the session ends here (blackholedsender)" in out and "RCPT TO" not in out
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "x@example.org", "--rcpt", "b@elsewhere.example",
                    "--auth", "x@example.org", "--dns", "7.2.0.192.bl.example A 127.0.0.2")
    assert code == 0
    assert lines_of(out, "rblhosts")[0][:2] == ["rblhosts", "skip"]
    assert "the client may relay (auth)" in out


def test_tarpit_is_reported(phome):
    phome.control("tarpitcount", "1\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@example.com", "--rcpt", "b@example.org",
                    "--rcpt", "c@example.org")
    assert code == 0 and "  tarpit: this reply waits 5 s (RCPT 2 > tarpitcount 1)" in out


def test_usage_errors(phome):
    assert run(phome, "--ip", "192.0.2.7", "--from", "a@b", "--env", "NOEQUALS")[0] == 2
    assert run(phome, "--ip", "192.0.2.7", "--from", "a@b", "--dns", "lonely")[0] == 2
    assert run(phome, "--from", "a@b")[0] == 2


def test_live_dns_as_a_program(phome, dns_server):
    """python -m qmailpy.cli.policytest (bin/qmail-policytest once setup.cfg names it), DNS via $DNSCACHEIP."""
    phome.control("mfdnscheck", "1\n")
    dns_server.zones = {"example.com": {"MX": [(10, "mx.example.com")]}}
    env = phome.env(PYTHONPATH=ROOT, **dns_server.environ())
    r = subprocess.run([sys.executable, "-m", "qmailpy.cli.policytest", "--ip", "192.0.2.7", "--from",
                        "a@example.com", "--rcpt", "b@example.org"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"mfdnscheck           accept   control/mfdnscheck:1" in r.stdout
    assert ("example.com", "MX", "udp") in dns_server.queries
    r = subprocess.run([sys.executable, "-m", "qmailpy.cli.policytest", "--ip", "192.0.2.7", "--from",
                        "a@nx.example", "--rcpt", "b@example.org"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 1 and b"553 sorry, your envelope sender must exist (#5.7.1)" in r.stdout


def session_reply(home, env, *lines):
    """What an in-process qmail-smtpd session answers to the last line, with this environment."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.smtpd.config import SmtpdConfig
    from qmailpy.smtpd.driver import Conversation
    from test_dialogues import TCP_ENV, FakeServices
    environ = dict(TCP_ENV, **env)
    controls = Controls(home.root, environ)
    session = Conversation(SmtpdConfig(controls, environ), FakeServices(controls))
    session.start()
    return [session.feed(line.encode() + b"\r\n").decode().rstrip("\r\n") for line in lines][-1]


def test_relayclients_and_smdcheck_decide_as_qmail_smtpd(phome):
    """issue 13: the test tool said 250 where qmail-smtpd said 553; both now run one decision."""
    phome.control("relayclients", "192.0.2.\n")
    phome.control("smdcheck", "1\n")
    phome.control("popbeforesmtp", "0\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@elsewhere.example", "--rcpt", "b@far.example")
    assert code == 1
    relay = " ".join(lines_of(out, "relay")[0])
    assert relay.startswith("relay refuse control/smdcheck:1 relaying (relayclients)")
    assert "  => 553 sorry, invalid sender address specified (#5.7.1)" in out
    assert session_reply(phome, {"TCPREMOTEIP": "192.0.2.7"}, "MAIL FROM:<a@elsewhere.example>",
                         "RCPT TO:<b@far.example>") == "553 sorry, invalid sender address specified (#5.7.1)"
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@example.org", "--rcpt", "b@far.example")
    assert code == 0 and "the client may relay (relayclients)" in out


def tcprules(home, text):
    cdb = home.root + "/control/tcp.smtp.cdb"
    subprocess.run(["tcprules", cdb, cdb + ".tmp"], input=text.encode(), check=True)


def test_tcprules_cdb_as_tcpserver_applies_it(phome):
    phome.control("popbeforesmtp", "0\n")
    tcprules(phome, '192.0.2.7:allow,RELAYCLIENT=""\n198.51.100.:deny\n:allow\n')
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@example.org", "--rcpt", "b@far.example")
    assert code == 0, out
    assert out.splitlines()[1] == "tcprules: control/tcp.smtp.cdb: rule '192.0.2.7' allows: RELAYCLIENT=''"
    assert "the client may relay (RELAYCLIENT)" in out
    code, out = run(phome, "--ip", "192.0.2.8", "--from", "a@example.org", "--rcpt", "b@far.example")
    assert code == 1 and out.splitlines()[1] == "tcprules: control/tcp.smtp.cdb: rule '' allows: no variables"
    assert "  => 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" in out
    code, out = run(phome, "--ip", "198.51.100.9", "--from", "a@example.org", "--rcpt", "b@example.org")
    assert (code, out) == (1, "tcprules: control/tcp.smtp.cdb: rule '198.51.100.' denies 198.51.100.9: "
                              "tcpserver drops the connection\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--no-tcprules", "--from", "a@example.org", "--rcpt", "b@far.example")
    assert code == 1 and "tcprules:" not in out
    assert run(phome, "--ip", "192.0.2.7", "--tcprules", "/nonexistent.cdb", "--from", "a@b")[0] == 111


def test_ipv6_client_spelled_and_looked_up_as_qmail_tcpserver_does(phome):
    """An IPv6 --ip is the client qmail-tcpserver (and ucspi-tcp-ipv6's tcpserver) would see:
    TCPREMOTEIP in ip6_fmt's spelling, the rules' keys tried on it (a rule copied from their
    log, 2001:db8::1:, matches 2001:db8:0:1:2:3:4:5), an IPv4-mapped one as plain IPv4."""
    import cdblib
    cdb = phome.root + "/control/tcp.smtp.cdb"
    with open(cdb, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"2001:db8::1:", b'+RELAYCLIENT=\0')
        w.put(b"192.0.2.7", b'+RELAYCLIENT=\0')
        w.put(b"", b"\0")
    for typed, seen in (("2001:DB8:0:1:2:3:4:5", "2001:db8::1:2:3:4:5"), ("::ffff:192.0.2.7", "192.0.2.7")):
        code, out = run(phome, "--ip", typed, "--from", "a@example.org", "--rcpt", "b@far.example")
        assert code == 0, out
        assert out.splitlines()[0] == "client %s host=unknown helo=(none) home=%s" % (seen, phome.root)
        assert out.splitlines()[1] == "tcprules: control/tcp.smtp.cdb: rule %r allows: RELAYCLIENT=''" % (
            "2001:db8::1:" if ":" in seen else seen)


def test_userchk_and_maxrecepients_are_decided_too(phome, tmp_path):
    from qmailpy.ctl.reader import Controls
    from qmailpy.users import admin, open_users
    users = open_users(phome.root, Controls(phome.root), create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "bob@example.org", "secret")
    users.close()
    phome.control("userchk", "1\n")
    phome.control("maxrecepients", "1\n")
    code, out = run(phome, "--ip", "192.0.2.7", "--from", "a@example.com", "--rcpt", "bob@example.org",
                    "--rcpt", "nobody@example.org")
    assert code == 1
    assert [line[:2] for line in lines_of(out, "userchk")] == [["userchk", "accept"], ["userchk", "refuse"]]
    assert "  => 550 sorry, no mailbox here by that name (#5.1.1 - chkusr)" in out
    assert lines_of(out, "maxrecepients")[1][:2] == ["maxrecepients", "refuse"]    # not reached: chkuser decided


def test_bad_characters_are_usage_errors(phome):
    assert run(phome, "--ip", "192.0.2.7", "--from", "a@b\r\nRCPT TO:<x@y>")[0] == 2
