"""SMTP AUTH against the users database, for qmail-smtpd's services object.

authenticate(users, mech, user, secret, challenge) answers True, False, or
None when the database cannot answer now (qmail-smtpd then replies 454, not
535). LOGIN and PLAIN check the password against pw_passwd (crypt); CRAM-MD5
checks the client's hex digest against HMAC-MD5 of the challenge keyed with
pw_clear_passwd, so it works only for users stored with a clear password
(and a pw_passwd: an account without one has no login, as in vchkpw).
Users with vpopmail's NO_SMTP flag are refused, as vchkpw refuses them.
"""
from qmailpy.users.base import UsersUnavailable
from qmailpy.users.names import split_login
from qmailpy.users.schema import NO_SMTP


def authenticate(users, mech, user, secret, challenge):
    from qmailpy.users import passwords
    mech = (mech or "").upper()
    if mech not in ("LOGIN", "PLAIN", "CRAM-MD5") or not user:
        return False
    try:
        acct = users.account(*split_login(user))
    except UsersUnavailable:
        return None
    if mech == "CRAM-MD5":
        ok = passwords.cram_md5_ok(acct.cram_key if acct else "", challenge, secret)
    else:
        ok = passwords.verify(acct.passwd if acct else "", secret)
    return bool(ok and acct is not None and not acct.mailbox.flags & NO_SMTP)
