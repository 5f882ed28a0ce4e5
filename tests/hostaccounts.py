"""qmail's users and groups on this machine: which exist, and removing the ones a test made.

The production install (and `make run` or `install.py --demo` as root) create qmail's
accounts with useradd/groupadd. Tests never depend on them (a real qmail host has its
own) and leave the machine with the accounts it had: conftest.py removes, at the end of
the session, every one of these accounts the session created, and a test that makes them
holds kept_as_found() (the `host_accounts` fixture) so that two suites running at once on
this machine (two checkouts) never remove accounts the other is using.
"""
import contextlib
import fcntl
import grp
import os
import pwd
import subprocess

from qmailpy.install import accounts


def _exists(kind, name):
    try:
        (grp.getgrnam if kind == "group" else pwd.getpwnam)(name)
    except KeyError:
        return False
    return True


def accounts_present():
    return ({("group", g) for g in accounts.GROUPS if _exists("group", g)}
            | {("user", u[0]) for u in accounts.USERS if _exists("user", u[0])})


def remove_accounts(made):
    """userdel/groupdel what the test created (users first: a group may be someone's primary)."""
    for kind, name in sorted(made, key=lambda x: x[0] != "user"):
        subprocess.run(["userdel" if kind == "user" else "groupdel", name], capture_output=True)


LOCK = "/tmp/qmailpy-host-accounts.lock"


@contextlib.contextmanager
def kept_as_found():
    """Hold the machine-wide lock; on the way out remove the accounts made meanwhile. Yields
    the accounts present before."""
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = accounts_present()
        try:
            yield before
        finally:
            remove_accounts(accounts_present() - before)
    finally:
        os.close(fd)
