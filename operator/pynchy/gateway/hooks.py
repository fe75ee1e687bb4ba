"""The channels the gateway serves, and their turn hooks run as guarded background tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from pynchy.aio import TaskSet
from pynchy.gateway.channels.base import Channel
from pynchy.gateway.turnhub import TurnWatch
from pynchy.logs import get_logger
from pynchy.store.models import TurnRow

log = get_logger(__name__)


class ChannelHooks:
    """Channels by kind. A hook for a turn goes to the channel it came from (and to none when it
    came from no channel); a failing hook is logged and never disturbs the turn."""

    def __init__(self, tasks: TaskSet) -> None:
        self.channels: dict[str, Channel] = {}
        self._tasks = tasks

    def add(self, channel: Channel) -> None:
        if channel.kind in self.channels:
            raise ValueError(f"a {channel.kind} channel is already registered")
        self.channels[channel.kind] = channel

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self.channels.values()))

    @property
    def limits(self) -> dict[str, int]:
        """Longest message per channel kind: replies are split to fit."""
        return {kind: ch.max_message_chars for kind, ch in self.channels.items()}

    def queued(self, turn: TurnRow) -> None:
        self._call(turn.reply_channel, "turn_queued", lambda ch: ch.turn_queued(turn))

    def started(self, turn: TurnRow, watch: Callable[[str], TurnWatch]) -> None:
        # The watch is made now (no event may pass before it) and only for a channel, so none is
        # left collecting events for nobody.
        if (turn.reply_channel or "") in self.channels:
            w = watch(turn.id)
            self._call(turn.reply_channel, "turn_started", lambda ch: ch.turn_started(turn, w))

    def ended(self, turn: TurnRow, ok: bool) -> None:
        self._call(turn.reply_channel, "turn_ended", lambda ch: ch.turn_ended(turn, ok))

    def _call(self, kind: str | None, name: str, hook: Callable[[Channel], Awaitable[None]]) -> None:
        channel = self.channels.get(kind or "")
        if channel is not None:
            self._tasks.spawn(self._run(channel, name, hook), name=f"{channel.kind}.{name}")

    @staticmethod
    async def _run(channel: Channel, name: str, hook: Callable[[Channel], Awaitable[None]]) -> None:
        try:
            await hook(channel)
        except Exception:
            log.exception("channel hook failed", channel=channel.kind, hook=name)
