"""bouncesaying error [program [arg ...]]: bounce the message, saying `error`, as qmail's.

Without a program: `error` on fd 2, exit 100 (qmail-local bounces with it).
With one: the program runs with the message on fd 0; exit 0 -> the bounce;
any other exit (or no such program) -> exit 0, the .qmail goes on; exit 111
or a crash -> 111 (child.py). No arguments: the usage line, exit 100.
"""
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

FATAL = "bouncesaying: fatal: "
USAGE = """usage: bouncesaying error [ program [ arg ... ] ]
A .qmail line: bounce with error (exit 100), or only when program exits 0.
See docs/bouncesaying.md."""


@guard("bouncesaying", EXIT_TROUBLE)
def main(argv=None):
    from qmailpy.local.helpers.begin import begin
    from qmailpy.local.helpers.strerr import die
    argv = begin(USAGE, argv, 1, "bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]")
    if len(argv) > 2:
        from qmailpy.local.helpers.child import status
        if status(FATAL, argv[2:]) != 0:
            return 0
    die(100, argv[1])
