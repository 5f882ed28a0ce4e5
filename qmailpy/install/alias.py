"""qmail's INSTALL.alias for a new home: ~alias/.qmail-postmaster, .qmail-mailer-daemon, .qmail-root.

RFC 5321 wants postmaster@ of every domain to work, and double bounces go to
doublebounceto (postmaster) @ doublebouncehost (me): both end at the alias
user, ext `postmaster`. Each file delivers to alias/Maildir/ (made here as
the alias user, mode 0700: ~alias is alias's, and root would follow its links), or forwards to the address given (install.py
--postmaster ADDRESS). Files that are there are never changed; the files
get the alias user, mode 0644 (qmail-local refuses a world-writable .qmail).
qmail-users adddomain sends postmaster@ of each virtual domain here too
(qmailpy/users/domaincontrols.py).
"""
import os

from qmailpy.fileio import atomic_write
from qmailpy.users import maildir

NAMES = ("postmaster", "mailer-daemon", "root")
MODE = 0o644


def alias_dir(home):
    return os.path.join(home, "alias")


def content(postmaster=None):
    """The .qmail line: ./Maildir/, or &ADDRESS."""
    return "&%s\n" % postmaster if postmaster else "./Maildir/\n"


def check_address(address):
    """A forward target must be a whole address (a bare 'postmaster' would loop back here)."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address.strip()):
        raise ValueError("--postmaster wants a whole address (user@domain), not %r" % address)
    return address.strip()


def make(home, owner=None, postmaster=None):
    """Create what is missing; the lines to print. owner: (uid, gid) of the alias user, or None."""
    out = []
    d = alias_dir(home)
    os.makedirs(d, exist_ok=True)
    if postmaster is None:
        box = os.path.join(d, "Maildir")
        if not os.path.isdir(os.path.join(box, "new")):
            # as the alias user (~alias is its own): root would follow the links it put there
            try:
                maildir.as_owner(d, owner, lambda rel: maildir.make_maildir(rel, owner))
            except OSError as e:
                from qmailpy.errstr import error_str
                out.append("cannot make %s/ (postmaster's mailbox): %s: %s" % (box, e.filename, error_str(e)))
            else:
                out.append("made %s/ (postmaster's mailbox)" % box)
    text = content(postmaster)
    for name in NAMES:
        path = os.path.join(d, ".qmail-" + name)
        if os.path.lexists(path):
            out.append("kept %s (there already)" % path)
            continue
        atomic_write(path, text.encode(), durable=True, mode=MODE, owner=owner)
        out.append("made %s: %s" % (path, text.strip()))
    return out
