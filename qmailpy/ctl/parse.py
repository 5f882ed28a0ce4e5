"""qmail's rules for turning the lines of a control file into a typed value.

Shared by the per-parameter files and control/options so that both forms give
identical results. Pure: the caller reads the file.
"""
from qmailpy.ctl import registry as R

LIST_KINDS = (R.LIST, R.PATTERNS, R.SECRETS)


class Malformed(ValueError):
    """A value that does not parse; the reader makes it a ControlError (never a default)."""


def strip_line(line):
    """A control file's line as the programs read it: trailing white space (and CR) stripped,
    as qmail does; leading white space stays (' example.com' is another entry)."""
    return line.rstrip(" \t\r\v\f")


def file_lines(data):
    """The lines of a control file as qmail splits them: at '\n' only (a form feed or U+2028 is
    part of its line), decoded (undecodable bytes kept); the admin tools rewrite these."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def text_lines(data):
    """Decode a control file and strip each line (strip_line)."""
    return [strip_line(line) for line in file_lines(data)]


def numbered(lines):
    """(line number, line) pairs of a whole file."""
    return list(enumerate(lines, 1))


def entries(pairs):
    """List entries with their line numbers: blank lines and '#' lines are skipped."""
    out, numbers = [], []
    for n, line in pairs:
        if line and not line.startswith("#"):
            out.append(line)
            numbers.append(n)
    return tuple(out), tuple(numbers)


SHOWN = 60                      # characters of a malformed value its error quotes


def shown(text):
    """A malformed value as its error quotes it: repr(), cut to SHOWN characters (a 300 KB line
    made a 300 KB log line of every program that read it)."""
    if len(text) <= SHOWN:
        return repr(text)
    return "%r... (%d characters)" % (text[:SHOWN], len(text))


def parse_number(control, text):
    """A non-negative decimal, clamped to the maximum (R.NUMBER_MAX when none); below the
    control's minimum, or anything else, is Malformed."""
    if not text.isdigit() or not text.isascii():
        raise Malformed("not a number: %s" % shown(text))
    digits = text.lstrip("0")
    value = int(digits or "0") if len(digits) <= 20 else 10 ** 20     # int() refuses 4301 digits
    if control.kind == R.BOOL:
        return 1 if value else 0
    if value < control.minimum:
        raise Malformed("below the minimum %d: %s" % (control.minimum, shown(text)))
    limit = R.NUMBER_MAX if control.maximum is None else control.maximum
    return min(value, limit)


SECONDS_MAX = 1e9               # about 31 years: any sleep or alarm takes it


def parse_seconds(text):
    """A non-negative decimal number of seconds ("5", "0.25"), clamped to SECONDS_MAX as
    parse_number clamps to a maximum (400 digits were float inf, which AUTHFAILDELAY's sleep
    refused); anything else is Malformed."""
    whole, dot, frac = text.partition(".")
    if not (whole or frac) or not (whole + frac).isdigit() or not text.isascii() or (dot and not frac):
        raise Malformed("not a number of seconds: %s" % shown(text))
    return min(float(text), SECONDS_MAX)


class Parsed:
    """The value of one source (file, options entry or environment) and where its entries stand."""
    __slots__ = ("value", "linenos", "empty")

    def __init__(self, value, linenos=(), empty=False):
        self.value, self.linenos, self.empty = value, linenos, empty


def parse(control, pairs):
    """Parsed value of (line number, line) `pairs` for `control`; Parsed.empty means "use the default"."""
    kind = control.kind
    if kind in LIST_KINDS:
        values, numbers = entries(pairs)
        return Parsed(values, numbers)
    if kind == R.TEXT:
        while pairs and not pairs[-1][1]:
            pairs = pairs[:-1]
        return Parsed(tuple(line for _, line in pairs), tuple(n for n, _ in pairs), empty=not pairs)
    lineno, first = pairs[0] if pairs else (0, "")
    if kind in (R.NUMBER, R.BOOL):
        first = first.strip()
        if not first:
            return Parsed(None, empty=True)
        return Parsed(parse_number(control, first), (lineno,))
    if kind == R.LINE:
        if not first and not control.keep_empty:
            return Parsed(None, empty=True)
        return Parsed(first, (lineno,))
    raise Malformed("%s cannot be given as text" % control.name)
