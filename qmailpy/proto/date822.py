"""qmail's date822fmt(): the date of every Received line qmail writes.

Always UTC with a literal "-0000", day not zero-padded, English month names
whatever the locale, so qmail-queue and qmail-smtpd lines look like qmail's.
"""
import time

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def date822(ts):
    """'26 Sep 1995 04:46:54 -0000' for a Unix time (seconds; fractions dropped)."""
    t = time.gmtime(int(ts))
    return "%d %s %d %02d:%02d:%02d -0000" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)
