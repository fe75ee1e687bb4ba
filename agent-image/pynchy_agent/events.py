"""One turn's events on their way to the gateway: text deltas coalesced, posted in batches.

The first event of a quiet period waits at most `interval` (50 ms) before it is posted; while a POST
is in flight new events gather into the next batch, so a slow gateway means bigger batches, never a
backlog of requests. close() adds the final event, posts everything left and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from pynchy_agent.protocol import Event, TextDelta

log = logging.getLogger(__name__)

Post = Callable[[Sequence[Event]], Awaitable[None]]


class EventSink:
    def __init__(self, post: Post, *, interval: float = 0.05, name: str = "") -> None:
        self._post = post
        self._interval = interval
        self._name = name
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.posted: int = 0  # events handed to `post` (for logs and tests)

    def text(self, text: str) -> None:
        if not text:
            return
        if self._pending and isinstance(self._pending[-1], TextDelta):
            self._pending[-1] = TextDelta(text=self._pending[-1].text + text)
            return
        self.add(TextDelta(text=text))

    def add(self, event: Event) -> None:
        if self._closing:
            log.warning("event after the turn ended dropped", extra={"turn": self._name, "type": event.type})
            return
        self._pending.append(event)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"events-{self._name}")

    async def close(self, final: Event | None = None) -> None:
        """Post `final` after everything else, then return once all is posted (or given up on)."""
        if final is not None:
            self.add(final)
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_post = float("-inf")
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = last_post + self._interval - loop.time()
            if delay > 0 and not self._closing:
                # Wait out the interval, but a close() posts right away.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
            batch, self._pending = self._pending, []
            if batch:
                last_post = loop.time()
                try:
                    await self._post(batch)
                    self.posted += len(batch)
                except Exception as exc:
                    log.error(
                        "events could not be posted",
                        extra={"turn": self._name, "events": len(batch), "error": str(exc)},
                    )
            if self._closing and not self._pending:
                return
            if self._pending:
                self._wake.set()
