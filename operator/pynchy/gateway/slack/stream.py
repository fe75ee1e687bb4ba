"""A reply that streams: a placeholder in the thread, updated with the text so far.

When a run takes the turn, the ledger gets the row `turn:<id>:0` as `streaming` and a placeholder
is posted (carrying the key in its metadata) and its ts recorded on the row. While the agent writes,
the placeholder is updated at most about once a second. The final text comes through the ledger
like every reply (the row turns `pending`), and `deliver()` finishes the placeholder in place.

The race between the two (the final text becoming pending while the placeholder post is still in
flight, or a last streaming update landing after the final text) is closed by one asyncio lock per
ledger key, shared with `deliver()`, and by re-reading the row inside the lock: streaming only ever
touches a row that is still `streaming`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pynchy.aio import KeyedLocks
from pynchy.gateway.slack.client import SlackApi
from pynchy.gateway.slack.errors import describe
from pynchy.gateway.slack.mrkdwn import to_mrkdwn
from pynchy.logs import get_logger
from pynchy.store import outbound
from pynchy_agent.protocol import TextDelta, ToolUse, TurnFailed, TurnResult

if TYPE_CHECKING:
    from pynchy.gateway.db import Db
    from pynchy.gateway.turnhub import TurnWatch
    from pynchy.store.models import OutboundRow, TurnRow

log = get_logger(__name__)

PLACEHOLDER = "_working…_"
UPDATE_INTERVAL = 1.0  # seconds between two updates of one placeholder (Slack's chat.update is Tier 3)


def preview(text: str, tool: str | None, limit: int) -> str:
    """What the placeholder shows while the agent works: its text so far (cut to one message),
    and the tool it is using."""
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    shown = to_mrkdwn(text) if text.strip() else ""
    if tool:
        status = f"_using {tool}…_"
        return f"{shown}\n\n{status}" if shown else status
    return shown or PLACEHOLDER


class Streamer:
    def __init__(
        self,
        db: Db,
        api: SlackApi,
        locks: KeyedLocks[str],
        limit: int,
        *,
        interval: float = UPDATE_INTERVAL,
    ) -> None:
        self.db = db
        self.api = api
        self.locks = locks
        self.limit = limit
        self.interval = interval

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self, turn: TurnRow, watch: TurnWatch) -> None:
        """Stream the turn's reply until its final event."""
        if turn.reply_channel != "slack" or not turn.reply_channel_id:
            return
        key = outbound.reply_key(turn.id)
        row, _ = await self.db.call(
            outbound.add,
            key=key,
            namespace=turn.namespace,
            group=turn.group,
            text="",
            channel="slack",
            channel_id=turn.reply_channel_id,
            thread=turn.reply_thread,
            turn_id=turn.id,
            streaming=True,
        )
        if row.state != outbound.STREAMING:
            return  # the reply is already final: deliver() posts it, nothing to stream
        ts = await self._placeholder(key)
        if ts is None:
            return
        await self._follow(key, turn.reply_channel_id, ts, watch)

    async def drop_unanswered(self, turn: TurnRow) -> None:
        """The turn ended without reply text (the agent said nothing, or only through
        send_message): its placeholder would say "working…" forever, so it goes."""
        key = outbound.reply_key(turn.id)
        async with self.locks(key):
            row = await self.db.call(outbound.by_key, key)
            if row is None or row.state != outbound.STREAMING or not row.external_id or not row.channel_id:
                return
            try:
                await self.api.delete(row.channel_id, row.external_id)
            except Exception as exc:
                log.info("slack placeholder not deleted", key=key, error=describe(exc))

    async def _placeholder(self, key: str) -> str | None:
        async with self.locks(key):
            row = await self.db.call(outbound.by_key, key)
            if row is None or row.state != outbound.STREAMING:
                return None
            if row.external_id:  # posted by an earlier process: keep streaming into it
                return row.external_id
            assert row.channel_id is not None
            try:
                ts = await self.api.post(row.channel_id, PLACEHOLDER, thread=row.thread, key=key)
            except Exception as exc:
                # No placeholder: the final reply is posted as a new message instead.
                log.warning("slack placeholder not posted", key=key, error=describe(exc))
                return None
            await self.db.call(outbound.set_external_id, row.id, ts)
            return ts

    async def _follow(self, key: str, channel: str, ts: str, watch: TurnWatch) -> None:
        text, tool, shown = "", None, PLACEHOLDER
        # Text or tool changed since the placeholder was last updated; the preview (a markdown
        # render of all the text so far) is made only when an update is due, not per event.
        changed = False
        next_update = self._now()
        while True:
            timeout = max(0.0, next_update - self._now()) if changed else None
            if watch.done.done() and watch.events.empty():
                return
            try:
                event = await asyncio.wait_for(_next_event(watch), timeout)
            except TimeoutError:
                event = None
            if isinstance(event, TurnResult | TurnFailed) or event is _DONE:
                return  # the final text arrives through the ledger and deliver()
            if isinstance(event, TextDelta):
                text += event.text
                tool = None
                changed = True
            elif isinstance(event, ToolUse):
                tool = event.name
                changed = True
            if not changed or self._now() < next_update:
                continue
            wanted = preview(text, tool, self.limit)
            changed = False
            if wanted == shown:
                continue
            outcome = await self._update(key, channel, ts, wanted)
            if outcome is None:
                return  # the row is final now (or the message gone): stop streaming
            if outcome:
                shown = wanted
            else:
                changed = True  # try again at the next update
            next_update = self._now() + self.interval

    async def _update(self, key: str, channel: str, ts: str, text: str) -> bool | None:
        """Update the placeholder if its row is still streaming. True: updated; False: failed
        (try again later); None: stop streaming."""
        async with self.locks(key):
            row: OutboundRow | None = await self.db.call(outbound.by_key, key)
            if row is None or row.state != outbound.STREAMING:
                return None
            try:
                await self.api.update(channel, ts, text, key=key)
            except Exception as exc:
                code = describe(exc)
                log.info("slack streaming update skipped", key=key, error=code)
                return None if code in ("message_not_found", "cant_update_message", "channel_not_found") else False
            return True


_DONE = object()


async def _next_event(watch: TurnWatch) -> object:
    """The watch's next event, or _DONE once the turn is over and its events are drained."""
    if watch.done.done() and watch.events.empty():
        return _DONE
    getter = asyncio.ensure_future(watch.events.get())
    try:
        waits: set[asyncio.Future[Any]] = {getter, watch.done}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        getter.cancel()
        raise
    if getter.done():
        return getter.result()
    getter.cancel()
    return _DONE if watch.events.empty() else watch.events.get_nowait()
