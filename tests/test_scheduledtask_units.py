"""The ScheduledTask controller without a cluster: its pure parts, and the reconciler driven by a
test clock against an in-memory API (days of schedule in milliseconds, DST included)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from doubles.clock import TestClock
from pynchy.api.resources import ScheduledTask
from pynchy.operator.build.scheduledtask import parse_timestamp, scheduled_run, timestamp
from pynchy.operator.conditions import condition
from pynchy.operator.kubeapi import KubeApi, KubeError
from pynchy.operator.reconcile_scheduledtask import (
    DELETED_UNFINISHED,
    MAX_WAIT,
    TaskReconciler,
    TaskRun,
    excess_runs,
    last_handled,
    merge_history,
    task_run,
)
from pynchy.operator.settings import OperatorSettings
from pynchy.schedule import run_name

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
NS = "home"
SETTINGS = OperatorSettings(run_token_key="unit-run-token-key-0123456789abcdef0123")


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def berlin(*args: int, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BERLIN, fold=fold).astimezone(UTC)


# -- pure parts ------------------------------------------------------------------------------------


def agentrun_body(
    name: str, *, task: str = "t", owner: str = "uid-t", scheduled: str = "2027-01-01T09:00:00Z", **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "creationTimestamp": "2027-01-01T09:00:01Z",
            "labels": {"pynchy.dev/scheduled-task": task, "pynchy.dev/group": "g"},
            "ownerReferences": [{"kind": "ScheduledTask", "name": task, "uid": owner, "controller": True}],
        },
        "spec": {"groupRef": {"name": "g"}, "trigger": {"kind": "Schedule", "scheduledTime": scheduled}},
        "status": status,
    }


def test_task_run_reads_outcome_times_and_summary() -> None:
    ok = task_run(
        agentrun_body(
            "t-1",
            phase="Succeeded",
            startTime="2027-01-01T09:00:05Z",
            completionTime="2027-01-01T09:01:00Z",
            lastReply="x" * 600,
            message="The agent exited with code 0.",
        )
    )
    assert ok is not None
    assert (ok.task, ok.owner_uid, ok.outcome, ok.scheduled_time) == ("t", "uid-t", "Succeeded", "2027-01-01T09:00:00Z")
    assert (ok.start_time, ok.finish_time) == ("2027-01-01T09:00:05Z", "2027-01-01T09:01:00Z")
    assert ok.summary == "x" * 512  # the reply, truncated to the status field's limit
    failed = task_run(agentrun_body("t-2", phase="TimedOut", reason="DeadlineExceeded", message="too slow"))
    assert failed is not None
    assert (failed.outcome, failed.summary) == ("Failed", "DeadlineExceeded: too slow")
    pending = task_run(agentrun_body("t-3", phase="Pending", reason="Queued", message="waits"))
    assert pending is not None
    assert (pending.outcome, pending.summary, pending.finish_time) == ("Active", None, None)
    unlabelled = agentrun_body("x")
    del unlabelled["metadata"]["labels"]["pynchy.dev/scheduled-task"]
    assert task_run(unlabelled) is None


def run(name: str, scheduled: str, phase: str = "", finish: str | None = None) -> TaskRun:
    return TaskRun(NS, name, "t", uid=f"uid-{name}", scheduled_time=scheduled, phase=phase, finish_time=finish)


def test_history_merges_runs_notes_and_runs_that_are_gone() -> None:
    previous = [
        {"runName": "t-3", "scheduledTime": "2027-01-01T03:00:00Z", "outcome": "Active"},
        {"runName": "t-2", "scheduledTime": "2027-01-01T02:00:00Z", "outcome": "Active"},
        {"scheduledTime": "2027-01-01T01:30:00Z", "outcome": "Skipped", "summary": "t-1 still active"},
        {"runName": "t-1", "scheduledTime": "2027-01-01T01:00:00Z", "outcome": "Succeeded", "summary": "done"},
    ]
    current = [run("t-4", "2027-01-01T04:00:00Z"), run("t-3", "2027-01-01T03:00:00Z", "Failed", "2027-01-01T03:05Z")]
    gone = [run("t-2", "2027-01-01T02:00:00Z", "Succeeded", "2027-01-01T02:01:00Z")]
    missed = {"scheduledTime": "2027-01-01T05:00:00Z", "outcome": "Missed", "summary": "late"}
    history = merge_history(previous, current, gone, [missed])
    assert [(h.get("runName"), h["outcome"]) for h in history] == [
        (None, "Missed"),
        ("t-4", "Active"),
        ("t-3", "Failed"),
        ("t-2", "Succeeded"),  # finished before it was deleted: the watch saw its last state
        (None, "Skipped"),
        ("t-1", "Succeeded"),  # its run was deleted long ago: the record stays as it was
    ]
    # An Active record whose run vanished without a trace is reported, not kept Active forever.
    assert merge_history(previous[:1], [], [])[0] | {} == {
        "runName": "t-3",
        "scheduledTime": "2027-01-01T03:00:00Z",
        "outcome": "Failed",
        "summary": DELETED_UNFINISHED,
    }
    # A finished record never changes again, whatever a late event says.
    assert merge_history(previous[3:], [], [run("t-1", "2027-01-01T01:00:00Z")]) == previous[3:]
    # Bounded.
    many = [run(f"t-{i}", timestamp(utc(2027, 1, 1) + dt.timedelta(hours=i))) for i in range(30)]
    history = merge_history([], many)
    assert len(history) == 20
    assert history[0]["runName"] == "t-29"


def test_excess_runs_keeps_the_newest_per_outcome() -> None:
    runs = [run(f"ok-{i}", f"2027-01-01T0{i}:00:00Z", "Succeeded", f"2027-01-01T0{i}:30:00Z") for i in range(5)]
    runs += [run(f"bad-{i}", f"2027-01-02T0{i}:00:00Z", "Failed", f"2027-01-02T0{i}:30:00Z") for i in range(3)]
    runs += [run("active", "2027-01-03T00:00:00Z")]
    assert [r.name for r in excess_runs(runs, 3, 1)] == ["ok-0", "ok-1", "bad-0", "bad-1"]
    assert [r.name for r in excess_runs(runs, 0, 0)] == [r.name for r in runs[:-1]]


def test_last_handled_takes_the_newest_of_status_notes_and_runs() -> None:
    status = {
        "lastScheduleTime": "2027-01-01T01:00:00Z",
        "history": [{"scheduledTime": "2027-01-01T02:00:00Z", "outcome": "Missed"}],
    }
    assert last_handled(status, []) == utc(2027, 1, 1, 2)
    assert last_handled(status, [run("t-9", "2027-01-01T03:00:00Z")]) == utc(2027, 1, 1, 3)
    assert last_handled({}, []) is None


def test_scheduled_run_manifest() -> None:
    raw = task_body("brief", {"cron": "0 9 * * *"}, contextMode="group", deliver=False)
    manifest = scheduled_run(ScheduledTask.from_k8s(raw), raw, utc(2027, 1, 4, 9, 0, 0, 250000))
    assert manifest["metadata"] == {
        "name": f"brief-{int(utc(2027, 1, 4, 9).timestamp()) // 60}",
        "namespace": NS,
        "labels": {"pynchy.dev/group": "g", "pynchy.dev/scheduled-task": "brief"},
        "ownerReferences": [
            {
                "apiVersion": "pynchy.dev/v1alpha1",
                "kind": "ScheduledTask",
                "name": "brief",
                "uid": "uid-brief",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    assert manifest["spec"] == {
        "groupRef": {"name": "g"},
        "trigger": {
            "kind": "Schedule",
            "scheduledTaskRef": {"name": "brief"},
            "scheduledTime": "2027-01-04T09:00:00.250000Z",  # lossless: it is fed back as "handled"
        },
        "prompt": "Do the thing.",
        "contextMode": "group",
        "deliver": False,
    }
    assert parse_timestamp(manifest["spec"]["trigger"]["scheduledTime"]) == utc(2027, 1, 4, 9, 0, 0, 250000)


# -- the reconciler against an in-memory API --------------------------------------------------------


def task_body(name: str, schedule: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "ScheduledTask",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2027-01-01T00:00:00Z",
        },
        "spec": {
            "groupRef": {"name": "g"},
            "prompt": "Do the thing.",
            "schedule": schedule,
            "timeZone": "UTC",
            "contextMode": "isolated",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "suspend": False,
            "deliver": True,
            "successfulRunsHistoryLimit": 3,
            "failedRunsHistoryLimit": 1,
            **spec,
        },
    }


class FakeApi:
    """Just enough of KubeApi: objects in a dict, 409 on a duplicate create, writes recorded."""

    path = staticmethod(KubeApi.path)

    def __init__(self, clock: TestClock) -> None:
        self.clock = clock
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self._rv = itertools.count(100)

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("creationTimestamp", self.clock().replace(microsecond=0).isoformat().replace("+00:00", "Z"))
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = copy.deepcopy(self.objects.get((kind, namespace, name)))
        await asyncio.sleep(0)  # the answer travels: concurrent reconciles interleave, as with real requests
        return obj

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.writes.append(("create", obj["kind"], meta["name"]))
        if obj["kind"] != "Event" and (obj["kind"], meta["namespace"], meta["name"]) in self.objects:
            raise KubeError(409, "AlreadyExists", f"{obj['kind']} {meta['name']} already exists")
        return self.put(obj)

    async def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        self.writes.append(("delete", kind, name))
        obj = self.objects.get((kind, namespace, name))
        if obj is not None and (uid is None or obj["metadata"]["uid"] == uid):
            del self.objects[(kind, namespace, name)]

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("patch-status", kind, name))
        obj = self.objects[(kind, namespace, name)]
        merged = {**(obj.get("status") or {}), **status}
        obj["status"] = {k: v for k, v in merged.items() if v is not None}
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert (method, path.rsplit("/", 1)[-1]) == ("GET", "agentruns")
        return {"items": self.runs()}

    def runs(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for (kind, _, _), o in sorted(self.objects.items()) if kind == "AgentRun"]

    def events(self) -> list[dict[str, Any]]:
        return [o for (kind, _, _), o in self.objects.items() if kind == "Event"]


class Harness:
    """One task, a TaskReconciler (an operator process), the in-memory API and a test clock."""

    def __init__(self, start: dt.datetime, schedule: dict[str, Any], **spec: Any) -> None:
        self.clock = TestClock(start)
        self.api = FakeApi(self.clock)
        self.api.put({"kind": "Group", "metadata": {"name": "g"}})
        body = task_body("t", schedule, **spec)
        body["metadata"]["creationTimestamp"] = timestamp(start.replace(microsecond=0))
        self.api.put(body)
        self.key = ("ScheduledTask", NS, "t")
        self.operator = self.restart()
        self.created: list[str] = []  # scheduledTime of every run created, in order
        self.created_names: set[str] = set()

    def restart(self) -> TaskReconciler:
        self.operator = TaskReconciler(self.api, SETTINGS, self.clock, lambda ns, name: True)  # type: ignore[arg-type]
        return self.operator

    def tick(self, operator: TaskReconciler | None = None) -> float | None:
        for _ in range(5):  # as the work queue does: 0 means "again, right away"
            delay = asyncio.run((operator or self.operator).reconcile(self.key))
            if delay != 0.0:
                break
        for body in self.api.runs():
            if body["metadata"]["name"] not in self.created_names:
                self.created.append(body["spec"]["trigger"]["scheduledTime"])
                self.created_names.add(body["metadata"]["name"])
        return delay

    def finish_all(self, phase: str = "Succeeded") -> None:
        """Every active run ends now, and the operator hears about it (as from the watch)."""
        for body in self.api.runs():
            if (body.get("status") or {}).get("phase") in (None, "Pending", "Running"):
                obj = self.api.objects[("AgentRun", NS, body["metadata"]["name"])]
                obj["status"] = {"phase": phase, "completionTime": timestamp(self.clock()), "lastReply": "done"}
                self.operator.on_run_event("MODIFIED", copy.deepcopy(obj))

    def status(self) -> dict[str, Any]:
        return self.api.objects[self.key]["status"]

    def edit(self, **spec: Any) -> None:
        obj = self.api.objects[self.key]
        obj["spec"].update(spec)
        obj["metadata"]["generation"] += 1
        obj["metadata"]["resourceVersion"] = str(next(self.api._rv))
        self.operator.on_task_event("MODIFIED", copy.deepcopy(obj))

    def run_minutes(self, until: dt.datetime, step: dt.timedelta = dt.timedelta(minutes=1)) -> None:
        """Tick every `step` until `until`, finishing each run at once (so Forbid never skips)."""
        while self.clock() <= until:
            self.tick()
            self.finish_all()
            self.clock.advance(seconds=step.total_seconds())


def fired(h: Harness) -> list[dt.datetime]:
    return [parse_timestamp(t) for t in h.created]


def test_cron_fires_once_per_due_time_and_reports_next_and_last() -> None:
    h = Harness(utc(2027, 1, 4, 8, 50), {"cron": "*/15 9-10 * * 1-5"})
    h.run_minutes(utc(2027, 1, 4, 11, 0), step=dt.timedelta(seconds=20))
    expected = [utc(2027, 1, 4, h_, m) for h_ in (9, 10) for m in (0, 15, 30, 45)]
    assert fired(h) == expected
    status = h.status()
    assert status["lastScheduleTime"] == "2027-01-04T10:45:00Z"
    assert status["nextScheduleTime"] == "2027-01-05T09:00:00Z"
    assert status["active"] == []
    assert [r["outcome"] for r in status["history"]] == ["Succeeded"] * 8
    assert status["history"][0]["summary"] == "done"
    assert condition(status["conditions"], "Accepted")["status"] == "True"
    assert condition(status["conditions"], "Ready")["reason"] == "Scheduled"
    # History limits: 3 successful AgentRuns are kept, the status history keeps all eight records.
    assert len(h.api.runs()) == 3


def test_the_timer_wakes_at_the_due_time_and_idle_wakes_cost_no_request() -> None:
    h = Harness(utc(2027, 1, 4, 8, 59, 30), {"cron": "0 9 * * *"})
    assert h.tick() == pytest.approx(30.0)
    writes = len(h.api.writes)
    h.clock.set(utc(2027, 1, 4, 9, 0, 0))
    h.tick()
    assert fired(h) == [utc(2027, 1, 4, 9)]
    # Long waits are capped, so a clock that moved is honoured within MAX_WAIT seconds.
    assert h.tick() == MAX_WAIT
    writes = len(h.api.writes)
    reads = 0
    original = h.api.get

    async def counting_get(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await original(*args)

    h.api.get = counting_get  # type: ignore[method-assign]
    for _ in range(10):
        h.clock.advance(minutes=30)
        h.tick()
    assert (reads, len(h.api.writes) - writes) == (0, 0)  # early wake-ups: no request at all


def test_spring_forward_day_in_berlin() -> None:
    # 2027-03-28: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that day: the run starts right
    # after the jump, once. Times are real instants (UTC).
    h = Harness(berlin(2027, 3, 27, 0, 0), {"cron": "30 2 * * *"}, timeZone="Europe/Berlin")
    h.run_minutes(berlin(2027, 3, 29, 23, 0), step=dt.timedelta(minutes=5))
    assert fired(h) == [berlin(2027, 3, 27, 2, 30), berlin(2027, 3, 28, 3, 0), berlin(2027, 3, 29, 2, 30)]
    assert fired(h)[1] == utc(2027, 3, 28, 1, 0)


def test_fall_back_day_in_berlin() -> None:
    # 2027-10-31: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and the task runs once.
    h = Harness(berlin(2027, 10, 30, 0, 0), {"cron": "30 2 * * *"}, timeZone="Europe/Berlin")
    h.run_minutes(berlin(2027, 11, 1, 23, 0), step=dt.timedelta(minutes=5))
    assert fired(h) == [berlin(2027, 10, 30, 2, 30), berlin(2027, 10, 31, 2, 30), berlin(2027, 11, 1, 2, 30)]
    assert fired(h)[1] == utc(2027, 10, 31, 0, 30)  # the first 02:30 (CEST)


def test_hourly_cron_across_fall_back_runs_every_real_hour() -> None:
    h = Harness(utc(2027, 10, 30, 22, 30), {"cron": "0 * * * *"}, timeZone="Europe/Berlin")
    h.run_minutes(utc(2027, 10, 31, 4, 30))
    assert fired(h) == [utc(2027, 10, 30, 23) + dt.timedelta(hours=i) for i in range(6)]
    # 02:00 local twice: once in summer time, once in winter time.
    assert [t.astimezone(BERLIN).strftime("%H%Z") for t in fired(h)][1:3] == ["02CEST", "02CET"]


def test_restart_after_a_due_time_fires_it_once_and_catches_up_at_most_once() -> None:
    h = Harness(utc(2027, 1, 4, 8, 1), {"cron": "*/10 * * * *"})
    h.clock.set(utc(2027, 1, 4, 8, 10, 5))
    h.tick()
    assert fired(h) == [utc(2027, 1, 4, 8, 10)]
    # The status write was lost (a crash right after the create): the run itself says it was handled.
    h.api.objects[h.key].pop("status")
    h.restart()
    h.tick()
    assert fired(h) == [utc(2027, 1, 4, 8, 10)]
    # Down for 35 minutes: three due times passed, the latest within the deadline: one catch-up run.
    h.finish_all()
    h.clock.set(utc(2027, 1, 4, 8, 44))
    h.restart()
    h.tick()
    assert fired(h) == [utc(2027, 1, 4, 8, 10), utc(2027, 1, 4, 8, 40)]
    events = [(e["reason"], e["message"]) for e in h.api.events()]
    assert events == [
        (
            "MissedSchedules",
            "2 earlier due times passed without a run; only the most recent one, 2027-01-04T08:40:00Z, "
            "was started (at most one catch-up run).",
        )
    ]


def test_two_operators_at_the_same_due_time_fire_once() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"interval": "5m"})
    other = TaskReconciler(h.api, SETTINGS, h.clock, lambda ns, name: True)  # type: ignore[arg-type]
    h.tick()
    h.tick(other)  # both have listed the runs (none yet); they see no watch events here
    h.clock.set(utc(2027, 1, 4, 8, 5))

    async def both() -> None:  # both act on what they knew before the due time
        await asyncio.gather(h.operator.reconcile(h.key), other.reconcile(h.key))

    asyncio.run(both())
    h.tick()
    h.tick(other)
    assert fired(h) == [utc(2027, 1, 4, 8, 5)]
    assert [w for w in h.api.writes if w[:2] == ("create", "AgentRun")] == [
        ("create", "AgentRun", run_name("t", utc(2027, 1, 4, 8, 5)))
    ] * 2


def test_a_miss_beyond_the_deadline_is_recorded_with_an_event() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "0 9 * * *"}, startingDeadlineSeconds=60)
    h.clock.set(utc(2027, 1, 4, 9, 2))
    h.tick()
    assert fired(h) == []
    record = h.status()["history"][0]
    assert record == {
        "scheduledTime": "2027-01-04T09:00:00Z",
        "outcome": "Missed",
        "summary": "not started within startingDeadlineSeconds (60s): 120s late",
    }
    assert h.status()["nextScheduleTime"] == "2027-01-05T09:00:00Z"
    assert [e["reason"] for e in h.api.events()] == ["MissedSchedule"]
    h.restart()
    h.tick()  # handled: never recorded twice
    assert len(h.api.events()) == 1
    assert len(h.status()["history"]) == 1


def test_forbid_skips_replace_replaces_allow_overlaps() -> None:
    forbid = Harness(utc(2027, 1, 4, 8, 0), {"interval": "5m"})
    for minute in (5, 10):
        forbid.clock.set(utc(2027, 1, 4, 8, minute))
        forbid.tick()
    assert fired(forbid) == [utc(2027, 1, 4, 8, 5)]
    assert [r["outcome"] for r in forbid.status()["history"]] == ["Skipped", "Active"]
    assert forbid.status()["active"] == [{"name": run_name("t", utc(2027, 1, 4, 8, 5))}]
    assert [e["reason"] for e in forbid.api.events()] == ["Skipped"]

    repl = Harness(utc(2027, 1, 4, 8, 0), {"interval": "5m"}, concurrencyPolicy="Replace")
    for minute in (5, 10):
        repl.clock.set(utc(2027, 1, 4, 8, minute))
        repl.tick()
    assert [b["metadata"]["name"] for b in repl.api.runs()] == [run_name("t", utc(2027, 1, 4, 8, 10))]
    history = repl.status()["history"]
    assert [(r["runName"], r["outcome"]) for r in history] == [
        (run_name("t", utc(2027, 1, 4, 8, 10)), "Active"),
        (run_name("t", utc(2027, 1, 4, 8, 5)), "Failed"),
    ]
    assert history[1]["summary"] == f"Replaced by {run_name('t', utc(2027, 1, 4, 8, 10))} (concurrencyPolicy Replace)."

    allow = Harness(utc(2027, 1, 4, 8, 0), {"interval": "5m"}, concurrencyPolicy="Allow")
    for minute in (5, 10):
        allow.clock.set(utc(2027, 1, 4, 8, minute))
        allow.tick()
    assert allow.status()["active"] == [
        {"name": run_name("t", utc(2027, 1, 4, 8, 5))},
        {"name": run_name("t", utc(2027, 1, 4, 8, 10))},
    ]


def test_suspend_edits_and_once() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "0 9 * * *"})
    h.tick()
    assert h.status()["nextScheduleTime"] == "2027-01-04T09:00:00Z"
    h.edit(schedule={"cron": "30 8 * * *"})
    h.tick()
    assert h.status()["nextScheduleTime"] == "2027-01-04T08:30:00Z"
    h.edit(suspend=True)
    h.tick()
    assert "nextScheduleTime" not in h.status()
    assert condition(h.status()["conditions"], "Ready")["reason"] == "Suspended"
    h.clock.set(utc(2027, 1, 4, 8, 30))
    h.tick()
    assert fired(h) == []

    once = Harness(utc(2027, 1, 4, 8, 0), {"once": "2027-01-04T08:20:00Z"})
    once.run_minutes(utc(2027, 1, 4, 9, 0))
    assert fired(once) == [utc(2027, 1, 4, 8, 20)]
    assert condition(once.status()["conditions"], "Ready")["reason"] == "Completed"
    assert "nextScheduleTime" not in once.status()


@pytest.mark.parametrize(
    ("spec", "reason", "fragment"),
    [
        ({"schedule": {"cron": "61 * * * *"}}, "InvalidSchedule", "is not a valid cron expression"),
        ({"schedule": {"cron": "0 0 30 2 *"}}, "InvalidSchedule", "is not a valid cron expression"),
        ({"timeZone": "Mars/Olympus_Mons"}, "InvalidSchedule", "not a known IANA time zone"),
        ({"schedule": {"once": "2026-01-01T00:00:00Z"}}, "InvalidSchedule", "already in the past"),
        ({"groupRef": {"name": "nope"}}, "GroupNotFound", "Group 'nope' does not exist"),
    ],
)
def test_bad_input_is_not_accepted(spec: dict[str, Any], reason: str, fragment: str) -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "0 9 * * *"})
    h.operator = TaskReconciler(h.api, SETTINGS, h.clock, lambda ns, name: name == "g")  # type: ignore[arg-type]
    h.edit(**spec)
    assert h.tick() is None
    accepted = condition(h.status()["conditions"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", reason)
    assert fragment in accepted["message"]
    assert condition(h.status()["conditions"], "Stalled")["status"] == "True"
    assert [e["reason"] for e in h.api.events()] == [reason]
    h.clock.set(utc(2027, 1, 4, 9, 0))
    h.tick()
    assert fired(h) == []


def test_a_no_op_reconcile_writes_nothing() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "*/5 * * * *"})
    h.run_minutes(utc(2027, 1, 4, 8, 20))
    h.tick()  # sees the last run finish (history, pruning)
    writes = len(h.api.writes)
    for _ in range(3):
        h.restart()
        h.tick()
    assert h.api.writes[writes:] == []


def test_a_refused_run_is_reported_and_retried_until_the_deadline() -> None:
    h = Harness(utc(2027, 1, 4, 8, 1), {"cron": "*/10 * * * *"}, startingDeadlineSeconds=90)
    original = h.api.create
    refuse = True

    async def create(obj: dict[str, Any]) -> dict[str, Any]:
        if refuse and obj["kind"] == "AgentRun":
            h.api.writes.append(("create", "AgentRun", obj["metadata"]["name"]))
            raise KubeError(403, "Forbidden", "exceeded quota: runs")
        return await original(obj)

    h.api.create = create  # type: ignore[method-assign]
    h.clock.set(utc(2027, 1, 4, 8, 10))
    assert h.tick() == 60.0
    ready = condition(h.status()["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RunRefused")
    assert "exceeded quota: runs" in ready["message"]
    assert "lastScheduleTime" not in h.status()
    refuse = False
    h.clock.advance(seconds=60)
    h.tick()
    assert fired(h) == [utc(2027, 1, 4, 8, 10)]  # within the deadline: it runs after all
    assert condition(h.status()["conditions"], "Ready")["reason"] == "Scheduled"


def test_the_due_moment_creates_the_run_without_a_read_then_writes_the_status() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "0 9 * * *"})
    h.clock.set(utc(2027, 1, 4, 8, 59, 30))
    h.tick()
    reads: list[tuple[str, ...]] = []
    original = h.api.get

    async def counting_get(*args: Any) -> Any:
        reads.append(args)
        return await original(*args)

    h.api.get = counting_get  # type: ignore[method-assign]
    writes = len(h.api.writes)
    h.clock.set(utc(2027, 1, 4, 9, 0, 0, 5000))
    assert asyncio.run(h.operator.reconcile(h.key)) == 0.0  # again at once: the status is still to write
    assert (reads, h.api.writes[writes:]) == ([], [("create", "AgentRun", run_name("t", utc(2027, 1, 4, 9)))])
    asyncio.run(h.operator.reconcile(h.key))
    assert h.api.writes[writes + 1 :] == [("patch-status", "ScheduledTask", "t")]
    assert h.status()["lastScheduleTime"] == "2027-01-04T09:00:00Z"


def test_an_edit_just_before_the_due_time_counts() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"cron": "0 9 * * *"})
    h.clock.set(utc(2027, 1, 4, 8, 59, 59))
    h.tick()
    h.edit(prompt="The new prompt.")
    h.clock.set(utc(2027, 1, 4, 9, 0))
    h.tick()
    assert [r["spec"]["prompt"] for r in h.api.runs()] == ["The new prompt."]


def test_only_run_changes_that_matter_wake_the_task() -> None:
    h = Harness(utc(2027, 1, 4, 8, 0), {"interval": "5m"})
    h.clock.set(utc(2027, 1, 4, 8, 5))
    h.tick()
    h.tick()
    (body,) = h.api.runs()
    body["metadata"]["ownerReferences"].append({"kind": "Group", "name": "g", "uid": "uid-g"})
    assert h.operator.on_run_event("MODIFIED", body) is None  # the Group became an owner
    body["status"] = {"phase": "Pending", "reason": "Queued", "message": "waits"}
    assert h.operator.on_run_event("MODIFIED", body) is None  # still active, nothing new to report
    body["status"] = {"phase": "Running", "startTime": "2027-01-04T08:05:02Z"}
    assert h.operator.on_run_event("MODIFIED", body) == h.key
    assert h.operator.on_run_event("DELETED", body) == h.key
