"""How long the fuzz targets run: briefly in `make test`, at length in `make fuzz`.

QMAILPY_FUZZ unset: the brief profile (each target's own small example count).
QMAILPY_FUZZ=long: LONG_FACTOR times as many examples (and longer state-machine runs).
QMAILPY_FUZZ=<n>: exactly n examples per target.
Settings are applied per test with @fuzz_settings(...), never as a global profile, so
the rest of the suite keeps its own hypothesis settings.
"""
import os

from hypothesis import HealthCheck, settings

LEVEL = os.environ.get("QMAILPY_FUZZ", "").strip().lower()
LONG_FACTOR = 100
LONG = LEVEL == "long" or LEVEL.isdigit()


def examples(brief):
    if LEVEL == "long":
        return brief * LONG_FACTOR
    if LEVEL.isdigit():
        return int(LEVEL)
    return brief


def fuzz_settings(brief, **kw):
    """settings(...) for a fuzz target whose brief run has `brief` examples."""
    return settings(max_examples=examples(brief), deadline=None,
                    suppress_health_check=list(HealthCheck), **kw)
