"""qmail-send refusing to start: no queue, another qmail-send holding lock/sendmutex; qmail's users.

Exit 111 with one 'alert: cannot start: ...' line and nothing started (docs/qmail-send.md).
"""
import fcntl
import os
import shutil
import time

import pytest

from test_send_controls import MSG, run_send
from test_send_support import inject, scratch  # noqa: F401 (scratch: fixture)


def test_qmail_send_without_its_queue_does_not_start(scratch):
    shutil.rmtree(os.path.join(scratch.home, "queue"))
    assert run_send(scratch) == (111, ["alert: cannot start: unable to switch to queue directory"])


def test_a_second_qmail_send_does_not_start(scratch):
    """lock/sendmutex held (by a running qmail-send, or the qmail-todo of one that is going):
    after waiting LOCK_WAIT (10 s) for it, qmail-send stops with 111 and starts no helper, so
    two never deliver the same queue at once (each message would go out twice)."""
    from qmailpy.send import main as send_main
    msgid = inject(scratch.home, MSG, "alice@localhost", ["joe@localhost"])
    fd = os.open(os.path.join(scratch.home, "queue", "lock", "sendmutex"), os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        assert run_send(scratch) == (111, ["alert: cannot start: qmail-send is already running"])
        assert time.monotonic() - started >= send_main.LOCK_WAIT
    finally:
        os.close(fd)
    assert scratch.queue_files() == ["intd/%d" % msgid, "mess/%d/%d" % (msgid % 23, msgid), "todo/%d" % msgid]


@pytest.mark.parametrize("missing", ["group", "user"])
def test_as_root_without_qmails_users_the_helpers_keep_our_user(monkeypatch, missing):
    """docs/qmail-send.md: root without qmail's group or one of its users: no ids, so every
    helper runs as the invoking user (and qmail-send does not drop to qmails)."""
    import grp
    import pwd
    from qmailpy.send import start

    def gone(name):
        raise KeyError(name)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    if missing == "group":
        monkeypatch.setattr(grp, "getgrnam", gone)
    else:
        monkeypatch.setattr(grp, "getgrnam", lambda name: grp.struct_group(("qmail", "x", 2107, [])))
        monkeypatch.setattr(pwd, "getpwnam", lambda name: gone(name) if name == "qmailr" else
                            pwd.struct_passwd((name, "x", 7001, 2107, "", "/", "/bin/false")))
    assert start.qmail_ids({}) is None
    monkeypatch.setattr(pwd, "getpwnam", lambda name: pwd.struct_passwd((name, "x", 7001, 2107, "", "/", "/bin/false")))
    monkeypatch.setattr(grp, "getgrnam", lambda name: grp.struct_group(("qmail", "x", 2107, [])))
    assert start.qmail_ids({}) == {"send": (7001, 2107), "todo": (7001, 2107), "clean": (7001, 2107),
                                   "rspawn": (7001, 2107), "lspawn": None}
