"""Slack Web API failures → `DeliveryError` (retry later, retry after N seconds, or give up)."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

from pynchy.gateway.channels.base import DeliveryError

# Errors retrying cannot fix: the conversation is gone or closed to the app, or the message
# itself is refused. (Auth errors are not here: fixing the token makes a retry succeed.)
PERMANENT = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "cannot_reply_to_message",
        "team_access_not_granted",
        "message_limit_exceeded",
    }
)
DEFAULT_RETRY_AFTER = 1.0


def error_code(exc: SlackApiError) -> str:
    """The `error` field of a Slack answer (`ratelimited`, `channel_not_found`…), or the HTTP status."""
    response = exc.response
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    status = getattr(response, "status_code", None)
    return "ratelimited" if status == 429 else f"http_{status}"


def describe(exc: BaseException) -> str:
    """A failure for the log: Slack's error code, or the exception itself."""
    return error_code(exc) if isinstance(exc, SlackApiError) else repr(exc)


def retry_after(exc: SlackApiError) -> float | None:
    headers = getattr(exc.response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(float(raw), 0.0)
            except (TypeError, ValueError):
                return DEFAULT_RETRY_AFTER
    return None


def to_delivery_error(exc: BaseException, method: str) -> DeliveryError:
    """What the delivery loop should do about a failed Web API call."""
    if isinstance(exc, SlackApiError):
        code = error_code(exc)
        if code == "ratelimited" or getattr(exc.response, "status_code", None) == 429:
            return DeliveryError(f"{method}: ratelimited", retry_after=retry_after(exc) or DEFAULT_RETRY_AFTER)
        return DeliveryError(f"{method}: {code}", permanent=code in PERMANENT)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError | SlackClientError):
        return DeliveryError(f"{method}: {type(exc).__name__}: {exc}")
    return DeliveryError(f"{method}: unexpected {type(exc).__name__}: {exc}")
