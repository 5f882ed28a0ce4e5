"""qmail-local's way to fail: one exception carrying the exit code and qmail's text.

qmail-local dies with strerr_die*(code, text); the text, plus a newline,
becomes qmail-lspawn's report. error_str()/error_temp() copy qmail's own
errno wording and its temporary-errno list, so reports read like qmail's.
"""
import errno as E

from qmailpy import exitcodes as X

OK, PERM, TEMP = X.DELIVERY_OK, X.DELIVERY_PERMANENT, X.DELIVERY_TEMPORARY

USAGE = "qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty"
REWIND = "Unable to rewind message. (#4.3.0)"
CHILD_CRASHED = "Aack, child crashed. (#4.3.0)"
SLOW_LOCK = "File has been locked for 30 seconds straight. (#4.3.0)"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
HOME_WRITABLE = "Uh-oh: home directory is writable. (#4.7.0)"
HOME_STICKY = "Home directory is sticky: user is editing his .qmail file. (#4.2.1)"
HOME_STICKY_WARNING = "Warning: home directory is sticky."
QMAIL_WRITABLE = "Uh-oh: .qmail file is writable. (#4.7.0)"
FIRST_LINE_BLANK = "Uh-oh: first line of .qmail file is blank. (#4.2.1)"
FILE_BUT_X = "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"
PROG_BUT_X = "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)"
MAILDIR_CHDIR = "Unable to chdir to maildir. (#4.2.1)"
MAILDIR_TIMEOUT = "Timeout on maildir delivery. (#4.3.0)"
MAILDIR_READ = "Unable to read message. (#4.3.0)"
MAILDIR_TEMP = "Temporary error on maildir delivery. (#4.3.0)"
OVER_QUOTA = "User over quota. (#5.1.1)"


class Die(Exception):
    """Stop delivering: exit `code` with `text` (one report line, no newline).

    `output` is what a child printed first (a program's own words); `text`
    may be None when qmail-local adds nothing (a program's exit 100/111).
    """

    def __init__(self, code, text, output=b""):
        super().__init__(code, text)
        self.code, self.text, self.output = code, text, output


def temp(text):
    return Die(TEMP, text)


def perm(text):
    return Die(PERM, text)


_STR = {
    0: "no error", E.EINTR: "interrupted system call", E.ENOMEM: "out of memory",
    E.ENOENT: "file does not exist", E.ETXTBSY: "text busy", E.EIO: "input/output error",
    E.EEXIST: "file already exists", E.ETIMEDOUT: "timed out",
    E.EINPROGRESS: "operation in progress", E.EAGAIN: "temporary failure",
    E.EPIPE: "broken pipe", E.EPERM: "permission denied", E.EACCES: "access denied",
    E.ESRCH: "no such process", E.ENXIO: "device not configured",
    E.E2BIG: "argument list too long", E.ENOEXEC: "exec format error",
    E.EBADF: "file descriptor not open", E.ECHILD: "no child processes",
    E.EDEADLK: "operation would cause deadlock", E.EFAULT: "bad address",
    E.EBUSY: "device busy", E.EXDEV: "cross-device link",
    E.ENODEV: "device does not support operation", E.ENOTDIR: "not a directory",
    E.EISDIR: "is a directory", E.EINVAL: "invalid argument",
    E.ENFILE: "system cannot open more files", E.EMFILE: "process cannot open more files",
    E.ENOTTY: "not a tty", E.EFBIG: "file too big", E.ENOSPC: "out of disk space",
    E.ESPIPE: "unseekable descriptor", E.EROFS: "read-only file system",
    E.EMLINK: "too many links", E.ELOOP: "symbolic link loop",
    E.ENAMETOOLONG: "file name too long", E.ENOTEMPTY: "directory not empty",
    E.EDQUOT: "disk quota exceeded", E.ESTALE: "stale NFS file handle",
    E.ENOLCK: "no locks available", E.ENOSYS: "system call not available",
    E.EOPNOTSUPP: "operation not supported",
}

_TEMPORARY = frozenset((
    E.EINTR, E.ENOMEM, E.ETXTBSY, E.EIO, E.ETIMEDOUT, E.EWOULDBLOCK, E.EAGAIN,
    E.EDEADLK, E.EBUSY, E.ENFILE, E.EMFILE, E.EFBIG, E.ENOSPC, E.ENETDOWN,
    E.ENETUNREACH, E.ENETRESET, E.ECONNABORTED, E.ECONNRESET, E.ENOBUFS,
    E.ETOOMANYREFS, E.ECONNREFUSED, E.EHOSTDOWN, E.EHOSTUNREACH, E.EUSERS,
    E.EDQUOT, E.ESTALE, E.ENOLCK,
))


def error_str(err):
    """qmail's error_str(): its own short wording, not strerror()."""
    if isinstance(err, OSError):
        err = err.errno
    return _STR.get(err, "unknown error")


def error_temp(err):
    """qmail's error_temp(): is this errno worth a retry?"""
    if isinstance(err, OSError):
        err = err.errno
    return err in _TEMPORARY
