"""Exit codes are the only interface between the mail programs: name them once.

qmail-queue's codes and the texts qmail-smtpd answers for them follow
qmail.c's qmail_close() (notqmail), so a client sees the same reply as from
qmail. 'D' = permanent (SMTP 554), 'Z' = temporary (SMTP 451).
"""

# -- qmail-queue (qmail-queue.8)
QQ_OK = 0
QQ_ADDR_TOO_LONG = 11          # an envelope address does not fit in ADDR (1003) bytes
QQ_PERM_REFUSED = 31           # a content filter refuses the message for good
QQ_NO_MEMORY = 51
QQ_TIMEOUT = 52                # the DEATH alarm (control/timeoutqueue) went off
QQ_WRITE_ERROR = 53            # write error or disk full (ENOSPC, EDQUOT)
QQ_READ_ERROR = 54             # message or envelope unreadable, or envelope cut short
QQ_CONFIG = 55                 # unable to read a control file
QQ_NETWORK = 56                # a filter service cannot be reached
QQ_HOME = 61                   # trouble with the qmail home directory
QQ_QUEUE_DIR = 62              # trouble with queue/
QQ_PID = 63                    # trouble with queue/pid
QQ_MESS = 64                   # trouble with queue/mess
QQ_INTD = 65                   # trouble with queue/intd
QQ_TODO = 66                   # trouble with queue/todo
QQ_TEMP_REFUSED = 71           # a content filter refuses the message for now
QQ_CONN_TIMEOUT = 72
QQ_CONN_REJECTED = 73
QQ_COMM_FAILED = 74
QQ_BUG = 81                    # internal bug (qmail: SIGSEGV, SIGBUS...; here: an unexpected exception)
QQ_CUSTOM = 82                 # notqmail: the reply text is on fd 6
QQ_ENVELOPE_FORMAT = 91        # envelope not F<sender>\0 (T<rcpt>\0)* \0
QQ_ADDR_TOO_LONG_OLD = 115     # legacy synonym of 11
QQ_EXEC_FAILED = 120           # produced by the caller's child: exec of qmail-queue failed
QQ_WAIT_SURPRISE = 256         # no exit code: the caller's waitpid() for qmail-queue failed

PERMANENT, TEMPORARY = "D", "Z"


class QueueError(Exception):
    """Why a message was not queued; `code` is qmail-queue's exit code. Raised by qmail-queue
    (qmailpy.queue.enqueue) and by the content filters it runs (qmailpy.filters), so it lives
    below both."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason

# code -> (kind, text), as qmail_close() returns them (without the leading kind letter).
QQ_TEXTS = {
    QQ_ADDR_TOO_LONG: (PERMANENT, "envelope address too long for qq (#5.1.3)"),
    QQ_ADDR_TOO_LONG_OLD: (PERMANENT, "envelope address too long for qq (#5.1.3)"),
    QQ_PERM_REFUSED: (PERMANENT, "mail server permanently rejected message (#5.3.0)"),
    QQ_NO_MEMORY: (TEMPORARY, "qq out of memory (#4.3.0)"),
    QQ_TIMEOUT: (TEMPORARY, "qq timeout (#4.3.0)"),
    QQ_WRITE_ERROR: (TEMPORARY, "qq write error or disk full (#4.3.0)"),
    QQ_READ_ERROR: (TEMPORARY, "qq read error (#4.3.0)"),
    QQ_CONFIG: (TEMPORARY, "qq unable to read configuration (#4.3.0)"),
    QQ_NETWORK: (TEMPORARY, "qq trouble making network connection (#4.3.0)"),
    QQ_HOME: (TEMPORARY, "qq trouble in home directory (#4.3.0)"),
    QQ_QUEUE_DIR: (TEMPORARY, "qq trouble creating files in queue (#4.3.0)"),
    QQ_PID: (TEMPORARY, "qq trouble creating files in queue (#4.3.0)"),
    QQ_MESS: (TEMPORARY, "qq trouble creating files in queue (#4.3.0)"),
    QQ_INTD: (TEMPORARY, "qq trouble creating files in queue (#4.3.0)"),
    QQ_TODO: (TEMPORARY, "qq trouble creating files in queue (#4.3.0)"),
    QQ_TEMP_REFUSED: (TEMPORARY, "mail server temporarily rejected message (#4.3.0)"),
    QQ_CONN_TIMEOUT: (TEMPORARY, "connection to mail server timed out (#4.4.1)"),
    QQ_CONN_REJECTED: (TEMPORARY, "connection to mail server rejected (#4.4.1)"),
    QQ_COMM_FAILED: (TEMPORARY, "communication with mail server failed (#4.4.2)"),
    QQ_BUG: (TEMPORARY, "qq internal bug (#4.3.0)"),
    QQ_ENVELOPE_FORMAT: (TEMPORARY, "qq internal bug (#4.3.0)"),
    QQ_EXEC_FAILED: (TEMPORARY, "unable to exec qq (#4.3.0)"),
    QQ_WAIT_SURPRISE: (TEMPORARY, "qq waitpid surprise (#4.3.0)"),
}
QQ_OTHER_PERMANENT = (PERMANENT, "qq permanent problem (#5.3.0)")    # other 11..40
QQ_OTHER_TEMPORARY = (TEMPORARY, "qq temporary problem (#4.3.0)")    # anything else
QQ_CRASHED = (TEMPORARY, "qq crashed (#4.3.0)")                      # killed by a signal

SMTP_OK, SMTP_TEMPFAIL, SMTP_PERMFAIL = 250, 451, 554


def qq_not_started(error, home):
    """The exit code of qmail_open()'s child that could not start the queue program: 61 when
    its chdir to the qmail home failed (the OSError names `home`), else 120 (the exec)."""
    return QQ_HOME if error.filename == home else QQ_EXEC_FAILED


def qq_status(code, custom=None):
    """(kind, text) for a qmail-queue exit code; `custom` is what code 82 left on fd 6."""
    if code == QQ_CUSTOM and custom:
        if isinstance(custom, bytes):
            custom = custom.decode("utf-8", "replace")
        if custom[:1] in (PERMANENT, TEMPORARY) and len(custom) > 1:
            return custom[0], custom[1:]
    got = QQ_TEXTS.get(code)
    if got is not None:
        return got
    return QQ_OTHER_PERMANENT if 11 <= code <= 40 else QQ_OTHER_TEMPORARY


def qq_reply(code, custom=None):
    """(smtp code, text) qmail-smtpd answers after DATA: 451/554 + qmail's text.

    For 0 this is (250, "ok"); qmail-smtpd adds its own " <time> qp <pid>".
    A negative code (subprocess style: killed by that signal) is "qq crashed".
    """
    if code == QQ_OK:
        return SMTP_OK, "ok"
    if code < 0:
        return qq_crash_reply()
    kind, text = qq_status(code, custom)
    return (SMTP_PERMFAIL if kind == PERMANENT else SMTP_TEMPFAIL), text


def qq_crash_reply():
    """What qmail-smtpd answers when qmail-queue died from a signal."""
    return SMTP_TEMPFAIL, QQ_CRASHED[1]


# -- every program: qmail's strerr_die() conventions
EXIT_USAGE = 100               # called wrongly (qmail's usage errors)
EXIT_TROUBLE = 111             # temporary trouble (controls, queue, a lost child): try again

# -- delivery programs (qmail-local, qmail-remote, .qmail commands)
DELIVERY_OK = 0
DELIVERY_OK_STOP = 99          # success, and ignore the following .qmail lines
DELIVERY_PERMANENT = 100       # hard error: bounce
DELIVERY_TEMPORARY = 111       # soft error: retry later
