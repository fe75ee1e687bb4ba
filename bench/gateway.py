"""Benchmark: inbound events the gateway accepts, dedupes and stores per second, and the latency
from an event received to its turn handed to an agent over the run API.

    uv run python bench/gateway.py [--events 3000] [--concurrency 32] [--latency-samples 200]

Runs a control plane (built from source, cached), the local Slack double, and `pynchy gateway`
as its own process on SQLite, receiving signed Events API requests over HTTP as from Slack.

  throughput  --events distinct mentions POSTed with --concurrency in flight; then all of them
              replayed (Slack's retries), which must add no turn
  latency     one event at a time to a Group whose run is long-polling for turns: from the POST
              leaving the client to the turn arriving at the poller (both on loopback)

Prints figures; asserts only correctness (turn counts), never timings.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from install import install  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402

from conftest import RUN_TOKEN_KEY  # noqa: E402
from doubles.slack import BOT_TOKEN, SIGNING_SECRET, SlackDouble, signed_headers  # noqa: E402
from gatewayproc import GatewayProcess  # noqa: E402
from pynchy.kube.binaries import ensure_binaries  # noqa: E402
from pynchy.kube.controlplane import ControlPlane  # noqa: E402
from pynchy.runtoken import RunClaims, issue  # noqa: E402
from pynchy.store.models import MessageRow, TurnRow  # noqa: E402

NS = "bench"
GROUPS = """
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {name: tput, namespace: bench}
spec:
  channels: [{slack: {channelId: C0BENCHTPUT}}]
  trigger: {mode: always}
  allowedSenders: ["*"]
---
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {name: lat, namespace: bench}
spec:
  channels: [{slack: {channelId: C0BENCHLAT0}}]
  trigger: {mode: always}
  allowedSenders: ["*"]
---
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {name: tput-run, namespace: bench}
spec: {groupRef: {name: tput}}
---
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {name: lat-run, namespace: bench}
spec: {groupRef: {name: lat}}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def events_for(slack: SlackDouble, channel: str, n: int, tag: str) -> list[str]:
    bodies = []
    for i in range(n):
        msg = slack.user_message(channel, f"{tag} {i}")
        bodies.append(json.dumps(slack.event(channel, msg)))
    return bodies


async def post_all(url: str, bodies: list[str], concurrency: int) -> float:
    # aiohttp, not httpx: at these rates httpx's own overhead would be what is measured.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with client.post(url, data=body.encode(), headers=signed_headers(body)) as r:
                    if r.status != 200:
                        raise RuntimeError(f"gateway answered {r.status}: {await r.text()}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def latency(url: str, gw_url: str, token: str, bodies: list[str]) -> list[float]:
    samples: list[float] = []
    async with (
        httpx.AsyncClient(timeout=60) as events,
        httpx.AsyncClient(base_url=gw_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as agent,
    ):
        for body in bodies:
            poll = asyncio.create_task(agent.get("/v1/run/turns/next", params={"wait": 30}))
            await asyncio.sleep(0.01)  # the poll is parked before the event is sent
            sent = time.perf_counter()
            r = await events.post(url, content=body.encode(), headers=signed_headers(body))
            if r.status_code != 200:
                raise RuntimeError(f"gateway answered {r.status_code}: {r.text}")
            turn = await poll
            got = time.perf_counter()
            if turn.status_code != 200:
                raise RuntimeError(f"no turn handed over: {turn.status_code} {turn.text}")
            samples.append((got - sent) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pynchy-bench-gw-") as tmp:
        data = Path(tmp)
        plane = ControlPlane(ensure_binaries(), data / "plane")
        plane.start()
        slack = SlackDouble().start()
        gateway: GatewayProcess | None = None
        try:
            kubeconfig = install(plane, NS, ("gateway",))["gateway"]
            plane.kubectl("apply", "-f", "-", input=GROUPS)
            gateway = GatewayProcess(
                kubeconfig,
                data,
                namespaces=NS,
                slack_bot_token=BOT_TOKEN,
                slack_signing_secret=SIGNING_SECRET,
                slack_api_url=slack.api_url,
                log_level="WARNING",
            ).start()
            url = f"{gateway.url}/slack/events"
            time.sleep(1.0)  # the gateway's Group and run caches fill from their watches
            engine = create_engine(f"sqlite:///{data}/gateway.db")

            def count(model: Any, channel: str) -> int:
                with engine.connect() as c:
                    if model is TurnRow:
                        return int(c.scalar(select(func.count()).select_from(TurnRow).where(TurnRow.group == channel)))
                    return int(
                        c.scalar(select(func.count()).select_from(MessageRow).where(MessageRow.channel_id == channel))
                    )

            bodies = events_for(slack, "C0BENCHTPUT", args.events, "throughput")
            elapsed = asyncio.run(post_all(url, bodies, args.concurrency))
            turns = count(TurnRow, "tput")
            assert turns == args.events, f"{turns} turns for {args.events} events"
            replay = asyncio.run(post_all(url, bodies, args.concurrency))
            assert count(TurnRow, "tput") == args.events, "a replayed event made a turn"

            lat_run = json.loads(plane.kubectl("get", "agentrun", "lat-run", "-n", NS, "-o", "json").stdout)
            claims = RunClaims(NS, "lat-run", lat_run["metadata"]["uid"], "lat", int(time.time()) + 3600)
            token = issue(RUN_TOKEN_KEY, claims, issued_at=int(time.time()))
            samples = asyncio.run(
                latency(url, gateway.url, token, events_for(slack, "C0BENCHLAT0", args.latency_samples, "latency"))
            )
        finally:
            if gateway is not None:
                gateway.stop()
            slack.stop()
            plane.stop()

    print("gateway bench: SQLite, pynchy gateway as its own process, signed Events API requests over HTTP")
    print(
        f"  accepted+deduped+stored: {args.events} events in {elapsed:.2f}s = {args.events / elapsed:.0f} events/s "
        f"(concurrency {args.concurrency}; goal >= 500/s)"
    )
    print(f"  replayed (all duplicates): {args.events / replay:.0f} events/s; turns still {args.events}")
    print(
        f"  event received -> turn at the run API: p50 {statistics.median(samples):.1f} ms, "
        f"p90 {pct(samples, 0.9):.1f} ms, p99 {pct(samples, 0.99):.1f} ms over {len(samples)} (goal p50 <= 20 ms)"
    )


if __name__ == "__main__":
    main()
