"""The SMTP session as a pure protocol object: bytes in, actions out, questions answered.

No services, no resolver, no database: each test plays the driver by hand and
checks the actions in order (qmailpy.smtpd.actions), the states of the
transition table, and that a decision asking several questions asks each once.
"""
import pytest

from conftest import Home
from qmailpy.ctl.reader import Controls
from qmailpy.dns.resolver import HARD, OK, Answer
from qmailpy.proto import replies as R
from qmailpy.smtpd import actions as A
from qmailpy.smtpd.config import SmtpdConfig
from qmailpy.smtpd.session import AUTH, DATA, DONE, MAIL, READY, Session
from qmailpy.users.errors import UsersUnavailable
from test_dialogues import TCP_ENV

NOW = 1796534357.0


def session_for(tmp_path, controls=(("popbeforesmtp", "0\n"),), **env):
    home = Home(tmp_path / "qmail")
    home.control("me", "test.example\n")
    home.control("rcpthosts", "example.org\n")
    for name, text in controls:
        home.control(name, text)
    environ = dict(TCP_ENV, **env)
    return Session(SmtpdConfig(Controls(home.root, environ), environ), lambda: NOW, 4242)


def actions(session, data=None, answers=()):
    """Feed `data`; every action up to NEED_DATA or CLOSED, answering questions from `answers`."""
    if data is not None:
        session.receive(data)
    answers, out = list(answers), []
    while True:
        a = session.next_action()
        out.append(a)
        if a is A.NEED_DATA or a is A.CLOSED:
            return out
        if a.question:
            session.answer(answers.pop(0))


def shape(got):
    """Actions as short tuples, for comparing."""
    out = []
    for a in got:
        if isinstance(a, A.Send):
            out.append(("send", a.data.decode()))
        elif isinstance(a, A.Log):
            out.append(("log", a.event))
        elif isinstance(a, A.Lookup):
            out.append(("dns", a.method) + a.args)
        elif isinstance(a, A.AskUsers):
            out.append(("users", a.name))
        elif isinstance(a, A.Sleep):
            out.append(("sleep", a.seconds, a.reason))
        elif isinstance(a, A.Action):
            out.append((type(a).__name__,))
        else:
            out.append(a)
    return out


def test_plain_session_actions_and_states(tmp_path):
    s = session_for(tmp_path)
    assert shape(actions(s)) == [("log", "connect"), ("send", "220 test.example ESMTP\r\n"), A.NEED_DATA]
    assert s.state == READY
    assert shape(actions(s, b"HELO x\r\nMAIL FROM:<a@b.example>\r\n")) == [
        ("send", "250 test.example\r\n250 ok\r\n"), A.NEED_DATA]
    assert s.state == MAIL and s.mail.sender == "a@b.example"
    assert shape(actions(s, b"RSET\r\nQU")) == [("send", "250 flushed\r\n"), A.NEED_DATA]
    assert s.state == READY and s.pending == b"QU"
    assert shape(actions(s, b"IT\r\n")) == [("send", "221 test.example\r\n"), A.CLOSED]
    assert s.state == DONE and s.closed and s.next_action() is A.CLOSED


def test_dns_is_asked_through_actions(tmp_path):
    s = session_for(tmp_path, [("mfdnscheck", "1\n"), ("popbeforesmtp", "0\n")])
    actions(s)
    got = actions(s, b"MAIL FROM:<a@nx.example>\r\nRCPT TO:<b@example.org>\r\n",
                  [Answer(HARD, (), "nxdomain")])
    assert shape(got) == [("dns", "mx", "nx.example"), ("log", "refused"),
                          ("send", "250 ok\r\n553 sorry, your envelope sender must exist (#5.7.1)\r\n"),
                          A.NEED_DATA]
    # the check's answer is kept for the session: the next RCPT asks nothing
    assert shape(actions(s, b"RCPT TO:<c@example.org>\r\n"))[0] == ("log", "refused")


def test_a_question_waits_for_its_answer(tmp_path):
    s = session_for(tmp_path, [("mfdnscheck", "1\n"), ("popbeforesmtp", "0\n")])
    actions(s)
    s.receive(b"MAIL FROM:<a@ok.example>\r\nRCPT TO:<b@example.org>\r\n")
    assert isinstance(s.next_action(), A.Lookup)
    with pytest.raises(RuntimeError):
        s.next_action()
    s.answer(Answer(OK, [(10, "mx.ok.example")]))
    with pytest.raises(RuntimeError):
        s.answer(None)
    assert shape([s.next_action()]) == [("send", "250 ok\r\n250 ok\r\n")]


@pytest.mark.parametrize("env,line", [
    ({}, b"Received: from unknown (HELO c.example) (127.0.0.1)\n"),               # unset: qmail's "unknown"
    ({"TCPREMOTEHOST": ""}, b"Received: from  (HELO c.example) (127.0.0.1)\n"),   # set empty: as given
    ({"TCPREMOTEHOST": "C.example"}, b"Received: from C.example (127.0.0.1)\n"),  # the HELO name: no HELO part
])
def test_received_line_names_tcpremotehost_as_qmail_does(tmp_path, env, line):
    """qmail-smtpd.c: remotehost = env_get("TCPREMOTEHOST"), "unknown" only when it is unset;
    an empty value (a tcprules TCPREMOTEHOST="") stays empty."""
    s = session_for(tmp_path, **env)
    actions(s)
    actions(s, b"HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\n")
    got = actions(s, b"DATA\r\n", [True])
    assert got[1].data.split(b"  by ")[0] == line


def test_users_question_and_its_failure(tmp_path):
    s = session_for(tmp_path, [("popbeforesmtp", "1\n")])
    actions(s)
    got = actions(s, b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@far.example>\r\n", [UsersUnavailable("down")])
    assert shape(got) == [("users", "relay_allowed"), ("log", "tempfail"),
                          ("send", "250 ok\r\n451 temporary failure reading the users database (#4.3.0)\r\n"),
                          A.NEED_DATA]
    got = actions(s, b"RCPT TO:<x@far.example>\r\n", [True])      # asked again: the answer was no answer
    assert shape(got) == [("users", "relay_allowed"), ("send", "250 ok\r\n"), A.NEED_DATA]
    assert shape(actions(s, b"RCPT TO:<y@far.example>\r\n")) == [("send", "250 ok\r\n"), A.NEED_DATA]


def test_message_through_queue_actions(tmp_path):
    s = session_for(tmp_path)
    actions(s)
    actions(s, b"HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\n")
    got = actions(s, b"DATA\r\n", [True])
    assert shape(got)[0] == ("OpenQueue",) and isinstance(got[1], A.QueueWrite)
    assert got[1].data.startswith(b"Received: from unknown (HELO c.example) (127.0.0.1)\n  by localhost")
    assert shape(got[2:]) == [("send", "354 go ahead\r\n"), A.NEED_DATA] and s.state == DATA
    got = actions(s, b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n", [(0, 77)])
    assert [a.data for a in got if isinstance(a, A.QueueWrite)] == [b"Subject: x\n\nhi\n"]
    finish = [a for a in got if isinstance(a, A.QueueFinish)][0]
    assert (finish.sender, finish.recipients) == ("a@b.example", ["x@example.org"])
    assert shape(got)[-3:] == [("log", "accept"), ("send", "250 ok 1796534357 qp 77\r\n221 test.example\r\n"),
                               A.CLOSED]


def test_queue_refusal_and_eof_in_data(tmp_path):
    s = session_for(tmp_path)
    actions(s)
    actions(s, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\n")
    assert shape(actions(s, b"DATA\r\n", [OSError("no fork")])) == [
        ("OpenQueue",), ("send", "451 qqt failure (#4.3.0)\r\n"), A.NEED_DATA]
    assert s.state == MAIL
    actions(s, b"DATA\r\n", [True])
    assert shape(actions(s, b"")) == [("QueueAbort",), ("log", "eof"), A.CLOSED]


def test_tarpit_sleeps_before_the_reply(tmp_path):
    s = session_for(tmp_path, [("tarpitcount", "1\n"), ("tarpitdelay", "3\n"), ("popbeforesmtp", "0\n")])
    actions(s)
    got = actions(s, b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<y@example.org>\r\n")
    assert shape(got) == [("log", "tarpit"), ("sleep", 3, "tarpit"),
                          ("send", "250 ok\r\n250 ok\r\n250 ok\r\n"), A.NEED_DATA]


def test_auth_as_actions(tmp_path):
    s = session_for(tmp_path, [("smtpauth", "1\n"), ("smtpauthplaintext", "1\n"), ("authfaillimit", "0\n")],
                    AUTHFAILDELAY="2")
    actions(s)
    actions(s, b"EHLO c\r\n")
    assert shape(actions(s, b"AUTH LOGIN\r\n")) == [("send", "334 VXNlcm5hbWU6\r\n"), A.NEED_DATA]
    assert s.state == AUTH
    actions(s, b"Ym9i\r\n")
    got = actions(s, b"c2VjcmV0\r\n", [False])
    assert isinstance(got[0], A.Authenticate) and (got[0].user, got[0].secret) == ("bob", "secret")
    assert "secret" not in repr(got[0])
    assert shape(got[1:]) == [("log", "auth-failed"), ("sleep", 2.0, "auth"),
                              ("send", "535 authentication failed (#5.7.1)\r\n"), A.NEED_DATA]
    assert s.state == READY and s.auth_user is None


def test_timeout(tmp_path):
    s = session_for(tmp_path)
    actions(s)
    s.timed_out()
    assert shape(actions(s)) == [("log", "eof"), ("send", "451 timeout (#4.4.2)\r\n"), A.CLOSED]


def test_spf_questions_each_asked_once_per_command(tmp_path):
    """pyspf runs again after each answer; the driver still hears each question once."""
    s = session_for(tmp_path, [("spfbehavior", "3\n"), ("popbeforesmtp", "0\n")], TCPREMOTEIP="192.0.2.7")
    zone = {("txt", "r.example"): ["v=spf1 include:i.example mx -all"],
            ("txt", "i.example"): ["v=spf1 ip4:198.51.100.0/24 -all"],
            ("mx", "r.example"): [(10, "mx.r.example")], ("a", "mx.r.example"): ["192.0.2.7"]}
    actions(s)
    s.receive(b"MAIL FROM:<joe@r.example>\r\n")
    asked = []
    while True:
        a = s.next_action()
        if a is A.NEED_DATA:
            break
        if isinstance(a, A.Lookup):
            asked.append((a.method,) + a.args)
            assert a.deadline is not None            # within SPF's time for the whole check
            values = zone.get((a.method, a.args[0]))
            s.answer(Answer(OK, values) if values else Answer(HARD, (), "nodata"))
    assert len(asked) == len(set(asked)) and ("txt", "r.example") in asked and ("a", "mx.r.example") in asked
    assert s.mail.spf.result == "pass"


def test_auth_limit_as_actions(tmp_path):
    """authfaillimit: the attempt is counted before the password is checked; locked out: 421,
    the password unchecked, the session over."""
    s = session_for(tmp_path, [("smtpauth", "1\n"), ("smtpauthplaintext", "1\n"), ("authfaillimit", "3\n")],
                    AUTHFAILDELAY="0")
    actions(s)
    actions(s, b"EHLO c\r\n")
    got = actions(s, b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", [None])
    assert isinstance(got[0], A.AuthAttempt) and (got[0].op, got[0].limit, got[0].window) == ("begin", 3, 900)
    assert shape(got[1:]) == [("log", "auth-lockout"), ("send", R.AUTH_LOCKOUT + "\r\n"), A.CLOSED]


def test_auth_attempt_that_cannot_be_counted_is_454(tmp_path):
    """authfaillimit: an attempt the driver cannot record (False: a full disk) is not made:
    454, the password unchecked, the session goes on."""
    s = session_for(tmp_path, [("smtpauth", "1\n"), ("smtpauthplaintext", "1\n"), ("authfaillimit", "3\n")],
                    AUTHFAILDELAY="0")
    actions(s)
    actions(s, b"EHLO c\r\n")
    got = actions(s, b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n", [False])
    assert isinstance(got[0], A.AuthAttempt) and got[0].op == "begin"
    assert shape(got[1:]) == [("log", "auth-tempfail"), ("send", R.AUTH_TEMPFAIL + "\r\n"), A.NEED_DATA]
