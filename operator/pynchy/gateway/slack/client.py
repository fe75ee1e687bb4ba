"""The Slack Web API calls the channel makes, on slack_sdk's AsyncWebClient.

Every reply carries message metadata `{event_type: pynchy_reply, event_payload: {key}}` with its
ledger key, so after a crash the message can be found again instead of posted twice."""

from __future__ import annotations

from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from pynchy.gateway.slack.errors import describe
from pynchy.logs import get_logger

log = get_logger(__name__)

REPLY_EVENT = "pynchy_reply"
# How far back a crashed send is looked for (a reply left pending is older than its row by seconds).
FIND_PAGES = 5
FIND_PAGE_SIZE = 200
FIND_SLACK_SECONDS = 300.0


def make_client(token: str, base_url: str, *, rate_limit_retries: bool = True) -> AsyncWebClient:
    """Connection errors and 5xx retried twice; 429 retried twice after its Retry-After (unless
    `rate_limit_retries` is off)."""
    handlers: list[AsyncRetryHandler] = [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]
    if rate_limit_retries:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return AsyncWebClient(token=token, base_url=base_url, timeout=30, retry_handlers=handlers)


def metadata(key: str) -> dict[str, Any]:
    return {"event_type": REPLY_EVENT, "event_payload": {"key": key}}


def carries_key(message: dict[str, Any], key: str) -> bool:
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != REPLY_EVENT:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and payload.get("key") == key


class SlackApi:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(
        self,
        channel: str,
        text: str,
        *,
        thread: str | None,
        key: str | None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """chat.postMessage. With `blocks` (Block Kit), `text` is what notifications show."""
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False, "unfurl_media": False}
        if thread:
            kwargs["thread_ts"] = thread
        if key:
            kwargs["metadata"] = metadata(key)
        if blocks is not None:
            kwargs["blocks"] = blocks
        response = await self.client.chat_postMessage(**kwargs)
        return str(response["ts"])

    async def update(
        self, channel: str, ts: str, text: str, *, key: str | None, blocks: list[dict[str, Any]] | None = None
    ) -> str:
        """chat.update. Without `blocks` Slack keeps the message's earlier blocks; `[]` removes them."""
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if key:
            kwargs["metadata"] = metadata(key)
        if blocks is not None:
            kwargs["blocks"] = blocks
        response = await self.client.chat_update(**kwargs)
        return str(response.get("ts") or ts)

    async def post_ephemeral(self, channel: str, user: str, text: str, thread: str | None = None) -> str:
        """chat.postEphemeral: a message only `user` sees (not kept in history); its message_ts."""
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread:
            kwargs["thread_ts"] = thread
        response = await self.client.chat_postEphemeral(**kwargs)
        return str(response.get("message_ts") or "")

    async def delete(self, channel: str, ts: str) -> None:
        await self.client.chat_delete(channel=channel, ts=ts)

    async def find(self, channel: str, thread: str | None, key: str, since: float | None) -> dict[str, Any] | None:
        """The message carrying `key` in its metadata: among a thread's replies, or the channel's
        recent history (from `since`, a Unix time, minus some slack for clock skew)."""
        cursor: str | None = None
        for _ in range(FIND_PAGES):
            kwargs: dict[str, Any] = {
                "channel": channel,
                "include_all_metadata": True,
                "limit": FIND_PAGE_SIZE,
            }
            if cursor:
                kwargs["cursor"] = cursor
            if thread:
                response = await self.client.conversations_replies(ts=thread, **kwargs)
            else:
                if since is not None:
                    kwargs["oldest"] = f"{max(since - FIND_SLACK_SECONDS, 0):.6f}"
                response = await self.client.conversations_history(**kwargs)
            for message in response.get("messages") or []:
                if carries_key(message, key):
                    return dict(message)
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None
        return None

    async def react(self, channel: str, ts: str, name: str, *, remove: bool = False) -> bool:
        """Add (or remove) a reaction; failures are logged, never raised: a reaction is decoration."""
        try:
            if remove:
                await self.client.reactions_remove(channel=channel, timestamp=ts, name=name)
            else:
                await self.client.reactions_add(channel=channel, timestamp=ts, name=name)
        except Exception as exc:
            code = describe(exc)
            # Already there (a replayed hook) or already gone: expected, so only at debug level.
            benign = code in ("already_reacted", "no_reaction")
            (log.debug if benign else log.warning)(
                "slack reaction failed", reaction=name, remove=remove, channel=channel, error=code
            )
            return False
        return True
