"""bin/sendmail: qmail's sendmail interface over bin/qmail-inject, -bs over qmail-smtpd, -bp, mailq.

Real processes on a scratch home with the real qmail-queue. The -bs part runs every recorded
dialogue of tests/dialogues/ that makes sense without TCP through `sendmail -bs` (stdin/stdout
pipes), with the environment sendmail gives qmail-smtpd (RELAYCLIENT, TCPREMOTEINFO=sendmail-bs...).
"""
import os
import re
import select
import signal
import subprocess

import pytest

from conftest import Home, program
from dialogue import Dialogue, check_lines, check_logs, check_queued
from qmailpy.queue.layout import create_queue
from test_dialogues import FILES, queued_messages, read_lines, setup_home


@pytest.fixture
def qhome(tmp_path):
    home = Home(tmp_path / "qmail")
    home.control("me", "host.example\n")
    create_queue(home.root)
    return home


def env_of(home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMAIL", "MAIL", "USER", "LOGNAME", "NAME"))}
    env.update(QMAILHOME=home.root, QMAILQUEUE=program("qmail-queue"), QMAILPY_SINGLEUSER="1", USER="cron")
    env.update(extra)
    return env


def sendmail(home, *args, input=b"", argv0=None, **env):
    path = program("sendmail")
    if argv0:
        link = os.path.join(os.path.dirname(home.root), argv0)
        if not os.path.exists(link):
            os.symlink(path, link)
        path = link
    return subprocess.run([path, *args], input=input, capture_output=True, env=env_of(home, **env), timeout=60)


def one_message(home):
    [(records, body)] = queued_messages(home)
    return records, body


CRON = (b"From: root (Cron Daemon)\nTo: cron\nSubject: Cron <cron@host> backup.sh\n"
        b"Content-Type: text/plain; charset=UTF-8\n\nbackup done\n")


def test_cron_invocation(qhome):
    """What Debian's cron runs: sendmail -FCronDaemon -i -B8BITMIME -oem USER."""
    r = sendmail(qhome, "-FCronDaemon", "-i", "-B8BITMIME", "-oem", "cron", input=CRON)
    assert (r.returncode, r.stderr) == (0, b"")
    records, body = one_message(qhome)
    assert records == ["Fcron@host.example", "Tcron@host.example"]
    lines = body.split(b"\n")
    assert re.fullmatch(rb"Date: \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000", lines[0])
    assert re.fullmatch(rb"Message-ID: <\d{14}\.\d+\.qmail@host\.example>", lines[1])
    assert lines[2:] == [b"From: root@host.example (Cron Daemon)", b"To: cron@host.example",
                         b"Subject: Cron <cron@host> backup.sh", b"Content-Type: text/plain; charset=UTF-8",
                         b"", b"backup done", b""]


def test_t_takes_recipients_from_the_header_and_f_F(qhome):
    msg = b"To: ann@x.example\nBcc: hidden@x.example\nSubject: t\n\nbody\n"
    r = sendmail(qhome, "-t", "-oi", "-f", "bounces@lists.example", "-F", "The Lists", "-v", "extra", input=msg)
    assert (r.returncode, r.stderr) == (0, b"")
    records, body = one_message(qhome)
    assert records == ["Fbounces@lists.example", "Textra@host.example", "Tann@x.example", "Thidden@x.example"]
    assert b"\nFrom: bounces@lists.example\nTo: ann@x.example\nSubject: t\n\nbody\n" in body   # do_sender()
    assert b"Bcc" not in body


@pytest.mark.parametrize("sender, envelope, from_", [
    ("bounces@lists.example", "bounces@lists.example", b"bounces@lists.example"),
    ("a@b@lists.example", "a@b@lists.example", b'"a@b"@lists.example'),
    ("alice", "alice@host.example", b"alice@host.example"),
    ("", "", b'""@host.example'),
])
def test_f_makes_the_from_field_too(qhome, sender, envelope, from_):
    """netqmail's and notqmail's sendmail.c do_sender(): -f also names the default From field. It
    unsets QMAILNAME, MAILNAME (so -F too), NAME, QMAILHOST and MAILHOST and sets QMAILUSER to
    the part before the last '@' and QMAILHOST to the part after it (QMAILUSER to all of it
    without one). qmailpy kept the caller's From (cron@host with -F's name) whatever -f said."""
    names = dict(QMAILNAME="Q", MAILNAME="M", NAME="N", QMAILHOST="qh.example", MAILHOST="mh.example")
    r = sendmail(qhome, "-F", "The Lists", "-f", sender, "joe", input=b"Subject: t\n\nbody\n", **names)
    assert (r.returncode, r.stderr) == (0, b"")
    records, body = one_message(qhome)
    assert records == ["F" + envelope, "Tjoe@host.example"]
    assert b"\nFrom: %s\nCc: recipient list not shown: ;\nSubject: t\n\nbody\n" % from_ in body


def test_f_leaves_a_from_field_of_the_message_alone(qhome):
    r = sendmail(qhome, "-f", "bounces@lists.example", "joe", input=b"From: Ann <ann@x.example>\n\nbody\n")
    assert (r.returncode, r.stderr) == (0, b"")
    assert b"\nFrom: Ann <ann@x.example>\n" in one_message(qhome)[1]


def test_no_recipients_is_queued_as_in_qmail(qhome):
    """qmail-inject does not look for recipients ('could check at this point whether there are
    any recipients', finishheader()): sendmail -t with none queues the message with none, exit 0
    and nothing said, as qmail's; qmail-send then finds nothing to deliver."""
    r = sendmail(qhome, "-t", input=b"Subject: none\n\nbody\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    records, body = one_message(qhome)
    assert records == ["Fcron@host.example"]
    assert b"\nCc: recipient list not shown: ;\nSubject: none\n\nbody\n" in body


def test_without_t_only_the_arguments_are_recipients(qhome):
    r = sendmail(qhome, "joe", input=b"To: ann@x.example\n\nbody\n")
    assert r.returncode == 0
    assert one_message(qhome)[0] == ["Fcron@host.example", "Tjoe@host.example"]


def test_ignored_options_as_qmail(qhome):
    r = sendmail(qhome, "-oi", "-odb", "-em", "-x", "-m", "-p", "smtp:x", "-EJunk", "-J", "-bm", "--", "-joe",
                 input=b"\n")
    assert (r.returncode, r.stderr) == (0, b"")
    assert one_message(qhome)[0] == ["Fcron@host.example", "T-joe@host.example"]


@pytest.mark.parametrize("args, first", [
    (["-q"], b"sendmail: illegal option -- q\n"),
    (["-bv", "joe"], b""),
    (["-f"], b"sendmail: option requires an argument -- f\n"),
])
def test_usage_errors(qhome, args, first):
    r = sendmail(qhome, *args, input=b"To: x\n\nbody\n")
    assert r.returncode == 100
    assert r.stderr == first + b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"
    assert queued_messages(qhome) == []


@pytest.mark.parametrize("argv0", ["mailq", "newaliases"])
def test_usage_errors_name_the_program_as_run(qhome, argv0):
    """sgetopt.c names the program by the last part of argv[0]; die_usage() always says sendmail."""
    r = sendmail(qhome, "-q", argv0=argv0)
    assert (r.returncode, r.stdout) == (100, b"")
    assert r.stderr == (b"%s: illegal option -- q\n" % argv0.encode() +
                        b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n")


def test_relative_qmailhome(qhome):
    """sendmail enters its home as qmail's does; a relative $QMAILHOME still means the same home."""
    top = os.path.dirname(qhome.root)
    r = subprocess.run([program("sendmail"), "joe"], input=b"\nbody\n", capture_output=True, timeout=60,
                       cwd=top, env=env_of(qhome, QMAILHOME=os.path.basename(qhome.root)))
    assert (r.returncode, r.stderr) == (0, b"")
    assert one_message(qhome)[0] == ["Fcron@host.example", "Tjoe@host.example"]
    r = subprocess.run([program("sendmail"), "-bp"], capture_output=True, timeout=60, cwd=top,
                       env=env_of(qhome, QMAILHOME=os.path.basename(qhome.root)))
    assert (r.returncode, r.stderr) == (0, b"")


def test_no_home(tmp_path):
    r = subprocess.run([program("sendmail"), "joe"], input=b"x\n", capture_output=True,
                       env=dict(os.environ, QMAILHOME=str(tmp_path / "none")), timeout=60)
    assert (r.returncode, r.stderr) == (111, b"sendmail: fatal: unable to switch to qmail home directory\n")


def test_no_queue_program(qhome):
    """qmail_open() forks; the child's failed exec is its exit 120, which qmail_close() reports."""
    r = sendmail(qhome, "joe", input=b"\nbody\n", QMAILQUEUE="/nonexistent/qmail-queue")
    assert (r.returncode, r.stderr) == (111, b"qmail-inject: fatal: unable to exec qq (#4.3.0)\n")


def queue_one(home):
    """A message for joe, its info/ and local/ files as qmail-send's preprocessing leaves them; its number."""
    assert sendmail(home, "joe", input=b"\nbody\n").returncode == 0
    [msgid] = [int(n) for n in os.listdir(os.path.join(home.root, "queue", "todo"))]
    for channel, record in (("info", b"Fcron@host.example\0"), ("local", b"Tjoe@host.example\0")):
        with open(os.path.join(home.root, "queue", channel, str(msgid % 23), str(msgid)), "wb") as f:
            f.write(record)
    return msgid


def test_bp_and_mailq_list_the_queue(qhome):
    msgid = queue_one(qhome)
    qread = subprocess.run([program("qmail-qread")], capture_output=True, env=env_of(qhome), timeout=60)
    assert b"#%d" % msgid in qread.stdout and b"\tlocal\tjoe@host.example" in qread.stdout
    for r in (sendmail(qhome, "-bp"), sendmail(qhome, argv0="mailq")):
        assert (r.returncode, r.stdout, r.stderr) == (0, qread.stdout, b"")
    r = sendmail(qhome, argv0="newaliases")
    assert (r.returncode, r.stderr) == (100, b"sendmail: fatal: please use fastforward/newaliases instead\n")


def test_bp_and_qread_end_quietly_when_the_reader_goes(qhome):
    """qmail-qread leaves SIGPIPE at its default: mailq | head -1, mailq | grep -q x end it at
    once, killed by SIGPIPE, with nothing on stderr (cron would mail a Python error)."""
    queue_one(qhome)
    for argv in ([program("sendmail"), "-bp"], [program("qmail-qread")]):
        r, w = os.pipe()
        os.close(r)
        try:
            p = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, env=env_of(qhome), timeout=60)
        finally:
            os.close(w)
        assert (p.returncode, p.stderr) == (-signal.SIGPIPE, b"")


def test_help():
    r = subprocess.run([program("sendmail"), "--help"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(b"usage: sendmail [ -t ]")


# -- sendmail -bs with the recorded dialogues

# Dialogues whose point is what a TCP client's address or DNS decides (relay control by IP,
# tcprules, POP-before-SMTP, RBL, SPF and DNS checks on the client), or that need an argument
# for qmail-smtpd (checkpassword): sendmail -bs is always 127.0.0.1 with RELAYCLIENT set.
TCP_ONLY = ("@client", "@tcprules", "@poprelay", "@dns", "@checkpassword")
# ... and those about what RELAYCLIENT or DATABYTES=0 lift, by their expected replies: the
# rcpthosts refusal, chkuser (not asked for relaying clients), the size limit and its EHLO line.
LIFTED = ("553 sorry, that domain isn't in my list of allowed rcpthosts", "552 sorry, that message size",
          "no mailbox here by that name", "250 SIZE 1", "250-SIZE 1")


def makes_sense_without_tcp(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if any(line.split(" ")[0] in TCP_ONLY for line in text.split("\n")):
        return False
    replies = [line for line in text.split("\n") if line.startswith("S: ")]
    if any(reply in line for line in replies for reply in LIFTED):
        return False
    if "\n@control databytes " in text:         # DATABYTES=0 takes its place
        return False
    return "@env PROTO=" not in text


BS_FILES = [p for p in FILES if makes_sense_without_tcp(p)]


def bs_received(line):
    """qmail-smtpd's Received line as sendmail -bs's environment makes it."""
    if line.startswith("Received: from unknown ("):
        line = line.replace("from unknown (", "from localhost (", 1)
        line = line.replace(" (127.0.0.1)", " (sendmail-bs@127.0.0.1)")
    return line


class PipeEnd:
    """A pipe read as test_dialogues.read_lines reads a socket."""

    def __init__(self, fd):
        self.fd, self.timeout = fd, None

    def settimeout(self, timeout):
        self.timeout = timeout

    def recv(self, size):
        if not select.select([self.fd], [], [], self.timeout)[0]:
            raise TimeoutError("no answer from sendmail -bs")
        return os.read(self.fd, size)


def test_some_dialogues_make_sense_without_tcp():
    assert len(BS_FILES) >= 30, BS_FILES


@pytest.mark.parametrize("path", BS_FILES, ids=os.path.basename)
def test_bs_dialogue(tmp_path, path):
    d = Dialogue(path)
    for _, message_lines in d.queued:
        message_lines[:] = [bs_received(line) for line in message_lines]
    home, _ = setup_home(tmp_path, d)
    env = env_of(home, AUTHFAILDELAY="0")
    env.update(d.env)
    proc = subprocess.Popen([program("sendmail"), "-bs"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        out = PipeEnd(proc.stdout.fileno())
        steps = d.steps
        if not steps[0][0]:
            got, _ = read_lines(out, len(steps[0][1]))
            check_lines(got, steps[0][1], d.name + " greeting")
            steps = steps[1:]
        for data, expected in steps:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except BrokenPipeError:
                pass
            got, rest = read_lines(out, len(expected))
            check_lines(got, expected, "%s after %r" % (d.name, data[:60]))
            assert rest == b""
        if d.expect_closed:
            assert out.recv(100) == b""
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    check_queued(d, queued_messages(home))
    logged = [line.split(" ", 2)[2] for line in err.decode("utf-8", "replace").splitlines()
              if line.startswith("qmail-smtpd: ") and line.count(" ") >= 2]
    check_logs(logged, d.logs, d.name + " log")


def test_bs_relays_and_says_who(qhome):
    """A local program speaking SMTP on -bs may relay (RELAYCLIENT), and the Received line says so."""
    qhome.control("rcpthosts", "host.example\n")
    session = (b"HELO prog\r\nMAIL FROM:<app@host.example>\r\nRCPT TO:<far@elsewhere.example>\r\n"
               b"DATA\r\nSubject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    r = sendmail(qhome, "-bs", input=session)
    assert r.returncode == 0
    assert r.stdout.decode().split("\r\n")[:5] == ["220 host.example ESMTP", "250 host.example", "250 ok", "250 ok",
                                                   "354 go ahead"]
    records, body = one_message(qhome)
    assert records == ["Fapp@host.example", "Tfar@elsewhere.example"]
    assert body.startswith(b"Received: from localhost (HELO prog) (sendmail-bs@127.0.0.1)\n  by localhost with SMTP; ")
