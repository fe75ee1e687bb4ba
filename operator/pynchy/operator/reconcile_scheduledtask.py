"""ScheduledTask → one AgentRun per due time, exactly once; a status with the last and next due
times, the active runs, a bounded history and the conditions.

The work queue is the timer. A reconcile reads the task, decides with the pure schedule core
(``pynchy.schedule.decide``), creates what is due and returns the delay until the next due time,
capped at ``MAX_WAIT`` seconds so a clock that moved (NTP, a suspended laptop, a test clock) is
honoured soon. Waking up early costs nothing: while neither the task nor its runs changed since
the last full reconcile (same resourceVersion, no run event) and the next due time has not come,
the reconcile only re-arms its timer, without a request.

Exactly once: the run's name is derived from the task and the due time, so a second create (an
operator restart, a second replica, a retry) gets 409 Conflict, which means "already fired". The
due time a run was created for, or that was recorded as Skipped or Missed, counts as handled and
is fed back into ``decide`` as ``last_scheduled``.

The task's AgentRuns are known from the AgentRun watch (label ``pynchy.dev/scheduled-task``,
controller owner = this task's uid), listed once before the first decision after a start, and
updated at once with what this process creates and deletes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import ScheduledTask
from pynchy.errors import TemporaryError
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy.operator.admission import FINISHED_PHASES
from pynchy.operator.build.common import LABEL_SCHEDULED_TASK, parse_timestamp, timestamp
from pynchy.operator.build.scheduledtask import scheduled_run
from pynchy.operator.conditions import Cond
from pynchy.operator.events import record_event
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.status import NOT_ACCEPTED, invalid_spec_fields, publish, status_fields
from pynchy.schedule import Decision, Done, Fire, Invalid, Missed, Skip, Suspended, TaskState, decide, run_name
from pynchy.schedule.validate import validate_schedule

log = get_logger(__name__)

Clock = Callable[[], dt.datetime]
TaskKey = tuple[str, str]  # (namespace, ScheduledTask name)
Key = tuple[str, str, str]  # ("ScheduledTask", namespace, name): the work-queue key

MAX_WAIT = 60.0  # longest timer: a clock that jumped is noticed within this many seconds
RETRY_REFUSED = 60.0  # the API server refused the run (quota, admission policy): try again after this
HISTORY_LIMIT = 20  # status.history maxItems
ACTIVE_LIMIT = 50  # status.active maxItems
SUMMARY_LIMIT = 512  # RunRecord.summary maxLength
DELETED_UNFINISHED = "The AgentRun was deleted before it finished."


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- pure: what a task's runs say ---------------------------------------------------------------


@dataclass(frozen=True)
class TaskRun:
    """One AgentRun of a ScheduledTask, as the history needs it."""

    namespace: str
    name: str
    task: str
    uid: str = ""
    owner_uid: str = ""  # the controlling ScheduledTask's uid ("" if none)
    scheduled_time: str = ""  # spec.trigger.scheduledTime (else creationTimestamp)
    phase: str = ""
    start_time: str | None = None
    finish_time: str | None = None
    summary: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "Active"
        return "Succeeded" if self.phase == "Succeeded" else "Failed"


def task_run(body: dict[str, Any]) -> TaskRun | None:
    """A TaskRun from an AgentRun as the API returns it; None unless it carries the task label."""
    meta = body.get("metadata") or {}
    task = (meta.get("labels") or {}).get(LABEL_SCHEDULED_TASK)
    if not task or not meta.get("name") or not meta.get("namespace"):
        return None
    owner = next(
        (
            r.get("uid", "")
            for r in meta.get("ownerReferences") or []
            if r.get("kind") == "ScheduledTask" and r.get("controller")
        ),
        "",
    )
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    phase = str(status.get("phase") or "")
    summary: str | None = None
    if phase == "Succeeded":
        summary = status.get("lastReply") or None
    elif phase in FINISHED_PHASES:
        reason, message = status.get("reason"), status.get("message")
        summary = ": ".join(str(p) for p in (reason, message) if p) or None
    return TaskRun(
        namespace=meta["namespace"],
        name=meta["name"],
        task=task,
        uid=str(meta.get("uid") or ""),
        owner_uid=str(owner),
        scheduled_time=str((spec.get("trigger") or {}).get("scheduledTime") or meta.get("creationTimestamp") or ""),
        phase=phase,
        start_time=status.get("startTime"),
        finish_time=status.get("completionTime") if phase in FINISHED_PHASES else None,
        summary=summary[:SUMMARY_LIMIT] if summary else None,
    )


def _parse(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def last_handled(status: dict[str, Any], runs: Iterable[TaskRun]) -> dt.datetime | None:
    """The latest due time already handled: status.lastScheduleTime, the history (runs, Skipped and
    Missed records), and the due times of the task's runs (a run created just before a crash, whose
    status write never happened, counts too)."""
    times = [status.get("lastScheduleTime")]
    times += [rec.get("scheduledTime") for rec in status.get("history") or []]
    times += [run.scheduled_time for run in runs]
    parsed = [t for t in (_parse(v) for v in times) if t is not None]
    return max(parsed, default=None)


def _latest(recorded: str | None, candidates: Iterable[str | None]) -> str | None:
    """`recorded`, or the latest of `candidates` when one is later (the text as it was written)."""
    best, best_time = recorded, _parse(recorded)
    for value in candidates:
        when = _parse(value)
        if when is not None and (best_time is None or when > best_time):
            best, best_time = value, when
    return best


def latest_schedule(status: dict[str, Any], runs: Iterable[TaskRun]) -> str | None:
    """status.lastScheduleTime, or the due time of a newer run (created before a crash lost the write)."""
    return _latest(status.get("lastScheduleTime"), (run.scheduled_time for run in runs))


def run_record(run: TaskRun, *, gone: bool = False) -> dict[str, Any]:
    """A status.history entry for a run (a run that is gone without finishing counts as Failed)."""
    outcome = run.outcome
    summary = run.summary
    if gone and outcome == "Active":
        outcome, summary = "Failed", DELETED_UNFINISHED
    record: dict[str, Any] = {"runName": run.name, "scheduledTime": run.scheduled_time, "outcome": outcome}
    if run.start_time:
        record["startTime"] = run.start_time
    if run.finish_time and outcome != "Active":
        record["finishTime"] = run.finish_time
    if summary:
        record["summary"] = summary[:SUMMARY_LIMIT]
    return record


def _same_for_task(a: TaskRun, b: TaskRun) -> bool:
    return a.owner_uid == b.owner_uid and run_record(a) == run_record(b)


def note_record(outcome: str, scheduled_time: dt.datetime, summary: str) -> dict[str, Any]:
    """A Skipped or Missed entry: a due time that got no run (it exists only in the status)."""
    return {"scheduledTime": timestamp(scheduled_time), "outcome": outcome, "summary": summary[:SUMMARY_LIMIT]}


def _record_key(record: dict[str, Any]) -> tuple[str, str]:
    return ("run", record["runName"]) if record.get("runName") else (record["outcome"], record["scheduledTime"])


def merge_history(
    previous: list[dict[str, Any]],
    runs: Iterable[TaskRun],
    gone: Iterable[TaskRun] = (),
    added: Iterable[dict[str, Any]] = (),
    limit: int = HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """The new status.history, newest due time first, at most `limit` entries.

    Existing runs are described as they are now; a finished record stays as it was after its run
    is deleted (TTL, history limits); an Active record whose run is gone becomes Failed, with the
    run's last known state when the watch saw it go (`gone`). Skipped and Missed records are kept.
    """
    by_key: dict[tuple[str, str], dict[str, Any]] = {_record_key(r): dict(r) for r in previous if r.get("outcome")}
    current = {run.name: run for run in runs}
    departed = {run.name: run for run in gone if run.name not in current}
    for key, record in list(by_key.items()):
        name = record.get("runName")
        if record["outcome"] == "Active" and name and name not in current:
            by_key[key] = run_record(departed[name], gone=True) if name in departed else _deleted(record)
    for run in departed.values():
        by_key.setdefault(("run", run.name), run_record(run, gone=True))
    for run in current.values():
        by_key[("run", run.name)] = run_record(run)
    for record in added:
        by_key[_record_key(record)] = record

    def order(record: dict[str, Any]) -> tuple[dt.datetime, str]:
        when = _parse(record.get("scheduledTime")) or dt.datetime.min.replace(tzinfo=dt.UTC)
        return when, record.get("runName") or ""

    return sorted(by_key.values(), key=order, reverse=True)[:limit]


def _deleted(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "outcome": "Failed", "summary": DELETED_UNFINISHED}


def excess_runs(runs: Iterable[TaskRun], successful_limit: int, failed_limit: int) -> list[TaskRun]:
    """Finished runs beyond the task's history limits, oldest first (by finish, then due time)."""
    excess: list[TaskRun] = []
    for outcome, limit in (("Succeeded", successful_limit), ("Failed", failed_limit)):
        done = sorted(
            (r for r in runs if r.finished and r.outcome == outcome),
            key=lambda r: (r.finish_time or r.scheduled_time, r.scheduled_time, r.name),
        )
        excess += done[: max(0, len(done) - limit)]
    return excess


def last_success(status: dict[str, Any], runs: Iterable[TaskRun]) -> str | None:
    return _latest(status.get("lastSuccessfulTime"), (run.finish_time for run in runs if run.outcome == "Succeeded"))


def task_status(
    raw: dict[str, Any],
    accepted: Cond,
    ready: Cond,
    *,
    runs: list[TaskRun],
    gone: Iterable[TaskRun] = (),
    added: Iterable[dict[str, Any]] = (),
    last_schedule: str | None = None,
    next_time: dt.datetime | None = None,
) -> dict[str, Any]:
    """The status fields of a task (only the ones the operator writes)."""
    status = raw.get("status") or {}
    gone = list(gone)
    active = sorted(r.name for r in runs if not r.finished)[:ACTIVE_LIMIT]
    return status_fields(
        raw,
        accepted,
        ready,
        lastScheduleTime=last_schedule,
        lastSuccessfulTime=last_success(status, [*runs, *gone]),
        nextScheduleTime=timestamp(next_time) if next_time is not None else None,
        active=[{"name": name} for name in active],
        history=merge_history(status.get("history") or [], runs, gone, added),
    )


ACCEPTED_MESSAGE = "The schedule is valid and Group {group} exists."
READY_SCHEDULED = Cond(
    "Ready", True, "Scheduled", "Runs start at their due times; status.nextScheduleTime is the next."
)
READY_SUSPENDED = Cond("Ready", True, "Suspended", "spec.suspend is true: no new runs start; active runs continue.")
READY_COMPLETED = Cond("Ready", True, "Completed", "The one-off run was handled; nothing more is scheduled.")


def describe_decision(decision: Decision, task: ScheduledTask, now: dt.datetime) -> tuple[str, str, str] | None:
    """The Event (type, reason, message) a decision deserves, if any (a plain Fire or Wait has none)."""
    if isinstance(decision, Missed):
        late = int((now - decision.scheduled_time).total_seconds())
        message = (
            f"The run due at {timestamp(decision.scheduled_time)} did not start: it is {late}s past its due time, "
            f"beyond startingDeadlineSeconds ({task.spec.starting_deadline_seconds}s)."
        )
        if decision.missed_count > 1:
            more = "at least " if decision.too_many_missed else ""
            message += f" {more}{decision.missed_count} due times were missed in all."
        return "Warning", "MissedSchedule", message
    if isinstance(decision, Skip):
        return (
            "Normal",
            "Skipped",
            f"The run due at {timestamp(decision.scheduled_time)} was skipped: {', '.join(decision.active)} "
            "still active and concurrencyPolicy is Forbid.",
        )
    if isinstance(decision, Fire) and decision.missed_count:
        more = "at least " if decision.too_many_missed else ""
        return (
            "Warning",
            "MissedSchedules",
            f"{more}{decision.missed_count} earlier due times passed without a run; only the most recent one, "
            f"{timestamp(decision.scheduled_time)}, was started (at most one catch-up run).",
        )
    return None


# -- what this process knows about the tasks' runs ------------------------------------------------


class TaskRuns:
    """AgentRuns of ScheduledTasks by task, fed by the AgentRun watch and by what this process creates
    and deletes; listed once before the first decision after a start."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self._runs: dict[TaskKey, dict[str, TaskRun]] = {}
        self._gone: dict[TaskKey, dict[str, TaskRun]] = {}
        self._tracked: set[TaskKey] = set()  # tasks that exist (their deleted runs go to `_gone`)
        self._deleting: set[str] = set()  # uids this process deleted: later events of them are stale
        self._deleted_while_seeding: set[str] = set()
        self._seeded = False

    def observe(self, body: dict[str, Any], *, deleted: bool = False) -> TaskKey | None:
        """Record a run; returns its task when that changes anything the task's status or decisions
        read (not for a metadata patch or a Pending reason that changes, say)."""
        run = task_run(body)
        if run is None:
            return None
        key = (run.namespace, run.task)
        if deleted:
            self._deleting.discard(run.uid)
            if not self._seeded:
                self._deleted_while_seeding.add(run.uid)
            runs = self._runs.get(key, {})
            if run.name in runs and runs[run.name].uid == run.uid:
                del runs[run.name]
            if not runs:
                self._runs.pop(key, None)
            if key in self._tracked:
                self._gone.setdefault(key, {}).setdefault(run.name, run)
            return key
        if run.uid in self._deleting:
            return None
        runs = self._runs.setdefault(key, {})
        before = runs.get(run.name)
        runs[run.name] = run
        if before is not None and before.uid == run.uid and _same_for_task(before, run):
            return None
        return key

    def removed(self, run: TaskRun, *, summary: str | None = None, finished_at: str | None = None) -> None:
        """This process deleted `run`: forget it now, keep what history should say about it."""
        self._deleting.add(run.uid)
        runs = self._runs.get((run.namespace, run.task), {})
        runs.pop(run.name, None)
        if summary is not None:
            run = replace(run, phase="Failed", summary=summary, finish_time=run.finish_time or finished_at)
        self._gone.setdefault((run.namespace, run.task), {})[run.name] = run

    def of(self, key: TaskKey, owner_uid: str) -> list[TaskRun]:
        return [r for r in self._runs.get(key, {}).values() if r.owner_uid == owner_uid]

    def gone_of(self, key: TaskKey, owner_uid: str) -> list[TaskRun]:
        return [r for r in self._gone.get(key, {}).values() if r.owner_uid == owner_uid]

    def settle_gone(self, key: TaskKey, names: Iterable[str]) -> None:
        """The status now records these departed runs."""
        gone = self._gone.get(key)
        if gone is not None:
            for name in names:
                gone.pop(name, None)
            if not gone:
                del self._gone[key]

    def track(self, key: TaskKey) -> None:
        self._tracked.add(key)

    def forget_task(self, key: TaskKey) -> None:
        self._tracked.discard(key)
        self._gone.pop(key, None)

    async def seed(self, api: KubeApi, namespaces: list[str]) -> None:
        """Once: list the tasks' runs, so a restart cannot decide before the watch delivered them."""
        if self._seeded:
            return
        async with self.lock:
            if self._seeded:
                return  # type: ignore[unreachable]  # mypy keeps the narrowing across the await; another task seeded
            scopes: list[str | None] = [*namespaces] or [None]  # []: every namespace
            for ns in scopes:
                listed = await api.request(
                    "GET", api.path("AgentRun", ns), query={"labelSelector": LABEL_SCHEDULED_TASK}
                )
                for body in listed.get("items", []):
                    run = task_run(body)
                    if run is None or run.uid in self._deleted_while_seeding or run.uid in self._deleting:
                        continue
                    self._runs.setdefault((run.namespace, run.task), {}).setdefault(run.name, run)
            self._seeded = True
            self._deleted_while_seeding.clear()


# -- the reconcile ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fresh:
    """After a full reconcile: the task as it was then (its resourceVersion), when it needs the next
    real look, and what is planned for that moment if nothing changes until then."""

    resource_version: str
    next_check: dt.datetime | None
    raw: dict[str, Any] | None = None
    task: ScheduledTask | None = None
    planned: Fire | None = None

    def fires_now(self, now: dt.datetime) -> Fire | None:
        """The planned run, if `now` is still its moment: due, before the following due time, within
        the starting deadline. Then `decide` would say exactly this (nothing changed meanwhile)."""
        fire, task = self.planned, self.task
        if fire is None or task is None or task.spec.suspend or now < fire.scheduled_time:
            return None
        if fire.next_time is not None and now >= fire.next_time:
            return None
        deadline = task.spec.starting_deadline_seconds
        if deadline is not None and (now - fire.scheduled_time).total_seconds() > deadline:
            return None
        return fire


class TaskReconciler:
    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        clock: Clock = utc_now,
        group_seen: Callable[[str, str], bool] = lambda ns, name: False,
    ) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock
        self.runs = TaskRuns()
        self._group_seen = group_seen
        self._fresh: dict[Key, Fresh] = {}
        self._epoch: dict[Key, int] = {}
        self._group_of: dict[Key, tuple[str, str]] = {}

    # -- events ---------------------------------------------------------------------------------

    def invalidate(self, key: Key) -> None:
        """Something about the task may have changed: the next reconcile reads everything again."""
        self._epoch[key] = self._epoch.get(key, 0) + 1
        self._fresh.pop(key, None)

    def on_task_event(self, event_type: str | None, body: dict[str, Any]) -> bool:
        """Returns whether the task needs a reconcile (not for the echo of our own status write)."""
        meta = body["metadata"]
        key: Key = ("ScheduledTask", meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self.forget(key)
            return False
        self.runs.track((meta["namespace"], meta["name"]))
        fresh = self._fresh.get(key)
        if fresh is not None and fresh.resource_version == meta.get("resourceVersion"):
            return False
        self.invalidate(key)
        return True

    def on_run_event(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """The task whose run changed (to be woken), if the run belongs to one."""
        task = self.runs.observe(body, deleted=event_type == "DELETED")
        if task is None:
            return None
        key: Key = ("ScheduledTask", *task)
        self.invalidate(key)
        return key

    def tasks_of_group(self, namespace: str, group: str) -> list[Key]:
        return [key for key, ref in self._group_of.items() if ref == (namespace, group)]

    def forget(self, key: Key) -> None:
        self._fresh.pop(key, None)
        self._epoch.pop(key, None)
        self._group_of.pop(key, None)
        self.runs.forget_task((key[1], key[2]))

    # -- reconcile ------------------------------------------------------------------------------

    def _delay(self, next_check: dt.datetime | None) -> float | None:
        if next_check is None:
            return None
        remaining = (next_check - self.clock()).total_seconds()
        return min(MAX_WAIT, remaining) if remaining > 0 else 1.0

    async def reconcile(self, key: Key) -> float | None:
        """Returns seconds until the task needs another look, or None (nothing is coming)."""
        fresh = self._fresh.get(key)
        if fresh is not None:
            now = self.clock()
            if fresh.next_check is None or fresh.next_check > now:
                return self._delay(fresh.next_check)  # a timer woke us early; nothing changed
            fire = fresh.fires_now(now)
            if fire is not None and fresh.raw is not None and fresh.task is not None:
                return await self._fire_planned(key, fresh.raw, fresh.task, fire, now)
        epoch = self._epoch.get(key, 0)
        raw = await self.api.get("ScheduledTask", key[1], key[2])
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self.forget(key)
            return None
        fresh = await self._reconcile(raw)
        if self._epoch.get(key, 0) == epoch:
            self._fresh[key] = fresh
        return self._delay(fresh.next_check)

    async def _fire_planned(
        self, key: Key, raw: dict[str, Any], task: ScheduledTask, fire: Fire, now: dt.datetime
    ) -> float:
        """The due time came and nothing changed since the last full reconcile: create the run at once,
        with no read first, and leave the status to a full reconcile queued behind it (so a burst of
        tasks due together creates all their runs before it writes their statuses)."""
        self.invalidate(key)
        events: list[tuple[str, str, str]] = []
        runs = self.runs.of((key[1], key[2]), raw["metadata"]["uid"])
        if not await self._fire(raw, task, fire, runs, now, events):
            event = describe_decision(fire, task, now)
            for type_, reason, message in [*events, *([event] if event else [])]:
                await record_event(self.api, raw, type_, reason, message)
        return 0.0

    async def _reconcile(self, raw: dict[str, Any]) -> Fresh:
        meta = raw["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        key: Key = ("ScheduledTask", ns, name)
        tkey: TaskKey = (ns, name)
        self.runs.track(tkey)
        try:
            task = ScheduledTask.from_k8s(raw)
        except ValidationError as exc:
            written = await publish(self.api, raw, invalid_spec_fields(raw, exc)[0])
            return Fresh((written or raw)["metadata"].get("resourceVersion", ""), None)
        spec = task.spec
        group = spec.group_ref.name
        self._group_of[key] = (ns, group)
        await self.runs.seed(self.api, list(self.settings.namespaces))
        now = self.clock()
        created_at = parse_timestamp(meta["creationTimestamp"])
        status = raw.get("status") or {}

        problems = validate_schedule(spec.schedule, spec.time_zone, now, created_at)
        if problems:
            accepted = Cond("Accepted", False, "InvalidSchedule", "; ".join(problems))
        elif not await self._group_exists(ns, group):
            accepted = Cond(
                "Accepted",
                False,
                "GroupNotFound",
                f"Group {group!r} does not exist in namespace {ns!r}; create it or fix spec.groupRef",
            )
        else:
            accepted = Cond("Accepted", True, "Accepted", ACCEPTED_MESSAGE.format(group=group))

        ready = NOT_ACCEPTED
        runs, gone = self.runs.of(tkey, uid), self.runs.gone_of(tkey, uid)
        last_schedule = latest_schedule(status, [*runs, *gone])
        next_time: dt.datetime | None = None
        next_check: dt.datetime | None = None
        added: list[dict[str, Any]] = []
        events: list[tuple[str, str, str]] = []
        if accepted.status:
            state = TaskState.from_spec(
                spec,
                created_at=created_at,
                last_scheduled=last_handled(status, [*runs, *gone]),
                active=[r.name for r in runs if not r.finished],
            )
            decision = decide(now, state)
            handled = True
            next_time = next_check = decision.next_time
            ready = READY_SCHEDULED
            if isinstance(decision, Fire):
                refusal = await self._fire(raw, task, decision, runs, now, events)
                if refusal:
                    ready = Cond("Ready", False, "RunRefused", refusal)
                    next_check = now + dt.timedelta(seconds=RETRY_REFUSED)
                    handled = False  # decided again at the retry, and reported then
                else:
                    last_schedule = timestamp(decision.scheduled_time)
            elif isinstance(decision, Skip):
                why = f"{', '.join(decision.active)} still active (concurrencyPolicy Forbid)"
                added.append(note_record("Skipped", decision.scheduled_time, why))
            elif isinstance(decision, Missed):
                late = int((now - decision.scheduled_time).total_seconds())
                why = f"not started within startingDeadlineSeconds ({spec.starting_deadline_seconds}s): {late}s late"
                added.append(note_record("Missed", decision.scheduled_time, why))
            elif isinstance(decision, Suspended):
                ready = READY_SUSPENDED
            elif isinstance(decision, Done):
                ready = READY_COMPLETED
            elif isinstance(decision, Invalid):  # validated above; kept for completeness
                accepted = Cond("Accepted", False, "InvalidSchedule", "; ".join(decision.problems))
                ready, next_time, next_check = NOT_ACCEPTED, None, None
            if handled and isinstance(decision, Fire | Skip | Missed) and decision.next_time is None:
                ready = READY_COMPLETED  # a once, handled now: nothing more will be due
            event = describe_decision(decision, task, now) if handled else None
            if event is not None:
                events.append(event)

        for run in excess_runs(
            self.runs.of(tkey, uid), spec.successful_runs_history_limit, spec.failed_runs_history_limit
        ):
            log.info("deleting finished scheduled run beyond the history limit", namespace=ns, task=name, run=run.name)
            await self.api.delete("AgentRun", ns, run.name, uid=run.uid or None)
            self.runs.removed(run)

        runs, gone = self.runs.of(tkey, uid), self.runs.gone_of(tkey, uid)
        fields = task_status(
            raw, accepted, ready, runs=runs, gone=gone, added=added, last_schedule=last_schedule, next_time=next_time
        )
        written = await publish(self.api, raw, fields)
        for type_, reason, message in events:
            await record_event(self.api, raw, type_, reason, message)
        self.runs.settle_gone(tkey, [r.name for r in gone])
        current = written or raw
        planned: Fire | None = None
        if accepted.status and next_time is not None and next_check == next_time:
            # What the next due time will bring if nothing changes until then (any change to the
            # task or its runs drops this), so that moment needs no read and no schedule maths.
            after = TaskState.from_spec(
                spec,
                created_at=created_at,
                last_scheduled=last_handled({**status, **fields}, [*runs, *gone]),
                active=[r.name for r in runs if not r.finished],
            )
            upcoming = decide(next_time, after)
            if isinstance(upcoming, Fire) and upcoming.scheduled_time == next_time:
                planned = upcoming
        version = current["metadata"].get("resourceVersion", "")
        return Fresh(version, next_check, {**raw, "metadata": current["metadata"]}, task, planned)

    async def _fire(
        self,
        raw: dict[str, Any],
        task: ScheduledTask,
        decision: Fire,
        runs: list[TaskRun],
        now: dt.datetime,
        events: list[tuple[str, str, str]],
    ) -> str | None:
        """Create the run for the due time (after deleting the active ones for Replace). Returns why
        the API server refused it, or None (created, or it existed already: fired before)."""
        meta = raw["metadata"]
        ns, name = meta["namespace"], meta["name"]
        new_name = run_name(name, decision.scheduled_time)
        by_name = {r.name: r for r in runs}
        for old in decision.replace_active:
            run = by_name.get(old)
            if run is None or old == new_name:
                continue
            log.info("replacing active scheduled run", namespace=ns, task=name, run=old, by=new_name)
            await self.api.delete("AgentRun", ns, old, uid=run.uid or None)
            self.runs.removed(
                run, summary=f"Replaced by {new_name} (concurrencyPolicy Replace).", finished_at=timestamp(now)
            )
            events.append(
                ("Normal", "Replaced", f"Deleted active run {old} to start {new_name} (concurrencyPolicy Replace).")
            )
        manifest = scheduled_run(task, raw, decision.scheduled_time)
        try:
            created = await self.api.create(manifest)
        except KubeError as exc:
            if exc.status == 409:
                log.info("scheduled run exists already (fired before)", namespace=ns, task=name, run=new_name)
                return None
            if isinstance(exc, TemporaryError) or exc.gone:
                raise
            log.warning(
                "the API server refused a scheduled run", namespace=ns, task=name, run=new_name, error=exc.message
            )
            return f"the API server refused AgentRun {new_name}: {exc.message}"[:4000]
        self.runs.observe(created)
        log.info(
            "scheduled run created",
            namespace=ns,
            task=name,
            run=new_name,
            scheduled=timestamp(decision.scheduled_time),
        )
        return None

    async def _group_exists(self, namespace: str, group: str) -> bool:
        if self._group_seen(namespace, group):
            return True
        return await self.api.get("Group", namespace, group) is not None
