"""AUTH attempts per client IP, counted across connections and processes (issue 16).

One file per client IP under $QMAILHOME/sessions/authfail/ (qmail-smtpd's own
directory, as periplimit's slots), one line per password check: "<time> <pid>".
Every change is made under an exclusive flock of that file, so 40 parallel
connections from one IP cannot check more than `limit` passwords in `window`
seconds: an attempt is recorded *before* the password is checked (begin()),
and taken back when it succeeded or could not be decided (forget()). A file
whose entries have all expired is removed; a process that opened it before
the removal sees st_nlink == 0 under the lock and opens the path again.
A line dated `window` or more ahead of the clock (written before it was
stepped back) has expired too: it would lock the IP out until the clock
caught up.
"""
import fcntl
import os

from qmailpy.fileio import own_directory, read_all


LOOPBACK = "127.0.0.0/8"


def failure_key(ip):
    """The client authfaillimit counts `ip` as (both counts: these files and authfailshared's
    table): where one attacker holds a whole network, the network, or each of its addresses
    would bring `limit` more guesses. The loopback network (any local user's process may bind
    any 127.x.y.z), an IPv6 address's /64 (the least a site is given); an IPv4-mapped address
    is its IPv4 one (users.names.plain_ip)."""
    from qmailpy.users.names import plain_ip
    ip = plain_ip(ip)
    if ":" not in ip:
        return LOOPBACK if ip.startswith("127.") else ip
    import ipaddress
    try:
        addr = ipaddress.IPv6Address(ip)
    except ValueError:
        return ip
    if addr.is_loopback:
        return ip
    return str(ipaddress.IPv6Network((addr, 64), strict=False))


def _line_time(line):
    try:
        return int(line.split(b" ", 1)[0])
    except ValueError:
        return 0


class Attempts:
    def __init__(self, directory, ip, limit, window, pid):
        self.path = os.path.join(directory, ip.replace("/", "_") or "unknown")
        self.directory, self.limit, self.window, self.pid = directory, limit, window, pid
        self._mine = None           # the line of this process's attempt in progress

    def _open_locked(self):
        # counted only by the owner of sessions/ (qmaild): PermissionError for root's `sendmail -bs`
        own_directory(os.path.dirname(self.directory))
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink:
                    return fd
            except BaseException:   # the check is not made: its fd (a qmail-tcpserver worker's) not kept
                os.close(fd)
                raise
            os.close(fd)            # removed while we waited for the lock: the path has a new file

    def _update(self, now, change):
        """change(live lines) -> (new lines, result), under the lock; the result."""
        fd = self._open_locked()
        try:
            data = read_all(fd)
            live = [line for line in data.split(b"\n") if line and -self.window < now - _line_time(line) < self.window]
            lines, result = change(live)
            if lines:
                body = b"".join(line + b"\n" for line in lines)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, body)
                os.ftruncate(fd, len(body))
            else:
                os.unlink(self.path)
            return result
        finally:
            os.close(fd)

    def begin(self, now):
        """Record a password check about to be made: the number of checks in the window with
        this one, or None when `limit` were already made (locked out: nothing recorded)."""
        line = b"%d %d" % (now, self.pid)

        def change(live):
            if len(live) >= self.limit:
                return live, None
            return live + [line], len(live) + 1
        got = self._update(int(now), change)
        self._mine = line if got is not None else None
        return got

    def forget(self, now):
        """The check in progress succeeded or was not decided: it does not count."""
        mine, self._mine = self._mine, None
        if mine is None:
            return

        def change(live):
            if mine in live:
                live.remove(mine)
            return live, None
        self._update(int(now), change)
