"""Read control values lazily, once each, with qmail's rules and our precedence.

Precedence: environment override (registry `env`, only when an environ is
given) > control/NAME (or an alias file) > control/options > default.
Missing or empty gives the next source. A value that is there but cannot be
used -- an unreadable file, a number that does not parse -- is a ControlError
naming the file and line: the program stops with qmail's temporary "unable
to read controls" instead of running on a guess. This is the one place that
rule lives; callers only decide how their program says "temporary".
"""
import os

from qmailpy import paths
from qmailpy.ctl import registry as R
from qmailpy.ctl.options import OPTIONS, Finding, parse_options
from qmailpy.ctl.parse import Malformed, numbered, parse, parse_seconds, text_lines

SINGLE_KINDS = (R.NUMBER, R.BOOL, R.LINE)       # what require() reads at start
READ_SIZE = 65536
ABSENT = (FileNotFoundError, NotADirectoryError)    # a control that is not there; other errors: ControlError


class ControlError(OSError):
    """A control that cannot be used: unreadable, malformed, or a corrupt cdb.

    `where` names the source (control/NAME, control/options, $VAR, a cdb),
    `lineno` its line (0: the whole file), `reason` what is wrong; str() is
    "where:line: reason", the form of a Finding.
    """

    def __init__(self, where, lineno, reason):
        self.where, self.lineno, self.reason = where, lineno, reason
        super().__init__(str(self.finding()))

    def finding(self):
        return Finding(self.where, self.lineno, self.reason)


class Setting:
    """One resolved parameter: its value and where it came from."""
    __slots__ = ("control", "value", "is_default", "source", "linenos")

    def __init__(self, control, value, is_default, source, linenos=()):
        self.control, self.value, self.is_default = control, value, is_default
        self.source, self.linenos = source, linenos

    def origin(self, index=0):
        """'control/NAME:LINE' of the entry at `index`, for logs that say what decided."""
        if self.linenos and index < len(self.linenos):
            return "%s:%d" % (self.source, self.linenos[index])
        return self.source

    def finding(self, reason):
        """A Finding about this value where it was set (control/NAME, or control/options naming it)."""
        named = self.control.name + ": " if self.source == "control/" + OPTIONS else ""
        return Finding(self.source, self.linenos[0] if self.linenos else 0, named + reason)


def unreadable(name, e):
    """The ControlError of control `name` that an OSError `e` kept us from reading."""
    return ControlError(name, 0, "unable to read: %s" % (e.strerror or e))


def read_bytes(path, name=None):
    """File contents, or None when absent; other errors raise ControlError naming `name` (or path).

    Plain os calls: open, read, read, close. A file object adds an fstat, a tty check and
    two seeks to each file, and qmail-smtpd reads every present control per connection.
    The loop is fileio.read_all's, written here: importing fileio would be one more
    module for every exec'd qmail-smtpd (tests/test_smtpd.py holds that budget)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except ABSENT:
        return None
    except OSError as e:
        raise unreadable(name or path, e) from None
    try:
        chunks = []
        while True:
            data = os.read(fd, READ_SIZE)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    except OSError as e:            # a directory: EISDIR, as open() of a file object says
        raise unreadable(name or path, e) from None
    finally:
        try:                        # fileio.close_quietly()'s rule, written here for the same
            os.close(fd)            # budget: read-only, all read; the fd is gone whatever close()
        except OSError:             # says (qmail's control.c leaves it unchecked)
            pass


def cdb_present(path, name):
    """Is the cdb at `path` there? Absent as for read_bytes(); any other error is a
    ControlError naming `name`, as qmail's rcpthosts_init() fails on an open of
    morercpthosts.cdb that fails otherwise than with ENOENT."""
    try:
        os.stat(path)
    except ABSENT:
        return False
    except OSError as e:
        raise unreadable(name, e) from None
    return True


def env_seconds(environ, name, default):
    """A number of seconds from environment variable `name` (no control file behind it:
    AUTHFAILDELAY, DNSTIMEOUT); unset or empty gives `default`, anything else malformed is a
    ControlError, as for the overrides of the registry."""
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    try:
        return parse_seconds(text)
    except Malformed as e:
        raise ControlError("$" + name, 0, str(e)) from None


class Controls:
    """The controls of one qmail home, read on first use and cached."""

    def __init__(self, home, environ=None):
        self.home = home
        self.environ = environ
        self.findings = []
        self._cache = {}
        self._options = None
        self._listing = None        # names in control/, listed once (None: not yet; False: cannot list)

    def path(self, name):
        return paths.control_path(self.home, name)

    def _read(self, name):
        """control/NAME's bytes or None; a name control/ does not list costs no open.

        One listing of control/ replaces the failed open of each absent file
        (most of them, in most homes): qmail-smtpd reads ~30 per connection.
        """
        if self._listing is None:
            try:
                self._listing = frozenset(os.listdir(paths.control_path(self.home, "")))
            except OSError:
                self._listing = False
        if self._listing is not False and name.partition("/")[0] not in self._listing:
            return None
        return read_bytes(self.path(name), "control/" + name)

    def value(self, name):
        return self.setting(name).value

    def require(self, program):
        """Read now every single-valued control `program` reads (registry `readers`).

        Programs call it at start, so that a malformed or unreadable number or
        line stops them before any mail moves (qmail reads its controls at
        start too); lists, cdbs and the registry's `lazy` controls are read where they are used.
        """
        for c in R.CONTROLS:
            if c.kind in SINGLE_KINDS and program in c.readers and not c.lazy:
                self.setting(c.name)
        return self

    def setting(self, name):
        control = R.BY_NAME[name]
        got = self._cache.get(control.name)
        if got is None:
            got = self._cache[control.name] = self._resolve(control)
        return got

    def options(self):
        """control/options parsed once: {name: numbered lines}."""
        if self._options is None:
            data = self._read(OPTIONS)
            if data is None:
                self._options = {}
            else:
                self._options, found = parse_options(text_lines(data), "control/" + OPTIONS)
                self.findings.extend(found)
        return self._options

    def _resolve(self, control):
        env = self.environ.get(control.env) if control.env and self.environ is not None else None
        if env is not None:
            got = self._try(control, [(0, env)], "$" + control.env)
            if got:
                return got
        if control.kind in (R.CDB, R.FILE):
            path = self.path(control.name)
            # a FILE (servercert.pem) that cannot be looked at is not offered, as the TLS patch's stat()
            present = cdb_present(path, "control/" + control.name) if control.kind == R.CDB else os.path.exists(path)
            return Setting(control, path if present else None, not present, "control/" + control.name)
        for name in (control.name,) + control.aliases:
            data = self._read(name)
            if data is not None:
                got = self._try(control, numbered(text_lines(data)), "control/" + name)
                if got:
                    return got
        pairs = self.options().get(control.name)
        if pairs is not None:
            got = self._try(control, pairs, "control/" + OPTIONS)
            if got:
                return got
        return Setting(control, self.default(control), True, "default")

    def _try(self, control, pairs, source):
        """A Setting from one source, None when it is empty; ControlError when it is malformed."""
        try:
            parsed = parse(control, pairs)
        except Malformed as e:
            lineno = pairs[0][0] if pairs else 0
            named = control.name + ": " if source == "control/" + OPTIONS else ""
            raise ControlError(source, lineno, named + str(e)) from None
        if parsed.empty:
            return None
        return Setting(control, parsed.value, False, source, parsed.linenos)

    def default(self, control):
        d = control.default
        if control.name == "me" and d is None:
            return os.uname().nodename
        if d == R.ME:
            return self.value("me")
        if isinstance(d, tuple) and R.ME in d:
            return tuple(self.value("me") if x == R.ME else x for x in d)
        return d
