"""What the users database raises, below base.py and its backends (sqlite, mysql), which
all import it: no module of the package imports one that imports it back. absent(): the one
answer to "is this file of the users' there?" that never takes a stat it could not make for no."""
import os


class UsersUnavailable(Exception):
    """The database cannot answer now (down, locked, misconfigured): a temporary failure."""


class UsersError(Exception):
    """An admin operation that cannot be done: it exists already, no such domain, too long."""


class UsersTrouble(Exception):
    """An admin operation that failed for a reason a retry may fix (an I/O error, a full disk
    on this machine): nothing of it was kept; exit 111, not the refusal's 1."""


class MissingTable(Exception):
    """A table vpopmail creates on demand is not there (yet): an empty answer for readers."""


class NotShared(Exception):
    """The AUTH-failure count cannot be shared here (the users database is not MySQL/MariaDB):
    qmail-smtpd counts on this host (qmailpy.smtpd.authlimit)."""


def absent(path):
    """Is there no file at `path`? UsersUnavailable when that cannot be told (a directory on
    the way the caller may not search): a database not made yet has no mailboxes, and one out
    of reach must defer, never bounce (os.path.exists says False for both)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        raise UsersUnavailable("%s: %s" % (path, e.strerror or e)) from None
    return False
