"""qmail-newu: build users/cdb from users/assign, as qmail's qmail-newu (qmail-users(5)).

users/assign, under the qmail home:

    =local:user:uid:gid:homedir:dash:ext:     the address `local` exactly
    +prefix:user:uid:gid:homedir:dash:pre:    every address starting with `prefix`
    .                                         the end (required)

Keys are `!local\\0` (exact) and `!prefix` (wildcard), lower-cased; the
value is `user\\0uid\\0gid\\0homedir\\0dash\\0ext`; the key "" holds the
last characters of the prefixes (qmail-lspawn tries a prefix only where it
ends in one of them). qmail-lspawn reads the result (qmailpy.spawn.mailbox).
Every line is checked first, with the line number in the message, beyond
what qmail checks: the uid and gid are numbers and not 0 (qmail-lspawn never
delivers as root), the user is named, the home is an absolute path, dash is
empty or '-'. On any error the old users/cdb stays. Exit 0, 100 usage, 111.
"""
import os

from qmailpy.cli.qmailtool import Fatal, on_home, oserror, read, run_tool, write_cdb
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

PROG = "qmail-newu"
USAGE = "qmail-newu"
HELP = """Builds $QMAILHOME/users/cdb, which qmail-lspawn reads, from users/assign
(qmail-users(5): =local:user:uid:gid:homedir:dash:ext: and
+prefix:user:uid:gid:homedir:dash:pre: lines, then a line with a single dot).
A bad line is reported with its number and the old users/cdb is kept.
Exit 0 done, 111 a bad line or trouble reading or writing.
"""
SOURCE, TARGET = "users/assign", "users/cdb"
FORM = "=local:user:uid:gid:homedir:dash:ext: or +prefix:user:uid:gid:homedir:dash:pre:"


def _check(fields):
    """Why the six fields after the address are wrong, or None."""
    user, uid, gid, home, dash, _ext = fields
    if not user:
        return "no user name"
    for what, value in (("uid", uid), ("gid", gid)):
        if not (value.isdigit() and value.isascii()):
            return "%s is not a number: %r" % (what, value.decode("utf-8", "backslashreplace"))
    if int(uid) == 0:
        return "uid 0: qmail-lspawn never delivers as root"
    if not home.startswith(b"/"):
        return "the home directory is not an absolute path: %r" % home.decode("utf-8", "backslashreplace")
    if dash not in (b"", b"-"):
        return "dash is empty or '-', not %r" % dash.decode("utf-8", "backslashreplace")
    return None


def parse(data, name=SOURCE):
    """[(key, value)] for the cdb, the wildcard characters last; Fatal naming the first bad line."""
    pairs, wild = [], bytearray()
    lines = data.split(b"\n")
    ended = False
    for n, line in enumerate(lines, 1):
        if line.startswith(b"."):
            ended = True
            break
        if n == len(lines):                    # text after the last newline, or nothing at all
            break

        def bad(why):
            return Fatal("%s:%d: %s" % (name, n, why))
        if b"\0" in line:
            raise bad("a NUL byte")
        if line[:1] not in (b"=", b"+"):
            raise bad("not a line of users/assign (%s, or '.' at the end)" % FORM)
        colon = line.find(b":")
        if colon < 0:
            raise bad("no ':' after the address")
        rest = line[colon + 1:].split(b":")
        if len(rest) < 7:
            raise bad("%d fields after the address, 6 needed (%s)" % (len(rest) - 1, FORM))
        fields = rest[:6]
        why = _check(fields)
        if why:
            raise bad(why)
        local = line[1:colon].lower()
        if line[:1] == b"+":
            key = b"!" + local
            if local and local[-1:] not in wild:
                wild += local[-1:]
        else:
            key = b"!" + local + b"\0"
        pairs.append((key, b"\0".join(fields)))
    if not ended:
        raise Fatal("%s:%d: no line '.' at the end (is the file cut short?)" % (name, len(lines)))
    pairs.append((b"", bytes(wild)))
    return pairs


def read_assign(path):
    """users/assign's bytes; run by root, only a regular file root owns: users/ is the users
    service's directory (qmailu's), and qmailu could put an assign there for root to build into
    the users/cdb that qmail-lspawn takes from root alone, or link it to a root-owned device
    (/dev/zero: root would read for ever; /dev/watchdog: its open starts the watchdog), which
    is never opened (fileio.open_regular)."""
    if os.geteuid() != 0:
        return read(path, SOURCE)
    from qmailpy.fileio import close_quietly, open_regular, read_all
    try:
        fd, _ = open_regular(path)
        if fd is None:
            raise Fatal("unable to read %s: not a file" % SOURCE)
        try:
            owner = os.fstat(fd).st_uid
            if owner != 0:
                raise Fatal("%s belongs to uid %d, not root: not built (chown root %s if it is yours)"
                            % (SOURCE, owner, SOURCE))
            return read_all(fd)
        finally:
            close_quietly(fd)           # read-only, all read
    except OSError as e:                # the fstat or a read: never a traceback
        raise oserror(e, "read " + SOURCE) from None


def build(home):
    """Read users/assign, replace users/cdb; the number of assignments."""
    pairs = parse(read_assign(os.path.join(home, SOURCE)))
    write_cdb(os.path.join(home, TARGET), pairs, TARGET)
    return len(pairs) - 1


@guard("qmail-newu", EXIT_TROUBLE)
def main(argv=None):
    return run_tool(PROG, USAGE, HELP, on_home(build), argv)
