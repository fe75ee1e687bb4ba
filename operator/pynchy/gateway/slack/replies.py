"""Delivering a ledger row to Slack, idempotently by its key.

* A row with an external id (a streamed reply's placeholder, or a message posted before) is
  finished in place with chat.update.
* A row that may have been sent by a process that then crashed is looked for first, by the key in
  its message metadata, and adopted (updated if its text or blocks differ) instead of posted again.
* Otherwise chat.postMessage, in the row's thread, with the key in its metadata.

A row with `blocks` (JSON of a Block Kit list: an approval's buttons, or its outcome) sends them with
every post and update; its text stays the notification fallback.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from pynchy.aio import KeyedLocks
from pynchy.gateway.channels.base import DeliveryError
from pynchy.gateway.slack.client import SlackApi
from pynchy.gateway.slack.errors import error_code, to_delivery_error
from pynchy.gateway.slack.mrkdwn import to_mrkdwn
from pynchy.logs import get_logger
from pynchy.store import outbound

if TYPE_CHECKING:
    from pynchy.gateway.db import Db
    from pynchy.store.models import OutboundRow

log = get_logger(__name__)

ERROR_PREFIX = ":warning: *Error:* "
EMPTY = "_(no text)_"
# The earlier message is gone or frozen: post the text as a new message instead.
GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


def render(text: str, is_error: bool) -> str:
    """The Slack text of a reply: mrkdwn, and a short prefix on errors."""
    body = to_mrkdwn(text) or EMPTY
    return ERROR_PREFIX + body if is_error else body


class Replies:
    def __init__(self, db: Db, api: SlackApi, locks: KeyedLocks[str]) -> None:
        self.db = db
        self.api = api
        self.locks = locks

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        async with self.locks(row.key):
            # Re-read inside the lock: a placeholder may have been posted since the row was read.
            fresh = await self.db.call(outbound.get, row.id)
            if fresh is not None:
                row = fresh
            if row.state == outbound.SENT:
                return row.external_id
            if not row.channel_id:
                raise to_delivery_error(ValueError("ledger row without a channel id"), "deliver")
            method = "chat.postMessage"
            text = render(row.text, row.is_error)
            blocks = _blocks(row)
            try:
                if row.external_id:
                    method = "chat.update"
                    updated = await self._update(row.channel_id, row.external_id, text, row.key, blocks)
                    if updated is not None:
                        return updated
                elif maybe_sent:
                    method = "conversations.replies" if row.thread else "conversations.history"
                    found = await self.api.find(row.channel_id, row.thread, row.key, row.created_at.timestamp())
                    if found is not None:
                        log.info("slack reply found from an earlier attempt; adopted", key=row.key)
                        ts = str(found["ts"])
                        # (Slack may return blocks normalised, e.g. with block ids added: then the
                        # update below is redundant, never wrong.)
                        if found.get("text") == text and (blocks is None or found.get("blocks") == blocks):
                            return ts
                        method = "chat.update"
                        updated = await self._update(row.channel_id, ts, text, row.key, blocks)
                        if updated is not None:
                            return updated
                method = "chat.postMessage"
                return await self.api.post(row.channel_id, text, thread=row.thread, key=row.key, blocks=blocks)
            except Exception as exc:
                raise to_delivery_error(exc, method) from exc

    async def _update(
        self, channel: str, ts: str, text: str, key: str, blocks: list[dict[str, Any]] | None
    ) -> str | None:
        """chat.update; None when the message can no longer be updated (post anew instead)."""
        try:
            return await self.api.update(channel, ts, text, key=key, blocks=blocks)
        except SlackApiError as exc:
            code = error_code(exc)
            if code in GONE:
                log.info("slack message cannot be updated; posting anew", key=key, error=code)
                return None
            raise


def _blocks(row: OutboundRow) -> list[dict[str, Any]] | None:
    """The row's Block Kit layout, or None (plain text). Malformed JSON is a permanent failure of
    the row: retrying cannot mend it."""
    if not row.blocks:
        return None
    try:
        blocks = json.loads(row.blocks)
    except ValueError as exc:
        raise DeliveryError(f"ledger row {row.key}: blocks are not JSON ({exc})", permanent=True) from exc
    if not isinstance(blocks, list):
        raise DeliveryError(f"ledger row {row.key}: blocks are not a list", permanent=True)
    return blocks
