"""What the gateway holds right now: the state gauges of `/metrics`, and `GET /status` on the same
(metrics) port for `pynchy status`: the store's health, the queue depth, the active runs.

`/status` is on the metrics port, never the run API's: agent pods reach the run API and must not
read every Group's names and queues."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.orm import Session

from pynchy.clusterstatus.contract import GatewayHealth, StoreHealth
from pynchy.gateway.agentruns import RunIndex
from pynchy.gateway.db import Db
from pynchy.gateway.metrics import GatewayState
from pynchy.gateway.routing import Directory
from pynchy.gateway.turnhub import TurnHub
from pynchy.logs import get_logger
from pynchy.metrics import group_label
from pynchy.store import approvals as approval_store
from pynchy.store import turns as turn_store

log = get_logger(__name__)
# Seconds the store gets to answer a status query. It runs in the store's own thread(s), behind the
# gateway's other store calls (one thread for SQLite), so a busy or stuck store shows as slow or
# unhealthy; a query that times out still finishes (or fails) in its thread, unobserved.
STORE_TIMEOUT = 2.0


def _select_one(session: Session) -> None:
    session.execute(text("SELECT 1"))


@dataclass(eq=False)  # a service: identity, not value
class Health:
    db: Db
    directory: Directory
    run_index: RunIndex
    hub: TurnHub
    store_timeout: float = STORE_TIMEOUT

    async def state(self) -> GatewayState:
        """Queued and running turns per Group (from the store: one indexed query per Group), active
        runs per Group (the run index), waiting long-polls."""
        groups = [(g.namespace, g.name) for g in self.directory.entries()]
        counts = await self.db.call(turn_store.open_counts, groups)
        by_state: dict[str, dict[str, int]] = {turn_store.QUEUED: {}, turn_store.DELIVERED: {}}
        for namespace, name in groups:
            for state, values in by_state.items():
                values[group_label(namespace, name)] = counts.get((namespace, name, state), 0)
        return GatewayState(
            queued=by_state[turn_store.QUEUED],
            running=by_state[turn_store.DELIVERED],
            active_runs={group_label(*key): n for key, n in self.run_index.active_by_group().items()},
            waiting_polls=self.hub.pending_sizes()[0],
        )

    async def store(self) -> StoreHealth:
        """`SELECT 1` through the store, as every store call goes (a transaction in its thread)."""
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.db.call(_select_one), self.store_timeout)
        except TimeoutError:
            return StoreHealth(ok=False, error=f"no answer within {self.store_timeout:g}s")
        except Exception as exc:
            log.warning("store health check failed", error=_first_line(exc))
            return StoreHealth(ok=False, error=_first_line(exc))
        return StoreHealth(ok=True, latency_ms=round((time.monotonic() - started) * 1000, 2))

    async def health(self) -> GatewayHealth:
        store = await self.store()
        active = sum(self.run_index.active_by_group().values())
        if not store.ok:  # the queue is in the store: it cannot be read either
            return GatewayHealth(store=store, queue_depth=None, running_turns=None, active_runs=active)
        try:
            state = await asyncio.wait_for(self.state(), self.store_timeout)
        except Exception as exc:
            reason = f"no answer within {self.store_timeout:g}s" if isinstance(exc, TimeoutError) else _first_line(exc)
            log.warning("queue depth not read", error=reason)
            failed = StoreHealth(ok=False, error=f"reading the queue: {reason}", latency_ms=store.latency_ms)
            return GatewayHealth(store=failed, queue_depth=None, running_turns=None, active_runs=active)
        return GatewayHealth(
            store=store,
            queue_depth=sum(state.queued.values()),
            running_turns=sum(state.running.values()),
            active_runs=active,
            queued={group: n for group, n in sorted(state.queued.items()) if n},
            pending_approvals=await self.db.call(approval_store.count_pending),
        )

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /status`: always 200 with the JSON (an unhealthy store is data, not an HTTP error)."""
        return web.json_response((await self.health()).to_wire())


def _first_line(exc: BaseException) -> str:
    """`Type: the message's first line`, short enough for one line of `pynchy status`."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
