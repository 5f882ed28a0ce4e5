"""forward address ...: forward the message to the addresses, as qmail's forward.

The message on fd 0 (read from where it stands), $DTLINE first, goes into the
queue from $NEWSENDER to every address given (resend.py); `forward: qp N` on
fd 2, exit 0. `NEWSENDER not set` / `DTLINE not set`: 100. As in qmail, no
address is no usage error (the queue gets a message for nobody).
"""
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

FATAL = "forward: fatal: "
USAGE = """usage: forward address [ address ... ]
A .qmail line: forwards the message to the addresses, from $NEWSENDER, behind $DTLINE.
See docs/forward.md."""


@guard("forward", EXIT_TROUBLE)
def main(argv=None):
    from qmailpy.local.helpers.begin import begin
    from qmailpy.local.helpers.resend import resend
    from qmailpy.local.helpers.strerr import die
    argv = begin(USAGE, argv, 0, None)
    qp = resend(FATAL, argv[1:], "NEWSENDER")
    die(0, "forward: qp ", str(qp))
