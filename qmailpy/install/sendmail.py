"""Point the system's sendmail at the qmail home's bin/sendmail, as qmail's INSTALL does.

For the home /var/qmail (qmail's own place) /usr/sbin/sendmail and
/usr/lib/sendmail become symbolic links to /var/qmail/bin/sendmail. For
another home they become a two-line sh script that sets $QMAILHOME and
exec's that home's bin/sendmail (the launchers do not know their home).
An existing sendmail that is not ours is never replaced silently: with
mode "link" it is left alone and reported; with mode "replace" it is moved
to NAME.pre-qmailpy first (once: if that name is taken, nothing is done).
A missing directory (/usr/lib on some systems) is skipped. See
docs/operations.md.
"""
import os

from qmailpy import paths

TARGETS = ("/usr/sbin/sendmail", "/usr/lib/sendmail")
SAVED = ".pre-qmailpy"
MARK = "# qmailpy: sendmail of the qmail home "
MODES = ("link", "replace", "no")


def script(home):
    """The wrapper for a home other than /var/qmail."""
    return ("#!/bin/sh\n%s%s\nQMAILHOME=%s; export QMAILHOME\nexec %s \"$@\"\n"
            % (MARK, home, _sh(home), _sh(paths.bin_path(home, "sendmail"))))


def _sh(text):
    import shlex
    return shlex.quote(text)


def is_ours(path, home):
    """True when `path` already is this home's sendmail (our link or our script)."""
    target = paths.bin_path(home, "sendmail")
    if os.path.islink(path):
        return os.readlink(path) == target
    try:
        with open(path, "rb") as f:
            return f.read(4096) == script(home).encode()
    except OSError:
        return False


def _place(path, home):
    """Create our link or script at `path`, replacing it in one rename."""
    if home != paths.DEFAULT_HOME:
        from qmailpy.fileio import atomic_write
        atomic_write(path, script(home).encode(), mode=0o755)
        return
    from qmailpy.fileio import fsync_dir
    tmp = "%s.qmailpy-tmp.%d" % (path, os.getpid())
    os.symlink(paths.bin_path(home, "sendmail"), tmp)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(path))        # as atomic_write: the link survives a power loss


def install(home, mode="link", targets=TARGETS, root="/"):
    """Install the sendmail links of `home`; one line per target saying what was done.

    root prefixes every target (tests). Raises ValueError for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError("sendmail mode must be one of %s, not %r" % (", ".join(MODES), mode))
    home = os.path.abspath(home)
    out = []
    for target in targets:
        path = os.path.join(root, target.lstrip("/"))
        if mode == "no":
            out.append("sendmail: %s not touched (--sendmail no)" % target)
        elif not os.path.isdir(os.path.dirname(path)):
            out.append("sendmail: %s skipped: no directory %s" % (target, os.path.dirname(target)))
        elif is_ours(path, home):
            out.append("sendmail: %s is already %s's" % (target, home))
        elif os.path.lexists(path) and mode == "link":
            out.append("sendmail: %s exists and is not ours: left alone (install with --sendmail replace "
                       "to move it to %s%s)" % (target, target, SAVED))
        elif os.path.lexists(path) and os.path.lexists(path + SAVED):
            out.append("sendmail: %s exists and %s%s too: left alone" % (target, target, SAVED))
        else:
            if os.path.lexists(path):
                os.rename(path, path + SAVED)
                out.append("sendmail: %s moved to %s%s" % (target, target, SAVED))
            _place(path, home)
            out.append("sendmail: %s -> %s" % (target, paths.bin_path(home, "sendmail")))
    return out
