"""A fake of the gateway's run API (protocol.py) for testing the agent runner without the gateway.

    with FakeRunApi(token) as api:
        api.push(Turn(id="t1", prompt="hello"))
        ...  # start pynchy-agent with PYNCHY_RUN_API_URL=api.base_url
        final = api.wait_final("t1")          # the TurnResult / TurnFailed
        api.text("t1"), api.events["t1"], api.sessions, api.tool_calls

Requests are validated with the protocol models (422 on a bad body, like the gateway). Knobs:
`over` (next-turn polls answer 410), `bound_only` (410 once no turn is queued, like a run with its
own prompt), `refuse_token` (401 everywhere), `tool_answers[name]` (a ToolResult or (status,
message)), `tool_gate` (tool calls wait for it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from pynchy_agent.protocol import (
    ApiError,
    Event,
    EventBatch,
    RunInfo,
    SessionReport,
    TextDelta,
    ToolCall,
    ToolResult,
    Turn,
    TurnFailed,
    TurnResult,
)

from .server import ThreadedServer

PREFIX = "/v1/run"


def _error(status: int, message: str) -> web.Response:
    return web.json_response(ApiError(error=message).wire(), status=status)


class FakeRunApi(ThreadedServer):
    name = "fake-run-api"

    def __init__(self, token: str, info: RunInfo | None = None) -> None:
        super().__init__()
        self.token = token
        self.info = info or RunInfo(run="run-1", namespace="ns", group="family")
        self.over = False
        self.bound_only = False
        self.refuse_token = False
        self.tool_answers: dict[str, ToolResult | tuple[int, str]] = {}
        self.tool_gate: threading.Event | None = None
        self._queue: deque[Turn] = deque()
        self.delivered: list[str] = []
        self.events: dict[str, list[Event]] = defaultdict(list)
        self.sessions: list[str | None] = []
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.polls: list[float] = []
        self.paths: list[str] = []

    # -- test side --

    def push(self, turn: Turn) -> None:
        with self._lock:
            self._queue.append(turn)

    def finals(self, turn_id: str) -> list[TurnResult | TurnFailed]:
        with self._lock:
            return [e for e in self.events.get(turn_id, []) if isinstance(e, TurnResult | TurnFailed)]

    def wait_final(self, turn_id: str, timeout: float = 60) -> TurnResult | TurnFailed:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            finals = self.finals(turn_id)
            if finals:
                return finals[0]
            time.sleep(0.02)
        raise AssertionError(f"turn {turn_id} got no result within {timeout}s; events: {self.events.get(turn_id)}")

    def wait_delivered(self, turn_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while turn_id not in self.delivered:
            if time.monotonic() > deadline:
                raise AssertionError(f"turn {turn_id} was never fetched")
            time.sleep(0.02)

    def text(self, turn_id: str) -> str:
        with self._lock:
            return "".join(e.text for e in self.events.get(turn_id, []) if isinstance(e, TextDelta))

    # -- server side --

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.paths.append(f"{request.method} {request.path}")
        if self.refuse_token or request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "the run token is not valid")
        path = request.path
        if not path.startswith(PREFIX):
            return _error(404, f"no route {path}")
        path = path[len(PREFIX) :]
        raw = await request.read()
        try:
            if request.method == "GET" and path == "":
                return web.json_response(self.info.wire())
            if request.method == "GET" and path == "/turns/next":
                return await self._next(float(request.query.get("wait", "0")))
            if request.method == "POST" and path.startswith("/turns/") and path.endswith("/events"):
                batch = EventBatch.model_validate_json(raw)
                turn_id = path[len("/turns/") : -len("/events")]
                with self._lock:
                    if turn_id not in self.delivered:
                        return _error(404, f"turn {turn_id} was not delivered to this run")
                    self.events[turn_id].extend(batch.events)
                return web.Response(status=204)
            if request.method == "POST" and path == "/session":
                report = SessionReport.model_validate_json(raw)
                with self._lock:
                    self.sessions.append(report.session_id)
                return web.Response(status=204)
            if request.method == "POST" and path.startswith("/tools/"):
                return await self._tool(path[len("/tools/") :], ToolCall.model_validate_json(raw or b"{}"))
        except ValidationError as exc:
            return _error(422, f"invalid request: {exc}")
        return _error(404, f"no route {request.method} {request.path}")

    async def _next(self, wait: float) -> web.Response:
        with self._lock:
            self.polls.append(wait)
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if self.over:
                    return _error(410, "the run is over")
                if self._queue:
                    turn = self._queue.popleft()
                    self.delivered.append(turn.id)
                    return web.json_response(turn.wire())
                if self.bound_only:
                    return _error(410, "the run's own prompt has been answered; nothing more to do")
            if time.monotonic() >= deadline or self._stopping.is_set():
                return web.Response(status=204)
            await asyncio.sleep(0.02)

    async def _tool(self, name: str, call: ToolCall) -> web.Response:
        with self._lock:
            self.tool_calls.append((name, call.arguments))
        if self.tool_gate is not None:
            await self._wait_for(self.tool_gate)
        answer = self.tool_answers.get(name, ToolResult(text=f"{name} done"))
        if isinstance(answer, tuple):
            return _error(*answer)
        return web.json_response(answer.wire())
