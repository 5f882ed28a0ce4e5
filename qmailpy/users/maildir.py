"""Mailbox directories and quotas as vpopmail lays them out.

<vpopmaildir>/domains/<domain>/<user>/Maildir/{cur,new,tmp}; pw_shell holds
the quota (NOQUOTA, or Maildir++'s '10000000S' / '10000000S,1000C'); a
mailbox with a quota gets Maildir/maildirsize whose first line is the quota.
New directories take the owner of vpopmaildir when we run as root, as
vpopmail chowns everything to the vpopmail user.
"""
import os

DIR_MODE = 0o700            # vpopmail's VPOPMAIL_UMASK 0077
DOMAIN_DIR_MODE = 0o750     # vpopmail's VPOPMAIL_DIR_MODE
NOQUOTA = "NOQUOTA"


def format_quota(text):
    """Maildir++ quota string for a pw_shell value, or None for no quota.

    As vpopmail's format_maildirquota: '10M' -> '10485760S', '512k' ->
    '524288S', a bare number is bytes; strings with S or a comma stay.
    """
    q = (text or "").strip()
    if not q or q.upper() == NOQUOTA:
        return None
    if "," in q or q.endswith("S"):
        return q
    digits = ""
    for ch in q:
        if not ch.isdigit():
            break
        digits += ch
    number = int(digits or "0")
    unit = q[len(digits):len(digits) + 1].lower()
    if unit == "k":
        number *= 1024
    elif unit == "m":
        number *= 1048576
    return "%dS" % number


def quota_limits(quota):
    """(bytes, messages) of a Maildir++ quota string; None where unlimited."""
    size = count = None
    for part in (quota or "").split(","):
        part = part.strip()
        if part[:-1].isdigit() and part[-1:] == "S":
            size = int(part[:-1])
        elif part[:-1].isdigit() and part[-1:] == "C":
            count = int(part[:-1])
    return size, count


def valid_quota(text):
    """True for NOQUOTA (or nothing), 1234, 10M, 512k and Maildir++ '10000000S' / '10000000S,1000C'."""
    q = (text or "").strip()
    if not q or q.upper() == NOQUOTA:
        return True
    if "," in q or q.endswith(("S", "C")):
        parts = [p.strip() for p in q.split(",")]
        return all(p[:-1].isdigit() and p[-1:] in ("S", "C") for p in parts)
    number = q[:-1] if q[-1:] in ("k", "K", "m", "M") else q
    return number.isdigit()


def owner_of(path):
    """(uid, gid) to give new directories: the owner of `path` when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def make_dir(path, mode, owner):
    """mkdir -p with `mode` for what we create, chowned to owner (uid, gid) when given."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        make_dir(parent, mode, owner)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    if owner is not None:
        os.chown(path, *owner)


def make_domain_dir(path, owner):
    make_dir(path, DOMAIN_DIR_MODE, owner)


def make_maildir(user_dir, owner):
    """user_dir/Maildir with cur, new and tmp."""
    maildir = os.path.join(user_dir, "Maildir")
    for sub in ("cur", "new", "tmp"):
        make_dir(os.path.join(maildir, sub), DIR_MODE, owner)
    return maildir


def usage(maildir):
    """(bytes, messages) in cur/ and new/ of a Maildir and its Maildir++ folders.

    A file name's ',S=<size>' is trusted as Maildir++ says; else the file is stat'ed.
    """
    total = count = 0
    folders = [maildir] + [os.path.join(maildir, d) for d in _listdir(maildir) if d.startswith(".")]
    for folder in folders:
        for sub in ("cur", "new"):
            where = os.path.join(folder, sub)
            for name in _listdir(where):
                size = _size_in_name(name)
                if size is None:
                    try:
                        size = os.stat(os.path.join(where, name)).st_size
                    except OSError:
                        continue
                total, count = total + size, count + 1
    return total, count


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _size_in_name(name):
    for part in name.split(":", 1)[0].split(",")[1:]:
        if part.startswith("S=") and part[2:].isdigit():
            return int(part[2:])
    return None


def write_maildirsize(maildir, quota, owner):
    """Maildir++ maildirsize: the quota line, then one line with what is in the Maildir now."""
    path = os.path.join(maildir, "maildirsize")
    tmp = path + ".tmp%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write("%s\n%d %d\n" % ((quota,) + usage(maildir)))
    os.chmod(tmp, 0o600)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def remove_maildirsize(maildir):
    """vpopmail's remove_maildirsize: the next delivery recounts (or there is no quota)."""
    try:
        os.unlink(os.path.join(maildir, "maildirsize"))
    except FileNotFoundError:
        pass


def remove_tree(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)
