"""Controls that notice when a file they read has changed (qmail-lspawn's and qmail-todo's reload).

qmail-send drops to qmails after starting qmail-lspawn, which stays root, so
the SIGHUP qmail-send passes on (svc -h) cannot reach it (EPERM). Instead
qmail-lspawn asks changed() before each batch of commands: one stat per file
it has read (control/NAME, its alias files and control/options), taken
before the read, so a file replaced while it was read counts as changed
(each file is opened after its stamp: Controls' one listing of control/ is
not used here).
qmail's qmail-lspawn reads nothing that could go stale (qmail-getpw and
users/cdb are read per delivery); this keeps ours as fresh. qmail-todo asks
before each message it routes, so a domain added to virtualdomains is local
for the next message even before a SIGHUP (which arrives asynchronously) has
reached it.
"""
import os

from qmailpy.ctl import registry as R
from qmailpy.ctl.options import OPTIONS
from qmailpy.ctl.reader import Controls, read_bytes


def stamp(path):
    """What changes when a file is edited, replaced, made or removed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class WatchedControls(Controls):
    def __init__(self, home, environ=None):
        super().__init__(home, environ)
        self.seen = {}

    def _watch(self, name):
        path = self.path(name)
        if path not in self.seen:
            self.seen[path] = stamp(path)

    def _read(self, name):
        """The file itself, never Controls' listing of control/: a file made after the listing
        and before its stamp would read as absent while stamped as present, unnoticed for good."""
        return read_bytes(self.path(name), "control/" + name)

    def setting(self, name):
        control = R.BY_NAME[name]
        for each in (control.name,) + control.aliases + (OPTIONS,):
            self._watch(each)
        return super().setting(name)

    def changed(self):
        return any(stamp(path) != was for path, was in self.seen.items())


class FailedReread:
    """A reread of changed controls that failed: the caller keeps its old controls, which still
    see the change, so the reread is made again before the next batch (one passing EIO must not
    keep the old rules until the next change); said() tells whether to log it: once per change
    of the files, or each time an admin asked (qmail-send's H)."""

    def __init__(self):
        self.stamps = None          # the files' stamps when the failure was last said

    def said(self, controls, asked=False):
        say = asked or controls.seen != self.stamps
        self.stamps = controls.seen
        return say

    def cleared(self):
        self.stamps = None
