"""Helpers for the qmail-local tests (no tests here): a user home with a Maildir."""
import os

from qmailpy.local.deliver import deliver

USER, HOST = "joe", "example.com"


def maildirmake(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


class Box:
    """A home directory with ./Maildir/, and a way to deliver into it."""

    def __init__(self, tmp_path):
        self.root = tmp_path
        self.home = str(tmp_path / "home")
        os.makedirs(self.home)
        os.chmod(self.home, 0o755)
        self.maildir = maildirmake(os.path.join(self.home, "Maildir"))
        # single-user: a forward's qmail-queue stays who runs the test, also on a host that
        # has qmail's users (it would become qmailq, who cannot enter the test's directories)
        self.env = {"PATH": "/usr/bin:/bin", "QMAILHOME": str(tmp_path / "qmail"), "QMAILPY_SINGLEUSER": "1"}
        self._n = 0

    def message_fd(self, data):
        self._n += 1
        path = os.path.join(str(self.root), "mess%d" % self._n)
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        return fd

    def deliver(self, data, local=USER, dash="", ext="", sender="alice@example.org",
                aliasempty="./Maildir/", flags=(), env=None, host=HOST):
        fd = self.message_fd(data)
        try:
            argv = list(flags) + [USER, self.home, local, dash, ext, host, sender, aliasempty]
            return deliver(argv, fd, dict(self.env, **(env or {})))
        finally:
            os.close(fd)

    def dotqmail(self, name, text, mode=0o644):
        path = os.path.join(self.home, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def files(self, sub="new", maildir=None):
        d = os.path.join(maildir or self.maildir, sub)
        return sorted(os.listdir(d))

    def read(self, name, sub="new", maildir=None):
        with open(os.path.join(maildir or self.maildir, sub, name), "rb") as f:
            return f.read()

    def only(self, maildir=None):
        names = self.files(maildir=maildir)
        assert len(names) == 1, names
        return names[0], self.read(names[0], maildir=maildir)
