"""A MariaDB server of a test's own: its datadir, a free port on 127.0.0.1, started and stopped
by pid. For tests that stop the database in the middle (tests/test_multihost.py): the machine's
MariaDB at 127.0.0.1:3306 is shared by everything else and is never stopped.

    db = PrivateMariadb(directory).start()
    db.usersdb_line("vpopmail")        # for control/usersdb
    db.stop(); db.start()              # same datadir, same port: the data survives
    db.cleanup()
"""
import os
import shutil
import signal
import subprocess
import time

import services

INSTALL_DB = "/usr/bin/mariadb-install-db"


class PrivateMariadb:
    def __init__(self, directory):
        self.dir = str(directory)
        self.datadir = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "mariadbd.log")
        self.port = None
        self.proc = None

    def _install(self):
        for exe in (services.MARIADBD, INSTALL_DB):
            if not os.path.exists(exe):
                services.missing("mariadb", "MariaDB is not installed (%s)" % exe)
        os.makedirs(self.dir, exist_ok=True)
        user = ["--user=root"] if os.geteuid() == 0 else []
        r = subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + self.datadir, "--skip-test-db",
                            "--auth-root-authentication-method=normal"] + user,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            services.missing("mariadb", "mariadb-install-db failed: %s" % (r.stderr or r.stdout)[-2000:])

    def start(self, wait=60):
        """Start mariadbd (installing the datadir the first time); returns self once it answers."""
        from test_e2e_support import free_port
        if not os.path.isdir(self.datadir):
            self._install()
        if self.port is None:
            self.port = free_port()
        user = ["--user=root"] if os.geteuid() == 0 else []
        argv = [services.MARIADBD, "--no-defaults", "--datadir=" + self.datadir,
                "--socket=" + os.path.join(self.dir, "mysqld.sock"), "--port=%d" % self.port,
                "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin",
                "--pid-file=" + os.path.join(self.dir, "mysqld.pid"), "--innodb-buffer-pool-size=16M",
                "--log-error=" + self.log] + user
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while not services._answers("127.0.0.1", self.port, timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                services.missing("mariadb", "private mariadbd did not start: %s" % self.log_tail())
            time.sleep(0.05)
        return self

    def log_tail(self, n=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout=60):
        """SIGTERM by pid and wait for the exit (a clean shutdown: the data is on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def connect(self, database=None):
        import pymysql
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               database=database, autocommit=True, connect_timeout=5)

    def usersdb_line(self, database):
        """vpopmail's vpopmail.mysql line for control/usersdb."""
        return "127.0.0.1|%d|root||%s" % (self.port, database)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
