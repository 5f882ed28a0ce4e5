"""The control registry and reader: defaults, qmail's file rules, control/options, findings."""
import os

import pytest
from hypothesis import example, given, strategies as st

from qmailpy.ctl import registry as R
from qmailpy.ctl.options import parse_options
from qmailpy.ctl.parse import LIST_KINDS, Malformed, numbered, parse, parse_seconds, text_lines
from qmailpy.ctl.reader import ControlError, Controls

NUMERIC = [c for c in R.CONTROLS if c.kind in (R.NUMBER, R.BOOL)]
SETTABLE = [c for c in R.CONTROLS if c.kind not in (R.CDB, R.SECRETS, R.FILE)]

# The documented defaults, spelled out again so that a registry edit must be deliberate.
EXPECTED_DEFAULTS = {
    "tcpsessioncount": 40, "concurrencyremote": 100, "concurrencylocal": 50, "databytes": 0,
    "queuelifetime": 604800, "bouncefrom": "MAILER-DAEMON", "maxrecepients": 0, "timeoutsmtpd": 1200,
    "newline": 0, "stripsinglequotes": 0, "lowercase": 0, "quitasap": 0, "tarpitcount": 0,
    "tarpitdelay": 5, "mfdnscheck": 0, "helodnscheck": 0, "splithorizon": 0, "userchk": 0,
    "smdcheck": 0, "authsender": 0, "smtpauth": 0, "popbeforesmtp": 1, "spamglobal": 0,
    "clamglobal": 0, "outgoingip": "", "periplimit": 0, "noathost": 0, "sanetcheck": 0, "badurls": 0,
    "urlscnt": 5, "spamdchildren": 10, "spfbehavior": 0, "spfrules": "", "spfguess": "",
    "doublebounceto": "postmaster", "bouncesubject": "failure notice", "timeoutremote": 1200,
    "timeoutconnect": 60, "bouncemaxbytes": 0, "timeoutqueue": 86400, "srs/srs_max_age": 2592000,
    "rcpthosts": None, "badmailfrom": (), "badmailpatterns": (), "badrcptto": (), "rblhosts": (),
    "morercpthosts.cdb": None, "srs/srs_secrets": (),
}
ME_DEFAULTS = ["defaultdomain", "defaulthost", "plusdomain", "idhost", "envnoathost", "localiphost",
               "smtpgreeting", "bouncehost", "doublebouncehost", "helohost", "srs/srs_domain"]


def test_spec_controls_are_all_registered():
    spec = """tcpsessioncount concurrencyremote concurrencylocal databytes queuelifetime bouncefrom
    maxrecepients timeoutsmtpd newline stripsinglequotes lowercase badmailfrom badmailpatterns
    badmailfrom-unknown badhelo badrcptto badrcptpatterns blackholedsender relayclients relaydomains
    relaymailfrom quitasap tarpitcount tarpitdelay mfdnscheck nomfdnscheck helodnscheck splithorizon
    userchk smdcheck authsender smtpauth popbeforesmtp rblhosts spamglobal clamglobal outgoingip
    periplimit noathost sanetcheck badurls urlscnt spamdchildren spfbehavior spfrules spfguess spfexp
    bouncehost doublebouncehost doublebounceto bouncesubject bouncemessage doublebouncesubject
    doublebouncemessage srs/srs_secrets srs/revers_srs_secrets srs/srs_secrets_age srs/srs_max_age
    me rcpthosts morercpthosts locals virtualdomains defaultdomain defaulthost plusdomain idhost
    helohost smtpgreeting localiphost smtproutes timeoutremote timeoutconnect bouncemaxbytes
    envnoathost percenthack maxrcpt""".split()
    assert [n for n in spec if R.lookup(n) is None] == []


@pytest.mark.parametrize("name", sorted(EXPECTED_DEFAULTS))
def test_default_of_absent_file(home, name):
    s = Controls(home.root).setting(name)
    assert (s.value, s.is_default) == (EXPECTED_DEFAULTS[name], True)


@pytest.mark.parametrize("name", ME_DEFAULTS + ["locals"])
def test_me_defaults_follow_control_me(home, name):
    home.control("me", "mx.example.org\n")
    value = Controls(home.root).value(name)
    assert value == (("mx.example.org",) if name == "locals" else "mx.example.org")


def test_me_default_is_the_host_name(home):
    assert Controls(home.root).value("me") == os.uname().nodename


def test_every_reader_exists_or_says_not_yet():
    """The registry names no reader that does not exist: a program of setup.cfg, a run
    script, or one of qmail's programs still to come (NOT_YET, rendered "(not yet)")."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg"))
    programs = {line.split("=")[0].strip() for line in cfg["options.entry_points"]["console_scripts"].splitlines()
                if "=" in line}
    readers = {r for c in R.CONTROLS for r in c.readers}
    assert readers <= programs | R.RUN_SCRIPTS | R.NOT_YET, readers - programs - R.RUN_SCRIPTS - R.NOT_YET
    assert not R.NOT_YET & programs, "written now: take it out of NOT_YET"
    from qmailpy import docgen
    [idhost] = [c for c in R.CONTROLS if c.name == "idhost"]
    assert docgen.readers_text(idhost) == "qmail-inject, sendmail"


def test_every_control_has_a_default_and_doc():
    for c in R.CONTROLS:
        assert c.doc and c.group in R.GROUPS and c.readers, c.name
        if c.kind in (R.NUMBER, R.BOOL):
            assert isinstance(c.default, int), c.name


MALFORMED_NUMBERS = ["abc", "-5", "12abc", "0x10", "1.5", "\u0661\u0662", "1 000"]


@pytest.mark.parametrize("text", MALFORMED_NUMBERS)
@pytest.mark.parametrize("control", NUMERIC, ids=lambda c: c.name)
def test_number_that_does_not_parse_is_an_error_naming_the_file(home, control, text):
    """Never a guess: not the default, not 0, not the next source (qmail's 'unable to read controls')."""
    home.control(control.name, text + "\n")
    home.control("options", "%s: 7\n" % control.name)
    with pytest.raises(ControlError) as e:
        Controls(home.root).setting(control.name)
    assert (e.value.where, e.value.lineno) == ("control/" + control.name, 1)
    assert str(e.value) == "control/%s:1: not a number: %r" % (control.name, text)


@pytest.mark.parametrize("control", NUMERIC, ids=lambda c: c.name)
def test_number_in_options_that_does_not_parse_is_an_error(home, control):
    home.control("options", "# numbers\n\n%s: lots\n" % control.name)
    with pytest.raises(ControlError) as e:
        Controls(home.root).setting(control.name)
    assert str(e.value) == "control/options:3: %s: not a number: 'lots'" % control.name


@pytest.mark.parametrize("control", [c for c in NUMERIC if c.env], ids=lambda c: c.name)
def test_environment_number_that_does_not_parse_is_an_error(home, control):
    home.control(control.name, "1\n")
    with pytest.raises(ControlError) as e:
        Controls(home.root, {control.env: "abc"}).setting(control.name)
    assert str(e.value) == "$%s: not a number: 'abc'" % control.env
    assert Controls(home.root, {control.env: ""}).value(control.name) == 1       # empty: not set


def test_huge_numbers_are_clamped_to_what_a_program_can_use(home):
    home.control("timeoutsmtpd", "9" * 40 + "\n")
    assert Controls(home.root).value("timeoutsmtpd") == R.NUMBER_MAX


@pytest.mark.parametrize("kind", [R.NUMBER, R.BOOL, R.LINE])
def test_require_reads_every_single_value_of_a_program_at_once(home, kind):
    """require(): a bad number or line a program reads stops it at start, whichever it is."""
    for c in [c for c in R.CONTROLS if c.kind == kind and "qmail-smtpd" in c.readers and not c.lazy]:
        ctl = Controls(home.root)
        os.makedirs(ctl.path(c.name))
        with pytest.raises(ControlError) as e:
            ctl.require("qmail-smtpd")
        assert str(e.value) == "control/%s: unable to read: Is a directory" % c.name
        os.rmdir(ctl.path(c.name))
    Controls(home.root).require("qmail-smtpd")


# Numbers where 0 cannot work: qmailpy read timeoutsmtpd 0 as 1200, filtertimeout 0 as 60 and
# timeoutqueue 0 as 86400 (guesses); timeoutconnect or timeoutremote 0 made qmail-remote's sockets
# non-blocking, so every delivery failed without naming the file; tcpsessioncount 0 (tcpserver -c 0)
# and spamdchildren 0 serve nobody.
AT_LEAST_ONE = ["timeoutsmtpd", "timeoutconnect", "timeoutremote", "timeoutqueue", "filtertimeout",
                "tcpsessioncount", "spamdchildren"]


@pytest.mark.parametrize("name", AT_LEAST_ONE)
def test_number_below_its_minimum_is_an_error_naming_the_file(home, name):
    from qmailpy.ctl import show
    home.control(name, "0\n")
    with pytest.raises(ControlError) as e:
        Controls(home.root).setting(name)
    assert str(e.value) == "control/%s:1: below the minimum 1: '0'" % name
    assert "control/%s:1: below the minimum 1: '0'" % name in [str(f) for f in show.check(Controls(home.root))]
    home.control(name, "")
    home.control("options", "%s: 00\n" % name)
    with pytest.raises(ControlError) as e:
        Controls(home.root).setting(name)
    assert str(e.value) == "control/options:1: %s: below the minimum 1: '00'" % name
    home.control(name, "1\n")
    assert Controls(home.root).value(name) == 1


@pytest.mark.parametrize("text", ["", "\n", "   \n"])
@pytest.mark.parametrize("control", NUMERIC, ids=lambda c: c.name)
def test_empty_number_file_gives_default(home, control, text):
    home.control(control.name, text)
    ctl = Controls(home.root)
    assert ctl.setting(control.name).is_default and ctl.findings == []


@pytest.mark.parametrize("text,value", [("900\n", 500), ("500", 500), ("499 \r\n", 499), ("0\n", 0)])
@pytest.mark.parametrize("name", ["concurrencyremote", "concurrencylocal"])
def test_concurrency_clamped_to_500(home, name, text, value):
    home.control(name, text)
    assert Controls(home.root).value(name) == value


def test_bool_any_nonzero_is_on(home):
    home.control("smtpauth", "7\n")
    assert Controls(home.root).value("smtpauth") == 1


def test_list_rules_trailing_space_cr_blank_and_comments(home):
    home.control("badmailfrom", "# comment\n@spam.example \t\r\n\n  lead@space\nlast@line")
    s = Controls(home.root).setting("badmailfrom")
    assert s.value == ("@spam.example", "  lead@space", "last@line")
    assert s.linenos == (2, 4, 5) and s.origin(1) == "control/badmailfrom:4"


def test_line_uses_first_line_only(home):
    home.control("smtpgreeting", "mail.example.com  \nsecond\n")
    assert Controls(home.root).value("smtpgreeting") == "mail.example.com"


def test_empty_line_file_gives_default_unless_empty_is_a_value(home):
    home.control("smtpgreeting", "\n")
    home.control("doublebounceto", "\n")
    ctl = Controls(home.root)
    assert ctl.setting("smtpgreeting").is_default
    assert ctl.setting("doublebounceto").value == ""


def test_empty_rcpthosts_is_not_absent(home):
    home.control("rcpthosts", "")
    assert Controls(home.root).value("rcpthosts") == ()


def test_alias_maxrcpt(home):
    home.control("maxrcpt", "20\n")
    assert Controls(home.root).value("maxrecepients") == 20


def test_environment_override(home):
    home.control("databytes", "1000\n")
    assert Controls(home.root, {"DATABYTES": "5000"}).value("databytes") == 5000
    assert Controls(home.root, {}).value("databytes") == 1000
    assert Controls(home.root).value("databytes") == 1000


@pytest.mark.parametrize("name", ["databytes", "badmailfrom", "options"])
def test_unreadable_control_is_an_error_naming_the_file(home, name):
    os.makedirs(os.path.join(home.root, "control", name))
    with pytest.raises(ControlError) as e:
        Controls(home.root).value("databytes" if name == "options" else name)
    assert str(e.value) == "control/%s: unable to read: Is a directory" % name


def test_a_control_longer_than_one_read_is_read_whole(home):
    """read_bytes reads with plain os calls, a chunk at a time: a long list comes back whole."""
    from qmailpy.ctl.reader import READ_SIZE, read_bytes
    lines = b"".join(b"host%06d.example\n" % i for i in range(READ_SIZE // 8))
    assert len(lines) > 2 * READ_SIZE
    home.control("rcpthosts", lines.decode())
    assert read_bytes(os.path.join(home.root, "control", "rcpthosts")) == lines
    got = Controls(home.root).value("rcpthosts")
    assert len(got) == READ_SIZE // 8 and got[-1] == "host%06d.example" % (READ_SIZE // 8 - 1)
    assert read_bytes(os.path.join(home.root, "control", "absent")) is None


# -- control/options

SAMPLE = {R.NUMBER: ("7", 7), R.BOOL: ("1", 1), R.LINE: ("mx.example.net", "mx.example.net")}


def sample(control):
    if control.kind in (R.LIST, R.PATTERNS, R.TEXT):
        return ["one@example.com", "@two.example"], ("one@example.com", "@two.example")
    if control.kind == R.NUMBER and control.maximum is not None:
        return [str(control.maximum)], control.maximum
    text, value = SAMPLE[control.kind]
    return [text], value


def options_text(control, lines):
    if len(lines) == 1:
        return "%s: %s\n" % (control.name, lines[0])
    return "%s:\n" % control.name + "".join("  %s\n" % x for x in lines)


@pytest.mark.parametrize("control", SETTABLE, ids=lambda c: c.name)
def test_options_and_file_give_identical_results(tmp_path, control):
    from conftest import Home
    lines, expected = sample(control)
    by_file, by_options = Home(tmp_path / "a"), Home(tmp_path / "b")
    by_file.control(control.name, "".join(x + "\n" for x in lines))
    by_options.control("options", "# all in one\n" + options_text(control, lines))
    a, b = Controls(by_file.root).setting(control.name), Controls(by_options.root).setting(control.name)
    assert a.value == b.value == expected
    assert (a.is_default, b.is_default) == (False, False)


def test_text_in_options_keeps_blank_and_indented_lines(tmp_path):
    """A text parameter (bouncemessage) set in control/options has the value its own file
    gives: a blank line between paragraphs and a line's own indentation stay; only the
    block's indentation goes. qmail-showctl prints such a value so, and its output must
    read back as the same value (docs/qmail-showctl.md)."""
    from conftest import Home
    by_file, by_options = Home(tmp_path / "a"), Home(tmp_path / "b")
    by_file.control("bouncemessage", "Sorry.\n\n  - indented\n# a line, not a comment\nEnd.\n")
    by_options.control("options", "bouncemessage:\n  Sorry.\n\n    - indented\n  # a line, not a comment\n"
                                  "  End.\n\n\ndatabytes: 5\n")
    expected = ("Sorry.", "", "  - indented", "# a line, not a comment", "End.")
    assert Controls(by_file.root).value("bouncemessage") == expected
    assert Controls(by_options.root).value("bouncemessage") == expected
    assert Controls(by_options.root).value("databytes") == 5


def test_file_wins_over_options(home):
    home.control("options", "databytes: 100\n")
    home.control("databytes", "200\n")
    assert Controls(home.root).setting("databytes").source == "control/databytes"
    assert Controls(home.root).value("databytes") == 200




def test_options_findings():
    lines = text_lines(b"bogus line\n  orphan\nnope: 1\ndatabytes: 1\ndatabytes: 2\nsrs/srs_secrets: k\n"
                       b"morercpthosts.cdb: (3 keys)\n")
    found, findings = parse_options(lines)
    assert found == {"databytes": [(5, "2")]}
    assert [str(f) for f in findings] == [
        "control/options:1: not 'name: value': 'bogus line'",
        "control/options:2: indented line belongs to no parameter",
        "control/options:3: unknown parameter 'nope'",
        "control/options:5: databytes given again; this line wins",
        "control/options:6: srs/srs_secrets can only be set in its own file",
    ]


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30), max_size=8))
def test_options_parser_never_raises(lines):
    lines = [line.rstrip() for line in lines]
    found, findings = parse_options(lines)
    names = {c.name for c in R.CONTROLS}
    for name, entries in found.items():
        assert name in names, name                # aliases are stored under the control's name
        for n, text in entries:
            assert 1 <= n <= len(lines) and text in lines[n - 1], (name, n, text)
    for f in findings:
        assert 1 <= f.lineno <= len(lines) and str(f).startswith("control/options:%d: " % f.lineno)
    # every line that is not blank, a comment or indented is a parameter or a finding
    used = {n for entries in found.values() for n, _ in entries} | {f.lineno for f in findings}
    emptied = any(not entries for entries in found.values())    # `name:` sets an empty value, no line kept
    for n, line in enumerate(lines, 1):
        if line and not line.startswith("#") and line[0] not in " \t" and not line.split(":", 1)[-1].strip(
                ).startswith("(Default.)"):
            assert n in used or (emptied and ":" in line and not line.partition(":")[2].strip()), (n, line)


NUMBERS = [c for c in R.CONTROLS if c.kind in (R.NUMBER, R.BOOL)]


@example(b"9" * 5000)          # int() refused the 5000 digits: ValueError, not Malformed (a ControlError)
@given(st.binary(max_size=40) | st.lists(st.sampled_from([b"0", b"7", b"9" * 30, b" ", b"\n", b"\r", b"#", b"-",
                                                         b".", b"\xd9\xa3", b"\xff"]), max_size=10).map(b"".join))
def test_any_file_gives_a_value_or_malformed(data):
    """Every control's parse of any file: a value of its kind, or Malformed (the reader's ControlError)."""
    pairs = numbered(text_lines(data))
    for control in R.CONTROLS:
        try:
            parsed = parse(control, pairs)
        except Malformed:
            assert control.kind not in LIST_KINDS + (R.TEXT, R.LINE)
            continue
        if control in NUMBERS and not parsed.empty:
            top = 1 if control.kind == R.BOOL else (R.NUMBER_MAX if control.maximum is None else control.maximum)
            assert 0 <= parsed.value <= top
    for text in text_lines(data):
        try:
            assert 0 <= parse_seconds(text) <= 1e9
        except Malformed:
            pass


def test_seconds_beyond_any_sleep_are_clamped():
    """A number of seconds no sleep can take (400 digits: float inf) is clamped to 1e9, as a
    large number is clamped to its maximum; it reached AUTHFAILDELAY's sleep as inf and ended
    the session with a bug. DNSTIMEOUT's own clamp (0.05..30) still applies after it."""
    assert parse_seconds("1000000000") == 1e9 and parse_seconds("0.25") == 0.25
    for text in ("1000000001", "9" * 400, "9" * 5000 + ".5"):
        assert parse_seconds(text) == 1e9


def test_a_huge_malformed_value_is_quoted_short(tmp_path):
    """A 300 KB line in a number file was quoted whole: every program that read it wrote a
    300 KB log line (qmail-smtpd's error, qmail-queue's exit-55 line, qmail-send's alert).
    The error quotes 60 characters and the length. (Found by tests/fuzz/test_fuzz_programs.py.)"""
    os.makedirs(tmp_path / "control")
    (tmp_path / "control" / "databytes").write_text("x" * 300000 + "\n")
    (tmp_path / "control" / "timeoutsmtpd").write_text("0" * 5000 + "\n")
    with pytest.raises(ControlError) as e:
        Controls(str(tmp_path), {}).value("databytes")
    assert str(e.value) == "control/databytes:1: not a number: '%s'... (300000 characters)" % ("x" * 60)
    with pytest.raises(ControlError) as e:
        Controls(str(tmp_path), {}).value("timeoutsmtpd")
    assert str(e.value) == "control/timeoutsmtpd:1: below the minimum 1: '%s'... (5000 characters)" % ("0" * 60)
    with pytest.raises(Malformed) as e:
        parse_seconds("1" * 100 + "x")
    assert str(e.value) == "not a number of seconds: '%s'... (101 characters)" % ("1" * 60)
