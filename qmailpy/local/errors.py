"""qmail-local's way to fail: one exception carrying the exit code and qmail's text.

qmail-local dies with strerr_die*(code, text); the text, plus a newline,
becomes qmail-lspawn's report, in qmail's errno wording (qmailpy.errstr).
"""

from qmailpy import exitcodes as X
from qmailpy.errstr import error_str, error_temp  # noqa: F401  (qmail-local's modules say errors.error_str)

OK, PERM, TEMP = X.DELIVERY_OK, X.DELIVERY_PERMANENT, X.DELIVERY_TEMPORARY

USAGE = "qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty"
REWIND = "Unable to rewind message. (#4.3.0)"
CHILD_CRASHED = "Aack, child crashed. (#4.3.0)"
SLOW_LOCK = "File has been locked for 30 seconds straight. (#4.3.0)"
NO_MAILBOX = "Sorry, no mailbox here by that name. (#5.1.1)"
LOOPING = "This message is looping: it already has my Delivered-To line. (#5.4.6)"
HOME_WRITABLE = "Uh-oh: home directory is writable. (#4.7.0)"
HOME_STICKY = "Home directory is sticky: user is editing his .qmail file. (#4.2.1)"
HOME_STICKY_WARNING = "Warning: home directory is sticky."
QMAIL_WRITABLE = "Uh-oh: .qmail file is writable. (#4.7.0)"
FIRST_LINE_BLANK = "Uh-oh: first line of .qmail file is blank. (#4.2.1)"
FILE_BUT_X = "Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"
PROG_BUT_X = "Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)"
MAILDIR_CHDIR = "Unable to chdir to maildir. (#4.2.1)"
MAILDIR_TIMEOUT = "Timeout on maildir delivery. (#4.3.0)"
MAILDIR_READ = "Unable to read message. (#4.3.0)"
MAILDIR_TEMP = "Temporary error on maildir delivery. (#4.3.0)"
OVER_QUOTA = "User over quota. (#5.1.1)"


class Die(Exception):
    """Stop delivering: exit `code` with `text` (one report line, no newline).

    `output` is what a child printed first (a program's own words); `text`
    may be None when qmail-local adds nothing (a program's exit 100/111).
    """

    def __init__(self, code, text, output=b""):
        super().__init__(code, text)
        self.code, self.text, self.output = code, text, output


def temp(text):
    return Die(TEMP, text)


def perm(text):
    return Die(PERM, text)


