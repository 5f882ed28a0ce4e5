"""qmailpy.ctl.patterns: the one matching engine behind every list control."""
import copy
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from qmailpy.ctl.patterns import (AddressList, HostList, IPPrefixList, Match, PatternList,
                                  compile_wildmat, wildmat)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def listed(patterns, s):
    m = PatternList(patterns).matches(s)
    return m is not None and not m.exception


# --- the spec's badmailpatterns / badrcptpatterns examples ---------------------

EARTHLINK = ["*@earthlink.net", "!fred@earthlink.net"]


def test_earthlink_blocked_except_fred():
    pl = PatternList(EARTHLINK)
    assert pl.matches("bob@earthlink.net") == Match(1, "*@earthlink.net", False)
    assert pl.matches("fred@earthlink.net") == Match(2, "!fred@earthlink.net", True)
    assert pl.matches("fred@example.com") is None
    assert pl.matches("bob@earthlink.net.example") is None  # whole string only


def test_exception_order_last_matching_line_decides():
    # an exception before any positive line does nothing (INN/wildmat-patch loop)
    assert PatternList(["!fred@earthlink.net"]).matches("fred@earthlink.net") is None
    assert listed(["!fred@earthlink.net", "*@earthlink.net"], "fred@earthlink.net")
    # a positive line after an exception blocks again; it is the deciding line
    pl = PatternList(["*@earthlink.net", "!*@earthlink.net", "fred@*"])
    assert pl.matches("fred@earthlink.net") == Match(3, "fred@*", False)
    assert pl.matches("bob@earthlink.net") == Match(2, "!*@earthlink.net", True)
    # the line reported is the one that changed the verdict, not a later agreeing one
    assert PatternList(["*@a", "b@*"]).matches("b@a").line_number == 1


def test_digits_pattern():
    p = ["[0-9][0-9][0-9][0-9][0-9]@[0-9][0-9][0-9].com"]
    assert listed(p, "12345@678.com")
    for s in ("1234@678.com", "123456@678.com", "12345@67.com", "12345@678xcom",
              "12a45@678.com", "12345@678.com.au", "x12345@678.com"):
        assert not listed(p, s), s


def test_answerme_prefix():
    p = ["answerme@save*"]
    assert listed(p, "answerme@savetrees.com")
    assert listed(p, "answerme@save")  # '*' matches the empty string
    for s in ("answerme@sav.com", "xanswerme@save.com", "Answerme@save.com"):
        assert not listed(p, s), s


def test_percent_hack():
    assert listed(["*%*"], "user%other.example@relay.example")
    assert listed(["*%*"], "%")
    assert not listed(["*%*"], "user@example.com")
    # the H-Sphere page prints "*%*;": taken literally it needs a trailing ';'
    assert not listed(["*%*;"], "user%x@example.com")


def test_ip_literal_signature():
    # "*\[dd.dd.dd.dd\]*, where dd.dd.dd is the IP address in brackets": the
    # brackets are escaped, so they are literal characters, not a set; the
    # admin writes the real address for dd.dd.dd.dd.
    verbatim = [r"*\[dd.dd.dd.dd\]*"]
    assert listed(verbatim, "x@[dd.dd.dd.dd]")
    assert not listed(verbatim, "x@[192.0.2.1]")
    assert not listed(verbatim, "d")
    real = [r"*\[192.0.2.1\]*"]
    assert listed(real, "user@[192.0.2.1]")
    assert listed(real, "user%victim@[192.0.2.1]")
    for s in ("user@192.0.2.1", "user@[192.0.2.10]", "user@[192x0.2.1]"):
        assert not listed(real, s), s
    # without the backslashes it would be a set: any string containing d or '.'
    assert listed(["*[dd.dd.dd.dd]*"], "a.b")
    assert not listed(verbatim, "a.b")


def test_fake_set_and_case_sensitivity():
    p = ["[Ff][Aa][Kk][Ee]"]
    for s in ("FAKE", "fake", "FaKe", "FAKe"):
        assert listed(p, s), s
    for s in ("fakes", "fak", " fake", "FAKE "):
        assert not listed(p, s), s
    assert not listed(["fake"], "FAKE")  # patterns are case-sensitive


# --- wildmat details ------------------------------------------------------------

@pytest.mark.parametrize("pattern,yes,no", [
    ("a?c", ["abc", "a?c", "a*c"], ["ac", "abbc"]),
    ("a*c", ["ac", "abc", "abbbc", "a*c"], ["ab", "bc", "acb"]),
    ("a**c", ["ac", "abc"], ["ab"]),
    ("*", ["", "x", "*"], []),
    ("[a-c]x", ["ax", "bx", "cx"], ["dx", "x", "abx"]),
    ("[!a-c]x", ["dx", "!x"], ["ax", "cx"]),
    ("[^a-c]x", ["dx", "^x"], ["bx"]),
    ("[]]", ["]"], ["[", ""]),
    ("[!]]", ["a"], ["]"]),
    ("[-a]", ["-", "a"], ["b"]),
    ("[a-]", ["-", "a"], ["b"]),
    ("[a-c-e]", ["a", "d", "e"], ["f"]),
    ("[z-a]", ["z"], ["a", "m"]),  # Salz tries each char as a member before its '-'
    ("[\\]", ["\\"], ["]"]),  # a backslash inside a set is a member
    ("\\*", ["*"], ["a", ""]),
    ("\\?", ["?"], ["a"]),
    ("\\[a]", ["[a]"], ["a"]),
    ("\\\\", ["\\"], ["\\\\"]),
    ("\\!x", ["!x"], ["x"]),
    ("a\\b", ["ab"], ["a\\b"]),
])
def test_wildmat_table(pattern, yes, no):
    for s in yes:
        assert listed([pattern], s), (pattern, s)
    for s in no:
        assert not listed([pattern], s), (pattern, s)


def test_malformed_patterns_never_match_and_are_reported():
    pl = PatternList(["[abc", "abc\\", "*", "![x"], linenos=(3, 5, 8, 9))
    assert pl.malformed == (3, 5, 9)
    assert PatternList(["[abc"]).matches("[abc") is None
    assert PatternList(["[abc"]).matches("a") is None
    assert PatternList(["abc\\"]).matches("abc\\") is None
    assert PatternList(["abc\\"]).matches("abc") is None
    assert PatternList(["[]"]).matches("[]") is None
    # a malformed exception excepts nothing
    assert pl.matches("x") == Match(8, "*", False)


def test_many_stars_is_not_exponential():
    assert not listed(["*a*a*a*a*a*a*a*a*b"], "a" * 3000)
    assert listed(["*a*a*a*a*a*a*a*a*b"], "a" * 3000 + "b")


def test_line_numbers_and_lengths():
    pl = PatternList(EARTHLINK, linenos=(4, 9))
    assert pl.matches("fred@earthlink.net") == (9, "!fred@earthlink.net", True)
    assert pl.matches("fred@earthlink.net").line_number == 9
    assert len(pl) == 2
    with pytest.raises(ValueError):
        PatternList(EARTHLINK, linenos=(1,))
    assert PatternList([]).matches("") is None
    m = Match(1, "x")
    assert m.exception is False and pickle.loads(pickle.dumps(m)) == m
    assert type(copy.copy(m)) is Match


# --- literal mode (constmap) ----------------------------------------------------

def test_address_list_exact_and_domain():
    al = AddressList(["joeblow@domain1.com", "@domain2.com", "Mixed@Example.COM"],
                     linenos=(2, 4, 7))
    assert al.matches("joeblow@domain1.com") == Match(2, "joeblow@domain1.com", False)
    assert al.matches("JoeBlow@DOMAIN1.com").line_number == 2
    assert al.matches("anyone@domain2.com") == Match(4, "@domain2.com", False)
    assert al.matches("anyone@DOMAIN2.COM").line_number == 4
    assert al.matches("mixed@example.com").line_number == 7
    assert al.matches("other@domain1.com") is None
    assert al.matches("x@sub.domain2.com") is None  # '@host' is that host only
    assert al.matches("x@domain2.com.evil") is None
    assert al.matches("") is None  # the null sender


def test_address_list_is_literal():
    al = AddressList(["@[192.0.2.1]", "*@example.com", "a?c@x", "!bob@x"])
    assert al.matches("u@[192.0.2.1]").line_number == 1
    assert al.matches("u@[192.0.2.2]") is None
    assert al.matches("joe@example.com") is None
    assert al.matches("*@example.com").line_number == 2
    assert al.matches("abc@x") is None
    assert al.matches("a?c@x").line_number == 3
    assert al.matches("bob@x") is None  # no '!' exceptions in literal lists
    assert al.matches("!bob@x").line_number == 4


def test_address_list_last_at_ascii_folding_duplicates():
    assert AddressList(["@b.example"]).matches("a@x@b.example").line == "@b.example"
    assert AddressList(["@x"]).matches("a@x@b.example") is None
    assert AddressList(["ÄBC@x"]).matches("äbc@x") is None  # qmail folds ASCII only
    assert AddressList(["postmaster"]).matches("PostMaster").line_number == 1
    assert AddressList(["a@b", "A@B"]).matches("a@b").line_number == 1
    assert AddressList(["@b\udcffx"]).matches("a@b\udcffx")  # surrogateescape'd bytes


# --- host suffix (rcpthosts, relaydomains) --------------------------------------

def test_host_list():
    hl = HostList(["example.com", ".example.org", "heaven.af.mil:", ".heaven.af.mil:"])
    assert hl.matches("example.com") == Match(1, "example.com", False)
    assert hl.matches("EXAMPLE.Com").line_number == 1
    assert hl.matches("www.example.com") is None
    assert hl.matches("badexample.com") is None
    assert hl.matches("example.org") is None
    assert hl.matches("www.example.org").line_number == 2
    assert hl.matches("a.b.example.org").line_number == 2
    assert hl.matches("heaven.af.mil") == Match(3, "heaven.af.mil:", False)
    assert hl.matches("gate.heaven.af.mil") == Match(4, ".heaven.af.mil:", False)
    assert hl.matches("xheaven.af.mil") is None
    assert hl.matches("") is None


def test_host_list_exact_before_suffix():
    hl = HostList([".example.com", "www.example.com"])
    assert hl.matches("www.example.com").line_number == 2
    assert hl.matches("ftp.example.com").line_number == 1


# --- IP prefixes (relayclients) -------------------------------------------------

def test_ip_prefix_list_ipv4():
    ipl = IPPrefixList(["192.168.0.1:", "192.168.1.:", "10.0.0.", "172.16.0.9"])
    assert ipl.matches("192.168.0.1") == Match(1, "192.168.0.1:", False)
    assert ipl.matches("192.168.0.10") is None
    assert ipl.matches("192.168.1.77") == Match(2, "192.168.1.:", False)
    assert ipl.matches("192.168.10.1") is None
    assert ipl.matches("10.0.0.200").line_number == 3
    assert ipl.matches("172.16.0.9").line_number == 4
    assert ipl.matches("172.16.0.99") is None
    assert ipl.matches("::ffff:192.168.1.5").line_number == 2  # IPv4-mapped client
    assert ipl.matches("unknown") is None


def test_ip_prefix_list_ipv6():
    ipl = IPPrefixList(["2001:db8::1:", "2001:db8:5:", "2001:db9::", "::1", "fe80::2"])
    # complete address + ':' terminator -> exact, compared in RFC 5952 form
    assert ipl.matches("2001:db8::1").line_number == 1
    assert ipl.matches("2001:DB8:0:0::1").line_number == 1
    assert ipl.matches("2001:db8::10") is None
    # 'x:' that is not an address + terminator -> textual prefix
    assert ipl.matches("2001:db8:5::7").line_number == 2
    assert ipl.matches("2001:db8:50::7") is None
    # an entry ending in '::' is a prefix as written
    assert ipl.matches("2001:db9::42").line_number == 3
    assert ipl.matches("2001:db9:1::42") is None
    assert ipl.matches("::1").line_number == 4
    assert ipl.matches("0:0:0:0:0:0:0:1").line_number == 4
    assert ipl.matches("fe80::2").line_number == 5
    assert IPPrefixList(["::ffff:10.1.2.3"]).matches("10.1.2.3").line_number == 1


# --- properties -----------------------------------------------------------------

SPECIAL = "*?[]\\!^-"
plain = st.text().filter(lambda s: not any(c in "*?[\\" for c in s) and not s.startswith("!"))
tricky_text = st.text(alphabet="ab-]![^\\*?", max_size=10)
tricky_pattern = st.text(alphabet="ab-]![^\\*?", max_size=12)


def escape(s):
    return "".join("\\" + c if c in SPECIAL else c for c in s)


@given(plain, st.text())
def test_plain_pattern_matches_exactly_itself(p, s):
    assert listed([p], p)
    assert listed([p], s) == (s == p)
    assert listed([p], p + "x") is False


@given(st.text(), st.text())
def test_escaped_string_matches_exactly_that_string(s, other):
    pat = escape(s)
    assert compile_wildmat(pat) is not None
    assert PatternList([pat]).matches(s) == Match(1, pat, False)
    for t in (other, s + "a", s[:-1], "!" + s):
        assert listed([pat], t) == (t == s), t


@given(st.text(), st.text(), st.text())
def test_star_escaped_star_is_substring(a, b, c):
    assert listed(["*"], a)
    assert listed(["*" + escape(b) + "*"], a + b + c)
    assert listed(["*" + escape(b) + "*"], a) == (b in a)


@given(st.lists(st.text()), st.text())
def test_matching_never_raises(lines, s):
    for cls in (PatternList, AddressList, HostList, IPPrefixList):
        m = cls(lines).matches(s)
        assert m is None or (isinstance(m, Match) and m.line == lines[m.line_number - 1])


@given(st.lists(tricky_pattern, max_size=4), tricky_text)
def test_matching_never_raises_on_malformed_patterns(lines, s):
    pl = PatternList(lines)
    m = pl.matches(s)
    assert m is None or m.line_number not in pl.malformed


def salz(t, p):
    """A direct port of Rich Salz's DoMatch (INN 1.x wildmat.c), for well-formed
    patterns: True, False or None for ABORT."""
    ti = pi = 0
    while pi < len(p):
        if ti >= len(t) and p[pi] != "*":
            return None
        c = p[pi]
        if c == "\\":
            pi += 1
            if t[ti] != p[pi]:
                return False
        elif c == "*":
            while pi < len(p) and p[pi] == "*":
                pi += 1
            if pi == len(p):
                return True
            while ti < len(t):
                r = salz(t[ti:], p[pi:])
                ti += 1
                if r is not False:
                    return r
            return None
        elif c == "[":
            reverse = p[pi + 1] in "!^"
            pi += reverse
            matched = False
            if p[pi + 1] in "]-":
                pi += 1
                matched = p[pi] == t[ti]
            last = p[pi]
            pi += 1
            while p[pi] != "]":
                if p[pi] == "-" and p[pi + 1] != "]":
                    pi += 1
                    matched = matched or last <= t[ti] <= p[pi]
                else:
                    matched = matched or t[ti] == p[pi]
                last = p[pi]
                pi += 1
            if matched == reverse:
                return False
        elif c != "?" and t[ti] != c:
            return False
        pi += 1
        ti += 1
    return ti == len(t)


@given(tricky_pattern, tricky_text)
def test_agrees_with_salz_wildmat(p, t):
    compiled = compile_wildmat(p)
    if compiled is None:
        assert wildmat(t, compiled) is False
    else:
        assert wildmat(t, compiled) == (salz(t, p) is True), (p, t)


def test_import_is_cheap():
    code = ("import sys; sys.path.insert(0, %r); import qmailpy.ctl.patterns; "
            "print(sorted(m for m in ('re', 'fnmatch', 'ipaddress', 'typing', 'collections') "
            "if m in sys.modules))" % ROOT)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
