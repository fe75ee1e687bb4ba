"""A clock tests move by hand: the operator's schedules read it instead of real time.

clock = TestClock(datetime(2027, 3, 28, 0, 0, tzinfo=UTC))
with EmbeddedOperator(clock=clock) as op:
    clock.set(...) or clock.advance(minutes=5)
    op.resync_now()  # re-check every task at the new time
"""

from __future__ import annotations

import datetime as dt
import threading


class TestClock:
    """Frozen until moved; safe to read from the operator's thread while a test moves it."""

    __test__ = False  # not a pytest test class

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = (start or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def set(self, when: dt.datetime) -> dt.datetime:
        if when.tzinfo is None:
            raise ValueError("TestClock.set needs an aware datetime")
        with self._lock:
            self._now = when.astimezone(dt.UTC)
            return self._now

    def advance(self, **delta: float) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(**delta)
            return self._now
