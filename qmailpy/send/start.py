"""qmail-start's job: start qmail-send's helpers, each on its own pipes.

qmail-send     <-> qmail-lspawn  (fd 0 commands, fd 1 reports)
               <-> qmail-rspawn  (same)
               <-> qmail-clean   (fd 0 requests, fd 1 answers)
               <-> qmail-todo    (fd 0 S/H/X, fd 1 records; fds 3/4 to and from a
                                  second qmail-clean; fd 5 keeps lock/sendmutex)
Every child keeps qmail-send's stderr as fd 2 (the log). Run as root with
the qmail users present, each child gets qmail's user (lspawn root, rspawn
qmailr, clean qmailq, todo qmails) and qmail-send then becomes qmails;
otherwise everything runs as the invoking user. qmail-todo holds the lock
so a restarted qmail-send cannot start until the old qmail-todo is gone.
"""
import os
import time

from qmailpy.forkexec import become
from qmailpy.paths import program_path

QMAIL_USERS = {"send": "qmails", "todo": "qmails", "clean": "qmailq", "rspawn": "qmailr", "lspawn": None}


def qmail_ids(environ):
    """{role: (uid, gid) or None} when root and qmail's users exist, else None."""
    from qmailpy.privs import drops_privileges
    if not drops_privileges(environ):
        return None
    import grp
    import pwd
    try:
        gid = grp.getgrnam("qmail").gr_gid
        return {role: (pwd.getpwnam(user).pw_uid, gid) if user else None for role, user in QMAIL_USERS.items()}
    except KeyError:
        return None


def spawn_child(argv, fdmap, environ, ids=None):
    """fork + exec with child fd N = parent fd fdmap[N] and nothing else open; the pid.
    A helper that cannot be exec'd exits 127: qmail-send sees its pipes close."""
    pid = os.fork()
    if pid:
        return pid
    become(argv, fdmap, environ, ids=(ids[0], ids[1], ()) if ids else None)


class Child:
    __slots__ = ("name", "pid", "to", "frm")

    def __init__(self, name, pid, to, frm):
        self.name, self.pid, self.to, self.frm = name, pid, to, frm


def _pipes(n):
    return [os.pipe2(os.O_CLOEXEC) for _ in range(n)]


def start_children(environ, aliasempty, lock_fd, ids):
    """{name: Child} for lspawn, rspawn, clean and todo (todo's own qmail-clean has no pipes to us)."""
    ids = ids or {}
    prog = {name: program_path(environ, "qmail-" + name, None) for name in ("lspawn", "rspawn", "clean", "todo")}
    children = {}
    for name, argv in (("lspawn", [prog["lspawn"], aliasempty]), ("rspawn", [prog["rspawn"]]),
                       ("clean", [prog["clean"]])):
        (cmd_r, cmd_w), (out_r, out_w) = _pipes(2)
        pid = spawn_child(argv, {0: cmd_r, 1: out_w, 2: 2}, environ, ids.get(name))
        os.close(cmd_r)
        os.close(out_w)
        children[name] = Child(name, pid, cmd_w, out_r)
    (req_r, req_w), (ans_r, ans_w) = _pipes(2)
    clean_pid = spawn_child([prog["clean"]], {0: req_r, 1: ans_w, 2: 2}, environ, ids.get("clean"))
    (cmd_r, cmd_w), (out_r, out_w) = _pipes(2)
    pid = spawn_child([prog["todo"]], {0: cmd_r, 1: out_w, 2: 2, 3: req_w, 4: ans_r, 5: lock_fd},
                      environ, ids.get("todo"))
    for fd in (req_r, req_w, ans_r, ans_w, cmd_r, out_w):
        os.close(fd)
    children["todo"] = Child("todo", pid, cmd_w, out_r)
    children["todoclean"] = Child("todoclean", clean_pid, None, None)
    return children


def drop_privileges(ids):
    if ids and ids.get("send"):
        uid, gid = ids["send"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def reap(children, timeout):
    """Close our ends and wait (at most timeout seconds) for every child to exit."""
    for child in children.values():
        for fd in (child.to, child.frm):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
    pending = {child.pid for child in children.values()}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.02)
    return pending
