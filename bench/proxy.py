"""Benchmark: what the model proxy adds to a model call, with the run token checked, the model
allowed and the Group's budget checked and metered, against the same call straight at the upstream.

    uv run python bench/proxy.py [--calls 400]

One process, one event loop: a stand-in Messages API (a short SSE answer with usage, as Anthropic
streams it) and the gateway's real model proxy sub-app (run-token auth, model list, SpendGuard on a
SQLite store, usage metered per call) on loopback. Calls alternate between the two (each first every
other time), read to the end of the stream. Prints p50/p99 of both, and the overhead as the median
and 99th percentile of the paired differences. Goal: at most 2 ms p50. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from pynchy.gateway.agentruns import AgentRuns, RunIndex
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.httpapi.model_api import ModelApi
from pynchy.gateway.httpapi.runauth import RunAuth
from pynchy.gateway.outbox import Outbox
from pynchy.gateway.pricing import DEFAULT_PRICES
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.routing import Directory
from pynchy.gateway.spend import SpendGuard
from pynchy.logs import configure_logging
from pynchy.runtoken import RunClaims, issue
from pynchy.store import records
from pynchy_agent.protocol import MODEL_PROXY_PREFIX

KEY = "bench-run-token-key-0123456789abcdef0123456789"
NS, GROUP, RUN = "bench", "thrifty", "thrifty-run"
MODEL = "claude-sonnet-4-5"
WARM_UP = 20
BODY = {"model": MODEL, "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "say ok"}]}


class NoKube:
    """The run is known from the watch event; nothing else is asked of Kubernetes."""

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None


async def upstream_app() -> web.Application:
    async def messages(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {"type": "message_start", "message": {"model": MODEL, "usage": {"input_tokens": 120}}}
        events = [
            ("message_start", start),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"text": "ok"}}),
            ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        for name, data in events:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app


def gateway_app(db: Db, upstream: str) -> tuple[web.Application, ModelProxy, SpendGuard]:
    directory, index = Directory(), RunIndex()
    meta = {"name": GROUP, "namespace": NS, "uid": "uid-g", "creationTimestamp": "2026-12-01T00:00:00Z"}
    spec = {"channels": [{"local": {"name": GROUP}}], "agent": {"model": MODEL}, "budget": {"dailyUsd": 1e6}}
    directory.on_event("ADDED", {"apiVersion": "pynchy.dev/v1alpha1", "kind": "Group", "metadata": meta, "spec": spec})
    run_meta = {"name": RUN, "namespace": NS, "uid": "uid-r", "creationTimestamp": "2026-12-01T00:00:00Z"}
    run = {"metadata": run_meta, "spec": {"groupRef": {"name": GROUP}}, "status": {"phase": "Running"}}
    index.on_event("ADDED", run)
    runs = AgentRuns(NoKube(), directory, index)  # type: ignore[arg-type]  # NoKube has the method used
    outbox = Outbox(db, Delivery(db, {}), directory)
    spend = SpendGuard(db, DEFAULT_PRICES, outbox.post)
    proxy = ModelProxy(upstream, "sk-bench", None)
    app = web.Application()
    app.add_subapp(MODEL_PROXY_PREFIX, ModelApi(db, proxy, spend).app(RunAuth(KEY, runs, directory)))
    return app, proxy, spend


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def call(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with session.post(url, json=BODY, headers=headers) as response:
        if response.status != 200:
            raise SystemExit(f"{url}: {response.status} {await response.text()}")
        await response.read()
    return time.perf_counter() - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pynchy-bench-proxy-") as tmp:
        db = Db(f"sqlite:///{Path(tmp) / 'gateway.db'}")
        up_runner, up_url = await serve(await upstream_app())
        app, proxy, spend = gateway_app(db, up_url)
        await proxy.start()
        gw_runner, gw_url = await serve(app)
        claims = RunClaims(NS, RUN, "uid-r", GROUP, int(time.time()) + 3600)
        run_token = issue(KEY, claims, issued_at=int(time.time()))
        direct_url, proxied_url = f"{up_url}/v1/messages", f"{gw_url}{MODEL_PROXY_PREFIX}/v1/messages"
        headers = {"x-api-key": run_token, "anthropic-version": "2023-06-01"}
        direct: list[float] = []
        proxied: list[float] = []
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(WARM_UP):  # warm-up: connections, the store's first queries
                    await call(session, direct_url, headers)
                    await call(session, proxied_url, headers)
                for i in range(calls):
                    pair = [(direct_url, direct), (proxied_url, proxied)]
                    for url, out in pair if i % 2 == 0 else reversed(pair):
                        out.append(await call(session, url, headers))
        finally:
            await gw_runner.cleanup()
            await proxy.close()
            await spend.flush()
            metered = await db.call(records.group_usage, NS, GROUP)
            await up_runner.cleanup()
            db.close()
    if metered["calls"] != WARM_UP + calls:  # the figures only count if every call was metered
        sys.exit(f"metered {metered['calls']} of {WARM_UP + calls} proxied calls")
    over = [p - d for p, d in zip(proxied, direct, strict=True)]
    ms = 1000
    print(f"direct to the upstream     p50 {pct(direct, 50) * ms:6.2f} ms   p99 {pct(direct, 99) * ms:6.2f} ms", end="")
    print(f"   (n={calls})")
    print(f"through the model proxy    p50 {pct(proxied, 50) * ms:6.2f} ms   p99 {pct(proxied, 99) * ms:6.2f} ms")
    print(
        f"proxy overhead (paired)    p50 {statistics.median(over) * ms:6.2f} ms   p99 {pct(over, 99) * ms:6.2f} ms"
        f"   (goal <= 2 ms p50; {statistics.median(proxied) / statistics.median(direct):.2f}x direct)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    sys.exit(asyncio.run(main(args.calls)))
