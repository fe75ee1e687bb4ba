"""A per-key de-duplicating work queue with backoff, as in controller-runtime.

Events only enqueue keys; workers reconcile the current state of a key. A key is never
processed by two workers at once, and a key added while it is being processed runs once
more afterwards: bursts of events collapse into one reconcile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from pynchy.errors import RefusedError, TemporaryError
from pynchy.logs import get_logger

log = get_logger(__name__)
Reconcile = Callable[[Any], Awaitable[float | None]]
# Told of every finished reconcile: (key, "success" | "error" | "refused", seconds it took).
Observe = Callable[[Any, str, float], None]


def retry_delay(failures: int, base: float, cap: float, jitter: float = 0.0) -> float:
    """Exponential backoff after `failures` consecutive failures (1, 2, ...), capped, with up to 20 %
    jitter (`jitter` in [0, 1)) so many keys failing together do not retry in lockstep."""
    return min(cap, base * 2.0 ** (failures - 1)) * (1 + jitter / 5)


class WorkQueue:
    def __init__(
        self,
        reconcile: Reconcile,
        workers: int = 8,
        *,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        observe: Observe | None = None,
    ):
        self._reconcile = reconcile
        self._observe = observe
        self._workers = workers
        self._base = base_delay
        self._max = max_delay
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.processed = 0

    def add(self, key: Hashable, after: float = 0.0) -> None:
        """Reconcile `key` (now, or after `after` seconds; an earlier request wins)."""
        if after > 0:
            loop = asyncio.get_running_loop()
            when = loop.time() + after
            timer = self._timers.get(key)
            if timer is not None and timer.when() <= when:
                return
            if timer is not None:
                timer.cancel()
            self._timers[key] = loop.call_at(when, self._fire, key)
            return
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def scheduled_in(self, key: Hashable) -> float | None:
        """Seconds until a delayed add of `key` fires, or None when none is pending."""
        timer = self._timers.get(key)
        return None if timer is None else timer.when() - asyncio.get_running_loop().time()

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"reconcile-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def idle(self) -> bool:
        return not self._queued and not self._active

    def depth(self) -> tuple[int, int, int]:
        """(keys waiting for a worker, keys being reconciled, keys with a delayed add pending)."""
        return len(self._queued), len(self._active), len(self._timers)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = time.perf_counter()
            result = "success"
            try:
                requeue = await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except RefusedError as exc:
                # The reconciler should have reported it; retrying unchanged input changes nothing.
                self._failures.pop(key, None)
                result = "refused"
                log.warning("reconcile refused; not retrying", key=str(key), reason=exc.reason, error=exc.message)
                requeue = None
            except Exception as exc:
                # Temporary errors and unexpected ones are retried with exponential backoff (or
                # when a TemporaryError asks), never in a hot loop, and never crash the operator.
                # Only unexpected ones are bugs worth a traceback.
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                result = "error"
                asked = exc.retry_after if isinstance(exc, TemporaryError) else None
                if asked is not None:
                    delay = min(asked, self._max)
                else:
                    delay = retry_delay(failures, self._base, self._max, random.random())
                log.warning(
                    "reconcile failed; retrying",
                    key=str(key),
                    attempt=failures,
                    retry_in=round(delay, 1),
                    error=str(exc),
                    exc_info=not isinstance(exc, TemporaryError),
                )
                requeue = delay
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
                self.processed += 1
            if self._observe is not None:
                self._observe(key, result, time.perf_counter() - started)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            elif requeue is not None:
                self.add(key, after=requeue)
