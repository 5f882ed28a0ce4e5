"""qmail-tcpok: forget every host qmail-remote has marked down (queue/lock/tcpto).

As qmail's qmail-tcpok: the table is zeroed in place under its lock, so the
next delivery tries every address again. Run it after the network comes
back, before `svc -a` (qmail-send's ALRM: retry the queue now).
"""
from qmailpy.cli.qmailtool import oserror, on_home, run_tool
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

PROG = "qmail-tcpok"
USAGE = "qmail-tcpok"
HELP = """Clears $QMAILHOME/queue/lock/tcpto, qmail-remote's list of hosts that timed out,
so that the next deliveries try them again. Exit 0 done, 111 trouble.
"""


def clear(home):
    from qmailpy.remote.tcpto import clear as zero
    from qmailpy.queue.layout import tcpto_path
    path = tcpto_path(home)
    try:
        zero(path)
    except OSError as e:
        raise oserror(e, "clear " + path) from None


@guard("qmail-tcpok", EXIT_TROUBLE)
def main(argv=None):
    return run_tool(PROG, USAGE, HELP, on_home(clear), argv)
