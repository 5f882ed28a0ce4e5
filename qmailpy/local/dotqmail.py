"""Finding and reading the user's .qmail file, with qmail-local's safety checks.

Lookup order, the DEFAULT variable, the -owner sender rewrite (NEWSENDER)
and the line grammar follow qmail-local.c's qmesearch(), qmeox() and its
main loop; paths are relative to the home directory, as after qmail's chdir.
"""
import os
import stat

from qmailpy.local import errors

AUTO_PATRN = 0o002            # conf-patrn: a home or .qmail with these mode bits is refused
STICKY = 0o1000


def check_home(homedir, flagdoit):
    """qmail's chdir(homedir) + checkhome(); returns warnings to report (-n only)."""
    def switch_error(err):
        return errors.temp("Unable to switch to %s: %s. (#4.3.0)" % (homedir, errors.error_str(err)))
    try:
        st = os.stat(homedir)
    except OSError as e:
        raise switch_error(e) from None
    if not stat.S_ISDIR(st.st_mode):
        raise switch_error(20)                                  # ENOTDIR
    if not os.access(homedir, os.X_OK):
        raise switch_error(13)                                  # EACCES
    if st.st_mode & AUTO_PATRN:
        raise errors.temp(errors.HOME_WRITABLE)
    if st.st_mode & STICKY:
        if flagdoit:
            raise errors.temp(errors.HOME_STICKY)
        return [errors.HOME_STICKY_WARNING]
    return []


def safe_ext(ext):
    """The extension as used in file names: lower case (ASCII only), '.' -> ':'; as long as ext
    (qmail-local.c's "paranoia" checks of an index into ext against its length never fail)."""
    return ext.encode("utf-8", "surrogateescape").lower().decode(
        "utf-8", "surrogateescape").replace(".", ":")


def _temp_qmail(name, err):
    return errors.temp("Unable to open %s: %s. (#4.3.0)" % (name, errors.error_str(err)))


def read_file(homedir, name):
    """qmeexists(): (content, x_bit) of a regular .qmail file, or None when there is none.

    The name is resolved to an O_PATH descriptor, and only a regular file is then opened for
    reading, through it (qmailpy.fileio.open_regular): a FIFO is never waited on (qmail's
    open_read() is O_NDELAY) and a device never opened, since qmail-showctl --check follows postmaster's route through these
    files as root (a .qmail linked to /dev/watchdog: its open starts the watchdog)."""
    def unable(err):
        if errors.error_temp(err) or err.errno in (1, 13):          # EPERM, EACCES
            return _temp_qmail(name, err)
        return None
    from qmailpy.fileio import close_quietly, open_regular
    try:
        fd, _ = open_regular(os.path.join(homedir, name))
    except OSError as e:
        trouble = unable(e)
        if trouble:
            raise trouble from None
        return None
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if st.st_mode & AUTO_PATRN:
            raise errors.temp(errors.QMAIL_WRITABLE)
        parts = []
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            parts.append(data)
        return b"".join(parts), bool(st.st_mode & 0o100)
    except OSError as e:
        raise errors.temp("Unable to read %s: %s. (#4.3.0)" % (name, errors.error_str(e))) from None
    finally:
        close_quietly(fd)               # read-only


def search(homedir, dash, ext):
    """qmesearch(): (content, x_bit, DEFAULT or None), or None when no file matches.

    For ext a-b-c: .qmail-a-b-c, then .qmail-a-b-default, .qmail-a-default,
    .qmail-default (with the `dash` given; ext lower-cased, '.' -> ':').
    """
    sext = safe_ext(ext)                # as long as ext: DEFAULT is ext from the same index
    got = read_file(homedir, ".qmail" + dash + sext)
    if got is not None:
        return got[0], got[1], (ext[len(sext) - 7:] if sext.endswith("default") else None)
    for i in range(len(sext), -1, -1):
        if i == 0 or sext[i - 1] == "-":
            got = read_file(homedir, ".qmail" + dash + sext[:i] + "default")
            if got is not None:
                return got[0], got[1], ext[i:]
    return None


def _exists(homedir, name):
    """qmeox(): does the file exist? (stat; a temporary error stops delivery)."""
    try:
        os.stat(os.path.join(homedir, name))
        return True
    except OSError as e:
        if errors.error_temp(e):
            raise _temp_qmail(name, e) from None
        return False


def new_sender(homedir, dash, ext, local, host, sender):
    """NEWSENDER: the sender, or local-owner@host when .qmail<dash><ext>-owner exists
    (VERP form local-owner-@host-@[] when -owner-default exists too)."""
    if sender in ("", "#@[]"):
        return sender
    base = ".qmail" + dash + safe_ext(ext)
    if not _exists(homedir, base + "-owner"):
        return sender
    if _exists(homedir, base + "-owner-default"):
        return "%s-owner-@%s-@[]" % (local, host)
    return "%s-owner@%s" % (local, host)


def commands(content):
    """Yield (kind, argument) for each line, in order; kind is one of
    maildir, mbox, program, forward, list.

    Raises for a blank first line when that line is reached, as qmail does.
    Trailing blanks are stripped; a NUL ends an argument (C strings).
    """
    if not content.endswith(b"\n"):
        content += b"\n"
    first = True
    for line in content.split(b"\n")[:-1]:
        line = line.rstrip(b" \t")
        arg = line.split(b"\0", 1)[0]
        head = line[:1]
        if head in (b"", b"\0"):
            if first:
                raise errors.temp(errors.FIRST_LINE_BLANK)
        elif head == b"#":
            pass
        elif head in (b".", b"/"):
            yield ("maildir" if line.endswith(b"/") else "mbox"), os.fsdecode(arg)
        elif head == b"|":
            yield "program", os.fsdecode(arg[1:])
        elif head == b"+":
            if arg == b"+list":
                yield "list", None
        elif head == b"&":
            yield "forward", os.fsdecode(arg[1:])
        else:
            yield "forward", os.fsdecode(arg)
        first = False
