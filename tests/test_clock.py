"""qmail's retry schedule and the test time scale at their edges (qmailpy/clock.py, make mutate)."""
import time

import pytest

from qmailpy import clock


def test_parse_scale_takes_only_finite_positive_numbers():
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "0.5"}) == 0.5
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "0"}) == 1.0
    assert clock.parse_scale({"QMAILPY_TIMESCALE": ""}) == 1.0
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "inf"}) == 1.0
    assert clock.parse_scale({"QMAILPY_TIMESCALE": "nan"}) == 1.0
    assert clock.parse_scale({"OTHER": "50"}) == 1.0
    assert type(clock.parse_scale({"QMAILPY_TIMESCALE": "7"})) is float


def test_clock_conversions():
    c = clock.Clock(4)
    assert c.scale == 4.0 and type(c.scale) is float
    assert clock.Clock().scale == 1.0
    assert c.delay(100) == 25.0
    assert c.age(1000, 1010.9) == 43                    # 43.6 virtual seconds, whole ones counted
    before = time.time()
    assert before <= c.now() <= time.time()


def test_nextretry_at_age_zero_and_one():
    """age 0 adds nothing, age 1 adds isqrt(1) = 1: remote (20+1)^2, local (10+1)^2."""
    c = clock.Clock()
    assert c.nextretry(1000, 1000, 1) == 1000 + 400
    assert c.nextretry(1000, 1001, 1) == 1000 + 441
    assert c.nextretry(1000, 1001, 0) == 1000 + 121
    assert c.nextretry(1000, 1000.5, 0) == 1000 + 100
    assert clock.Clock(2).nextretry(1000, 1000, 0) == 1000 + 50.0


def test_dying_only_past_the_lifetime():
    c = clock.Clock()
    assert c.dying(1000, 1000 + 604800, 604800) is False
    assert c.dying(1000, 1000 + 604801, 604800) is True


def test_qmails_timing_constants():
    """qmail-send.c's schedule (reference 3.1): todo/ scanned every 1500 s, select() waits at
    most a day (plus 1 s against Zeno loops), stale files looked for every 76431 s, 123 s after
    a system failure, debris older than 36 h; qmail-queue's own limit a day; retries at
    birth + (isqrt(age) + 10 or 20)^2; 23 split directories."""
    from qmailpy.queue import layout
    assert (clock.SLEEP_TODO, clock.SLEEP_FUZZ, clock.SLEEP_FOREVER, clock.SLEEP_CLEANUP,
            clock.SLEEP_SYSFAIL) == (1500, 1, 86400, 76431, 123)
    assert (layout.OSSIFIED, layout.DEATH, layout.SPLIT) == (129600, 86400, 23)
    assert clock.CHANSKIP == (10, 20)


@pytest.mark.parametrize("channel, firsts, count", [
    (0, [0, 100, 400, 900, 1600, 2500], 78),
    (1, [0, 400, 1600, 3600, 6400, 10000, 14400], 39)])
def test_on_schedule_attempts_over_the_default_lifetime(channel, firsts, count):
    """Reference 3.1: attempts made on schedule fall at birth + (skip*k)^2 (local 0, 100, 400,
    900 ...; remote 0, 400, 1600, 3600, 6400, 10000, 14400 ...); within the default 604800 s
    queuelifetime local gets 78 of them, remote 39, and the next one (608400) is past the
    lifetime: the dying message's last try, whose deferral becomes the bounce."""
    c, birth, lifetime = clock.Clock(), 1000000, 604800
    at, offsets = birth, [0]
    while True:
        at = c.nextretry(birth, at, channel)
        if at - birth > lifetime:
            break
        offsets.append(at - birth)
    assert offsets[:len(firsts)] == firsts
    assert len(offsets) == count
    assert at - birth == 608400 and c.dying(birth, at, lifetime) and not c.dying(birth, birth + offsets[-1], lifetime)
