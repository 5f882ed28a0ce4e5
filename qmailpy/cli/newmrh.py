"""qmail-newmrh: build control/morercpthosts.cdb from control/morercpthosts.

As qmail's qmail-newmrh: one domain a line (`example.com`, or `.example.com`
for its subdomains), trailing white space removed, lower-cased; blank lines
and lines starting with `#` skipped. Unlike qmail's, every line is checked
first: a line qmail-smtpd could never match (white space inside or in
front, an address, characters no host name has) stops it with the line
number, and the old cdb stays as it was. The cdb is replaced atomically
(qmailpy.fileio). Exit 0, 100 usage, 111 trouble.
"""
from qmailpy import paths
from qmailpy.cli.qmailtool import Fatal, on_home, read, run_tool, write_cdb
from qmailpy.exitcodes import EXIT_TROUBLE
from qmailpy.log import guard

PROG = "qmail-newmrh"
USAGE = "qmail-newmrh"
HELP = """Builds $QMAILHOME/control/morercpthosts.cdb (qmail-smtpd's rcpthosts beyond
control/rcpthosts) from control/morercpthosts: one domain or .domain a line.
A bad line is reported with its number and the old cdb is kept.
Exit 0 done, 111 a bad line or trouble reading or writing.
"""
SOURCE, TARGET = "morercpthosts", "morercpthosts.cdb"
HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._")
LITERAL_CHARS = frozenset(b"0123456789abcdef.:")


def problem(entry):
    """Why `entry` (bytes, stripped, lower-cased) can never be a recipient domain, or None."""
    if entry[:1] in (b" ", b"\t"):
        return "white space in front"
    if b" " in entry or b"\t" in entry:
        return "one domain a line"
    if b"@" in entry:
        return "a domain, not an address"
    if entry.startswith(b"[") and entry.endswith(b"]") and LITERAL_CHARS.issuperset(entry[1:-1]):
        return None
    if not HOST_CHARS.issuperset(entry) or b".." in entry or entry.endswith(b"."):
        return "not a host name"
    return None


def keys(data, name):
    """The cdb keys of the text (bytes, in file order); Fatal naming the first bad line."""
    out = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, 1):
        entry = line.rstrip(b" \t\r").lower()
        if not entry or entry.startswith(b"#"):
            continue
        why = problem(entry)
        if why:
            raise Fatal("%s:%d: %s: %s" % (name, n, why, entry.decode("utf-8", "backslashreplace")))
        out.append(entry)
    return out


def build(home):
    """Read control/morercpthosts, replace control/morercpthosts.cdb; the number of keys."""
    entries = keys(read(paths.control_path(home, SOURCE), "control/" + SOURCE), "control/" + SOURCE)
    write_cdb(paths.control_path(home, TARGET), ((k, b"") for k in entries), "control/" + TARGET)
    return len(entries)


@guard("qmail-newmrh", EXIT_TROUBLE)
def main(argv=None):
    return run_tool(PROG, USAGE, HELP, on_home(build), argv)
