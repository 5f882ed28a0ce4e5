"""control/options: every parameter in one file (H-Sphere 2.4 patch 2).

Format (the same as qmail-showctl's output, so its output can be pasted):

    # comment
    databytes: 10000000
    badmailfrom:
      @spam.example
      !not-this@spam.example
    smtpgreeting: mail.example.com

A line `name: value` sets a single value; indented lines after `name:` are
list (or text) entries. A text (bouncemessage) keeps what its own file would:
blank lines between its lines, and each line's indentation beyond the block's. A value starting with `(Default.)` is ignored, and so
are cdb and secrets parameters, which only their own files can set. A
per-parameter file always wins over options. See docs/options.md.
"""
from qmailpy.ctl import registry as R

OPTIONS = "options"
DEFAULT_MARK = "(Default.)"


class Finding:
    """A problem in a control file, reported by qmail-showctl --check and logged by programs."""
    __slots__ = ("path", "lineno", "message")

    def __init__(self, path, lineno, message):
        self.path, self.lineno, self.message = path, lineno, message

    def __str__(self):
        where = self.path if not self.lineno else "%s:%d" % (self.path, self.lineno)
        return "%s: %s" % (where, self.message)

    def __repr__(self):
        return "Finding(%r)" % str(self)


def parse_options(lines, path="control/options"):
    """{control name: [(line number, text), ...]} and a list of Findings."""
    found, findings = {}, []
    current = None          # name whose indented entries we are collecting
    skipping = False        # inside the entries of a (Default.) parameter
    texts = set()           # text parameters: blank lines and inner indentation are kept
    inline = set()          # numbers of lines with a value after `name:`
    for n, line in enumerate(lines, 1):
        if not line and current in texts:
            found[current].append((n, ""))      # trailing ones are dropped by parse.parse
            continue
        if not line or line.startswith("#"):
            continue
        if line[0] in " \t":
            if skipping:
                continue
            if current is None:
                findings.append(Finding(path, n, "indented line belongs to no parameter"))
            else:
                found[current].append((n, line if current in texts else line.strip()))
            continue
        current, skipping = None, False
        name, sep, value = line.partition(":")
        name = name.strip()
        control = R.lookup(name)
        if not sep or not name:
            findings.append(Finding(path, n, "not 'name: value': %r" % line))
            continue
        if control is None:
            findings.append(Finding(path, n, "unknown parameter %r" % name))
            continue
        value = value.strip()
        if control.kind in (R.CDB, R.SECRETS, R.FILE):
            if value and not value.startswith("("):
                findings.append(Finding(path, n, "%s can only be set in its own file" % name))
            continue
        if value.startswith(DEFAULT_MARK):
            skipping = True
            continue
        if control.name in found:
            findings.append(Finding(path, n, "%s given again; this line wins" % name))
        found[control.name] = [(n, value)] if value else []
        inline.add(n)
        current = control.name
        if control.kind == R.TEXT:
            texts.add(control.name)
    for name in texts & set(found):
        found[name] = _dedent(found[name], inline)
    return found, findings


def _dedent(pairs, inline):
    """Text lines without the indentation their block shares; a value on the `name:` line
    (its number is in `inline`) has none and takes no part."""
    indents = [line[:len(line) - len(line.lstrip(" \t"))] for n, line in pairs if line.strip() and n not in inline]
    common = indents[0] if indents else ""
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return [(n, line[len(common):] if line.startswith(common) else line.strip()) for n, line in pairs]
