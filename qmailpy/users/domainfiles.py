"""Domain-level .qmail files: where vpopmail domains keep aliases and catch-alls.

In `<vpopmaildir>/domains/<domain>/`: `.qmail-<user>` (a dot in the user
becomes a colon, as qmail-local names files), `.qmail-<prefix>-default` for
`<prefix>-anything` (the longest prefix first), and `.qmail-default` for every
other user. vpopmail's own `.qmail-default` is `| vdelivermail '' bounce-no-mailbox`:
no catch-all. qmail-local, run in the domain directory with ext = the user,
chooses among the files the same way (qmailpy.local.dotqmail.search).

chkuser (RCPT) and qmail-lspawn (delivery) ask these questions here, so that
RCPT accepts what delivery delivers. A question that cannot be answered (no
search permission, an I/O error) raises OSError: never "there is no such file".
Only os (and stat, which os imports), users.names (which chkuser loads anyway) and
fileio (which imports only os) are imported: qmail-smtpd loads this per connection.
"""
import errno
import os
import stat

from qmailpy.users.names import lower

BOUNCE_ALL = "bounce-no-mailbox"   # vdelivermail's BOUNCE_ALL, chkuser's CHKUSER_BOUNCE_STRING
DELETE_ALL = "delete"              # vdelivermail's DELETE_ALL: accept and drop
DEFAULT = ".qmail-default"
DEFAULT_READ = 1023                # chkuser looks at the first 1023 bytes of .qmail-default
DASH = "-"
ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)     # no such file can be there


def dotqmail(name):
    """qmail's .qmail file name for an extension: A-Z lower-cased (qmail-local's case_lowerb(),
    never Unicode's lower(), which makes the Kelvin sign a 'k'), dots become colons."""
    return ".qmail-" + lower(name).replace(".", ":")


def usable(user):
    """A user part that names a file in the domain directory and nothing outside it."""
    return bool(user) and "/" not in user and "\0" not in user


def _exists(path):
    """Is there a .qmail file at `path`? Only a regular file is one (qmail-local's qmeexists():
    a directory or FIFO of that name is passed by)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in ABSENT:
            return False
        raise
    return stat.S_ISREG(st.st_mode)


def alias_file(domain_dir, user):
    """The name of the .qmail-<user> or .qmail-<prefix>-default file that handles `user`, or None.

    `.qmail-default` itself is not an alias file (see default_head).
    """
    if not usable(user):
        return None
    name = dotqmail(user)
    if name != DEFAULT and _exists(os.path.join(domain_dir, name)):
        return name
    i = user.rfind(DASH)
    while i >= 0:                   # a leading dash too: "-x" -> .qmail--default, as qmail-local
        name = dotqmail(user[:i] + DASH + "default")
        if _exists(os.path.join(domain_dir, name)):
            return name
        i = user.rfind(DASH, 0, i)
    return None


def ext_file(directory, ext):
    """The .qmail file qmail-local, run in `directory` with dash '-' and this ext, would take
    (alias_file's, else .qmail-default), or None when it would find none."""
    name = alias_file(directory, ext)
    if name is None and usable(ext) and _exists(os.path.join(directory, DEFAULT)):
        name = DEFAULT
    return name


def default_head(domain_dir):
    """The first DEFAULT_READ bytes of the domain's .qmail-default, or None without one.

    As qmail-local's qmeexists(), a .qmail-default that is not a regular file is none. The
    directory's owner (vpopmail, whom any mailbox's |program runs as) may link it to anything,
    and its readers include qmail-lspawn, as root and alone for every local delivery: so the
    name is resolved once to an O_PATH descriptor, which opens nothing for reading, and only a
    regular file is then opened, through that descriptor (qmailpy.fileio.open_regular). A FIFO
    is never waited on (nor its writer let go), a device never opened (/dev/watchdog would
    start the watchdog)."""
    from qmailpy.fileio import open_regular
    path = os.path.join(domain_dir, DEFAULT)
    try:
        fd, _ = open_regular(path)
    except OSError as e:
        if e.errno in ABSENT:
            return None
        raise
    if fd is None:
        return None
    with open(fd, "rb") as f:
        try:
            return f.read(DEFAULT_READ)
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None


def is_catchall(head):
    """Does a .qmail-default (its head, from default_head) deliver everybody's mail?

    Not when there is none, nor when it says bounce-no-mailbox (chkuser's test,
    which vpopmail's own `| vdelivermail '' bounce-no-mailbox` passes).
    """
    return head is not None and BOUNCE_ALL.encode() not in head
