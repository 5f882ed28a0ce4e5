"""The questions qmail-smtpd asks about its users, answered from the database and the SRS keys.

qmail-smtpd's `services.users()` is an object with these methods. Where the
qmail home runs the users service (qmail-usersd: a socket at sock/users), it is
the service's client (qmailpy.users.service), and the service answers with
this class; elsewhere (a development home, the tests' bare homes) it is this
class in qmail-smtpd's own process. Either way the same code decides:

  authenticate(mech, login, secret, challenge)  True, False, or None (cannot tell now)
  check_recipient(address)                      chkuser's OK, NOUSER or NOTOURS
  relay_allowed(ip, since, window)              POP-before-SMTP: True or False
  find_address(name, domain)                    b"name@realdomain" of the mailbox, or None (bytes)
  srs_reverse(address, now)                     (status, error) of an SRS recipient (qmailpy.srs.rewrite)
  auth_begin(ip, limit, window, now)            authfailshared: (checks, id) or None (locked out)
  auth_forget(ip, check)                        authfailshared: that check does not count

Every question but authenticate raises UsersUnavailable when it cannot be
answered now (the database is down, a domain directory cannot be looked
into, the service does not answer): the caller answers 451, never "no such
user". SRS keys that cannot be read are ControlError here, as for any control.
auth_begin and auth_forget raise NotShared where the database is not MySQL/MariaDB
(qmailpy.users.authfail): qmail-smtpd then counts on its own host.
"""
from qmailpy.users.base import UsersUnavailable


class Answers:
    def __init__(self, opener, controls):
        """opener() opens the users database (qmailpy.users.open_users), on first use."""
        self.opener, self.controls = opener, controls
        self._users = None

    def users(self):
        if self._users is None:
            self._users = self.opener()
        return self._users

    def authenticate(self, mech, login, secret, challenge):
        from qmailpy.users.auth import authenticate
        try:
            users = self.users()
        except UsersUnavailable:
            return None
        return authenticate(users, mech, login, secret, challenge)

    def check_recipient(self, address):
        from qmailpy.users.chkuser import check_recipient
        try:
            virtualdomains = self.controls.value("virtualdomains")
        except OSError as e:            # ctl.reader.ControlError: cannot tell where qmail-send routes it
            raise UsersUnavailable(str(e)) from None        # "control/virtualdomains: why"
        return check_recipient(self.users(), address, virtualdomains)

    def relay_allowed(self, ip, since, window):
        return self.users().relay_allowed(ip, since, window)

    def find_address(self, name, domain):
        return self.users().find_address(name, domain)

    def srs_reverse(self, address, now):
        """(status, error or None): OK, BAD_HASH, EXPIRED or NOT_SRS, as qmailpy.srs.rewrite.reverse.
        Keys that cannot be read raise ControlError (qmail-smtpd's 421; the service's TEMP)."""
        from qmailpy.srs.rewrite import reverse
        got = reverse(address, self.controls, now)
        return got.status, got.error

    def auth_begin(self, ip, limit, window, now):
        from qmailpy.users.authfail import shared_failures
        return shared_failures(self.users().db).begin(ip, limit, window, now)

    def auth_forget(self, ip, check):
        from qmailpy.users.authfail import shared_failures
        shared_failures(self.users().db).forget(ip, check)

    def close(self):
        if self._users is not None:
            self._users.close()
            self._users = None
