"""The qmail-local command: `qmail-local [-nN] user homedir local dash ext domain sender aliasempty`.

Message on fd 0 (qmail-lspawn's seekable mess file), report on fd 1, exit
0 / 100 / 111. All the work is deliver.deliver(); this only sets qmail's
umask 077 and writes the report.
"""
import os
import sys

from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.fileio import write_all
from qmailpy.log import guard


@guard("qmail-local", EXIT_TROUBLE)
def main():
    from qmailpy.local.deliver import deliver
    from qmailpy.progstart import start
    start()                      # qmail's getopt: --help is a usage error (exit 100)
    os.umask(0o077)
    code, report = deliver(sys.argv[1:], 0, os.environ)
    try:
        write_all(1, report.encode("utf-8", "surrogateescape"))
    except OSError:
        pass
    return code
