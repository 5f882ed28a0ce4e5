"""Mailbox users in vpopmail's tables (SQLite file, or vpopmail's MySQL database).

    users = open_users(home, controls)   # nothing connects until the first question
    users.lookup("joe", "example.org")   # Mailbox or None; UsersUnavailable when the DB is down

See docs/users.md.
"""
from qmailpy.users.base import Mailbox, Users, UsersError, UsersUnavailable, open_users  # noqa: F401
