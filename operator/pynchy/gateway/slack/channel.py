"""The Slack channel: events in (Socket Mode or HTTP), replies out through the ledger, progress
shown while the agent works. See docs/slack.md.

    channel = SlackChannel(settings, gateway)   # settings.slack_enabled must be true
    gateway.add_channel(channel)                # before gateway.start()
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError

from pynchy.aio import KeyedLocks, TaskSet
from pynchy.gateway.channels.base import Accepted, ChannelKind, DecisionReply, Inbound
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.slack.client import SlackApi, make_client
from pynchy.gateway.slack.errors import error_code
from pynchy.gateway.slack.events import EVENTS_PATH, EventReceiver
from pynchy.gateway.slack.inbound import Identity
from pynchy.gateway.slack.reactions import Reactions
from pynchy.gateway.slack.replies import Replies
from pynchy.gateway.slack.stream import UPDATE_INTERVAL, Streamer
from pynchy.logs import get_logger

if TYPE_CHECKING:
    from aiohttp import web

    from pynchy.gateway.db import Db
    from pynchy.gateway.turnhub import TurnWatch
    from pynchy.store.models import OutboundRow, TurnRow

log = get_logger(__name__)

# Slack takes up to 40,000 characters but advises keeping messages under 4,000 (longer ones are
# hard to read and may be truncated); mrkdwn escaping adds a little, so split below that.
MAX_MESSAGE_CHARS = 3800


class Core(Protocol):
    """What the channel uses of the gateway."""

    db: Db

    async def accept(self, inbound: Inbound) -> Accepted: ...

    async def decide_approval(self, approval_id: str, approve: bool, sender: str) -> DecisionReply: ...

    async def answer_question(self, question_id: str, index: int, choice: int, sender: str) -> DecisionReply: ...


class SlackChannel:
    kind: ChannelKind = "slack"
    max_message_chars = MAX_MESSAGE_CHARS

    def __init__(self, settings: GatewaySettings, gateway: Core, *, update_interval: float = UPDATE_INTERVAL) -> None:
        if settings.slack_bot_token is None:
            raise ValueError("the Slack channel needs PYNCHY_SLACK_BOT_TOKEN")
        self.settings = settings
        self.gateway = gateway
        token = settings.slack_bot_token.get_secret_value()
        self.client = make_client(token, settings.slack_api_url)
        # Streaming updates skip a beat on 429 instead of sleeping on it while holding the row's lock.
        self.stream_client = make_client(token, settings.slack_api_url, rate_limit_retries=False)
        self.api = SlackApi(self.client)
        self.identity = Identity(None)
        self.socket_mode = settings.slack_app_token is not None
        locks: KeyedLocks[str] = KeyedLocks()
        self.replies = Replies(gateway.db, self.api, locks)
        self.streamer = Streamer(
            gateway.db, SlackApi(self.stream_client), locks, self.max_message_chars, interval=update_interval
        )
        self.reactions = Reactions(self.api)
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
        self.events = EventReceiver(
            token,
            settings.slack_api_url,
            signing_secret=None if self.socket_mode else secret,
            accept=gateway.accept,
            whoami=self.whoami,
            reply=self._reply_directly,
            decide=gateway.decide_approval,
            answer=gateway.answer_question,
            ephemeral=self.api.post_ephemeral,
            background=self._background,
        )
        self._socket: AsyncSocketModeHandler | None = None
        self._http: aiohttp.ClientSession | None = None
        self._auth_lock = asyncio.Lock()
        self._tasks = TaskSet()

    # -- lifecycle -----------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        if not self.socket_mode:
            app.router.add_post(EVENTS_PATH, self.events.handle_http)

    async def whoami(self) -> Identity:
        """The app's bot user (auth.test, once). Raises RuntimeError when Slack does not say."""
        if self.identity.user_id is not None:
            return self.identity
        async with self._auth_lock:
            if self.identity.user_id is None:
                try:
                    auth = await self.client.auth_test()
                except SlackApiError as exc:
                    raise RuntimeError(
                        f"Slack refused the bot token ({error_code(exc)}): check PYNCHY_SLACK_BOT_TOKEN "
                        f"(and PYNCHY_SLACK_API_URL, now {self.settings.slack_api_url})"
                    ) from exc
                self.identity = Identity(auth.get("user_id"), auth.get("bot_id"))
                log.info(
                    "slack connected",
                    team=auth.get("team"),
                    bot_user=self.identity.user_id,
                    mode="socket" if self.socket_mode else "http",
                )
        return self.identity

    async def start(self) -> None:
        """A refused token fails the start with a clear message. Slack being unreachable does not:
        the gateway serves its other channels, and this one connects when Slack answers."""
        # One HTTP session for every Web API call: slack_sdk opens a new session (and connection)
        # per call otherwise, which costs more than the call itself at a message rate.
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for client in (self.client, self.stream_client):
            client.session = self._http
        try:
            await self.whoami()
        except RuntimeError:
            await self._http.close()  # a refused token ends the start; leave nothing open
            self._http = None
            raise
        except Exception as exc:
            log.warning("slack unreachable at start; retrying in the background", error=repr(exc))
        if self.socket_mode:
            assert self.settings.slack_app_token is not None
            self._socket = AsyncSocketModeHandler(
                self.events.app, self.settings.slack_app_token.get_secret_value(), web_client=self.client
            )
            self._background(self._connect_socket(self._socket))

    async def _connect_socket(self, handler: AsyncSocketModeHandler) -> None:
        """Open the Socket Mode connection. slack_sdk retries by itself (every 10 s, logging why)
        until Slack takes it, and reconnects after that, so there is no loop of ours around it."""
        await handler.connect_async()  # type: ignore[no-untyped-call]  # slack_bolt leaves it unannotated
        log.info("slack socket mode connected")

    async def stop(self) -> None:
        await self._tasks.close()
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]  # slack_bolt leaves it unannotated
            self._socket = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro, name="slack")

    async def _reply_directly(self, channel: str, thread: str, text: str) -> None:
        """A short notice outside the ledger (no Group is known for it): best effort."""
        try:
            await self.api.post(channel, text, thread=thread, key=None)
        except Exception as exc:
            log.warning("slack notice not posted", channel=channel, error=repr(exc))

    # -- replies out ---------------------------------------------------------------------

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        return await self.replies.deliver(row, maybe_sent=maybe_sent)

    # -- turn hooks ----------------------------------------------------------------------

    async def turn_queued(self, turn: TurnRow) -> None:
        await self.reactions.queued(turn)

    async def turn_started(self, turn: TurnRow, watch: TurnWatch) -> None:
        self._background(self.reactions.started(turn))  # in order after 'received' (per-turn lock)
        await self.streamer.run(turn, watch)

    async def turn_ended(self, turn: TurnRow, ok: bool) -> None:
        await self.reactions.ended(turn, ok)
        if ok:
            # A reply with text is pending by now (written before this hook); without one the
            # placeholder is removed. (A failed turn always gets a reply that finishes it.)
            await self.streamer.drop_unanswered(turn)
