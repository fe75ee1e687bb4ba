"""The gateway process: watch caches, the turn hub, the run API and the model proxy, composed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from aiohttp import web
from kubernetes.client import ApiClient

from pynchy.gateway.agentruns import Runs, failed_at_start, run_over, serves_group_turns
from pynchy.gateway.channels.base import Accepted, Channel, Inbound
from pynchy.gateway.commands import HELP, Command
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.inbox import Inbox
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.replies import fail_turns, finish_turn
from pynchy.gateway.routing import Directory, GroupEntry
from pynchy.gateway.runapi import RunApi
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.tools import Tools
from pynchy.gateway.turnhub import TurnHub, TurnWatch
from pynchy.kube.api import KubeApi
from pynchy.kube.informer import Informer
from pynchy.logs import get_logger
from pynchy.store import outbound, records
from pynchy.store import turns as turn_store
from pynchy.store.models import TurnRow

log = get_logger(__name__)


class Gateway:
    def __init__(self, settings: GatewaySettings, client: ApiClient) -> None:
        self.settings = settings
        self.client = client
        self.api = KubeApi(client, threads=8)
        self.db = Db(settings.database_url)
        self.hub = TurnHub(self.db)
        namespaces = list(settings.namespaces) or None
        self.directory = Directory()
        self.groups = Informer(client, "pynchy.dev", "v1alpha1", "groups", namespaces, on_event=self.directory.on_event)
        self.run_cache = Informer(client, "pynchy.dev", "v1alpha1", "agentruns", namespaces, on_event=self._run_event)
        self.runs = Runs(self.api, self.groups, self.run_cache)
        self.stats = StatsReporter(self.api)
        self.tools = Tools(self.api, self.db, self.runs, self.send_outbound)
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        token = settings.anthropic_auth_token.get_secret_value() if settings.anthropic_auth_token else None
        self.proxy = ModelProxy(settings.model_upstream_url, key, token)
        self.channels: dict[str, Channel] = {}
        self.delivery = Delivery(self.db, self.channels)
        self.inbox = Inbox(self)
        self._add_configured_channels()
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
        for channel in self.channels.values():
            channel.install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen_host, self.settings.listen_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for channel in self.channels.values():
            await channel.start()
        self.delivery.start()  # its first pass sends what a previous process left pending
        # Turns left queued by a previous gateway process get a run again.
        await self._restart_pending_groups()
        log.info("gateway listening", host=self.settings.listen_host, port=self.port)
        if self.settings.model_credential_missing:
            log.warning(
                "no model credential: agents will answer that one is missing; set PYNCHY_ANTHROPIC_API_KEY "
                "or PYNCHY_ANTHROPIC_AUTH_TOKEN"
            )

    async def stop(self) -> None:
        self.hub.close()
        await self.delivery.stop()
        for channel in self.channels.values():
            try:
                await channel.stop()
            except Exception:
                log.exception("channel did not stop cleanly", channel=channel.kind)
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

    # -- channels ----------------------------------------------------------------------

    def _add_configured_channels(self) -> None:
        # Imported here: each channel pulls in its own client libraries.
        from pynchy.gateway.channels.local import LocalChannel

        self.add_channel(LocalChannel(self))  # without PYNCHY_CHAT_TOKEN its API says it is disabled
        if self.settings.slack_enabled:
            from pynchy.gateway.slack.channel import SlackChannel

            self.add_channel(SlackChannel(self.settings, self))

    def add_channel(self, channel: Channel) -> None:
        """Register a channel before start(): its routes, its deliveries, its turn hooks."""
        if channel.kind in self.channels:
            raise ValueError(f"a {channel.kind} channel is already registered")
        self.channels[channel.kind] = channel

    @property
    def limits(self) -> dict[str, int]:
        return {kind: ch.max_message_chars for kind, ch in self.channels.items()}

    def _hook(self, kind: str | None, name: str, *args: Any) -> None:
        channel = self.channels.get(kind or "")
        if channel is not None:
            self.background(self._run_hook(channel, name, *args))

    async def _run_hook(self, channel: Channel, name: str, *args: Any) -> None:
        try:
            await getattr(channel, name)(*args)
        except Exception:
            log.exception("channel hook failed", channel=channel.kind, hook=name)

    # -- turns in ----------------------------------------------------------------------

    async def accept(self, inbound: Inbound) -> Accepted:
        """A channel message: deduped, routed, stored and (if it is one) queued as a turn."""
        return await self.inbox.accept(inbound)

    async def submit(
        self, namespace: str, group: str, prompt: str, *, sender: str | None = None, source: str = "api"
    ) -> TurnRow:
        """Queue a prompt for the Group's agent with no channel to answer in (the reply is kept in
        the ledger as 'stored'), and make sure a run will answer it."""
        if self.runs.group(namespace, group) is None:
            raise LookupError(f"Group {namespace}/{group} does not exist")
        row = await self.hub.enqueue(namespace, group, prompt, sender=sender, source=source)
        await self.runs.ensure_run(namespace, group)
        return row

    def turn_queued(self, turn: TurnRow) -> None:
        self.hub.wake(turn.namespace, turn.group)
        self.background(self._ensure_run(turn.namespace, turn.group))
        self._hook(turn.reply_channel, "turn_queued", turn)

    async def _ensure_run(self, namespace: str, group: str) -> None:
        try:
            await self.runs.ensure_run(namespace, group)
        except Exception as exc:
            # The turns stay queued; the next message, a run ending, or a restart tries again.
            log.warning("could not start a run for queued turns", namespace=namespace, group=group, error=str(exc))

    def turn_started(self, turn: TurnRow) -> None:
        """A run claimed the turn: the channel shows progress and streams it."""
        if turn.reply_channel in self.channels:
            self._hook(turn.reply_channel, "turn_started", turn, self.hub.watch(turn.id))

    def watch(self, turn_id: str) -> TurnWatch:
        return self.hub.watch(turn_id)

    async def finish_turn(
        self, namespace: str, group: str, turn_id: str, run: str, text: str, is_error: bool, deliver: bool
    ) -> TurnRow | None:
        entry = self.directory.get(namespace, group)
        fallback = entry.default_channel() if entry is not None else None
        row, rows = await self.db.call(
            finish_turn, turn_id, run, text, is_error, deliver=deliver, fallback=fallback, limits=self.limits
        )
        if row is not None:
            if rows:
                self.delivery.kick()
            self._hook(row.reply_channel, "turn_ended", row, not is_error)
        return row

    # -- messages out ------------------------------------------------------------------

    async def send_outbound(self, namespace: str, group: str, text: str, turn_id: str | None = None) -> None:
        """A message from the agent (send_message) to the Group's first channel, through the ledger."""
        entry = self.directory.get(namespace, group)
        channel, channel_id = entry.default_channel() if entry is not None else (None, None)
        await self._to_ledger(
            key=f"send:{uuid.uuid4().hex}",
            namespace=namespace,
            group=group,
            text=text,
            channel=channel,
            channel_id=channel_id,
            turn_id=turn_id,
        )

    async def _to_ledger(self, **row: Any) -> None:
        await self.db.call(outbound.add, **row)
        self.delivery.kick()

    async def run_command(self, entry: GroupEntry, inbound: Inbound, command: Command) -> str:
        """Answer a magic command; the answer goes back through the ledger like any reply."""
        ns, group = entry.namespace, entry.name
        if command == Command.RESET:
            await self.db.call(_mark_reset, ns, group)
            reply = "Done: the next message starts a fresh conversation (saved memories are kept)."
        elif command == Command.STOP:
            reply = await self._stop_group(entry, inbound.sender)
        else:
            reply = await self._pending_text(ns, group)
        await self._to_ledger(
            key=f"cmd:{inbound.dedupe_key}",
            namespace=ns,
            group=group,
            text=reply,
            channel=inbound.channel,
            channel_id=inbound.channel_id,
            thread=entry.reply_thread(inbound),
        )
        log.info("command", namespace=ns, group=group, command=command.value, sender=inbound.sender)
        await self.db.call(
            records.audit,
            namespace=ns,
            group=group,
            run="-",
            action=f"command:{command.value}",
            allowed=True,
            detail=f"by {inbound.sender}",
        )
        return reply

    async def _stop_group(self, entry: GroupEntry, sender: str) -> str:
        ns, group = entry.namespace, entry.name
        cancelled = await self.db.call(turn_store.cancel_open, ns, group, f"stopped by {sender}")
        for row in cancelled:
            self.hub.publish_failure(row.id, row.reply or "stopped")
            self._hook(row.reply_channel, "turn_ended", row, False)
        if cancelled:  # whoever asked hears that their message was dropped
            await self.db.call(fail_turns, cancelled, self.limits, None)
        stopped = []
        for run in self.runs.group_runs(ns, group):
            if not run_over(run):
                name = run["metadata"]["name"]
                try:
                    await self.api.delete("AgentRun", ns, name)
                    stopped.append(name)
                except Exception as exc:
                    log.warning("could not stop run", namespace=ns, run=name, error=str(exc))
        if not cancelled and not stopped:
            return "Nothing to stop: no run is active and nothing is queued."
        return f"Stopped: {len(stopped)} run(s) ended, {len(cancelled)} message(s) dropped."

    async def _pending_text(self, ns: str, group: str) -> str:
        rows = await self.db.call(turn_store.open_turns, ns, group)
        if not rows:
            return "Nothing pending. " + HELP
        lines = []
        for row in rows[:20]:
            state = "running" if row.state == turn_store.DELIVERED else "queued"
            prompt = row.prompt if len(row.prompt) <= 80 else row.prompt[:77] + "..."
            lines.append(f"- {state}: {prompt}")
        more = f"\n…and {len(rows) - 20} more" if len(rows) > 20 else ""
        return "Pending:\n" + "\n".join(lines) + more

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
        status = run.get("status") or {}
        give_up = None
        if status.get("phase") == "TimedOut":
            give_up = "the agent ran out of time before answering (the Group's agent.timeoutSeconds)"
        requeued = await self.db.call(turn_store.requeue_unfinished, namespace, name, give_up=give_up)
        failed = [row for row in requeued if row.state == turn_store.FAILED]
        if group and not requeued and failed_at_start(run):
            runs = self.runs.group_runs(namespace, group)
            starts = [datetime.fromisoformat(r["metadata"]["creationTimestamp"]) for r in runs if failed_at_start(r)]
            message = status.get("message") or f"agent run {name} failed"
            failed += await self.db.call(turn_store.fail_unstartable, namespace, group, starts, message)
        for row in failed:
            self.hub.publish_failure(row.id, row.reply or "the agent stopped")
            self._hook(row.reply_channel, "turn_ended", row, False)
        entry = self.directory.get(namespace, group) if group else None
        deliver = bool((run.get("spec") or {}).get("deliver", True))
        fallback = entry.default_channel() if entry is not None and deliver else None
        if failed and await self.db.call(fail_turns, failed, self.limits, fallback):
            self.delivery.kick()
        if group and any(r.state == turn_store.QUEUED for r in requeued):
            log.info("run ended with unanswered turns; requeued", namespace=namespace, run=name, turns=len(requeued))
        if group and serves_group_turns(run) and await self.db.call(turn_store.has_queued, namespace, group):
            await self._ensure_run(namespace, group)

    async def _restart_pending_groups(self) -> None:
        for g in self.groups.items():
            ns, name = g["metadata"]["namespace"], g["metadata"]["name"]
            if await self.db.call(turn_store.has_queued, ns, name):
                self.background(self._ensure_run(ns, name))


def _mark_reset(session: Any, namespace: str, group: str) -> None:
    records.group_session(session, namespace, group).reset_pending = True
