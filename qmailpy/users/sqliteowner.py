"""The SQLite users database opened by root as the owner of users/, never as root.

users/ belongs to the users service's account (qmailu) in production, and so does
everything in it: qmailu could put at users/vpopmail.sqlite a link to a device (opening
/dev/watchdog starts it) or to a database of root's, which root would then open and
write. Python's sqlite3 cannot refuse a link (no SQLITE_OPEN_NOFOLLOW; SQLite refuses a
linked journal only), so root (qmail-lspawn, qmail-users, the clearopensmtp cron job)
does not open the file at all: a child that has become the directory's owner holds the
connection, and root hands it each statement over a socket pair. Through a link, the
child opens only what the owner could open itself.

The child is a grandchild (its parent exits at once), so no spawner reaps it by
surprise; it keeps no fd but its socket and stderr, so no pipe of the caller's stays
open behind it (qmail-send waits for EOF on qmail-lspawn's pipes); it ends at EOF, when
the caller closes the database or exits. A child that dies or stops answering is not
started again under an open transaction: the connection stays lost until closed.

Values cross as marshal data, which is safe here because both ends are this module: the
child became its owner by setuid, which makes it undumpable (its owner cannot trace or
write it), and what the database holds reaches it only as str, int, float, bytes or None.
"""
import marshal
import os
import socket
import struct

from qmailpy.users.errors import MissingTable, UsersError, UsersUnavailable, absent  # noqa: F401 (sqliteowner.absent)

FILE_MODE = 0o600   # secrets inside: the owner of users/ alone (the users service's qmailu in production)
HEADER = struct.Struct(">I")
SLACK = 60.0        # seconds beyond SQLite's own lock timeout before the child counts as lost
ERRORS = {"MissingTable": MissingTable, "UsersError": UsersError, "UsersUnavailable": UsersUnavailable}


def connect_file(path, timeout, create):
    """sqlite3's connection to `path`, autocommit, as the caller (here or in the child).
    A missing file is MissingTable unless `create`, which makes it (FILE_MODE, its owner
    the caller); what cannot be opened is UsersUnavailable."""
    import sqlite3
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            pass                # made before, or by someone else meanwhile
        except OSError as e:
            raise UsersUnavailable("%s: %s" % (path, e.strerror or e)) from None
    elif absent(path):
        raise MissingTable(path)
    try:
        return sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as e:
        raise UsersUnavailable("%s: %s" % (path, e)) from None


def other_owner(directory):
    """(uid, gid) of `directory` when we are root and it belongs to someone else; else None."""
    from qmailpy.users.maildir import owner_of
    owner = owner_of(directory)
    return owner if owner is not None and owner[0] != 0 else None


# -- the wire: a 4-byte length, then marshal data

def _send(sock, value):
    data = marshal.dumps(value)
    data = HEADER.pack(len(data)) + data
    view = memoryview(data)
    while view:
        view = view[sock.send(view, socket.MSG_NOSIGNAL):]


def _recv_exact(sock, n):
    parts, left = [], n
    while left:
        part = sock.recv(min(left, 1 << 20))
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _recv(sock):
    """The next value, or None at EOF."""
    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    body = _recv_exact(sock, HEADER.unpack(head)[0])
    if body is None:
        return None
    return marshal.loads(body)


# -- the caller's side

class Result:
    """What SqliteDB uses of a cursor."""
    __slots__ = ("rows", "rowcount")

    def __init__(self, rows, rowcount):
        self.rows, self.rowcount = rows, rowcount

    def fetchall(self):
        return self.rows


class OwnerConnection:
    """What SqliteDB uses of a sqlite3.Connection (execute, in_transaction, close), its
    statements run by the child. Only the process that started the child talks to it: a
    forked copy of this object (a delivery child) never writes into another's conversation."""

    def __init__(self, sock, owner, child_pid):
        self.sock, self.owner, self.pid, self.child_pid = sock, owner, os.getpid(), child_pid
        self.in_transaction = False
        self.lost = False

    def execute(self, sql, args=()):
        import sqlite3
        if self.lost or self.sock is None or os.getpid() != self.pid:
            raise sqlite3.OperationalError("the users database's child (uid %d) is gone" % self.owner[0])
        try:
            _send(self.sock, (sql, tuple(args)))
            reply = _recv(self.sock)
        except (OSError, ValueError, EOFError, TypeError):
            reply = None
        except BaseException:       # KeyboardInterrupt, a signal handler's exception: its reply
            self._lose()            # would answer the next statement
            raise
        if not isinstance(reply, tuple) or len(reply) != 4:
            self._lose()
            raise sqlite3.OperationalError("the users database's child (uid %d) is gone" % self.owner[0])
        kind, a, b, self.in_transaction = reply
        if kind == "ok":
            return Result(a, b)
        raise (getattr(sqlite3, a) if a in SQLITE_ERRORS else sqlite3.Error)(b)

    def _lose(self):
        """The child died or stopped answering: its transaction is gone with it (SQLite rolls
        its journal back at the next open), and no statement runs outside it here."""
        self.lost, self.in_transaction = True, False
        self.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()       # the child reads EOF and ends
            self.sock = None


SQLITE_ERRORS = ("IntegrityError", "OperationalError", "DatabaseError", "ProgrammingError",
                 "InterfaceError", "DataError", "NotSupportedError", "InternalError")


def connect_as(path, owner, timeout, create):
    """An OwnerConnection to the database at `path` through a child that has become `owner`
    (uid, gid); MissingTable or UsersUnavailable as connect_file raises them there. SQLite
    opens by absolute path, so the owner needs search permission on every directory above."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
        if pid == 0:                          # the child: start the grandchild and go
            code = 111
            try:
                if os.fork() == 0:
                    _serve(theirs.fileno(), mine.fileno(), path, owner, timeout, create)   # never returns
                code = 0
            finally:
                os._exit(code)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:             # SIGCHLD ignored: the kernel reaped it
            pass
    except OSError as e:
        mine.close()
        raise UsersUnavailable("%s: cannot start the child that opens it: %s" % (path, e.strerror or e)) from None
    finally:
        theirs.close()
    mine.settimeout(timeout + SLACK)
    try:
        first = _recv(mine)
    except (OSError, ValueError, EOFError):
        first = None
    if isinstance(first, tuple) and len(first) == 2 and first[0] == "ok":
        return OwnerConnection(mine, owner, first[1])
    mine.close()
    if isinstance(first, tuple) and len(first) == 3 and first[0] == "err" and first[1] in ERRORS:
        raise ERRORS[first[1]](first[2])
    raise UsersUnavailable("%s: the child that opens it as uid %d did not start" % (path, owner[0]))


# -- the child's side

def _serve(fd, callers, path, owner, timeout, create):
    """The grandchild: become the owner, open the database, answer until EOF (`callers`: the
    caller's end of the socket pair, which it must not keep)."""
    try:
        import fcntl
        import gc
        import signal

        from qmailpy.forkexec import fd_limit
        gc.freeze()                   # nothing inherited is finalised here (it may name a closed fd)
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)   # the caller's terminal or supervisor: its EOF ends us
        given, fd = fd, fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1) + ((2,) if 2 in (given, callers) else ()):
            os.dup2(null, std)        # a caller without stderr: fd 2 is an end of the pair, not stderr
        os.closerange(3, fd)
        os.closerange(fd + 1, fd_limit())
        os.chdir("/")
        sock = socket.socket(fileno=fd)
        try:
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
            conn = connect_file(path, timeout, create)
        except UsersUnavailable as e:
            _send(sock, ("err", "UsersUnavailable", "%s (as uid %d, the owner of %s)"
                         % (e, owner[0], os.path.dirname(path))))
            os._exit(0)
        except tuple(ERRORS.values()) as e:
            _send(sock, ("err", type(e).__name__, str(e)))
            os._exit(0)
        except OSError as e:
            _send(sock, ("err", "UsersUnavailable", "%s: cannot become uid %d: %s"
                         % (path, owner[0], e.strerror or e)))
            os._exit(0)
        _send(sock, ("ok", os.getpid()))
        _answer(sock, conn)
    except BaseException:             # noqa: BLE001 - the grandchild never returns into the caller
        pass
    os._exit(0)


def _answer(sock, conn):
    import sqlite3
    while True:
        request = _recv(sock)
        if request is None:
            return
        sql, args = request
        try:
            cur = conn.execute(sql, args)
            reply = ("ok", cur.fetchall(), cur.rowcount, conn.in_transaction)
        except sqlite3.Error as e:
            reply = ("err", type(e).__name__, str(e), conn.in_transaction)
        _send(sock, reply)            # SQLite's values (int, float, str, bytes, None) all marshal
