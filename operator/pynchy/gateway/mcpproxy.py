"""The MCP proxy: a Group's MCP servers are reached through the gateway, never from the agent pod.

The pod calls `<gateway>/mcp/<server>` with its run token (`httpapi/mcp_api.py` authenticates it and
asks the gate about tool calls); this module finds nothing out about callers: it adds the headers of
the server's headersSecretRef (read here, so no MCP credential enters the pod), forwards a few MCP
request headers and the body, and streams the upstream's answer back as it arrives.

* Streamable HTTP (transport `http`): JSON-RPC POSTs to the server's URL, each answered by JSON or
  by an event stream; a GET opens the server's own event stream.
* SSE (transport `sse`): a GET of the server's URL opens an event stream whose first event,
  `endpoint`, names where messages are POSTed. That URI is rewritten to a path under the proxy
  (`/mcp/<server>/<path on the upstream's origin>`), and such paths go back to the upstream's
  origin. Answers come on the stream, so a refused call is answered there: `inject` writes an
  event between two upstream events, never inside one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import mcp_types
from aiohttp import web
from multidict import MultiMapping
from pydantic import ValidationError
from yarl import URL

from pynchy.api.group import McpServer
from pynchy.gateway.problems import RequestError
from pynchy.gateway.tools import Caller
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy_agent.protocol import MCP_PROXY_PREFIX

log = get_logger(__name__)

# The only request headers forwarded: what MCP itself needs (Mcp-Method, Mcp-Name and Mcp-Param-*
# are the 2026-07-28 protocol's routing headers, which its servers check against the body). Never
# the caller's Authorization (its run token) or cookies; the Secret's headers are added instead.
FORWARD_REQUEST = frozenset(
    {"content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id", "mcp-method", "mcp-name"}
)
FORWARD_REQUEST_PREFIX = "mcp-param-"
FORWARD_RESPONSE = ("Content-Type", "Mcp-Session-Id", "Mcp-Protocol-Version")
SECRET_TTL_SECONDS = 15.0  # a rotated Secret is used within this long
CONNECT_TIMEOUT_SECONDS = 10.0  # no total timeout: event streams stay open for hours
MAX_EVENT_BYTES = 8 << 20
BATCHED_CALL = "batched tools/call is not supported by the gateway: send each tools/call as a request of its own"


class GateVerdict(Protocol):
    @property
    def allowed(self) -> bool: ...
    @property
    def decided_by(self) -> str: ...
    @property
    def reason(self) -> str: ...


class Gate(Protocol):
    """Decides a tool call before it is forwarded (gateway/toolgate.py's ToolGate)."""

    async def check(
        self, caller: Caller, run_uid: str, tool: str, arguments: dict[str, Any], *, call_key: str
    ) -> GateVerdict: ...


# -- what a request carries --------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: int | str
    name: str
    arguments: dict[str, Any]


def tool_call(body: bytes) -> ToolCall | None:
    """The tools/call a POSTed JSON-RPC body holds; None for any other message (forwarded as it is).
    Refused (400) when it cannot be checked: a body that is not JSON, a batch holding a tools/call,
    a tools/call that does not parse (forwarded, each could run a tool the gate never saw)."""
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        raise RequestError(400, "the request body is not JSON (MCP messages are JSON-RPC)") from None
    if isinstance(data, list):
        if any(isinstance(m, dict) and m.get("method") == "tools/call" for m in data):
            raise RequestError(400, BATCHED_CALL)
        return None
    if not isinstance(data, dict) or data.get("method") != "tools/call":
        return None
    try:
        request = mcp_types.JSONRPCRequest.model_validate(data)
        params = mcp_types.CallToolRequestParams.model_validate(request.params or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(root)"
        raise RequestError(400, f"invalid tools/call request: {where}: {first['msg']}") from None
    return ToolCall(request.id, params.name, params.arguments or {})


def refusal(call_id: int | str, reason: str) -> dict[str, Any]:
    """The JSON-RPC answer to a refused tools/call: a tool result with isError, which the model reads."""
    return {
        "jsonrpc": "2.0",
        "id": call_id,
        "result": {"content": [{"type": "text", "text": reason}], "isError": True},
    }


def sse_session(query: MultiMapping[str]) -> str | None:
    """The session of an SSE transport's message URI (the MCP SDKs name it session_id or sessionId)."""
    return query.get("session_id") or query.get("sessionId") or None


def request_headers(request: web.Request, secret: dict[str, str]) -> dict[str, str]:
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() in FORWARD_REQUEST or k.lower().startswith(FORWARD_REQUEST_PREFIX)
    }
    headers["Accept-Encoding"] = "identity"  # events pass through as they come, not in compressed blocks
    headers.update(secret)
    return headers


def upstream_url(server: McpServer, tail: str | None, raw_query: str) -> URL:
    """server.url for the proxy's base path; `tail` (a path under it) on the upstream's origin."""
    url = server.url if tail is None else str(URL(server.url).origin().with_path("/" + tail))
    if raw_query:
        url += ("&" if "?" in url else "?") + raw_query
    return URL(url, encoded=True)


def proxy_endpoint(server: McpServer, data: str, prefix: str) -> tuple[str, str | None]:
    """An SSE `endpoint` event's URI as a path under the proxy (no scheme or host: the client resolves
    it against the URL it connected to), and the session it names."""
    target = urlsplit(urljoin(server.url, data.strip()))
    origin = urlsplit(server.url)
    if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
        log.warning("MCP endpoint on another origin; its path is used on the server's", server=server.name)
    path = f"{prefix}/{server.name}{target.path or '/'}" + (f"?{target.query}" if target.query else "")
    query = parse_qs(target.query)
    sessions = query.get("session_id") or query.get("sessionId") or []
    return path, sessions[0] if sessions else None


# -- server-sent events ------------------------------------------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")


class SseSplitter:
    """Whole server-sent events out of a byte stream, each with the blank line that ends it."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._line = 0  # where the line being read starts

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        events: list[bytes] = []
        start = 0  # of the event being read
        for m in _LINE_END.finditer(self._buffer, self._line):
            if m.group() == b"\r" and m.end() == len(self._buffer):
                break  # \r\n split across chunks: wait for the next one
            if m.start() == self._line:  # an empty line ends the event
                events.append(bytes(self._buffer[start : m.end()]))
                start = m.end()
            self._line = m.end()
        del self._buffer[:start]
        self._line -= start
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise ValueError(f"an event of more than {MAX_EVENT_BYTES} bytes")
        return events


def sse_event(event: bytes) -> tuple[str, str]:
    """(type, data) of one event."""
    kind, data = "message", []
    for line in _TEXT_LINE_END.split(event.decode("utf-8", "replace")):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    return kind, "\n".join(data)


def sse_bytes(kind: str, data: str) -> bytes:
    return f"event: {kind}\r\ndata: {data}\r\n\r\n".encode()


# -- Secrets -----------------------------------------------------------------------------------


def secret_headers(secret: dict[str, Any], name: str) -> dict[str, str]:
    headers = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            text = base64.b64decode(value, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise RequestError(502, f"Secret {name!r} key {key!r} is not UTF-8 text (a header value)") from None
        if "\r" in text or "\n" in text:
            raise RequestError(502, f"Secret {name!r} key {key!r} holds a line break; a header value cannot")
        headers[key] = text
    return headers


class SecretHeaders:
    """The headers of the MCP servers' headersSecretRef Secrets, read through the API server and kept
    `ttl` seconds (entries older than that go on the next read of another Secret)."""

    def __init__(self, api: KubeApi, ttl: float = SECRET_TTL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._api = api
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}

    async def get(self, namespace: str, server: McpServer, group: str | None = None) -> dict[str, str]:
        """`group` (the Group whose server it is) only makes a refusal's message name its Role."""
        ref = server.headers_secret_ref
        if ref is None:
            return {}
        key = (namespace, ref.name)
        hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        what = f"MCP server {server.name!r} takes its headers from it (headersSecretRef)"
        try:
            secret = await self._api.get("Secret", namespace, ref.name)
        except KubeError as exc:
            hint = ""
            if exc.status == 403:
                role = f"pynchy-mcp-{group}" if group else "pynchy-mcp-<group>"
                hint = (
                    f"; the gateway may read only the Secrets its Group's Role {role} in namespace {namespace!r} "
                    f"names: check that the Role exists and lists {ref.name!r}, and the Group's status (the "
                    "operator writes the Role when it reconciles the Group, and says there if it could not)"
                )
            raise RequestError(
                502, f"Secret {ref.name!r} in namespace {namespace!r} cannot be read: {exc}; {what}{hint}"
            ) from None
        if secret is None:
            raise RequestError(502, f"Secret {ref.name!r} does not exist in namespace {namespace!r}; {what}")
        headers = secret_headers(secret, ref.name)
        now = self._clock()
        self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self._ttl}
        self._cache[key] = (now, headers)
        return headers


# -- forwarding --------------------------------------------------------------------------------

Owner = tuple[str, str, str]  # namespace, run, server: whose SSE streams an injection may reach


@dataclass
class Outcome:
    """What a forwarded request came to, kept as it happens (for the audit, even if the caller leaves)."""

    status: int | None = None  # the upstream's, once it answered
    answered: float | None = None  # time.monotonic() then


@dataclass(eq=False)
class _Stream:
    response: web.StreamResponse
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: bool = True


class McpProxy:
    def __init__(
        self,
        api: KubeApi,
        *,
        prefix: str = MCP_PROXY_PREFIX,
        secret_ttl: float = SECRET_TTL_SECONDS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secrets = SecretHeaders(api, secret_ttl, clock)
        self.prefix = prefix  # where the sub-app is mounted: rewritten endpoints point there
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._streams: dict[tuple[str, str, str, str], _Stream] = {}  # Owner + SSE session → its open GET
        self._streaming: set[aiohttp.ClientResponse] = set()  # open GETs: event streams, for release()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    def release(self) -> None:
        """End the event streams still open (at shutdown; MCP clients reconnect). Answers to POSTs are
        not cut off: they end with their call."""
        for upstream in list(self._streaming):
            upstream.close()

    async def close(self) -> None:
        self.release()
        if self._session is not None:
            await self._session.close()

    async def forward(
        self,
        request: web.Request,
        server: McpServer,
        tail: str | None,
        body: bytes,
        headers: dict[str, str],
        owner: Owner,
        outcome: Outcome | None = None,
    ) -> web.StreamResponse:
        """The upstream's answer, streamed to the caller until it ends."""
        assert self._session is not None, "start() first"
        url = upstream_url(server, tail, request.rel_url.raw_query_string)
        try:
            upstream = await self._session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("MCP upstream unreachable", server=server.name, url=server.url, error=repr(exc))
            reason = str(exc) or type(exc).__name__
            raise RequestError(502, f"MCP server {server.name!r} cannot be reached at {server.url}: {reason}") from None
        if outcome is not None:
            outcome.status, outcome.answered = upstream.status, time.monotonic()
        if request.method == "GET":
            self._streaming.add(upstream)
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name in FORWARD_RESPONSE:
                for value in upstream.headers.getall(name, ()):
                    response.headers.add(name, value)
            events = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
            try:
                await response.prepare(request)
                if server.transport == "sse" and tail is None and request.method == "GET" and events:
                    await self._relay_events(upstream, response, server, owner)
                else:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                log.info("MCP caller went away", server=server.name)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("MCP upstream stream broke", server=server.name, error=repr(exc))
            return response
        finally:
            self._streaming.discard(upstream)
            if upstream.content.at_eof():
                upstream.release()  # read to the end: the connection goes back to the pool for the next call
            else:
                upstream.close()  # cut off (the caller left, a stream ended at shutdown): not reusable

    async def _relay_events(
        self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, server: McpServer, owner: Owner
    ) -> None:
        stream = _Stream(response)
        splitter = SseSplitter()
        key: tuple[str, str, str, str] | None = None
        endpoint_seen = False
        try:
            async for chunk in upstream.content.iter_any():
                for event in splitter.feed(chunk):
                    if not endpoint_seen:
                        kind, data = sse_event(event)
                        if kind == "endpoint":
                            endpoint_seen = True
                            path, session = proxy_endpoint(server, data, self.prefix)
                            event = sse_bytes("endpoint", path)
                            if session:
                                key = (*owner, session)
                                self._streams[key] = stream
                    async with stream.lock:
                        await response.write(event)
        finally:
            async with stream.lock:  # an injection under way finishes first; none follows
                stream.open = False
            if key is not None and self._streams.get(key) is stream:
                del self._streams[key]

    async def inject(self, owner: Owner, session: str | None, message: dict[str, Any]) -> bool:
        """Write `message` as an event of the open SSE stream of `session` (the caller's own), between
        two upstream events; False when there is no such stream."""
        stream = self._streams.get((*owner, session)) if session else None
        if stream is None:
            return False
        event = sse_bytes("message", json.dumps(message, separators=(",", ":")))
        async with stream.lock:
            if not stream.open:
                return False
            try:
                await stream.response.write(event)
            except (ConnectionError, RuntimeError):
                return False
        return True
