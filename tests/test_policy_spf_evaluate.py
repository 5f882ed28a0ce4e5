"""qmailpy.policy.spf in-process, each outcome's SpfResult exactly (make mutate): the local
pass, no identity, an unusable client address, DNS and record errors, spfguess and spfrules,
the domain's exp= text, macros in a record, the check's time limit, and what _lookup answers
pyspf. SPF semantics: RFC 7208 and qmail-spf rc5 (reference section 8)."""
import time

import pytest
import spf as pyspf

from qmailpy.dns.resolver import SOFT, Answer
from qmailpy.policy import spf
from qmailpy.policy.engine import Envelope, Policy
from qmailpy.policy.lookup import StaticResolver
from qmailpy.policy.spfmacro import Context
from qmailpy.smtpd.config import Peer

CLIENT = "192.0.2.7"
SPFEXP = "See %{S} %{xe}"


@pytest.fixture(autouse=True)
def fresh_query_class(monkeypatch):
    """A Query class built anew for each test (see tests/test_policy_spf.py)."""
    monkeypatch.setattr(spf, "_Query", None)


class Ctl:
    def __init__(self, values):
        self.values = values

    def value(self, name):
        return self.values.get(name)


def check(lines, sender, helo="h.example", ip=CLIENT, my_ips=(), resolver=None, **controls):
    """(SpfResult of evaluate(), the lookups it made) for a client at `ip`, TCPLOCALHOST mx.here."""
    r = resolver or StaticResolver(lines)
    env = {"TCPREMOTEIP": ip, "TCPLOCALHOST": "mx.here"}
    controls.setdefault("spfexp", SPFEXP)
    policy = Policy(Ctl(controls), env, Peer(env), my_ips=my_ips, resolver=r)
    return spf.evaluate(policy, Envelope(helo, sender)), r.queries


def facts(result):
    """Everything a session shows of a result: word, domain, identity, error, the log summary,
    the Received-SPF header and the explanation a refusal would give."""
    return (result.result, result.domain, result.identity, result.error, result.summary(), result.header(),
            result.explanation())


# --- no check: the local pass and no identity ---

def test_localhost_and_own_addresses_pass_without_lookups():
    lines = ["x.example TXT v=spf1 -all"]
    result, queries = check(lines, "joe@x.example", ip="127.0.0.1")
    assert queries == []
    assert facts(result) == (
        "pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)",
        "Received-SPF: pass (mx.here: local policy designates 127.0.0.1 as permitted sender) "
        "client-ip=127.0.0.1; envelope-from=joe@x.example;\n",
        "See joe%40x.example ")
    result, queries = check(lines, "joe@x.example", my_ips={CLIENT})
    assert queries == []
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)")
    result, queries = check(lines, "joe@x.example", ip="192.0.2.8", my_ips={CLIENT})
    assert result.result == "fail" and queries == [("x.example", "TXT")]


def test_null_sender_of_a_local_client_has_no_sender_macro():
    result, _ = check([], None, ip="127.0.0.1", spfexp="s=%{s} d=%{d} h=%{h}")
    assert (result.result, result.domain, result.identity) == ("pass", "h.example", "helo")
    assert result.explanation() == "s= d=h.example h=h.example"


def test_no_sender_domain_and_no_helo_is_none():
    result, queries = check([], None, helo=None)
    assert queries == []
    assert facts(result) == (
        "none", "", "helo", "", "none (helo, local policy)",
        "Received-SPF: none (mx.here: domain at  does not designate permitted sender hosts) "
        "client-ip=192.0.2.7; helo=;\n",
        "See  ")


def test_unusable_client_address_is_unknown():
    result, queries = check(["x.example TXT v=spf1 -all"], "joe@x.example", ip="unknown")
    assert queries == []
    why = "'unknown' does not appear to be an IPv4 or IPv6 address"
    assert facts(result) == (
        "unknown", "x.example", "mailfrom", why, "unknown (mailfrom, x.example: %s)" % why,
        "Received-SPF: unknown (mx.here: %s) client-ip=unknown; envelope-from=joe@x.example;\n" % why,
        "See joe%40x.example " + why)


# --- the identity ---

def test_sender_domain_is_after_the_last_at():
    result, queries = check(['x.example TXT v=spf1 -all'], '"a@b"@x.example')
    assert queries == [("x.example", "TXT")]
    assert (result.result, result.domain, result.identity) == ("fail", "x.example", "mailfrom")


def test_helo_identity_is_the_helo_name_as_given():
    """RFC 7208 2.3/4.3: the HELO name is the domain checked; one that is not a domain name has
    no record (none), it is not cut at an '@'."""
    result, queries = check(["h.example TXT v=spf1 -all"], "", helo="x@h.example")
    assert queries == [("x@h.example", "TXT")]
    assert (result.result, result.domain, result.identity) == ("none", "x@h.example", "helo")


@pytest.mark.parametrize("sender", ["joe", "joe@"])
def test_sender_without_a_domain_is_checked_as_postmaster_at_helo(sender):
    """MAIL FROM without a domain (no '@', or nothing after the last one: rc5's spfcheck()):
    the HELO identity, %{s} is postmaster@HELO (RFC 7208 7.2)."""
    result, queries = check(["h.example TXT v=spf1 -all"], sender, spfexp="%{s} %{l} %{o}")
    assert queries == [("h.example", "TXT")]
    assert facts(result) == (
        "fail", "h.example", "helo", "", "fail (helo, h.example)",
        "Received-SPF: fail (mx.here: SPF record at h.example does not designate 192.0.2.7 as permitted "
        "sender) client-ip=192.0.2.7; helo=h.example;\n",
        "postmaster@h.example postmaster h.example")


# --- errors of the record and of its lookups ---

def test_record_lookup_errors():
    result, queries = check(["t.example TXT SERVFAIL"], "joe@t.example")
    assert queries == [("t.example", "TXT")]
    assert facts(result) == (
        "error", "t.example", "mailfrom", "DNS problem", "error (mailfrom, t.example: DNS problem)",
        "Received-SPF: error (mx.here: error in processing during lookup of t.example: DNS problem) "
        "client-ip=192.0.2.7; envelope-from=joe@t.example;\n",
        "See joe%40t.example DNS problem")
    result, _ = check(["two.example TXT v=spf1 -all", "two.example TXT v=spf1 +all"], "joe@two.example")
    why = "Multiple SPF records returned"              # rc5's spfget() text
    assert facts(result) == (
        "unknown", "two.example", "mailfrom", why, "unknown (mailfrom, two.example: %s)" % why,
        "Received-SPF: unknown (mx.here: %s) client-ip=192.0.2.7; envelope-from=joe@two.example;\n" % why,
        "See joe%40two.example " + why)


def test_lookup_error_in_a_mechanism_is_a_dns_problem():
    result, queries = check(["x.example TXT v=spf1 a:t.example -all", "t.example SERVFAIL"], "joe@x.example")
    assert queries == [("x.example", "TXT"), ("t.example", "A")]
    assert facts(result)[:5] == ("error", "x.example", "mailfrom", "DNS problem",
                                 "error (mailfrom, x.example: DNS problem)")


def test_record_errors_name_the_term():
    result, _ = check(["x.example TXT v=spf1 ip4:192.0.2.0/33 -all"], "joe@x.example")
    assert facts(result)[:5] == ("unknown", "x.example", "mailfrom", "Invalid IP4 CIDR length: ip4:192.0.2.0/33",
                                 "unknown (mailfrom, x.example: Invalid IP4 CIDR length: ip4:192.0.2.0/33)")


def test_default_modifier_is_not_rfc_7208s():
    """RFC 7208 has no default= modifier: an unknown modifier is ignored (strict processing;
    pyspf's lax mode would make this record pass)."""
    result, _ = check(["x.example TXT v=spf1 default=+"], "joe@x.example")
    assert facts(result)[:5] == ("neutral", "x.example", "mailfrom", "", "neutral (mailfrom, x.example)")


def test_macros_in_a_record():
    lines = ["x.example TXT v=spf1 exists:%{i}.%{l}._spf.%{d} -all", "192.0.2.7.joe._spf.x.example A 127.0.0.2"]
    result, queries = check(lines, "joe@x.example")
    assert queries == [("x.example", "TXT"), ("192.0.2.7.joe._spf.x.example", "A")]
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, x.example)")
    result, queries = check(lines, "ann@x.example")
    assert queries == [("x.example", "TXT"), ("192.0.2.7.ann._spf.x.example", "A")]
    assert result.result == "fail"


def test_a_transformer_of_any_length_keeps_that_many_labels():
    """%{d2} keeps the two rightmost labels; a number of 128 or more keeps them all. A record
    whose number had 5000 digits made int() raise in the middle of the session."""
    for number, name in (("2", "x.example"), ("0002", "x.example"), ("9" * 5000, "a.b.x.example"),
                         ("128", "a.b.x.example")):
        lines = ["a.b.x.example TXT v=spf1 exists:%%{d%s}._spf.x.example -all" % number]
        result, queries = check(lines, "joe@a.b.x.example")
        assert queries == [("a.b.x.example", "TXT"), (name + "._spf.x.example", "A")], number[:8]
        assert result.result == "fail"


def test_long_expansions_in_a_record_lose_their_leftmost_labels():
    """RFC 7208 7.3: a domain name longer than 253 characters after expansion is cut from the
    left, a whole label at a time."""
    local = "a" * 60
    lines = ["x.example TXT v=spf1 exists:%{l}.%{l}.%{l}.%{l}.%{l}.x.example -all"]
    result, queries = check(lines, local + "@x.example")
    name = ".".join([local] * 4) + ".x.example"
    assert len(name) == 253
    assert queries == [("x.example", "TXT"), (name, "A")]
    assert result.result == "fail"


def test_explanation_letters_in_a_record_are_a_permerror():
    """%{c} %{r} %{t} belong to exp= texts only (RFC 7208 7.1): in a domain-spec they are a permerror."""
    result, queries = check(["x.example TXT v=spf1 a:%{c}.x.example -all"], "joe@x.example")
    assert queries == [("x.example", "TXT")]
    assert facts(result)[:5] == ("unknown", "x.example", "mailfrom", "unknown macro letter in %{c}",
                                 "unknown (mailfrom, x.example: unknown macro letter in %{c})")


# --- spfrules and spfguess ---

def test_local_rules_inserted_into_a_record():
    lines = ["x.example TXT v=spf1 mx -all"]
    result, queries = check(lines, "joe@x.example", spfrules="ip4:192.0.2.7")
    assert queries == [("x.example", "TXT"), ("x.example", "MX")]
    assert facts(result)[:6] == (
        "pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)",
        "Received-SPF: pass (mx.here: local policy designates 192.0.2.7 as permitted sender) "
        "client-ip=192.0.2.7; envelope-from=joe@x.example;\n")
    result, _ = check(lines, "joe@x.example", spfrules="ip4:10.0.0.0/8")
    assert facts(result)[:5] == ("fail", "x.example", "mailfrom", "", "fail (mailfrom, x.example)")
    # a rule the record has itself: the record's own mechanism decided
    result, _ = check(["x.example TXT v=spf1 ip4:192.0.2.7 -all"], "joe@x.example", spfrules="ip4:192.0.2.7")
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, x.example)")


def test_local_rules_inserted_into_a_redirect_target_too():
    """rc5's spflookup() keeps `main` across redirect=, so the target record of the checked
    domain's redirect gets spfrules as the domain's own would; an include's does not."""
    lines = ["x.example TXT v=spf1 redirect=_spf.y.example", "_spf.y.example TXT v=spf1 mx -all",
             "i.example TXT v=spf1 include:_spf.y.example -all"]
    result, queries = check(lines, "joe@x.example", spfrules="ip4:192.0.2.7")
    assert queries == [("x.example", "TXT"), ("_spf.y.example", "TXT"), ("_spf.y.example", "MX")]
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)")
    result, _ = check(lines, "joe@x.example", spfrules="ip4:10.0.0.0/8")
    assert facts(result)[:5] == ("fail", "x.example", "mailfrom", "", "fail (mailfrom, x.example)")
    result, _ = check(lines, "joe@i.example", spfrules="ip4:10.0.0.0/8 ip4:192.0.2.7")
    assert facts(result)[:5] == ("pass", "i.example", "mailfrom", "", "pass (mailfrom, local policy)")


def test_local_rules_without_a_record_or_guess():
    result, queries = check(["x.example A 198.51.100.1"], "joe@x.example", spfrules="ip4:192.0.2.7")
    assert queries == [("x.example", "TXT")]
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)")
    result, _ = check(["x.example A 198.51.100.1"], "joe@x.example", spfrules="ip4:10.0.0.1")
    assert facts(result)[:5] == ("none", "x.example", "mailfrom", "", "none (mailfrom, x.example)")


def test_spfguess_drops_its_version_terms():
    lines = ["x.example A 192.0.2.1"]
    result, _ = check(lines, "joe@x.example", spfguess="v=spf1 V=SPF1 v=spf1 a/24")
    assert facts(result)[:5] == ("pass", "x.example", "mailfrom", "", "pass (mailfrom, local policy)")


def test_spfguess_errors():
    """A guess that fails to look up is no record at all (none), also with spfrules after it
    (rc5 spf.c: SPF_ERROR while guessing, outside the local rules); a DNS problem in the
    spfrules stays an error; a guess that does not parse is unknown."""
    lines = ["x.example A 198.51.100.1", "t.example SERVFAIL"]
    result, _ = check(lines, "joe@x.example", spfguess="a:t.example")
    assert facts(result)[:6] == (
        "none", "x.example", "mailfrom", "", "none (mailfrom, x.example)",
        "Received-SPF: none (mx.here: domain at x.example does not designate permitted sender hosts) "
        "client-ip=192.0.2.7; envelope-from=joe@x.example;\n")
    result, queries = check(lines, "joe@x.example", spfguess="a:t.example", spfrules="ip4:192.0.2.7")
    assert facts(result)[:5] == ("none", "x.example", "mailfrom", "", "none (mailfrom, x.example)")
    result, queries = check(lines, "joe@x.example", spfguess="ip4:10.0.0.1", spfrules="a:t.example ip4:192.0.2.7")
    assert facts(result)[:5] == ("error", "x.example", "mailfrom", "DNS problem",
                                 "error (mailfrom, local policy: DNS problem)")
    assert queries[-1] == ("t.example", "A")
    result, queries = check(lines, "joe@x.example", spfguess="-ip4:192.0.2.0/24", spfrules="a:t.example")
    assert facts(result)[:5] == ("fail", "x.example", "mailfrom", "", "fail (mailfrom, local policy)")
    assert queries == [("x.example", "TXT")]
    result, _ = check(lines, "joe@x.example", spfguess="v=spf1 a/24 moo")
    assert facts(result)[:5] == ("unknown", "x.example", "mailfrom", "Unknown mechanism found: moo",
                                 "unknown (mailfrom, local policy: Unknown mechanism found: moo)")


# --- explanations ---

def test_no_spfexp_explains_nothing():
    result, _ = check(["x.example TXT v=spf1 -all"], "joe@x.example", spfexp=None)
    assert result.explanation() == ""
    assert result.reject_reply() == "550  (#5.7.1)"


def test_domain_exp_falls_back_to_spfexp():
    # the domain's text is not ASCII once expanded: control/spfexp
    lines = ["x.example TXT v=spf1 -all exp=e.x.example", "e.x.example TXT %{l} may not send"]
    result, _ = check(lines, "caf\u00e9@x.example")
    assert result.explanation() == "See caf%C3%A9%40x.example "
    result, _ = check(lines, "joe@x.example")
    assert result.explanation() == "joe may not send"
    # exp= names a domain without TXT records: control/spfexp
    result, _ = check(["x.example TXT v=spf1 -all exp=e.x.example", "e.x.example A 192.0.2.1"], "joe@x.example")
    assert result.explanation() == "See joe%40x.example "


def test_exp_lookup_is_no_void_lookup():
    """RFC 7208 4.6.4: two void lookups are allowed; fetching the exp= text is not one of them."""
    lines = ["x.example TXT v=spf1 a:nx1.example a:nx2.example ip4:192.0.2.7 exp=nx3.example -all"]
    result, queries = check(lines, "joe@x.example")
    assert queries == [("x.example", "TXT"), ("nx3.example", "TXT"), ("nx1.example", "A"), ("nx2.example", "A")]
    assert result.result == "pass"
    result, _ = check(["x.example TXT v=spf1 a:nx1.example a:nx2.example a:nx3.example -all"], "joe@x.example")
    assert result.result == "unknown" and result.error == "Void lookup limit of 2 exceeded"


# --- the check's limits, and pyspf misbehaving ---

def test_query_has_the_checks_time_limit():
    class Until:
        def until(self, deadline):
            self.deadline = deadline
            return self
    r = Until()
    before = time.monotonic()
    c = spf.attach_query(Context("joe@x.example", "h.example", CLIENT, "mx.here"), r)
    after = time.monotonic()
    assert before + 20 <= r.deadline <= after + 20
    assert c.query.resolver is r
    assert (c.query.querytime, c.query.timeout, c.query.strict) == (20, 20, True)


def broken_query(monkeypatch, check_fn):
    cls = spf._query_class()
    monkeypatch.setattr(spf, "_Query", type("Broken", (cls,), {"check": check_fn}))


def test_pyspf_exception_is_unknown(monkeypatch):
    def check_fn(self, spf=None):
        raise RuntimeError("boom")
    broken_query(monkeypatch, check_fn)
    result, _ = check(["x.example TXT v=spf1 -all"], "joe@x.example")
    assert facts(result) == (
        "unknown", "x.example", "mailfrom", "RuntimeError: boom", "unknown (mailfrom, x.example: RuntimeError: boom)",
        "Received-SPF: unknown (mx.here: RuntimeError: boom) client-ip=192.0.2.7; envelope-from=joe@x.example;\n",
        "See joe%40x.example RuntimeError: boom")


def test_result_pyspf_does_not_name_is_unknown(monkeypatch):
    def check_fn(self, spf=None):
        pyspf.query.check(self, spf=spf)
        return "ambiguous", 0, "?"
    broken_query(monkeypatch, check_fn)
    result, _ = check(["x.example TXT v=spf1 -all"], "joe@x.example")
    assert facts(result)[:5] == ("unknown", "x.example", "mailfrom", "permanent error",
                                 "unknown (mailfrom, x.example: permanent error)")


# --- _lookup: pyspf's DNS through the query's resolver ---

def lookup(resolver, name, qtype):
    token = spf._resolver.set(resolver)
    try:
        return spf._lookup(name, qtype)
    finally:
        spf._resolver.reset(token)


def test_lookup_strips_only_the_final_dot():
    r = StaticResolver(["www.box A 192.0.2.1"])
    assert lookup(r, "WWW.BOX.", "A") == [(("WWW.BOX", "A"), "192.0.2.1")]
    assert r.queries == [("www.box", "A")]


def test_lookup_aaaa_and_ptr():
    r = StaticResolver(["x.example AAAA 2001:db8::1", "x.example A 192.0.2.1"])
    assert lookup(r, "x.example", "AAAA") == [(("x.example", "AAAA"), "2001:db8::1")]
    assert lookup(r, "bogus.example", "PTR") == []          # not an arpa name: not asked
    assert r.queries == [("x.example", "AAAA")]


def test_lookup_soft_failures_are_temperrors():
    class Soft:
        def __init__(self, reason):
            self.reason = reason

        def txt(self, name):
            return Answer(SOFT, (), self.reason)
    for reason, text in (("timeout", "DNS timeout"), ("", "DNS error")):
        with pytest.raises(pyspf.TempError) as e:
            lookup(Soft(reason), "x.example", "TXT")
        assert str(e.value) == text


def test_lookup_txt_keeps_bytes_that_are_not_utf8():
    r = StaticResolver(["x.example TXT v=spf1 \udcff -all"])
    assert lookup(r, "x.example", "TXT") == [(("x.example", "TXT"), [b"v=spf1 \xff -all"])]
