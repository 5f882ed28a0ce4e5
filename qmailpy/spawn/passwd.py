"""Where qmail-lspawn looks up local users and the alias user: the system's user
database, or a passwd(5) file named by $QMAILPY_PASSWD (a qmail home whose mailbox
owners are not system users; the test suite, which must not depend on the host's users)."""
import os
from collections import namedtuple

Entry = namedtuple("Entry", "pw_name pw_uid pw_gid pw_dir")


def lookup(environ):
    """A getpwnam(name) for this process: an entry with pw_name/uid/gid/dir, KeyError if none."""
    path = environ.get("QMAILPY_PASSWD")
    if not path:
        import pwd
        return pwd.getpwnam
    return FilePasswd(path).getpwnam


class FilePasswd:
    """name:passwd:uid:gid:gecos:dir:shell lines, read once."""

    def __init__(self, path):
        self.entries = {}
        with open(path, "rb") as f:
            for line in f:
                parts = line.rstrip(b"\n").split(b":")
                if len(parts) < 7 or not parts[2].isdigit() or not parts[3].isdigit():
                    continue
                name = os.fsdecode(parts[0])
                self.entries.setdefault(name, Entry(name, int(parts[2]), int(parts[3]), os.fsdecode(parts[5])))

    def getpwnam(self, name):
        return self.entries[name]
