"""qmail's errno wording and its temporary errnos (error_str.c, error_temp.c).

error_str() is the text qmail's programs print after a failed system call
(`file does not exist`, not strerror's `No such file or directory`);
error_temp() says whether that errno is worth a retry. One home for every
program that speaks as qmail does: qmail-local and its helpers, qmail-lspawn
(qmail-getpw's NFS rule), the spawns' exec, qmail's admin tools, qmail-qread,
qmail-tcpserver's fatal lines (ucspi-tcp shares the table).
"""
import errno as E

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
    E.EADDRINUSE: "address already used", E.EADDRNOTAVAIL: "address not available",
    # the sockets' (tcpserver's drop lines: `unable to get local address: out of buffer space`)
    E.EPROTO: "protocol error", E.ECONNREFUSED: "connection refused", E.ENOTSOCK: "not a socket",
    E.EMSGSIZE: "message too long", E.ENOPROTOOPT: "protocol not available",
    E.ENETDOWN: "network down", E.ENETUNREACH: "network unreachable", E.ENETRESET: "network reset",
    E.ECONNABORTED: "connection aborted", E.ECONNRESET: "connection reset",
    E.ENOBUFS: "out of buffer space", E.EISCONN: "already connected", E.ENOTCONN: "not connected",
    E.ESHUTDOWN: "socket shut down", E.ETOOMANYREFS: "too many references",
    E.EHOSTDOWN: "host down", E.EHOSTUNREACH: "host unreachable",
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
