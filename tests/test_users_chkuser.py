"""chkuser's recipient check against both backends: users, catch-alls, alias files, lists."""
import os

import pytest

from mysql_fixture import backend  # noqa: F401 (fixture)
from qmailpy.users import UsersUnavailable, admin, chkuser
from qmailpy.users.chkuser import NOTOURS, NOUSER, OK, check_recipient
from qmailpy.users.schema import BOUNCE_MAIL


@pytest.fixture
def users(backend):  # noqa: F811
    u = backend.open(create=True)
    admin.add_domain(u, "example.org")
    admin.add_user(u, "joe@example.org", "pw")
    admin.add_user(u, "first.last@example.org", "pw")
    return u


def put(users, name, text=""):
    path = os.path.join(users.domain_dir("example.org"), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_users_and_strangers(users):
    assert check_recipient(users, "joe@example.org") == OK
    assert check_recipient(users, "JOE@Example.ORG") == OK
    assert check_recipient(users, "first.last@example.org") == OK
    assert check_recipient(users, "ann@example.org") == NOUSER
    assert check_recipient(users, "joe@elsewhere.test") == NOTOURS
    assert check_recipient(users, "joe") == NOTOURS
    assert check_recipient(users, "") == NOTOURS


def test_an_empty_local_part_is_not_ours_to_judge(users):
    """"@example.org" is no recipient chkuser judges, even with a catch-all that would take it."""
    put(users, ".qmail-default", "./catchall/Maildir/\n")
    assert check_recipient(users, "@example.org") == NOTOURS
    assert check_recipient(users, "x@example.org") == OK


def test_alias_domain(users):
    admin.add_alias_domain(users, "example.org", "example.net")
    assert check_recipient(users, "joe@example.net") == OK
    assert check_recipient(users, "ann@example.net") == NOUSER


def test_catchall_default(users):
    path = put(users, ".qmail-default", "./catchall/Maildir/\n")
    assert check_recipient(users, "anybody@example.org") == OK
    os.unlink(path)
    assert check_recipient(users, "anybody@example.org") == NOUSER


def test_vpopmail_bounce_default_is_no_catchall(users):
    put(users, ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    assert check_recipient(users, "anybody@example.org") == NOUSER
    assert check_recipient(users, "joe@example.org") == OK


def test_alias_files(users):
    put(users, ".qmail-info", "&joe@example.org\n")
    put(users, ".qmail-sales:team", "&joe@example.org\n")        # qmail: dots become colons
    put(users, ".qmail-lists-default", "|true\n")
    assert check_recipient(users, "info@example.org") == OK
    assert check_recipient(users, "sales.team@example.org") == OK
    assert check_recipient(users, "lists-anything@example.org") == OK
    assert check_recipient(users, "lists@example.org") == NOUSER
    assert check_recipient(users, "infox@example.org") == NOUSER
    assert check_recipient(users, "../.qmail-info@example.org") == NOUSER


def test_a_leading_dash_finds_dash_default(users):
    """qmail-local tries .qmail--default for ext "-x" (qmesearch: every i with ext[i-1] == '-',
    i = 1 included), so chkuser must find it too; delivery delivers "-x@" through it."""
    put(users, ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    assert check_recipient(users, "-x@example.org") == NOUSER
    put(users, ".qmail--default", "&joe@example.org\n")
    assert check_recipient(users, "-x@example.org") == OK
    assert check_recipient(users, "-@example.org") == OK
    assert check_recipient(users, "x@example.org") == NOUSER


def test_ezmlm_list_needs_its_dotqmail_files(users):
    """A list directory alone delivers nothing: ezmlm-make's .qmail-<list>-default does."""
    put(users, "news/mailinglist", "")
    assert check_recipient(users, "news-subscribe@example.org") == NOUSER
    put(users, ".qmail-news-default", "|ezmlm-manage\n")
    put(users, ".qmail-news", "|ezmlm-send\n")
    assert check_recipient(users, "news-subscribe@example.org") == OK
    assert check_recipient(users, "news@example.org") == OK


def test_default_is_never_an_alias_file(users):
    """default@ is handled by .qmail-default itself: vpopmail's bounce line refuses it."""
    put(users, ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    assert check_recipient(users, "default@example.org") == NOUSER


def test_an_alias_file_beats_a_locked_mailbox_and_a_catchall_does_not(users, backend):  # noqa: F811
    """vpopmail's order: qmail-local reads .qmail-joe before .qmail-default runs vdelivermail,
    whose catch-all argument is only for users it cannot find."""
    put(users, ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' joe@example.org\n")
    backend.sql("UPDATE vpopmail SET pw_gid = ? WHERE pw_name = 'joe'", (BOUNCE_MAIL,))
    assert check_recipient(users, "joe@example.org") == NOUSER
    assert check_recipient(users, "anybody@example.org") == OK
    put(users, ".qmail-joe", "&ann@example.net\n")
    assert check_recipient(users, "joe@example.org") == OK


@pytest.mark.parametrize("what", ["directory", "default"])
def test_a_domain_directory_we_cannot_look_into_is_temporary(users, what):
    """Never 'no mailbox' because a file could not be looked at: UsersUnavailable (451).
    A symbolic link loop fails for root too (EACCES as qmaild: tests/test_production_chkuser.py)."""
    d = users.domain_dir("example.org")
    if what == "directory":
        os.rename(d, d + ".real")
        os.symlink(os.path.basename(d), d)                  # domains/example.org -> itself
        path = d + "/.qmail-info"
    else:
        path = os.path.join(d, ".qmail-default")
        os.symlink(".qmail-default", path)
    if what == "default":        # .qmail-joe answers (absent), then the mailbox
        assert check_recipient(users, "joe@example.org") == OK
    with pytest.raises(UsersUnavailable) as e:
        check_recipient(users, "info@example.org")
    assert str(e.value) == "cannot look into %s: %s" % (path, os.strerror(40)), str(e.value)   # ELOOP


def test_a_name_too_long_for_a_file_is_no_alias(users):
    assert check_recipient(users, "x" * 300 + "@example.org") == NOUSER


def test_replies():
    assert chkuser.CHKUSR_06_NORCPT == "550 sorry, no mailbox here by that name (#5.1.1 - chkusr)"
    assert chkuser.RESOURCE.startswith("451 ")


def test_a_slash_never_reaches_another_domains_files(users):
    """A `/` in the user would name a file below the domain directory that no admin made an
    alias (here .qmail-joe/x-default, through a directory named .qmail-joe): the `/` guard
    alone refuses it (dots become colons, so `..` cannot climb anyway)."""
    d = users.domain_dir("example.org")
    os.makedirs(os.path.join(d, ".qmail-joe"))
    with open(os.path.join(d, ".qmail-joe", "x-default"), "w") as f:
        f.write("&list@example.net\n")
    assert check_recipient(users, "joe/x-y@example.org") == NOUSER
    assert check_recipient(users, "joe/..@example.org") == NOUSER


def test_alias_file_names_fold_ascii_only_as_qmail_local_does(users):
    """qmail-local finds .qmail-<ext> after case_lowerb(): A-Z only. A file it reads is an alias
    (.qmail-Ärger for Ärger@); one it never reads is none (.qmail-kate for the Kelvin sign's
    \\u212aate@, which Unicode lower-casing turns into kate)."""
    put(users, ".qmail-\u00c4rger", "&joe@example.org\n")
    put(users, ".qmail-kate", "&joe@example.org\n")
    assert check_recipient(users, "\u00c4rger@example.org") == OK
    assert check_recipient(users, "\u00c4RGER@example.org") == OK
    assert check_recipient(users, "kate@example.org") == OK
    assert check_recipient(users, "\u212aate@example.org") == NOUSER


def test_an_address_virtualdomains_routes_elsewhere_is_not_the_domains_to_judge(users, backend):  # noqa: F811
    """qmail-users adddomain gives postmaster@DOMAIN to alias through the virtualdomains line
    `postmaster@DOMAIN:alias` (vadddomain makes a postmaster mailbox instead); qmail-send
    routes such an address by that line, never to the domain's mailboxes, but chkuser judged
    it by the mailboxes: RFC 5321's postmaster@ was refused 550 at RCPT."""
    from qmailpy.users.answers import Answers
    backend.home.control("virtualdomains", "example.org:example.org\npostmaster@example.org:alias\n"
                                           "sales@Example.ORG:sales\n")
    answers = Answers(lambda: users, backend.controls())
    assert answers.check_recipient("postmaster@example.org") == NOTOURS
    assert answers.check_recipient("Postmaster@EXAMPLE.org") == NOTOURS
    assert answers.check_recipient("sales@example.org") == NOTOURS
    assert answers.check_recipient("joe@example.org") == OK
    assert answers.check_recipient("ann@example.org") == NOUSER
    assert answers.check_recipient("postmaster@elsewhere.test") == NOTOURS
    lines = ["postmaster@example.org:alias"]
    assert check_recipient(users, "postmaster@example.org", lines) == NOTOURS
    assert check_recipient(users, "postmaster@example.org") == NOUSER        # without the line: no mailbox


def test_user_ext_is_the_mailbox_delivery_gives_it_to(users):
    """qmail-lspawn delivers joe-ext@ to the mailbox joe (step 4: the longest user of user-ext,
    as vpopmail's QMAIL_EXT and chkuser's CHKUSER_USERS_DASH); chkuser stopped after the
    catch-all and refused joe-lists@ 550 though delivery would have put it in joe's Maildir."""
    assert check_recipient(users, "joe-lists@example.org") == OK
    assert check_recipient(users, "joe-a-b@example.org") == OK
    assert check_recipient(users, "first.last-x@example.org") == OK
    assert check_recipient(users, "ann-lists@example.org") == NOUSER
    assert check_recipient(users, "-joe@example.org") == NOUSER
    users.db.execute("UPDATE vpopmail SET pw_gid = ? WHERE pw_name = 'joe'", (BOUNCE_MAIL,))
    assert check_recipient(users, "joe-lists@example.org") == NOUSER        # delivery: locked, bounced


def test_a_dotqmail_default_that_is_no_file_is_none_and_never_waited_on(users):
    """A mailbox's |program runs as the domain directory's owner (vpopmail), so it can put a
    FIFO where .qmail-default was. qmail-local opens .qmail files O_NDELAY and takes one that is
    not a regular file for none (qmeexists()); the readers of this file (qmail-lspawn, as root
    and alone for every local delivery; qmail-usersd's workers) opened it blocking and waited
    for a writer for ever. It is none here too, answered at once."""
    import signal

    def stuck(signum, frame):
        raise AssertionError(".qmail-default opened blocking")
    os.mkfifo(os.path.join(users.domain_dir("example.org"), ".qmail-default"))
    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(5)
    try:
        assert check_recipient(users, "ann@example.org") == NOUSER
        assert check_recipient(users, "joe-tag@example.org") == OK
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_an_alias_file_that_is_no_file_is_none(users):
    """qmail-local reads .qmail-<user> only when it is a regular file (qmeexists()); a directory
    or FIFO of that name is none, and vdelivermail then finds the mailbox. chkuser and
    qmail-lspawn took any name there for an alias file: qmail-lspawn sent joe's mail to the
    domain directory, where qmail-local passed the directory by and the domain's
    .qmail-default bounced it, joe's mailbox never tried."""
    put(users, ".qmail-default", "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n")
    d = users.domain_dir("example.org")
    os.mkdir(os.path.join(d, ".qmail-joe"))
    os.mkfifo(os.path.join(d, ".qmail-info"))
    os.mkdir(os.path.join(d, ".qmail-lists-default"))
    from qmailpy.users import domainfiles
    assert [domainfiles.alias_file(d, u) for u in ("joe", "info", "lists-x")] == [None, None, None]
    assert check_recipient(users, "joe@example.org") == OK            # the mailbox
    assert check_recipient(users, "info@example.org") == NOUSER
    assert check_recipient(users, "lists-x@example.org") == NOUSER


def test_a_dotqmail_default_that_is_no_file_is_never_opened(users):
    """Run as root for every local delivery, qmail-lspawn must not open for reading whatever the
    directory's owner (vpopmail) links .qmail-default to: a device has side effects on open
    (/dev/watchdog starts the watchdog, a tape rewinds), a FIFO lets its waiting writer go. The
    file is looked at through an O_PATH descriptor and read only when it is a regular one. Here
    a writer waits on a FIFO: had the reader opened it, the writer would have been let go."""
    from waitingfifo import writer_waiting_behind
    with writer_waiting_behind(users.domain_dir("example.org"), ".qmail-default"):
        assert check_recipient(users, "ann@example.org") == NOUSER
