"""qmail's users and groups on this machine: which exist, and removing the ones a test made.

The production install (and `make run` or `install.py --demo` as root) create qmail's
accounts with useradd/groupadd. Tests never depend on them (a real qmail host has its
own) and leave the machine with the accounts it had: conftest.py removes, at the end of
the session, every one of these accounts the session created.
"""
import grp
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
