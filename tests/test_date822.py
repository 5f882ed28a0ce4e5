"""qmailpy.proto.date822: qmail's date822fmt() against the calendar of the datetime module."""
import datetime

from hypothesis import given, strategies as st

from qmailpy.proto.date822 import date822

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec"         # whatever the locale


@given(st.integers(0, 2 ** 33) | st.floats(0, 2 ** 33))
def test_date822_is_the_utc_calendar(ts):
    t = datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc)
    want = "%d %s %d %02d:%02d:%02d -0000" % (t.day, MONTHS.split()[t.month - 1], t.year, t.hour, t.minute, t.second)
    assert date822(ts) == want
