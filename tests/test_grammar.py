"""MAIL/RCPT argument parsing: qmail-smtpd's addrparse() quirks plus ESMTP parameters."""
import pytest
from hypothesis import given, settings, strategies as st

from qmailpy.proto.grammar import (ADDR_MAX, apply_localiphost, lower_ascii, parse_path,
                                   split_address)


@pytest.mark.parametrize("arg,addr", [
    ("FROM:<a@b>", "a@b"),
    ("from:<a@b>", "a@b"),
    ("TO: <x@y>", "x@y"),
    ("TO:<x@y>", "x@y"),
    ("FROM:<>", ""),
    ("FROM: <>", ""),
    ("FROM:<@a,@b:u@c>", "u@c"),                 # source route stripped
    ("TO:<@a:u@c>", "u@c"),
    ("FROM:<@a>", ""),                           # route without ':' swallows everything
    ('TO:<"a@b"@c>', "a@b@c"),                   # quotes dropped
    ('TO:<"a b"@c>', "a b@c"),
    ('TO:<"a>b"@c>', "a>b@c"),                   # quoted terminator
    ("TO:<a\\>b@c>", "a>b@c"),                   # escaped terminator
    ("TO:<a\\\\b@c>", "a\\b@c"),                 # escaped backslash
    ('TO:<a\\"b@c>', 'a"b@c'),
    ("TO:<a@c\\", "a@c"),                        # dangling escape
    ("FROM:<a@b", "a@b"),                        # missing terminator is fine
    ("FROM:a@b", "a@b"),                         # rfc821-less form
    ("FROM: a@b", "a@b"),
    ("FROM:  a@b  SIZE=1", "a@b"),
    ('FROM:"a b"@c', "a b@c"),                   # quoted space in the bare form
    ("FROM:@r:a@b", "a@b"),
    ("FROM:", ""),
    ("foo", ""),                                 # no '<' and no ':' -> empty address
    ("FROM:x <y@z>", "y@z"),                     # first '<' anywhere wins
    ("FROM:<a@b\0c>", "a@b"),                    # C string: ends at NUL
    ("TO:<Postmaster>", "Postmaster"),
])
def test_addrparse(arg, addr):
    assert parse_path(arg)[0] == addr


@pytest.mark.parametrize("arg,params", [
    ("FROM:<a@b>", {}),
    ("FROM:<a@b> SIZE=100", {"SIZE": "100"}),
    ("FROM:<a@b> SIZE=100 BODY=8BITMIME", {"SIZE": "100", "BODY": "8BITMIME"}),
    ("FROM:<a@b>  size=100   body=8bitmime ", {"SIZE": "100", "BODY": "8bitmime"}),
    ("FROM:<> SMTPUTF8", {"SMTPUTF8": ""}),
    ("FROM:<a@b> AUTH=<>", {"AUTH": "<>"}),
    ("TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b", {"NOTIFY": "SUCCESS,FAILURE",
                                                           "ORCPT": "rfc822;a+40b"}),
    ("FROM:a@b SIZE=7", {"SIZE": "7"}),
    ("FROM:<a@b>SIZE=7", {"SIZE": "7"}),          # lenient: no space needed after '>'
    ("FROM:<a@b> X-FOO-1=y", {"X-FOO-1": "y"}),
    # malformed and repeated tokens go under "" (the first SIZE wins)
    ("FROM:<a@b> =x SIZE= -X B_D=1 SIZE=1 SIZE=2 K=a=b K2=\x01 \u00e9=1",
     {"SIZE": "1", "": "=x SIZE= -X B_D=1 SIZE=2 K=a=b K2=\x01 \u00e9=1"}),
    ("FROM:<a@b> SIZE=1\tBODY=7BIT", {"": "SIZE=1\tBODY=7BIT"}),
    ("FROM:<a@b", {}),                            # no terminator, no params
])
def test_params(arg, params):
    assert parse_path(arg)[1] == params


def test_length_limit_counts_the_nul():
    # qmail: `addr.len > 900` where len includes the trailing NUL
    assert ADDR_MAX == 899
    for n, ok in ((898, True), (899, True), (900, False), (901, False)):
        addr = "a" * (n - 4) + "@b.c"
        assert len(addr) == n
        assert (parse_path("TO:<%s>" % addr) is not None) is ok
        assert (parse_path("TO:%s" % addr) is not None) is ok
    assert parse_path('TO:<"%s">' % ("a" * 899)) == ("a" * 899, {})


@pytest.mark.parametrize("addr,out", [
    ("u@[127.0.0.1]", "u@example.com"),
    ("u@[10.0.0.1]", "u@[10.0.0.1]"),             # not mine
    ("u@[127.0.0.257]", "u@example.com"),          # ip_scan keeps each number mod 256
    ("u@[127.000.0.0001]", "u@example.com"),
    ("u@[127.0.0.1]x", "u@[127.0.0.1]x"),          # must end right after ']'
    ("u@[127.0.0]", "u@[127.0.0]"),
    ("u@[127.0.0.1.5]", "u@[127.0.0.1.5]"),
    ("u@[127..0.1]", "u@[127..0.1]"),
    ("u@[127.0.0.-1]", "u@[127.0.0.-1]"),
    ("u@[\u0661.0.0.1]", "u@[\u0661.0.0.1]"),      # only ASCII digits
    ("[127.0.0.1]", "[127.0.0.1]"),                # no '@'
    ("a@[127.0.0.1]@[127.0.0.1]", "a@[127.0.0.1]@example.com"),   # last '@'
    ("u@[127.0.0.%s1]" % ("0" * 5000), "u@example.com"),   # no int() digit limit
])
def test_localiphost(addr, out):
    assert apply_localiphost(addr, {"127.0.0.1"}, "example.com") == out


def test_localiphost_disabled_and_empty():
    assert apply_localiphost("u@[127.0.0.1]", {"127.0.0.1"}, None) == "u@[127.0.0.1]"
    assert apply_localiphost("u@[127.0.0.1]", {"127.0.0.1"}, "") == "u@"


def test_localiphost_before_length_check():
    long_ip = "a" * 890 + "@[127.0.0.1]"         # 902 chars, rewritten to 902-11+7 = 898
    assert parse_path("TO:<%s>" % long_ip) is None
    assert parse_path("TO:<%s>" % long_ip, {"127.0.0.1"}, "example") == (
        "a" * 890 + "@example", {})
    short = "a" * 880 + "@[127.0.0.1]"          # 892 chars, rewritten to 900 -> too long
    assert parse_path("TO:<%s>" % short) is not None
    assert parse_path("TO:<%s>" % short, ["127.0.0.1"], "x" * 19) is None


@pytest.mark.parametrize("addr,parts", [
    ("a@b", ("a", "b")),
    ("a@b@c", ("a@b", "c")),
    ("postmaster", ("postmaster", "")),
    ("", ("", "")),
    ("a@", ("a", "")),
    ("@b", ("", "b")),
])
def test_split_address(addr, parts):
    assert split_address(addr) == parts


def test_lower_ascii():
    assert lower_ascii("Foo@EXAMPLE.Com") == "foo@example.com"
    assert lower_ascii("\u00c0B\u0130K\u212a") == "\u00c0b\u0130k\u212a"   # only A-Z
    assert lower_ascii(b"AbC\xc0") == b"abc\xc0"
    assert lower_ascii(bytearray(b"X")) == b"x"


def assert_parsed_or_refused(res):
    """parse_path's answer: None (a syntax error), or an address qmail can queue and its params."""
    if res is not None:
        addr, params = res
        assert isinstance(addr, str) and len(addr) <= ADDR_MAX
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
        assert "\0" not in addr


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_never_raises(arg):
    assert_parsed_or_refused(parse_path(arg))
    assert_parsed_or_refused(parse_path(arg, {"127.0.0.1"}, "h"))


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from('<>"\\@:, ab=.\t'), max_size=30), st.sampled_from(["FROM", "TO"]))
def test_never_raises_on_syntax_soup(arg, verb):
    for a in (arg, verb + ":" + arg, verb + ":<" + arg):
        plain = parse_path(a)
        assert_parsed_or_refused(plain)
        assert_parsed_or_refused(parse_path(a, ("127.0.0.1",), "x"))
        if plain is not None and "@" not in a and "[" not in a:
            assert "@" not in plain[0]           # no host comes from nowhere


SAFE = "abcxyzABCXYZ0189.-_+=!#$%&'*/?^`{|}~"
safe_addr = st.builds(lambda l, d: l + ("@" + d if d else ""),
                      st.text(st.sampled_from(SAFE), min_size=1, max_size=40),
                      st.text(st.sampled_from(SAFE), max_size=40))


@settings(max_examples=300, deadline=None)
@given(safe_addr, st.sampled_from(["FROM:", "TO:", "FROM: ", "to:"]),
       st.dictionaries(st.sampled_from(["SIZE", "BODY", "RET", "ENVID"]),
                       st.text(st.sampled_from("abc019+-."), min_size=1, max_size=8)))
def test_plain_address_round_trips(addr, prefix, params):
    tail = "".join(" %s=%s" % kv for kv in params.items())
    assert parse_path("%s<%s>%s" % (prefix, addr, tail)) == (addr, params)
    assert parse_path("%s%s%s" % (prefix, addr, tail)) == (addr, params)
    assert split_address(addr)[1] == (addr.rpartition("@")[2] if "@" in addr else "")


def test_ipv6_literals_of_this_host_become_localiphost():
    from qmailpy.proto.grammar import apply_localiphost
    mine = {"127.0.0.1", "::1", "2001:db8::25"}
    assert apply_localiphost("pm@[IPv6:::1]", mine, "me.example") == "pm@me.example"
    assert apply_localiphost("pm@[IPV6:2001:DB8:0:0:0:0:0:25]", mine, "me.example") == "pm@me.example"
    assert apply_localiphost("pm@[IPv6:::ffff:127.0.0.1]", mine, "me.example") == "pm@me.example"
    assert apply_localiphost("pm@[IPv6:2001:db8::26]", mine, "me.example") == "pm@[IPv6:2001:db8::26]"
    assert apply_localiphost("pm@[IPv6:zz]", mine, "me.example") == "pm@[IPv6:zz]"


# -- addrparse()'s first matches and edges, one per step (each a wrong comparison away)

@pytest.mark.parametrize("arg,want", [
    ("<a@b>", ("a@b", {})),                                  # '<' first: "MAIL <a@b>" is a@b
    ("TO:x:y@example.org", ("x:y@example.org", {})),         # without '<': after the first ':'
    ("FROM:<@a.example:u:v@c.example>", ("u:v@c.example", {})),   # a route ends at its first ':'
    ("FROM:<a@b> SIZE=1\0BODY=8BITMIME\0", ("a@b", {"SIZE": "1"})),  # the first NUL ends it all
    ("\0FROM:<a@b>", ("", {})),
    ('FROM:<"a b"@c', ("a b@c", {})),                        # quoted, no '>': no parameters
    ('FROM:<"a b"@c> SIZE=10', ("a b@c", {"SIZE": "10"})),
    ('FROM:<"a"@c>SIZE=10', ("a@c", {"SIZE": "10"})),         # right after '>', as unquoted
    ("FROM:<a@c>SIZE=10", ("a@c", {"SIZE": "10"})),
])
def test_addrparse_first_matches_and_edges(arg, want):
    assert parse_path(arg) == want


@pytest.mark.parametrize("addr,want", [
    ("u@[1.2.3.4]", "u@lh"),                 # the shortest literal (9 characters)
    ("@[1.2.3.4]", "@lh"),                   # an '@' at 0 is still the last '@'
    ("u@[1.2.3.45", "u@[1.2.3.45"),          # ip_scanbracket() wants ']' right after the IP
    ("u@11.2.3.4]", "u@11.2.3.4]"),          # and '[' before it
])
def test_localiphost_bracket_edges(addr, want):
    assert apply_localiphost(addr, ["1.2.3.4"], "lh") == want
