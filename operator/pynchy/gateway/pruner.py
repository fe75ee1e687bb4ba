"""The store's retention in the background (store/retention.py says what goes and what never does).

Every `interval` seconds, each kind's old rows are deleted in batches of the policy's size, each batch
one `Db.call` (one short transaction on the store's worker thread); between batches the loop yields,
so the calls the hot path queued meanwhile run first (SQLite has one writer). A pass that fails is
logged and tried again at the next interval: retention never takes the gateway down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pynchy.gateway.db import Db
from pynchy.logs import get_logger
from pynchy.store import retention

log = get_logger(__name__)


def _uncounted(kind: str, rows: int) -> None:
    return None


@dataclass(eq=False)  # a service: identity, not value
class Pruner:
    db: Db
    policy: retention.RetentionPolicy
    interval: float
    on_pruned: Callable[[str, int], None] = _uncounted  # (kind, rows) after every batch that deleted some

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("store retention pass failed; trying again at the next interval", interval=self.interval)
            await asyncio.sleep(self.interval)

    async def prune(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over every kind with a limited period; rows deleted per kind."""
        counts: dict[str, int] = {}
        for kind, cutoff in self.policy.cutoffs(now or datetime.now(UTC)).items():
            counts[kind] = await self._prune(kind, cutoff)
        if any(counts.values()):
            log.info("store pruned", **counts)
        else:
            log.debug("store retention: nothing to prune")
        return counts

    async def _prune(self, kind: str, cutoff: datetime) -> int:
        total = 0
        while True:
            rows = await self.db.call(retention.prune_batch, kind, cutoff, self.policy.batch_size)
            total += rows
            if rows:
                self.on_pruned(kind, rows)
            if rows < self.policy.batch_size:
                return total
            await asyncio.sleep(0)  # the store calls queued behind this batch go first
