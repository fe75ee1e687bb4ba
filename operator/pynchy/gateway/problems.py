"""Errors of an HTTP API, raised anywhere in a handler and rendered once by the API's middleware.

app = web.Application(middlewares=[problems(api_error_body)])
...
raise RequestError(404, f"turn {turn_id} was not delivered to this run")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from pynchy.api.validation import format_errors
from pynchy.errors import PynchyError
from pynchy_agent.protocol import ApiError

M = TypeVar("M", bound=BaseModel)
Render = Callable[[int, str], dict[str, Any]]  # (status, message) → JSON body
Handler = Callable[[web.Request], Any]


class RequestError(PynchyError):
    """An answer other than success, with a message that says what to fix."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def api_error_body(status: int, message: str) -> dict[str, Any]:
    """Pynchy's own APIs (run API, local chat): `{"error": "..."}`."""
    return ApiError(error=message).wire()


def problems(render: Render) -> Any:
    """Middleware: a RequestError, or aiohttp's own 4xx/5xx (no such route, wrong method), becomes a
    JSON body in the API's format."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except RequestError as exc:
            return web.json_response(render(exc.status, exc.message), status=exc.status, headers=exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response(render(exc.status, exc.reason), status=exc.status)

    return middleware


def parse(model: type[M], raw: bytes | str, what: str) -> M:
    """A request body (JSON) as `model`, or a 422 that lists what is wrong with it."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestError(422, f"invalid {what}: " + "; ".join(format_errors(exc))) from None


def parse_query(model: type[M], request: web.Request) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise RequestError(422, "invalid query: " + "; ".join(format_errors(exc))) from None


def bearer(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, if there is one."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    return token or None
