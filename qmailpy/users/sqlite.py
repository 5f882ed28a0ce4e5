"""The default users backend: vpopmail's tables in $QMAILHOME/users/vpopmail.sqlite.

Readers never create the file: a missing file is an empty database. users/
belongs to the users service's account (qmailu) in production; root never opens
the file there but through a child that has become that owner
(qmailpy.users.sqliteowner), which also makes the file theirs. A locked or
unreadable file is UsersUnavailable (after `timeout` seconds of waiting for a
writer), never "no such user".
"""
import os

from qmailpy.users.errors import MissingTable, UsersError, UsersUnavailable
from qmailpy.users.schema import create_statements


class SqliteDB:
    def __init__(self, path, timeout, create=False):
        self.path, self.timeout, self.create = path, timeout, create
        self._conn = None

    def _connect(self, create):
        if self._conn is not None:
            return self._conn
        from qmailpy.users import sqliteowner
        if not create and sqliteowner.absent(self.path):
            raise MissingTable(self.path)       # no child started for an empty database
        directory = os.path.dirname(self.path)
        if create:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise UsersUnavailable("%s: %s" % (directory, e.strerror or e)) from None
        owner = sqliteowner.other_owner(directory)
        if owner is not None:       # root, in someone else's directory: open it as them
            conn = sqliteowner.connect_as(os.path.abspath(self.path), owner, self.timeout, create)
        else:
            conn = sqliteowner.connect_file(self.path, self.timeout, create)
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
