"""The local channel: `pynchy chat <name>` talks to the gateway over HTTP (see docs/chat.md).

Routes are in pynchy/chat/protocol.py. A message goes through the gateway's `accept` like a Slack
event (dedupe key `local:<clientMessageId>`, sender 'owner'); its turn's events stream to the
client as NDJSON; everything the gateway sends to the channel (replies, command answers,
send_message notes, scheduled runs' replies) is read from the outbound ledger by cursor.

Streaming: each turn answering in a local channel gets a `TurnFeed` when it is queued (or when a
client first asks for it): the turn's events in order, read by any number of clients from any
point, so a client that connects late or reconnects misses nothing. A feed follows the turn with
its own hub watch until the final event, which also comes from the store when the watch cannot
give it (the turn ended before anyone watched, the gateway restarted, a hook was missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, SecretStr
from sqlalchemy.orm import Session

from pynchy.chat.protocol import (
    CHAT_PREFIX,
    MAX_BODY_BYTES,
    MAX_TEXT_CHARS,
    NDJSON,
    PING_SECONDS,
    ApprovalAsked,
    ChannelInfo,
    ChannelList,
    ChannelSummary,
    ChatMessage,
    ChatWire,
    EventsQuery,
    MessageAccepted,
    MessageBatch,
    MessagesQuery,
    Ping,
    PostMessage,
    QuestionAsked,
    Status,
    StreamHeader,
    TurnState,
    is_final,
    message_kind,
)
from pynchy.gateway.channels.base import Accepted, ChannelKind, Inbound, Outcome
from pynchy.gateway.db import Db
from pynchy.gateway.problems import Handler, RequestError, api_error_body, bearer, parse, parse_query, problems
from pynchy.gateway.turnhub import TurnWatch
from pynchy.logs import get_logger
from pynchy.store import outbound
from pynchy.store import turns as turn_store
from pynchy.store.models import OutboundRow, TurnRow
from pynchy_agent.protocol import TurnFailed, TurnResult

log = get_logger(__name__)

KEEP_FINISHED_FEEDS = 256  # finished turns whose events stay replayable from memory
ENDED = (turn_store.DONE, turn_store.FAILED)
MESSAGES_PER_POLL = 200
CLIENT_HINT = (
    "`pynchy chat` reads the token from ~/.config/pynchy/chat.yaml (key `token`), --token or $PYNCHY_CHAT_TOKEN"
)


class BoundGroup(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


class LocalDirectory(Protocol):
    """What the channel reads of the Group directory (gateway/routing.py's Directory)."""

    def lookup(self, kind: str, channel_id: str) -> BoundGroup | None: ...

    def local_channels(self) -> list[str]: ...


class TurnFeed:
    """One turn's events as they happened, replayable from any index."""

    def __init__(self, turn_id: str) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.turn_id = turn_id
        self.events: list[Any] = []
        self.state: TurnState = "queued"
        self.watch: TurnWatch | None = None
        self.consumer: asyncio.Task[None] | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def changed(self) -> asyncio.Future[None]:
        """Resolved at the next change (take it before reading `events`, so none is missed)."""
        return self._changed

    def _notify(self) -> None:
        if not self._changed.done():
            self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()

    def add(self, event: Any) -> None:
        if self.finished:
            return  # nothing follows the final event (a late duplicate from a second source)
        self.events.append(event)
        if isinstance(event, Status):
            self.state = "running"
        elif is_final(event):
            failed = isinstance(event, TurnFailed) or (isinstance(event, TurnResult) and event.is_error)
            self.state = "failed" if failed else "done"
            self._stop_consumer()
        self._notify()

    def follow(self, watch: TurnWatch) -> None:
        """Take the turn's events from `watch` until the final one."""
        self.watch = watch
        self.consumer = asyncio.ensure_future(self._consume(watch))

    async def _consume(self, watch: TurnWatch) -> None:
        while not self.finished:
            self.add(await watch.events.get())

    def _drain(self) -> None:
        while self.watch is not None and not self.finished:
            try:
                event = self.watch.events.get_nowait()
            except asyncio.QueueEmpty:
                return
            self.add(event)

    def finish_from(self, row: TurnRow) -> None:
        """The store says the turn ended: events the watch still holds first, then (if the final
        event never came through it) the final result as the store has it."""
        if row.state not in ENDED or self.finished:
            return
        self._drain()
        if not self.finished:
            self.add(final_event(row))

    def _stop_consumer(self) -> None:
        if self.consumer is not None and self.consumer is not asyncio.current_task():
            self.consumer.cancel()

    def close(self) -> None:
        self._stop_consumer()
        self._notify()


def approval_request_id(key: str) -> str | None:
    """The approval id of an approval request's ledger key `approval:<id>` (not its `:outcome`)."""
    prefix, sep, rest = key.partition(":")
    if prefix != "approval" or not sep or not rest or ":" in rest:
        return None
    return rest


def _approval_tool(blocks: str | None, approval_id: str) -> str:
    """The tool named in the row's `{"approval": {"id", "tool"}}` data, else "a tool"."""
    try:
        data = json.loads(blocks) if blocks else None
    except ValueError:
        data = None
    approval = data.get("approval") if isinstance(data, dict) else None
    if isinstance(approval, dict) and approval.get("id") in (None, approval_id):
        tool = approval.get("tool")
        if isinstance(tool, str) and tool:
            return tool
    return "a tool"


def _question(row: OutboundRow) -> QuestionAsked | None:
    """The QuestionAsked of a question's ledger row `question:<id>` (its data in `blocks`)."""
    prefix, _, rest = row.key.partition(":")
    if prefix != "question" or not rest or ":" in rest:
        return None
    try:
        data = json.loads(row.blocks) if row.blocks else None
        asked = data["question"] if isinstance(data, dict) else None
        return QuestionAsked(id=rest, questions=asked["questions"], text=row.text) if asked else None
    except (ValueError, KeyError, TypeError):
        return None


def final_event(row: TurnRow) -> TurnResult | TurnFailed:
    if row.is_error or row.state == turn_store.FAILED:
        return TurnFailed(message=row.reply or "the turn failed")
    return TurnResult(text=row.reply or "")


def _running(row: TurnRow) -> Status:
    """A run took the turn: each attempt says so (after a run died mid-turn, the answer starts again)."""
    return Status(attempt=max(1, row.attempts))


_STATES: dict[str, TurnState] = {
    turn_store.QUEUED: "queued",
    turn_store.DELIVERED: "running",
    turn_store.DONE: "done",
    turn_store.FAILED: "failed",
}


def _state(row: TurnRow) -> TurnState:
    return _STATES.get(row.state, "queued")


class LocalChannel:
    """The `Channel` of `pynchy chat`. The gateway always registers it: without PYNCHY_CHAT_TOKEN
    its API answers 503 saying so."""

    kind: ChannelKind = "local"
    max_message_chars = MAX_TEXT_CHARS

    def __init__(
        self,
        db: Db,
        directory: LocalDirectory,
        accept: Callable[[Inbound], Awaitable[Accepted]],
        watch: Callable[[str], TurnWatch],
        *,
        token: SecretStr | None,
        long_poll_seconds: float,
    ) -> None:
        self.db = db
        self.directory = directory
        self.accept = accept
        self.watch = watch
        self.long_poll_seconds = long_poll_seconds
        self._token = token.get_secret_value().encode() if token is not None else None
        self._feeds: OrderedDict[str, TurnFeed] = OrderedDict()
        self._arrivals: dict[str, asyncio.Future[None]] = {}
        self._closing = asyncio.Event()

    # -- Channel ---------------------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        api = web.Application(middlewares=[problems(api_error_body), self._authorize])
        api.router.add_get("", self.list_channels)
        api.router.add_get("/", self.list_channels)
        api.router.add_get("/{channel}", self.channel_info)
        api.router.add_post("/{channel}/messages", self.post_message)
        api.router.add_get("/{channel}/messages", self.messages)
        api.router.add_get("/{channel}/turns/{turn}/events", self.turn_events)
        app.add_subapp(CHAT_PREFIX, api)
        app.on_shutdown.append(self._on_shutdown)  # before the server waits for open requests

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._token is None:
            log.info("local channel API disabled: PYNCHY_CHAT_TOKEN is not set")

    async def stop(self) -> None:
        """Release waiting long-polls and end open event streams, so shutdown does not wait on them."""
        self._closing.set()
        for name in list(self._arrivals):
            self._wake(name)
        for feed in self._feeds.values():
            feed.close()

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        # Nothing to send: the row is in the ledger, where clients read it by cursor. Waking
        # their long-polls is all there is to do, and doing it twice is harmless. An approval
        # request also goes into its turn's feed, so the client streaming the turn can ask.
        self._ask_in_feed(row)
        if row.channel_id is not None:
            self._wake(row.channel_id)
        return f"local:{row.id}"

    async def turn_queued(self, turn: TurnRow) -> None:
        self._feed(turn.id)

    async def turn_started(self, turn: TurnRow, watch: TurnWatch) -> None:
        feed = self._feed(turn.id, watch)  # an existing feed keeps its own watch (it sees the same events)
        feed.add(_running(turn))

    async def turn_ended(self, turn: TurnRow, ok: bool) -> None:
        feed = self._feeds.get(turn.id)
        if feed is not None:
            feed.finish_from(turn)

    # -- feeds -----------------------------------------------------------------------------

    def _ask_in_feed(self, row: OutboundRow) -> None:
        """An approval request (`approval:<id>`) or an agent's question (`question:<id>`) of a turn
        with a feed: an ApprovalAsked / QuestionAsked in it, once."""
        feed = self._feeds.get(row.turn_id) if row.turn_id is not None else None
        if feed is None or feed.finished:
            return
        approval_id = approval_request_id(row.key)
        if approval_id is not None:
            if any(isinstance(e, ApprovalAsked) and e.id == approval_id for e in feed.events):
                return  # delivered again (a retry, a restated row): the feed has it already
            feed.add(ApprovalAsked(id=approval_id, tool=_approval_tool(row.blocks, approval_id), text=row.text))
            return
        question = _question(row)
        if question is not None and not any(isinstance(e, QuestionAsked) and e.id == question.id for e in feed.events):
            feed.add(question)

    def _feed(self, turn_id: str, watch: TurnWatch | None = None) -> TurnFeed:
        feed = self._feeds.get(turn_id)
        if feed is not None:
            return feed
        feed = TurnFeed(turn_id)
        feed.follow(watch if watch is not None else self.watch(turn_id))
        return self._keep(feed)

    def _keep(self, feed: TurnFeed) -> TurnFeed:
        """Add a feed, forgetting the oldest finished ones beyond KEEP_FINISHED_FEEDS."""
        self._feeds[feed.turn_id] = feed
        finished = [tid for tid, f in self._feeds.items() if f.finished]
        for tid in finished[: max(0, len(finished) - KEEP_FINISHED_FEEDS)]:
            self._feeds.pop(tid).close()
        return feed

    async def _feed_for(self, row: TurnRow) -> TurnFeed:
        feed = self._feeds.get(row.id)
        if feed is not None:
            return feed
        if row.state in ENDED:
            feed = TurnFeed(row.id)
            feed.add(final_event(row))
            return self._keep(feed)
        feed = self._feed(row.id)  # watching from now on...
        if row.state == turn_store.DELIVERED:
            feed.add(_running(row))
        # ...and the turn may have ended between the first read and the watch.
        fresh = await self.db.call(turn_store.get, row.id)
        if fresh is not None:
            feed.finish_from(fresh)
        return feed

    # -- long-poll wake-ups ----------------------------------------------------------------

    def _arrival(self, channel: str) -> asyncio.Future[None]:
        fut = self._arrivals.get(channel)
        if fut is None or fut.done():
            fut = self._arrivals[channel] = asyncio.get_running_loop().create_future()
        return fut

    def _wake(self, channel: str) -> None:
        fut = self._arrivals.pop(channel, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every route needs the chat token."""
        if self._token is None:
            raise RequestError(
                503,
                "the local channel is disabled: set PYNCHY_CHAT_TOKEN on the gateway "
                "(at least 16 characters) and give `pynchy chat` the same token",
            )
        token = bearer(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="pynchy-chat"'}
        if token is None:
            raise RequestError(
                401,
                f"missing token: send Authorization: Bearer <the gateway's PYNCHY_CHAT_TOKEN>; {CLIENT_HINT}",
                challenge,
            )
        if not hmac.compare_digest(token.encode(), self._token):
            raise RequestError(
                401,
                f"wrong token: it does not match the gateway's PYNCHY_CHAT_TOKEN; {CLIENT_HINT}",
                challenge,
            )
        response: web.StreamResponse = await handler(request)
        return response

    def _summary(self, name: str) -> ChannelSummary | None:
        entry = self.directory.lookup("local", name)
        return None if entry is None else ChannelSummary(channel=name, namespace=entry.namespace, group=entry.name)

    def _channels(self) -> list[ChannelSummary]:
        summaries = (self._summary(name) for name in self.directory.local_channels())
        return [s for s in summaries if s is not None]

    def _channel(self, request: web.Request) -> ChannelSummary:
        name = request.match_info["channel"]
        summary = self._summary(name)
        if summary is None:
            known = self.directory.local_channels()
            listing = (
                f"local channels: {', '.join(known)}"
                if known
                else "no Group has one yet; add `channels: [{local: {name: " + name + "}}]` to a Group's spec"
            )
            raise RequestError(404, f"no local channel {name!r} ({listing})")
        return summary

    async def list_channels(self, request: web.Request) -> web.Response:
        return _json(ChannelList(channels=self._channels()))

    async def channel_info(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        cursor = await self.db.call(outbound.latest_id, "local", ch.channel)
        return _json(ChannelInfo(**ch.model_dump(), cursor=cursor))

    async def post_message(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        body = await _read_body(request)
        msg = parse(PostMessage, body, "message")
        if len(msg.text) > MAX_TEXT_CHARS:
            raise RequestError(
                413,
                f"the message is {len(msg.text)} characters; the local channel takes at most "
                f"{MAX_TEXT_CHARS} per message (send a shorter one, or several)",
            )
        inbound = Inbound(
            channel="local",
            channel_id=ch.channel,
            text=msg.text,
            sender="owner",
            dedupe_key=f"local:{msg.client_message_id}",
            direct=True,
        )
        accepted = await self.accept(inbound)
        reply = accepted.reply
        if accepted.outcome == Outcome.DUPLICATE and accepted.turn_id is None and reply is None:
            # A retried command: answer it again from the ledger (it was answered the first time).
            row = await self.db.call(outbound.by_key, f"cmd:{inbound.dedupe_key}")
            reply = row.text if row is not None else None
        log.info(
            "local message",
            channel=ch.channel,
            outcome=accepted.outcome.value,
            turn=accepted.turn_id,
            reason=accepted.reason or None,
        )
        return _json(
            MessageAccepted(
                outcome=accepted.outcome.value,
                namespace=accepted.namespace,
                group=accepted.group,
                turn_id=accepted.turn_id,
                reply=reply,
                reason=accepted.reason or None,
            )
        )

    async def messages(self, request: web.Request) -> web.Response:
        ch = self._channel(request)
        q = parse_query(MessagesQuery, request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(q.wait, self.long_poll_seconds)
        while True:
            arrival = self._arrival(ch.channel)  # taken before the read: a row added after it wakes us
            batch = await self.db.call(_messages_after, ch.channel, q.after)
            remaining = deadline - loop.time()
            if batch.messages or remaining <= 0 or self._closing.is_set():
                return _json(batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(arrival), remaining)

    async def turn_events(self, request: web.Request) -> web.StreamResponse:
        ch = self._channel(request)
        q = parse_query(EventsQuery, request)
        turn_id = request.match_info["turn"]
        row = await self.db.call(turn_store.get, turn_id)
        if row is None or row.reply_channel != "local" or row.reply_channel_id != ch.channel:
            raise RequestError(404, f"no turn {turn_id!r} in local channel {ch.channel!r}")
        feed = await self._feed_for(row)
        index = q.from_ if q.stream == feed.id else 0
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
        await response.prepare(request)
        try:
            state = feed.state if feed.events else _state(row)
            await response.write(StreamHeader(stream=feed.id, turn=turn_id, state=state).line())
            while True:
                changed = feed.changed()
                while index < len(feed.events):
                    await response.write(_line(feed.events[index]))
                    index += 1
                if feed.finished or self._closing.is_set():
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(changed), PING_SECONDS)
                except TimeoutError:
                    await response.write(Ping().line())
                    # A quiet turn: make sure it has not ended without a word reaching the feed.
                    fresh = await self.db.call(turn_store.get, turn_id)
                    if fresh is not None:
                        feed.finish_from(fresh)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; the feed carries on without it
        return response


def _json(model: ChatWire) -> web.Response:
    return web.json_response(model.wire())


def _line(event: BaseModel) -> bytes:
    line = getattr(event, "line", None)
    if line is not None:
        data: bytes = line()  # the chat protocol's own event types render themselves
        return data
    return event.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n"


async def _read_body(request: web.Request) -> bytes:
    too_big = (
        f"the request body is over {MAX_BODY_BYTES} bytes; the local channel takes at most "
        f"{MAX_TEXT_CHARS} characters per message"
    )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, too_big)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(413, too_big)
    return bytes(body)


# -- store reads (one transaction each, through Db.call) ------------------------------


def _messages_after(session: Session, channel: str, after: int) -> MessageBatch:
    messages: list[ChatMessage] = []
    cursor = after
    for row in outbound.for_channel(session, "local", channel, after, limit=MESSAGES_PER_POLL):
        if row.state == outbound.STREAMING:
            break  # text not final yet: nothing after it either, or the cursor would pass it
        messages.append(
            ChatMessage(
                id=row.id,
                key=row.key,
                kind=message_kind(row.key),
                text=row.text,
                is_error=row.is_error,
                turn_id=row.turn_id,
                at=row.created_at,
            )
        )
        cursor = row.id
    return MessageBatch(messages=messages, cursor=cursor)
