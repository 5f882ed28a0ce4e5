"""qmailpy.srs.rewrite over control/srs/, and qmail-local's SRS hook."""
import os

import pytest

from qmailpy.ctl.reader import ControlError, Controls
from qmailpy.srs import codec as C
from qmailpy.srs import rewrite as W

DAY = 86400
NOW = 20500 * DAY + 3600


@pytest.fixture
def srs_home(home):
    home.control("me", "mx.host.example\n")
    home.control("srs/srs_domain", "srs.host.example\n")
    home.control("srs/srs_secrets", "k1\nk2\nk3\n")
    home.control("srs/revers_srs_secrets", "k1\nk2\nk3\n")
    home.control("rcpthosts", "hosted.example\n.sub.example\n")
    home.control("locals", "localhost\nmx.host.example\n")
    home.control("virtualdomains", "virt.example:virt\nnot.virt.example:\n.vdom.example:vd\n")
    return home


def ctl(home):
    return Controls(home.root)


@pytest.mark.parametrize("sender", ["", "#@[]", "nobody", "list-owner-@host.example-@[]", "a@",
                                    "joe@hosted.example", "joe@HOSTED.example", "joe@a.sub.example",
                                    "joe@localhost", "joe@virt.example", "joe@x.vdom.example",
                                    "joe@srs.host.example", "a@b@c.example"])
def test_forward_leaves_alone(srs_home, sender):
    assert W.forward(sender, ctl(srs_home), NOW) == sender


def test_forward_remote_sender_becomes_srs0(srs_home):
    got = W.forward("Joe@Remote.example", ctl(srs_home), NOW)
    assert got == C.forward("Joe@Remote.example", "srs.host.example", ["k1"], NOW)
    assert got.startswith("SRS0=") and got.endswith("=Remote.example=Joe@srs.host.example")
    # 'not.virt.example:' (empty prefix) is an exception, so it is not ours
    assert W.forward("a@not.virt.example", ctl(srs_home), NOW).startswith("SRS0=")


def test_forward_srs_senders_become_srs1_even_from_local_domains(srs_home):
    theirs = "SRS0=abcd=AB=orig.example=joe@other-forwarder.example"
    got = W.forward(theirs, ctl(srs_home), NOW)
    assert got == "SRS1=%s=other-forwarder.example==abcd=AB=orig.example=joe@srs.host.example" % \
        C.make_hash("k1", ("other-forwarder.example", "=abcd=AB=orig.example=joe"))
    local_srs = "SRS0=abcd=AB=orig.example=joe@hosted.example"
    assert W.forward(local_srs, ctl(srs_home), NOW).startswith("SRS1=")
    assert W.reverse(got, ctl(srs_home), NOW) == (W.OK, theirs)


def test_srs_domain_defaults_to_me(srs_home):
    os.unlink(os.path.join(srs_home.root, "control/srs/srs_domain"))
    assert W.forward("a@remote.example", ctl(srs_home), NOW).endswith("@mx.host.example")


def test_no_secrets_no_srs(srs_home):
    srs_home.control("srs/srs_secrets", "")
    srs_home.control("srs/revers_srs_secrets", "\n# none yet\n")
    c = ctl(srs_home)
    assert W.forward("a@remote.example", c, NOW) == "a@remote.example"
    good = C.forward("a@remote.example", "srs.host.example", ["k1"], NOW)
    assert W.reverse(good, c, NOW) == (W.NOT_SRS, None)
    assert c.findings == []


def test_reverse_statuses(srs_home):
    c = ctl(srs_home)
    made = C.forward("joe@remote.example", "srs.host.example", ["k1"], NOW)
    assert W.reverse(made, c, NOW) == (W.OK, "joe@remote.example")
    assert W.reverse(made.upper(), c, NOW) == (W.OK, "JOE@REMOTE.EXAMPLE")
    forged = made.replace(made.split("=")[1], "Zzzz", 1)
    r = W.reverse(forged, c, NOW)
    assert r == (W.BAD_HASH, None) and r.error == C.HASH_INVALID and r.status == W.BAD_HASH
    assert W.reverse("SRS0=abcd@srs.host.example", c, NOW).status == W.BAD_HASH
    assert W.reverse("joe@srs.host.example", c, NOW) == (W.NOT_SRS, None)
    # srs_max_age default 2592000 s = 30 days
    assert W.reverse(made, c, NOW + 30 * DAY) == (W.OK, "joe@remote.example")
    r = W.reverse(made, c, NOW + 31 * DAY)
    assert r == (W.EXPIRED, None) and r.error == C.TIMESTAMP_OUT_OF_DATE
    # a forged address never reads as merely expired
    assert W.reverse(forged, c, NOW + 31 * DAY).status == W.BAD_HASH


def test_reverse_max_age_in_seconds(srs_home):
    srs_home.control("srs/srs_max_age", "172800\n")           # two days
    made = C.forward("joe@remote.example", "srs.host.example", ["k1"], NOW)
    assert W.reverse(made, ctl(srs_home), NOW + 2 * DAY).status == W.OK
    assert W.reverse(made, ctl(srs_home), NOW + 3 * DAY).status == W.EXPIRED
    srs_home.control("srs/srs_max_age", "90000\n")            # 25 hours: rounded up to 2 days
    assert W.reverse(made, ctl(srs_home), NOW + 2 * DAY).status == W.OK


def test_reverse_rotation_three_keys(srs_home):
    by_oldest = C.forward("old@remote.example", "srs.host.example", ["k3"], NOW - 20 * DAY)
    by_middle = C.forward("mid@remote.example", "srs.host.example", ["k2", "k3"], NOW - 10 * DAY)
    c = ctl(srs_home)
    assert W.reverse(by_oldest, c, NOW) == (W.OK, "old@remote.example")
    assert W.reverse(by_middle, c, NOW) == (W.OK, "mid@remote.example")
    srs_home.control("srs/revers_srs_secrets", "k1\nk2\n")
    assert W.reverse(by_oldest, ctl(srs_home), NOW).status == W.BAD_HASH


def test_reverse_uses_revers_srs_secrets(srs_home):
    srs_home.control("srs/srs_secrets", "only-forward\n")
    made = C.forward("joe@remote.example", "srs.host.example", ["only-forward"], NOW)
    assert W.reverse(made, ctl(srs_home), NOW).status == W.BAD_HASH


def test_morercpthosts_is_local(srs_home, tmp_path):
    import cdblib
    path = os.path.join(srs_home.root, "control", "morercpthosts.cdb")
    with open(path, "wb") as f, cdblib.Writer(f) as w:
        w.put(b"more.example", b"")
        w.put(b".deep.example", b"")
    c = ctl(srs_home)
    assert W.forward("a@more.example", c, NOW) == "a@more.example"
    assert W.forward("a@x.deep.example", c, NOW) == "a@x.deep.example"
    assert W.forward("a@less.example", c, NOW).startswith("SRS0=")



def _with_more(home, *domains):
    import cdblib
    with open(os.path.join(home.root, "control", "morercpthosts.cdb"), "wb") as f, cdblib.Writer(f) as w:
        for d in domains:
            w.put(d.encode(), b"")


@pytest.mark.parametrize("address", ["a@hosted.example", "a@HOSTED.Example", "a@hosted.example.",
                                     "a@x.sub.example", "a@sub.example", "a@X.SUB.EXAMPLE",
                                     "a@colon.example", "a@more.example", "a@MORE.example",
                                     "a@y.deep.example", "a@deep.example", "a@x.more.example",
                                     "a@other.example", "a@hosted.example@other.example"])
def test_srs_and_relay_decide_rcpthosts_alike(home, tmp_path, address):
    """SRS's "our domain" and qmail-smtpd's relay control are one rule (qmailpy.ctl.rcpthosts):
    over rcpthosts and morercpthosts.cdb they agree on every domain."""
    from qmailpy.policy.relay import rcpthosts_ok
    from qmailpy.smtpd.config import SmtpdConfig
    home.control("me", "mx.host.example\n")
    home.control("locals", "localhost\n")
    home.control("rcpthosts", "hosted.example\n.sub.example\ncolon.example:\n")
    _with_more(home, "more.example", ".deep.example")
    env = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "127.0.0.1", "PROTO": "TCP"}
    assert W.is_local(address, ctl(home)) == rcpthosts_ok(SmtpdConfig(Controls(home.root, env), env), address)


def test_morercpthosts_without_rcpthosts_is_not_read(srs_home):
    """qmail reads morercpthosts.cdb only beside a control/rcpthosts (rcpthosts_init); SRS,
    for which a missing rcpthosts lists nothing, took a domain in the cdb for ours and sent
    that sender's forwards out unrewritten."""
    _with_more(srs_home, "more.example")
    os.unlink(os.path.join(srs_home.root, "control", "rcpthosts"))
    c = ctl(srs_home)
    assert W.is_local("a@more.example", c) is False
    assert W.forward("a@more.example", c, NOW).startswith("SRS0=")


# -- the qmail-local hook

def test_qmail_send_forwarder(srs_home):
    from qmailpy.send import srsmap
    forward = srsmap.forwarder(ctl(srs_home))
    forward.clock = lambda: NOW
    assert forward(b"joe@remote.example") == C.forward("joe@remote.example", "srs.host.example", ["k1"], NOW).encode()
    assert forward(b"") == b""
    assert forward(b"joe@hosted.example") == b"joe@hosted.example"


def test_qmail_send_signs_with_the_key_setsrssecret_made_since_it_started(srs_home):
    """setsrssecret runs from cron and sends qmail-send no SIGHUP. qmail-send kept signing
    with the key it read at start: once setsrssecret dropped that key (srs_max_age after it
    was replaced), every bounce to a forward was refused as forged. qmail-srs signed in
    qmail-local, a new process per forward, which read the keys each time."""
    from qmailpy.send import srsmap
    forward = srsmap.forwarder(ctl(srs_home))
    forward.clock = lambda: NOW
    assert forward(b"joe@remote.example") == C.forward("joe@remote.example", "srs.host.example", ["k1"], NOW).encode()
    srs_home.control("srs/revers_srs_secrets", "k9\n")    # weeks later: k1..k3 are gone
    srs_home.control("srs/srs_secrets", "k9\n")
    address = forward(b"joe@remote.example").decode()
    assert address == C.forward("joe@remote.example", "srs.host.example", ["k9"], NOW)
    assert W.reverse(address, ctl(srs_home), NOW) == (W.OK, "joe@remote.example")


def test_keys_replaced_as_qmail_send_starts_are_noticed(srs_home, monkeypatch):
    """qmail-send read srs_secrets, then stamped the file: a setsrssecret that replaced it in
    between left it signing with the old key, the new file's stamp taken as already seen, until
    the next rotation (the one that may drop that key). The stamp now comes first."""
    from qmailpy.send import srsmap
    real_stamp = srsmap.stamp

    def stamp(path):
        if not replaced:
            replaced.append(path)
            srs_home.control("srs/revers_srs_secrets", "k9\nk1\n")     # setsrssecret, right now
            srs_home.control("srs/srs_secrets", "k9\nk1\n")
        return real_stamp(path)
    replaced = []
    monkeypatch.setattr(srsmap, "stamp", stamp)
    forward = srsmap.forwarder(ctl(srs_home))
    forward.clock = lambda: NOW
    assert replaced and forward(b"joe@remote.example") == C.forward(
        "joe@remote.example", "srs.host.example", ["k9"], NOW).encode()


def test_no_keys_no_srs_until_setsrssecret_makes_one(home):
    """No keys: senders are left alone; the first setsrssecret starts SRS (docs/srs.md), in a
    qmail-send that is already running too."""
    from qmailpy.send import srsmap
    home.control("srs/srs_domain", "srs.host.example\n")
    forward = srsmap.forwarder(ctl(home))
    forward.clock = lambda: NOW
    assert forward(b"joe@remote.example") == b"joe@remote.example"
    home.control("srs/srs_secrets", "k1\n")
    assert forward(b"joe@remote.example") == C.forward("joe@remote.example", "srs.host.example", ["k1"], NOW).encode()


def test_unreadable_controls_raise(srs_home):
    from qmailpy.send import srsmap
    path = os.path.join(srs_home.root, "control/srs/srs_secrets")
    os.unlink(path)
    os.mkdir(path)                                   # read() fails: EISDIR
    with pytest.raises(ControlError):
        srsmap.forwarder(ctl(srs_home))


def test_codec_import_is_cheap():
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r); import qmailpy.srs.codec; " % root +
            "bad = [m for m in ('re', 'typing', 'subprocess', 'socket', 'click', 'hmac') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_qmail_todo_reverses_every_srs_address_qmail_smtpd_takes_as_ours(srs_home):
    """"An SRS address of ours" is one rule (codec.at_domain: the tag and a separator, the
    domain ASCII case folded as qmail compares domains), asked by qmail-smtpd at RCPT and by
    qmail-todo's reverser. qmail-todo lower-cased srs_domain with str.lower() (Unicode) and the
    recipient bytewise: with srs_domain srs.BÜCHER.example qmail-smtpd accepted the bounce
    address as a valid SRS address and qmail-todo never reversed it."""
    from qmailpy.send import srsmap
    srs_home.control("srs/srs_domain", "srs.BÜCHER.example\n")
    made = C.forward("joe@remote.example", "srs.BÜCHER.example", ["k1"], NOW)
    assert C.at_domain(made, "srs.BÜCHER.example") and C.at_domain(C.lower(made), "SRS.bÜcher.EXAMPLE")
    assert not C.at_domain(made, "srs.bücher.example")        # not ASCII: not the same domain for qmail
    assert not C.at_domain("SRS0@srs.BÜCHER.example", "srs.BÜCHER.example")
    assert not C.at_domain("SRS0=x@other.example", "srs.BÜCHER.example")
    reverser = srsmap.SrsReverser(ctl(srs_home), clock=lambda: NOW)
    assert reverser(made.encode(), b"") == (W.OK, b"joe@remote.example")
    assert reverser(made.replace("@srs.B", "@SRS.b").encode(), b"") == (W.OK, b"joe@remote.example")
    assert reverser(b"SRS0x" + made[4:].encode(), b"") == (None, None)


def test_qmail_todo_leaves_a_forged_srs_address_of_ours_alone(srs_home):
    """An SRS address at srs_domain whose hash does not verify (qmail-smtpd refuses it at RCPT;
    qmail-inject does not ask) is neither reversed nor dropped: delivered as it is written, to
    the local user it names, or bounced."""
    from qmailpy.send import srsmap
    domain = ctl(srs_home).value("srs/srs_domain")
    made = C.forward("joe@remote.example", domain, ["k1"], NOW)
    tag, hash_, rest = made.split("=", 2)
    forged = "=".join((tag, "AAAA" if hash_ != "AAAA" else "BBBB", rest))
    assert W.reverse(forged, ctl(srs_home), NOW).status not in (W.OK, W.EXPIRED)
    reverser = srsmap.SrsReverser(ctl(srs_home), clock=lambda: NOW)
    assert reverser(made.encode(), b"") == (W.OK, b"joe@remote.example")
    assert reverser(forged.encode(), b"") == (None, None)
    assert reverser(forged.encode(), b"alice@localhost") == (None, None)


def test_no_srs_domain_no_me_and_no_host_name_no_srs(srs_home, monkeypatch):
    """srs_domain defaults to me, me to the host name: on a machine whose host name is empty
    there is no domain to sign for, and the sender stays (never an SRS address at '@')."""
    os.unlink(os.path.join(srs_home.root, "control/srs/srs_domain"))
    os.unlink(os.path.join(srs_home.root, "control/me"))
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((real.sysname, "", real.release, real.version,
                                                              real.machine)))
    assert W.forward("a@remote.example", ctl(srs_home), NOW) == "a@remote.example"


def test_virtualdomains_lines_without_a_domain_make_nothing_ours(srs_home):
    """A line without ':' and the catch-all ':prefix' name no domain: a sender at any domain
    is still rewritten."""
    srs_home.control("virtualdomains", "remote.example\n:catchall\n")
    assert W.forward("a@remote.example", ctl(srs_home), NOW) == C.forward(
        "a@remote.example", "srs.host.example", ["k1"], NOW)
