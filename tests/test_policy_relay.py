"""The relay decision in-process (qmailpy/policy/relay.py): every branch of qmail-smtpd's relay
control with the exact verdict, as tests/test_smtpd.py and tests/test_dialogues.py see it
through qmail-smtpd. make mutate runs the relay module against these."""
import os

import cdblib
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from conftest import Home
from qmailpy.ctl.reader import Controls
from qmailpy.policy import ACCEPT, REFUSE, TEMPFAIL
from qmailpy.policy import relay
from qmailpy.proto import replies as R
from qmailpy.smtpd.config import SmtpdConfig

ENV = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1", "PROTO": "TCP"}


def config(tmp_path, controls=(), more=None, **env):
    """A qmail-smtpd configuration from a fresh qmail home; `more`: morercpthosts.cdb's domains."""
    home = Home(tmp_path / ("qmail%d" % len(os.listdir(tmp_path))))
    home.control("me", "test.example\n")
    for name, text in controls:
        home.control(name, text)
    if more is not None:
        with open(os.path.join(home.root, "control", "morercpthosts.cdb"), "wb") as f, cdblib.Writer(f) as w:
            for d in more:
                w.put(d.encode(), b"")
    environ = dict(ENV, **env)
    return SmtpdConfig(Controls(home.root, environ), environ)


def fields(verdict):
    return {name: getattr(verdict, name) for name in verdict.__slots__}


def expect(check="relay", status=ACCEPT, reply=None, rule=None, note="", logged=None):
    return {"check": check, "status": status, "reply": reply, "rule": rule, "note": note, "quit": False,
            "fields": {}, "logged": logged}


class Pop:
    """POP-before-SMTP's answer, counting the questions."""
    def __init__(self, answer):
        self.answer, self.asked = answer, 0

    def __call__(self):
        self.asked += 1
        return self.answer


def test_domain_keys_are_rcpthosts_suffixes():
    from qmailpy.ctl.rcpthosts import domain_keys
    assert list(domain_keys("a.b.example")) == ["a.b.example", ".b.example", ".example"]
    assert list(domain_keys("example")) == ["example"]
    assert list(domain_keys("")) == [""]


def test_rcpthosts_ok(tmp_path):
    assert relay.rcpthosts_ok(config(tmp_path), "a@anywhere.example") is True         # no rcpthosts: all
    cfg = config(tmp_path, [("rcpthosts", "example.org\n.sub.example\n")])
    assert relay.rcpthosts_ok(cfg, "postmaster") is True                                # no '@'
    assert relay.rcpthosts_ok(cfg, "a@EXAMPLE.org") is True
    assert relay.rcpthosts_ok(cfg, "a@x.sub.example") is True
    assert relay.rcpthosts_ok(cfg, "a@sub.example") is False
    assert relay.rcpthosts_ok(cfg, "a@other.example") is False
    assert relay.rcpthosts_ok(cfg, "example.org@other.example") is False


def test_morercpthosts_keys(tmp_path):
    """issue 25 survivor 1: a suffix key keeps its dot. `more.example` is ours, its subdomains
    are not; `.deep.example` takes every subdomain of deep.example and not deep.example."""
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], more=["more.example", ".deep.example"])
    assert relay.rcpthosts_ok(cfg, "a@more.example") is True
    assert relay.rcpthosts_ok(cfg, "a@MORE.Example") is True
    assert relay.rcpthosts_ok(cfg, "a@x.more.example") is False
    assert relay.rcpthosts_ok(cfg, "a@x.deep.example") is True
    assert relay.rcpthosts_ok(cfg, "a@y.x.deep.example") is True
    assert relay.rcpthosts_ok(cfg, "a@deep.example") is False
    assert relay.rcpthosts_ok(cfg, "a@example.org") is True
    assert relay.rcpthosts_ok(cfg, "a@example.net") is False


def test_morercpthosts_missing_or_gone(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")])
    assert cfg.morercpthosts_path is None
    assert relay.rcpthosts_ok(cfg, "a@more.example") is False
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], more=["more.example"])
    assert relay.rcpthosts_ok(cfg, "a@more.example") is True
    os.unlink(cfg.morercpthosts_path)                                    # removed between reading controls and RCPT
    assert relay.rcpthosts_ok(cfg, "a@more.example") is False


def test_morercpthosts_non_ascii_key(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], more=["b\u00fccher.example"])
    assert relay.rcpthosts_ok(cfg, "a@b\u00fccher.example") is True


def test_relay_reason_order(tmp_path):
    yes = Pop(True)
    assert relay.relay_reason(config(tmp_path, RELAYCLIENT=""), "", "joe", yes) == "RELAYCLIENT"
    assert yes.asked == 0
    cfg = config(tmp_path)                                  # popbeforesmtp is 1 by default
    assert relay.relay_reason(cfg, "", "joe", yes) == "pop" and yes.asked == 1
    assert relay.relay_reason(cfg, "", "joe", Pop(False)) == "auth"
    assert relay.relay_reason(cfg, "", "", Pop(False)) == "auth"          # AUTH as the empty name
    assert relay.relay_reason(cfg, "", None, Pop(False)) is None
    assert relay.relay_reason(cfg, "", None, Pop(None)) == relay.POP_UNKNOWN == "pop?"
    assert relay.relay_reason(cfg, "", "joe", Pop(None)) == "auth"
    assert relay.relay_reason(cfg, "", None, None) is None
    assert relay.relay_reason(cfg, "", None) is None
    off = Pop(True)
    assert relay.relay_reason(config(tmp_path, [("popbeforesmtp", "0\n")]), "", None, off) is None
    assert off.asked == 0


def test_relay_reason_from_controls(tmp_path):
    cfg = config(tmp_path, [("relayclients", "192.0.2.\n")])
    assert relay.relay_reason(cfg, "", None) == "relayclients"
    assert relay.relay_reason(config(tmp_path, [("relayclients", "198.51.100.\n")]), "", None) is None
    cfg = config(tmp_path, [("relaydomains", "client.example\n")], TCPREMOTEHOST="client.example")
    assert relay.relay_reason(cfg, "", None) == "relaydomains"
    assert relay.relay_reason(config(tmp_path, [("relaydomains", "client.example\n")],
                                     TCPREMOTEHOST="other.example"), "", None) is None
    unknown = config(tmp_path, [("relaydomains", "unknown\n")])       # no TCPREMOTEHOST: "unknown"
    assert unknown.peer.host == "unknown"
    assert relay.relay_reason(unknown, "", None) is None
    cfg = config(tmp_path, [("relaymailfrom", "boss@example.org\n")])
    assert relay.relay_reason(cfg, "boss@example.org", None) == "relaymailfrom"
    assert relay.relay_reason(cfg, "clerk@example.org", None) is None
    assert relay.relay_reason(cfg, "", None) is None


def test_verdict_ours_without_a_reason(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")])
    pop = Pop(True)
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@example.org", "joe", pop)
    assert fields(v) == expect(rule="control/rcpthosts", note="one of our domains")
    assert (reason, local, pop.asked) == (None, True, 0)
    v, reason, local = relay.relay_verdict(config(tmp_path), "a@far.example", "b@any.example", None, None)
    assert fields(v) == expect(note="no rcpthosts: any domain")
    assert (reason, local) == (None, True)


def test_verdict_not_ours_refused(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n"), ("popbeforesmtp", "0\n")])
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@else.example", None, None)
    assert fields(v) == expect(status=REFUSE, reply=R.NOT_RCPTHOSTS, rule="control/rcpthosts",
                               note="not one of our domains",
                               logged=("refused", {"rule": "rcpthosts", "rcpt": "<b@else.example>"}))
    assert (reason, local) == (None, False)
    assert v.reply == "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"


def test_verdict_pop_unknown_is_a_tempfail(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")])
    v, reason, local = relay.relay_verdict(cfg, "a@example.org", "b@else.example", None, Pop(None))
    assert fields(v) == expect(status=TEMPFAIL, reply=R.USERS_TEMPFAIL, rule="popbeforesmtp",
                               note="users database unavailable",
                               logged=("tempfail", {"rule": "popbeforesmtp", "reason": "users database unavailable"}))
    assert (reason, local) == (None, False)


def test_verdict_relaying_client(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")])
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@else.example", "joe", Pop(False))
    assert fields(v) == expect(note="the client may relay (auth)")
    assert (reason, local) == ("auth", False)
    v, reason, local = relay.relay_verdict(cfg, "", "b@else.example", None, Pop(True))      # bounce via pop
    assert fields(v) == expect(note="the client may relay (pop)") and (reason, local) == ("pop", False)


def test_verdict_relayclient_on_our_domain_is_a_reason(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], RELAYCLIENT="")
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@example.org", None, None)
    assert fields(v) == expect(note="the client may relay (RELAYCLIENT)")
    assert (reason, local) == ("RELAYCLIENT", True)


def test_verdict_pop_relay_needs_a_sender_of_ours(tmp_path):
    """H-Sphere: POP-before-SMTP relays for local senders only, smdcheck or not."""
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")])
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@else.example", None, Pop(True))
    assert fields(v) == expect(status=REFUSE, reply=R.INVALID_SENDER, rule="popbeforesmtp",
                               note="relaying (pop) for a sender not of our domains",
                               logged=("refused", {"rule": "popbeforesmtp", "relay": "pop",
                                                   "sender": "<a@far.example>"}))
    assert (reason, local) == ("pop", False)
    v, reason, _ = relay.relay_verdict(cfg, "a@example.org", "b@else.example", None, Pop(True))
    assert fields(v) == expect(note="the client may relay (pop)") and reason == "pop"
    v, _, _ = relay.relay_verdict(cfg, "a@far.example", "b@example.org", None, Pop(True))
    assert v.status == ACCEPT                         # a recipient of ours needs no relaying


def test_verdict_smdcheck(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n"), ("smdcheck", "1\n"), ("popbeforesmtp", "0\n")])
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@else.example", "joe", None)
    assert fields(v) == expect(status=REFUSE, reply=R.INVALID_SENDER, rule="control/smdcheck:1",
                               note="relaying (auth) for a sender not of our domains",
                               logged=("refused", {"rule": "smdcheck", "relay": "auth",
                                                   "sender": "<a@far.example>"}))
    assert (reason, local) == ("auth", False)
    v, reason, _ = relay.relay_verdict(cfg, "a@example.org", "b@else.example", "joe", None)
    assert fields(v) == expect(note="the client may relay (auth)")
    v, reason, _ = relay.relay_verdict(cfg, "", "b@else.example", "joe", None)     # bounces may relay
    assert fields(v) == expect(note="the client may relay (auth)")
    nosmd = config(tmp_path, [("rcpthosts", "example.org\n"), ("popbeforesmtp", "0\n")])
    v, _, _ = relay.relay_verdict(nosmd, "a@far.example", "b@else.example", "joe", None)
    assert fields(v) == expect(note="the client may relay (auth)")


def test_verdict_relaymailfrom_uses_the_sender(tmp_path):
    cfg = config(tmp_path, [("rcpthosts", "example.org\n"), ("relaymailfrom", "boss@example.org\n"),
                            ("popbeforesmtp", "0\n")])
    v, reason, local = relay.relay_verdict(cfg, "boss@example.org", "b@else.example", None, None)
    assert fields(v) == expect(note="the client may relay (relaymailfrom)")
    assert (reason, local) == ("relaymailfrom", False)


def test_morercpthosts_key_from_a_non_utf8_domain(tmp_path):
    """An address byte that was not UTF-8 (a surrogate escape in the session) is looked up as that byte."""
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], more=[])
    with open(cfg.morercpthosts_path, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"b\xfccher.example", b"")
    assert relay.rcpthosts_ok(cfg, "a@b\udcfccher.example") is True
    assert relay.rcpthosts_ok(cfg, "a@b\u00fccher.example") is False


def test_a_broken_morercpthosts_names_itself(tmp_path):
    from qmailpy.ctl.reader import ControlError
    cfg = config(tmp_path, [("rcpthosts", "example.org\n")], more=[])
    with open(cfg.morercpthosts_path, "wb") as f:
        f.write(b"not a cdb")
    with pytest.raises(ControlError) as e:
        relay.rcpthosts_ok(cfg, "a@else.example")
    assert str(e.value).startswith("control/morercpthosts.cdb")


def test_a_client_with_another_reason_relays_while_the_pop_table_cannot_be_read(tmp_path):
    """The users database down is a 451 only for a relay that depends on POP-before-SMTP:
    relayclients, relaydomains and relaymailfrom need no database and still let the client relay."""
    cfg = config(tmp_path, [("rcpthosts", "example.org\n"), ("relayclients", "192.0.2.\n")])
    assert relay.relay_reason(cfg, "", None, Pop(None)) == "relayclients"
    v, reason, local = relay.relay_verdict(cfg, "a@far.example", "b@else.example", None, Pop(None))
    assert fields(v) == expect(note="the client may relay (relayclients)")
    assert (reason, local) == ("relayclients", False)
    cfg = config(tmp_path, [("relaydomains", ".client.example\n")], TCPREMOTEHOST="c.client.example")
    assert relay.relay_reason(cfg, "", None, Pop(None)) == "relaydomains"
    cfg = config(tmp_path, [("relaymailfrom", "boss@example.org\n")])
    assert relay.relay_reason(cfg, "boss@example.org", None, Pop(None)) == "relaymailfrom"
    assert relay.relay_reason(cfg, "clerk@example.org", None, Pop(None)) == relay.POP_UNKNOWN


LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def qmail_rcpthosts(lines, addr):
    """rcpthosts.c's rcpthosts() on bytes: no file, or no '@', is ours; else the domain after the
    last '@', lower-cased, or a suffix of it starting at a '.', is a line."""
    if lines is None or "@" not in addr:
        return True
    host = addr.rpartition("@")[2].encode().translate(LOWER)
    keys = {line.encode().translate(LOWER) for line in lines}
    return any(host[k:] in keys for k in range(len(host)) if k == 0 or host[k:k + 1] == b".")


ADDRESSES = st.one_of(
    st.sampled_from(["", "postmaster"]),
    st.builds(lambda local, domain: local + "@" + domain,
              st.sampled_from(["a", "b%far.example", "x@far.example", "A.B"]),
              st.sampled_from(["example.org", "EXAMPLE.Org", "x.sub.example", "sub.example", "far.example",
                               "example.org.", "", "[127.0.0.1]", "org"])))


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """SmtpdConfig per (rcpthosts, RELAYCLIENT, smdcheck, relayclients match, popbeforesmtp), made once."""
    made = {}

    def get(rcpthosts, relayclient, smd, listed, popon):
        key = (rcpthosts, relayclient, smd, listed, popon)
        if key not in made:
            controls = [("smdcheck", "%d\n" % smd), ("popbeforesmtp", "%d\n" % popon),
                        ("relayclients", "192.0.2.\n" if listed else "198.51.100.\n")]
            if rcpthosts is not None:
                controls.append(("rcpthosts", "".join(line + "\n" for line in rcpthosts)))
            env = {} if relayclient is None else {"RELAYCLIENT": relayclient}
            made[key] = config(tmp_path_factory.mktemp("relay"), controls, **env)
        return made[key]
    return get


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(rcpthosts=st.sampled_from([None, ("example.org", ".sub.example"), ()]), sender=ADDRESSES,
       rcpt=ADDRESSES.filter(bool), relayclient=st.sampled_from([None, "", "@fixme.example"]),
       auth=st.sampled_from([None, "joe@example.org"]), pop=st.sampled_from([None, True, False]),
       smd=st.booleans(), listed=st.booleans(), popon=st.booleans())
def test_relay_verdict_properties(configs, rcpthosts, sender, rcpt, relayclient, auth, pop, smd, listed, popon):
    """Whatever the envelope and the reasons to relay: a recipient is ours exactly as qmail's
    rcpthosts() says; one not ours is accepted only with a reason (RELAYCLIENT, POP-before-SMTP,
    AUTH, relayclients), and when that reason is POP-before-SMTP or smdcheck is on, only for the
    null sender or a sender of ours; 553 rcpthosts only without any reason; 451 only when the POP
    table alone could have given one."""
    cfg = configs(rcpthosts, relayclient, smd, listed, popon)
    v, reason, local = relay.relay_verdict(cfg, sender, rcpt, auth, Pop(pop))
    assert local == qmail_rcpthosts(rcpthosts, rcpt)
    other = relayclient is not None or auth is not None or listed
    may = other or (popon and pop is True)
    if relayclient is not None:
        assert reason == "RELAYCLIENT"
    if v.status == ACCEPT and not local:
        assert may and reason is not None
        if smd or reason == "pop":
            assert sender == "" or qmail_rcpthosts(rcpthosts, sender)
    if v.status == TEMPFAIL:
        assert (popon, pop, local, other) == (True, None, False, False)
    if v.status == REFUSE and v.reply == R.NOT_RCPTHOSTS:
        assert not local and not may and not (popon and pop is None)
