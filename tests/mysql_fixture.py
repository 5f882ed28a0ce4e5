"""The users database fixtures: one suite run against SQLite and MySQL/MariaDB.

`backend` is parametrized over "sqlite" and "mysql". For MySQL it creates a
database of its own (qmailpy_test_<random>) on the MariaDB at 127.0.0.1:3306
(user root, no password), points the home's `usersdb` control at it, and
drops it afterwards. MariaDB not running is started for the session (conftest.py's
`mariadb`); one that cannot be had fails the mysql runs (tests/services.py).
Import the fixtures into a test module: `from mysql_fixture import backend`.
"""
import os

import pytest

import services

MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD = "127.0.0.1", 3306, "root", ""


def mysql_admin():
    """A pymysql connection to the test server, or None when none answers."""
    import pymysql
    try:
        return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD,
                               connect_timeout=3, autocommit=True)
    except pymysql.err.MySQLError:
        return None


def usersdb_line(database):
    """vpopmail's vpopmail.mysql line for a test database."""
    return "%s|%d|%s|%s|%s" % (MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD, database)


class MysqlDatabase:
    """A scratch database, created now and dropped by drop()."""

    def __init__(self, conn):
        self.conn = conn
        self.name = "qmailpy_test_%s" % os.urandom(6).hex()
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE `%s`" % self.name)

    def execute(self, sql, args=()):
        with self.conn.cursor() as cur:
            cur.execute("USE `%s`" % self.name)
            cur.execute(sql, args)
            return cur.fetchall()

    def drop(self):
        with self.conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS `%s`" % self.name)
        self.conn.close()


class Backend:
    """A qmail home whose users database is SQLite or a scratch MySQL database."""

    def __init__(self, kind, home, mysql=None):
        self.kind, self.home, self.mysql = kind, home, mysql
        self.opened = []
        if mysql is not None:
            home.control("usersdb", usersdb_line(mysql.name) + "\n")

    def controls(self):
        from qmailpy.ctl.reader import Controls
        return Controls(self.home.root, {})

    def open(self, create=False, timeout=5.0):
        from qmailpy.users.base import open_users
        users = open_users(self.home.root, self.controls(), create=create, timeout=timeout)
        self.opened.append(users)
        return users

    def sql(self, sql, args=()):
        """Run SQL straight on the database, as another vpopmail tool would."""
        if self.mysql is not None:
            return self.mysql.execute(sql.replace("?", "%s"), args)
        import sqlite3
        conn = sqlite3.connect(os.path.join(self.home.root, "users", "vpopmail.sqlite"))
        try:
            rows = conn.execute(sql, args).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def columns(self, table):
        """Column names of `table` in order, from the database itself."""
        if self.mysql is not None:
            rows = self.mysql.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position", (self.mysql.name, table))
            return [r[0] for r in rows]
        return [r[1] for r in self.sql("PRAGMA table_info(%s)" % table)]

    def close(self):
        for users in self.opened:
            users.close()


def _backend(kind, request, home):
    mysql = None
    if kind == "mysql":
        request.getfixturevalue("mariadb")          # conftest.py: running, or started for the session
        conn = mysql_admin()
        if conn is None:
            services.missing("mariadb", "no MySQL/MariaDB at %s:%d" % (MYSQL_HOST, MYSQL_PORT))
        mysql = MysqlDatabase(conn)
    b = Backend(kind, home, mysql)
    yield b
    b.close()
    if mysql is not None:
        mysql.drop()


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request, home):
    yield from _backend(request.param, request, home)


@pytest.fixture
def mysql_backend(request, home):
    """The MySQL backend alone, for what only MySQL does."""
    yield from _backend("mysql", request, home)
