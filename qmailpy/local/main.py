"""The qmail-local command: `qmail-local [-nN] user homedir local dash ext domain sender aliasempty`.

Message on fd 0 (qmail-lspawn's seekable mess file), report on fd 1 and its
own warnings and errors on fd 2 (the same pipe under qmail-lspawn), exit
0 / 100 / 111. All the work is deliver.report_parts(); this only sets qmail's
umask 077 and writes the report.
"""
import os
import sys

from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.fileio import write_all
from qmailpy.log import guard


@guard("qmail-local", EXIT_TROUBLE)
def main():
    from qmailpy.local.deliver import report_parts
    from qmailpy.progstart import start
    start()                      # qmail's getopt: --help is a usage error (exit 100)
    os.umask(0o077)
    code, parts = report_parts(sys.argv[1:], 0, os.environ)
    for fd, data in parts:
        try:
            write_all(fd, data)
        except OSError:
            pass
    return code
