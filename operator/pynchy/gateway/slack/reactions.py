"""Status reactions on the message that asked: received, working, then done or failed.

Reactions are decoration: a failed call is logged and forgotten. The hooks that set them run as
separate background tasks, so one lock per turn keeps them in order (asyncio locks are FIFO and each
task asks for it first thing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynchy.gateway.slack.client import SlackApi
from pynchy.gateway.slack.stream import KeyLocks
from pynchy.logs import get_logger
from pynchy.store import messages

if TYPE_CHECKING:
    from pynchy.gateway.db import Db
    from pynchy.store.models import TurnRow

log = get_logger(__name__)

RECEIVED = "eyes"
WORKING = "hourglass_flowing_sand"
DONE = "white_check_mark"
FAILED = "x"


class Reactions:
    def __init__(self, db: Db, api: SlackApi) -> None:
        self.db = db
        self.api = api
        self._locks = KeyLocks()
        self._targets: dict[str, tuple[str, str] | None] = {}

    async def _target(self, turn: TurnRow) -> tuple[str, str] | None:
        """(channel, ts) of the message the turn answers; None for turns no Slack message asked."""
        if turn.id in self._targets:
            return self._targets[turn.id]
        target = None
        if turn.message_id is not None:
            row = await self.db.call(messages.get, turn.message_id)
            if row is not None and row.channel == "slack" and row.external_id:
                target = (row.channel_id, row.external_id)
        self._targets[turn.id] = target
        return target

    async def queued(self, turn: TurnRow) -> None:
        async with self._locks(turn.id):
            target = await self._target(turn)
            if target is not None:
                await self.api.react(*target, RECEIVED)

    async def started(self, turn: TurnRow) -> None:
        async with self._locks(turn.id):
            target = await self._target(turn)
            if target is not None:
                await self.api.react(*target, WORKING)

    async def ended(self, turn: TurnRow, ok: bool) -> None:
        async with self._locks(turn.id):
            target = await self._target(turn)
            self._targets.pop(turn.id, None)
            if target is not None:
                await self.api.react(*target, WORKING, remove=True)
                await self.api.react(*target, DONE if ok else FAILED)
