"""Constant databases: morercpthosts.cdb, the recipient databases and tcprules files.

cdblib is imported on first open, so programs that never meet a cdb do not pay
for it. Files are mmap'd: a lookup touches a few pages, not the whole file.
"""
import mmap
import os


class CdbMap:
    """A read-only cdb; keys and values are bytes."""

    def __init__(self, path):
        import cdblib
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 2048:          # not even a header: treat as an empty database
                raise ValueError("%s: not a cdb file (%d bytes)" % (path, size))
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._reader = cdblib.Reader(self._mm)

    def get(self, key, default=None):
        return self._reader.get(key, default)

    def __contains__(self, key):
        return key in self._reader

    def __len__(self):
        return len(self._reader)

    def close(self):
        self._reader = None
        self._mm.close()


def open_cdb(path):
    """CdbMap for path, or None when the file does not exist."""
    try:
        return CdbMap(path)
    except FileNotFoundError:
        return None


def tcprules_keys(ip, host=None, info=None):
    """The keys tcpserver tries, in its order (ucspi-tcp rules.c), for a client."""
    if info:
        yield "%s@%s" % (info, ip)
        if host:
            yield "%s@=%s" % (info, host)
    yield ip
    if host:
        yield "=" + host
    for i in range(len(ip) - 1, 0, -1):
        if ip[i - 1] == ".":          # prefixes ending in a dot, longest first
            yield ip[:i]
    if host:
        for i, ch in enumerate(host):
            if ch == ".":
                yield "=" + host[i:]
        yield "="
    yield ""


def decode_rule(value):
    """A tcprules value: ('allow'|'deny', {VAR: value}).

    tcprules stores a deny as b"D\0" and an allow as its variables, each
    b"+VAR=value\0" (an allow without variables is empty).
    """
    if value[:1] == b"D":
        return "deny", {}
    env = {}
    for item in value.split(b"\0"):
        if item[:1] == b"+" and b"=" in item:
            name, val = item[1:].split(b"=", 1)
            env[name.decode("latin-1")] = val.decode("latin-1")
    return "allow", env


def tcprules_lookup(cdb, ip, host=None, info=None):
    """(key, verdict, env) of the first rule tcpserver -x would apply, or None."""
    for key in tcprules_keys(ip, host, info):
        value = cdb.get(key.encode("latin-1"))
        if value is not None:
            verdict, env = decode_rule(value)
            return key, verdict, env
    return None
