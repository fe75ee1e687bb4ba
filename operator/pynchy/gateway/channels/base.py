"""The contract between a channel (Slack, local) and the gateway's core.

Inbound: a channel turns what it received into an `Inbound` and calls `Gateway.accept()`, which
dedupes, routes, stores and queues it (see gateway/inbox.py). Outbound: every reply is a row in
the outbound ledger first; the delivery loop (gateway/delivery.py) hands pending rows to the
channel's `deliver()`, which must be idempotent by the row's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

from pynchy.errors import PynchyError

if TYPE_CHECKING:
    from aiohttp import web

    from pynchy.gateway.turnhub import TurnWatch
    from pynchy.store.models import OutboundRow, TurnRow

ChannelKind = Literal["slack", "local"]


@dataclass(frozen=True)
class Inbound:
    """One message as a channel received it."""

    channel: ChannelKind
    channel_id: str  # Slack conversation id, or the local channel's name
    text: str  # with the bot's own mention already removed
    sender: str  # 'slack:<user id>' or 'owner' (the local channel's authenticated user)
    dedupe_key: str  # 'slack:<event_id>' or 'local:<client message id>'
    thread: str | None = None  # Slack: thread_ts of the thread it was asked in (None: top level)
    external_id: str | None = None  # Slack: the message's ts
    mentioned: bool = False  # the channel saw its bot mention (app_mention, or <@bot> in the text)
    direct: bool = False  # a direct message: always addressed to the agent


class Outcome(StrEnum):
    QUEUED = "queued"  # a turn was queued for the Group's agent
    FOLLOW_UP = "follow-up"  # queued while a turn runs: the live session takes it next
    DUPLICATE = "duplicate"  # already seen (same dedupe key): nothing done
    COMMAND = "command"  # a magic command, answered by the gateway itself
    IGNORED = "ignored"  # unknown channel, not addressed to the agent, or sender not allowed


@dataclass(frozen=True)
class Accepted:
    """What the gateway did with an inbound message."""

    outcome: Outcome
    namespace: str | None = None
    group: str | None = None
    turn_id: str | None = None
    message_id: int | None = None
    reply: str | None = None  # a command's answer (also in the ledger, so the channel delivers it)
    reason: str = ""  # why it was ignored, for the log


@dataclass(frozen=True)
class DecisionReply:
    """What the gateway made of a person's Approve / Deny (a button, or `approve <id>`)."""

    text: str  # the answer for the person who decided (a refusal says why)
    decided: bool  # False: refused (not an approver, unknown id, decided already); nothing changed


class DeliveryError(PynchyError):
    """A send failed. `retry_after` (seconds) when the channel said when to retry; `permanent`
    when retrying cannot help (a deleted channel, a rejected message)."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent


class Channel(Protocol):
    """What the gateway needs from a channel implementation."""

    kind: ChannelKind
    # Longest text of one message; longer replies are split into several ledger rows.
    max_message_chars: int

    def install(self, app: web.Application) -> None:
        """Add the channel's HTTP routes (Slack's /slack/events, the local /v1/chat API) to the
        gateway's server, before it starts."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        """Send a pending ledger row and return the channel's id of the message. With
        `row.external_id` set (a streamed reply's placeholder), finish that message in place.
        `maybe_sent` means an earlier process may have sent it before crashing: look for it first
        (by `row.key`) and update instead of posting again. Raise DeliveryError on failure."""
        ...

    async def turn_queued(self, turn: TurnRow) -> None:
        """A message of this channel became a turn (Slack: the 'received' reaction)."""
        ...

    async def turn_started(self, turn: TurnRow, watch: TurnWatch) -> None:
        """A run took the turn: show progress and stream text until `watch.done` (Slack: a
        placeholder updated about once a second). Runs as a background task."""
        ...

    async def turn_ended(self, turn: TurnRow, ok: bool) -> None:
        """The turn's reply is written (Slack: 'done' or 'failed' reaction)."""
        ...
