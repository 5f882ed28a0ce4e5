"""Constant databases: morercpthosts.cdb, the recipient databases, users/cdb and tcprules files.

A cdb we cannot trust is a ControlError naming the file (qmail's "unable to
read controls"), never a guess and never an exception from deep inside a
lookup: the header is checked when the file is opened (every hash table
inside the file), and each lookup checks the bounds of what it reads and
probes a table at most once round (a corrupt table without an empty slot
cannot loop). verify() walks the whole file, for qmail-showctl --check.

cdblib's hash is imported on first open, so programs that never meet a cdb
do not pay for it. Files are mmap'd: a lookup touches a few pages, not the
whole file.
"""
import errno
import mmap
import os
import stat

from qmailpy.ctl.reader import ControlError, unreadable
from qmailpy.fileio import close_quietly

HEADER = 2048           # 256 (position, length) pairs of the hash tables


class CorruptCdb(ControlError):
    """A cdb file that is truncated or not a cdb at all."""


def _pair(buf, pos):
    """The two little-endian 32-bit numbers at pos (int.from_bytes: a lookup reads a few)."""
    return (int.from_bytes(buf[pos:pos + 4], "little"), int.from_bytes(buf[pos + 4:pos + 8], "little"))


def _open_file(path):
    """An O_RDONLY descriptor of the regular file at `path` (fileio.open_regular); OSError for
    anything else, which is never opened for reading: qmail-lspawn opens users/cdb as root in
    qmailu's directory, where it may be linked to a device or a FIFO."""
    from qmailpy.fileio import open_regular
    fd, mode = open_regular(path)
    if fd is not None:
        return fd
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    raise OSError(errno.EINVAL, "not a file")


class CdbMap:
    """A read-only cdb; keys and values are bytes. `name` is how errors call the file."""

    def __init__(self, path, name=None):
        from _struct import unpack_from         # the C half of struct: one call for the whole header
        from cdblib.djb_hash import djb_hash
        self._hash = djb_hash
        self.path, self.name = path, name or path
        try:
            fd = _open_file(path)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise unreadable(self.name, e) from None
        try:
            st = os.fstat(fd)
            self.size, self.owner = st.st_size, st.st_uid
            if self.size < HEADER:
                raise self.corrupt("truncated: %d bytes, shorter than the header" % self.size)
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except OSError as e:
            if isinstance(e, ControlError):
                raise
            raise unreadable(self.name, e) from None
        finally:
            close_quietly(fd)               # read-only; the map holds what we read
        # 256 (position, slots) pairs, checked all at once: a lookup may then trust its table's
        # bounds (struct and zip here cost 30 us an open, int.from_bytes per number 200 us)
        raw = unpack_from("<512I", self._mm)
        self._tables = list(zip(raw[0::2], raw[1::2]))
        size = self.size
        bad = next((i for i, (pos, slots) in enumerate(self._tables)
                    if slots and (pos < HEADER or pos + 8 * slots > size)), None)
        if bad is not None:
            self._mm.close()
            raise self.corrupt("truncated: hash table %d lies outside the file" % bad)

    def corrupt(self, why):
        return CorruptCdb(self.name, 0, "corrupt cdb: " + why)

    def get(self, key, default=None):
        h = self._hash(key) & 0xffffffff
        pos, slots = self._tables[h & 255]
        if not slots:
            return default
        mm, size = self._mm, self.size
        slot = (h >> 8) % slots
        for _ in range(slots):
            hashed, rec = _pair(mm, pos + 8 * slot)
            if not rec:
                return default
            if hashed == h:
                klen, dlen = _pair(mm, rec) if rec + 8 <= size else (size, size)
                start = rec + 8
                if start + klen + dlen > size:
                    raise self.corrupt("truncated: a record lies outside the file")
                if mm[start:start + klen] == key:
                    return mm[start + klen:start + klen + dlen]
            slot = slot + 1 if slot + 1 < slots else 0
        return default

    def __contains__(self, key):
        return self.get(key) is not None

    def __len__(self):
        return sum(slots >> 1 for _, slots in self._tables)

    def verify(self):
        """Walk every record and every hash table; the number of records, or CorruptCdb."""
        mm, size = self._mm, self.size
        end = max(HEADER, min(size, min(pos for pos, _ in self._tables)))
        pos, records = HEADER, {}
        while pos < end:
            if pos + 8 > end:
                raise self.corrupt("a record header crosses the hash tables")
            klen, dlen = _pair(mm, pos)
            if pos + 8 + klen + dlen > end:
                raise self.corrupt("a record crosses the hash tables")
            key = mm[pos + 8:pos + 8 + klen]
            records[pos] = self._hash(key) & 0xffffffff
            pos += 8 + klen + dlen
        found = 0
        for i, (tpos, slots) in enumerate(self._tables):
            empty = 0
            for s in range(slots):
                hashed, rec = _pair(mm, tpos + 8 * s)
                if not rec:
                    if hashed:          # cdbmake writes empty slots as zeros
                        raise self.corrupt("hash table %d has a damaged empty slot" % i)
                    empty += 1
                    continue
                if records.get(rec) != hashed or hashed & 255 != i:
                    raise self.corrupt("hash table %d points at no record of its own" % i)
                found += 1
            if slots and not empty:
                raise self.corrupt("hash table %d is full" % i)
        if found != len(records):
            raise self.corrupt("%d records, %d in the hash tables" % (len(records), found))
        return found

    def close(self):
        self._mm.close()


def open_cdb(path, name=None):
    """CdbMap for path, or None when the file does not exist; ControlError when unusable."""
    try:
        return CdbMap(path, name)
    except FileNotFoundError:
        return None


def tcprules_keys(ip, host=None, info=None):
    """The keys tcpserver tries, in its order (ucspi-tcp rules.c), for a client. The prefixes
    end in '.' or, as in the IPv6 patch's rules.c (Debian's ucspi-tcp-ipv6), ':': its
    tcprules writes `2001:db8:1::allow` as the key `2001:db8:1:`, tried for 2001:db8:1::7.
    info "" (an identd that named nobody) tries `@ip`, as rules.c does; None tries no info key."""
    if info is not None:
        yield "%s@%s" % (info, ip)
        if host:
            yield "%s@=%s" % (info, host)
    yield ip
    if host:
        yield "=" + host
    for i in range(len(ip) - 1, 0, -1):
        if ip[i - 1] in ".:":         # prefixes ending in a dot or a colon, longest first
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
