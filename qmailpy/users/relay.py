"""POP-before-SMTP: vpopmail's relay table (ip_addr, timestamp), and lastauth.

A POP3 (or IMAP) login records the client IP with the time, unless the
account has vpopmail's NO_RELAY flag (record_pop_login, as vchkpw); qmail-smtpd lets
that IP relay for `popbeforesmtptimeout` seconds; a cron job (or
`qmail-users clearopensmtp`) purges old rows, as vpopmail's clearopensmtp.
Mixed into Users, whose rows()/write() run the SQL.
"""
from qmailpy.users.names import plain_ip, split_login
from qmailpy.users.schema import NO_RELAY


class RelayTable:
    def record_relay(self, ip, now):
        """Open relaying for `ip` from time `now` (vpopmail's vopen_smtp_relay)."""
        self.write("REPLACE INTO relay (ip_addr, timestamp) VALUES (?, ?)", plain_ip(ip), int(now))

    def record_pop_login(self, login, ip, now):
        """What vchkpw does after a POP3 login (login_virtual_user): the relay row unless the
        account has NO_RELAY (0x20), and lastauth for user@domain. True when the relay was opened.

        A login the database does not know (no domain in it) still opens the relay: Dovecot
        has let it in."""
        user, domain = split_login(login)
        acct = self.account(user, domain) if domain else None
        opened = acct is None or not acct.mailbox.flags & NO_RELAY
        if opened:
            self.record_relay(ip, now)
        if domain:
            self.record_login(login, ip, now)
        return opened

    def relay_allowed(self, ip, now, window):
        """True when `ip` logged in less than `window` seconds before `now` (or less than
        `window` after it: a POP3 login while the SMTP session is open). A row dated further
        ahead is no login of now (a clock that ran ahead, a hand-made row) and opens nothing:
        vpopmail's purge never removes it, so it would open the relay until the clock passes it."""
        if window <= 0:
            return False
        rows = self.rows("SELECT timestamp FROM relay WHERE ip_addr = ?", plain_ip(ip))
        try:
            stamp = int(rows[0][0]) if rows and rows[0][0] is not None else None
        except ValueError:      # vpopmail 5.4's char(12) column holding junk
            return False
        return stamp is not None and -window < now - stamp < window

    def purge_relay(self, older_than, ahead_of=None):
        """Forget logins at or before time `older_than` (vpopmail's clearopensmtp), and at or
        after `ahead_of` (a row dated ahead of a clock stepped back since would open the relay
        once the clock catches up with it); how many."""
        if ahead_of is None:
            return self.write("DELETE FROM relay WHERE timestamp <= ?", int(older_than))
        return self.write("DELETE FROM relay WHERE timestamp <= ? OR timestamp >= ?", int(older_than), int(ahead_of))

    def relays(self):
        """(ip, timestamp) rows of the relay table."""
        return [(r[0], int(r[1] or 0)) for r in self.rows("SELECT ip_addr, timestamp FROM relay ORDER BY ip_addr")]

    def record_login(self, login, ip, now):
        """vpopmail's lastauth row for a successful login (ENABLE_AUTH_LOGGING)."""
        user, domain = split_login(login)
        self.write("REPLACE INTO lastauth (user, domain, remote_ip, timestamp) VALUES (?, ?, ?, ?)",
                   user, self.domain_of(domain) or domain, plain_ip(ip), int(now))
