"""sendmail: the sendmail interface, as qmail's sendmail wrapper (sendmail.c).

usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]

- plain: qmail-inject -a [-f sender] -- args (recipients are the arguments);
  -f also makes the default From field (netqmail's do_sender(): QMAILUSER,
  QMAILHOST from the sender, no full name);
  -t: qmail-inject -H (the arguments and the header's To, Cc, Bcc);
  -F name: $MAILNAME, the full name of the default From field;
- -bs: qmail-smtpd on stdin/stdout; unless $PROTO is set it runs as for a
  local client allowed to relay: RELAYCLIENT="", DATABYTES=0, PROTO=TCP,
  TCPLOCALIP/TCPREMOTEIP=127.0.0.1, TCPLOCALHOST/TCPREMOTEHOST=localhost,
  TCPREMOTEINFO=sendmail-bs;
- -bp, or run as `mailq`: qmail-qread; -bm: the default;
- ignored, as qmail ignores them: -i, -oi (any -oX), -v, -m, -x, -e X,
  -p X, -B X, -E[x], -J[x]; another option or -b letter is a usage error
  (exit 100); run as `newaliases`: exit 100 (qmail has no aliases file).

qmail exec's bin/qmail-inject, bin/qmail-smtpd and bin/qmail-qread of its
home; here the same programs run in this process (their run functions), so
the exit codes and messages are theirs.
"""
import os
import sys

from qmailpy import exitcodes as X
from qmailpy.log import guard
from qmailpy.sgetopt import GetOpt

PROG = "sendmail"
USAGE = "sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"
HELP = USAGE[len("sendmail: "):] + """
Sends a message read on stdin through qmail-inject (docs/sendmail.md).
  -t        recipients from the To, Cc and Bcc fields too   -f sender  envelope sender
  -F name   full name for the From field                     -bs  SMTP on stdin/stdout
  -bp       list the queue (also: run as mailq)              -i, -oi, -v, ...: ignored
Exit 0 done, 100 permanent error, 111 temporary.
"""
BS_ENV = (("RELAYCLIENT", ""), ("DATABYTES", "0"), ("PROTO", "TCP"), ("TCPLOCALIP", "127.0.0.1"),
          ("TCPLOCALHOST", "localhost"), ("TCPREMOTEIP", "127.0.0.1"), ("TCPREMOTEHOST", "localhost"),
          ("TCPREMOTEINFO", "sendmail-bs"))


def _say(text):
    os.write(2, text.encode("utf-8", "surrogateescape"))


def usage():
    _say(USAGE)
    return X.EXIT_USAGE


def smtpd(environ):
    """sendmail -bs: qmail-smtpd on fds 0 and 1, as the invoking user."""
    env = dict(environ)
    if "PROTO" not in env:
        env.update(BS_ENV)
    from qmailpy.smtpd.main import serve
    return serve(0, 1, env)


def mailq(env):
    """qmail-qread's listing (qmailpy.queue.read)."""
    from qmailpy.output import output
    from qmailpy.queue.read import die_on_closed_pipe, listing
    die_on_closed_pipe()

    def warn(text):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    return listing(env["QMAILHOME"], output, warn)


def from_sender(env, sender):
    """do_sender() of netqmail's and notqmail's sendmail.c: -f names the default From field too.
    No full name (-F's MAILNAME included) and no other host: QMAILUSER and QMAILHOST are the
    sender's parts around its last '@' (QMAILUSER is all of it without one)."""
    for name in ("QMAILNAME", "MAILNAME", "NAME", "QMAILHOST", "MAILHOST"):
        env.pop(name, None)
    user, at, host = sender.rpartition("@")
    if at:
        env["QMAILHOST"], env["QMAILUSER"] = host, user
    else:
        env["QMAILUSER"] = sender


def run(argv, environ):
    """sendmail with argv (argv[0] its name: sendmail, mailq or newaliases); the exit code."""
    from qmailpy import paths
    home = os.path.abspath(paths.qmailhome(environ))
    try:
        os.chdir(home)
    except OSError:
        _say("sendmail: fatal: unable to switch to qmail home directory\n")
        return X.EXIT_TROUBLE
    header, sender = False, None
    env = dict(environ, QMAILHOME=home)         # a relative $QMAILHOME no longer applies here
    name = os.path.basename(argv[0]) if argv else PROG      # sgetopt's optprogname: mailq, newaliases
    opts = GetOpt(name, argv[1:], "vimte:f:p:o:B:F:EJxb:")
    for c, arg in opts:
        if c == "t":
            header = True
        elif c == "f":
            sender = arg
        elif c == "F":
            env["MAILNAME"] = arg
        elif c in "EJ":
            opts.skip_rest()
        elif c == "b":
            if arg[:1] == "p":
                return mailq(env)
            if arg[:1] == "s":
                return smtpd(env)
            if arg[:1] != "m":
                return usage()
        elif c == "?":
            return usage()
        # B e i m o p v x: nothing to do, as in qmail
    if name == "mailq":
        return mailq(env)
    if name == "newaliases":
        _say("sendmail: fatal: please use fastforward/newaliases instead\n")
        return X.EXIT_USAGE
    if sender is not None:
        from_sender(env, sender)
    args = ["-H" if header else "-a"] + (["-f", sender] if sender is not None else []) + ["--"] + opts.rest()
    from qmailpy.inject.main import run as inject, std_streams
    return inject(args, env, *std_streams())


@guard("sendmail", X.EXIT_TROUBLE)
def main(argv=None):
    argv = sys.argv if argv is None else argv
    from qmailpy.progstart import start
    start(HELP, argv)           # SIGCHLD back to default (qmail-queue's answer), --help
    return run(argv, os.environ)
