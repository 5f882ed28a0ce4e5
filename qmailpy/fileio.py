"""Replace a file whole, so that readers see the old or the new one, never half of one.

atomic_write() is the temp-file-and-rename rule: a new file beside the
target (O_EXCL, so two writers never share it), every byte written, fsync,
the mode and owner set, rename over the target, fsync of the directory
(durable=True: the rename survives a power loss, as qmail's tools fsync
before renaming). Every program and tool that replaces a file calls it and
says at the call how durable the file must be.
write_cdb() builds a constant database (qmail's cdbmake format, djb hash,
module cdblib) in memory and replaces the target with it the same way:
qmail-newmrh, qmail-newu.
close_quietly() is the close whose error cannot matter (read-only fds, pipes, fsynced files).
write_all() is the one write-until-done loop for an fd (os.write may write
less than asked on a pipe or socket); callers say what an error means.
read_all() is the reading side: an fd read to its end (a child's output
pipe, qmail-remote's message, the AUTH-failure file), one loop for the
programs that need it (ctl.reader keeps its own copy: see read_bytes);
read_file() reads a whole file for the admin tools.
Every OSError from atomic_write(), fsync_dir() and read_file() names its file
(a failed write, fsync, close or read names none by itself): the tools print
it (qmailtool.os_text), and `qmail-config: Input/output error` says nothing
of where.
open_regular() opens a file for reading only once it is known to be a regular
one: the readers that run as root in a directory another user owns (users/cdb,
.qmail-default, .qmail files) call it. own_directory() is the other rule for such
directories: state kept there is kept only by their owner.
"""
import os

READ_SIZE = 65536


def named(e, path):
    """The OSError `e` naming `path` (same errno, so the same subclass)."""
    return OSError(e.errno, e.strerror, path)


def read_file(path):
    """The bytes of the file at `path`; OSError naming `path` (FileNotFoundError when absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return read_all(fd)
        finally:
            close_quietly(fd)       # read-only, all read
    except OSError as e:
        raise named(e, path) from None


def read_all(fd):
    """Everything until end of file on fd. OSError from read propagates."""
    chunks = []
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def open_regular(path):
    """(fd, mode): an O_RDONLY descriptor of the regular file at `path`, or None and the st_mode
    of what is there instead, which is never opened for reading. The name is resolved once to
    an O_PATH descriptor and the file opened through it (/proc/self/fd/N: that inode, not the
    name again), so a FIFO is never waited on (nor its writer let go) and a device never
    opened: a link to /dev/watchdog, put by the owner of the directory, would start the
    watchdog when root opened it. OSError from either open, naming `path`: FileNotFoundError only
    when nothing is at `path`; no /proc to open it through is EIO (trouble, to be tried again)."""
    import errno
    import stat
    where = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        mode = os.fstat(where).st_mode
        if not stat.S_ISREG(mode):
            return None, mode
        proc = "/proc/self/fd/%d" % where
        try:
            return os.open(proc, os.O_RDONLY | os.O_CLOEXEC), mode
        except (FileNotFoundError, NotADirectoryError):
            # the file is there (`where` holds it): what is missing is /proc, the system's trouble,
            # never "no such file", which a caller would take for leave to go on without it
            raise OSError(errno.EIO, "no %s to open it through (is /proc mounted?)" % proc, path) from None
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
    finally:
        close_quietly(where)    # an O_PATH descriptor: nothing read through it


def own_directory(path, mode=0o700):
    """mkdir -p `path` (`mode` for what is made) and check that this process's user owns it:
    PermissionError (EACCES, as a user who is not its owner gets from a mode 0700 directory)
    when another user does. For the state a program keeps in its own user's directory
    (qmail-smtpd's sessions/: qmaild's) and that root runs the same code over (`sendmail -bs`):
    root would open whatever links that user put there, and make files that user cannot use."""
    import errno
    os.makedirs(path, mode=mode, exist_ok=True)
    if os.stat(path).st_uid != os.geteuid():
        raise PermissionError(errno.EACCES, "directory of another user", path)
    return path


def write_all(fd, data):
    """Every byte of data (bytes or a buffer) to fd; OSError from write propagates."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def close_quietly(fd):
    """close(fd), its error ignored: Linux releases the fd whatever close() says, so an error
    there changes nothing for a read-only fd, a pipe (the reader's own result is what counts)
    or a file already fsynced. Never for a written file not yet fsynced: there close() may be
    the first to report a lost write (NFS), and the caller must hear of it."""
    try:
        os.close(fd)
    except OSError:
        pass


def fsync_dir(path, follow=True):
    """fsync a directory: the names made or renamed in it survive a power loss. follow=False:
    a symlink at `path` is not followed (OSError ELOOP), for a name in another user's directory."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            close_quietly(fd)   # the fd is freed all the same; the fsync's result is the answer
    except OSError as e:
        raise named(e, path) from None


def atomic_write(path, data, durable=True, mode=0o644, owner=None, tmp=None):
    """Replace `path` by `data` (bytes); on any error the old file is left as it was.

    durable: fsync the file before the rename and the directory after it (False: a
    crash may leave the old file, or on some file systems an empty one). mode: the
    new file's mode (not narrowed by the umask). owner: (uid, gid) to give it, -1 for
    either part to leave as created. tmp: where the temp file goes (default: beside
    `path`, named .NAME.tmp.PID); it must be on the same file system.
    OSError names `path` (the directory, when its fsync failed after the rename).
    """
    folder, base = os.path.split(path)
    folder = folder or "."                  # relative stays relative: no search permission above the cwd needed
    if tmp is None:
        tmp = os.path.join(folder, ".%s.tmp.%d" % (base, os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise named(e, path) from None
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            if owner is not None and owner != (-1, -1):
                os.fchown(fd, *owner)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise named(e, path) from None
        raise
    if durable:
        fsync_dir(folder)


def cdb_bytes(pairs):
    """The bytes of a cdb holding (key, value) pairs (bytes) in order; duplicates are kept."""
    import io

    import cdblib
    buf = io.BytesIO()
    with cdblib.Writer(buf) as w:
        for key, value in pairs:
            w.put(key, value)
    return buf.getvalue()


def write_cdb(path, pairs, mode=0o644):
    """Replace the cdb at `path` atomically and durably."""
    atomic_write(path, cdb_bytes(pairs), durable=True, mode=mode)
