"""The gateway process: watch caches, the turn hub, the run API and the model proxy, composed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from kubernetes.client import ApiClient

from pynchy.gateway.db import Db
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.runapi import RunApi
from pynchy.gateway.runs import Runs, run_over, serves_group_turns
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.tools import Tools
from pynchy.gateway.turns import TurnHub, TurnWatch
from pynchy.kube.informer import Informer
from pynchy.logs import get_logger
from pynchy.operator.kubeapi import KubeApi
from pynchy.store import records
from pynchy.store import turns as turn_store
from pynchy.store.models import TurnRow

log = get_logger(__name__)
OutboundListener = Callable[[str, str, str, str | None], Awaitable[None]]  # (namespace, group, text, turn id)


class Gateway:
    def __init__(self, settings: GatewaySettings, client: ApiClient) -> None:
        self.settings = settings
        self.client = client
        self.api = KubeApi(client, threads=8)
        self.db = Db(settings.database_url)
        self.hub = TurnHub(self.db)
        namespaces = list(settings.namespaces) or None
        self.groups = Informer(client, "pynchy.dev", "v1alpha1", "groups", namespaces)
        self.run_cache = Informer(client, "pynchy.dev", "v1alpha1", "agentruns", namespaces, on_event=self._run_event)
        self.runs = Runs(self.api, self.groups, self.run_cache)
        self.stats = StatsReporter(self.api)
        self.tools = Tools(self.api, self.db, self.runs, self.send_outbound)
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        token = settings.anthropic_auth_token.get_secret_value() if settings.anthropic_auth_token else None
        self.proxy = ModelProxy(settings.model_upstream_url, key, token)
        self.outbound_listeners: list[OutboundListener] = []
        self._runner: web.AppRunner | None = None
        self._ended: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.proxy.start()
        await self.groups.start()
        await self.run_cache.start()
        app = web.Application(client_max_size=32 << 20)
        RunApi(self).install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen_host, self.settings.listen_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # Turns left queued by a previous gateway process get a run again.
        await self._restart_pending_groups()
        log.info("gateway listening", host=self.settings.listen_host, port=self.port)

    async def stop(self) -> None:
        self.hub.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.groups.stop()
        self.run_cache.stop()
        await self.proxy.close()
        self.api.close()
        self.db.close()

    def background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- turns in ----------------------------------------------------------------------

    async def submit(
        self, namespace: str, group: str, prompt: str, *, sender: str | None = None, source: str = "api"
    ) -> TurnRow:
        """Queue a message for the Group's agent and make sure a run will answer it."""
        if self.runs.group(namespace, group) is None:
            raise LookupError(f"Group {namespace}/{group} does not exist")
        row = await self.hub.enqueue(namespace, group, prompt, sender=sender, source=source)
        await self.runs.ensure_run(namespace, group)
        return row

    def watch(self, turn_id: str) -> TurnWatch:
        return self.hub.watch(turn_id)

    # -- replies and messages out ------------------------------------------------------

    async def send_outbound(self, namespace: str, group: str, text: str, turn_id: str | None = None) -> None:
        await self.db.call(records.add_outbound, namespace, group, text, turn_id)
        for listener in list(self.outbound_listeners):
            try:
                await listener(namespace, group, text, turn_id)
            except Exception:
                log.exception("outbound listener failed", namespace=namespace, group=group)

    # -- run lifecycle -----------------------------------------------------------------

    def _run_event(self, kind: str, run: dict[str, Any]) -> None:
        key = (run["metadata"]["namespace"], run["metadata"]["name"])
        group = (run.get("spec") or {}).get("groupRef", {}).get("name")
        if kind == "ADDED" and group:
            self.hub.wake(key[0], group)  # an idle run may have to give way to this one
        if (kind == "DELETED" or run_over(run)) and key not in self._ended:
            self._ended.add(key)
            self.background(self._run_ended(run))
        if kind == "DELETED":
            self._ended.discard(key)
            self.stats.forget(*key)

    async def _run_ended(self, run: dict[str, Any]) -> None:
        namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
        group = (run.get("spec") or {}).get("groupRef", {}).get("name")
        requeued = await self.db.call(turn_store.requeue_unfinished, namespace, name)
        for row in requeued:
            if row.state == turn_store.FAILED:
                self.hub.publish_failure(row.id, row.reply or "the agent stopped")
        if group and any(r.state == turn_store.QUEUED for r in requeued):
            log.info("run ended with unanswered turns; requeued", namespace=namespace, run=name, turns=len(requeued))
        if group and serves_group_turns(run) and await self.db.call(turn_store.has_queued, namespace, group):
            try:
                await self.runs.ensure_run(namespace, group)
            except Exception as exc:
                log.warning("could not start a run for queued turns", group=group, error=str(exc))

    async def _restart_pending_groups(self) -> None:
        for g in self.groups.items():
            ns, name = g["metadata"]["namespace"], g["metadata"]["name"]
            if await self.db.call(turn_store.has_queued, ns, name):
                self.background(self.runs.ensure_run(ns, name))
