"""The DNS side of the policy: existence tests, DNSBL names, bounded time-outs, big answers
over TCP, per-session caching, and StaticResolver."""
import time

import pytest

from dnsserver import dns_server  # noqa: F401  (fixture)
from qmailpy.dns.resolver import HARD, OK, SOFT
from qmailpy.policy import lookup
from qmailpy.policy.dnscheck import clean_text
from qmailpy.policy.lookup import StaticResolver, exists, reverse_ip, smtpd_resolver
from test_policy_spf import session_for, talk


@pytest.mark.parametrize("ip,want", [
    ("192.0.2.7", "7.2.0.192"),
    ("2001:db8::1", ".".join("1" + "0" * 23 + "8bd01002")),
    ("::ffff:192.0.2.7", "7.2.0.192"),
    ("unknown", None),
    ("1.2.3", None),
    ("999.1.1.1", None),
])
def test_reverse_ip(ip, want):
    assert reverse_ip(ip) == want


def test_exists_follows_qmails_mx_then_address_rule():
    r = StaticResolver(["mx.example MX 10 mail.mx.example", "a.example A 192.0.2.1", "v6.example AAAA 2001:db8::1",
                        "txt.example TXT hello", "soft.example MX SERVFAIL", "softa.example A TIMEOUT",
                        "nullmx.example MX 0 ."])
    assert exists(r, "mx.example").status == OK
    assert exists(r, "a.example").values == ["A"]
    assert exists(r, "v6.example").status == OK
    assert (exists(r, "txt.example").status, exists(r, "txt.example").reason) == (HARD, "nodata")
    assert (exists(r, "nx.example").status, exists(r, "nx.example").reason) == (HARD, "nxdomain")
    assert exists(r, "soft.example").status == SOFT
    assert exists(r, "softa.example").status == SOFT
    assert exists(r, "nullmx.example").status == OK      # an MX record exists, even a null one
    assert ("nx.example", "A") not in r.queries          # NXDOMAIN on MX ends the test


def test_exists_asks_an_idn_by_its_a_labels():
    """An SMTPUTF8 sender's domain (bücher.example) is in DNS as xn--bcher-kva.example;
    asked as raw UTF-8 it was NXDOMAIN, and mfdnscheck refused a sender that exists.
    A name that is no valid IDN is hard without a question."""
    r = StaticResolver(["xn--bcher-kva.example MX 10 mx.example"])
    assert exists(r, "bücher.example").status == OK
    assert exists(r, "Bücher.example").status == OK
    assert r.queries == [("xn--bcher-kva.example", "MX")] * 2
    assert (exists(r, "bü-.example").status, exists(r, "bü-.example").reason) == (HARD, "badname")
    assert len(r.queries) == 2


def test_dnstimeout_sets_the_per_try_time_out():
    env = {"DNSCACHEIP": "127.0.0.1:5353"}
    assert smtpd_resolver(env).config.timeout == 5.0
    assert smtpd_resolver(dict(env, DNSTIMEOUT="0.5")).config.timeout == 0.5
    assert smtpd_resolver(dict(env, DNSTIMEOUT="0")).config.timeout == lookup.MIN_TIMEOUT
    assert smtpd_resolver(dict(env, DNSTIMEOUT="999")).config.timeout == lookup.MAX_TIMEOUT
    assert smtpd_resolver(dict(env, DNSTIMEOUT="")).config.timeout == 5.0
    from qmailpy.ctl.reader import ControlError
    for bad in ("soon", "nan", "inf", "-1", "1e3", "0x10", ".", "1.", "1 000"):      # never a guess
        with pytest.raises(ControlError) as e:
            smtpd_resolver(dict(env, DNSTIMEOUT=bad))
        assert str(e.value) == "$DNSTIMEOUT: not a number of seconds: %r" % bad


def test_a_dead_name_server_gives_a_bounded_temporary_error(tmp_path, dns_server):
    dns_server.zones = {"slow.example": "DROP"}
    session, services = session_for(tmp_path, dns_server, {"mfdnscheck": "1"}, DNSTIMEOUT="0.2")
    start = time.monotonic()
    assert talk(session, "MAIL FROM:<a@slow.example>", "RCPT TO:<b@example.org>") == [
        "250 ok", "451 DNS temporary failure (#4.3.0)"]
    assert time.monotonic() - start < 2          # 2 attempts x 0.2 s, plus slack
    assert services.logged[-1][1]["dns"] == "soft:timeout"


def test_answers_over_512_bytes_come_over_tcp(tmp_path, dns_server):
    dns_server.zones = {"big.example": {"MX": [(i, "mail-exchanger-%d.big.example" % i) for i in range(40)]}}
    session, _ = session_for(tmp_path, dns_server, {"mfdnscheck": "1"})
    assert talk(session, "MAIL FROM:<a@big.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert ("big.example", "MX", "udp") in dns_server.queries
    assert ("big.example", "MX", "tcp") in dns_server.queries


def test_dns_answers_are_asked_once_per_session(tmp_path, dns_server):
    dns_server.zones = {"example.com": {"MX": [(10, "mx.example.com")]},
                        "7.2.0.192.bl.example": {"TXT": ["not an A"]}}
    session, _ = session_for(tmp_path, dns_server, {"mfdnscheck": "1", "rblhosts": "bl.example"})
    for _ in range(2):
        assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "RCPT TO:<c@example.org>",
                    "RSET") == ["250 ok", "250 ok", "250 ok", "250 flushed"]
    assert sorted(dns_server.queries) == [("7.2.0.192.bl.example", "A", "udp"), ("example.com", "MX", "udp")]


def test_rblhosts_asks_nibbles_for_ipv6_clients(tmp_path, dns_server):
    name = ".".join("1" + "0" * 23 + "8bd01002") + ".bl6.example"
    dns_server.zones = {name: {"A": ["127.0.0.2"], "TXT": ["v6 listed"]}}
    session, services = session_for(tmp_path, dns_server, {"rblhosts": "bl6.example"}, TCPREMOTEIP="2001:db8::1")
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>") == [
        "250 ok", "553 v6 listed (#5.7.1)"]
    assert services.logged[-1] == ("refused", {"check": "rblhosts", "rule": "control/rblhosts:1",
                                               "zone": "bl6.example", "ip": "2001:db8::1", "a": "127.0.0.2",
                                               "sender": "<a@example.com>", "rcpt": "<b@example.org>"})


def test_rbl_text_is_cleaned_as_rblsmtpd_does():
    assert clean_text("a\tb\x01c") == "a?b?c"
    assert clean_text("x" * 300) == "x" * 200


def test_several_txt_records_are_joined(tmp_path, dns_server):
    dns_server.zones = {"7.2.0.192.bl.example": {"A": ["127.0.0.2"], "TXT": ["one", "two"]}}
    session, _ = session_for(tmp_path, dns_server, {"rblhosts": "bl.example"})
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>")[1] == "553 one two (#5.7.1)"


def test_badmailfrom_unknown_trusts_tcpremotehost(tmp_path, dns_server):
    session, _ = session_for(tmp_path, dns_server, {"badmailfrom-unknown": "@isp.example"},
                             TCPREMOTEHOST="dsl.isp.example")
    assert talk(session, "MAIL FROM:<a@isp.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert dns_server.queries == []


def test_static_resolver_behaviours():
    r = StaticResolver(["x.example A 192.0.2.1", "x.example MX TIMEOUT", "dead.example SERVFAIL",
                        "gone.example NXDOMAIN", "7.2.0.192.in-addr.arpa PTR host.example.",
                        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa PTR v6.example"])
    assert (r.a("X.example.").status, r.a("x.example").values) == (OK, ["192.0.2.1"])
    assert (r.mx("x.example").status, r.mx("x.example").reason) == (SOFT, "timeout")
    assert r.txt("x.example").reason == "nodata"
    assert r.a("dead.example").status == SOFT and r.txt("dead.example").reason == "servfail"
    assert r.a("gone.example").reason == "nxdomain"
    assert r.ptr("192.0.2.7").values == ["host.example"]
    assert r.ptr("2001:db8::1").values == ["v6.example"]
    assert r.addresses("x.example").values == ["192.0.2.1"]
    with pytest.raises(ValueError):
        StaticResolver(["lonely"])


def test_a_bare_dotted_quad_is_an_address_as_dns_mxip_takes_it(tmp_path, dns_server):
    """mfdnscheck and helodnscheck ask what qmail's dns_mxip() answers: a domain that is
    a dotted quad without brackets (ip_scan) is an address, found without a lookup; it was
    asked as a name (NXDOMAIN) and the sender refused 553, the HELO 550."""
    dns_server.zones = {}
    session, _ = session_for(tmp_path, dns_server, {"mfdnscheck": "1", "helodnscheck": "1"})
    assert talk(session, "HELO 192.0.2.7", "MAIL FROM:<a@192.0.2.1>", "RCPT TO:<b@example.org>")[1:] == [
        "250 ok", "250 ok"]
    assert dns_server.queries == []
    assert talk(session, "RSET", "MAIL FROM:<a@192.0.2.1.example>", "RCPT TO:<b@example.org>")[1:] == [
        "250 ok", "553 sorry, your envelope sender must exist (#5.7.1)"]


def test_a_name_whose_address_answer_holds_only_a_cname_exists(tmp_path, dns_server):
    """dns_mxip() falls back to dns_ip(), whose A answer holding only a CNAME (an alias
    whose target has no address record) is no failure: the patch's mfdnscheck accepts the
    sender. It was hard (nodata) and the sender refused 553; a dangling alias (NXDOMAIN)
    still is."""
    dns_server.zones = {"alias.example": {"CNAME": "target.example"}, "target.example": {"TXT": ["x"]},
                        "dangling.example": {"CNAME": "nowhere.example"}}
    session, _ = session_for(tmp_path, dns_server, {"mfdnscheck": "1"})
    assert talk(session, "MAIL FROM:<a@alias.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert talk(session, "RSET", "MAIL FROM:<a@dangling.example>", "RCPT TO:<b@example.org>")[1:] == [
        "250 ok", "553 sorry, your envelope sender must exist (#5.7.1)"]


def test_mfdnscheck_leaves_a_sender_without_a_domain_alone(tmp_path, dns_server):
    session, _ = session_for(tmp_path, dns_server, {"mfdnscheck": "1"})
    assert talk(session, "MAIL FROM:<joe>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert dns_server.queries == []


def test_splithorizon_exempts_a_relay_client_from_helodnscheck(tmp_path, dns_server):
    """splithorizon: a client that may relay (an office behind NAT) is not held to its HELO's DNS."""
    talks = ("HELO nx.example", "MAIL FROM:<a@example.com>", "RCPT TO:<b@elsewhere.example>")
    session, _ = session_for(tmp_path, dns_server, {"helodnscheck": "1", "splithorizon": "1"}, RELAYCLIENT="")
    assert talk(session, *talks)[1:] == ["250 ok", "250 ok"]
    assert dns_server.queries == []
    session, _ = session_for(tmp_path / "2", dns_server, {"helodnscheck": "1"}, RELAYCLIENT="")
    assert talk(session, *talks)[2] == "550 sorry, invalid HELO/EHLO greeting (#5.7.1)"


@pytest.mark.parametrize("env", [{"RELAYCLIENT": ""}, {"TCPREMOTEIP": "unknown"}],
                         ids=["relay-client", "ip-unknown"])
def test_badmailfrom_unknown_asks_nothing_of_a_relay_client_or_an_unknown_ip(tmp_path, dns_server, env):
    session, _ = session_for(tmp_path, dns_server, {"badmailfrom-unknown": "@isp.example"}, **env)
    assert talk(session, "MAIL FROM:<a@isp.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert dns_server.queries == []


def test_rblhosts_without_a_client_ip_asks_nothing(tmp_path, dns_server):
    session, _ = session_for(tmp_path, dns_server, {"rblhosts": "bl.example"}, TCPREMOTEIP="unknown")
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert dns_server.queries == []


def test_an_rblhosts_line_that_names_no_zone_is_passed_over(tmp_path, dns_server):
    dns_server.zones = {"7.2.0.192.bl.example": {"A": ["127.0.0.2"], "TXT": ["listed"]}}
    session, _ = session_for(tmp_path, dns_server, {"rblhosts": ".\nbl.example"})
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>")[1] == "553 listed (#5.7.1)"
    assert [q[0] for q in dns_server.queries][0] == "7.2.0.192.bl.example"


def test_exists_ends_at_an_nxdomain_address_answer():
    """MX NODATA and then NXDOMAIN on the address question (the name went away in between):
    hard, and AAAA is not asked."""
    r = StaticResolver(["gone.example TXT x", "gone.example A NXDOMAIN"])
    got = exists(r, "gone.example")
    assert (got.status, got.reason) == (HARD, "nxdomain")
    assert r.queries == [("gone.example", "MX"), ("gone.example", "A")]


def test_names_that_are_no_address_have_no_reverse_name():
    r = StaticResolver()
    assert reverse_ip("1:2:zz") is None
    assert (r.ptr("1:2:zz").status, r.ptr("1:2:zz").reason, r.queries) == (HARD, "badname", [])
    with pytest.raises(ValueError) as e:
        StaticResolver(["x.example MX"])
    assert str(e.value) == "x.example MX: no value"


def test_a_verdict_without_a_rule_logs_its_check_alone():
    from qmailpy.policy import REFUSE, Verdict
    assert Verdict("mfdnscheck", REFUSE, "553 x", fields={"dns": "hard:nxdomain"}).log_fields() == {
        "check": "mfdnscheck", "dns": "hard:nxdomain"}
