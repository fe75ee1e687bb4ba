"""The model proxy: agent pods call it as their Anthropic API; it swaps their run token for the
real credential, streams the upstream response back unchanged, and meters usage per Group."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from pynchy.aio import TaskSet
from pynchy.gateway.usage import ModelUsage, SseUsage, usage_from_json
from pynchy.logs import get_logger

log = get_logger(__name__)

# Never forwarded: hop-by-hop headers, and every credential the caller sent.
DROP_REQUEST = {
    "host",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-api-key",
    "authorization",
    "cookie",
    # Ask for identity encoding so usage can be read from the bytes passing through.
    "accept-encoding",
}
DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "set-cookie"}
Meter = Callable[[ModelUsage], Awaitable[None]]

NO_CREDENTIAL = (
    "Pynchy has no model credential: set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN "
    "(PYNCHY_ANTHROPIC_API_KEY / PYNCHY_ANTHROPIC_AUTH_TOKEN for the gateway) and restart it."
)


class ModelProxy:
    def __init__(self, upstream: str, api_key: str | None, auth_token: str | None) -> None:
        self.upstream = upstream.rstrip("/")
        self._credential: dict[str, str] | None = None
        if api_key:
            self._credential = {"x-api-key": api_key}
        elif auth_token:
            self._credential = {"authorization": f"Bearer {auth_token}"}
        self._session: aiohttp.ClientSession | None = None
        self._streams = TaskSet()

    async def start(self) -> None:
        # No total timeout: long generations stream for minutes; connect and read gaps are bounded.
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=600)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        await self._streams.drain(30)  # answers still being read (and metered)
        await self._streams.close()
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request, tail: str, meter: Meter) -> web.StreamResponse:
        assert self._session is not None
        if self._credential is None:
            # 403, not 401: Claude Code retries a 401 with backoff for minutes, while a 403 fails the
            # turn at once with this message, which reaches the person, so it says what to do.
            return web.json_response(
                {"type": "error", "error": {"type": "permission_error", "message": NO_CREDENTIAL}}, status=403
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP_REQUEST}
        headers.update(self._credential)
        url = f"{self.upstream}/{tail}"
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, url, params=request.query, data=body, headers=headers, allow_redirects=False
            )
        except aiohttp.ClientError as exc:
            log.warning("model upstream unreachable", url=url, error=str(exc))
            return web.json_response(
                {"type": "error", "error": {"type": "api_error", "message": f"model upstream unreachable: {exc}"}},
                status=502,
            )
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in DROP_RESPONSE:
                response.headers.add(key, value)
        # Its own task: if the pod goes away (and aiohttp cancels this handler) the upstream still
        # bills the whole answer, so the stream is read to its end and metered all the same.
        await asyncio.shield(self._streams.spawn(self._stream(request, upstream, response, url, meter)))
        return response

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        url: str,
        meter: Meter,
    ) -> None:
        async with upstream:
            streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")
            sse = SseUsage() if streaming else None
            collected = bytearray()
            caller_gone = False
            try:
                await response.prepare(request)
            except (ConnectionError, RuntimeError):
                caller_gone = True
            try:
                async for chunk in upstream.content.iter_any():
                    if sse is not None:
                        sse.feed(chunk)
                    elif len(collected) < 4 << 20:
                        collected += chunk
                    if not caller_gone:
                        try:
                            await response.write(chunk)
                        except (ConnectionError, RuntimeError):
                            caller_gone = True
                            log.info("model caller disconnected; reading the rest for its usage", url=url)
                if not caller_gone:
                    await response.write_eof()
            except aiohttp.ClientError as exc:
                log.warning("model upstream stream broke", url=url, error=str(exc))
            finally:
                usage = sse.usage if sse is not None else usage_from_json(bytes(collected))
                if upstream.status < 400 and not usage.empty:
                    try:
                        await meter(usage)
                    except Exception:
                        log.exception("model usage not recorded", url=url)
