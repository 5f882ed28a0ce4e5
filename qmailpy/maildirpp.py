"""Maildir++ (Courier's maildirquota): quota definitions, and the `maildirsize` file.

One home for both readers of a quota: qmail-local (qmailpy.local.quota, which
decides a delivery) and the admin side (qmail-users' quotas, maildirmake -q).

A definition is what pw_shell or $MAILDIRQUOTA holds after normalize():
`10000000S`, `1000C`, `10000000S,1000C`; a plain number means bytes; without a comma
or a final S, a K or M anywhere multiplies the leading number (vpopmail's
format_maildirquota: `10M`, `10MB`, `5 mb`); NOQUOTA means no limit.
limits() reads it as Courier's qcalc() does.

The file's format (Courier maildirquota / netqmail-maildir++): first line the quota
definition (e.g. `10000000S,1000C`), then `<bytes> <count>` lines whose sums
are the mailbox usage. Rules copied from maildirquota.c: a file of 5120
bytes or more is not trusted; a recount covers new/ and cur/ of the main
folder and of every `.Folder` except `.Trash`, skips messages flagged T
(trashed), takes sizes from `,S=<n>` in names (else stat), and replaces the
file atomically through tmp/<time>.<pid>_NeWmAiLdIrSiZe.<host>.

Several hosts may deliver into one Maildir over NFS (docs/operations.md,
"Running several MX hosts"), where flock() and O_APPEND are not to be
trusted. size_lock() is the lock that stays correct there: a dot-lock file
`maildirsize.lock` in the Maildir made by link() from a unique file in tmp/,
held by whoever sees that file's link count become 2 (what liblockfile does,
since NFS can report a link() that succeeded as failed). qmail-local holds it
around the quota decision, the link into new/ and the appended line, and
every recount holds it, so lines are never lost to a concurrent rewrite nor
counted twice, and two hosts cannot both take the last bytes of a quota.
"""
import errno
import os
import time

MAX_BYTES = 5120
NAME = "maildirsize"
LOCK = "maildirsize.lock"
BREAK = "maildirsize.lock.break"   # held while a stale LOCK is removed (size_lock._break_stale)
LOCK_WAIT = 30                  # seconds to wait for the lock before giving up (a temporary failure)
LOCK_STALE = 120                # seconds after which a lock left by a crashed holder is broken
TRASH = ".Trash"


UNITS = {"K": 1024, "M": 1048576}
OFF_MAX = (1 << 63) - 1         # the largest off_t/long: where C's sizes and counts stop


def _number(digits):
    """An ASCII digit string's value, no more than OFF_MAX (int() would refuse 4301 digits)."""
    digits = digits.lstrip("0" if isinstance(digits, str) else b"0")
    return OFF_MAX if len(digits) > 19 else min(int(digits or 0), OFF_MAX)


def present(path):
    """Does `path` exist? Unlike os.path.exists(), an error other than its absence (EIO, EACCES)
    raises: a maildirsize or maildirfolder that cannot be looked at is not one that is not there
    (a quota skipped, or a folder counted as a Maildir of its own)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def hostname():
    """gethostname() cut to 64 bytes, made safe for a file name (Maildir names, tmp files)."""
    host = os.uname().nodename[:64]
    return host.replace("/", "\\057").replace(":", "\\072")


# -- quota definitions

def normalize(value):
    """A quota as given ($MAILDIRQUOTA, pw_shell, maildirmake -q) -> None (not given),
    "" (NOQUOTA: no limit) or a Maildir++ definition."""
    v = (value or "").strip()
    if not v:
        return None
    if v.upper() == "NOQUOTA":
        return ""
    if v.isdigit() and v.isascii():
        return v + "S"
    if "," not in v and not v.endswith("S"):
        # vpopmail's format_maildirquota(): the leading number (atol), times the unit of
        # the first k/K or m/M anywhere in the string ("10MB", "5 mb")
        unit = next((UNITS[ch.upper()] for ch in v if ch in "kKmM"), None)
        start = end = 1 if v[:1] == "+" else 0
        while end < len(v) and "0" <= v[end] <= "9":
            end += 1
        if unit and end > start:
            return "%dS" % min(_number(v[start:end]) * unit, OFF_MAX)
    return v


def valid(value):
    """True for a quota an admin may set: nothing, NOQUOTA, or what normalizes to comma-separated
    <digits>S / <digits>C (1234, 10M, 512k, 10000000S, 10000000S,1000C)."""
    definition = normalize(value)
    if not definition:
        return True
    return all(p[:-1].isdigit() and p[:-1].isascii() and p[-1:] in ("S", "C") for p in definition.split(","))


def limits(definition):
    """qcalc()'s reading: each number is a limit, 'C' after it = messages, else bytes."""
    out = []
    i, n = 0, len(definition)
    while i < n:
        if not ("0" <= definition[i] <= "9"):
            i += 1
            continue
        j = i
        while j < n and "0" <= definition[j] <= "9":
            j += 1
        out.append(("C" if definition[j:j + 1] == "C" else "S", _number(definition[i:j])))
        i = j
    return out


def over(definition, size, count):
    """True when `size` bytes or `count` messages break a limit of `definition`."""
    for kind, limit in limits(definition):
        if limit < (count if kind == "C" else size):
            return True
    return False


# -- the maildirsize file

class State:
    """What a maildirsize file says."""
    __slots__ = ("definition", "size", "count", "nlines", "mtime", "too_big")

    def __init__(self, definition, size, count, nlines, mtime, too_big):
        self.definition, self.size, self.count = definition, size, count
        self.nlines, self.mtime, self.too_big = nlines, mtime, too_big


def _leading_int(word):
    """sscanf %ld: optional sign and leading digits, else 0; beyond a long, +-LONG_MAX."""
    i = 1 if word[:1] in (b"-", b"+") else 0
    j = i
    while j < len(word) and 48 <= word[j] <= 57:
        j += 1
    value = _number(word[i:j])
    return -value if word[:1] == b"-" else value


def read(path):
    """State of the file at `path`, or None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = b""
        while len(data) < MAX_BYTES:
            got = os.read(fd, MAX_BYTES - len(data))
            if not got:
                break
            data += got
        mtime = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    definition = os.fsdecode(lines[0]) if lines else ""
    size = count = 0
    for line in lines[1:]:
        words = line.split()
        size += _leading_int(words[0]) if words else 0
        count += _leading_int(words[1]) if len(words) > 1 else 0
    return State(definition, size, count, max(len(lines) - 1, 0), mtime,
                 len(data) >= MAX_BYTES)


def parse_size(name):
    """The n of `,S=n` before the ':' of a Maildir file name, or None."""
    base = name.split(":", 1)[0]
    at = base.rfind(",S=")
    if at < 0:
        return None
    digits = base[at + 3:]
    end = 0
    while end < len(digits) and digits[end].isdigit() and digits[end].isascii():
        end += 1
    return int(digits[:end]) if end else 0


def _trashed(name):
    at = name.find(":2,")
    if at < 0:
        return False
    for ch in name[at + 3:]:
        if not ("A" <= ch <= "Z"):
            return False
        if ch == "T":
            return True
    return False


def _count_dir(path):
    size = count = 0
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for name in names:
        if name.startswith(".") or _trashed(name):
            continue
        n = parse_size(name)
        if n is None:
            try:
                n = os.stat(os.path.join(path, name)).st_size
            except FileNotFoundError:
                continue                # moved or expunged meanwhile
        size += n
        count += 1
    return size, count


def folders(root):
    """The folders that count: the Maildir itself and its .Folder subfolders but .Trash."""
    yield root
    for name in sorted(os.listdir(root)):
        if name.startswith(".") and name not in (".", "..", TRASH):
            yield os.path.join(root, name)


def scan(root):
    """(bytes, messages) now in the Maildir++ at `root`. cur/ is listed before new/: a reader
    moving a message from new/ to cur/ in between (Dovecot at each login) leaves it uncounted
    at worst, never counted twice (a false "over" bounces for good)."""
    size = count = 0
    for folder in folders(root):
        for sub in ("cur", "new"):
            s, c = _count_dir(os.path.join(folder, sub))
            size += s
            count += c
    return size, count


def folder_times(root):
    """{path: mtime} of new/ and cur/ of the folders that count: readings that differ mean that
    messages came, went or moved in between (a rename or unlink changes its directory's mtime)."""
    times = {}
    for folder in folders(root):
        for sub in ("cur", "new"):
            path = os.path.join(folder, sub)
            try:
                times[path] = os.stat(path).st_mtime
            except (FileNotFoundError, NotADirectoryError):
                continue
    return times


def changed_since(root, mtime):
    """True when messages may have come or gone in the Maildir++ at `root` since `mtime` (a
    maildirsize file's): new/ or cur/ of a folder that counts was modified then or later (in
    the same clock tick counts). Readers delete without telling maildirsize (Dovecot without
    its quota plugin)."""
    return any(t >= mtime for t in folder_times(root).values())


def rewrite(root, definition, size, count, host=None, owner=None):
    """Replace root/maildirsize by `definition` + one total line, atomically and durably
    (a lost definition would lift the quota), mode 0600, `owner` (uid, gid) when given."""
    from qmailpy.fileio import atomic_write
    tmp = os.path.join(root, "tmp", "%d.%d_NeWmAiLdIrSiZe.%s" % (time.time(), os.getpid(), host or hostname()))
    body = os.fsencode(definition) + b"\n" + b"%d %d\n" % (size, count)
    atomic_write(os.path.join(root, NAME), body, durable=True, mode=0o600, owner=owner, tmp=tmp)


def recount(root, definition, host=None, owner=None):
    """scan() and rewrite() under size_lock: what an admin tool runs while mail may arrive."""
    with size_lock(root, host):
        rewrite(root, definition, *scan(root), host=host, owner=owner)


def remove(root, host=None):
    """Remove root/maildirsize (the quota is lifted) under size_lock: a delivery recounting
    under the lock would write it back after the unlink, with the old definition."""
    if not os.path.exists(os.path.join(root, NAME)):
        return
    with size_lock(root, host):
        _unlink(os.path.join(root, NAME))


def append(path, size, count):
    """Add one `<bytes> <count>` line with a single O_APPEND write (never creates the file).
    The line is whole or not there: a write the full disk cut short (a write that wrote
    nothing raises by itself) is cut off again, from where it began, and raises OSError, since
    the next line would be glued to the cut one (`158` + `170 1` = `158170 1`)."""
    line = b"%d %d\n" % (size, count)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, line)
        if written != len(line):
            os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR) - written)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    finally:
        os.close(fd)


def _jitter(pause):
    """A pause between pause/2 and pause. random is imported here, not at the top: it
    registers an at-fork handler, and qmail-lspawn forks a delivery from this code."""
    import random
    return random.uniform(pause / 2, pause)


class LockTimeout(OSError):
    """maildirsize.lock stayed taken for LOCK_WAIT seconds."""


class size_lock:
    """`with size_lock(root):` holds root/maildirsize.lock (NFS-safe; see the module docstring).

    The lock's mtime is the holder's clock through the file server's; a lock
    older than LOCK_STALE seconds (a holder killed between link and unlink), or
    dated that much ahead (left before the clock was stepped back),
    is removed, by one waiter at a time (BREAK). LockTimeout after LOCK_WAIT
    seconds; other OSErrors (no tmp/, a read-only file system) propagate from
    taking the lock, never from leaving it: by then qmail-local's message is in
    new/, and a temporary failure would have qmail-send deliver it again.
    """

    def __init__(self, root, host=None, wait=LOCK_WAIT, stale=LOCK_STALE):
        self.path = os.path.join(root, LOCK)
        self.tmp = os.path.join(root, "tmp", "%d.%d_%s.LoCk.%s" % (
            time.time(), os.getpid(), os.urandom(4).hex(), host or hostname()))
        self.wait, self.stale = wait, stale

    def __enter__(self):
        from qmailpy.fileio import close_quietly
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"%d\n" % os.getpid())
            deadline = time.monotonic() + self.wait
            pause = 0.001
            while not self._linked(fd):
                if time.monotonic() > deadline:
                    raise LockTimeout(11, "%s locked for %d seconds" % (self.path, self.wait))
                self._break_stale(fd)
                time.sleep(_jitter(pause))
                pause = min(pause * 2, 0.05)
        except BaseException:
            # taken (maybe by a link made before a later call failed), but the caller hears of
            # an error and never leaves it: give it back, or every delivery waits for it
            if same_file(self.tmp, self.path):
                self.__exit__()
            try:
                _unlink(self.tmp)
            except OSError:         # the error on its way out says more than this one
                pass
            raise
        finally:
            close_quietly(fd)       # what the lock holds is its name, not this fd
        try:
            _unlink(self.tmp)
        except OSError:             # the lock is ours all the same; a tmp/ file left over is
            pass                    # swept as any other (36 hours)
        return self

    def _linked(self, fd, target=None):
        """Is our tmp/ file (fd) now linked as `target` (default: the lock)? A link that
        failed otherwise than by the name being taken (a full disk: a tmpfs link takes an
        inode) raises, unless it was made anyway (NFS); waiting would not make room."""
        try:
            os.link(self.tmp, target or self.path)
        except FileExistsError:
            return False
        except OSError:
            if os.fstat(fd).st_nlink != 2:  # NFS: the link may have happened anyway; the count says
                raise
        return os.fstat(fd).st_nlink == 2

    def _break_stale(self, fd):
        """Remove a stale lock, under BREAK: two waiters that both found it stale would each
        unlink what the name held then, and the slower one would take away the lock the faster
        one had broken and taken since. BREAK is made as the lock is (our tmp/ file linked) and
        held for a stat and an unlink; one its maker left behind (killed in between) is itself
        broken once stale."""
        if not self._stale(self.path):
            return
        guard = self.path[:-len(LOCK)] + BREAK
        if not self._linked(fd, guard):
            if self._stale(guard):
                _unlink(guard)
            return
        try:
            if self._stale(self.path):      # still the one we found, not a lock taken since
                _unlink(self.path)
        finally:
            _unlink(guard)

    def _stale(self, path):
        try:
            return abs(time.time() - os.stat(path).st_mtime) > self.stale   # ahead: a clock stepped back
        except FileNotFoundError:
            return False

    def __exit__(self, *exc):
        for _ in range(2):      # once more after an I/O error: a lock left here holds every
            try:                # delivery to the mailbox (30 s, then a deferral) until stale
                _unlink(self.path)
                return
            except OSError:     # what the lock guarded is done: a lock left here goes stale
                pass            # and is broken after `stale` seconds, as a crashed holder's


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def same_file(a, b):
    """Are paths a and b one file? False when either cannot be looked at."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
