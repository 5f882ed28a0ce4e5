"""Who a program runs as: qmail's users when started as root, else the invoking user.

Python programs cannot be setuid, so privilege separation comes from starting
as root and dropping to qmail's users (qmaild, qmailq, qmails, qmailr).
Single-user mode (QMAILPY_SINGLEUSER=1: `make run`, development, the test
suite) keeps the daemons as the invoking user even when qmail's users exist.
Deliveries are different: qmail-lspawn started as root always runs
qmail-local as the mailbox's owner and never as root, as qmail does.
"""
import os

SMTPD_USER = "qmaild"        # qmail-smtpd's user (tcpserver -u; qmail-smtpd switches to it as root)
QUEUE_USER = "qmailq"        # the queue's owner: qmail-queued, and qmail-queue run in-process as root


def single_user(environ):
    return environ.get("QMAILPY_SINGLEUSER", "") not in ("", "0")


def drops_privileges(environ):
    """True when this process should switch to qmail's users (root, not single-user mode)."""
    return os.getuid() == 0 and not single_user(environ)


def become(name):
    """Switch to user `name` with its primary group and no other (qmail's prot_gid + prot_uid):
    True, or False when there is no such user (the caller keeps running as it is)."""
    import pwd
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return False
    os.setgroups([pw.pw_gid])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    return True
