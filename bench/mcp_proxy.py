"""Benchmark: what the gateway's MCP proxy adds to an MCP tool call (run token checked, the header
Secret added, the tool policy asked, the call audited), against the same call straight at the server.

    uv run python bench/mcp_proxy.py [--calls 300]

A real MCP server (tests/mcpserver.py: the `mcp` SDK on uvicorn, its own thread) and the gateway's
real MCP sub-app (RunAuth, McpProxy, ToolGate with a policy that allows the tool, the audit on a
SQLite store) on loopback; the real `mcp` client holds one streamable-HTTP session to each and calls
`list_notes`, alternating (each first every other time). Prints p50/p99 of both and the paired
overhead. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mcpserver import NotesServer
from pynchy.gateway.agentruns import AgentRuns, RunIndex
from pynchy.gateway.approvals import Approvals
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.httpapi.mcp_api import McpApi
from pynchy.gateway.httpapi.runauth import RunAuth
from pynchy.gateway.mcpproxy import McpProxy
from pynchy.gateway.routing import Directory
from pynchy.gateway.toolgate import ToolGate
from pynchy.logs import configure_logging
from pynchy.runtoken import RunClaims, issue
from pynchy.store import records
from pynchy_agent.protocol import MCP_PROXY_PREFIX

KEY = "bench-run-token-key-0123456789abcdef0123456789"
NS, GROUP, RUN = "bench", "scribe", "scribe-run"
WARM_UP = 20


class SecretKube:
    """Kubernetes as the proxy reads it: the one header Secret (the run is known from its watch event)."""

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == "Secret" and name == "notes-creds":
            return {"kind": "Secret", "data": {"X-Api-Key": base64.b64encode(b"bench-key").decode()}}
        return None


def gateway_app(db: Db, server_url: str) -> tuple[web.Application, McpProxy]:
    directory, index = Directory(), RunIndex()
    meta = {"name": GROUP, "namespace": NS, "uid": "uid-g", "creationTimestamp": "2026-12-01T00:00:00Z"}
    agent = {
        "mcpServers": [{"name": "notes", "url": server_url, "headersSecretRef": {"name": "notes-creds"}}],
        "toolPolicy": {"default": "deny", "rules": [{"tools": ["notes/*"], "action": "allow"}]},
    }
    spec = {"channels": [{"local": {"name": GROUP}}], "agent": agent}
    directory.on_event("ADDED", {"apiVersion": "pynchy.dev/v1alpha1", "kind": "Group", "metadata": meta, "spec": spec})
    run_meta = {"name": RUN, "namespace": NS, "uid": "uid-r", "creationTimestamp": "2026-12-01T00:00:00Z"}
    index.on_event(
        "ADDED", {"metadata": run_meta, "spec": {"groupRef": {"name": GROUP}}, "status": {"phase": "Running"}}
    )
    kube = SecretKube()
    runs = AgentRuns(kube, directory, index)  # type: ignore[arg-type]  # SecretKube has the method used
    approvals = Approvals(db, Delivery(db, {}), directory, None, lambda namespace, run: False)
    proxy = McpProxy(kube)  # type: ignore[arg-type]
    app = web.Application()
    api = McpApi(db, proxy, ToolGate(db, directory, approvals))
    app.add_subapp(MCP_PROXY_PREFIX, api.app(RunAuth(KEY, runs, directory)))
    return app, proxy


@asynccontextmanager
async def session_to(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
        read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def call(session: ClientSession) -> float:
    started = time.perf_counter()
    result = await session.call_tool("list_notes", {})
    if result.is_error:
        raise SystemExit(f"the call failed: {result.content}")
    return time.perf_counter() - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pynchy-bench-mcp-") as tmp, NotesServer("http") as notes:
        db = Db(f"sqlite:///{Path(tmp) / 'gateway.db'}")
        app, proxy = gateway_app(db, notes.url)
        await proxy.start()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        gateway = f"http://127.0.0.1:{runner.addresses[0][1]}{MCP_PROXY_PREFIX}/notes"
        claims = RunClaims(NS, RUN, "uid-r", GROUP, int(time.time()) + 3600)
        token = issue(KEY, claims, issued_at=int(time.time()))
        direct: list[float] = []
        proxied: list[float] = []
        try:
            async with (
                session_to(notes.url, {"X-Api-Key": "bench-key"}) as straight,
                session_to(gateway, {"Authorization": f"Bearer {token}"}) as through,
            ):
                for _ in range(WARM_UP):
                    await call(straight)
                    await call(through)
                for i in range(calls):
                    pair = [(straight, direct), (through, proxied)]
                    for session, out in pair if i % 2 == 0 else reversed(pair):
                        out.append(await call(session))
        finally:
            await runner.cleanup()
            await proxy.close()
            audited = len(await db.call(records.audit_log, NS, GROUP))
            db.close()
    if audited != WARM_UP + calls:  # the figures only count if every proxied call was audited
        sys.exit(f"audited {audited} of {WARM_UP + calls} proxied calls")
    over = [p - d for p, d in zip(proxied, direct, strict=True)]
    ms = 1000
    print(f"direct to the MCP server   p50 {pct(direct, 50) * ms:6.2f} ms   p99 {pct(direct, 99) * ms:6.2f} ms", end="")
    print(f"   (n={calls})")
    print(f"through the MCP proxy      p50 {pct(proxied, 50) * ms:6.2f} ms   p99 {pct(proxied, 99) * ms:6.2f} ms")
    print(
        f"proxy overhead (paired)    p50 {statistics.median(over) * ms:6.2f} ms   p99 {pct(over, 99) * ms:6.2f} ms"
        f"   ({statistics.median(proxied) / statistics.median(direct):.2f}x direct)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    sys.exit(asyncio.run(main(args.calls)))
