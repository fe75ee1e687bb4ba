"""Messages out that are not a turn's reply (an agent's send_message, a command's answer): a row in
the outbound ledger first, then a kick of the delivery loop."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.routing import Directory
from pynchy.store import outbound


@dataclass(eq=False)  # a service: identity, not value
class Outbox:
    db: Db
    delivery: Delivery
    directory: Directory

    async def add(self, **row: Any) -> bool:
        """A ledger row (see store.outbound.add); idempotent by its key: True when it was new."""
        _, created = await self.db.call(outbound.add, **row)
        self.delivery.kick()
        return created

    async def send(self, namespace: str, group: str, text: str, turn_id: str | None = None) -> None:
        """A message from the agent (send_message) to the Group's first channel."""
        await self.post(f"send:{uuid.uuid4().hex}", namespace, group, text, turn_id)

    async def post(self, key: str, namespace: str, group: str, text: str, turn_id: str | None = None) -> bool:
        """A message to the Group's first channel, once per ``key`` however often this is called:
        True the one time it was new."""
        entry = self.directory.get(namespace, group)
        channel, channel_id = entry.default_channel() if entry is not None else (None, None)
        return await self.add(
            key=key,
            namespace=namespace,
            group=group,
            text=text,
            channel=channel,
            channel_id=channel_id,
            turn_id=turn_id,
        )
