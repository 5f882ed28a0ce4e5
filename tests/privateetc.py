"""The suite's own /etc, without qmail's accounts: tests never depend on the host's users.

A real qmail host has alias, qmaild, vpopmail and the rest, with homes in its own qmail
home (~alias = /var/qmail/alias): a scratch home's postmaster would reach that machine's
alias user, `make run`'s demo and the production install would find accounts they did not
make. As root, conftest.py calls isolate() once, in the process that starts the workers,
before any test: the process moves to a mount namespace of its own (unshare(2)
CLONE_NEWNS, mounts made private so nothing reaches the machine's) and a copy of /etc,
qmail's users and groups taken out, is bind-mounted on /etc there. Every worker and every
program a test starts inherits that view; the accounts a test creates (useradd) are made
in the copy, never in the machine's /etc, which no test then changes.
"""
import ctypes
import os
import shutil
import subprocess
import tempfile

from qmailpy.install import accounts

CLONE_NEWNS = 0x00020000
ENV = "QMAILPY_SUITE_ETC"          # the copy's path, for the workers and tests/test_privateetc.py


def qmail_accounts():
    """(user names, group names) install.py makes: those the copy leaves out."""
    return {u[0] for u in accounts.USERS}, set(accounts.GROUPS)


def drop_accounts(etc, users, groups):
    """Take `users` out of passwd and shadow, `groups` out of group and gshadow, and the users
    out of every group's member list."""
    for name, gone in (("passwd", users), ("shadow", users), ("group", groups), ("gshadow", groups)):
        path = os.path.join(etc, name)
        if not os.path.exists(path):
            continue
        with open(path, "rb") as f:
            lines = f.read().splitlines(True)
        kept = []
        for line in lines:
            fields = line.rstrip(b"\n").split(b":")
            if os.fsdecode(fields[0]) in gone:
                continue
            if name in ("group", "gshadow") and len(fields) >= 4:
                fields[-1] = b",".join(m for m in fields[-1].split(b",") if m and os.fsdecode(m) not in users)
                line = b":".join(fields) + b"\n"
            kept.append(line)
        with open(path, "wb") as f:
            f.writelines(kept)


def isolate():
    """The private /etc for this process and its children: the copy's top directory, or the
    reason there is none (not root; already done, in a worker)."""
    if os.getuid() != 0:
        return "not root: nothing here can create accounts"
    if os.environ.get(ENV):
        return "done by the parent"
    top = tempfile.mkdtemp(prefix="qmailpy-suite-etc-")
    etc = os.path.join(top, "etc")
    subprocess.run(["cp", "-a", "/etc", etc], check=True)
    drop_accounts(etc, *qmail_accounts())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "unshare(CLONE_NEWNS): %s" % os.strerror(e))
        subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
        subprocess.run(["mount", "--bind", etc, "/etc"], check=True, capture_output=True)
    except BaseException:
        shutil.rmtree(top, ignore_errors=True)
        raise
    os.environ[ENV] = etc
    return top


def release(top):
    """At the end: /etc unmounted in this namespace, the copy removed."""
    subprocess.run(["umount", "/etc"], capture_output=True)
    shutil.rmtree(top, ignore_errors=True)
