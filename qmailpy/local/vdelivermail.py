"""vpopmail's vdelivermail, understood instead of run: qmailpy has no such program.

A vpopmail domain directory ends in a `.qmail-default` like
`| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox`. vdelivermail delivers to
the users-database mailbox of $EXT, and for a user without one follows its last
argument (usernotfound() in vpopmail 5.4's vdelivermail.c). qmail-lspawn runs
qmail-local in a domain directory only for a recipient without a mailbox
(qmailpy.spawn.mailbox), so here the line always means that last argument:

  bounce-no-mailbox   bounce with the domain's .no-user.msg, else domains/.no-user.msg,
                      else "Sorry, no mailbox here by that name. (#5.1.1)"; one
                      that is there but cannot be read defers (vpopmail would bounce
                      with the default text)
  delete              accept and drop
  /dir                that mailbox directory: the lines of /dir/.qmail when it has one,
                      else /dir/Maildir/ (nothing is added to a path ending in Maildir/)
  |program, ./maildir/, &address or address
                      as the same .qmail line

Not exactly two arguments: deferred, "vdelivermail: invalid syntax in .qmail-default
file", as vdelivermail does. A line is vdelivermail's when it is a simple command
(no shell operators, variables or quoting tricks beyond '' and "") whose program's
file name is vdelivermail; anything else runs under /bin/sh as usual.
"""
import errno
import os

from qmailpy.local import dotqmail, errors
from qmailpy.users.domainfiles import BOUNCE_ALL, DELETE_ALL

PROGRAM = "vdelivermail"
SYNTAX = "vdelivermail: invalid syntax in .qmail-default file"
NO_USER_MSG = ".no-user.msg"
OPERATORS = frozenset("();<>|&")
SHELL_MAGIC = ("$", "`", "\\", "*", "?", "[", "~")


def arguments(command):
    """vdelivermail's arguments when the program line `command` runs it, else None."""
    if PROGRAM not in command or any(ch in command for ch in SHELL_MAGIC):
        return None
    import shlex
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:                 # unbalanced quotes: the shell's business
        return None
    if not words or os.path.basename(words[0]) != PROGRAM:
        return None
    if any(word and set(word) <= OPERATORS for word in words):
        return None
    return words[1:]


def no_user_text(domain_dir):
    """The bounce text: .no-user.msg of the domain directory, else of domains/, else qmail's.
    Only an absent file is passed over; one that cannot be read defers (a retry can give the
    right text), as qmail-local defers for a .qmail it cannot read."""
    from qmailpy.fileio import read_file
    for where in (domain_dir, os.path.dirname(os.path.normpath(domain_dir))):
        try:
            text = read_file(os.path.join(where, NO_USER_MSG))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise errors.temp("Unable to read %s: %s. (#4.3.0)" % (NO_USER_MSG, errors.error_str(e))) from None
        return text if text.endswith(b"\n") else text + b"\n"
    return (errors.NO_MAILBOX + "\n").encode()


def commands(args, homedir):
    """The .qmail commands (kind, argument) a vdelivermail line stands for.

    A bounce is ("bounce", text bytes); raises Die for a line with the wrong
    number of arguments.
    """
    if len(args) != 2:
        raise errors.temp(SYNTAX)
    target = args[1]
    if target == DELETE_ALL or target.startswith("#"):
        return []
    if target == BOUNCE_ALL:
        return [("bounce", no_user_text(homedir))]
    if target.startswith("/"):
        return _directory(target)
    return list(dotqmail.commands(os.fsencode(target)))


def _directory(path):
    """vdelivermail's delivery to a mailbox directory given by its path."""
    path = path if path.endswith("/") else path + "/"
    if path.endswith("/Maildir/"):
        return [("maildir", path)]
    found = dotqmail.read_file(path, ".qmail")
    if not found or not found[0]:
        return [("maildir", path + "Maildir/")]
    out = []
    for kind, arg in dotqmail.commands(found[0]):
        if kind in ("maildir", "mbox"):
            arg = os.path.join(path, arg)         # relative to that directory, as after vdelivermail's chdir
        out.append((kind, arg))
    return out
