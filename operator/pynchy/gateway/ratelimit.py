"""A sliding-window rate limit per key: at most `limit` events in any `window` seconds.

Pure: the caller passes the time, so tests need no clock. A log of the accepted events' times per
key (at most `limit` of them), rather than a token bucket, because the refusal can then say exactly
when the next event is allowed.

In memory, on purpose: one gateway replica serves the run API (docs/gateway.md, Not yet), and a
restart at worst resets the windows, letting a Group send one more window's worth once.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class SlidingWindow(Generic[K]):
    """Lifetime of a key's entry: from its first accepted event until its newest one is a window old;
    expired keys are swept at most once per window, so Groups that went quiet leave nothing behind."""

    def __init__(self, window: float = 60.0) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, not {window}")
        self.window = window
        self._events: dict[K, deque[float]] = {}
        self._swept = -math.inf

    def acquire(self, key: K, limit: int, now: float) -> float:
        """Take a slot for `key` at `now`: 0.0 when taken, else the seconds until one frees (nothing taken)."""
        self._sweep(now)
        if limit <= 0:
            return self.window  # never; a window is as good an answer as any
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= limit:
            # A slot frees when all but limit - 1 of the logged events have left the window.
            return events[len(events) - limit] + self.window - now
        events.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        if now - self._swept < self.window:
            return
        self._swept = now
        for key in [k for k, events in self._events.items() if not events or events[-1] <= now - self.window]:
            del self._events[key]

    def __len__(self) -> int:
        """Keys with an entry (for tests: the state stays bounded)."""
        return len(self._events)
