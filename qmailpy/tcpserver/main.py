"""qmail-tcpserver: tcpserver's command line, with qmail-smtpd loaded once and run by pre-forked workers.

    qmail-tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ]
        [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ]
        host port qmail-smtpd [ arg ... ]

A run script that says `tcpserver ... qmail-smtpd` says `qmail-tcpserver ...
qmail-smtpd` and nothing else changes: the same options, the same tcp.smtp.cdb,
the same environment and log lines. See docs/qmail-tcpserver.md.
"""
import os
import sys

from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard, write_line
from qmailpy.tcpserver import options, programs, server


@guard("qmail-tcpserver", EXIT_TROUBLE)
def main(argv=None):
    from qmailpy.progstart import start
    start(options.USAGE)
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = options.parse(argv, os.environ)
    except options.UsageError:
        write_line(2, "qmail-tcpserver: " + options.USAGE_LINE)
        return 100
    say = (lambda line: write_line(2, line)) if opts.verbosity else (lambda line: None)
    try:
        runner = programs.load(opts.program)
    except programs.Refused as e:
        say(server.FATAL + str(e))
        return 111
    base_env = ["%s=%s" % item for item in os.environ.items()]
    try:
        listener = server.listen(opts)
        server.drop_privileges(opts)
    except server.Fatal as e:
        say(server.FATAL + str(e))
        return 111
    front = server.Server(opts, runner, listener, base_env)
    front.catch_signals()
    if opts.print_port:
        os.write(1, b"%d\n" % listener.getsockname()[1])
    devnull = os.open(os.devnull, os.O_RDWR)   # tcpserver closes 0 and 1; keep the numbers taken
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if devnull > 2:
        os.close(devnull)
    sys.stdout.flush()
    return front.run()
