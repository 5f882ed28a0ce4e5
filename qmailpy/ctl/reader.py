"""Read control values lazily, once each, with qmail's rules and our precedence.

Precedence: environment override (registry `env`, only when an environ is
given) > control/NAME (or an alias file) > control/options > default.
A value that does not parse is reported as a Finding and the next source is
used, so a malformed file never silently becomes 0.
"""
import os

from qmailpy import paths
from qmailpy.ctl import registry as R
from qmailpy.ctl.options import OPTIONS, Finding, parse_options
from qmailpy.ctl.parse import Malformed, numbered, parse, text_lines


class ControlError(OSError):
    """A control file exists but cannot be read: qmail's 'unable to read controls'."""


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


def read_bytes(path):
    """File contents, or None when absent; other errors raise ControlError."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise ControlError("unable to read %s: %s" % (path, e.strerror)) from None


class Controls:
    """The controls of one qmail home, read on first use and cached."""

    def __init__(self, home, environ=None):
        self.home = home
        self.environ = environ
        self.findings = []
        self._cache = {}
        self._options = None

    def path(self, name):
        return paths.control_path(self.home, name)

    def value(self, name):
        return self.setting(name).value

    def setting(self, name):
        control = R.BY_NAME[name]
        got = self._cache.get(control.name)
        if got is None:
            got = self._cache[control.name] = self._resolve(control)
        return got

    def options(self):
        """control/options parsed once: {name: numbered lines}."""
        if self._options is None:
            data = read_bytes(self.path(OPTIONS))
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
        if control.kind == R.CDB:
            path = self.path(control.name)
            present = os.path.exists(path)
            return Setting(control, path if present else None, not present, "control/" + control.name)
        for name in (control.name,) + control.aliases:
            data = read_bytes(self.path(name))
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
        """A Setting from one source, or None (empty, or malformed: then a Finding)."""
        try:
            parsed = parse(control, pairs)
        except Malformed as e:
            lineno = pairs[0][0] if pairs else 0
            self.findings.append(Finding(source, lineno, "%s; using the next source or the default" % e))
            return None
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
