"""qmail-tcpserver's command line: tcpserver's (ucspi-tcp 0.88) letters, defaults and quirks.

Options stop at the first argument that is not one (djb's getopt); numbers are read
as scan_ulong reads them (leading digits, anything else 0); an unknown letter or
a missing host, port or program is a usage error (exit 100), as in tcpserver.
"""
import getopt
import socket

from qmailpy.scan import scan_ulong

LETTERS = "dDvqQhHrR1UXx:t:u:g:l:b:B:c:pPoO"
USAGE_LINE = ("usage: qmail-tcpserver [ -1UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] "
              "[ -B banner ] [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ] "
              "host port qmail-smtpd [ arg ... ]")
USAGE = USAGE_LINE + """
tcpserver's options and environment; qmail-smtpd loaded once, run by pre-forked workers.
See docs/qmail-tcpserver.md."""


class UsageError(Exception):
    """Bad command line: tcpserver prints its usage and exits 100."""


class Options:
    """What the command line asks for; the defaults are tcpserver's."""

    def __init__(self):
        self.limit = 40             # -c
        self.backlog = 20           # -b
        self.rules = None           # -x
        self.allow_no_rules = False  # -X
        self.banner = ""            # -B
        self.uid = self.gid = 0     # -u -g (-U: $UID $GID); 0: keep
        self.verbosity = 1          # -q 0, -Q 1, -v 2
        self.remotehost = True      # -h / -H
        self.paranoid = False       # -p / -P
        self.remoteinfo = True      # -r / -R
        self.timeout = 26           # -t: seconds for the ident lookup
        self.localhost = None       # -l
        self.print_port = False     # -1
        self.delay = True           # -d / -D (TCP_NODELAY)
        self.kill_ip_options = True  # -O / -o
        self.max_use = 0            # $QMAILPY_MAXUSE: sessions per worker (0: pool.MAX_USE)
        self.max_idle = 0           # $QMAILPY_MAXIDLE: seconds an idle worker waits (0: pool.MAX_IDLE)
        self.host = self.port = None
        self.program = None
        self.args = []

    @property
    def family(self):
        """The listener's address family, and so its connections': IPv6 for a host with ':'."""
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


# letter -> (attribute, value) for the options without an argument
SWITCHES = {"X": ("allow_no_rules", True), "v": ("verbosity", 2), "q": ("verbosity", 0), "Q": ("verbosity", 1),
            "h": ("remotehost", True), "H": ("remotehost", False), "p": ("paranoid", True),
            "P": ("paranoid", False), "r": ("remoteinfo", True), "R": ("remoteinfo", False),
            "1": ("print_port", True), "d": ("delay", True), "D": ("delay", False),
            "O": ("kill_ip_options", True), "o": ("kill_ip_options", False)}
NUMBERS = {"c": "limit", "b": "backlog", "u": "uid", "g": "gid", "t": "timeout"}
TEXTS = {"x": "rules", "B": "banner", "l": "localhost"}


def parse(argv, environ):
    """Options from argv (without the program's own name); UsageError when malformed."""
    try:
        pairs, rest = getopt.getopt(list(argv), LETTERS)
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    o = Options()
    o.max_use = scan_ulong(environ.get("QMAILPY_MAXUSE", ""))
    o.max_idle = scan_ulong(environ.get("QMAILPY_MAXIDLE", ""))
    for flag, value in pairs:
        letter = flag[1]
        if letter in SWITCHES:
            setattr(o, *SWITCHES[letter])
        elif letter in NUMBERS:
            setattr(o, NUMBERS[letter], scan_ulong(value))
        elif letter in TEXTS:
            setattr(o, TEXTS[letter], value)
        else:                           # -U, the one letter left
            if "UID" in environ:
                o.uid = scan_ulong(environ["UID"])
            if "GID" in environ:
                o.gid = scan_ulong(environ["GID"])
    if len(rest) < 3:
        raise UsageError("host, port and program are needed")
    o.host, o.port, o.program, o.args = rest[0], rest[1], rest[2], rest[3:]
    if o.host in ("", "0"):
        o.host = "0.0.0.0"
    return o
