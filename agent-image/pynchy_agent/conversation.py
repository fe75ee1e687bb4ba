"""The pod's one long-lived Claude session: turns go in, events and results come out.

Follow-up turns. A turn that arrives while others are running is written into the live session at
once (client.query); the CLI queues it. Every prompt is sent with its own uuid, and each
ResultMessage lists the uuids of the prompts it answered (`user_message_uuids`):

* usually one result per prompt, in order (a prompt queued while the model is streaming gets its own
  turn after the running one);
* a prompt that arrives while a tool runs is often taken into the running turn ("the user sent a new
  message while you were working"): one result then answers both. The earliest turn it lists gets
  the TurnResult with the text, usage and cost; every other turn it lists gets an empty TurnResult
  (nothing more to post; the answer is in the first turn's text).

Without uuids on a result (older CLIs, some error results) turns are finished in FIFO order. Text
deltas and tool uses always belong to the oldest unfinished turn. A turn with resetSession, or any
turn after a successful reset_context tool call, waits until nothing is running, then starts a new
session; reset_context alone also drops the session as soon as the running turns end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
)

from pynchy_agent.client import RunApiClient
from pynchy_agent.events import EventSink
from pynchy_agent.protocol import Event, ToolUse, Turn, TurnFailed, TurnResult, UsageReport
from pynchy_agent.session import SessionState, SessionStore, transcript_exists

log = logging.getLogger(__name__)

DISCONNECT_TIMEOUT = 10.0


@dataclass
class InFlight:
    turn: Turn
    uuid: str
    sink: EventSink
    last_text: str = ""
    started: float = field(default_factory=time.monotonic)


def user_message(turn: Turn, message_uuid: str) -> dict[str, Any]:
    text = f"{turn.sender}: {turn.prompt}" if turn.sender else turn.prompt
    return {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "uuid": message_uuid,
    }


async def _one(message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield message


def usage_report(result: ResultMessage, cost: float) -> UsageReport:
    usage = result.usage or {}
    return UsageReport(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cost_usd=max(0.0, cost),
    )


def result_text(result: ResultMessage, fallback: str) -> str:
    if result.result is not None:
        return result.result
    if result.is_error:
        return "; ".join(result.errors or []) or f"the agent stopped ({result.subtype})"
    return fallback


class Conversation:
    def __init__(
        self,
        *,
        make_options: Callable[[str | None], ClaudeAgentOptions],
        api: RunApiClient,
        sessions: SessionStore,
        home: Path,
        initial: SessionState | None,
        event_interval: float = 0.05,
    ) -> None:
        self._make_options = make_options
        self._api = api
        self._sessions = sessions
        self._home = home
        self._event_interval = event_interval
        self.session_id = initial.session_id if initial else None
        self._reported_session = self.session_id
        self._cost_base = initial.total_cost_usd if initial else 0.0
        self._client: ClaudeSDKClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.in_flight: deque[InFlight] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self.reset_requested = False
        self.last_active = time.monotonic()

    # -- state -------------------------------------------------------------------------

    @property
    def current_turn_id(self) -> str | None:
        """The turn tool uses belong to now (the oldest unfinished one)."""
        return self.in_flight[0].turn.id if self.in_flight else None

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    def request_reset(self) -> None:
        """reset_context succeeded in the gateway: drop the session once the running turns are done."""
        self.reset_requested = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for every result, session report and reset still being posted."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the client --------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._lock:
            await self._connect_locked()

    async def prewarm(self) -> None:
        """Start the CLI before the first turn arrives (it takes about a second)."""
        try:
            await self.connect()
        except Exception as exc:
            log.warning("starting the Claude CLI failed; retrying with the first turn", extra={"error": str(exc)})

    async def _connect_locked(self) -> None:
        if self._client is not None:
            return
        resume = self.session_id
        if resume and not transcript_exists(self._home, resume):
            log.warning("the session's transcript is gone; starting a new session", extra={"session": resume})
            self._forget_session()
            resume = None
        client = ClaudeSDKClient(self._make_options(resume))
        started = time.monotonic()
        try:
            await client.connect()
        except BaseException:
            await _quietly(client.disconnect())
            raise
        self._client = client
        self._reader = asyncio.get_running_loop().create_task(self._read(client), name="claude-reader")
        log.info(
            "claude session ready",
            extra={"resumed": resume, "seconds": round(time.monotonic() - started, 2)},
        )

    async def _disconnect_locked(self) -> None:
        client, reader = self._client, self._reader
        self._client = self._reader = None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), DISCONNECT_TIMEOUT)
            except Exception as exc:
                log.warning("disconnecting the Claude CLI failed", extra={"error": str(exc)})

    def _forget_session(self) -> None:
        self.session_id = None
        self._cost_base = 0.0
        self._sessions.clear()

    async def reset(self) -> None:
        """A new session from the next turn on (the old one stays on disk, no longer resumed)."""
        async with self._lock:
            self.reset_requested = False
            await self._disconnect_locked()
            self._forget_session()
            log.info("session reset")
        await self._report_session()

    async def close(self) -> None:
        await self.settle()
        async with self._lock:
            await self._disconnect_locked()

    async def abort(self, message: str) -> None:
        """Stop now: every running turn fails with `message` (the CLI is stopped, the session stays)."""
        if self._reader is not None:
            self._reader.cancel()
        self._fail_running(message)
        async with self._lock:
            await self._disconnect_locked()
        await self.settle()

    # -- turns -------------------------------------------------------------------------

    async def start(self, turn: Turn) -> None:
        """Send the turn into the session (a follow-up if others are running); never raises."""
        if turn.reset_session or self.reset_requested:
            await self.wait_idle()
            await self.settle()
            await self.reset()
        sink = EventSink(self._poster(turn.id), interval=self._event_interval, name=turn.id)
        entry = InFlight(turn, str(uuid.uuid4()), sink)
        try:
            async with self._lock:
                await self._connect_locked()
                assert self._client is not None
                self.in_flight.append(entry)
                self._idle.clear()
                await self._client.query(_one(user_message(turn, entry.uuid)))
        except Exception as exc:
            log.error("the turn could not be started", extra={"turn": turn.id, "error": str(exc)})
            if entry in self.in_flight:
                self.in_flight.remove(entry)
                if not self.in_flight:
                    self._went_idle()
            self._spawn(sink.close(TurnFailed(message=f"the agent could not start: {exc}")))
            return
        log.info("turn started", extra={"turn": turn.id, "follow_up": len(self.in_flight) > 1})

    def _poster(self, turn_id: str) -> Callable[[Any], Coroutine[Any, Any, None]]:
        async def post(events: Any) -> None:
            await self._api.post_events(turn_id, events)

        return post

    def _went_idle(self) -> None:
        if not self.in_flight:
            self.last_active = time.monotonic()
            self._idle.set()

    # -- reading the CLI ---------------------------------------------------------------

    async def _read(self, client: ClaudeSDKClient) -> None:
        try:
            async for message in client.receive_messages():
                self._on_message(message)
            problem = "the Claude CLI exited"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem = f"the Claude CLI failed: {exc}"
        log.error("claude session ended", extra={"error": problem, "running": len(self.in_flight)})
        if self._client is client:
            self._client = None
            self._reader = None
            self._spawn(_quietly(client.disconnect()))
        self._fail_running(problem)

    def _fail_running(self, message: str) -> None:
        """Every running turn ends with TurnFailed(message)."""
        entries = list(self.in_flight)
        self.in_flight.clear()
        for entry in entries:
            self._spawn(entry.sink.close(TurnFailed(message=message)))
        self._went_idle()

    def _on_message(self, message: Any) -> None:
        current = self.in_flight[0] if self.in_flight else None
        if isinstance(message, StreamEvent):
            event = message.event
            if current and message.parent_tool_use_id is None and event.get("type") == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta":
                    current.sink.text(delta.get("text", ""))
        elif isinstance(message, AssistantMessage):
            if current and message.parent_tool_use_id is None:
                texts = [b.text for b in message.content if isinstance(b, TextBlock)]
                if texts:
                    current.last_text = "".join(texts)
                for block in message.content:
                    if isinstance(block, ToolUseBlock):
                        current.sink.add(ToolUse(name=block.name, input=block.input))
        elif isinstance(message, ResultMessage):
            self._on_result(message)

    def _matched(self, result: ResultMessage) -> list[InFlight]:
        ids = list(result.user_message_uuids or [])
        if result.user_message_uuid and result.user_message_uuid not in ids:
            ids.append(result.user_message_uuid)
        matched = [entry for entry in self.in_flight if entry.uuid in ids]
        if matched or result.origin is not None:
            return matched  # an injected turn (task notification ...) answers none of ours
        return [self.in_flight[0]] if self.in_flight else []

    def _on_result(self, result: ResultMessage) -> None:
        total = result.total_cost_usd
        cost = 0.0
        if total is not None:
            # Cumulative per session (restored on resume); below the base means the counter restarted.
            cost = total - self._cost_base if total >= self._cost_base else total
            self._cost_base = total
        if result.session_id:
            self.session_id = result.session_id
            self._sessions.save(SessionState(result.session_id, self._cost_base))
        matched = self._matched(result)
        if not matched:
            log.info("result for no pending turn", extra={"session": result.session_id, "subtype": result.subtype})
            return
        for entry in matched:
            self.in_flight.remove(entry)
        owner, others = matched[0], matched[1:]
        final: Event = TurnResult(
            text=result_text(result, owner.last_text),
            is_error=result.is_error,
            session_id=result.session_id,
            usage=usage_report(result, cost),
            duration_ms=max(0, result.duration_ms),
            num_turns=max(0, result.num_turns),
        )
        log.info(
            "turn finished",
            extra={
                "turn": owner.turn.id,
                "answered_too": [e.turn.id for e in others],
                "is_error": result.is_error,
                "cost_usd": round(cost, 6),
                "seconds": round(time.monotonic() - owner.started, 2),
            },
        )
        self._spawn(self._finish(owner, final, others, result.session_id))
        self._went_idle()

    async def _finish(self, owner: InFlight, final: Event, others: list[InFlight], session_id: str | None) -> None:
        await owner.sink.close(final)
        for entry in others:
            await entry.sink.close(TurnResult(text="", session_id=session_id))
        await self._report_session()
        if self.reset_requested and not self.in_flight:
            await self.reset()  # reset_context was called: drop the session now, not only on the next turn

    async def _report_session(self) -> None:
        current = self.session_id
        if current == self._reported_session:
            return
        try:
            await self._api.report_session(current)
            self._reported_session = current
        except Exception as exc:
            log.warning("session report failed", extra={"session": current, "error": str(exc)})


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(coro, DISCONNECT_TIMEOUT)
