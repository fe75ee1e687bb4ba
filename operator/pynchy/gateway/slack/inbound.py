"""Slack Events API payloads → `Inbound` (pure: no I/O, no clock).

Which events become messages:

* `message` (channels, private channels, group DMs, DMs) and `app_mention`; thread replies too.
* Not: anything a bot posted (`bot_id`, our own user id: no loops, and never our own replies),
  edits, deletions, joins and other subtypes, hidden events, empty text.

The dedupe key is `slack:<channel>:<ts>`, not `slack:<event_id>`. A mention in a channel arrives
twice, as an `app_mention` and as a `message` event, each with its own `event_id`; keyed by the
message itself they collapse into one turn. A retried or replayed event (same `event_id`) always
describes the same message, so it collapses too: event-id dedupe is kept, the key is just coarser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pynchy.gateway.channels.base import Inbound

MESSAGE_EVENTS = frozenset({"message", "app_mention"})
# Subtypes that are still a person writing: a thread reply also sent to the channel, a file with a
# comment, a /me message.
USER_SUBTYPES = frozenset({None, "thread_broadcast", "file_share", "me_message"})


@dataclass(frozen=True)
class Identity:
    """Who the app is in the workspace (auth.test)."""

    user_id: str | None  # the bot user, U…
    bot_id: str | None = None  # B…


@dataclass(frozen=True)
class Skip:
    """Not a message for the gateway, and why (for the log)."""

    reason: str
    known: bool = True  # False: an event type this channel does not handle at all


def dedupe_key(channel: str, ts: str) -> str:
    return f"slack:{channel}:{ts}"


def unescape(text: str) -> str:
    """Slack escapes &, < and > in message text; the agent reads them plain. Control sequences
    (`<@U123>`, `<https://…|label>`) stay as Slack wrote them."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def strip_mention(text: str, user_id: str | None) -> tuple[str, bool]:
    """Remove the bot's own `<@U…>` (or `<@U…|name>`) mentions; say whether there was one."""
    if not user_id:
        return text.strip(), False
    pattern = re.compile(rf"<@{re.escape(user_id)}(?:\|[^>]*)?>[ \t]*")
    stripped, count = pattern.subn("", text)
    return stripped.strip(), count > 0


def parse(body: dict[str, Any], me: Identity) -> Inbound | Skip:
    """One Events API envelope (`type: event_callback`) → the message it carries, or why not."""
    if body.get("type") != "event_callback":
        return Skip(f"envelope type {body.get('type')!r} is not an event", known=False)
    event = body.get("event")
    if not isinstance(event, dict):
        return Skip("event_callback without an event", known=False)
    kind = event.get("type")
    if kind not in MESSAGE_EVENTS:
        return Skip(f"event type {kind!r} is not handled", known=False)
    subtype = event.get("subtype")
    if subtype not in USER_SUBTYPES:
        return Skip(f"message subtype {subtype!r}")
    if event.get("hidden"):
        return Skip("hidden message")
    user = event.get("user")
    if event.get("bot_id") or event.get("bot_profile"):
        return Skip("posted by a bot")
    if me.user_id and user == me.user_id:
        return Skip("posted by this app")
    channel, ts, text = event.get("channel"), event.get("ts"), event.get("text")
    if not isinstance(user, str) or not user:
        return Skip("no user")
    if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
        return Skip("no channel or ts")
    if not isinstance(text, str):
        return Skip("no text")
    text, mentioned = strip_mention(text, me.user_id)
    text = unescape(text)
    if not text:
        return Skip("empty message")
    thread = event.get("thread_ts")
    if not isinstance(thread, str) or thread == ts:
        thread = None  # a thread's parent message is top level
    channel_type = event.get("channel_type")
    direct = channel_type == "im" or (channel_type is None and channel.startswith("D"))
    return Inbound(
        channel="slack",
        channel_id=channel,
        text=text,
        sender=f"slack:{user}",
        dedupe_key=dedupe_key(channel, ts),
        thread=thread,
        external_id=ts,
        mentioned=mentioned or kind == "app_mention",
        direct=direct,
    )
