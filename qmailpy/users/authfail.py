"""The AUTH-failure count every MX host shares (control authfailshared), in the MySQL/MariaDB
users database.

qmail-smtpd counts password checks per client IP (authfaillimit, authfailwindow); by itself
it counts on its own host (qmailpy.smtpd.authlimit), so a client that spreads its guesses
over N hosts gets N times the limit. With authfailshared 1 the count lives in this table,
one row per password check as the per-host file has one line per check:

  CREATE TABLE qmailpy_authfail (
    id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,  -- the check (forget() names it)
    ip_addr VARCHAR(64) NOT NULL,                                 -- the client IP
    stamp   INT NOT NULL,                                         -- when the check began
    KEY ip_stamp (ip_addr, stamp), KEY stamp (stamp))

made on first use. Hosts are serialised per client IP by GET_LOCK('qmailpy-authfail-<ip>'):
deleting the expired rows, counting and inserting happen under it, so any number of hosts
and connections check at most `limit` passwords of one IP in `window` seconds. begin()
deletes every row of every IP older than the window, or dated a window or more ahead (a
clock stepped back since: the IP would be locked out until it caught up). A connection lost
once the work has sent its DELETE or INSERT is not reopened to run it again (MysqlDB._run:
the row may be in, and would be counted twice): UsersUnavailable, the caller counts on its host. The database's user needs CREATE
(once), SELECT, INSERT and DELETE on the table; GET_LOCK needs no privilege.
"""
from qmailpy.users.errors import MissingTable, NotShared, UsersUnavailable

TABLE = "qmailpy_authfail"
CREATE = ("CREATE TABLE IF NOT EXISTS %s (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, "
          "ip_addr VARCHAR(64) NOT NULL, stamp INT NOT NULL, KEY ip_stamp (ip_addr, stamp), KEY stamp (stamp)) "
          "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" % TABLE)
LOCK_PREFIX = "qmailpy-authfail-"
LOCK_WAIT = 5           # seconds to wait for another host's check of the same IP


def lock_name(ip):
    """GET_LOCK's name for a client IP (at most 64 characters, as MariaDB allows)."""
    return (LOCK_PREFIX + ip)[:64]


class SharedFailures:
    """begin()/forget() as qmailpy.smtpd.authlimit.Attempts, over a MysqlDB."""

    def __init__(self, db):
        self.db = db

    def _locked(self, ip, work):
        """work(cursor) under GET_LOCK for `ip`, on one connection; the table made if missing."""
        def locked(cur):
            cur.execute("SELECT GET_LOCK(%s, %s)", (lock_name(ip), LOCK_WAIT))
            if cur.fetchone()[0] != 1:
                raise UsersUnavailable("usersdb: GET_LOCK(%s) not granted within %d s" % (lock_name(ip), LOCK_WAIT))
            try:
                return work(cur)
            finally:
                # a connection lost meanwhile released the lock with it: its error is the one
                # to tell (a RELEASE_LOCK on it said only "(0, '')")
                if cur.connection.open:
                    cur.execute("SELECT RELEASE_LOCK(%s)", (lock_name(ip),))
                    cur.fetchall()
        try:
            return self.db.run(locked)
        except MissingTable:
            self.db.run(lambda cur: cur.execute(CREATE))
            return self.db.run(locked)

    def begin(self, ip, limit, window, now):
        """Record a password check of `ip` about to be made: (checks in the window with this
        one, its id for forget()), or None when `limit` were made already (nothing recorded)."""
        now = int(now)

        def work(cur):
            cur.execute("DELETE FROM " + TABLE + " WHERE stamp <= %s OR stamp >= %s", (now - window, now + window))
            cur.execute("SELECT COUNT(*) FROM " + TABLE + " WHERE ip_addr = %s", (ip,))
            count = int(cur.fetchone()[0])
            if count >= limit:
                return None
            cur.execute("INSERT INTO " + TABLE + " (ip_addr, stamp) VALUES (%s, %s)", (ip, now))
            return count + 1, int(cur.lastrowid)
        return self._locked(ip, work)

    def forget(self, ip, check):
        """The check `check` (begin()'s id) succeeded or was not decided: it does not count."""
        try:
            self.db.run(lambda cur: cur.execute("DELETE FROM " + TABLE + " WHERE id = %s AND ip_addr = %s",
                                                (int(check), ip)))
        except MissingTable:
            pass


def shared_failures(db):
    """The shared count over the users database `db`; NotShared where it is not MySQL/MariaDB."""
    from qmailpy.users.mysql import MysqlDB
    if not isinstance(db, MysqlDB):
        raise NotShared("the users database is not MySQL/MariaDB")
    return SharedFailures(db)
