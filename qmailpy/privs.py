"""Who a program runs as: qmail's users when started as root, else the invoking user.

Python programs cannot be setuid, so privilege separation comes from starting
as root and dropping to qmail's users (qmaild, qmailq, qmails, qmailr, the
mailbox owner). Single-user mode (QMAILPY_SINGLEUSER=1, used by `make run`
and development) runs everything as the invoking user, root included, and
never switches users: never use it in production.
"""
import os


def single_user(environ):
    return environ.get("QMAILPY_SINGLEUSER", "") not in ("", "0")


def drops_privileges(environ):
    """True when this process should switch to qmail's users (root, not single-user mode)."""
    return os.getuid() == 0 and not single_user(environ)
