"""maildirmake: make a Maildir, as qmail's maildirmake; -q and -f as Courier's.

    maildirmake dir               dir/{tmp,new,cur}, mode 0700 (dir must not exist)
    maildirmake -f Folder dir     the Maildir++ folder dir/.Folder/{tmp,new,cur} and its
                                  maildirfolder file (dir must be a Maildir)
    maildirmake -q QUOTA dir      the Maildir++ quota: dir/maildirsize with QUOTA on its first
                                  line and the current usage (dir is made when missing)

QUOTA is Courier's `10000000S`, `1000C` or `10000000S,1000C`, or vpopmail's
`10M`, `512K`, a number of bytes, or NOQUOTA (removes maildirsize). Nothing
else of Courier's maildirmake (shared folders, -s, -S, --add) is here.
Exit 0, 100 usage, 111 trouble (qmail's codes).
"""
import os

from qmailpy.cli.qmailtool import Fatal, Usage, oserror, run_tool
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

PROG = "maildirmake"
USAGE = "maildirmake [ -q quota ] [ -f folder ] dir"
HELP = """Makes the Maildir dir (tmp, new, cur; mode 0700), as qmail's maildirmake.
  -f folder  make the Maildir++ folder dir/.folder in the existing Maildir dir
  -q quota   set the Maildir++ quota of dir (10000000S, 1000C, 10000000S,1000C,
             10M, 512K, bytes, or NOQUOTA to remove it): writes dir/maildirsize
Exit 0 done, 100 usage, 111 trouble.
"""
SUBDIRS = ("tmp", "new", "cur")


def make(path):
    """mkdir path, then tmp, new, cur: qmail's order, so a half-made Maildir lacks cur/."""
    for where in (path,) + tuple(os.path.join(path, d) for d in SUBDIRS):
        try:
            os.mkdir(where, 0o700)
        except OSError as e:
            raise oserror(e, "mkdir " + where) from None


def is_maildir(path):
    return all(os.path.isdir(os.path.join(path, d)) for d in SUBDIRS)


def make_folder(maildir, folder):
    """Courier's -f: maildir/.folder as a Maildir, with an empty maildirfolder file."""
    if not folder or "/" in folder or folder.startswith(".") or folder in (".", ".."):
        raise Fatal("invalid folder name: %r" % folder, 100)
    if not is_maildir(maildir):
        raise Fatal("%s is not a Maildir" % maildir)
    path = os.path.join(maildir, "." + folder)
    make(path)
    marker = os.path.join(path, "maildirfolder")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise oserror(e, "create " + marker) from None
    return path


def quota_definition(text):
    """The Maildir++ definition for QUOTA ("" for NOQUOTA); Fatal(100) when it is not one."""
    from qmailpy.maildirpp import normalize, valid
    value = normalize(text)
    if value == "":
        return ""
    if value is None or not valid(value):
        raise Fatal("invalid quota: %r (e.g. 10000000S, 1000C, 10000000S,1000C, 10M)" % text, 100)
    return value


def set_quota(maildir, definition):
    """Write maildirsize: the definition and one line with the usage now (or remove it)."""
    from qmailpy import maildirpp
    path = os.path.join(maildir, maildirpp.NAME)
    try:
        if not definition:
            maildirpp.remove(maildir)
            return
        maildirpp.recount(maildir, definition)
    except OSError as e:
        raise oserror(e, "write " + path) from None


def body(args):
    from qmailpy.sgetopt import GetOpt
    quota = folder = None
    opts = GetOpt(PROG, args, "q:f:")
    for c, arg in opts:
        if c == "q":
            quota = arg
        elif c == "f":
            folder = arg
        else:
            raise Usage()
    rest = opts.rest()
    if len(rest) != 1 or not rest[0]:
        raise Usage()
    maildir = rest[0]
    definition = quota_definition(quota) if quota is not None else None
    os.umask(0o077)
    if folder is not None:
        make_folder(maildir, folder)
    elif definition is None or not os.path.exists(maildir):
        make(maildir)
    if definition is not None:
        if not is_maildir(maildir):
            raise Fatal("%s is not a Maildir" % maildir)
        set_quota(maildir, definition)
    return 0


@guard("maildirmake", EXIT_TROUBLE)
def main(argv=None):
    return run_tool(PROG, USAGE, HELP, body, argv)
