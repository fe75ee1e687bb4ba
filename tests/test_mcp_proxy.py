"""The gateway's MCP proxy between the real MCP SDK's client and a real MCP server (mcp's MCPServer on
uvicorn), over both transports: the run token in, the Secret's header out, refused tool calls
answered by the gateway (never run upstream) and every call audited. The gate is a policy-based one
(pynchy_agent.toolpolicy); the Kubernetes API holds only the Secrets, as in test_gateway_http."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
import uvicorn
from aiohttp import web
from aiohttp.test_utils import TestServer
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from pynchy.api.group import McpServer
from pynchy.gateway.agentruns import AgentRuns, RunIndex
from pynchy.gateway.db import Db
from pynchy.gateway.httpapi.mcp_api import McpApi
from pynchy.gateway.httpapi.runauth import RunAuth
from pynchy.gateway.mcpproxy import McpProxy, SecretHeaders, SseSplitter
from pynchy.gateway.problems import RequestError
from pynchy.gateway.routing import Directory
from pynchy.gateway.tools import Caller
from pynchy.kube import official
from pynchy.kube.api import KubeApi
from pynchy.kube.controlplane import ControlPlane
from pynchy.store import records
from pynchy_agent.protocol import MCP_PROXY_PREFIX
from pynchy_agent.toolpolicy import Policy, arguments_digest
from test_gateway_http import KEY, NS, group_obj, run_obj, token

API_KEY = "upstream-api-key-do-not-leak"
REASON = "wipe is denied by the Group's tool policy"


@dataclass(frozen=True)
class Verdict:  # the shape of gateway/toolgate.py's Verdict
    allowed: bool
    decided_by: str
    reason: str


@dataclass
class PolicyGate:
    policy: Policy
    keys: list[str] = field(default_factory=list)

    async def check(
        self, caller: Caller, run_uid: str, tool: str, arguments: dict[str, Any], *, call_key: str
    ) -> Verdict:
        assert (caller.run, run_uid) == ("r1", "uid-r1")
        self.keys.append(call_key)
        if self.policy.action(tool) == "deny":
            return Verdict(False, "policy", REASON)
        return Verdict(True, "policy", "")


class SecretKube:
    """The Kubernetes API as the proxy and RunAuth read it: Secrets by name, no AgentRun beyond the index."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {}

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        data = self.secrets.get(name) if kind == "Secret" and namespace == NS else None
        if data is None:
            return None
        return {"kind": "Secret", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def upstream_app(transport: str, seen: list[dict[str, str]], ran: list[str]) -> Any:
    """A real MCP server with two tools; every HTTP request's headers are recorded."""
    server = MCPServer("upstream")

    @server.tool()
    def echo(text: str) -> str:
        ran.append("echo")
        return f"echo: {text}"

    @server.tool()
    def wipe() -> str:
        ran.append("wipe")
        return "wiped"

    app = server.streamable_http_app() if transport == "http" else server.sse_app()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    return recording


@asynccontextmanager
async def uvicorn_on_loopback(app: Any) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn has started
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class World:
    proxy_url: str  # <gateway>/mcp
    db: Db
    gate: PolicyGate
    kube: SecretKube
    seen: dict[str, list[dict[str, str]]]
    ran: list[str]
    clock: list[float]

    async def audit(self, count: int) -> list[dict[str, Any]]:
        """The audit rows once there are `count` (the last is written as its call's handler ends)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(rows := await self.db.call(records.audit_log, NS)) < count and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return [{"action": r.action, "allowed": r.allowed, **json.loads(r.detail)} for r in rows]


Scenario = Callable[[World], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        seen: dict[str, list[dict[str, str]]] = {"http": [], "sse": []}
        ran: list[str] = []
        async with AsyncExitStack() as stack:
            http_port = await stack.enter_async_context(uvicorn_on_loopback(upstream_app("http", seen["http"], ran)))
            sse_port = await stack.enter_async_context(uvicorn_on_loopback(upstream_app("sse", seen["sse"], ran)))
            servers = [
                {"name": "notes", "url": f"http://127.0.0.1:{http_port}/mcp", "headersSecretRef": {"name": "notes"}},
                {"name": "wiki", "transport": "sse", "url": f"http://127.0.0.1:{sse_port}/sse"},
                {"name": "locked", "url": f"http://127.0.0.1:{http_port}/mcp", "headersSecretRef": {"name": "gone"}},
                {"name": "down", "url": "http://127.0.0.1:9/mcp"},
            ]
            group = group_obj()
            directory, index = Directory(), RunIndex()
            directory.on_event("ADDED", {**group, "spec": {**group["spec"], "agent": {"mcpServers": servers}}})
            index.on_event("ADDED", run_obj("r1"))
            kube = SecretKube()
            kube.secrets["notes"] = {"X-Api-Key": API_KEY}
            db = Db(f"sqlite:///{tmp_path}/gateway.db")
            stack.callback(db.close)
            clock = [0.0]
            proxy = McpProxy(kube, clock=lambda: clock[0])  # type: ignore[arg-type]  # SecretKube has get()
            await proxy.start()
            stack.push_async_callback(proxy.close)
            gate = PolicyGate(Policy.of({"rules": [{"tools": ["*/wipe"], "action": "deny"}]}))
            auth = RunAuth(KEY, AgentRuns(kube, directory, index), directory)  # type: ignore[arg-type]
            app = web.Application()
            app.add_subapp(MCP_PROXY_PREFIX, McpApi(db, proxy, gate).app(auth))
            server = await stack.enter_async_context(TestServer(app, host="127.0.0.1"))
            proxy_url = str(server.make_url(MCP_PROXY_PREFIX))
            await scenario(World(proxy_url, db, gate, kube, seen, ran, clock))

    asyncio.run(main())


def run_token_headers() -> dict[str, str]:
    """A fresh token per use: one made at import would expire before a long suite reaches these tests."""
    return {"Authorization": f"Bearer {token('r1')}"}


@asynccontextmanager
async def mcp_session(world: World, server: str, transport: str) -> AsyncIterator[ClientSession]:
    url = f"{world.proxy_url}/{server}"
    async with AsyncExitStack() as stack:
        if transport == "http":
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=run_token_headers()))
            read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        else:
            read, write = await stack.enter_async_context(sse_client(url, headers=run_token_headers()))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def tools_and_calls(world: World, server: str, transport: str) -> None:
    async with mcp_session(world, server, transport) as session:
        listed = await session.list_tools()
        assert sorted(t.name for t in listed.tools) == ["echo", "wipe"]
        echoed = await session.call_tool("echo", {"text": "hi"})
        assert not echoed.is_error
        assert echoed.content[0].text == "echo: hi"  # type: ignore[union-attr]
        refused = await session.call_tool("wipe", {})
        assert refused.is_error
        assert refused.content[0].text == REASON  # type: ignore[union-attr]
        # The session goes on after a refusal.
        again = await session.call_tool("echo", {"text": "still here"})
        assert again.content[0].text == "echo: still here"  # type: ignore[union-attr]
    assert world.ran == ["echo", "echo"]  # wipe never ran upstream
    # No bearer token (the run token is the only one the client sent) reached the server.
    assert world.seen[transport]
    assert all("Bearer" not in json.dumps(h) for h in world.seen[transport])
    assert all("authorization" not in h for h in world.seen[transport])
    audit = await world.audit(3)
    assert [(a["action"], a["allowed"], a["decision"]) for a in audit] == [
        (f"mcp:{server}/echo", True, "allow"),
        (f"mcp:{server}/wipe", False, "deny"),
        (f"mcp:{server}/echo", True, "allow"),
    ]
    assert audit[0]["argsDigest"] == arguments_digest({"text": "hi"})
    assert audit[1]["argsDigest"] == arguments_digest({})
    forwarded_status = 200 if transport == "http" else 202
    assert [a["status"] for a in audit] == [forwarded_status, None, forwarded_status]
    assert {a["server"] for a in audit} == {server}
    assert [a["tool"] for a in audit] == ["echo", "wipe", "echo"]
    assert all(a["decidedBy"] == "policy" and a["durationMs"] >= 0 for a in audit)
    # The gate's key names the server, the MCP session and the JSON-RPC id.
    assert len(world.gate.keys) == 3
    assert len(set(world.gate.keys)) == 3
    assert all(k.startswith(f"mcp:{server}:") and not k.startswith(f"mcp:{server}:-:") for k in world.gate.keys)


def test_streamable_http_through_the_proxy(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        await tools_and_calls(world, "notes", "http")
        assert all(h.get("x-api-key") == API_KEY for h in world.seen["http"])
        # A rotated Secret is used once the cache has expired.
        world.kube.secrets["notes"] = {"X-Api-Key": "rotated-key"}
        world.clock[0] += 16
        async with mcp_session(world, "notes", "http") as session:
            await session.list_tools()
        assert world.seen["http"][-1].get("x-api-key") == "rotated-key"

    run(tmp_path, scenario)


def test_sse_transport_through_the_proxy(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        await tools_and_calls(world, "wiki", "sse")
        assert all("x-api-key" not in h for h in world.seen["sse"])  # wiki has no headersSecretRef

    run(tmp_path, scenario)


def test_refusals_of_the_proxy_itself(tmp_path: Path) -> None:
    async def scenario(world: World) -> None:
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        headers = {"Accept": "application/json, text/event-stream"}

        async def post(path: str, body: Any, auth: dict[str, str] | None) -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{world.proxy_url}/{path}", json=body, headers={**headers, **(auth or {})}) as r,
            ):
                data = await r.json(content_type=None)
                return r.status, str(data["error"]["message"])

        status, message = await post("notes", init, None)
        assert (status, message) == (401, "missing run token (Authorization: Bearer <token>)")
        status, _ = await post("notes", init, {"Authorization": "Bearer forged"})
        assert status == 401
        status, message = await post("nope", init, run_token_headers())
        assert status == 404
        assert "no MCP server named 'nope'" in message
        assert "notes, wiki, locked, down" in message
        status, message = await post("locked", init, run_token_headers())
        assert status == 502
        assert "Secret 'gone' does not exist" in message
        status, message = await post("down", init, run_token_headers())
        assert status == 502
        assert "MCP server 'down' cannot be reached" in message
        batch = [{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "wipe"}}]
        status, message = await post("notes", batch, run_token_headers())
        assert status == 400
        assert "batched tools/call is not supported by the gateway" in message
        assert world.ran == []
        assert world.gate.keys == []
        assert all(json.dumps(h).count("Bearer") == 0 for h in world.seen["http"])

    run(tmp_path, scenario)


def test_sse_events_come_out_whole() -> None:
    splitter = SseSplitter()
    stream = b'event: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n: ping\n\ndata: {"a":\r\ndata: 1}\r\r'
    events = [e for i in range(len(stream)) for e in splitter.feed(stream[i : i + 1])]
    assert events == [
        b"event: endpoint\r\ndata: /messages/?session_id=1\r\n\r\n",
        b": ping\n\n",
    ]
    # The last event ends in \r\r: its second \r might start a \r\n, so it is held until more comes.
    assert splitter.feed(b"data: next\n\n") == [b'data: {"a":\r\ndata: 1}\r\r', b"data: next\n\n"]


def test_the_gateway_reads_header_secrets_with_its_own_rbac(
    control_plane: ControlPlane, gateway_kubeconfig: Path, namespace: str
) -> None:
    """Through the Role pynchy-mcp-<group> the operator builds (applied here without the operator, for a
    real Group): the Secrets the Group names are read (or missing), any other is refused."""
    from pynchy.api.resources import Group
    from pynchy.operator.build.group import mcp_secrets_access
    from pynchy.operator.settings import OperatorSettings

    control_plane.kubectl("-n", namespace, "create", "secret", "generic", "notes", "--from-literal=X-Api-Key=k1")
    control_plane.kubectl("-n", namespace, "create", "secret", "generic", "other", "--from-literal=X-Api-Key=k2")
    ref = {"name": "notes", "url": "http://mcp.test/mcp", "headersSecretRef": {"name": "notes"}}
    gone = {**ref, "name": "gone", "headersSecretRef": {"name": "gone"}}
    manifest = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "scribe", "namespace": namespace},
        "spec": {"channels": [{"local": {"name": "scribe"}}], "agent": {"mcpServers": [ref, gone]}},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    raw = json.loads(control_plane.kubectl("-n", namespace, "get", "group", "scribe", "-o", "json").stdout)
    settings = OperatorSettings(run_token_key=KEY, gateway_service_account="pynchy-system/pynchy-gateway")
    access = mcp_secrets_access(Group.from_k8s(raw), raw, settings)
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": access}))

    async def main() -> None:
        api = KubeApi(official.new_client_from_config(str(gateway_kubeconfig)))
        try:
            secrets = SecretHeaders(api)
            notes = McpServer.model_validate(ref)
            for _ in range(100):  # the authorizer sees a new RoleBinding within moments
                try:
                    assert await secrets.get(namespace, notes, group="scribe") == {"X-Api-Key": "k1"}
                    break
                except RequestError:
                    await asyncio.sleep(0.1)
            assert await secrets.get(namespace, notes, group="scribe") == {"X-Api-Key": "k1"}
            with pytest.raises(RequestError, match=f"Secret 'gone' does not exist in namespace '{namespace}'"):
                await secrets.get(namespace, McpServer.model_validate(gone), group="scribe")
            other = McpServer.model_validate({**ref, "name": "other", "headersSecretRef": {"name": "other"}})
            with pytest.raises(RequestError, match=r"403 Forbidden.*Role pynchy-mcp-scribe"):
                await secrets.get(namespace, other, group="scribe")
        finally:
            api.close()

    asyncio.run(main())
