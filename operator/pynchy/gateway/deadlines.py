"""Rows that wait for a person until a deadline (approval requests, agent questions).

`Waiting.wait(id, timeout)` returns the row once it is no longer pending: waiters are woken in
process (`wake`) and re-read the store every second besides, so a decision taken by another replica
reaches them; a row found past its deadline is expired on the spot. `sweep_forever` closes what is
past its deadline when nobody waits (after a restart), sleeping until the next deadline or a kick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Generic, TypeVar

from pynchy.logs import get_logger
from pynchy.store.models import ApprovalRow, QuestionRow

log = get_logger(__name__)

POLL_SECONDS = 1.0  # waiters re-read their row this often (a decision taken by another replica)
SWEEP_SECONDS = 5.0  # the sweeper looks at least this often
PENDING = "pending"


R = TypeVar("R", ApprovalRow, QuestionRow)  # rows with id, state ('pending' until closed), expires_at


class Waiting(Generic[R]):
    def __init__(
        self,
        load: Callable[[str], Awaitable[R | None]],
        expire: Callable[[str], Awaitable[None]],
        clock: Callable[[], datetime],
    ) -> None:
        self._load: Callable[[str], Awaitable[R | None]] = load
        self._expire: Callable[[str], Awaitable[None]] = expire
        self.clock = clock
        self._events: dict[str, set[asyncio.Event]] = {}

    def wake(self, key: str) -> None:
        for event in self._events.get(key, ()):
            event.set()

    async def wait(self, key: str, timeout: float) -> R | None:
        """The row once decided, or as it is after `timeout` seconds (None if it is gone)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        event = asyncio.Event()
        self._events.setdefault(key, set()).add(event)
        try:
            while True:
                row = await self._load(key)
                if row is None or row.state != PENDING:
                    return row
                if row.expires_at <= self.clock():
                    await self._expire(row.id)
                    continue
                left = until - loop.time()
                if left <= 0:
                    return row
                deadline = (row.expires_at - self.clock()).total_seconds()
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=max(0.0, min(POLL_SECONDS, left, deadline)))
        finally:
            events = self._events.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[key]


async def sweep_forever(
    sweep: Callable[[], Awaitable[datetime | None]], kick: asyncio.Event, clock: Callable[[], datetime], what: str
) -> None:
    """Run `sweep` (which returns the next deadline) until cancelled; a failing pass is logged."""
    while True:
        nxt = None
        try:
            nxt = await sweep()
        except Exception:
            log.exception(f"{what} sweep failed; retrying")
        wait = SWEEP_SECONDS
        if nxt is not None:
            wait = max(0.05, min(wait, (nxt - clock()).total_seconds()))
        kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(kick.wait(), timeout=wait)
