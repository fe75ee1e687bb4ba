"""Turns watch events into keys, and keys into reconciles of the current state."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy.operator.admission import RunIndex, RunKey
from pynchy.operator.build.common import LABEL_GROUP, LABEL_MANAGED_BY, LABEL_WORKSPACE, MANAGED_BY
from pynchy.operator.checks import Ref
from pynchy.operator.metrics import OperatorMetrics, QueueDepth
from pynchy.operator.reconcile_agentrun import RunReconciler
from pynchy.operator.reconcile_group import reconcile_group
from pynchy.operator.reconcile_scheduledtask import TaskReconciler, utc_now
from pynchy.operator.reconcile_workspace import reconcile_workspace
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.workqueue import WorkQueue

log = get_logger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name) of a Group, Workspace, ScheduledTask or AgentRun


class Controller:
    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        clock: Callable[[], dt.datetime] | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        # What time it is for schedules (an aware UTC datetime); tests inject a clock they advance.
        self.clock = clock or utc_now
        self.metrics = metrics if metrics is not None else OperatorMetrics()
        self.queue = WorkQueue(self.reconcile, settings.workers, observe=self._observe)
        self.metrics.watch(lambda: QueueDepth(*self.queue.depth()), lambda: Counter(key[0] for key in self.known))
        self.known: set[Key] = set()
        # Reverse index: which Groups/Workspaces depend on an object they reference.
        self._dependents: dict[Ref, set[Key]] = defaultdict(set)
        self._refs: dict[Key, set[Ref]] = {}
        self._resync: asyncio.Task[None] | None = None
        # AgentRuns: admission state from the AgentRun and Pod watches; waiting runs are woken by key.
        self.runs = RunIndex(settings.max_concurrent_runs, settings.run_history_limit, self._wake_run)
        self._run_reconciler = RunReconciler(api, settings, self.runs)
        # ScheduledTasks: the work queue is their timer; Group existence is known from the Group watch.
        self._groups: set[tuple[str, str]] = set()
        self.tasks = TaskReconciler(api, settings, self.clock, lambda ns, name: (ns, name) in self._groups)

    async def start(self) -> None:
        self.queue.start()
        if self.settings.resync_seconds:
            self._resync = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        if self._resync:
            self._resync.cancel()
        await self.queue.stop()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            self.resync_now()

    def resync_now(self) -> None:
        """Re-check every known object now (the periodic resync; tests call it after moving the clock)."""
        for key in list(self.known):
            self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key[0] == "ScheduledTask":
            self.tasks.invalidate(key)
        self.queue.add(key)

    # -- events -----------------------------------------------------------------------

    def _track(self, key: Key, event_type: str | None) -> bool:
        """Record whether `key` exists; True when it was deleted (its pending work is dropped)."""
        if event_type == "DELETED":
            self.known.discard(key)
            self.queue.forget(key)
            return True
        self.known.add(key)
        return False

    def on_owner_event(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key: Key = (kind, meta["namespace"], meta["name"])
        if self._track(key, event_type):
            self._set_refs(key, set())
        else:
            self.queue.add(key)
        # Groups that use this Workspace re-check readiness when it changes.
        self._wake_dependents(kind, meta["namespace"], meta["name"])
        if kind == "Group":
            # Runs waiting for their Group to become Ready, and running ones whose configuration may have changed.
            self._wake_group_runs(meta["namespace"], meta["name"])
            group = (meta["namespace"], meta["name"])
            if event_type == "DELETED" or group not in self._groups:
                # Tasks of a Group that appeared or went away: their acceptance changes.
                if event_type == "DELETED":
                    self._groups.discard(group)
                else:
                    self._groups.add(group)
                for task in self.tasks.tasks_of_group(*group):
                    self._enqueue(task)

    def on_task_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key: Key = ("ScheduledTask", meta["namespace"], meta["name"])
        self._track(key, event_type)
        if self.tasks.on_task_event(event_type, body):
            self.queue.add(key)

    def on_run_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key: Key = ("AgentRun", meta["namespace"], meta["name"])
        if self._track(key, event_type):
            self.runs.forget_run((meta["namespace"], meta["name"]))
        else:
            self.runs.observe_run(body)
            self.queue.add(key)
        task = self.tasks.on_run_event(event_type, body)
        if task is not None and task in self.known:
            self.queue.add(task)

    def on_pod_event(self, event_type: str | None, body: dict[str, Any]) -> None:
        run = self.runs.observe_pod(body, deleted=event_type == "DELETED")
        if run is not None:
            self._wake_run(run)

    def _wake_run(self, run: RunKey) -> None:
        self.queue.add(("AgentRun", *run))

    def _wake_group_runs(self, namespace: str, group: str) -> None:
        for run in self.runs.group_runs(namespace, group):
            self._wake_run(run)

    def on_child_event(self, body: dict[str, Any]) -> None:
        labels = body["metadata"].get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
            return
        ns = body["metadata"]["namespace"]
        if LABEL_GROUP in labels:
            self.queue.add(("Group", ns, labels[LABEL_GROUP]))
            # A changed ConfigMap changes what a new agent pod would run (ConfigCurrent).
            self._wake_group_runs(ns, labels[LABEL_GROUP])
        if LABEL_WORKSPACE in labels:
            self.queue.add(("Workspace", ns, labels[LABEL_WORKSPACE]))

    def on_referenced_event(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self._wake_dependents(kind, meta.get("namespace") or "", meta["name"])

    def _wake_dependents(self, kind: str, namespace: str, name: str) -> None:
        for key in self._dependents.get((kind, namespace, name), ()):
            self._enqueue(key)
            if key[0] == "Group":
                self._wake_group_runs(key[1], key[2])

    def _set_refs(self, key: Key, refs: set[Ref]) -> None:
        for ref in self._refs.pop(key, set()) - refs:
            self._dependents[ref].discard(key)
            if not self._dependents[ref]:
                del self._dependents[ref]
        for ref in refs:
            self._dependents[ref].add(key)
        if refs:
            self._refs[key] = refs

    # -- reconcile --------------------------------------------------------------------

    def _observe(self, key: Key, result: str, seconds: float) -> None:
        self.metrics.reconciled(key[0], result, seconds)

    async def reconcile(self, key: Key) -> float | None:
        try:
            return await self._reconcile(key)
        except KubeError as exc:
            if not exc.gone:
                raise
            # Deleted (or its namespace is terminating) while we worked: nothing left to do.
            log.debug("object went away during reconcile", key=str(key), error=exc.message)
            self._set_refs(key, set())
            return None

    async def _reconcile(self, key: Key) -> float | None:
        kind, namespace, name = key
        if kind == "ScheduledTask":
            return await self.tasks.reconcile(key)
        raw = await self.api.get(kind, namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self._set_refs(key, set())
            return None
        if kind == "AgentRun":
            return await self._run_reconciler.reconcile(raw)
        if kind == "Group":
            checks = await reconcile_group(self.api, raw, self.settings)
        else:
            checks = await reconcile_workspace(self.api, raw)
        self._set_refs(key, checks.refs)
        return None
