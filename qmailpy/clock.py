"""qmail's queue timing: constants, the retry formula, and an optional time scale.

Shared by qmail-send (schedule, retries, cleanups) and qmail-clean (its cleanup
interval), so it lives below both.

qmail's schedule is in whole seconds over days. QMAILPY_TIMESCALE=N (N > 0,
default 1) makes every interval N times shorter, so tests can watch a week of
retries in seconds: durations are measured in "virtual seconds" =
real seconds * N and the formulas below are applied to those unchanged.
"""
import math
import time

SLEEP_TODO = 1500          # scan todo/ at least this often
SLEEP_FUZZ = 1             # added to select() timeouts against Zeno loops
SLEEP_FOREVER = 86400      # longest select() wait
SLEEP_CLEANUP = 76431      # between stale-file cleanups
SLEEP_SYSFAIL = 123        # retry after stat/unlink trouble
SLEEP_PAUSEDIR = 10        # qmail-send's pausedir(): read a queue subdirectory again after this
CHANSKIP = (10, 20)        # local, remote: attempts at birth + (skip * k)^2
STEP = 1.0                 # real seconds the wall clock may move apart from elapsed time unnoticed
ENV = "QMAILPY_TIMESCALE"


def parse_scale(environ):
    """The time scale from the environment; anything unusable means 1."""
    try:
        scale = float(environ.get(ENV) or 1)
    except ValueError:
        return 1.0
    return scale if scale > 0 and math.isfinite(scale) else 1.0


class Clock:
    """Real time plus the conversions between real and virtual seconds."""
    __slots__ = ("scale",)

    def __init__(self, scale=1.0):
        self.scale = float(scale)

    def now(self):
        return time.time()

    def elapsed(self):
        """A clock no step moves but that counts a sleeping host's time as the wall clock does
        (CLOCK_BOOTTIME; time.monotonic() stands still during a suspend, which would read as a
        forward step): the wall clock's steps are told from it."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def delay(self, seconds):
        """A qmail interval (virtual seconds) as real seconds."""
        return seconds / self.scale

    def age(self, birth, now):
        """Virtual seconds between birth and now (whole seconds, as qmail counts)."""
        return int((now - birth) * self.scale)

    def nextretry(self, birth, now, channel):
        """qmail-send's nextretry(): birth + (isqrt(age) + chanskip)^2. A birth after now
        (the clock stepped back since) counts as now, age 0: qmail's birth + chanskip^2
        would wait until the clock caught up."""
        age = self.age(birth, now)
        n = math.isqrt(age) if age > 0 else 0
        n += CHANSKIP[channel]
        return min(birth, now) + self.delay(n * n)

    def capped(self, when, now, seconds):
        """A time set `seconds` (a qmail interval) ahead at an earlier reading, seen at `now`:
        never later than now + seconds, so a clock stepped back does not hold it until the
        clock catches up."""
        return min(when, now + self.delay(seconds))

    def longest_wait(self, channel, lifetime):
        """The longest wait (real seconds) nextretry() gives a message not older than
        `lifetime`: (m + chanskip)^2 - m^2 with m = isqrt(lifetime). A retry time further
        ahead was set before the clock was stepped back."""
        m, skip = math.isqrt(max(int(lifetime), 0)), CHANSKIP[channel]
        return self.delay(2 * m * skip + skip * skip)

    def dying(self, birth, now, lifetime):
        """True once the message is older than queuelifetime."""
        return self.age(birth, now) > lifetime
