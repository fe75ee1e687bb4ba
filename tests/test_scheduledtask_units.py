"""The ScheduledTask controller's pure parts: AgentRun bodies and task status in, history, pruning,
run manifests, Events and decisions out. The controller itself runs against the real API server
(tests/cluster/test_scheduledtask.py); schedule maths and DST are in tests/test_schedule.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pynchy.api.resources import ScheduledTask
from pynchy.operator.build.common import parse_timestamp, timestamp
from pynchy.operator.build.scheduledtask import scheduled_run
from pynchy.operator.conditions import Cond
from pynchy.operator.reconcile_scheduledtask import (
    DELETED_UNFINISHED,
    READY_SCHEDULED,
    Fresh,
    TaskRun,
    TaskRuns,
    describe_decision,
    excess_runs,
    last_handled,
    latest_schedule,
    merge_history,
    task_run,
    task_status,
)
from pynchy.schedule import Fire, Missed, Skip, Wait

UTC = dt.UTC
NS = "home"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


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


def test_last_handled_counts_a_run_whose_status_write_was_lost() -> None:
    # A crash right after the create: the status says nothing, the run itself says it was handled.
    lost = [run("t-8", "2027-01-04T08:10:00Z")]
    assert last_handled({}, lost) == utc(2027, 1, 4, 8, 10)
    assert latest_schedule({}, lost) == "2027-01-04T08:10:00Z"
    assert latest_schedule({"lastScheduleTime": "2027-01-04T08:20:00Z"}, lost) == "2027-01-04T08:20:00Z"


def test_task_status_lists_active_runs_history_and_times() -> None:
    raw = task_body("t", {"cron": "*/5 * * * *"})
    raw["metadata"]["generation"] = 3
    runs = [
        run("t-2", "2027-01-04T08:10:00Z"),
        run("t-1", "2027-01-04T08:05:00Z", "Succeeded", "2027-01-04T08:06:00Z"),
    ]
    accepted = Cond("Accepted", True, "Accepted", "ok")
    status = task_status(
        raw,
        accepted,
        READY_SCHEDULED,
        runs=runs,
        last_schedule="2027-01-04T08:10:00Z",
        next_time=utc(2027, 1, 4, 8, 15),
    )
    assert status["observedGeneration"] == 3
    assert status["lastScheduleTime"] == "2027-01-04T08:10:00Z"
    assert status["lastSuccessfulTime"] == "2027-01-04T08:06:00Z"
    assert status["nextScheduleTime"] == "2027-01-04T08:15:00Z"
    assert status["active"] == [{"name": "t-2"}]
    assert [(h["runName"], h["outcome"]) for h in status["history"]] == [("t-2", "Active"), ("t-1", "Succeeded")]
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Accepted", "True", "Accepted"),
        ("Ready", "True", "Scheduled"),
    ]
    # Nothing coming: no nextScheduleTime (None is removed by the merge patch).
    assert task_status(raw, accepted, READY_SCHEDULED, runs=[])["nextScheduleTime"] is None


def test_events_say_what_happened_to_a_due_time() -> None:
    task = ScheduledTask.from_k8s(task_body("t", {"cron": "*/10 * * * *"}, startingDeadlineSeconds=60))
    now = utc(2027, 1, 4, 8, 44)
    catch_up = Fire(scheduled_time=utc(2027, 1, 4, 8, 40), next_time=utc(2027, 1, 4, 8, 50), missed_count=2)
    assert describe_decision(catch_up, task, now) == (
        "Warning",
        "MissedSchedules",
        "2 earlier due times passed without a run; only the most recent one, 2027-01-04T08:40:00Z, "
        "was started (at most one catch-up run).",
    )
    missed = Missed(scheduled_time=utc(2027, 1, 4, 8, 40), next_time=utc(2027, 1, 4, 8, 50), missed_count=3)
    assert describe_decision(missed, task, now) == (
        "Warning",
        "MissedSchedule",
        "The run due at 2027-01-04T08:40:00Z did not start: it is 240s past its due time, beyond "
        "startingDeadlineSeconds (60s). 3 due times were missed in all.",
    )
    skip = Skip(scheduled_time=utc(2027, 1, 4, 8, 40), next_time=None, active=("t-1",))
    assert describe_decision(skip, task, now) == (
        "Normal",
        "Skipped",
        "The run due at 2027-01-04T08:40:00Z was skipped: t-1 still active and concurrencyPolicy is Forbid.",
    )
    on_time = Fire(scheduled_time=utc(2027, 1, 4, 8, 40), next_time=utc(2027, 1, 4, 8, 50))
    assert describe_decision(on_time, task, now) is None
    assert describe_decision(Wait(until=utc(2027, 1, 4, 8, 50)), task, now) is None


def test_a_planned_run_fires_only_at_its_moment() -> None:
    """The due moment needs no read only while `decide` would still say the same."""
    raw = task_body("t", {"cron": "0 9 * * *"}, startingDeadlineSeconds=60)
    fire = Fire(scheduled_time=utc(2027, 1, 4, 9), next_time=utc(2027, 1, 5, 9))
    fresh = Fresh("7", utc(2027, 1, 4, 9), raw, ScheduledTask.from_k8s(raw), fire)
    assert fresh.fires_now(utc(2027, 1, 4, 8, 59, 59)) is None  # early
    assert fresh.fires_now(utc(2027, 1, 4, 9)) == fire
    assert fresh.fires_now(utc(2027, 1, 4, 9, 1)) == fire  # within the deadline
    assert fresh.fires_now(utc(2027, 1, 4, 9, 1, 1)) is None  # beyond it: a full reconcile records the miss
    assert fresh.fires_now(utc(2027, 1, 5, 9)) is None  # the next due time came: decide again
    suspended = task_body("t", {"cron": "0 9 * * *"}, suspend=True)
    assert Fresh("7", None, suspended, ScheduledTask.from_k8s(suspended), fire).fires_now(utc(2027, 1, 4, 9)) is None
    assert Fresh("7", utc(2027, 1, 4, 9)).fires_now(utc(2027, 1, 4, 9)) is None  # nothing planned


def test_only_run_changes_that_matter_wake_the_task() -> None:
    runs = TaskRuns()
    body = agentrun_body("t-1")
    assert runs.observe(body) == (NS, "t")  # a new run
    assert runs.observe(body) is None  # the same again (a resync, an echo)
    body["metadata"]["ownerReferences"].append({"kind": "Group", "name": "g", "uid": "uid-g"})
    assert runs.observe(body) is None  # the Group became an owner
    body["status"] = {"phase": "Pending", "reason": "Queued", "message": "waits"}
    assert runs.observe(body) is None  # still active, nothing new to report
    body["status"] = {"phase": "Running", "startTime": "2027-01-01T09:00:02Z"}
    assert runs.observe(body) == (NS, "t")  # the history shows the start
    assert [r.name for r in runs.of((NS, "t"), "uid-t")] == ["t-1"]
    assert runs.of((NS, "t"), "uid-another-task-of-that-name") == []
    runs.track((NS, "t"))
    assert runs.observe(body, deleted=True) == (NS, "t")
    assert runs.of((NS, "t"), "uid-t") == []
    assert [r.name for r in runs.gone_of((NS, "t"), "uid-t")] == ["t-1"]  # for the history, until written
    runs.settle_gone((NS, "t"), ["t-1"])
    assert runs.gone_of((NS, "t"), "uid-t") == []


def test_a_run_this_process_deleted_is_not_brought_back_by_a_late_event() -> None:
    runs = TaskRuns()
    runs.track((NS, "t"))
    body = agentrun_body("t-1", phase="Running")
    runs.observe(body)
    (active,) = runs.of((NS, "t"), "uid-t")
    runs.removed(active, summary="Replaced by t-2 (concurrencyPolicy Replace).", finished_at="2027-01-01T09:05:00Z")
    assert runs.observe(body) is None  # an event sent before the delete
    assert runs.of((NS, "t"), "uid-t") == []
    (gone,) = runs.gone_of((NS, "t"), "uid-t")
    assert (gone.outcome, gone.summary, gone.finish_time) == (
        "Failed",
        "Replaced by t-2 (concurrencyPolicy Replace).",
        "2027-01-01T09:05:00Z",
    )
