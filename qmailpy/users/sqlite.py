"""The default users backend: vpopmail's tables in $QMAILHOME/users/vpopmail.sqlite.

Readers never create the file: a missing file is an empty database. Made by
root (qmail-users), the file takes the owner of its directory, users/, which
the production install gives the users service's account alone. A locked
or unreadable file is UsersUnavailable (after `timeout` seconds of waiting
for a writer), never "no such user".
"""
import os

from qmailpy.users.errors import MissingTable, UsersError, UsersUnavailable
from qmailpy.users.schema import create_statements

FILE_MODE = 0o600   # secrets inside: the owner of users/ alone (the users service's qmailu in production)


class SqliteDB:
    def __init__(self, path, timeout, create=False):
        self.path, self.timeout, self.create = path, timeout, create
        self._conn = None

    def _connect(self, create):
        import sqlite3
        if self._conn is not None:
            return self._conn
        if not create and not os.path.exists(self.path):
            raise MissingTable(self.path)
        try:
            if create and not os.path.exists(self.path):
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                try:
                    if os.geteuid() == 0:       # made by root (qmail-users): the directory's owner's
                        st = os.stat(os.path.dirname(self.path))
                        os.fchown(fd, st.st_uid, st.st_gid)
                finally:
                    os.close(fd)
        except FileExistsError:
            pass                # made by someone else meanwhile
        except OSError as e:
            raise UsersUnavailable("%s: %s" % (self.path, e.strerror or e)) from None
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise UsersUnavailable("%s: %s" % (self.path, e)) from None
        self._conn = conn
        if create:
            self._run(self._schema)
        return conn

    def _schema(self, conn):
        for stmt in create_statements():
            conn.execute(stmt)

    def _run(self, work):
        import sqlite3
        try:
            return work(self._conn)
        except sqlite3.IntegrityError as e:
            raise UsersError(str(e)) from None
        except sqlite3.OperationalError as e:
            if str(e).startswith("no such table"):
                raise MissingTable(str(e)) from None
            raise UsersUnavailable("%s: %s" % (self.path, e)) from None
        except sqlite3.Error as e:
            raise UsersUnavailable("%s: %s" % (self.path, e)) from None

    def query(self, sql, args=()):
        self._connect(self.create)
        return self._run(lambda c: c.execute(sql, args).fetchall())

    def execute(self, sql, args=()):
        self._connect(self.create)
        return self._run(lambda c: c.execute(sql, args).rowcount)

    def ensure_schema(self):
        if self._conn is None:
            self._connect(True)
        else:
            self._run(self._schema)

    def begin(self):
        self.execute("BEGIN IMMEDIATE")

    def commit(self):
        self.execute("COMMIT")

    def rollback(self):
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
