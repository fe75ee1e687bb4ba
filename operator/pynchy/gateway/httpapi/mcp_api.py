"""The MCP proxy's sub-app: agent pods reach their Group's MCP servers at `<gateway>/mcp/<server>`
with their run token. A tools/call is decided by the gate before anything is forwarded, and audited
once it is done; everything else is forwarded as it is (`gateway/mcpproxy.py`). Errors are JSON-RPC
error bodies, which MCP clients show."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import mcp_types
from aiohttp import web

from pynchy.api.group import McpServer
from pynchy.gateway.db import Db
from pynchy.gateway.httpapi.runauth import RUN_CONTEXT, RunAuth, RunContext, live_run_middleware
from pynchy.gateway.mcpproxy import (
    Gate,
    GateVerdict,
    McpProxy,
    Outcome,
    ToolCall,
    refusal,
    request_headers,
    sse_session,
    tool_call,
)
from pynchy.gateway.problems import RequestError, bearer, problems
from pynchy.logs import get_logger
from pynchy.store import records
from pynchy_agent.toolpolicy import arguments_digest

log = get_logger(__name__)
METHODS = ("GET", "POST", "DELETE")


def jsonrpc_error_body(status: int, message: str) -> dict[str, Any]:
    code = mcp_types.INVALID_REQUEST if status < 500 else mcp_types.INTERNAL_ERROR
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}


def find_server(ctx: RunContext, name: str) -> McpServer:
    servers = ctx.group.spec.agent.mcp_servers if ctx.group is not None else []
    for server in servers:
        if server.name == name:
            return server
    known = ", ".join(s.name for s in servers) or "none"
    raise RequestError(404, f"Group {ctx.group_name} has no MCP server named {name!r} (spec.agent.mcpServers: {known})")


class McpApi:
    def __init__(self, db: Db, proxy: McpProxy, gate: Gate) -> None:
        self.db = db
        self.proxy = proxy
        self.gate = gate

    def app(self, auth: RunAuth) -> web.Application:
        """The sub-app, to mount at MCP_PROXY_PREFIX."""
        app = web.Application(middlewares=[problems(jsonrpc_error_body), live_run_middleware(auth, bearer)])
        for method in METHODS:
            app.router.add_route(method, "/{server}", self.handle)
            app.router.add_route(method, "/{server}/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        ctx = request[RUN_CONTEXT]
        server = find_server(ctx, request.match_info["server"])
        tail = request.match_info.get("tail")
        headers = request_headers(request, await self.proxy.secrets.get(ctx.namespace, server, group=ctx.group_name))
        body = await request.read()
        call = tool_call(body) if request.method == "POST" else None
        owner = (ctx.namespace, ctx.name, server.name)
        if call is None:
            return await self.proxy.forward(request, server, tail, body, headers, owner)

        tool = f"{server.name}/{call.name}"
        # Streamable HTTP names its session in a header, the SSE transport in the message URI.
        session = request.headers.get("Mcp-Session-Id") or sse_session(request.query)
        call_key = f"mcp:{server.name}:{session or '-'}:{call.id}"
        verdict = await self.gate.check(ctx.caller, ctx.claims.uid, tool, call.arguments, call_key=call_key)
        outcome = Outcome()
        try:
            if not verdict.allowed:
                log.info("MCP tool call refused", run=ctx.name, tool=tool, decided_by=verdict.decided_by)
                return await self._refuse(server, owner, session, call, verdict)
            return await self.proxy.forward(request, server, tail, body, headers, owner, outcome)
        finally:
            # Streamable HTTP: until the answer has been streamed; SSE: until the upstream took the POST
            # (the answer comes on the event stream).
            sse_answered = outcome.answered if server.transport == "sse" else None
            done = sse_answered if sse_answered is not None else time.monotonic()
            # Shielded: a caller that went away does not leave the call unaudited.
            await asyncio.shield(self._audit(ctx, server, call, verdict, done - started, outcome.status))

    async def _refuse(
        self, server: McpServer, owner: tuple[str, str, str], session: str | None, call: ToolCall, verdict: GateVerdict
    ) -> web.Response:
        answer = refusal(call.id, verdict.reason)
        if server.transport == "http":
            return web.json_response(answer)
        # SSE transport: POSTs are accepted, their answers come on the session's event stream.
        if not await self.proxy.inject(owner, session, answer):
            raise RequestError(404, f"MCP session {session!r} of server {server.name!r} has no open event stream here")
        return web.Response(status=202, text="Accepted")

    async def _audit(
        self,
        ctx: RunContext,
        server: McpServer,
        call: ToolCall,
        verdict: GateVerdict,
        seconds: float,
        status: int | None,
    ) -> None:
        detail = {
            "server": server.name,
            "tool": call.name,
            "argsDigest": arguments_digest(call.arguments),
            "decision": "allow" if verdict.allowed else "deny",
            "decidedBy": verdict.decided_by,
            "durationMs": round(seconds * 1000),
            "status": status,
        }
        try:
            await self.db.call(
                records.audit,
                namespace=ctx.namespace,
                group=ctx.group_name,
                run=ctx.name,
                action=f"mcp:{server.name}/{call.name}"[:64],
                allowed=verdict.allowed,
                detail=json.dumps(detail, separators=(",", ":")),
            )
        except Exception:
            log.exception("MCP tool call not audited", run=ctx.name, tool=f"{server.name}/{call.name}")
