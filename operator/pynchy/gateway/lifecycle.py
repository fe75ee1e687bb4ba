"""A turn's life in the gateway around the store: queued → a run is there to take it → started
(the channel streams it) → finished (reply in the ledger); and what a run's end means for the turns
it held (requeued, failed with a message, or a new run started for what is still queued)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pynchy.aio import TaskSet
from pynchy.errors import NotFoundError
from pynchy.gateway.agentruns import AgentRuns, RunEntry, RunKey
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.hooks import ChannelHooks
from pynchy.gateway.metrics import TurnMetrics
from pynchy.gateway.replies import fail_turns, finish_turn
from pynchy.gateway.routing import Directory
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.turnhub import TurnHub
from pynchy.logs import get_logger
from pynchy.store import turns as turn_store
from pynchy.store.models import TurnRow

log = get_logger(__name__)
TIMED_OUT = "the agent ran out of time before answering (the Group's agent.timeoutSeconds)"


@dataclass(eq=False)  # a service: identity, not value
class TurnLifecycle:
    db: Db
    hub: TurnHub
    runs: AgentRuns
    directory: Directory
    hooks: ChannelHooks
    delivery: Delivery
    stats: StatsReporter
    tasks: TaskSet
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    # Runs whose end was handled; pruned when they are deleted.
    _ended: set[RunKey] = field(default_factory=set, init=False)

    # -- turns -------------------------------------------------------------------------

    async def submit(
        self, namespace: str, group: str, prompt: str, *, sender: str | None = None, source: str = "api"
    ) -> TurnRow:
        """Queue a prompt for the Group's agent with no channel to answer in (the reply is kept in
        the ledger as 'stored'), and make sure a run will answer it."""
        if self.directory.get(namespace, group) is None:
            raise NotFoundError(f"Group {namespace}/{group} does not exist")
        row = await self.hub.enqueue(namespace, group, prompt, sender=sender, source=source)
        await self.runs.ensure_run(namespace, group)
        return row

    def queued(self, turn: TurnRow) -> None:
        """A channel message became a turn (already stored)."""
        self.hub.wake(turn.namespace, turn.group)
        self.tasks.spawn(self.ensure_run(turn.namespace, turn.group), name="ensure-run")
        self.hooks.queued(turn)

    async def ensure_run(self, namespace: str, group: str) -> None:
        try:
            await self.runs.ensure_run(namespace, group)
        except Exception as exc:
            # The turns stay queued; the next message, a run ending, or a restart tries again.
            log.warning("could not start a run for queued turns", namespace=namespace, group=group, error=str(exc))

    def started(self, turn: TurnRow) -> None:
        """A run claimed the turn: the channel shows progress and streams it."""
        self.metrics.claimed(turn)
        self.hooks.started(turn, self.hub.watch)

    def events_posted(self, turn_id: str) -> None:
        """The turn's run posted events (its first one ends the first-event latency)."""
        self.metrics.event_posted(turn_id)

    async def finish(
        self, namespace: str, group: str, turn_id: str, run: str, text: str, is_error: bool, deliver: bool
    ) -> TurnRow | None:
        """The turn's result and its reply, written once (None: it was already finished)."""
        entry = self.directory.get(namespace, group)
        fallback = entry.default_channel() if entry is not None else None
        row, rows = await self.db.call(
            finish_turn, turn_id, run, text, is_error, deliver=deliver, fallback=fallback, limits=self.hooks.limits
        )
        if row is not None:
            self.metrics.finished(row)
            if rows:
                self.delivery.kick()
            self.hooks.ended(row, not is_error)
        return row

    async def restart_pending(self) -> None:
        """Turns left queued by a previous gateway process get a run again."""
        for g in self.directory.entries():
            if await self.db.call(turn_store.has_queued, g.namespace, g.name):
                self.tasks.spawn(self.ensure_run(g.namespace, g.name), name="ensure-run")

    # -- runs --------------------------------------------------------------------------

    def run_event(self, kind: str, run: RunEntry) -> None:
        """An AgentRun watch event (the run index has applied it already)."""
        if kind == "ADDED":
            self.hub.wake(run.namespace, run.group)  # an idle run may have to give way to this one
        if (kind == "DELETED" or run.over) and run.key not in self._ended:
            self._ended.add(run.key)
            self.tasks.spawn(self._run_ended(run), name="run-ended")
        if kind == "DELETED":
            self._ended.discard(run.key)
            self.stats.forget(*run.key)

    async def _run_ended(self, run: RunEntry) -> None:
        namespace, group = run.namespace, run.group
        give_up = TIMED_OUT if run.phase == "TimedOut" else None
        requeued = await self.db.call(turn_store.requeue_unfinished, namespace, run.name, give_up=give_up)
        failed = [row for row in requeued if row.state == turn_store.FAILED]
        for row in requeued:
            self.metrics.forget(row.id)
        if not requeued and run.failed_at_start:
            starts = [r.created for r in self.runs.group_runs(namespace, group) if r.failed_at_start]
            message = run.message or f"agent run {run.name} failed"
            failed += await self.db.call(turn_store.fail_unstartable, namespace, group, starts, message)
        for row in failed:
            self.metrics.finished(row)
            self.hub.publish_failure(row.id, row.reply or "the agent stopped")
            self.hooks.ended(row, False)
        entry = self.directory.get(namespace, group)
        fallback = entry.default_channel() if entry is not None and run.spec.deliver else None
        if failed:
            replies = await self.db.call(fail_turns, failed, self.hooks.limits, fallback)
            if replies:
                self.delivery.kick()
        if any(r.state == turn_store.QUEUED for r in requeued):
            log.info(
                "run ended with unanswered turns; requeued", namespace=namespace, run=run.name, turns=len(requeued)
            )
        if run.serves_group_turns and await self.db.call(turn_store.has_queued, namespace, group):
            await self.ensure_run(namespace, group)
