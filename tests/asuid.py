"""A client of a Unix socket that is another local user: a forked child that switches to a uid
(no account needed, as the suite runs as root) and talks to a service's socket.

The kernel takes SO_PEERCRED when the child connects, so the service sees that uid. The
socket's directory is opened (O_PATH) before the switch, so the child reaches it however
deep and private the test's directory is; the directory itself must be searchable by all
(sock/ is 0755), the socket writable by all (0666), as in an installed home.
"""
import os
import socket


class AsUid:
    """with AsUid(uid, path, work) as child: child.result ...

    work(connect) runs in the child; connect() is a new socket connected to `path`. The
    bytes work returns are `result`; the child then keeps its connections until the block
    ends, and must have exited 0.
    """

    def __init__(self, uid, path, work):
        self.uid, self.path, self.work = uid, path, work

    def __enter__(self):
        dirfd = os.open(os.path.dirname(self.path), os.O_PATH | os.O_DIRECTORY)
        where = "/proc/self/fd/%d/%s" % (dirfd, os.path.basename(self.path))
        r, w = os.pipe()
        release_r, self.release = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(r)
                os.close(self.release)
                os.setgroups([])
                os.setgid(self.uid)
                os.setuid(self.uid)

                made = []               # every connection stays open until the block ends

                def connect():
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    made.append(s)
                    s.connect(where)
                    return s
                os.write(w, self.work(connect))
                os.close(w)
                os.read(release_r, 1)
                os._exit(0)
            finally:
                os._exit(1)
        os.close(w)
        os.close(release_r)
        os.close(dirfd)
        with os.fdopen(r, "rb") as f:
            self.result = f.read()
        return self

    def __exit__(self, *exc):
        os.close(self.release)
        assert os.waitpid(self.pid, 0)[1] == 0
