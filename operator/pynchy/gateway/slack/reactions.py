"""Status reactions on the message that asked: received, working, then done or failed.

Reactions are decoration: a failed call is logged and forgotten. The hooks that set them run as
separate background tasks, so one lock per turn keeps them in order (asyncio locks are FIFO and each
task asks for it first thing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynchy.aio import KeyedLocks
from pynchy.gateway.slack.client import SlackApi
from pynchy.logs import get_logger

if TYPE_CHECKING:
    from pynchy.store.models import TurnRow

log = get_logger(__name__)

RECEIVED = "eyes"
WORKING = "hourglass_flowing_sand"
DONE = "white_check_mark"
FAILED = "x"


def target(turn: TurnRow) -> tuple[str, str] | None:
    """(channel, ts) of the Slack message the turn answers; None for turns no Slack message asked."""
    if turn.reply_channel == "slack" and turn.reply_channel_id and turn.message_ref:
        return (turn.reply_channel_id, turn.message_ref)
    return None


class Reactions:
    def __init__(self, api: SlackApi) -> None:
        self.api = api
        self._locks: KeyedLocks[str] = KeyedLocks()

    async def queued(self, turn: TurnRow) -> None:
        async with self._locks(turn.id):
            if (where := target(turn)) is not None:
                await self.api.react(*where, RECEIVED)

    async def started(self, turn: TurnRow) -> None:
        async with self._locks(turn.id):
            if (where := target(turn)) is not None:
                await self.api.react(*where, WORKING)

    async def ended(self, turn: TurnRow, ok: bool) -> None:
        async with self._locks(turn.id):
            if (where := target(turn)) is not None:
                await self.api.react(*where, WORKING, remove=True)
                await self.api.react(*where, DONE if ok else FAILED)
