"""ScheduledTasks against the real API server, with the operator under its production RBAC and a
test clock: the test moves time and has the operator look again (`tick`, `resync`: they return
once it has), or goes off as a task's timer (`TaskTimer`), so no test waits for real minutes, and
none waits out a quiet period to show that nothing happened. `ApiSpy` records the requests
the task controller makes (they still go to the API server).

The tasks' Group exists but is not Ready (it names a missing Secret), so their AgentRuns stay
`Pending/GroupNotReady` and the test ends them by patching their status as the admin.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cluster.helpers import AuditWindow, apply, condition, describe, get, group, on_loop, resync, synced, wait_for
from conftest import OPERATOR_USER
from doubles.clock import TestClock
from pynchy.kube.controlplane import ControlPlane
from pynchy.operator.build.common import parse_timestamp, timestamp
from pynchy.operator.reconcile_scheduledtask import MAX_WAIT
from pynchy.schedule import run_name

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(autouse=True)
def only_this_namespace(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_NAMESPACES", namespace)


@pytest.fixture
def clock() -> TestClock:
    # Half a minute behind the API server: a task's creationTimestamp (real time, cut to the second)
    # is then always later than the frozen clock, so no due time falls between the task's creation
    # and the clock; a clock frozen just after a boundary fired that boundary at once, now and then.
    return TestClock(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))


@pytest.fixture
def op(operator_env: None, clock: TestClock) -> Iterator[Any]:
    from pynchy.operator.run import EmbeddedOperator

    with EmbeddedOperator(clock=clock) as operator:
        yield operator


def task(name: str, schedule: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "ScheduledTask",
        "metadata": {"name": name},
        "spec": {"groupRef": {"name": "fam"}, "prompt": f"Run {name}.", "schedule": schedule, **spec},
    }


def unready_group(plane: ControlPlane, namespace: str, name: str = "fam") -> None:
    """A Group that exists (tasks are accepted) but never becomes Ready: its runs wait, podless."""
    apply(plane, namespace, group(name, credentials=[{"env": "T", "secretKeyRef": {"name": "absent", "key": "k"}}]))


def status_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return (get(plane, "scheduledtask", name, namespace) or {}).get("status") or {}


def runs_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    out = plane.kubectl("get", "agentruns", "-n", namespace, "-l", f"pynchy.dev/scheduled-task={name}", "-o", "json")
    return {r["metadata"]["name"]: r for r in json.loads(out.stdout)["items"]}


def next_due(plane: ControlPlane, namespace: str, name: str, after: dt.datetime | None = None) -> dt.datetime:
    """Wait until the operator published a nextScheduleTime (later than `after`) and return it."""

    def published() -> dt.datetime | None:
        s = status_of(plane, namespace, name)
        t = parse_timestamp(s["nextScheduleTime"]) if s.get("nextScheduleTime") else None
        return t if t is not None and (after is None or t > after) else None

    return wait_for(published, what=f"{name} nextScheduleTime after {after}")  # type: ignore[no-any-return]


def tick(op: Any, clock: TestClock, when: dt.datetime) -> None:
    """Move the clock and have the operator look at every task at that time; returns once it has."""
    clock.set(when)
    resync(op)


def wait_run(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: get(plane, "agentrun", name, namespace), what=f"AgentRun {name}")  # type: ignore[no-any-return]


def finish(plane: ControlPlane, namespace: str, run: str, phase: str = "Succeeded", reply: str = "All done.") -> None:
    """End a waiting run as a finished pod would have (once the AgentRun controller has parked it)."""
    wait_for(
        lambda: ((get(plane, "agentrun", run, namespace) or {}).get("status") or {}).get("reason") == "GroupNotReady",
        what=f"{run} parked",
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    status: dict[str, Any] = {"phase": phase, "startTime": now, "completionTime": now}
    if phase == "Succeeded":
        status |= {"reason": "Succeeded", "message": "The agent exited with code 0.", "lastReply": reply}
    else:
        status |= {"reason": "Error", "message": reply}
    plane.kubectl(
        "patch", "agentrun", run, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def history(plane: ControlPlane, namespace: str, name: str) -> list[tuple[str | None, str]]:
    return [(r.get("runName"), r["outcome"]) for r in status_of(plane, namespace, name).get("history") or []]


def events_of(plane: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    out = plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    )
    return json.loads(out.stdout)["items"]  # type: ignore[no-any-return]


def creates(window: AuditWindow, namespace: str) -> list[str]:
    return [
        f"{e['objectRef'].get('name', '')} -> {e.get('responseStatus', {}).get('code')}"
        for e in window.writes(OPERATOR_USER, namespace)
        if e["verb"] == "create" and e["objectRef"].get("resource") == "agentruns"
    ]


class ApiSpy:
    """The task controller's API client with a record of each call (every call still goes to the API
    server): which requests a reconcile made, or that it made none."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._calls: list[tuple[str, str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def _note(self, verb: str, kind: str, name: str) -> None:
        with self._lock:
            self._calls.append((verb, kind, name))

    @property
    def calls(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._calls)

    async def get(self, kind: str, namespace: str | None, name: str) -> Any:
        self._note("get", kind, name)
        return await self._api.get(kind, namespace, name)

    async def create(self, obj: dict[str, Any]) -> Any:
        self._note("create", obj["kind"], obj["metadata"]["name"])
        return await self._api.create(obj)

    async def delete(self, kind: str, namespace: str | None, name: str, uid: str | None = None) -> None:
        self._note("delete", kind, name)
        await self._api.delete(kind, namespace, name, uid=uid)

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> Any:
        self._note("patch_status", kind, name)
        return await self._api.patch_status(kind, namespace, name, status)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self._note(method, path, "")
        return await self._api.request(method, path, **kwargs)


def spy_on(op: Any) -> ApiSpy:
    spy = ApiSpy(op.controller.tasks.api)
    op.controller.tasks.api = spy
    return spy


class TaskTimer:
    """The test as a task's timer. A timer going off adds the task to the operator's work queue
    without invalidating anything (unlike `resync_now`); `wake` does that and returns the delay
    the reconcile asked for. Taking over cancels the queue's own pending wake-up for the task
    (events still enqueue it as usual)."""

    def __init__(self, op: Any, namespace: str, name: str) -> None:
        self.op = op
        self.key = ("ScheduledTask", namespace, name)
        self._lock = threading.Lock()
        self._results: list[float | None] = []
        tasks = op.controller.tasks
        if not hasattr(tasks, "recorded_by"):
            reconcile = tasks.reconcile  # the bound method; recorders chain on the instance
            tasks.recorded_by = []

            async def recording(key: Any) -> float | None:
                result = await reconcile(key)
                for timer in tasks.recorded_by:
                    timer.note(key, result)
                return result

            tasks.reconcile = recording
        tasks.recorded_by.append(self)
        synced(op)
        on_loop(op, lambda: op.controller.queue.forget(self.key))

    def note(self, key: Any, result: float | None) -> None:
        if key == self.key:
            with self._lock:
                self._results.append(result)

    def go_off(self) -> int:
        """Add the task to the work queue; returns a mark for `result`."""
        with self._lock:
            seen = len(self._results)
        on_loop(self.op, lambda: self.op.controller.queue.add(self.key))
        return seen

    def result(self, mark: int) -> float | None:
        """The delay asked for by the first reconcile of the task after `mark`."""

        def done() -> list[float | None]:
            with self._lock:
                return self._results[mark : mark + 1]

        return wait_for(done, what=f"{self.key} reconciled")[0]  # type: ignore[no-any-return]

    def wake(self) -> float | None:
        return self.result(self.go_off())


def test_cron_task_fires_exactly_once_per_due_time(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("brief", {"cron": "*/5 * * * *"}))
    due = next_due(control_plane, namespace, "brief")
    assert due.minute % 5 == 0
    assert due.second == 0
    t = get(control_plane, "scheduledtask", "brief", namespace)
    assert condition(t, "Accepted")["status"] == "True"
    assert (condition(t, "Ready")["status"], condition(t, "Ready")["reason"]) == ("True", "Scheduled")
    assert t["status"]["observedGeneration"] == t["metadata"]["generation"]
    assert runs_of(control_plane, namespace, "brief") == {}

    window = AuditWindow(control_plane)
    tick(op, clock, due + dt.timedelta(seconds=3))
    name = run_name("brief", due)
    run = wait_run(control_plane, namespace, name)
    assert run["spec"] == {
        "groupRef": {"name": "fam"},
        "trigger": {"kind": "Schedule", "scheduledTaskRef": {"name": "brief"}, "scheduledTime": timestamp(due)},
        "prompt": "Run brief.",
        "contextMode": "isolated",
        "deliver": True,
    }
    assert run["metadata"]["labels"] == {"pynchy.dev/group": "fam", "pynchy.dev/scheduled-task": "brief"}
    owner = run["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ScheduledTask",
        "brief",
        t["metadata"]["uid"],
        True,
    )
    # The AgentRun controller adds the Group as a second, non-controller owner.
    grp = get(control_plane, "group", "fam", namespace)
    wait_for(
        lambda: any(
            r["uid"] == grp["metadata"]["uid"] and not r.get("controller")
            for r in get(control_plane, "agentrun", name, namespace)["metadata"]["ownerReferences"]
        ),
        what="Group owner",
    )

    after = next_due(control_plane, namespace, "brief", after=due)
    assert after == due + 5 * MINUTE
    s = status_of(control_plane, namespace, "brief")
    assert s["lastScheduleTime"] == timestamp(due)
    assert s["active"] == [{"name": name}]
    assert history(control_plane, namespace, "brief") == [(name, "Active")]

    # Looking again, any number of times, fires nothing more.
    for _ in range(3):
        resync(op)
    assert list(runs_of(control_plane, namespace, "brief")) == [name]
    assert creates(window, namespace) == [f"{name} -> 201"]

    finish(control_plane, namespace, name, reply="Three new pull requests.")
    wait_for(lambda: history(control_plane, namespace, "brief") == [(name, "Succeeded")], what="Succeeded")
    s = status_of(control_plane, namespace, "brief")
    record = s["history"][0]
    assert record["summary"] == "Three new pull requests."
    assert record["startTime"]
    assert record["finishTime"] == s["lastSuccessfulTime"]
    assert s.get("active") == []

    tick(op, clock, after)
    second = run_name("brief", after)
    wait_run(control_plane, namespace, second)
    wait_for(
        lambda: history(control_plane, namespace, "brief") == [(second, "Active"), (name, "Succeeded")],
        what="second run in history",
    )


def test_restart_never_fires_twice_and_catches_up_at_most_once(
    control_plane: ControlPlane, namespace: str, operator_env: None, clock: TestClock
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("rs", {"cron": "*/5 * * * *"}))
    with EmbeddedOperator(clock=clock) as op:
        due = next_due(control_plane, namespace, "rs")
        tick(op, clock, due + dt.timedelta(seconds=1))
        first = run_name("rs", due)
        wait_run(control_plane, namespace, first)
        wait_for(lambda: status_of(control_plane, namespace, "rs").get("lastScheduleTime"), what="status written")

    # A restart right after the due time, and a second one a little later: nothing fires again.
    window = AuditWindow(control_plane)
    for later in (2, 40):
        clock.set(due + dt.timedelta(seconds=later))
        with EmbeddedOperator(clock=clock) as op:
            synced(op, processed=3)
            resync(op)
    assert list(runs_of(control_plane, namespace, "rs")) == [first]
    assert creates(window, namespace) == []

    # The status write was lost (a crash right after the create): the run itself says it was handled.
    control_plane.kubectl(
        "patch", "scheduledtask", "rs", "-n", namespace, "--subresource=status", "--type=json",
        "-p", '[{"op": "remove", "path": "/status"}]',
    )  # fmt: skip
    assert status_of(control_plane, namespace, "rs") == {}
    with EmbeddedOperator(clock=clock) as op:
        wait_for(
            lambda: status_of(control_plane, namespace, "rs").get("lastScheduleTime") == timestamp(due),
            what="the status rebuilt from the run",
        )
        resync(op)
    assert history(control_plane, namespace, "rs") == [(first, "Active")]
    assert next_due(control_plane, namespace, "rs") == due + 5 * MINUTE
    assert list(runs_of(control_plane, namespace, "rs")) == [first]
    assert creates(window, namespace) == []

    # Down across three due times; the latest is within startingDeadlineSeconds: one catch-up run.
    finish(control_plane, namespace, first)
    clock.set(due + 16 * MINUTE)
    with EmbeddedOperator(clock=clock) as op:
        latest = run_name("rs", due + 15 * MINUTE)
        wait_run(control_plane, namespace, latest)
        wait_for(lambda: next_due(control_plane, namespace, "rs") == due + 20 * MINUTE, what="next after catch-up")
        resync(op)  # the reconcile that wrote the status has posted its Event too
    assert sorted(runs_of(control_plane, namespace, "rs")) == sorted([first, latest])
    (event,) = [e for e in events_of(control_plane, namespace, "rs") if e["reason"] == "MissedSchedules"]
    assert event["type"] == "Warning"
    assert event["message"] == (
        "2 earlier due times passed without a run; only the most recent one, "
        f"{timestamp(due + 15 * MINUTE)}, was started (at most one catch-up run)."
    )


def test_two_operators_by_mistake_fire_once(
    control_plane: ControlPlane, namespace: str, operator_env: None, clock: TestClock
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("dup", {"cron": "*/5 * * * *"}, concurrencyPolicy="Allow"))
    with EmbeddedOperator(clock=clock) as one, EmbeddedOperator(clock=clock) as two:
        due = next_due(control_plane, namespace, "dup")
        window = AuditWindow(control_plane)
        clock.set(due)
        one.resync_now()
        two.resync_now()
        wait_run(control_plane, namespace, run_name("dup", due))
        synced(one)
        synced(two)
        first = creates(window, namespace)

        # The next due time, planned in advance by both: their timers go off together, and each
        # creates the run at once, without a read; the API server lets one create through.
        later = due + 5 * MINUTE
        wait_for(lambda: next_due(control_plane, namespace, "dup") == later, what="next due time")
        timers = [TaskTimer(op, namespace, "dup") for op in (one, two)]
        window = AuditWindow(control_plane)
        clock.set(later)
        marks = [timer.go_off() for timer in timers]
        for timer, mark in zip(timers, marks, strict=True):
            timer.result(mark)
        wait_run(control_plane, namespace, run_name("dup", later))
        synced(one)
        synced(two)
        second = creates(window, namespace)
    assert sorted(runs_of(control_plane, namespace, "dup")) == sorted([run_name("dup", due), run_name("dup", later)])
    for made, when in ((first, due), (second, later)):
        name = run_name("dup", when)
        assert made.count(f"{name} -> 201") == 1, made
        assert set(made) <= {f"{name} -> 201", f"{name} -> 409"}, made
    assert history(control_plane, namespace, "dup") == [
        (run_name("dup", later), "Active"),
        (run_name("dup", due), "Active"),
    ]


def test_a_miss_beyond_the_deadline_is_recorded_once(
    control_plane: ControlPlane, namespace: str, operator_env: None, clock: TestClock
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("late", {"cron": "*/5 * * * *"}, startingDeadlineSeconds=60))
    with EmbeddedOperator(clock=clock) as op:
        due = next_due(control_plane, namespace, "late")
        tick(op, clock, due + 3 * MINUTE)
        wait_for(lambda: history(control_plane, namespace, "late") == [(None, "Missed")], what="Missed record")
        s = status_of(control_plane, namespace, "late")
        assert s["history"][0] == {
            "scheduledTime": timestamp(due),
            "outcome": "Missed",
            "summary": "not started within startingDeadlineSeconds (60s): 180s late",
        }
        assert s["nextScheduleTime"] == timestamp(due + 5 * MINUTE)
        assert "lastScheduleTime" not in s  # nothing ran
        (event,) = wait_for(
            lambda: [e for e in events_of(control_plane, namespace, "late") if e["reason"] == "MissedSchedule"],
            what="MissedSchedule Event",
        )
        assert event["type"] == "Warning"
        assert event["message"] == (
            f"The run due at {timestamp(due)} did not start: it is 180s past its due time, "
            "beyond startingDeadlineSeconds (60s)."
        )
        synced(op)

    # A restart, still before the next due time: the miss is handled, never recorded twice.
    window = AuditWindow(control_plane)
    clock.advance(seconds=30)
    with EmbeddedOperator(clock=clock) as op:
        synced(op, processed=2)
        resync(op)
    assert window.writes(OPERATOR_USER, namespace) == [], describe(window.writes(OPERATOR_USER, namespace))
    assert len([e for e in events_of(control_plane, namespace, "late") if e["reason"] == "MissedSchedule"]) == 1
    assert history(control_plane, namespace, "late") == [(None, "Missed")]
    assert runs_of(control_plane, namespace, "late") == {}


def test_concurrency_policies(control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock) -> None:
    unready_group(control_plane, namespace)
    for policy in ("Forbid", "Replace", "Allow"):
        apply(control_plane, namespace, task(policy.lower(), {"cron": "*/5 * * * *"}, concurrencyPolicy=policy))
    due = max(next_due(control_plane, namespace, p) for p in ("forbid", "replace", "allow"))
    tick(op, clock, due)
    for p in ("forbid", "replace", "allow"):
        wait_run(control_plane, namespace, run_name(p, due))
    later = due + 5 * MINUTE
    tick(op, clock, later)

    # Forbid: the second due time is skipped while the first run is active.
    wait_for(
        lambda: history(control_plane, namespace, "forbid") == [(None, "Skipped"), (run_name("forbid", due), "Active")],
        what="Skipped",
    )
    assert list(runs_of(control_plane, namespace, "forbid")) == [run_name("forbid", due)]
    skipped = status_of(control_plane, namespace, "forbid")["history"][0]
    assert skipped["summary"] == f"{run_name('forbid', due)} still active (concurrencyPolicy Forbid)"
    assert any(e["reason"] == "Skipped" for e in events_of(control_plane, namespace, "forbid"))

    # Replace: the active run is deleted and the new one created.
    wait_for(lambda: list(runs_of(control_plane, namespace, "replace")) == [run_name("replace", later)], what="repl")
    wait_for(
        lambda: (
            history(control_plane, namespace, "replace")
            == [(run_name("replace", later), "Active"), (run_name("replace", due), "Failed")]
        ),
        what="Replace history",
    )
    replace = status_of(control_plane, namespace, "replace")
    assert replace["active"] == [{"name": run_name("replace", later)}]
    assert replace["history"][1]["summary"] == (
        f"Replaced by {run_name('replace', later)} (concurrencyPolicy Replace)."
    )
    assert any(e["reason"] == "Replaced" for e in events_of(control_plane, namespace, "replace"))

    # Allow: both run.
    wait_for(
        lambda: (
            sorted(runs_of(control_plane, namespace, "allow")) == [run_name("allow", due), run_name("allow", later)]
        ),
        what="Allow overlap",
    )
    wait_for(
        lambda: (
            status_of(control_plane, namespace, "allow").get("active")
            == [{"name": run_name("allow", due)}, {"name": run_name("allow", later)}]
        ),
        what="two active",
    )


def daily_after(after: dt.datetime, hour: int, zone: str) -> dt.datetime:
    """The first `hour`:00 in `zone` strictly after `after`, in UTC."""
    tz = ZoneInfo(zone)
    day = after.astimezone(tz).date()
    for date in (day, day + dt.timedelta(days=1)):
        when = dt.datetime.combine(date, dt.time(hour), tz).astimezone(dt.UTC)
        if when > after:
            return when
    raise AssertionError("unreachable")


def test_suspend_and_edits_take_effect_at_once(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("ed", {"cron": "0 9 * * *"}, timeZone="Europe/Berlin"))
    # Due times count from the task's creation on (or from the clock, if it is later): what each
    # edit must publish follows from that moment, whatever the hour or season the suite runs in.
    created = parse_timestamp(get(control_plane, "scheduledtask", "ed", namespace)["metadata"]["creationTimestamp"])
    since = max(clock(), created - dt.timedelta(microseconds=1))
    assert next_due(control_plane, namespace, "ed") == daily_after(since, 9, "Europe/Berlin")
    control_plane.kubectl(
        "patch", "scheduledtask", "ed", "-n", namespace, "--type=merge", "-p", '{"spec":{"timeZone":"UTC"}}'
    )
    utc = daily_after(since, 9, "UTC")
    wait_for(lambda: next_due(control_plane, namespace, "ed") == utc, what=f"recomputed for UTC: {utc}")
    control_plane.kubectl(
        "patch", "scheduledtask", "ed", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"schedule":{"cron":"*/10 * * * *"}}}',
    )  # fmt: skip
    due = since.replace(minute=since.minute - since.minute % 10, second=0, microsecond=0) + 10 * MINUTE
    wait_for(lambda: next_due(control_plane, namespace, "ed") == due, what=f"recomputed cron: {due}")

    control_plane.kubectl(
        "patch", "scheduledtask", "ed", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    wait_for(
        lambda: "nextScheduleTime" not in status_of(control_plane, namespace, "ed"), what="no next while suspended"
    )
    t = get(control_plane, "scheduledtask", "ed", namespace)
    assert (condition(t, "Ready")["status"], condition(t, "Ready")["reason"]) == ("True", "Suspended")
    tick(op, clock, due + dt.timedelta(seconds=5))
    assert runs_of(control_plane, namespace, "ed") == {}

    control_plane.kubectl(
        "patch", "scheduledtask", "ed", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_run(control_plane, namespace, run_name("ed", due))  # still within the starting deadline
    assert next_due(control_plane, namespace, "ed") == due + 10 * MINUTE


def test_timer_wakes_cost_nothing_and_the_due_moment_creates_the_run_without_a_read(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    spy = spy_on(op)
    apply(control_plane, namespace, task("tw", {"cron": "0 9 * * *"}))
    due = next_due(control_plane, namespace, "tw")
    timer = TaskTimer(op, namespace, "tw")

    # Early wake-ups ask for the time left, capped at MAX_WAIT (so a clock that jumped is noticed
    # soon), and make no request at all.
    before = len(spy.calls)
    for left in (600, 90, 30):
        clock.set(due - dt.timedelta(seconds=left))
        assert timer.wake() == min(MAX_WAIT, left)
    assert spy.calls[before:] == []

    # The due moment was decided in advance: the run is created first, with no read; the status
    # follows in a full reconcile, asked for at once (0 s).
    clock.set(due + dt.timedelta(milliseconds=5))
    assert timer.wake() == 0.0
    assert spy.calls[before] == ("create", "AgentRun", run_name("tw", due))
    wait_for(
        lambda: status_of(control_plane, namespace, "tw").get("lastScheduleTime") == timestamp(due),
        what="lastScheduleTime",
    )
    synced(op)
    writes = [call for call in spy.calls[before + 1 :] if call[0] != "get"]
    assert writes == [("patch_status", "ScheduledTask", "tw")]
    s = status_of(control_plane, namespace, "tw")
    assert s["nextScheduleTime"] == timestamp(due + dt.timedelta(days=1))
    assert s["active"] == [{"name": run_name("tw", due)}]

    # A day with nothing due: every wake-up is free.
    after = len(spy.calls)
    for _ in range(10):
        clock.advance(minutes=30)
        assert timer.wake() == MAX_WAIT
    assert spy.calls[after:] == []
    assert list(runs_of(control_plane, namespace, "tw")) == [run_name("tw", due)]


def test_an_edit_just_before_the_due_time_counts(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("edit", {"cron": "*/5 * * * *"}))
    due = next_due(control_plane, namespace, "edit")
    clock.set(due - dt.timedelta(seconds=1))
    control_plane.kubectl(
        "patch", "scheduledtask", "edit", "-n", namespace, "--type=merge", "-p", '{"spec":{"prompt":"The new prompt."}}'
    )
    wait_for(lambda: status_of(control_plane, namespace, "edit").get("observedGeneration") == 2, what="edit seen")
    timer = TaskTimer(op, namespace, "edit")  # the edit was reconciled; what it planned is in force
    clock.set(due)
    timer.wake()
    run = wait_run(control_plane, namespace, run_name("edit", due))
    assert run["spec"]["prompt"] == "The new prompt."


def test_a_once_task_runs_once_then_is_completed(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    at = (clock() + 10 * MINUTE).replace(microsecond=0)
    apply(control_plane, namespace, task("one", {"once": timestamp(at)}))
    assert next_due(control_plane, namespace, "one") == at
    tick(op, clock, at + dt.timedelta(seconds=2))
    name = run_name("one", at)
    wait_run(control_plane, namespace, name)
    wait_for(
        lambda: (
            (condition(get(control_plane, "scheduledtask", "one", namespace), "Ready") or {}).get("reason")
            == "Completed"
        ),
        what="Ready=Completed",
    )
    s = status_of(control_plane, namespace, "one")
    assert "nextScheduleTime" not in s
    assert s["lastScheduleTime"] == timestamp(at)
    finish(control_plane, namespace, name)
    wait_for(lambda: history(control_plane, namespace, "one") == [(name, "Succeeded")], what="Succeeded")
    tick(op, clock, at + dt.timedelta(days=1))
    assert list(runs_of(control_plane, namespace, "one")) == [name]


def test_a_refused_run_is_reported_and_retried_within_the_deadline(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    control_plane.kubectl("create", "quota", "runs", "-n", namespace, "--hard=count/agentruns.pynchy.dev=0")
    # In force once the API server's quota admission refuses a run for it: that reads its own cache of
    # the quota, which can lag behind the quota's status ("status unknown for quota" until then).
    probe = {"apiVersion": "pynchy.dev/v1alpha1", "kind": "AgentRun", "metadata": {"name": "probe"}}
    probe["spec"] = {"groupRef": {"name": "fam"}}

    def admission() -> str:
        """What the API server's admission says to a run now ("" if it would create it)."""
        proc = control_plane.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(probe), check=False
        )
        return proc.stderr if proc.returncode else ""

    # On a fresh control plane the controller-manager's quota monitor learns the CRDs at its next
    # discovery resync (every 30 s), so the first quota status can take longer than that.
    wait_for(lambda: "exceeded quota: runs" in admission(), timeout=120, what="the quota in force")
    apply(control_plane, namespace, task("quota", {"cron": "*/10 * * * *"}, startingDeadlineSeconds=90))
    due = next_due(control_plane, namespace, "quota")
    tick(op, clock, due)

    def refused() -> dict[str, Any] | None:
        ready = condition(get(control_plane, "scheduledtask", "quota", namespace), "Ready")
        return ready if ready and ready["reason"] == "RunRefused" else None

    ready = wait_for(refused, what="Ready=False RunRefused")
    assert ready["status"] == "False"
    assert f"the API server refused AgentRun {run_name('quota', due)}" in ready["message"]
    assert "exceeded quota: runs" in ready["message"]
    assert "lastScheduleTime" not in status_of(control_plane, namespace, "quota")
    assert runs_of(control_plane, namespace, "quota") == {}

    # The quota is lifted; the retry comes while the due time is still within the deadline: it runs.
    control_plane.kubectl("delete", "quota", "runs", "-n", namespace)
    wait_for(lambda: not admission(), what="the quota lifted")
    tick(op, clock, due + MINUTE)
    wait_run(control_plane, namespace, run_name("quota", due))
    wait_for(
        lambda: status_of(control_plane, namespace, "quota").get("lastScheduleTime") == timestamp(due),
        what="lastScheduleTime",
    )
    t = get(control_plane, "scheduledtask", "quota", namespace)
    assert (condition(t, "Ready")["status"], condition(t, "Ready")["reason"]) == ("True", "Scheduled")


def test_history_limits_prune_finished_runs(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    spec = {"successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 1}
    apply(control_plane, namespace, task("lim", {"cron": "*/5 * * * *"}, **spec))
    due = next_due(control_plane, namespace, "lim")
    names = []
    for i, phase in enumerate(("Succeeded", "Succeeded", "Failed", "Failed")):
        when = due + i * 5 * MINUTE
        tick(op, clock, when)
        names.append(run_name("lim", when))
        wait_run(control_plane, namespace, names[-1])
        finish(control_plane, namespace, names[-1], phase, reply=f"outcome {i}")
        wait_for(lambda n=names[-1]: (n, "Active") not in history(control_plane, namespace, "lim"), what="finished")
    wait_for(lambda: sorted(runs_of(control_plane, namespace, "lim")) == sorted([names[1], names[3]]), what="pruned")
    wait_for(
        lambda: (
            history(control_plane, namespace, "lim")
            == [(names[3], "Failed"), (names[2], "Failed"), (names[1], "Succeeded"), (names[0], "Succeeded")]
        ),
        what="history keeps the pruned runs",
    )
    assert status_of(control_plane, namespace, "lim")["history"][1]["summary"] == "Error: outcome 2"


def test_group_mode_task_creates_a_group_mode_run(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("conv", {"interval": "30m"}, contextMode="group", deliver=False))
    due = next_due(control_plane, namespace, "conv")
    t = get(control_plane, "scheduledtask", "conv", namespace)
    assert due == parse_timestamp(t["metadata"]["creationTimestamp"]) + 30 * MINUTE
    tick(op, clock, due)
    run = wait_run(control_plane, namespace, run_name("conv", due))
    assert (run["spec"]["contextMode"], run["spec"]["deliver"], run["spec"]["prompt"]) == ("group", False, "Run conv.")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"schedule": {"cron": "0 9 * *"}}, "cron must have exactly five fields"),
        ({"schedule": {"cron": "@daily"}}, "cron must have exactly five fields"),
        ({"schedule": {"interval": "0m"}}, "interval must be at least 1m"),
        ({"schedule": {"interval": "30s"}}, "interval must be at least 1m"),
        ({"schedule": {"cron": "0 9 * * *", "interval": "1h"}}, "set exactly one of schedule.cron"),
        ({"schedule": {"once": "tomorrow"}}, "spec.schedule.once"),
        ({"timeZone": "Europe Berlin"}, "spec.timeZone"),
    ],
)
def test_the_api_server_refuses_what_cel_can_check(
    control_plane: ControlPlane, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = task("bad", {"cron": "0 9 * * *"}) | {}
    body["spec"] = {**body["spec"], **spec}
    proc = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_what_cel_cannot_check_is_not_accepted(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    past = timestamp(dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2))
    cases = {
        "past": ({"once": past}, {}, "InvalidSchedule", "was already in the past when the task was created"),
        "zone": ({"cron": "0 9 * * *"}, {"timeZone": "Mars/Olympus_Mons"}, "InvalidSchedule", "not a known IANA"),
        "range": ({"cron": "61 * * * *"}, {}, "InvalidSchedule", "is not a valid cron expression"),
        "feb30": ({"cron": "0 0 30 2 *"}, {}, "InvalidSchedule", "is not a valid cron expression"),
        "orphan": ({"cron": "0 9 * * *"}, {"groupRef": {"name": "nobody"}}, "GroupNotFound", "create it or fix"),
    }
    for name, (schedule, spec, _, _) in cases.items():
        apply(control_plane, namespace, task(name, schedule, **spec))
    for name, (_, _, reason, fragment) in cases.items():

        def refused(n: str = name) -> dict[str, Any] | None:
            c = condition(get(control_plane, "scheduledtask", n, namespace), "Accepted")
            return c if c and c["status"] == "False" else None

        accepted = wait_for(refused, what=f"{name} Accepted=False")
        assert accepted["reason"] == reason, accepted
        assert fragment in accepted["message"], accepted
        t = get(control_plane, "scheduledtask", name, namespace)
        assert condition(t, "Stalled")["status"] == "True"
        assert condition(t, "Ready")["status"] == "False"
        assert "nextScheduleTime" not in t["status"]
        wait_for(
            lambda n=name, r=reason: any(e["reason"] == r for e in events_of(control_plane, namespace, n)),
            what=f"{name} Event",
        )
    tick(op, clock, clock() + dt.timedelta(days=2))
    assert not json.loads(control_plane.kubectl("get", "agentruns", "-n", namespace, "-o", "json").stdout)["items"]

    # The missing Group appears: the task is accepted and scheduled.
    apply(control_plane, namespace, group("nobody"))
    wait_for(
        lambda: condition(get(control_plane, "scheduledtask", "orphan", namespace), "Accepted")["status"] == "True",
        what="accepted once the Group exists",
    )
    assert status_of(control_plane, namespace, "orphan")["nextScheduleTime"]


def test_no_op_resync_and_restart_write_nothing(
    control_plane: ControlPlane, namespace: str, operator_env: None, clock: TestClock
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    unready_group(control_plane, namespace)
    with EmbeddedOperator(clock=clock) as op:
        for name, schedule in (("q1", {"cron": "*/5 * * * *"}), ("q2", {"interval": "1h"})):
            apply(control_plane, namespace, task(name, schedule))
        due = next_due(control_plane, namespace, "q1")
        next_due(control_plane, namespace, "q2")
        tick(op, clock, due)
        run = run_name("q1", due)
        wait_run(control_plane, namespace, run)
        # What the new run sets off is done: the AgentRun controller parked it and added the Group as
        # an owner, the task's status names it; a resync then reconciles everything at this state.
        wait_for(
            lambda: (
                (get(control_plane, "agentrun", run, namespace) or {}).get("status", {}).get("reason")
                == "GroupNotReady"
                and len(get(control_plane, "agentrun", run, namespace)["metadata"]["ownerReferences"]) == 2
            ),
            what=f"{run} parked and owned by its Group",
        )
        wait_for(lambda: status_of(control_plane, namespace, "q1").get("active") == [{"name": run}], what="active")
        resync(op)

        window = AuditWindow(control_plane)
        for _ in range(3):
            resync(op)
        clock.set(due + MINUTE)  # time passes, nothing is due
        resync(op)
    with EmbeddedOperator(clock=clock) as op:
        synced(op, processed=4)
        resync(op)
    assert window.writes(OPERATOR_USER, namespace) == [], describe(window.writes(OPERATOR_USER, namespace))


def test_deleting_a_task_stops_future_runs_and_leaves_its_runs(
    control_plane: ControlPlane, namespace: str, op: Any, clock: TestClock
) -> None:
    unready_group(control_plane, namespace)
    apply(control_plane, namespace, task("gone", {"cron": "*/5 * * * *"}))
    due = next_due(control_plane, namespace, "gone")
    tick(op, clock, due)
    name = run_name("gone", due)
    wait_run(control_plane, namespace, name)
    grp = get(control_plane, "group", "fam", namespace)
    wait_for(
        lambda: len(get(control_plane, "agentrun", name, namespace)["metadata"]["ownerReferences"]) == 2,
        what="Group owner added",
    )
    finish(control_plane, namespace, name)
    control_plane.kubectl("delete", "scheduledtask", "gone", "-n", namespace)
    # The garbage collector drops the task's reference; the Group still owns the run, so it stays
    # (until its TTL, which the AgentRun controller applies).
    wait_for(
        lambda: (
            [r["uid"] for r in get(control_plane, "agentrun", name, namespace)["metadata"]["ownerReferences"]]
            == [grp["metadata"]["uid"]]
        ),
        what="only the Group owns the run",
    )
    tick(op, clock, due + 5 * MINUTE)
    assert list(runs_of(control_plane, namespace, "gone")) == [name]
