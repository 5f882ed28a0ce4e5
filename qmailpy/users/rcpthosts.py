"""Keep control/rcpthosts in step with hosted domains, as vadddomain/vdeldomain do.

Only an existing control/rcpthosts file is edited: creating one would turn
"accept every domain" into "accept only this one", and a list kept in
control/options would be shadowed by a new file. Otherwise the caller is
told to do it by hand.
"""
import os

from qmailpy import paths


def _path(home):
    return paths.control_path(home, "rcpthosts")


def _lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape").splitlines()
    except FileNotFoundError:
        return None


def _write(path, lines):
    tmp = "%s.tmp%d" % (path, os.getpid())
    mode = os.stat(path).st_mode & 0o7777
    with open(tmp, "wb") as f:
        f.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def add(home, domain):
    """True when control/rcpthosts lists `domain` now; False when there is no such file."""
    path = _path(home)
    lines = _lines(path)
    if lines is None:
        return False
    if any(line.strip().lower() == domain for line in lines):
        return True
    _write(path, lines + [domain])
    return True


def remove(home, domain):
    """True when control/rcpthosts no longer lists `domain`; False when there is no such file."""
    path = _path(home)
    lines = _lines(path)
    if lines is None:
        return False
    kept = [line for line in lines if line.strip().lower() != domain]
    if kept != lines:
        _write(path, kept)
    return True
