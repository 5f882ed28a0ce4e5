"""vpopmail's MySQL/MariaDB backend, through pymysql.

The `usersdb` control holds vpopmail's vpopmail.mysql line
`host|port|user|password|database` (port 0 = 3306; a port field starting
with / is a Unix socket, as vpopmail reads it). Connecting, reading and
writing are bounded by `timeout`; any failure to get an answer is
UsersUnavailable. A connection the server dropped while idle is reopened
once, as vmysql.c does after MySQL's wait_timeout (before the work, when the kept
connection is readable while no question is out; or after a query failed on it); never inside a transaction
(begin() to commit() or rollback()): the server rolled back what the lost
connection had done, and the rest, run again on a new one in autocommit, would
be kept without it (deldomain taking a domain away and leaving its users);
nor once the work has sent a statement that a second run would make twice (an INSERT,
an UPDATE: any but those of AGAIN): the server may have made it before the
connection was lost (authfailshared's check counted twice).

Names compare exactly, whatever the tables' collation: the tables we create
are utf8mb4_bin, and every `column = ?` of a WHERE clause is sent as
`column = BINARY ?` (exact()), so a table vpopmail made with the server's
default collation (MariaDB: utf8mb4_general_ci, where 'jóe', 'JOE' and
'joe ' all equal 'joe') answers only for the name itself. The primary key
index is still used.
"""
import time

from qmailpy.users.errors import MissingTable, UsersError, UsersUnavailable
from qmailpy.users.schema import create_statements

DEFAULT_PORT = 3306
NO_SUCH_TABLE = 1146        # ER_NO_SUCH_TABLE
UNKNOWN_DATABASE = 1049     # ER_BAD_DB_ERROR
GONE_AWAY = (2006, 2013)    # CR_SERVER_GONE_ERROR, CR_SERVER_LOST
TABLE_OPTIONS = "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
# statements that leave the same rows when sent twice (the relay table's REPLACE and purge,
# CREATE TABLE IF NOT EXISTS): a work lost after them may run again on a new connection
AGAIN = ("SELECT", "REPLACE", "DELETE", "CREATE")


def parse_line(line):
    """Connection keywords for pymysql from vpopmail's 'host|port|user|password|database'."""
    fields = line.strip().split("|")
    if len(fields) < 5 or not fields[0] or not fields[4]:
        raise UsersUnavailable("usersdb: expected host|port|user|password|database")
    host, port, user, password, database = fields[0], fields[1].strip(), fields[2], fields[3], fields[4]
    params = {"host": host, "user": user, "password": password, "database": database}
    if port.startswith("/"):
        params["unix_socket"] = port
    elif port in ("", "0"):
        params["port"] = DEFAULT_PORT
    elif port.isdigit():
        params["port"] = int(port)
    else:
        raise UsersUnavailable("usersdb: bad port %r" % port)
    return params


def exact(sql):
    """Every `= ?` after WHERE compares bytes: `= BINARY ?` (no case, accent or pad-space folding)."""
    head, where, tail = sql.partition(" WHERE ")
    return head + where + tail.replace(" = ?", " = BINARY ?")


def _code(exc):
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0


def _forget_frames(exc):
    """Clear the finished frames of `exc`'s tracebacks (its chain, and pymysql's
    original_exception): pymysql's connect() failing before it kept its socket (setsockopt,
    settimeout) leaves it in a local of such a frame, in a cycle with the exception, so that
    only the cycle collector would close it: a failed question of a long-running worker
    kept a MariaDB connection open."""
    import traceback
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        original = getattr(exc, "original_exception", None)
        if original is not None:
            _forget_frames(original)
        exc = exc.__context__ or exc.__cause__


def _dropped(conn):
    """Has the server closed this kept connection (wait_timeout, a restart, KILL)? Then it is
    readable while no question is out (its end, or an error packet before it): reopened before
    the work sends anything. A poll that fails says no: the work finds out."""
    import select
    if not conn.open:               # pymysql closed it after an error
        return True
    sock = getattr(conn, "_sock", None)
    if sock is None:                # a pymysql that keeps it elsewhere: cannot tell
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


class _Watched:
    """A cursor that notes whether the work sent a statement a second run would make twice
    (`once`: MysqlDB._run does not run it again)."""

    def __init__(self, cur):
        self.cur, self.once = cur, False

    def execute(self, sql, args=None):
        if sql.split(None, 1)[0].upper() not in AGAIN:
            self.once = True
        return self.cur.execute(sql, args)

    def __getattr__(self, name):
        return getattr(self.cur, name)


def _pymysql():
    """pymysql, imported on first use; one that cannot be loaded now (a disk error reading its
    files, an upgrade under way) is the database unavailable: a temporary answer (451), never
    the session's or the delivery's end."""
    try:
        import pymysql
    except (ImportError, OSError) as e:
        from qmailpy.lazyload import forget
        forget()                        # the next use tries again (qmailpy.lazyload)
        raise UsersUnavailable("usersdb: unable to load pymysql: %s" % (e,)) from None
    return pymysql


class MysqlDB:
    def __init__(self, line, timeout, create=False):
        self.params = parse_line(line)
        self.timeout, self.create = timeout, create
        self._conn = None
        self._tx = False            # between begin() and commit()/rollback()

    def _connect(self):
        pymysql = _pymysql()
        if self._conn is not None:
            if self._tx or not _dropped(self._conn):
                return self._conn
            self.close()
        params = dict(self.params, connect_timeout=self.timeout, read_timeout=self.timeout,
                      write_timeout=self.timeout, autocommit=True, charset="utf8mb4")
        database = params.pop("database")
        try:
            conn = pymysql.connect(**params)
            try:
                conn.select_db(database)
            except pymysql.err.OperationalError as e:
                if _code(e) != UNKNOWN_DATABASE or not self.create:
                    raise
                with conn.cursor() as cur:      # vpopmail creates its database, too
                    cur.execute("CREATE DATABASE IF NOT EXISTS `%s`" % database.replace("`", "``"))
                conn.select_db(database)
        except (pymysql.err.MySQLError, OSError) as e:
            _forget_frames(e)
            raise UsersUnavailable("usersdb %s: %s" % (self.params.get("host"), e)) from None
        self._conn = conn
        if self.create:
            self._run(self._schema, retry=False)
        return conn

    def _schema(self, cur):
        for stmt in create_statements(TABLE_OPTIONS):
            cur.execute(stmt)

    def _run(self, work, retry=True):
        pymysql = _pymysql()
        if self._tx and self._conn is None:
            raise UsersUnavailable("usersdb: the connection of an open transaction was lost")
        self._connect()
        started = time.monotonic()
        cur = None
        try:
            with self._conn.cursor() as raw:
                cur = _Watched(raw)
                return work(cur)
        except pymysql.err.ProgrammingError as e:
            if _code(e) == NO_SUCH_TABLE:
                raise MissingTable(str(e)) from None
            raise UsersUnavailable("usersdb: %s" % (e,)) from None
        except (pymysql.err.IntegrityError, pymysql.err.DataError) as e:
            raise UsersError(e.args[1] if len(e.args) > 1 else str(e)) from None
        except (pymysql.err.MySQLError, OSError) as e:
            self.close()
            # a connection the server closed while idle fails at once: reopen it, once;
            # one that timed out is not tried again, so the wait stays bounded
            if (retry and not self._tx and not (cur is not None and cur.once) and _code(e) in GONE_AWAY
                    and time.monotonic() - started < self.timeout / 2):
                return self._run(work, retry=False)
            raise UsersUnavailable("usersdb: %s" % (e,)) from None

    def query(self, sql, args=()):
        sql = exact(sql).replace("?", "%s")

        def work(cur):
            cur.execute(sql, args)
            return cur.fetchall()
        return self._run(work)

    def execute(self, sql, args=()):
        sql = exact(sql).replace("?", "%s")

        def work(cur):
            return cur.execute(sql, args)
        return self._run(work)

    def run(self, work):
        """work(cursor) on one connection, for statements that must share it (GET_LOCK and
        what it guards: qmailpy.users.authfail); pymysql's %s placeholders, sent as written."""
        return self._run(work)

    def ensure_schema(self):
        self._run(self._schema)

    def begin(self):
        self._run(lambda cur: cur.execute("START TRANSACTION"))
        self._tx = True

    def commit(self):
        try:
            self._run(lambda cur: cur.execute("COMMIT"))
        finally:
            self._tx = False

    def rollback(self):
        self._tx = False
        if self._conn is not None:
            try:
                self._conn.rollback()
            except Exception:
                self.close()

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
