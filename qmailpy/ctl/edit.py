"""Writing control files, as the admin tools do (qmail-config, qmail-users).

A file is replaced through a temp file in control/ and a rename (fileio.atomic_write,
durable), so a reader never sees half a file; it keeps the old file's mode and owner (0644, the
caller's, for a new one). Lines are text (UTF-8, undecodable bytes kept).
A change made from the file's lines (add_line, remove_lines) holds an exclusive flock on
control/edit.lock from the read to the rename: two tools at once (qmail-users adddomain run
twice) would each write the lines it had read plus its own, and the other's line would be lost.
The lock is a file opened for writing, not control/ itself: on NFS, Linux emulates flock with
POSIX locks, which refuse an exclusive lock on a descriptor opened read-only (EBADF), as a
directory's always is.
A control set in control/options (H-Sphere) and not by a file of its own is
"set elsewhere": a new file would shadow that value, so the tools leave it
and tell the admin instead (set_elsewhere()).
"""
import contextlib
import os

from qmailpy import paths
from qmailpy.ctl.parse import file_lines

NEW_MODE = 0o644


LOCK = "edit.lock"              # in registry.KNOWN_FILES: not an unknown control to qmail-showctl
LOCK_MODE = 0o600


@contextlib.contextmanager
def editing(home):
    """Hold the admin tools' lock on control/: an flock of control/edit.lock, made if missing (a
    tool that may not open it for writing takes the flock on control/ itself, as before)."""
    import errno
    import fcntl

    from qmailpy.fileio import named
    where = paths.control_path(home, LOCK)
    try:
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LOCK_MODE)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            where = paths.control_path(home, "")
            fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield                   # no control/: no file to edit, and none to write
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            raise named(e, where) from None
        yield
    finally:
        try:
            os.close(fd)        # releases the flock
        except OSError as e:
            raise named(e, where) from None


def read_lines(home, name):
    """The lines of control/NAME, or None when there is no such file; OSError naming the file."""
    from qmailpy.fileio import read_file
    try:
        return file_lines(read_file(paths.control_path(home, name)))
    except FileNotFoundError:
        return None


def write_lines(home, name, lines):
    """Replace control/NAME with these lines (each ended by a newline)."""
    from qmailpy.fileio import atomic_write
    path = paths.control_path(home, name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    mode, owner = NEW_MODE, None
    if st is not None:
        mode = st.st_mode & 0o7777
        if os.geteuid() == 0:
            owner = (st.st_uid, st.st_gid)
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    atomic_write(path, data, durable=True, mode=mode, owner=owner)


def set_elsewhere(home, name):
    """True when control/NAME is absent but control/options sets NAME."""
    if os.path.exists(paths.control_path(home, name)):
        return False
    from qmailpy.ctl.reader import Controls
    return name in Controls(home, None).options()


def add_line(home, name, line, same=None):
    """Append `line` unless a line already matches (`same(existing)`, default: equal
    ignoring case and blanks). True when the file was changed; makes a missing file."""
    same = same or (lambda existing: existing.strip().lower() == line.strip().lower())
    with editing(home):
        lines = read_lines(home, name) or []
        if any(same(existing) for existing in lines):
            return False
        write_lines(home, name, lines + [line])
        return True


def remove_lines(home, name, drop):
    """Remove the lines for which drop(line) is true; the removed lines ([] when none or no file)."""
    with editing(home):
        lines = read_lines(home, name)
        if lines is None:
            return []
        gone = [line for line in lines if drop(line)]
        if gone:
            write_lines(home, name, [line for line in lines if not drop(line)])
        return gone
