"""The policy engine in sessions: order of checks, WHITELIST, quitasap, tarpit, where a
refusal is logged from, the null sender, and what a session imports."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, Home
from qmailpy.ctl.reader import Controls
from qmailpy.policy import ACCEPT, REFUSE, SKIP, TEMPFAIL, Verdict
from qmailpy.policy.engine import MAIL_CHECKS, RCPT_CHECKS, Envelope, Policy
from qmailpy.policy.lookup import StaticResolver
from qmailpy.smtpd.config import Peer, SmtpdConfig
from qmailpy.smtpd.driver import Conversation
from test_dialogues import TCP_ENV, FakeServices


def make_session(tmp_path, controls=None, **env):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    for name, text in (controls or {}).items():
        home.control(name, text)
    environ = dict(TCP_ENV, **env)
    ctl = Controls(home.root, environ)
    services = FakeServices(ctl)
    session = Conversation(SmtpdConfig(ctl, environ), services)
    session.start()
    return session, services


def talk(session, *lines):
    return [session.feed(line.encode() + b"\r\n").decode().rstrip("\r\n") for line in lines]


def policy_for(tmp_path, controls, resolver=None, **env):
    home = Home(tmp_path / "p")
    for name, text in controls.items():
        home.control(name, text)
    environ = dict(TCP_ENV, **env)
    return Policy(Controls(home.root, environ), environ, Peer(environ), resolver=resolver or StaticResolver())


ALL = {"badhelo": "bad.helo\n", "badmailfrom": "@bad.example\n", "badmailpatterns": "*@bad.example\n",
       "badmailfrom-unknown": "@bad.example\n", "mfdnscheck": "1\n", "badrcptto": "trap@example.org\n",
       "badrcptpatterns": "trap*\n", "rblhosts": "bl.example\n", "helodnscheck": "1\n"}


def test_the_order_of_the_checks(tmp_path):
    assert [n for n, _ in MAIL_CHECKS] == ["blackholedsender"]
    r = StaticResolver(["bad.example A 192.0.2.1", "bad.helo A 192.0.2.1"])
    p = policy_for(tmp_path, ALL, r)
    trace = []
    first = p.rcpt(Envelope("bad.helo", "x@bad.example", "trap@example.org"), trace)
    assert [v.check for v in trace] == [n for n, _ in RCPT_CHECKS] == [
        "rblhosts", "badhelo", "helodnscheck", "badmailfrom", "badmailpatterns", "badmailfrom-unknown",
        "mfdnscheck", "badrcptto", "badrcptpatterns"]
    assert first is trace[1] and first.check == "badhelo" and first.status == REFUSE
    assert [v.status for v in trace] == [ACCEPT, REFUSE, ACCEPT, REFUSE, REFUSE, REFUSE, ACCEPT, REFUSE, REFUSE]
    # a session stops at the first: nothing after it is asked
    r2 = StaticResolver()
    assert policy_for(tmp_path / "2", ALL, r2).rcpt(Envelope("bad.helo", "x@bad.example", "t@example.org")).check \
        == "badhelo"
    assert r2.queries == [("1.0.0.127.bl.example", "A")]


def test_whitelist_skips_every_antispam_check(tmp_path):
    p = policy_for(tmp_path, ALL, WHITELIST="")
    trace = []
    assert p.rcpt(Envelope("bad.helo", "x@bad.example", "trap@example.org"), trace) is None
    assert {v.status for v in trace} == {SKIP}
    assert p.mail(Envelope("bad.helo", "x@bad.example")) is None
    assert not policy_for(tmp_path / "2", ALL, WHITELIST="0").whitelisted
    assert policy_for(tmp_path / "3", ALL, WHITELIST="yes").whitelisted


def test_quitasap_ends_on_refusals_only(tmp_path):
    controls = {"quitasap": "1\n", "mfdnscheck": "1\n", "badrcptto": "trap@example.org\n"}
    r = StaticResolver(["soft.example MX SERVFAIL"])
    p = policy_for(tmp_path, controls, r)
    v = p.rcpt(Envelope("h", "a@soft.example", "b@example.org"))
    assert v.status == TEMPFAIL and not v.quit
    r.add("ok.example", "MX", "10 mx.ok.example")
    v = p.rcpt(Envelope("h", "a@ok.example", "trap@example.org"))
    assert v.status == REFUSE and v.quit


def test_quitasap_closes_the_session_after_the_reply(tmp_path):
    session, services = make_session(tmp_path, {"quitasap": "1\n", "badmailfrom": "@bad.example\n"})
    out = session.feed(b"MAIL FROM:<a@bad.example>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\n")
    assert out == b"250 ok\r\n553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
    assert session.closed
    assert services.logged[-1] == ("quit", {"reason": "quitasap", "check": "badmailfrom"})


def test_tarpit_waits_through_services_sleep(tmp_path):
    session, services = make_session(tmp_path, {"tarpitcount": "2\n", "tarpitdelay": "3\n"})
    talk(session, "MAIL FROM:<a@example.com>", *["RCPT TO:<b%d@example.org>" % i for i in range(5)])
    assert services.slept == [3, 3, 3]
    talk(session, "RSET", "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>", "RCPT TO:<c@example.org>")
    assert services.slept == [3, 3, 3]
    assert [f for e, f in services.logged if e == "tarpit"] == [
        {"rule": "control/tarpitcount:1", "rcpts": 3, "delay": 3}]


@pytest.mark.parametrize("controls,env,slept", [
    ({"tarpitcount": "1\n", "tarpitdelay": "0\n"}, {}, []),            # delay 0: off
    ({"tarpitcount": "0\n"}, {}, []),                                   # count 0: off
    ({"tarpitcount": "5\n"}, {"TARPITCOUNT": "1", "TARPITDELAY": "2"}, [2, 2]),
    ({"tarpitcount": "1\n"}, {"RELAYCLIENT": ""}, []),                 # relaying clients are not tarpitted
    ({"tarpitcount": "1\n"}, {"WHITELIST": ""}, []),
    ({"tarpitcount": "1\n"}, {}, [5, 5]),                               # tarpitdelay's default
])
def test_tarpit_switches(tmp_path, controls, env, slept):
    session, services = make_session(tmp_path, controls, **env)
    talk(session, "MAIL FROM:<a@example.com>", *["RCPT TO:<b%d@example.org>" % i for i in range(3)])
    assert services.slept == slept


def test_refusals_name_the_line_of_control_options(tmp_path):
    opts = "# anti-spam\nquitasap: 0\nbadmailfrom:\n  @first.example\n  @bad.example\n"
    session, services = make_session(tmp_path, {"options": opts})
    assert talk(session, "MAIL FROM:<x@bad.example>", "RCPT TO:<b@example.org>")[1].startswith("553 ")
    assert services.logged[-1] == ("refused", {"check": "badmailfrom", "rule": "control/options:5",
                                               "sender": "<x@bad.example>", "rcpt": "<b@example.org>",
                                               "ip": "127.0.0.1"})


def test_the_null_sender_is_never_a_bad_sender(tmp_path):
    controls = {"badmailpatterns": "*\n", "blackholedsender": "*\n", "badmailfrom-unknown": "*\n"}
    session, _ = make_session(tmp_path, controls)
    assert talk(session, "MAIL FROM:<>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    session, _ = make_session(tmp_path / "2", controls)
    assert talk(session, "MAIL FROM:<a@b.example>") == [
        "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)"]
    assert session.closed


def test_relaymailfrom_lives_in_the_policy(tmp_path):
    p = policy_for(tmp_path, {"relaymailfrom": "# who\nboss@example.org\n"})
    assert p.relaymailfrom("Boss@Example.org") == "control/relaymailfrom:2"
    assert p.relaymailfrom("clerk@example.org") is None
    assert p.relaymailfrom("") is None


def test_relaymailfrom_does_not_exempt_from_checks(tmp_path):
    session, _ = make_session(tmp_path, {"relaymailfrom": "@partner.example\n", "mfdnscheck": "1\n",
                                         "badmailfrom-unknown": "@partner.example\n"},
                              DNSCACHEIP="127.0.0.1:1", DNSTIMEOUT="0.05")
    # a forged relaymailfrom sender is still checked (the DNS server is unreachable: 451)
    assert talk(session, "MAIL FROM:<a@partner.example>", "RCPT TO:<x@elsewhere.example>")[1].startswith("451 ")


def test_verdict_repr_and_log_fields():
    v = Verdict("badhelo", REFUSE, "550 x", "control/badhelo:2", "listed", fields={"helo": "h"})
    assert v.stops and v.log_fields() == {"check": "badhelo", "rule": "control/badhelo:2", "helo": "h"}
    assert "badhelo" in repr(v)
    assert not Verdict("x", SKIP).stops


IMPORTS = ("import sys; sys.argv=['qmail-smtpd']; sys.path[:0] = [%r, %r]; import os;"
           "from qmailpy.smtpd.main import serve;"
           "r, w = os.pipe(); os.write(w, %r); os.close(w);"
           "serve(r, os.open(os.devnull, os.O_WRONLY), dict(os.environ));"
           "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
           "('click', 'dns', 'spf', 'pymysql', 'subprocess', 'socket', 're', 'typing', 'email'))))")


def run_imports(home, data, **env):
    import dns
    site = os.path.dirname(os.path.dirname(dns.__file__))      # as the bin/ launchers add it
    r = subprocess.run([sys.executable, "-I", "-S", "-c", IMPORTS % (ROOT, site, data)], capture_output=True,
                       env=home.env(**dict(TCP_ENV, **env)), cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def test_list_checks_import_nothing_heavy(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    for name in ("badmailfrom", "badmailpatterns", "badrcptto", "badrcptpatterns", "badhelo", "blackholedsender"):
        home.control(name, "*@nowhere.example\n")
    home.control("tarpitcount", "1\n")
    home.control("tarpitdelay", "0\n")
    data = b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nQUIT\r\n"
    assert run_imports(home, data) == ""


def test_dns_checks_load_dnspython_only_when_asked(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("mfdnscheck", "1\n")
    assert run_imports(home, b"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n") == ""
    got = run_imports(home, b"HELO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n",
                      DNSCACHEIP="127.0.0.1:1", DNSTIMEOUT="0.05")
    assert "dns" in got.split(",") and "spf" not in got.split(",")


def test_malformed_policy_numbers_stop_the_session_at_connect(tmp_path):
    """mfdnscheck is read by the policy on first use; a bad value must not wait for RCPT to be found."""
    from qmailpy.ctl.reader import ControlError
    with pytest.raises(ControlError) as e:
        make_session(tmp_path, {"mfdnscheck": "yes\n"})
    assert str(e.value) == "control/mfdnscheck:1: not a number: 'yes'"


def test_badrcptto_keys_on_the_mailbox_a_recipient_reaches(tmp_path):
    """badrcptto lists bob@example.com: the alias domain, an extension, percenthack refer to him too;
    root@mx.example.net: <root>, root@localhost (locals) and root-x do. qmailpy.addr.keys decides."""
    from qmailpy.policy import lists
    p = policy_for(tmp_path, {"badrcptto": "bob@example.com\nroot@mx.example.net\n",
                              "locals": "mx.example.net\nlocalhost\n", "envnoathost": "mx.example.net\n",
                              "virtualdomains": "example.com:example.com\nalias.example:example.com\n",
                              "percenthack": "relay.example.net\n"})

    class Users:
        boxes = {(b"bob", b"example.com"): b"bob@example.com", (b"bob", b"alias.example"): b"bob@example.com",
                 (b"bobby", b"example.com"): b"bobby@example.com"}

        def find_address(self, name, domain):
            return self.boxes.get((name, domain))
    p.use_mailboxes(Users)
    for rcpt in ("bob@example.com", "Bob@Alias.Example", "bob-foo@alias.example", "bob%alias.example@relay.example.net",
                 "root", "root@LOCALHOST", "root-x@localhost"):
        v = lists.badrcptto(p, Envelope(rcpt=rcpt))
        assert v.status == REFUSE and v.rule.endswith(("badrcptto:1", "badrcptto:2")), rcpt
    v = lists.badrcptto(p, Envelope(rcpt="bob-foo@alias.example"))
    assert v.note == "listed as 'bob@example.com' (delivered as <bob@example.com>)"
    for rcpt in ("bobby@example.com", "bobby-x@alias.example", "bob@far.example", "carol", "root@far.example"):
        assert lists.badrcptto(p, Envelope(rcpt=rcpt)).status == ACCEPT, rcpt


def test_findings_of_control_options_read_after_connect_are_logged_then(tmp_path):
    """control/options is read when a control has no file of its own. Where every control
    qmail-smtpd reads at connect has its file, options is first read for a check (badmailfrom at
    MAIL): its findings are logged after that command, once."""
    files = {name: "0\n" for name in (
        "authfaillimit authfailshared authsender databytes helodnscheck lowercase maxrecepients mfdnscheck "
        "newline noathost periplimit popbeforesmtp quitasap smdcheck smtpauth smtpauthplaintext smtpminrate "
        "spfbehavior splithorizon stripsinglequotes tarpitcount timeoutsession userchk").split()}
    files.update({"authfailwindow": "900\n", "popbeforesmtptimeout": "1800\n", "smtpminratewindow": "60\n",
                  "srs/srs_max_age": "2592000\n", "timeoutsmtpd": "1200\n", "tarpitdelay": "5\n",
                  "envnoathost": "test.example\n", "localiphost": "test.example\n", "smtpgreeting": "test.example\n",
                  "srs/srs_domain": "test.example\n", "spfexp": "x\n", "spfguess": "v=spf1 -all\n",
                  "spfrules": "v=spf1 -all\n", "tlsserverciphers": "DEFAULT\n", "relayclients": "192.0.2.254\n",
                  "relaydomains": "relay.invalid\n", "options": "bogus: 1\n"})
    session, services = make_session(tmp_path, files)
    assert session.cfg.controls.findings == []              # options not read at connect
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<b@example.org>") == ["250 ok", "250 ok"]
    warnings = [f for e, f in services.logged if e == "warning"]
    assert warnings == [{"finding": "control/options:1: unknown parameter 'bogus'"}]


def test_badrcptto_asks_the_users_database_for_the_mailbox_through_the_session(tmp_path):
    """In a session the mailbox of a virtual-domain recipient is the driver's answer to the
    session's find_address question: joe@example.net (an alias domain) is joe@example.org's."""
    from qmailpy.users import admin, open_users
    session, services = make_session(tmp_path, {"badrcptto": "joe@example.org\n",
                                                "rcpthosts": "example.org\nexample.net\n",
                                                "virtualdomains": "example.org:example.org\nexample.net:example.net\n"})
    users = open_users(services.controls.home, services.controls, create=True)
    admin.add_domain(users, "example.org")
    admin.add_user(users, "joe@example.org", "pw")
    admin.add_alias_domain(users, "example.org", "example.net")
    users.close()
    assert talk(session, "MAIL FROM:<a@example.com>", "RCPT TO:<joe@example.net>", "RCPT TO:<ann@example.net>") == [
        "250 ok", "553 sorry, your envelope recipient is in my badrcptto list (#5.7.1)", "250 ok"]


def test_only_the_users_questions_a_session_may_ask_are_answered():
    """The driver calls the users database's method the session names: any other name (close,
    a writer's method) is refused, never called."""
    from qmailpy.smtpd.actions import AskUsers
    from qmailpy.smtpd.answers import answer_users
    called = []

    class Users:
        def close(self):
            called.append("close")
    with pytest.raises(ValueError) as e:
        answer_users(Users, AskUsers("close", ()))
    assert str(e.value) == "no such users question: 'close'" and called == []
