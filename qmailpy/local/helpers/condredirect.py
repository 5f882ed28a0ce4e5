"""condredirect newaddress program [arg ...]: perhaps redirect the message, as qmail's.

program runs with the message on fd 0. Exit 0 -> the message (fd 0 rewound,
$DTLINE first) goes into the queue from $SENDER (the original sender, not
NEWSENDER: condredirect.c) to newaddress, `condredirect: qp N` on fd 2 and exit
99 (qmail-local reads no more lines). Any other exit (or no such program) -> 0;
exit 111 or a crash -> 111 (child.py). Then: `unable to rewind: <error>` 111;
`SENDER not set` / `DTLINE not set` 100; the queue's refusal (resend.py).
"""
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

FATAL = "condredirect: fatal: "
USAGE = """usage: condredirect newaddress program [ arg ... ]
A .qmail line: when program exits 0, forwards the message to newaddress and exits 99.
See docs/condredirect.md."""


@guard("condredirect", EXIT_TROUBLE)
def main(argv=None):
    import os
    from qmailpy.local.helpers.begin import begin
    from qmailpy.local.helpers.child import status
    from qmailpy.local.helpers.strerr import die, die_sys
    argv = begin(USAGE, argv, 2, "condredirect: usage: condredirect newaddress program [ arg ... ]")
    if status(FATAL, argv[2:]) != 0:
        return 0
    try:
        os.lseek(0, 0, os.SEEK_SET)
    except OSError as e:
        die_sys(111, FATAL, "unable to rewind: ", error=e)
    from qmailpy.local.helpers.resend import resend
    qp = resend(FATAL, [argv[1]], "SENDER")
    die(99, "condredirect: qp ", str(qp))
