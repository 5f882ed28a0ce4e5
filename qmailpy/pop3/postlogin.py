"""Dovecot's post-login hook: record the client IP for POP-before-SMTP, then exec pop3.

Dovecot's script-login runs this after a successful login with a clean
environment (IP, LOCAL_IP, USER and the userdb fields), the client's
connection on fd 0/1 and its own channel on fd 3; the last arguments are
the program that must be exec'd to finish the login (vpopmail's
open_smtp_relay does the same inside vchkpw). Nothing may be written to
fd 1: it is the client. Errors go to stderr (Dovecot's log) and never stop
the login: the client then reads mail but cannot relay.

The generated launcher (`<outdir>/postlogin`, see qmailpy.pop3.dovecot) runs
the venv's interpreter with -I -S and calls main(home, argv).
"""
import os
import sys
import time

from qmailpy import exitcodes as X


def record(home, ip, user, now=None):
    """Write lastauth and the relay row (vpopmail's open_smtp_relay), as vchkpw does after a
    login: not for an account with NO_RELAY (Users.record_pop_login); an error text or None."""
    from qmailpy.ctl.reader import Controls
    from qmailpy.users.base import UsersError, UsersUnavailable, open_users
    now = time.time() if now is None else now
    try:
        with open_users(home, Controls(home, {})) as users:
            users.record_pop_login(user, ip, now)
    except (UsersUnavailable, UsersError, OSError) as e:
        return str(e)
    return None


def main(home, argv, environ=None):
    environ = os.environ if environ is None else environ
    if not argv:
        sys.stderr.write("postlogin: no program to exec (run me from Dovecot's script-login)\n")
        return X.EXIT_TROUBLE
    ip = environ.get("IP", "")
    if ip:
        try:
            error = record(home, ip, environ.get("USER", ""))
        except Exception as e:      # never keep a user from their mail
            error = "%s: %s" % (type(e).__name__, e)
        if error:
            sys.stderr.write("postlogin: cannot record %s for POP-before-SMTP: %s\n" % (ip, error))
    sys.stderr.flush()
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        sys.stderr.write("postlogin: cannot exec %s: %s\n" % (argv[0], e.strerror or e))
    return X.EXIT_TROUBLE


if __name__ == "__main__":
    from qmailpy import paths
    sys.exit(main(paths.qmailhome(os.environ), sys.argv[1:]))
