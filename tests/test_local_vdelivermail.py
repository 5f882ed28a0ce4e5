"""vpopmail's `| vdelivermail '' <what>` lines in a domain's .qmail-default, as qmail-local
honours them without the program: bounce, delete, forward, a mailbox directory."""
import os

import pytest

from qmailpy.local import errors, vdelivermail
from qmailpy.proto.qq import decode
from test_local_forward import box, captured  # noqa: F401 (fixture)
from test_local_support import maildirmake

MSG = b"Subject: catch\n\nbody\n"
VDM = "| /home/vpopmail/bin/vdelivermail '' %s\n"


@pytest.fixture
def domain(box):  # noqa: F811
    """A domain directory (as qmail-lspawn hands it to qmail-local: dash '-', ext = the user),
    forwards captured through $QMAILQUEUE (tests/test_local_forward.py's box)."""
    return box


def deliver(box, user="ann", flags=()):
    return box.deliver(MSG, local="v.test-" + user, dash="-", ext=user, host="v.test", flags=flags)


def forwarded(box):
    return decode(captured(box)["env"])


@pytest.mark.parametrize("line", [
    "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox",
    "|/home/vpopmail/bin/vdelivermail \"\" bounce-no-mailbox",
    "|vdelivermail '' bounce-no-mailbox",
])
def test_bounce_no_mailbox(domain, line):
    domain.dotqmail(".qmail-default", line + "\n")
    assert deliver(domain) == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")
    assert domain.files() == []


def test_bounce_text_from_no_user_msg(domain):
    domain.dotqmail(".qmail-default", VDM % "bounce-no-mailbox")
    with open(os.path.join(os.path.dirname(domain.home), ".no-user.msg"), "w") as f:
        f.write("No such user at all.")                          # domains/.no-user.msg
    assert deliver(domain) == (100, "No such user at all.\n")
    domain.dotqmail(".no-user.msg", "Nobody here.\nTry postmaster.\n")   # the domain's own wins
    assert deliver(domain) == (100, "Nobody here.\nTry postmaster.\n")


@pytest.mark.parametrize("where", ["domain", "domains"])
def test_no_user_msg_that_cannot_be_read_defers(domain, where):
    """A .no-user.msg that is there but cannot be read (a directory here; EIO in the fault
    sweeps) is not taken for an absent one: the bounce would go out with the wrong text, and
    a retry can give the right one. qmail-local defers as for a .qmail it cannot read."""
    domain.dotqmail(".qmail-default", VDM % "bounce-no-mailbox")
    os.mkdir(os.path.join(domain.home if where == "domain" else os.path.dirname(domain.home), ".no-user.msg"))
    assert deliver(domain) == (111, "Unable to read .no-user.msg: is a directory. (#4.3.0)\n")


def test_delete(domain):
    domain.dotqmail(".qmail-default", VDM % "delete")
    assert deliver(domain) == (0, "did 0+0+0\n")
    assert domain.files() == [] and os.listdir(domain.capture) == []


@pytest.mark.parametrize("target", ["joe@v.test", "'&joe@v.test'"])
def test_forward_to_an_address(domain, target):
    domain.dotqmail(".qmail-default", VDM % target)
    code, report = deliver(domain)
    assert code == 0 and report.startswith("did 0+1+0\nqp "), report
    assert forwarded(domain) == (b"alice@example.org", [b"joe@v.test"])


def test_deliver_to_a_mailbox_directory(domain, tmp_path):
    target = str(tmp_path / "postmaster")
    maildirmake(os.path.join(target, "Maildir"))
    domain.dotqmail(".qmail-default", VDM % target)
    assert deliver(domain) == (0, "did 1+0+0\n")
    [name] = domain.files(maildir=os.path.join(target, "Maildir"))
    got = domain.read(name, maildir=os.path.join(target, "Maildir"))
    assert got == b"Return-Path: <alice@example.org>\nDelivered-To: v.test-ann@v.test\n" + MSG
    domain.dotqmail(".qmail-default", VDM % (target + "/Maildir/"))       # the Maildir itself: nothing added
    assert deliver(domain) == (0, "did 1+0+0\n")
    assert len(domain.files(maildir=os.path.join(target, "Maildir"))) == 2


def test_mailbox_directory_with_its_own_dotqmail(domain, tmp_path):
    """vdelivermail follows <dir>/.qmail (e.g. a forward set up for postmaster), relative to <dir>."""
    target = str(tmp_path / "postmaster")
    maildirmake(os.path.join(target, "Copy"))
    with open(os.path.join(target, ".qmail"), "w") as f:
        f.write("./Copy/\n&boss@example.net\n")
    domain.dotqmail(".qmail-default", VDM % target)
    code, report = deliver(domain)
    assert code == 0 and report.startswith("did 1+1+0\nqp "), report
    assert len(domain.files(maildir=os.path.join(target, "Copy"))) == 1
    assert forwarded(domain) == (b"alice@example.org", [b"boss@example.net"])


def test_program_and_relative_maildir_targets(domain):
    domain.dotqmail(".qmail-default", VDM % "./Maildir/")
    assert deliver(domain) == (0, "did 1+0+0\n")
    domain.dotqmail(".qmail-default", "| vdelivermail '' '|echo no ann here; exit 100'\n")
    assert deliver(domain) == (100, "no ann here\n")


@pytest.mark.parametrize("line", ["| vdelivermail bounce-no-mailbox", "| vdelivermail '' a b"])
def test_wrong_number_of_arguments_defers(domain, line):
    domain.dotqmail(".qmail-default", line + "\n")
    assert deliver(domain) == (111, "vdelivermail: invalid syntax in .qmail-default file\n")


def test_alias_file_before_it_and_lines_after_a_bounce(domain):
    """A vdelivermail line is one .qmail line among others, in qmail-local's order."""
    domain.dotqmail(".qmail-info", "./Maildir/\n")
    domain.dotqmail(".qmail-default", "./Maildir/\n" + VDM % "bounce-no-mailbox")
    assert deliver(domain, "info") == (0, "did 1+0+0\n")
    assert deliver(domain, "ann") == (100, "Sorry, no mailbox here by that name. (#5.1.1)\n")
    assert len(domain.files()) == 2        # info's, and ann's line before the bounce (qmail: the retry repeats it)


def test_list_mode_shows_the_line(domain):
    domain.dotqmail(".qmail-default", VDM % "bounce-no-mailbox")
    assert deliver(domain, flags=("-n",)) == (
        0, "program  /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\ndid 0+0+1\n")


@pytest.mark.parametrize("command,args", [
    (" /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox", ["", "bounce-no-mailbox"]),
    ("vdelivermail \"\" delete", ["", "delete"]),
    ("vdelivermail '' /home/vpopmail/domains/v.test/postmaster", ["", "/home/vpopmail/domains/v.test/postmaster"]),
    ("vdelivermail x", ["x"]),
    ("vdelivermail '' x; rm -f y", None),              # shell operators: /bin/sh's business
    ("vdelivermail '' x | tee y", None),
    ("vdelivermail '' $HOME", None),
    ("vdelivermail '' 'unbalanced", None),
    ("preline vdelivermail '' x", None),
    ("/usr/local/bin/vdelivermail-wrapper '' x", None),
    ("/bin/echo vdelivermail", None),
])
def test_arguments(command, args):
    assert vdelivermail.arguments(command) == args


def test_other_programs_still_run_under_sh(domain):
    domain.dotqmail(".qmail-default", "| echo vdelivermail '' bounce-no-mailbox; exit 0\n")
    assert deliver(domain) == (0, "vdelivermail  bounce-no-mailbox\ndid 0+0+1\n")


def test_bounce_text_default_is_qmail_locals():
    assert vdelivermail.no_user_text("/nonexistent/domains/v.test") == (errors.NO_MAILBOX + "\n").encode()
