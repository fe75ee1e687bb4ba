"""HTTP client of the gateway's run API (see protocol.py), with retries for a restarting gateway."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import ValidationError

from pynchy_agent.errors import AgentError
from pynchy_agent.protocol import (
    RUN_API_PREFIX,
    ApiError,
    Event,
    EventBatch,
    PermissionAnswer,
    PermissionRequest,
    RunInfo,
    SessionReport,
    ToolCall,
    ToolResult,
    Turn,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_BATCH = 1000


class RunApiError(AgentError):
    """The gateway answered with an error status; `message` is its ApiError text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class UnauthorizedError(RunApiError):
    """401: the run token was refused (expired, or the run was deleted)."""


class RunOverError(RunApiError):
    """410: the run takes no more turns."""


class GatewayUnavailableError(AgentError):
    """The gateway could not be reached (or kept answering 502/503/504) for the whole retry window."""


def backoff(attempt: int, *, base: float = 0.5, cap: float = 10.0) -> float:
    """0.5, 1, 2, 4, 8, 10, 10, ... seconds."""
    return min(cap, base * 2.0**attempt)


def _message(response: httpx.Response) -> str:
    try:
        return ApiError.model_validate_json(response.content).error
    except ValidationError:
        return response.text.strip()[:500] or response.reason_phrase


class RunApiClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        retry_seconds: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry_seconds = retry_seconds
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "pynchy-agent"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
        retry_seconds: float | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """One call; connection errors and 502/503/504 are retried with backoff until the window closes.

        A request that is not idempotent (an agent tool call) is retried only when it cannot have reached
        the gateway (the connection was never made)."""
        window = self.retry_seconds if retry_seconds is None else retry_seconds
        deadline = time.monotonic() + window
        retryable: tuple[type[Exception], ...] = (
            (httpx.TransportError,) if idempotent else (httpx.ConnectError, httpx.ConnectTimeout)
        )
        attempt = 0
        while True:
            problem: str
            try:
                response = await self._http.request(
                    method, RUN_API_PREFIX + path, json=json, params=params, timeout=timeout or httpx.USE_CLIENT_DEFAULT
                )
            except retryable as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRY_STATUSES or not idempotent:
                    return _checked(response)
                problem = f"HTTP {response.status_code}: {_message(response)}"
            delay = backoff(attempt)
            if time.monotonic() + delay > deadline:
                raise GatewayUnavailableError(f"{method} {RUN_API_PREFIX}{path} failed for {window:.0f}s: {problem}")
            log.warning("run API call failed, retrying", extra={"path": path, "error": problem, "retry_in": delay})
            await asyncio.sleep(delay)
            attempt += 1

    async def run_info(self) -> RunInfo:
        response = await self._request("GET", "")
        return RunInfo.model_validate_json(response.content)

    async def next_turn(self, wait: float, *, retry_seconds: float | None = None) -> Turn | None:
        """The next turn, or None when none came within `wait` seconds (204)."""
        wait = max(0, int(wait))
        response = await self._request(
            "GET", "/turns/next", params={"wait": wait}, timeout=wait + 30.0, retry_seconds=retry_seconds
        )
        if response.status_code == 204:
            return None
        return Turn.model_validate_json(response.content)

    async def post_events(self, turn_id: str, events: Sequence[Event]) -> None:
        for start in range(0, len(events), MAX_BATCH):
            batch = EventBatch(events=list(events[start : start + MAX_BATCH]))
            await self._request("POST", f"/turns/{turn_id}/events", json=batch.wire())

    async def report_session(self, session_id: str | None) -> None:
        await self._request("POST", "/session", json=SessionReport(session_id=session_id).model_dump(by_alias=True))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, call_id: str | None = None, timeout: float = 120.0
    ) -> ToolResult:
        """A tool call. With `call_id` it is idempotent (the gateway finds a retried call by it) and is
        retried like the other calls; without, only when it cannot have reached the gateway."""
        response = await self._request(
            "POST",
            f"/tools/{name}",
            json=ToolCall(arguments=arguments, call_id=call_id).wire(),
            timeout=timeout,
            idempotent=call_id is not None,
        )
        return ToolResult.model_validate_json(response.content)

    async def ask_permission(self, ask: PermissionRequest, wait: float) -> PermissionAnswer:
        """The tool policy's answer for a tool use; 'pending' after `wait` seconds (ask again). Idempotent
        by the tool use id, so it is retried through a gateway restart like every other call."""
        response = await self._request(
            "POST", "/permissions", json=ask.wire(), params={"wait": int(wait)}, timeout=wait + 30.0
        )
        return PermissionAnswer.model_validate_json(response.content)


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    status = response.status_code
    if status == 401:
        raise UnauthorizedError(status, _message(response))
    if status == 410:
        raise RunOverError(status, _message(response))
    raise RunApiError(status, _message(response))
