"""The turn hub: queue turns durably, hand them to runs by long-poll, fan their events out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynchy.aio import KeyedSignals
from pynchy.gateway.db import Db
from pynchy.store import turns as turn_store
from pynchy.store.models import TurnRow
from pynchy_agent.protocol import Event, TurnFailed, TurnResult

GroupKey = tuple[str, str]


@dataclass
class TurnWatch:
    """Live view of one turn: its events as they stream, and its end."""

    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    done: asyncio.Future[TurnResult | TurnFailed] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TurnHub:
    def __init__(self, db: Db) -> None:
        self.db = db
        self._wakeups: KeyedSignals[GroupKey] = KeyedSignals()
        # A turn's watchers live until its final event (nothing is published after it).
        self._watches: dict[str, list[TurnWatch]] = {}
        self.closing = False

    def close(self) -> None:
        """Release every waiting long-poll (they answer 'no turn'), so shutdown does not wait on them."""
        self.closing = True
        self._wakeups.wake_all()

    async def enqueue(self, namespace: str, group: str, prompt: str, **kwargs: Any) -> TurnRow:
        row = await self.db.call(turn_store.enqueue, namespace, group, prompt, **kwargs)
        self.wake(namespace, group)
        return row

    def wake(self, namespace: str, group: str) -> None:
        self._wakeups.wake((namespace, group))

    async def next_turn(
        self,
        namespace: str,
        group: str,
        run: str,
        *,
        bound_only: bool,
        wait: float,
        give_way: Callable[[], bool] | None = None,
    ) -> TurnRow | None:
        """Claim the next turn for `run`, waiting up to `wait` seconds for one to be queued; stop
        waiting early when `give_way()` turns true (checked whenever the Group is woken)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        key = (namespace, group)
        while True:
            # Listening before the check, so an enqueue after it is never missed.
            with self._wakeups.listen(key) as wakeup:
                row = await self.db.call(turn_store.claim_next, namespace, group, run, bound_only=bound_only)
                if row is not None:
                    return row
                remaining = deadline - loop.time()
                if remaining <= 0 or self.closing or (give_way is not None and give_way()):
                    return None
                if not await wakeup.wait(remaining):
                    return None

    def watch(self, turn_id: str) -> TurnWatch:
        w = TurnWatch()
        self._watches.setdefault(turn_id, []).append(w)
        return w

    def publish(self, turn_id: str, event: Event) -> None:
        final = isinstance(event, TurnResult | TurnFailed)
        watches = self._watches.pop(turn_id, []) if final else self._watches.get(turn_id, [])
        for w in watches:
            w.events.put_nowait(event)
            if isinstance(event, TurnResult | TurnFailed) and not w.done.done():
                w.done.set_result(event)

    def pending_sizes(self) -> tuple[int, int]:
        """(Groups with a waiting long-poll, turns with watchers): bounded by what is live now."""
        return len(self._wakeups), len(self._watches)

    def publish_failure(self, turn_id: str, message: str) -> None:
        self.publish(turn_id, TurnFailed(message=message))
