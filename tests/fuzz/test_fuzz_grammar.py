"""Fuzz targets for the address parser (qmailpy.proto.grammar) and what consumes its output.

Any text: no exception and the documented bounds; escaped, quoted and source-routed forms
round-trip; the rcpthosts decision equals an independent statement of qmail's rule; the
parsed addresses survive the qmail-queue envelope codec byte for byte.
"""
import types

from hypothesis import assume, given, strategies as st

from fuzz.profile import fuzz_settings
from qmailpy.ctl.patterns import HostList
from qmailpy.proto.grammar import ADDR_MAX, apply_localiphost, lower_ascii, parse_path, split_address
from qmailpy.proto.qq import Decoder, encode
from qmailpy.policy.relay import rcpthosts_ok

SPECIAL = '<>"\\@:, %!.[]=\t'
soup_text = st.text(st.sampled_from(SPECIAL + "abzAZ019\u00e9\udcff\0"), max_size=60)
any_text = st.one_of(st.text(max_size=300), soup_text,
                     st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")),
                     st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
prefixes = st.sampled_from(["", "FROM:", "TO:", "FROM: ", "to:<", "FROM:<@", "TO:<\"", "TO:@r:"])


@fuzz_settings(500)
@given(prefixes, any_text, st.sampled_from([None, "example.org", ""]))
def test_any_argument_parses_without_exception(prefix, text, localiphost):
    res = parse_path(prefix + text, {"127.0.0.1"}, localiphost)
    if res is None:
        return
    addr, params = res
    assert isinstance(addr, str) and len(addr) <= ADDR_MAX and "\0" not in addr
    for key, value in params.items():
        assert key == "" or (key == key.upper() and "=" not in key and " " not in key)
        assert " " not in value or key == ""
    # the address never holds an unescaped terminator of the angle form, nor text after a NUL
    assert parse_path(prefix + text + "\0<x@y>") == parse_path(prefix + text)


def escape(addr, chars='\\"<>@: \t'):
    return "".join("\\" + c if c in chars else c for c in addr)


address = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=120) | \
    st.text(st.sampled_from(SPECIAL + "ab@.%!\u00e9"), max_size=60)
param_st = st.dictionaries(st.sampled_from(["SIZE", "BODY", "NOTIFY", "ORCPT", "X-Y"]),
                           st.text(st.sampled_from("abc019+-.,;"), min_size=1, max_size=8), max_size=3)


@fuzz_settings(400)
@given(address, param_st, st.sampled_from(["FROM:", "TO:", "from: ", "TO: "]))
def test_escaped_forms_round_trip(addr, params, prefix):
    tail = "".join(" %s=%s" % kv for kv in params.items())
    assert parse_path(prefix + "<" + escape(addr) + ">" + tail) == (addr, params)
    quoted = '"' + escape(addr, '\\"') + '"'
    assert parse_path(prefix + "<" + quoted + ">" + tail) == (addr, params)
    assert parse_path(prefix + "<@a.example,@b.example:" + escape(addr) + ">" + tail) == (addr, params)
    if addr and "<" not in addr:        # the bare form: any '<' switches to the angle form, and
                                        # an empty address would take the next word
        assert parse_path(prefix + escape(addr) + tail) == (addr, params)


@fuzz_settings(200)
@given(st.text(st.sampled_from("ab.\u00e9"), min_size=ADDR_MAX - 5, max_size=ADDR_MAX + 5))
def test_length_limit_whatever_the_form(addr):
    for arg in ("TO:<%s>" % addr, 'TO:<"%s">' % addr, "TO:%s" % addr):
        assert (parse_path(arg) is None) == (len(addr) > ADDR_MAX)


OUR_HOSTS = ["example.org", ".sub.example.org", "EXAMPLE.NET", "[192.0.2.7]"]


def spec_ours(addr, hosts):
    """qmail's rcpthosts(), restated: no '@' passes; else the domain after the last '@',
    ASCII lower-cased, must be listed, or one of its suffixes starting at a '.' must be."""
    if "@" not in addr:
        return True
    domain = lower_ascii(addr.rpartition("@")[2])
    listed = {lower_ascii(h) for h in hosts}
    return domain in listed or any(domain[i:] in listed for i in range(len(domain)) if domain[i] == ".")


domains = st.one_of(st.sampled_from(["example.org", "EXAMPLE.ORG", "x.sub.example.org", "sub.example.org",
                                     ".sub.example.org", "example.org.", "evil.example", "example.net",
                                     "a.example.net", "[192.0.2.7]", "[192.0.2.7].", "example.org\u00e9",
                                     "example.\u212aorg", "", "."]),
                    st.text(st.sampled_from("abexmplorgnt.[]19\u00e9"), max_size=20))
rcpt_args = st.one_of(
    st.builds(lambda l, d, form: form % (l, d), st.text(st.sampled_from('ab%!@".\\'), max_size=8), domains,
              st.sampled_from(["TO:<%s@%s>", 'TO:<"%s"@%s>', "TO:<@x.example:%s@%s>", "TO:%s@%s",
                               "TO:<%s@evil.example@%s>", "TO:<%s@%s> X=1"])),
    st.builds(lambda t: "TO:" + t, soup_text))


@fuzz_settings(500)
@given(rcpt_args)
def test_rcpthosts_decision_matches_qmail_rule(arg):
    """Whatever the client wrote, the address that reaches the envelope is judged by its
    domain after the last '@': never by a percent hack, bang path, quote or route."""
    parsed = parse_path(arg)
    assume(parsed is not None)
    addr = parsed[0]
    cfg = types.SimpleNamespace(rcpthosts=HostList(OUR_HOSTS), morercpthosts_path=None)
    assert rcpthosts_ok(cfg, addr) == spec_ours(addr, OUR_HOSTS)
    assert split_address(addr)[1] == (addr.rpartition("@")[2] if "@" in addr else "")


@fuzz_settings(300)
@given(st.lists(any_text, min_size=1, max_size=5))
def test_parsed_addresses_survive_the_queue_envelope(args):
    addrs = [r[0] for r in map(parse_path, args) if r is not None]
    assume(addrs)
    wire = encode(addrs[0], addrs[1:])
    for cuts in (len(wire), 1, 7):
        d = Decoder()
        done = False
        for i in range(0, len(wire), cuts):
            done = d.feed(wire[i:i + cuts])
        assert done
        raw = [a.encode("utf-8", "surrogateescape") for a in addrs]
        assert (bytes(d.sender), [bytes(r) for r in d.recipients]) == (raw[0], raw[1:])


@fuzz_settings(300)
@given(st.text(max_size=40), st.lists(st.integers(0, 300), min_size=4, max_size=4),
       st.sampled_from(["[%s.%s.%s.%s]", "[%s.%s.%s.%s]x", "[%s.%s.%s]"]))
def test_localiphost_rewrites_only_my_literals(local, quad, form):
    literal = form % tuple(quad[:form.count("%s")])
    addr = local + "@" + literal
    mine = "127.0.0.1"
    out = apply_localiphost(addr, {mine}, "me.example")
    exact = form == "[%s.%s.%s.%s]" and ".".join(str(q % 256) for q in quad) == mine
    assert out == (addr.rpartition("@")[0] + "@me.example" if exact else addr)
