"""The delivery loop: pending ledger rows go to their channel, in order per conversation.

Level-based: each pass reads what is pending from the store, so a row written by another process
or left by a crash is sent too. A row written before this process started, or one with a failed
attempt behind it, may already be in the channel (a crash or a timeout after the channel took it):
it goes with `maybe_sent`, so the channel looks for it before posting again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from pynchy.aio import LogOnce
from pynchy.gateway.channels.base import Channel, DeliveryError
from pynchy.gateway.db import Db
from pynchy.gateway.metrics import DeliveryMetrics
from pynchy.logs import get_logger
from pynchy.store import outbound
from pynchy.store.models import OutboundRow

log = get_logger(__name__)
Conversation = tuple[str, str]  # (channel kind, channel id)
BACKOFF_SECONDS = (1, 2, 5, 10, 30, 60, 120, 300)
SAFETY_PASS_SECONDS = 30.0  # rows written by another gateway process have no one to kick us


class Delivery:
    def __init__(
        self,
        db: Db,
        channels: Mapping[str, Channel],
        metrics: DeliveryMetrics | None = None,
        on_gave_up: Callable[[OutboundRow, str], None] | None = None,  # (row, last error): an Event
    ) -> None:
        self.db = db
        self.channels = channels
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        self.on_gave_up = on_gave_up
        self._kick = asyncio.Event()
        self._not_before: dict[Conversation, float] = {}
        self.started_at = datetime.now(UTC)
        self._missing_logged: LogOnce[str] = LogOnce()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def kick(self) -> None:
        self._kick.set()

    async def _loop(self) -> None:
        while True:
            self._kick.clear()
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("delivery pass failed")
            now = time.monotonic()
            waits = [t - now for t in self._not_before.values() if t > now]
            timeout = min([SAFETY_PASS_SECONDS, *waits])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout)

    async def deliver_pending(self) -> None:
        """One pass: everything pending that a registered channel can take now."""
        rows = await self.db.call(outbound.pending, None, 500)
        by_conversation: dict[Conversation, list[OutboundRow]] = defaultdict(list)
        now = time.monotonic()
        for row in rows:
            assert row.channel is not None
            assert row.channel_id is not None
            if row.channel not in self.channels:
                if self._missing_logged.first(row.channel):
                    log.warning("replies waiting for a channel that is not configured", channel=row.channel)
                continue
            conv = (row.channel, row.channel_id)
            if self._not_before.get(conv, 0.0) <= now:
                by_conversation[conv].append(row)
        await asyncio.gather(*(self._deliver_in_order(conv, rs) for conv, rs in by_conversation.items()))

    async def _deliver_in_order(self, conv: Conversation, rows: list[OutboundRow]) -> None:
        channel = self.channels[conv[0]]
        for row in rows:
            maybe_sent = row.attempts > 0 or row.created_at < self.started_at
            self.metrics.attempted(conv[0])
            try:
                external_id = await channel.deliver(row, maybe_sent=maybe_sent)
            except DeliveryError as exc:
                failed = await self.db.call(outbound.mark_attempt_failed, row.id, str(exc), permanent=exc.permanent)
                attempts = failed.attempts if failed is not None else 1
                delay = exc.retry_after or BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1]
                gave_up = failed is not None and failed.state == outbound.FAILED
                self.metrics.failed(conv[0], gave_up=gave_up)
                if gave_up:
                    log.error("reply given up", key=row.key, channel=conv[0], error=str(exc), attempts=attempts)
                    self._gave_up(row, str(exc))
                    continue  # the next message of the conversation may still go
                log.warning("reply not delivered; will retry", key=row.key, error=str(exc), retry_in=delay)
                self._not_before[conv] = time.monotonic() + delay
                return  # keep the conversation's order: nothing after it goes first
            except Exception as exc:
                log.exception("channel failed delivering", key=row.key, channel=conv[0])
                failed = await self.db.call(outbound.mark_attempt_failed, row.id, repr(exc))
                gave_up = failed is not None and failed.state == outbound.FAILED
                self.metrics.failed(conv[0], gave_up=gave_up)
                if gave_up:
                    self._gave_up(row, repr(exc))
                self._not_before[conv] = time.monotonic() + BACKOFF_SECONDS[0]
                return
            await self.db.call(outbound.mark_sent, row.id, external_id)
        self._not_before.pop(conv, None)

    def _gave_up(self, row: OutboundRow, error: str) -> None:
        if self.on_gave_up is not None:
            self.on_gave_up(row, error)
