"""qmail's strerr_die*(): a program's last words as one line on fd 2, then its exit code."""
from qmailpy.errstr import error_str
from qmailpy.fileio import write_all


def die(code, *parts):
    """Write parts and a newline to fd 2 (strerr_die*x) and exit `code` (SystemExit)."""
    try:
        write_all(2, ("".join(parts) + "\n").encode("utf-8", "surrogateescape"))
    except OSError:
        pass
    raise SystemExit(code)


def die_sys(code, *parts, error):
    """strerr_die*sys: the parts, then qmail's wording of the OSError `error`."""
    die(code, *parts, error_str(error))
