"""Maildir++ quota for a maildir delivery: refuse when over, else say where to count.

Where the limit comes from (docs/maildir.md):
- $MAILDIRQUOTA, set per delivery by qmail-lspawn from the users DB (vpopmail's
  pw_shell): a Maildir++ definition such as `10000000S` or `10000000S,1000C`;
  a plain number means bytes; a K or M multiplies the leading number (vpopmail's
  format_maildirquota: `10M`, `10MB`); `NOQUOTA` means no limit; unset or empty: fall back to
- the first line of the maildirsize file (the netqmail-maildir++ patch).
The decision copies Courier's docheckquota()/qcalc(): usage + this message
must not exceed any limit; when the file says "over", it is recounted unless
it is fresh (one total line, younger than 15 minutes, and no new/ or cur/
changed since: a POP3 server deletes without telling maildirsize). A count
that says "over" while new/ or cur/ changed under it is done again (Courier
gives up on such a count too): the message bounces only on a count nothing
disturbed, and defers after RECOUNTS disturbed ones. A definition from
$MAILDIRQUOTA that differs from the file's first line also forces a recount,
which writes the new definition. Reading a definition and the maildirsize file
is qmailpy.maildirpp's.

qmail-local asks twice (qmailpy.local.maildir): first without the lock and
without recounting (`decide=False`: refuse early only what is surely over),
then under maildirpp.size_lock, where the answer is final and a recount may
rewrite the file. needs_lock() says whether a delivery has a quota to keep.
"""
import os
import time

from qmailpy import maildirpp
from qmailpy.local import errors

ENV = "MAILDIRQUOTA"
FRESH = 15 * 60                 # seconds a one-line maildirsize is trusted when it says "over"
RECOUNTS = 3                    # counts that saw new/ or cur/ change before a delivery defers


def quota_root(maildir):
    """A folder holding a `maildirfolder` file counts against its parent Maildir++."""
    for _ in range(8):
        if not maildirpp.present(os.path.join(maildir, "maildirfolder")):
            break
        maildir = os.path.normpath(os.path.join(maildir, ".."))
    return maildir


def needs_lock(maildir, environ):
    """The Maildir++ root whose maildirsize a delivery must update (under the lock), or None
    when there is neither a maildirsize file nor a quota in $MAILDIRQUOTA."""
    root = quota_root(maildir)
    if maildirpp.normalize(environ.get(ENV)) or maildirpp.present(os.path.join(root, maildirpp.NAME)):
        return root
    return None


def check(maildir, environ, size, host, now=None, decide=True):
    """Raise Die(100, 'User over quota.') if `size` more bytes do not fit.

    Returns the maildirsize path to append the delta to after delivery, or
    None when there is no such file. OSError (unreadable folders, full disk)
    propagates: the caller makes it a temporary failure, not a bounce.
    With decide=False nothing is rewritten and only a fresh "over" refuses:
    a recount is left to the check under the lock.
    """
    root = quota_root(maildir)
    path = os.path.join(root, maildirpp.NAME)
    state = maildirpp.read(path)
    given = maildirpp.normalize(environ.get(ENV))
    if given is not None:
        definition = given
    else:
        definition = state.definition if state is not None else ""
    if not definition:
        return path if state is not None else None
    recount = state is None or state.too_big or (given is not None and given != state.definition)
    if recount and not decide:
        return path
    if not recount:
        if not maildirpp.over(definition, state.size + size, state.count + 1):
            return path
        now = time.time() if now is None else now
        if (state.nlines == 1 and 0 <= now - state.mtime < FRESH    # ahead: a clock stepped back
                and not maildirpp.changed_since(root, state.mtime)):   # mail deleted since: recount
            raise errors.perm(errors.OVER_QUOTA)
        if not decide:
            return path
    for _ in range(RECOUNTS):
        before = maildirpp.folder_times(root)
        total, count = maildirpp.scan(root)
        maildirpp.rewrite(root, definition, total, count, host)
        if not maildirpp.over(definition, total + size, count + 1):
            return path
        if maildirpp.folder_times(root) == before:
            raise errors.perm(errors.OVER_QUOTA)
    maildirpp.append(path, 0, 0)    # a second line: the disturbed count is no fresh recount to trust
    raise errors.temp(errors.MAILDIR_TEMP)          # still changing: decide at the retry


def add(path, size, host=None):
    """After a delivery (the message in new/, the lock held): append `<size> 1`. Where that
    fails (an I/O error, a full disk), the Maildir is recounted into a new file instead, this
    message with the rest: maildirsize sums right again. Where that fails too, the count stays
    short until the next recount; never a deferral, which would deliver the message twice."""
    if path is None:
        return
    try:
        maildirpp.append(path, size, 1)
    except OSError:
        try:
            state = maildirpp.read(path)
            if state is not None:
                root = os.path.dirname(path)
                maildirpp.rewrite(root, state.definition, *maildirpp.scan(root), host=host)
        except OSError:
            pass
