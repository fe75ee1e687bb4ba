"""The composition root: every part of the gateway built here, each given only what it uses, and
served as one aiohttp Application whose `cleanup_ctx` starts and stops them in pairs, in order.
Only gateway/main.py (the process and the embedded runner) imports this module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from kubernetes.client import ApiClient

from pynchy.aio import TaskSet
from pynchy.clusterstatus.contract import STATUS_PATH
from pynchy.gateway.agentruns import AgentRuns, RunEntry, RunIndex
from pynchy.gateway.approvals import Approvals
from pynchy.gateway.budget import Limits
from pynchy.gateway.channels.base import Accepted, Channel, DecisionReply, Inbound
from pynchy.gateway.command_runner import CommandRunner
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.events import REPORTING_CONTROLLER, GatewayEvents
from pynchy.gateway.groupstatus import GroupStatusReporter
from pynchy.gateway.health import Health
from pynchy.gateway.hooks import ChannelHooks
from pynchy.gateway.httpapi.mcp_api import McpApi
from pynchy.gateway.httpapi.model_api import ModelApi
from pynchy.gateway.httpapi.run_api import RunApi
from pynchy.gateway.httpapi.runauth import RunAuth
from pynchy.gateway.inbox import Inbox
from pynchy.gateway.lifecycle import TurnLifecycle
from pynchy.gateway.mcpproxy import McpProxy
from pynchy.gateway.metrics import GatewayMetrics
from pynchy.gateway.outbox import Outbox
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.pruner import Pruner
from pynchy.gateway.questions import Questions
from pynchy.gateway.routing import Directory
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.spend import SpendGuard
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.toolgate import ToolGate
from pynchy.gateway.tools import Tools
from pynchy.gateway.turnhub import TurnHub, TurnWatch
from pynchy.gateway.usage import ModelUsage
from pynchy.kube.api import KubeApi
from pynchy.kube.events import EventRecorder
from pynchy.kube.informer import Informer
from pynchy.logs import get_logger
from pynchy.metrics import MetricsServer, group_label
from pynchy.store.models import TurnRow
from pynchy_agent.protocol import MCP_PROXY_PREFIX, MODEL_PROXY_PREFIX, RUN_API_PREFIX

log = get_logger(__name__)
MAX_REQUEST_BYTES = 32 << 20  # the model proxy passes whole prompts (with images) through


class Gateway:
    def __init__(self, settings: GatewaySettings, client: ApiClient) -> None:
        self.settings = settings
        self.api = KubeApi(client, threads=8)
        self.db = Db(settings.database_url)
        self.tasks = TaskSet()
        self.metrics = GatewayMetrics()
        self.hub = TurnHub(self.db)
        self.directory = Directory()
        # Events (best-effort, posted in the background): each part gets one method of this as its callback.
        self.events = GatewayEvents(EventRecorder(self.api, self.tasks, REPORTING_CONTROLLER).record, self.directory)
        self.run_index = RunIndex(on_finished=self._run_finished)
        namespaces = list(settings.namespaces) or None
        self.groups = Informer(client, "pynchy.dev", "v1alpha1", "groups", namespaces, on_event=self.directory.on_event)
        self.run_cache = Informer(client, "pynchy.dev", "v1alpha1", "agentruns", namespaces, on_event=self._run_event)
        self.runs = AgentRuns(self.api, self.directory, self.run_index)
        self.stats = StatsReporter(
            self.api, on_push=lambda namespace, group: self.group_status.note(namespace, group), tasks=self.tasks
        )
        self.hooks = ChannelHooks(self.tasks)
        self.delivery = Delivery(self.db, self.hooks.channels, self.metrics.delivery, self.events.delivery_gave_up)
        self.outbox = Outbox(self.db, self.delivery, self.directory)
        self.tools = Tools(self.api, self.db, self.directory, self.outbox.send, settings.tool_limits)
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        token = settings.anthropic_auth_token.get_secret_value() if settings.anthropic_auth_token else None
        self.proxy = ModelProxy(settings.model_upstream_url, key, token)
        self.mcp_proxy = McpProxy(self.api)  # the Group's MCP servers, with their Secrets' headers
        default = Limits.of(settings.default_budget) if settings.default_budget is not None else None
        self.spend = SpendGuard(
            self.db,
            settings.prices,
            self.outbox.post,
            default,
            on_usage=self._model_used,
            on_refused=lambda namespace, group: self.metrics.record_budget_refusal(group_label(namespace, group)),
            on_notice=self.events.budget_notice,
        )
        self.group_status = GroupStatusReporter(self.api, self.db, self.runs, self.directory, self.spend)
        self.pruner = Pruner(
            self.db, settings.retention_policy, settings.retention_interval_seconds, self.metrics.store.pruned
        )
        self.lifecycle = TurnLifecycle(
            self.db,
            self.hub,
            self.runs,
            self.directory,
            self.hooks,
            self.delivery,
            self.stats,
            self.tasks,
            self.metrics.turns,
        )
        self.approvals = Approvals(self.db, self.delivery, self.directory, settings.owner, self._run_ended)
        self.tools_gate = ToolGate(self.db, self.directory, self.approvals)
        self.questions = Questions(self.db, self.delivery, self.directory, settings.owner)
        self.commands = CommandRunner(
            self.db, self.api, self.hub, self.runs, self.hooks, self.outbox, self.approvals, self.questions
        )
        self.inbox = Inbox(
            self.db, self.directory, settings.owner, self.commands.run, self.lifecycle.queued, self.metrics.inbound
        )
        self._add_configured_channels()
        self._runner: web.AppRunner | None = None
        self.health = Health(self.db, self.directory, self.run_index, self.hub)
        # /status next to /metrics: the metrics port, which agent pods cannot reach (see start()).
        self.metrics_server = MetricsServer(
            self.metrics.registry, refresh=self._observe_state, routes={STATUS_PATH: self.health.handle}
        )
        self.port = 0
        self.metrics_port = 0

    # -- what callers use (channels, tests, `pynchy dev`) --------------------------------------

    async def accept(self, inbound: Inbound) -> Accepted:
        """A channel message: deduped, routed, stored and (if it is one) queued as a turn."""
        return await self.inbox.accept(inbound)

    async def submit(
        self, namespace: str, group: str, prompt: str, *, sender: str | None = None, source: str = "api"
    ) -> TurnRow:
        return await self.lifecycle.submit(namespace, group, prompt, sender=sender, source=source)

    def watch(self, turn_id: str) -> TurnWatch:
        return self.hub.watch(turn_id)

    async def decide_approval(self, approval_id: str, approve: bool, sender: str) -> DecisionReply:
        """A person's Approve / Deny from a channel's button (text commands go through the inbox)."""
        return await self.approvals.decide(approval_id, approve, sender)

    async def answer_question(self, question_id: str, index: int, choice: int, sender: str) -> DecisionReply:
        """A person's click on one of an ask_user question's options (0-based indexes)."""
        return await self.questions.answer(question_id, sender, index=index, choice=choice)

    def add_channel(self, channel: Channel) -> None:
        """Register a channel before start(): its routes, its deliveries, its turn hooks."""
        self.hooks.add(channel)

    # -- composition -------------------------------------------------------------------

    def _add_configured_channels(self) -> None:
        # Imported here: each channel pulls in its own client libraries.
        from pynchy.gateway.channels.local import LocalChannel

        local = LocalChannel(
            self.db,
            self.directory,
            self.accept,
            self.hub.watch,
            token=self.settings.chat_token,
            long_poll_seconds=self.settings.long_poll_seconds,
        )
        self.add_channel(local)  # without PYNCHY_CHAT_TOKEN its API says it is disabled
        if self.settings.slack_enabled:
            from pynchy.gateway.slack.channel import SlackChannel

            self.add_channel(SlackChannel(self.settings, self))

    def _run_event(self, kind: str, obj: dict[str, Any]) -> None:
        run = self.run_index.on_event(kind, obj)
        if run is not None:
            self.lifecycle.run_event(kind, run)
            self.group_status.note(run.namespace, run.group)

    def _run_ended(self, namespace: str, run: str) -> bool:
        entry = self.run_index.get(namespace, run)
        return entry is None or entry.over

    def _run_finished(self, run: RunEntry) -> None:
        self.metrics.runs.finished(run.namespace, run.group, run.phase or "")

    def _model_used(self, namespace: str, group: str, run: str, usage: ModelUsage, cost: float) -> None:
        entry = self.run_index.get(namespace, run)
        if entry is not None:  # a run deleted while its last call streamed has no status to write
            self.stats.metered(entry, usage, cost)
        self.metrics.record_model_usage(
            group_label(namespace, group),
            usage.model or "unknown",
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            cost,
        )
        self.group_status.note(namespace, group)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        auth = RunAuth(self.settings.run_token_key.get_secret_value(), self.runs, self.directory)
        run_api = RunApi(
            self.db,
            self.hub,
            self.runs,
            self.lifecycle,
            self.tools,
            self.stats,
            self.tasks,
            self.settings.long_poll_seconds,
            self.tools_gate,
            self.questions,
        )
        app.add_subapp(RUN_API_PREFIX, run_api.app(auth))
        app.add_subapp(MODEL_PROXY_PREFIX, ModelApi(self.db, self.proxy, self.spend).app(auth))
        app.add_subapp(MCP_PROXY_PREFIX, McpApi(self.db, self.mcp_proxy, self.tools_gate).app(auth))
        app.router.add_get("/healthz", _healthz)
        for channel in self.hooks:
            channel.install(app)
        # Started in this order, stopped in reverse once the HTTP server has finished its requests.
        app.cleanup_ctx.extend(
            [self._store, self._model_proxy, self._watches, self._background, self._channels, self._delivery]
        )
        app.on_shutdown.append(self._release_long_polls)
        return app

    async def _store(self, app: web.Application) -> AsyncIterator[None]:
        yield
        self.api.close()
        self.db.close()

    async def _model_proxy(self, app: web.Application) -> AsyncIterator[None]:
        await self.proxy.start()
        await self.mcp_proxy.start()
        yield
        await self.mcp_proxy.close()
        await self.proxy.close()
        await self.spend.flush()  # the usage of the answers just drained, before the store closes

    async def _watches(self, app: web.Application) -> AsyncIterator[None]:
        await self.groups.start()
        try:
            await self.run_cache.start()
        except BaseException:
            self.groups.stop()
            raise
        yield
        self.groups.stop()
        self.run_cache.stop()

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        self.tasks.spawn(self.group_status.run(), name="group-status")
        self.tasks.spawn(self.pruner.run(), name="store-retention")
        self.tasks.spawn(self.approvals.run(), name="approvals")
        self.tasks.spawn(self.questions.run(), name="questions")
        yield
        await self.tasks.close()

    async def _channels(self, app: web.Application) -> AsyncIterator[None]:
        started: list[Channel] = []
        try:
            for channel in self.hooks:
                await channel.start()
                started.append(channel)
            yield
        finally:
            for channel in reversed(started):
                try:
                    await channel.stop()
                except Exception:
                    log.exception("channel did not stop cleanly", channel=channel.kind)

    async def _delivery(self, app: web.Application) -> AsyncIterator[None]:
        self.delivery.start()  # its first pass sends what a previous process left pending
        await self.lifecycle.restart_pending()
        yield
        await self.delivery.stop()

    async def _observe_state(self) -> None:
        """Before a scrape: the state gauges read now (queued turns from the store)."""
        self.metrics.observe_state(await self.health.state())

    async def _release_long_polls(self, app: web.Application) -> None:
        # Before the server waits for open requests: waiting runs' long-polls answer 'no turn' now.
        self.hub.close()
        self.mcp_proxy.release()  # and open MCP event streams end (their clients reconnect)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=10)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.settings.listen_host, self.settings.listen_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("gateway listening", host=self.settings.listen_host, port=self.port)
        if self.settings.metrics_port:
            # Its own port: agent pods reach the run API's port (their NetworkPolicy) and must not
            # read every Group's names and spend from /metrics.
            await self.metrics_server.start(self.settings.listen_host, self.settings.metrics_port)
            self.metrics_port = self.metrics_server.port
        if self.settings.model_credential_missing:
            log.warning(
                "no model credential: agents will answer that one is missing; set PYNCHY_ANTHROPIC_API_KEY "
                "or PYNCHY_ANTHROPIC_AUTH_TOKEN"
            )

    async def stop(self) -> None:
        await self.metrics_server.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})
