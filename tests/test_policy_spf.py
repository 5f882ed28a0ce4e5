"""SPF (qmailpy.policy.spf): the seven spfbehavior levels against the seven kinds of result,
through in-process sessions asking the test DNS server; macros, local rules, explanations."""
import pytest

from conftest import Home
from dnsserver import dns_server  # noqa: F401  (fixture)
from qmailpy.ctl.reader import Controls
from qmailpy.policy import spf, spfmacro
from qmailpy.policy.engine import Envelope, Policy
from qmailpy.policy.lookup import StaticResolver
from qmailpy.smtpd.config import Peer, SmtpdConfig
from qmailpy.smtpd.driver import Conversation
from test_dialogues import TCP_ENV, FakeServices


@pytest.fixture(autouse=True)
def fresh_query_class(monkeypatch):
    """Each test builds qmailpy.policy.spf's pyspf Query class anew: a class cached by an earlier
    test would hide a change to its methods (make mutate runs each mutant in a fork of a
    process that already built it)."""
    from qmailpy.policy import spf as spf_module
    monkeypatch.setattr(spf_module, "_Query", None)

CLIENT = "192.0.2.7"
ZONES = {
    "pass.example": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    "fail.example": {"TXT": ["v=spf1 -all"]},
    "softfail.example": {"TXT": ["v=spf1 ~all"]},
    "neutral.example": {"TXT": ["v=spf1 ?all"]},
    "none.example": {"A": ["198.51.100.1"], "TXT": ["not an spf record"]},
    "temperror.example": {"TXT": "SERVFAIL"},
    "permerror.example": {"TXT": ["v=spf1 moo -all"]},
}
WORDS = {"pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral", "none": "none",
         "temperror": "error", "permerror": "unknown"}
LOWEST = {"fail": 3, "softfail": 4, "neutral": 5, "none": 6, "unknown": 6}
EXPLANATION = "550 See http://spf.pobox.com/why.html?sender=joe%40{d}&ip=192.0.2.7&receiver=localhost (#5.7.1)"


def session_for(tmp_path, dns, controls=None, **env):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    for name, text in (controls or {}).items():
        home.control(name, text + "\n")
    environ = dict(TCP_ENV, TCPREMOTEIP=CLIENT, DNSTIMEOUT="0.2", **dns.environ())
    environ.update(env)
    ctl = Controls(home.root, environ)
    services = FakeServices(ctl)
    session = Conversation(SmtpdConfig(ctl, environ), services)
    session.start()
    return session, services


def talk(session, *lines):
    return [session.feed(line.encode() + b"\r\n").decode().rstrip("\r\n") for line in lines]


@pytest.mark.parametrize("behavior", range(7))
@pytest.mark.parametrize("kind", list(WORDS))
def test_spfbehavior_levels(tmp_path, dns_server, behavior, kind):
    dns_server.zones = ZONES
    session, services = session_for(tmp_path, dns_server, {"spfbehavior": str(behavior)})
    domain = kind + ".example"
    mail, = talk(session, "HELO c.example", "MAIL FROM:<joe@%s>" % domain)[1:]
    word = WORDS[kind]
    if behavior == 0:
        assert mail == "250 ok" and dns_server.queries == []
        assert session.mail.spf is None
        return
    if word == "error" and behavior >= 2:
        assert mail == "451 SPF lookup failure (#4.3.0)"
        assert session.mail is None
        assert ("tempfail", {"check": "spf", "rule": "control/spfbehavior:1", "spf": "error",
                             "domain": domain, "sender": "<joe@%s>" % domain, "ip": "192.0.2.7"}) in services.logged
        return
    assert mail == "250 ok"
    assert session.mail.spf.result == word
    rcpt, = talk(session, "RCPT TO:<b@example.org>")
    refused = word in LOWEST and behavior >= LOWEST[word]
    assert rcpt == (EXPLANATION.format(d=domain) if refused else "250 ok")
    if not refused:
        talk(session, "DATA")
        talk(session, "Subject: x\r\n\r\nbody\r\n.")
        lines = services.queued[0][1].decode().split("\n")
        received, spf_line = lines[1], lines[2]
        assert received.startswith("  by localhost with SMTP; ")
        head = "Received-SPF: %s (localhost: " % ("unknown moo" if word == "unknown" else word)  # rc5's hdr_ext()
        assert spf_line.startswith(head)
        assert spf_line.endswith(" client-ip=192.0.2.7; envelope-from=joe@%s;" % domain)


def test_spfbehavior_env_overrides_control(tmp_path, dns_server):
    dns_server.zones = ZONES
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "1"}, SPFBEHAVIOR="3")
    assert talk(session, "MAIL FROM:<joe@fail.example>", "RCPT TO:<b@example.org>")[1].startswith("550 ")


def test_no_spf_for_authenticated_or_relayclient(tmp_path, dns_server):
    dns_server.zones = ZONES
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "6"}, RELAYCLIENT="")
    assert talk(session, "MAIL FROM:<joe@fail.example>", "RCPT TO:<b@elsewhere.example>") == ["250 ok", "250 ok"]
    assert dns_server.queries == []
    session, _ = session_for(tmp_path / "2", dns_server, {"spfbehavior": "6"})
    session.session.assume_auth("good@example.org")
    assert talk(session, "MAIL FROM:<joe@fail.example>") == ["250 ok"]
    assert session.mail.spf is None and dns_server.queries == []


def test_localhost_and_own_ip_pass(tmp_path, dns_server):
    dns_server.zones = ZONES
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "6"}, TCPREMOTEIP="127.0.0.1")
    assert talk(session, "MAIL FROM:<joe@fail.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert session.mail.spf.header().startswith(
        "Received-SPF: pass (localhost: local policy designates 127.0.0.1 as permitted sender)")


@pytest.mark.parametrize("client,local", [
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),              # ucspi-tcp-ipv6's tcpserver -6
    ("2001:db8::1:2:3:4:5", "2001:db8:0:1:2:3:4:5"),        # ip6_fmt's spelling of TCPLOCALIP's address
])
def test_localhost_and_own_ip_pass_however_spelled(tmp_path, dns_server, client, local):
    """qmail-spf compares the client's address as bytes (127.0.0.1, ipme): any spelling of
    it is the local policy's pass, never a check of the sender's record."""
    dns_server.zones = ZONES
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "6"}, TCPREMOTEIP=client, TCPLOCALIP=local)
    assert talk(session, "MAIL FROM:<joe@fail.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert session.mail.spf.header().startswith(
        "Received-SPF: pass (localhost: local policy designates %s as permitted sender)" % client)


def test_ipv6_client(tmp_path, dns_server):
    dns_server.zones = {"v6.example": {"TXT": ["v=spf1 ip6:2001:db8::/32 -all"]}}
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "3"}, TCPREMOTEIP="2001:db8::25")
    assert talk(session, "MAIL FROM:<joe@v6.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert session.mail.spf.header() == (      # the address as written (%{c}), not %{i}'s nibbles
        "Received-SPF: pass (localhost: SPF record at v6.example designates 2001:db8::25 as permitted sender) "
        "client-ip=2001:db8::25; envelope-from=joe@v6.example;\n")
    session, _ = session_for(tmp_path / "2", dns_server, {"spfbehavior": "3"}, TCPREMOTEIP="2001:db9::25")
    assert talk(session, "MAIL FROM:<joe@v6.example>", "RCPT TO:<b@example.org>")[1].startswith("550 ")


def test_redirect_include_and_mx(tmp_path, dns_server):
    dns_server.zones = {
        "r.example": {"TXT": ["v=spf1 redirect=_spf.r.example"], "MX": [(10, "mx.r.example")]},
        "_spf.r.example": {"TXT": ["v=spf1 include:inc.example mx:r.example -all"]},
        "inc.example": {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]},
        "mx.r.example": {"A": ["192.0.2.7"]},
    }
    session, _ = session_for(tmp_path, dns_server, {"spfbehavior": "3"})
    assert talk(session, "MAIL FROM:<joe@r.example>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    assert session.mail.spf.result == "pass"


# -- explanations and macros

def ctx(sender="strong-bad@email.example.com", helo="mx.example.org", ip="192.0.2.3", receiver="mx.here",
        resolver=None):
    return spf.attach_query(spfmacro.Context(sender, helo, ip, receiver), resolver or StaticResolver())


@pytest.mark.parametrize("spec,want", [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{h}", "mx.example.org"),
    ("%{c} %{r}", "192.0.2.3 mx.here"),
    ("%{S}", "strong-bad%40email.example.com"),
    ("%{xr} %{xR}", "mx.here mx.here"),
    ("%{xs}", "SPF record at email.example.com"),
    ("100%% %_%-", "100%  %20"),
    ("50% off %{", "50% off %{"),
    ("%{q}|%{x}|%{", "||%{"),                       # spfexp: read as leniently as rc5
])
def test_macro_expansion_rfc_examples_and_qmail_spf_extensions(spec, want):
    c = ctx()
    c.expdomain = "email.example.com"
    assert spfmacro.expand(spec, c, "email.example.com") == want


def test_upper_case_macros_escape_as_rfc_3986():
    c = ctx(sender="~jack&jill=up-a_b3.c/x y@e8.example.com")
    assert spfmacro.expand("%{L}|%{l}", c, "e8.example.com") == "~jack%26jill%3Dup-a_b3.c%2Fx%20y|~jack&jill=up-a_b3.c/x y"


def test_macros_of_the_null_sender_and_ipv6():
    c = ctx("", "mx.example.org", "2001:db8::cb01", "me")
    assert spfmacro.expand("%{l}|%{o}|%{s}|%{v}|%{h}|%{c}", c, "mx.example.org") == (
        "postmaster|mx.example.org|postmaster@mx.example.org|ip6|mx.example.org|2001:db8::cb01")
    assert spfmacro.expand("%{i}", c, "x") == "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.C.B.0.1"
    assert spfmacro.expand("%{ir}.%{v}.arpa", c, "x") == (
        "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6.arpa")


@pytest.mark.parametrize("spec", ["%", "a%b", "%{", "%{z}", "%{d0}", "%{d2x}", "%{dr;}", "%{c}", "a\rb",
                                  "%{xr}", "caf\u00e9"])
def test_domain_specs_are_strict(spec):
    with pytest.raises(spfmacro.MacroError):
        spfmacro.parse(spec, spfmacro.DOMAIN)


def test_explanations_allow_c_r_t_spaces_and_qmail_spf_extensions_but_nothing_else():
    assert [getattr(p, "letter", p) for p in spfmacro.parse("%{c} at %{r}, %{t} %{xr}", spfmacro.EXPLAIN)] == [
        "c", " at ", "r", ", ", "t", " ", "R"]
    for bad in ("tab\there", "%{z}", "100%"):
        with pytest.raises(spfmacro.MacroError):
            spfmacro.parse(bad, spfmacro.EXPLAIN)


def test_long_domain_specs_lose_their_leftmost_labels():
    labels = ".".join(["a" * 60] * 5) + ".example."
    got = spfmacro.render(spfmacro.parse(labels, spfmacro.DOMAIN), None, spfmacro.DOMAIN)
    assert got == ".".join(["a" * 60] * 4) + ".example"          # 251 characters


def test_p_macro_validates_the_ptr_name():
    r = StaticResolver(["3.2.0.192.in-addr.arpa PTR bogus.example", "3.2.0.192.in-addr.arpa PTR mx.example.com",
                        "mx.example.com A 192.0.2.3", "bogus.example A 10.0.0.1"])
    assert spfmacro.expand("%{p}", ctx("a@example.com", "h", "192.0.2.3", "me", r), "example.com") == "mx.example.com"
    assert spfmacro.expand("%{p}", ctx("a@example.com", "h", "192.0.2.4", "me", r), "example.com") == "unknown"
    r = StaticResolver(["4.2.0.192.in-addr.arpa SERVFAIL"])
    assert spfmacro.expand("%{p}", ctx("a@example.com", "h", "192.0.2.4", "me", r), "example.com") == "unknown"


@pytest.mark.parametrize("record,rules,want", [
    ("v=spf1 mx -all", ["a"], "v=spf1 mx a -all"),
    ("v=spf1  mx   -all", [], "v=spf1  mx   -all"),                     # no rules: as published
    ("v=spf1 a:ctrl.example.com\rptr -all", ["a"], "v=spf1 a:ctrl.example.com\rptr a -all"),   # spaces only
    ("v=spf1 ip4:192.0.2.5\nall", ["a"], "v=spf1 ip4:192.0.2.5\nall"),   # no final -all: nothing inserted
])
def test_local_rules_cut_the_record_at_spaces_only(record, rules, want):
    assert spf.with_local(record, rules)[0] == want


@pytest.mark.parametrize("record,want", [
    ("mx -all", "mx LOCAL -all"),
    ("-all", "-all"),                                # a record that is only '-all': no local rules
    ("mx ?include:x.example ?all", "mx LOCAL ?include:x.example ?all"),
    ("mx ?include:x.example ~all", "mx ?include:x.example LOCAL ~all"),
    ("mx -include:x.example ~all", "mx -include:x.example LOCAL ~all"),
    ("a mx", "a mx"),                                # no final fail: rc5 adds nothing
    ("ip4:1.2.3.4 -a:example.net -all", "ip4:1.2.3.4 LOCAL -a:example.net -all"),
])
def test_local_rules_placement_is_qmail_spf_rc5s(record, want):
    assert " ".join(spf.insert_local(record.split(), ["LOCAL"])) == want


def policy_with(resolver, **values):
    class Ctl:
        def value(self, name):
            return values.get(name, {"spfexp": "See %{S}"}.get(name))

        def setting(self, name):
            from qmailpy.ctl import registry
            from qmailpy.ctl.reader import Setting
            return Setting(registry.BY_NAME[name], self.value(name), False, "control/" + name, (1,))
    env = {"TCPREMOTEIP": CLIENT, "TCPLOCALHOST": "mx.here"}
    return Policy(Ctl(), env, Peer(env), resolver=resolver)


def test_domain_exp_wins_and_is_expanded_with_several_lines():
    r = StaticResolver(["x.example TXT v=spf1 -all exp=e.x.example",
                        "e.x.example TXT %{i} is not %{d}'s", "e.x.example TXT see http://x.example/%{l}"])
    p = policy_with(r, spfbehavior=3)
    _, result = p.spf_mail(Envelope("h.example", "joe@x.example"))
    assert p.spf_rcpt(result).reply == "550-192.0.2.7 is not x.example's\r\n550 see http://x.example/joe (#5.7.1)"


def test_spfguess_then_spfrules_for_domains_without_record():
    r = StaticResolver(["norec.example A 198.51.100.1"])
    p = policy_with(r, spfbehavior=3, spfguess="v=spf1 a/24", spfrules="ip4:192.0.2.7")
    _, result = p.spf_mail(Envelope("h.example", "joe@norec.example"))
    assert result.result == "pass"
    assert result.comment() == "mx.here: local policy designates 192.0.2.7 as permitted sender"
    p = policy_with(r, spfbehavior=3, spfguess="v=spf1 a/24")
    _, result = p.spf_mail(Envelope("h.example", "joe@norec.example"))
    assert result.result == "none"                   # nothing in the guess matched
    p = policy_with(r, spfbehavior=3, spfguess="v=spf1 a/24 -all")
    _, result = p.spf_mail(Envelope("h.example", "joe@norec.example"))
    assert result.result == "fail" and p.spf_rcpt(result).reply == "550 See joe%40norec.example (#5.7.1)"


def test_header_comments_for_errors():
    """rc5's texts of an unknown result: hdr_ext() names the term it does not know, hdr_syntax()
    a term that does not parse, spfget() two records."""
    r = StaticResolver(["p.example TXT v=spf1 moo -all", "t.example TXT SERVFAIL",
                        "two.example TXT v=spf1 -all", "two.example TXT v=spf1 +all",
                        "s.example TXT v=spf1 ip4:192.0.2.0/33 -all", "q.example TXT v=spf1 -foo:%{d} -all"])
    p = policy_with(r, spfbehavior=1)
    assert p.spf_mail(Envelope("h", "a@p.example"))[1].header() == (
        "Received-SPF: unknown moo (mx.here: SPF record at p.example uses mechanism not recognized by "
        "this client) client-ip=192.0.2.7; envelope-from=a@p.example;\n")
    assert p.spf_mail(Envelope("h", "a@q.example"))[1].header() == (
        "Received-SPF: unknown -foo:%{d} (mx.here: SPF record at q.example uses mechanism not recognized by "
        "this client) client-ip=192.0.2.7; envelope-from=a@q.example;\n")
    assert p.spf_mail(Envelope("h", "a@s.example"))[1].header() == (
        "Received-SPF: unknown (mx.here: parse error in SPF record at s.example) client-ip=192.0.2.7; "
        "envelope-from=a@s.example;\n")
    assert p.spf_mail(Envelope("h", "a@t.example"))[1].header() == (
        "Received-SPF: error (mx.here: error in processing during lookup of t.example: DNS problem) "
        "client-ip=192.0.2.7; envelope-from=a@t.example;\n")
    assert p.spf_mail(Envelope("h", "a@two.example"))[1].header() == (
        "Received-SPF: unknown (mx.here: Multiple SPF records returned) client-ip=192.0.2.7; "
        "envelope-from=a@two.example;\n")


def test_helo_identity_for_the_null_sender_and_no_helo_at_all():
    r = StaticResolver(["h.example TXT v=spf1 -all"])
    p = policy_with(r, spfbehavior=3)
    _, result = p.spf_mail(Envelope("h.example", ""))
    assert result.identity == "helo" and result.result == "fail"
    assert result.header().endswith(" client-ip=192.0.2.7; helo=h.example;\n")
    _, result = p.spf_mail(Envelope(None, ""))
    assert result.result == "none" and r.queries == [("h.example", "TXT")]


def test_local_rules_report_only_what_the_record_lacks():
    """with_local's second value: the inserted terms the record did not have already (the ones
    a result may then be blamed on)."""
    assert spf.with_local("v=spf1 mx a -all", ["a", "include:spf.trusted.example"]) == (
        "v=spf1 mx a a include:spf.trusted.example -all", ["include:spf.trusted.example"])
    assert spf.with_local("v=spf1 mx -all", []) == ("v=spf1 mx -all", ())
    assert spf.with_local("v=spf1 -all", ["a"]) == ("v=spf1 -all", ())


def test_arpa_names_to_addresses():
    assert spf._arpa_to_ip("4.3.2.1.IN-ADDR.arpa") == "1.2.3.4"
    assert spf._arpa_to_ip("3.2.1.in-addr.arpa") is None
    assert spf._arpa_to_ip("a.b.c.d.e.f") is None                           # six labels, not in-addr.arpa
    nibbles = list("1" + "0" * 30 + "2")
    assert spf._arpa_to_ip(".".join(nibbles + ["ip6", "arpa"])) == "2000::1"
    assert spf._arpa_to_ip(".".join(nibbles + ["x", "example"])) is None   # 34 labels, not ip6.arpa
    assert spf._arpa_to_ip(".".join(["g"] * 32 + ["ip6", "arpa"])) is None
    assert spf._arpa_to_ip(".".join(nibbles[:31] + ["ip6", "arpa"])) is None


def test_lookup_answers_as_pyspf_wants():
    r = StaticResolver(["example.com A 192.0.2.1", "example.com TXT v=spf1 -all",
                        "1.2.0.192.in-addr.arpa PTR mx.example.com"])
    token = spf._resolver.set(r)
    try:
        assert spf._lookup("example.com.", "A") == [(("example.com", "A"), "192.0.2.1")]
        assert spf._lookup("example.com", "TXT") == [(("example.com", "TXT"), [b"v=spf1 -all"])]
        assert spf._lookup("1.2.0.192.in-addr.arpa", "PTR") == [(("1.2.0.192.in-addr.arpa", "PTR"),
                                                                 "mx.example.com")]
        assert spf._lookup("example.com", "SPF") == []
        assert spf._lookup("none.example", "A") == []
    finally:
        spf._resolver.reset(token)


# --- qmailpy.policy.spfresult in-process: the texts of one result, exactly (make mutate) ----

def test_printable_keeps_ascii_and_newlines():
    from qmailpy.policy.spfresult import printable
    assert printable("a\x01b\nc\x7f\td~ \u00e9") == "a?b\nc??d~ ?"


def test_result_texts():
    from qmailpy.policy.spfresult import Explanation, SpfResult
    r = SpfResult("error", "example.com", "mailfrom", ctx(), error="DNS timeout")
    assert r.comment() == "mx.here: error in processing during lookup of example.com: DNS timeout"
    assert r.summary() == "error (mailfrom, example.com: DNS timeout)"
    r = SpfResult("unknown", "example.com", "helo", ctx(), error="bad\nrecord")
    assert r.header() == ("Received-SPF: unknown (mx.here: bad record) client-ip=192.0.2.3; "
                          "helo=mx.example.org;\n")
    r = SpfResult("fail", "example.com", "mailfrom", ctx(sender="caf\u00e9@example.com"), error="E",
                  exp=Explanation(["%{l} %{d}"], "example.com"), spfexp="Go away %{d} %{xe}")
    assert r.explanation() == "Go away example.com E"
    assert r.reject_reply() == "550 Go away example.com E (#5.7.1)"
    r = SpfResult("fail", "example.com", "mailfrom", ctx(sender="caf\u00e9@example.com"),
                  exp=Explanation(["%{l}"], "example.com"))
    assert r.explanation() == ""                    # no control/spfexp given: nothing to fall back on
    r = SpfResult("fail", None, "mailfrom", ctx())
    assert r.summary() == "fail (mailfrom, -)"
    c = ctx()
    c.expdomain = ""
    assert SpfResult("pass", "example.com", "mailfrom", c).summary() == "pass (mailfrom, local policy)"


# --- qmailpy.policy.spfmacro without a check (local policy) and its extensions (make mutate) ---

def test_context_values_without_a_query():
    c = spfmacro.Context("a@b.example", "helo.example", "192.0.2.9", "mx.here")
    got = {letter: c.value(letter, "dom.example") for letter in "dsichprltvRSEz"}
    assert got == {"d": "dom.example", "s": "a@b.example", "i": "192.0.2.9", "c": "192.0.2.9",
                   "h": "helo.example", "p": "unknown", "r": "mx.here", "l": "", "t": "", "v": "",
                   "R": "mx.here", "S": "local policy", "E": "", "z": ""}
    c.expdomain, c.error = "b.example", "oops"
    assert (c.value("S", "x"), c.value("E", "x")) == ("SPF record at b.example", "oops")
    assert spfmacro.expand("%{d} %{xr} %{XS} %{xe}", c, "dom.example") == (
        "dom.example mx.here SPF%20record%20at%20b.example oops")
    assert spfmacro.expand("%{d}.", c, "dom.example", spfmacro.DOMAIN) == "dom.example"
    assert spfmacro.expand("%{d}.", c, "dom.example") == "dom.example."


def test_extension_and_letter_parsing():
    c = spfmacro.Context("a@b.example", "h.example", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{Xr}", c, "d") == "mx.here"
    assert spfmacro.expand("%{xrs}", c, "d") == "mx.here"            # one extension letter, then the rest
    assert spfmacro.expand("%{xre}", c, "d") == "mx.here"
    assert spfmacro.expand("%{xq}", c, "d") == ""                      # no such extension: nothing (LOCAL)
    with pytest.raises(spfmacro.MacroError) as e:
        spfmacro.parse("%{xq}", spfmacro.EXPLAIN)
    assert str(e.value) == "unknown macro letter in %{xq}"
    with pytest.raises(spfmacro.MacroError):
        spfmacro.parse("%{xr}", spfmacro.DOMAIN)                       # extensions are not for domains
    with pytest.raises(spfmacro.MacroError) as e:
        spfmacro.parse("%{\u00e9}", spfmacro.EXPLAIN)
    assert str(e.value) == "unknown macro letter in %{\u00e9}"
    with pytest.raises(spfmacro.MacroError):
        spfmacro.parse("%{}", spfmacro.EXPLAIN)
    with pytest.raises(spfmacro.MacroError):
        spfmacro.parse("%{1}", spfmacro.EXPLAIN)
    assert spfmacro.expand("%{d2}", c, "a.b.c.example") == "c.example"
    assert spfmacro.expand("%{dX}", c, "a.b") == "a.b"


def test_url_escapes_bytes_of_non_ascii():
    c = spfmacro.Context("caf\u00e9 x@b.example", "h", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{S}", c, "d") == "caf%C3%A9%20x%40b.example"
    c = spfmacro.Context("a\udcffb@b.example", "h", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{S}", c, "d") == "a%FFb%40b.example"


def test_query_value_letters():
    class Q:
        s, l, o, i, c, v, h, r, t = "a@b", "a", "b", "192.0.2.1", "192.0.2.1", "in-addr", "h", "", None

        def getp(self):
            return "p.example"
    q = Q()
    assert [spfmacro.query_value(q, x, "dom") for x in "dpslortz"] == ["dom", "p.example", "a@b", "a", "b", "",
                                                                          "", ""]


def test_macro_transformers_and_errors_exactly():
    c = spfmacro.Context("a@b.example", "h.example", "192.0.2.9", "mx.here")
    d = "a.b.c.example"
    assert spfmacro.expand("%{dr}", c, d, spfmacro.EXPLAIN) == "example.c.b.a"
    assert spfmacro.expand("%{dR}", c, d, spfmacro.EXPLAIN) == "example.c.b.a"
    assert spfmacro.expand("%{d2r}", c, d, spfmacro.EXPLAIN) == "b.a"
    assert spfmacro.expand("%{d}", c, d, spfmacro.EXPLAIN) == d
    assert spfmacro.expand("%{d1}", c, d, spfmacro.EXPLAIN) == "example"
    assert spfmacro.expand("%{dr-}", c, "a-b.c", spfmacro.EXPLAIN) == "b.c.a"
    assert spfmacro.expand("%{dX.}", c, "a.b", spfmacro.LOCAL) == "a.b"
    for spec, why in (("%{d0}", "zero parts in %{d0}"), ("%{d!}", "invalid delimiter in %{d!}"),
                      ("a\x7fb", "invalid character '\\x7f'"), ("a b", "invalid character ' '"),
                      ("%x123456789", "invalid macro at '%x123456'"), ("%{dxxxxxxxx", "invalid macro at '%{dxxxxx'")):
        with pytest.raises(spfmacro.MacroError) as e:
            spfmacro.parse(spec, spfmacro.DOMAIN)
        assert str(e.value) == why, spec
    assert spfmacro.expand("a!~b%%", c, d, spfmacro.DOMAIN) == "a!~b%"
    assert spfmacro.expand("a b", c, d, spfmacro.EXPLAIN) == "a b"
    assert spfmacro.expand("x}%{d}", c, d, spfmacro.DOMAIN) == "x}" + d


def test_domain_results_keep_at_most_253_characters():
    c = spfmacro.Context("a@b.example", "h", "192.0.2.9", "mx.here")
    d253 = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61
    assert len(d253) == 253
    assert spfmacro.expand("%{d}", c, d253, spfmacro.DOMAIN) == d253
    assert spfmacro.expand("%{d}", c, "x" + d253, spfmacro.DOMAIN) == "b" * 63 + "." + "c" * 63 + "." + "d" * 61


def test_cutting_a_long_expansion_is_linear():
    """A record of thousands of %{s} macros over a sender of many labels expands to megabytes of
    dotted text; cutting it to 253 characters one label at a time was quadratic (a 3 KB record
    held a MAIL FROM for 10 s of CPU). A 4 MB expansion is cut under a 10 s CPU limit."""
    import subprocess
    import sys
    code = ("import resource; resource.setrlimit(resource.RLIMIT_CPU, (10, 10))\n"
            "from qmailpy.policy import spfmacro\n"
            "c = spfmacro.Context('a@b.example', 'h', '192.0.2.9', 'mx.here')\n"
            "d = 'a.' * 2000000 + 'example'\n"
            "print(spfmacro.expand('%{d}', c, d, spfmacro.DOMAIN) == 'a.' * 123 + 'example')\n")
    import os
    import pathlib
    here = str(pathlib.Path(spfmacro.__file__).resolve().parents[2])      # this checkout's qmailpy
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=here))
    assert (got.returncode, got.stdout, got.stderr) == (0, "True\n", "")


def test_context_defaults():
    c = spfmacro.Context(None, None, "192.0.2.9", "mx.here", query="Q")
    assert (c.sender, c.helo, c.query, c.expdomain, c.error) == ("", "", "Q", None, "")


def test_empty_macro_and_default_split():
    with pytest.raises(spfmacro.MacroError) as e:
        spfmacro.parse("%{}", spfmacro.EXPLAIN)
    assert str(e.value) == "unknown macro letter in %{}"
    c = spfmacro.Context("a@b.example", "h", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{d2}", c, "aXb.c", spfmacro.EXPLAIN) == "aXb.c"


def test_local_reading_letters_and_stray_percent():
    """LOCAL (control/spfrules, spfexp): letters after the digits are skipped, an r or R among
    them reverses; a '%' not starting a macro stays, even with a '}' further on."""
    c = spfmacro.Context("a@b.example", "h", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{dR}", c, "a.b.c") == "c.b.a"
    assert spfmacro.expand("%{d2xr}", c, "a.b.c") == "b.a"
    assert spfmacro.expand("%{d2x}", c, "a.b.c") == "b.c"
    assert spfmacro.expand("%a}b", c, "a.b.c") == "%a}b"


def test_quitasap_closes_the_session_after_an_spf_refusal(tmp_path, dns_server):
    dns_server.zones = ZONES
    session, services = session_for(tmp_path, dns_server, {"spfbehavior": "3", "quitasap": "1"})
    out = session.feed(b"MAIL FROM:<joe@fail.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n")
    assert out == b"250 ok\r\n" + EXPLANATION.format(d="fail.example").encode() + b"\r\n"
    assert session.closed
    assert services.logged[-1] == ("quit", {"reason": "quitasap", "check": "spf"})


def test_a_last_label_longer_than_253_characters_is_kept_alone():
    c = spfmacro.Context("a@b.example", "h", "192.0.2.9", "mx.here")
    assert spfmacro.expand("%{d}", c, "a." + "x" * 300, spfmacro.DOMAIN) == "x" * 300
    assert spfmacro.expand("%{d}", c, "x" * 300, spfmacro.DOMAIN) == "x" * 300
