"""except program [arg ...]: run program and turn its exit 0 into a bounce, as qmail's except.

The program runs with the message on fd 0; exit 0 -> exit 100; any other exit
(100 too, or no such program) -> exit 0; exit 111 or a crash -> 111 (child.py).
No arguments: the usage line, exit 100. (`except` is a Python keyword: except_.)
"""
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

FATAL = "except: fatal: "
USAGE = """usage: except program [ arg ... ]
A .qmail line: runs program; its exit 0 becomes a bounce (100), anything else 0.
See docs/except.md."""


@guard("except", EXIT_TROUBLE)
def main(argv=None):
    from qmailpy.local.helpers.begin import begin
    from qmailpy.local.helpers.child import status
    argv = begin(USAGE, argv, 1, "except: usage: except program [ arg ... ]")
    return 100 if status(FATAL, argv[1:]) == 0 else 0
