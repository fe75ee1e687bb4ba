"""Which AgentRuns may start now: at most one active run per Group, at most N cluster-wide.

`plan()` is the pure rule. `RunIndex` keeps what it needs in memory, fed by the AgentRun and Pod
watches, and serialises decisions with one lock, so concurrent reconcile workers never admit
more runs than the limits allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pynchy.operator.build.common import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_RUN, MANAGED_BY

if TYPE_CHECKING:
    from pynchy.kube.api import KubeApi

RunKey = tuple[str, str]  # (namespace, AgentRun name)
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "TimedOut"})
POD_DONE_PHASES = frozenset({"Succeeded", "Failed"})
AGENT_POD_SELECTOR = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "agent"}


@dataclass(frozen=True)
class RunView:
    """What admission needs to know about one AgentRun."""

    namespace: str
    name: str
    group: str
    created: str  # metadata.creationTimestamp (RFC 3339, UTC: sorts as text)
    uid: str = ""
    finished: bool = False  # status.phase is Succeeded, Failed or TimedOut
    completed: str = ""  # status.completionTime of a finished run
    started: bool = False  # a pod was created for it (status.podName, or admitted by this process)
    startable: bool = True  # its last reconcile found the Group Ready (unknown counts as startable)

    @property
    def key(self) -> RunKey:
        return (self.namespace, self.name)

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)


def is_active(run: RunView, pod_phases: Mapping[RunKey, str]) -> bool:
    """Has a pod that is not finished (or was given one that the watch has not shown yet)."""
    if run.finished:
        return False
    phase = pod_phases.get(run.key)
    if phase is not None:
        return phase not in POD_DONE_PHASES
    return run.started


def plan(runs: Iterable[RunView], pod_phases: Mapping[RunKey, str], limit: int) -> dict[RunKey, str | None]:
    """For each run that waits to start: None when it may start now, else why it waits.

    Waiting runs are taken in creation order (then namespace, name); a run whose Group already has
    an active (or earlier admitted) run is skipped without blocking later runs of other Groups.
    """
    runs = sorted((r for r in runs if not r.finished), key=lambda r: r.order)
    active_by_group: dict[tuple[str, str], str] = {}
    active = 0
    for run in runs:
        if is_active(run, pod_phases):
            active += 1
            active_by_group.setdefault((run.namespace, run.group), run.name)
    verdicts: dict[RunKey, str | None] = {}
    for run in runs:
        if run.started or not run.startable or run.key in pod_phases:
            continue
        holder = active_by_group.get((run.namespace, run.group))
        if holder is not None:
            verdicts[run.key] = f"Group {run.group} already has an active run {holder}"
        elif active >= limit:
            verdicts[run.key] = f"cluster limit of {limit} active runs reached"
        else:
            verdicts[run.key] = None
            active += 1
            active_by_group[(run.namespace, run.group)] = run.name
    return verdicts


def history_excess(runs: Iterable[RunView], limit: int) -> list[RunKey]:
    """Finished runs beyond `limit` per Group, oldest first (by completion, then creation, then name)."""
    by_group: dict[tuple[str, str], list[RunView]] = {}
    for run in runs:
        if run.finished:
            by_group.setdefault((run.namespace, run.group), []).append(run)
    excess: list[RunKey] = []
    for finished in by_group.values():
        finished.sort(key=lambda r: (r.completed or r.created, r.created, r.name))
        excess += [r.key for r in finished[: max(0, len(finished) - limit)]]
    return excess


def run_view(body: dict[str, Any], previous: RunView | None = None) -> RunView | None:
    """A RunView from an AgentRun as the API returns it (no validation: admission must see every run)."""
    meta = body.get("metadata") or {}
    group = ((body.get("spec") or {}).get("groupRef") or {}).get("name")
    if not meta.get("name") or not meta.get("namespace") or not isinstance(group, str):
        return None
    status = body.get("status") or {}
    finished = status.get("phase") in FINISHED_PHASES
    view = RunView(
        namespace=meta["namespace"],
        name=meta["name"],
        group=group,
        created=str(meta.get("creationTimestamp") or ""),
        uid=str(meta.get("uid") or ""),
        finished=finished,
        completed=str(status.get("completionTime") or "") if finished else "",
        started=bool(status.get("podName")),
    )
    if previous is not None and previous.uid == view.uid:
        # What this process decided is newer than what a lagging watch event says.
        view = replace(
            view,
            finished=view.finished or previous.finished,
            completed=view.completed or previous.completed,
            started=view.started or previous.started,
            startable=previous.startable,
        )
    return view


class RunIndex:
    """AgentRuns and agent-pod phases, kept from watch events; admission decisions under one lock."""

    def __init__(self, limit: int, history_limit: int, wake: Callable[[RunKey], None]) -> None:
        self.limit = limit
        self.history_limit = history_limit
        self._wake = wake
        self.lock = asyncio.Lock()
        self.runs: dict[RunKey, RunView] = {}
        self.pods: dict[RunKey, str] = {}
        self.created: set[RunKey] = set()  # runs whose pod this process created
        self._seeded = False

    # -- watch events ----------------------------------------------------------------------

    def observe_run(self, body: dict[str, Any], *, wake: bool = True) -> RunKey | None:
        """Record a run. A reconcile passes wake=False: waking the run it is working on would run it
        again at once, past the work queue's backoff."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        previous = self.runs.get(key)
        view = run_view(body, previous)  # a run re-created under the same name starts afresh
        if view is None:
            return None
        self.runs[key] = view
        # A new run only takes room (its own reconcile decides for it): a burst of new runs (a minute
        # when many ScheduledTasks are due) costs no plan() over every run per new run.
        if wake and not (previous is None and not view.finished):
            self.wake_admissible()
        return key

    def forget_run(self, key: RunKey) -> None:
        self.created.discard(key)
        self.pods.pop(key, None)
        if self.runs.pop(key, None) is not None:
            self.wake_admissible()

    def observe_pod(self, body: dict[str, Any], deleted: bool) -> RunKey | None:
        meta = body.get("metadata") or {}
        run = (meta.get("labels") or {}).get(LABEL_RUN)
        if not run:
            return None
        key = (meta["namespace"], run)
        before = self.pods.get(key)
        if deleted:
            self.pods.pop(key, None)
        else:
            self.pods[key] = (body.get("status") or {}).get("phase") or "Pending"
        if (before in POD_DONE_PHASES) != (self.pods.get(key) in POD_DONE_PHASES) or deleted:
            self.wake_admissible()
        return key

    async def seed(self, api: KubeApi, namespaces: list[str]) -> None:
        """Once, before the first decision: list runs and pods, so a restart cannot admit past the
        limits before the watches have delivered everything."""
        if self._seeded:
            return
        scopes: list[str | None] = [*namespaces] or [None]  # []: every namespace
        for ns in scopes:
            for body in await api.list("AgentRun", ns):
                view = run_view(body)
                if view is not None:
                    self.runs.setdefault(view.key, view)
            for pod in await api.list("Pod", ns, AGENT_POD_SELECTOR):
                run = (pod["metadata"].get("labels") or {}).get(LABEL_RUN)
                if run:
                    phase = (pod.get("status") or {}).get("phase") or "Pending"
                    self.pods.setdefault((pod["metadata"]["namespace"], run), phase)
        self._seeded = True

    # -- decisions ---------------------------------------------------------------------------

    def group_runs(self, namespace: str, group: str) -> list[RunKey]:
        return [k for k, r in self.runs.items() if r.namespace == namespace and r.group == group and not r.finished]

    def wake_admissible(self) -> None:
        """Enqueue every waiting run that may start now (their reconciles decide again, under the lock)."""
        for key, why in plan(self.runs.values(), self.pods, self.limit).items():
            if why is None:
                self._wake(key)

    def set_startable(self, key: RunKey, startable: bool) -> None:
        run = self.runs.get(key)
        if run is not None and run.startable != startable:
            self.runs[key] = replace(run, startable=startable)
            self.wake_admissible()

    def admit(self, run: RunView) -> str | None:
        """Call with `lock` held. None: the run may start and is now counted as active; else why it waits."""
        current = self.runs.get(run.key)
        self.runs[run.key] = replace(run, startable=True, started=current.started if current else run.started)
        verdicts = plan(self.runs.values(), self.pods, self.limit)
        if run.key not in verdicts:
            return "the run is not waiting to start"
        why = verdicts[run.key]
        if why is None:
            self.runs[run.key] = replace(self.runs[run.key], started=True)
        return why

    def unadmit(self, key: RunKey) -> None:
        """The pod could not be created: the run no longer holds a place."""
        run = self.runs.get(key)
        if run is not None:
            self.runs[key] = replace(run, started=False, startable=False)
        self.wake_admissible()

    def set_pod(self, key: RunKey, phase: str | None) -> None:
        """What a reconcile just read, which may be newer than the watch."""
        if phase is None:
            self.pods.pop(key, None)
        else:
            self.pods[key] = phase

    def finish(self, key: RunKey, completed: str) -> None:
        self.created.discard(key)
        run = self.runs.get(key)
        if run is not None and not run.finished:
            self.runs[key] = replace(run, finished=True, completed=completed)
            self.wake_admissible()

    def take_history_excess(self, namespace: str, group: str) -> list[RunView]:
        """Finished runs of the Group beyond the history limit; removed from the index at once so
        concurrent reconciles never delete the same run twice. Call with `lock` held."""
        mine = [r for r in self.runs.values() if r.namespace == namespace and r.group == group]
        return [self.runs.pop(key) for key in history_excess(mine, self.history_limit)]
