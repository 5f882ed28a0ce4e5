"""qmailpy against a real C MTA on both sides: a private Postfix (bench/postfix.py) on 127.0.0.1.

qmail-remote -> Postfix's smtpd as the remote MX: PIPELINING, per-recipient 450/550 in one
transaction, 552 after the dot for a message over message_size_limit, a 421 or 554 instead of
the greeting, a 554 per RCPT (smtpd_delay_reject), Postfix's 421 after too
many errors, STARTTLS with control/tlsdestinations, 4xx/5xx to MAIL, to DATA and after the
dot (sender, data and end-of-data restrictions), a 5000-byte line, a bare CR; qmail-send's
log lines and bounce for a message Postfix takes for one recipient and refuses for another. Postfix's smtp client -> qmail-smtpd (under
tcpserver) as its relayhost: pipelined MAIL/RCPT/DATA, STARTTLS, many recipients, bare LF and
8-bit bodies, and qmail-smtpd's refusals as Postfix's queue and log record them (permanent:
bounced; temporary: still queued); SMTP AUTH (smtp_sasl_auth_enable) to relay, chkuser's 550
in Postfix's bounce, databytes (Postfix heeds SIZE; told not to, it gets the 552). Postfix that cannot start fails the test (services.missing).
"""
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

import services
from bench.postfix import Postfix, PostfixUnavailable, check_host
from conftest import program
from test_e2e_support import BIN, DOMAIN, World, wait_until, world  # noqa: F401  (fixture)
from tlspeer import tls_certs  # noqa: F401  (fixture)

PEER = "peer.example"           # Postfix's virtual domain: rcpt@ exists, other users are unknown
QUEUED = rb"Remote host said: 250 2\.0\.0 Ok: queued as [0-9A-F]+\n"
SENDER_MAPS = {"mail": ("451 4.3.0 mail later", "553 5.7.1 mail never"),   # senders m4@, m5@
               "data": ("452 4.3.1 data later", "554 5.7.1 data never"),   # d4@, d5@
               "eod": ("451 4.7.1 end later", "550 5.7.1 end never")}      # e4@, e5@


def start(pf):
    reason = check_host()
    if reason is None:
        try:
            return pf.start()
        except (PostfixUnavailable, OSError, subprocess.SubprocessError) as e:
            pf.stop()
            reason = str(e)
    services.missing("postfix", "a private Postfix cannot run here: %s" % reason)


def private_root():
    """A 0755 directory in /tmp: Postfix's unprivileged daemons must reach its data and queue
    directories, which pytest's 0700 tmp_path does not let them."""
    root = tempfile.mkdtemp(prefix="qmailpy-postfix-")
    os.chmod(root, 0o755)
    return root


def edit_main_cf(pf, drop=(), add=()):
    path = os.path.join(pf.config, "main.cf")
    lines = [line for line in open(path).read().splitlines() if line.split(" =")[0] not in drop]
    with open(path, "w") as f:
        f.write("\n".join(lines + list(add)) + "\n")


@pytest.fixture(scope="module")
def mx(tls_certs):  # noqa: F811
    """Postfix's smtpd (no queue manager) as the MX of peer.example: STARTTLS offered with a
    certificate of the test CA, message_size_limit 2000, an access map answering 450 and 550."""
    root = private_root()
    cert, key = tls_certs.server("mx." + PEER)
    os.chmod(key, 0o644)
    pf = Postfix(os.path.join(root, "pf"), "peer", PEER, full=False)
    access = os.path.join(pf.config, "access")
    with open(access, "w") as f:
        f.write("defer@%s 450 4.2.0 try later\nreject@%s 550 5.1.1 no such user\n" % (PEER, PEER))
    for name, (soft, hard) in SENDER_MAPS.items():      # a map per stage, keyed by the sender
        with open(os.path.join(pf.config, name), "w") as f:
            f.write("%s4@test.example %s\n%s5@test.example %s\n" % (name[0], soft, name[0], hard))
    edit_main_cf(pf, add=["message_size_limit = 2000",
                          "smtpd_recipient_restrictions = check_recipient_access texthash:%s,"
                          " permit_mynetworks, reject" % access,
                          "smtpd_sender_restrictions = check_sender_access texthash:%s/mail" % pf.config,
                          "smtpd_data_restrictions = check_sender_access texthash:%s/data" % pf.config,
                          "smtpd_end_of_data_restrictions = check_sender_access texthash:%s/eod" % pf.config,
                          "smtpd_hard_error_limit = 4", "smtpd_soft_error_limit = 2",
                          "smtpd_error_sleep_time = 0",
                          "smtpd_tls_cert_file = " + cert, "smtpd_tls_key_file = " + key,
                          "smtpd_tls_security_level = may"])
    with open(os.path.join(pf.config, "master.cf"), "a") as f:
        f.write("tlsmgr    unix - - n 1000? 1 tlsmgr\n")
    start(pf)
    yield pf
    pf.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def remote(home, mx):
    """qmail-remote for peer.example, routed by smtproutes to Postfix: remote(*recips) -> stdout;
    without STARTTLS unless tlsdestinations says otherwise."""
    home.control("me", "test.example\n")
    home.control("smtproutes", ":127.0.0.1:%d\n" % mx.port)

    def go(*recips, message=b"Subject: x\n\nhi\n", tlsdestinations="!%s\n" % PEER, sender="a@test.example"):
        home.control("tlsdestinations", tlsdestinations)
        p = subprocess.run([program("qmail-remote"), PEER, sender, *recips], input=message,
                           capture_output=True, env=home.env(), timeout=60)
        assert (p.returncode, p.stderr) == (0, b"")
        return p.stdout
    return go


def test_remote_per_recipient_reports_from_postfix(remote):
    out = remote("rcpt@" + PEER, "defer@" + PEER, "reject@" + PEER, "nobody@" + PEER)
    assert re.fullmatch(
        rb"r\0"
        rb"s127\.0\.0\.1 does not like recipient\.\nRemote host said: 450 4\.2\.0 <defer@peer\.example>:"
        rb" Recipient address rejected: try later\n\0"
        rb"h127\.0\.0\.1 does not like recipient\.\nRemote host said: 550 5\.1\.1 <reject@peer\.example>:"
        rb" Recipient address rejected: no such user\n\0"
        rb"h127\.0\.0\.1 does not like recipient\.\nRemote host said: 550 5\.1\.1 <nobody@peer\.example>:"
        rb" Recipient address rejected: User unknown in virtual mailbox table\n\0"
        rb"K127\.0\.0\.1 accepted message\.\n" + QUEUED + rb"\0", out), out


def test_remote_every_recipient_refused_by_postfix(remote):
    assert remote("defer@" + PEER, "reject@" + PEER) == (
        b"s127.0.0.1 does not like recipient.\nRemote host said: 450 4.2.0 <defer@peer.example>:"
        b" Recipient address rejected: try later\n\0"
        b"h127.0.0.1 does not like recipient.\nRemote host said: 550 5.1.1 <reject@peer.example>:"
        b" Recipient address rejected: no such user\n\0"
        b"DGiving up on 127.0.0.1.\n\0")


def test_remote_message_over_postfix_size_limit_bounces_with_its_text(remote):
    big = b"Subject: big\n\n" + b"z" * 70 + b"\n" + (b"y" * 70 + b"\n") * 40
    assert remote("rcpt@" + PEER, message=big) == (
        b"r\0D127.0.0.1 failed after I sent the message.\n"
        b"Remote host said: 552 5.3.4 Error: message file too big\n\0")


def test_remote_postfix_421_after_too_many_errors_defers_the_rest(remote):
    out = remote("rcpt@" + PEER, *["n%d@%s" % (i, PEER) for i in range(5)])
    unknown = (b"h127.0.0.1 does not like recipient.\nRemote host said: 550 5.1.1 <n%d@peer.example>:"
               b" Recipient address rejected: User unknown in virtual mailbox table\n\0")
    assert out == (b"r\0" + b"".join(unknown % i for i in range(4))
                   + b"s127.0.0.1 does not like recipient.\n"
                     b"Remote host said: 421 4.7.0 mx.peer.peer.example Error: too many errors\n\0"
                     b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0")


def test_remote_8bit_message_to_postfix(remote):
    out = remote("rcpt@" + PEER, message=b"Subject: 8bit\n\ncaf\xc3\xa9\n")
    assert re.fullmatch(rb"r\0K127\.0\.0\.1 accepted message\.\n" + QUEUED + rb"\0", out), out


def test_remote_starttls_to_postfix_verified_by_tlsdestinations(remote, tls_certs):  # noqa: F811
    out = remote("rcpt@" + PEER, tlsdestinations="%s:%s\n" % (PEER, tls_certs.ca))
    assert re.fullmatch(rb"r\0K127\.0\.0\.1 accepted message\.\nTLS: TLSv1\.3 [A-Z0-9_]+, certificate verified"
                        rb" for 127\.0\.0\.1\.\n" + QUEUED + rb"\0", out), out


def test_remote_postfix_refusing_the_client_at_connect_is_a_deferral(remote, mx):
    """smtpd_delay_reject = no: Postfix's reply to the connection is its 554, not a 220; qmail's
    "greeting failed" is a Z whatever the code."""
    mx.postconf(smtpd_delay_reject="no", smtpd_client_restrictions="reject")
    try:
        assert remote("rcpt@" + PEER) == (
            b"ZConnected to 127.0.0.1 but greeting failed.\n"
            b"Remote host said: 554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied\n\0")
    finally:
        mx.postconf(smtpd_delay_reject="yes", smtpd_client_restrictions="")


def test_remote_postfix_421_at_connect_is_a_deferral(remote, mx):
    """Postfix's 421 instead of its greeting (one connection per client, one already open)."""
    mx.postconf(smtpd_client_connection_count_limit="1", smtpd_client_event_limit_exceptions="")
    try:
        with socket.create_connection(("127.0.0.1", mx.port)) as held:
            assert held.recv(100).startswith(b"220 ")
            assert remote("rcpt@" + PEER) == (
                b"ZConnected to 127.0.0.1 but greeting failed.\n"
                b"Remote host said: 421 4.7.0 mx.peer.peer.example Error: too many connections from 127.0.0.1\n\0")
    finally:
        mx.postconf(smtpd_client_connection_count_limit="0", smtpd_client_event_limit_exceptions="$mynetworks")


def test_remote_postfix_delayed_client_reject_refuses_every_recipient(remote, mx):
    """smtpd_delay_reject = yes (Postfix's default): the client restriction answers each RCPT."""
    mx.postconf(smtpd_client_restrictions="reject")
    try:
        assert remote("rcpt@" + PEER) == (
            b"h127.0.0.1 does not like recipient.\n"
            b"Remote host said: 554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied\n\0"
            b"DGiving up on 127.0.0.1.\n\0")
    finally:
        mx.postconf(smtpd_client_restrictions="")


def test_remote_postfix_refusing_the_sender_at_mail(remote, mx):
    """smtpd_delay_reject = no: the sender restriction answers MAIL itself; qmail's 5xx/4xx split."""
    mx.postconf(smtpd_delay_reject="no")
    try:
        assert remote("rcpt@" + PEER, sender="m4@test.example") == (
            b"ZConnected to 127.0.0.1 but sender was rejected.\n"
            b"Remote host said: 451 4.3.0 <m4@test.example>: Sender address rejected: mail later\n\0")
        assert remote("rcpt@" + PEER, sender="m5@test.example") == (
            b"DConnected to 127.0.0.1 but sender was rejected.\n"
            b"Remote host said: 553 5.7.1 <m5@test.example>: Sender address rejected: mail never\n\0")
    finally:
        mx.postconf(smtpd_delay_reject="yes")


@pytest.mark.parametrize("sender,report", [
    ("d4", b"Z127.0.0.1 failed on DATA command.\nRemote host said: 452 4.3.1 <d4@test.example>: data later"),
    ("d5", b"D127.0.0.1 failed on DATA command.\nRemote host said: 554 5.7.1 <d5@test.example>: data never"),
    ("e4", b"Z127.0.0.1 failed after I sent the message.\nRemote host said: 451 4.7.1 <e4@test.example>: end later"),
    ("e5", b"D127.0.0.1 failed after I sent the message.\nRemote host said: 550 5.7.1 <e5@test.example>: end never")])
def test_remote_postfix_refusing_data_or_the_dot(remote, sender, report):
    """smtpd_data_restrictions answer DATA, smtpd_end_of_data_restrictions the final dot; the
    recipient was accepted (r) either way, then qmail's Z for a 4xx and D for a 5xx."""
    assert remote("rcpt@" + PEER, sender=sender + "@test.example") == b"r\0" + report.replace(
        b">: ", b">: Sender address rejected: ") + b"\n\0"


def queued_body(mx, out):
    """The body of the message Postfix's report `out` names, as Postfix's queue file holds it."""
    (qid,) = re.findall(rb"queued as ([0-9A-F]+)\n", out)
    r = subprocess.run(["postcat", "-c", mx.config, "-b", "-q", qid.decode()], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_remote_long_line_and_bare_cr_reach_postfix_as_sent(remote, mx):
    """A 5000-byte line goes as one line (qmail-remote does not fold it; Postfix takes lines past
    its line_length_limit in pieces and keeps them one line); a bare CR goes as CRLF (notqmail
    83e8e32) and an existing CRLF as itself, never CR CR LF."""
    mx.postconf(message_size_limit="20000")
    try:
        out = remote("rcpt@" + PEER, message=b"Subject: long\n\n" + b"x" * 5000 + b"\n")
    finally:
        mx.postconf(message_size_limit="2000")
    assert re.fullmatch(rb"r\0K127\.0\.0\.1 accepted message\.\n" + QUEUED + rb"\0", out), out
    assert queued_body(mx, out).endswith(b"\n" + b"x" * 5000 + b"\n")
    out = remote("rcpt@" + PEER, message=b"Subject: cr\n\na\rb\r\nc\n")
    assert re.fullmatch(rb"r\0K127\.0\.0\.1 accepted message\.\n" + QUEUED + rb"\0", out), out
    assert queued_body(mx, out).endswith(b"\na\nb\nc\n")


# -- Postfix's smtp client delivering into qmail-smtpd -------------------------------------------
@pytest.fixture(params=["tcpserver", "qmail-tcpserver"])
def server(request):
    """What runs qmail-smtpd for Postfix: the real tcpserver or bin/qmail-tcpserver."""
    return request.param if request.param == "tcpserver" else str(BIN / request.param)


@pytest.fixture
def relay(tmp_path, tls_certs, request, server):  # noqa: F811
    """(world, postfix): qmail-smtpd with a certificate under `server`, no qmail-send (accepted
    mail stays in todo/), and Postfix relaying everything to it with TLS required; mail for
    tq.<DOMAIN> goes to a second qmail-smtpd whose qmail-queue exits 71."""
    world = World(queued=False, controls=getattr(request, "param", None))
    world.control("rcpthosts", "%s\ntq.%s" % (DOMAIN, DOMAIN))
    failing = tmp_path / "qq71"
    failing.write_text("#!/bin/sh\ncat >/dev/null\nexit 71\n")
    failing.chmod(0o755)

    def ports():
        return world.smtpd(server=server), world.smtpd(server=server, QMAILQUEUE=str(failing))
    yield from behind_postfix(world, tls_certs, ports, {"transport": "tq.%s smtp:[127.0.0.1]:%%d\n" % DOMAIN},
                              ["transport_maps = texthash:{config}/transport"])


def behind_postfix(world, tls_certs, ports, files, add):  # noqa: F811
    """A fixture's body: world's qmail-smtpd with the test certificate (ports(): the port Postfix
    relays everything to, then those the `files` formats take), a whole Postfix relaying to it
    with TLS required; yields (world, postfix). files: {name: text % ports[1:]} in Postfix's
    config directory; add: more main.cf lines ({config}: that directory)."""
    root = private_root()
    cert, key = tls_certs.server("mx.e2e.test")
    with open(os.path.join(world.home, "control", "servercert.pem"), "wb") as f:
        f.write(open(cert, "rb").read() + open(key, "rb").read())
    port, *more = ports()
    pf = Postfix(os.path.join(root, "pf"), "relay", "pf.example", relay_port=port)
    for name, text in files.items():
        with open(os.path.join(pf.config, name), "w") as f:
            f.write(text % tuple(more or [port]))
    edit_main_cf(pf, drop=("defer_transports", "smtp_tls_security_level"),
                 add=["smtp_tls_security_level = encrypt",
                      "queue_run_delay = 2s", "minimal_backoff_time = 2s", "maximal_backoff_time = 2s"]
                 + [line.format(config=pf.config) for line in add])
    try:
        start(pf)
        yield world, pf
    finally:
        pf.stop()
        world.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def submit(pf, message, rcpts, sender="s@pf.example"):
    with smtplib.SMTP("127.0.0.1", pf.port) as s:
        s.sendmail(sender, rcpts, message)


def logged(pf, pattern, count=1):
    wait_until(lambda: len(re.findall(pattern, open(pf.maillog, "rb").read())) >= count, timeout=60,
               what="%r in Postfix's log (%s)" % (pattern, pf.log_tail(8)))
    return re.findall(pattern, open(pf.maillog, "rb").read())


def todo_messages(world):
    return [open(os.path.join(world.home, "queue", f), "rb").read()
            for f in world.queue_files() if f.startswith("mess/")]


def test_postfix_relays_into_qmail_smtpd(relay):
    world, pf = relay
    rcpts = ["m%d@%s" % (i, DOMAIN) for i in range(120)]
    submit(pf, b"Subject: many\r\n\r\nhi\r\n", rcpts)
    submit(pf, b"Subject: raw\n\nbare lf\n.dot\ncaf\xc3\xa9 \x80\xff\r\n", ["u1@" + DOMAIN])
    sent = logged(pf, rb"status=sent \(250 ok \d+ qp \d+\)", 121)
    assert len(sent) == 121
    time.sleep(0.5)
    mess = todo_messages(world)
    assert len(mess) == 4       # Postfix's smtp_destination_recipient_limit: 50 + 50 + 20, and one
    raw = [m for m in mess if b"Subject: raw" in m][0]
    assert b" with ESMTPS (TLS_" in raw
    assert raw.endswith(b"\n\nbare lf\n.dot\ncaf\xc3\xa9 \x80\xff\n"), raw
    assert not subprocess.run(["postqueue", "-c", pf.config, "-p"], capture_output=True,
                              text=True).stdout.strip().startswith("-Queue ID-")


def test_qmail_smtpd_refusals_as_postfix_records_them(relay):
    world, pf = relay
    submit(pf, b"Subject: mix\r\n\r\nhi\r\n", ["ok@" + DOMAIN, "x@notmine.example"])
    submit(pf, b"Subject: tq\r\n\r\nhi\r\n", ["u1@tq." + DOMAIN])
    (bounced,) = logged(pf, rb"to=<x@notmine\.example>, relay=[^\n]*status=bounced \([^\n]*\)\n")
    assert bounced.endswith(b"status=bounced (host 127.0.0.1[127.0.0.1] said: 553 sorry, that domain isn't in"
                            b" my list of allowed rcpthosts (#5.7.1) (in reply to RCPT TO command))\n")
    logged(pf, rb"to=<ok@e2e\.example>, relay=[^\n]*status=sent")
    logged(pf, rb"to=<u1@tq\.e2e\.example>, relay=[^\n]*status=deferred")
    deferred = ("(host 127.0.0.1[127.0.0.1] said: 451 mail server temporarily rejected message (#4.3.0)"
                " (in reply to end of DATA command))\n                                         u1@tq.e2e.example\n")

    def queue():    # between retries (every 2 s here) the message shows its reason, else '*' (active)
        return subprocess.run(["postqueue", "-c", pf.config, "-p"], capture_output=True, text=True).stdout
    # Postfix's own bounce notice for x@ leaves its queue on its own time: wait for that too
    wait_until(lambda: deferred in queue() and "-- 0 Kbytes in 1 Request." in queue(), timeout=60,
               what="the deferral alone in postqueue -p")
    assert len(todo_messages(world)) == 1


def test_qmail_smtpd_refusing_every_recipient_of_a_pipelined_transaction(relay):
    """Postfix pipelines DATA after the RCPTs; qmail-smtpd's 503 to it changes nothing: bounced."""
    world, pf = relay
    submit(pf, b"Subject: none\r\n\r\nhi\r\n", ["x@notmine.example", "y@notmine.example"])
    assert len(logged(pf, rb"to=<[xy]@notmine\.example>, relay=[^\n]*status=bounced \(host 127\.0\.0\.1"
                          rb"\[127\.0\.0\.1\] said: 553 sorry, that domain isn't in my list of allowed"
                          rb" rcpthosts \(#5\.7\.1\) \(in reply to RCPT TO command\)\)", 2)) == 2
    assert todo_messages(world) == []


@pytest.mark.parametrize("relay", [{"maxrecepients": "10"}], indirect=True)
def test_qmail_smtpd_maxrecepients_452_makes_postfix_send_the_rest_later(relay):
    """spamcontrol's 452 after maxrecepients: Postfix defers the rest and sends them in later
    transactions; every recipient arrives once, none is bounced."""
    world, pf = relay
    rcpts = ["m%d@%s" % (i, DOMAIN) for i in range(25)]
    submit(pf, b"Subject: many\r\n\r\nhi\r\n", rcpts)
    logged(pf, rb"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 452 sorry, too many recipients"
               rb" \(#4\.5\.3\) \(in reply to RCPT TO command\)\)")
    logged(pf, rb"status=sent \(250 ok", 25)
    wait_until(lambda: "Mail queue is empty" in subprocess.run(["postqueue", "-c", pf.config, "-p"],
               capture_output=True, text=True).stdout, timeout=60, what="Postfix's queue empty")
    got = []
    for f in world.queue_files():
        if f.startswith("todo/"):
            got += re.findall(rb"T([^\0]*)\0", open(os.path.join(world.home, "queue", f), "rb").read())
    assert sorted(got) == sorted(r.encode() for r in rcpts)
    assert b"status=bounced" not in open(pf.maillog, "rb").read()


# -- Postfix's smtp client with SMTP AUTH, qmail-smtpd's chkuser and databytes ----------------
@pytest.fixture(scope="module")
def auth_relay(tls_certs):  # noqa: F811
    """(world, postfix), one per module: qmail-smtpd (tcpserver) with smtpauth, userchk and
    databytes 3000, joe@<DOMAIN> a mailbox user; a whole Postfix (its bounces reach
    rcpt@pf.example's Maildir) relaying everything to it over STARTTLS, authenticating as joe.
    Postfix picks CRAM-MD5, the strongest mechanism offered, and does not try another after a
    535: joe's password is stored --clear, without which CRAM-MD5 fails (docs/qmail-users.md)."""
    world = World(queued=False, controls={"smtpauth": "1", "userchk": "1", "databytes": "3000"})
    world.users("adduser", "joe@" + DOMAIN, "-p", "s3cret", "--clear")
    yield from behind_postfix(world, tls_certs, lambda: [world.smtpd(AUTHFAILDELAY="0")],
                              {"sasl": "[127.0.0.1]:%%d joe@%s:s3cret\n" % DOMAIN},
                              ["smtp_sasl_auth_enable = yes", "smtp_sasl_password_maps = texthash:{config}/sasl",
                               "smtp_sasl_security_options = noanonymous",
                               "smtp_sasl_tls_security_options = noanonymous"])


def bounces(pf):
    new = pf.maildir_new()
    return [open(os.path.join(new, f), "rb").read() for f in sorted(os.listdir(new))] if os.path.isdir(new) else []


def test_postfix_authenticates_and_relays_through_qmail_smtpd(auth_relay):
    """smtp_sasl_auth_enable: Postfix's AUTH over STARTTLS lets it relay to a domain not in
    rcpthosts; Received says ESMTPSA and the user; an 8BITMIME body arrives as it was."""
    world, pf = auth_relay
    with smtplib.SMTP("127.0.0.1", pf.port) as s:
        s.ehlo()
        s.sendmail("rcpt@pf.example", ["friend@elsewhere.example"],
                   b"Subject: auth\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n",
                   mail_options=["BODY=8BITMIME"])
    logged(pf, rb"to=<friend@elsewhere\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, [^\n]*status=sent"
               rb" \(250 ok \d+ qp \d+\)")
    (mess,) = [m for m in todo_messages(world) if b"Subject: auth" in m]
    assert re.match(rb"Received: \(qmail \d+ invoked by uid \d+\); [^\n]+\n"
                    rb"Received: from unknown \(HELO mx\.relay\.pf\.example\) \(joe@e2e\.example@127\.0\.0\.1\)\n"
                    rb"  by localhost with ESMTPSA \(TLS_[A-Z0-9_]+ encrypted, authenticated\); ", mess), mess
    assert b"\nContent-Transfer-Encoding: 8bit\n" in mess and mess.endswith(b"\n\ncaf\xc3\xa9\n"), mess


def test_postfix_bounce_carries_qmail_smtpd_chkuser_reply(auth_relay):
    world, pf = auth_relay
    submit(pf, b"Subject: chk\r\n\r\nhi\r\n", ["nosuch@" + DOMAIN], sender="rcpt@pf.example")
    (line,) = logged(pf, rb"to=<nosuch@e2e\.example>, [^\n]*status=bounced \([^\n]*\)\n")
    assert line.endswith(b"status=bounced (host 127.0.0.1[127.0.0.1] said: 550 sorry, no mailbox here by that"
                         b" name (#5.1.1 - chkusr) (in reply to RCPT TO command))\n"), line
    wait_until(lambda: any(b"Subject: chk" in b for b in bounces(pf)), timeout=30, what="Postfix's bounce")
    (bounce,) = [b for b in bounces(pf) if b"Subject: chk" in b]
    assert (b"\n<nosuch@e2e.example>: host 127.0.0.1[127.0.0.1] said: 550 sorry, no mailbox\n"
            b"    here by that name (#5.1.1 - chkusr) (in reply to RCPT TO command)\n\n") in bounce, bounce
    # qmail's enhanced code is in its "(#5.1.1)", not after the 550: Postfix's DSN says 5.0.0
    assert (b"\nAction: failed\nStatus: 5.0.0\nRemote-MTA: dns; 127.0.0.1\n"
            b"Diagnostic-Code: smtp; 550 sorry, no mailbox here by that name (#5.1.1 -\n    chkusr)\n") in bounce


def test_postfix_message_over_databytes(auth_relay):
    """qmail-smtpd's EHLO says SIZE 3000: Postfix bounces a bigger message itself without
    sending it; told to ignore SIZE, it sends it and bounces with qmail-smtpd's 552."""
    world, pf = auth_relay
    big = b"Subject: big%d\r\n\r\n" + (b"y" * 70 + b"\r\n") * 60
    submit(pf, big % 1, ["joe@" + DOMAIN], sender="rcpt@pf.example")
    (line,) = logged(pf, rb"to=<joe@e2e\.example>, [^\n]*status=bounced \([^\n]*\)\n")
    assert re.search(rb"status=bounced \(message size \d+ exceeds size limit 3000 of server"
                     rb" 127\.0\.0\.1\[127\.0\.0\.1\]\)\n$", line), line
    pf.postconf(smtp_discard_ehlo_keywords="size")
    try:
        submit(pf, big % 2, ["joe@" + DOMAIN], sender="rcpt@pf.example")
        line = logged(pf, rb"to=<joe@e2e\.example>, [^\n]*status=bounced \([^\n]*\)\n", 2)[1]
    finally:
        pf.postconf(smtp_discard_ehlo_keywords="")
    assert line.endswith(b"status=bounced (host 127.0.0.1[127.0.0.1] said: 552 sorry, that message size exceeds"
                         b" my databytes limit (#5.3.4) (in reply to end of DATA command))\n"), line
    assert not [m for m in todo_messages(world) if b"Subject: big" in m]


def test_qmail_send_delivers_to_postfix_and_bounces_with_its_text(world, mx):  # noqa: F811
    """qmail-send -> qmail-rspawn -> qmail-remote -> Postfix, one recipient taken, one refused:
    qmail-send's log lines and the bounce (QSBMF) carry Postfix's replies as qmail-remote said them
    (qmail-reference.md 3.3 and 3.4)."""
    from test_e2e_remote import queue_one, received_line, run_to_the_bounce
    world.adduser("alice")
    world.control("smtproutes", "%s:127.0.0.1:%d" % (PEER, mx.port))
    world.control("tlsdestinations", "!" + PEER)
    t0 = time.time()
    msgid, mess = queue_one(world, b"From: alice@e2e.example\nSubject: to postfix\n\nhi\n",
                            ["rcpt@" + PEER, "reject@" + PEER], sender="alice@" + DOMAIN)
    send, bounce, date = run_to_the_bounce(world, msgid, t0)
    lines = send.lines()
    (ok,) = [line for line in lines if " success: 127" in line]
    assert re.fullmatch(r"delivery \d+: success: 127\.0\.0\.1_accepted_message\./Remote_host_said:_250_2\.0\.0_Ok:"
                        r"_queued_as_[0-9A-F]+/", ok), ok
    (failed,) = [line for line in lines if " failure: " in line]
    assert re.fullmatch(r"delivery \d+: failure: 127\.0\.0\.1_does_not_like_recipient\./Remote_host_said:_550_5\.1\.1"
                        r"_<reject@peer\.example>:_Recipient_address_rejected:_no_such_user/Giving_up_on_127\.0\.0\.1\./",
                        failed), failed
    assert bounce == (
        b"Date: " + date + b"\nFrom: MAILER-DAEMON@mx.e2e.test\nTo: alice@e2e.example\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.e2e.test.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        b"<reject@peer.example>:\n"
        b"127.0.0.1 does not like recipient.\n"
        b"Remote host said: 550 5.1.1 <reject@peer.example>: Recipient address rejected: no such user\n"
        b"Giving up on 127.0.0.1.\n\n"
        b"--- Below this line is a copy of the message.\n\n"
        b"Return-Path: <alice@e2e.example>\n" + received_line(mess)
        + b"From: alice@e2e.example\nSubject: to postfix\n\n")     # the copy: headers only (docs/bounces.md)
