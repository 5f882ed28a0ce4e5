"""What the users database raises, below base.py and its backends (sqlite, mysql), which
all import it: no module of the package imports one that imports it back."""


class UsersUnavailable(Exception):
    """The database cannot answer now (down, locked, misconfigured): a temporary failure."""


class UsersError(Exception):
    """An admin operation that cannot be done: it exists already, no such domain, too long."""


class MissingTable(Exception):
    """A table vpopmail creates on demand is not there (yet): an empty answer for readers."""


class NotShared(Exception):
    """The AUTH-failure count cannot be shared here (the users database is not MySQL/MariaDB):
    qmail-smtpd counts on this host (qmailpy.smtpd.authlimit)."""
