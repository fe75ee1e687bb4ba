"""Kubernetes Events without a cluster: the recorder's aggregation into series, its bound, the note
limit, best-effort failure handling; and what the gateway reports (runs, deliveries, budgets)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pynchy.aio import TaskSet
from pynchy.api.group import GroupSpec
from pynchy.gateway.budget import Verdict
from pynchy.gateway.channels.base import DeliveryError
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.events import GatewayEvents
from pynchy.gateway.pricing import DEFAULT_PRICES
from pynchy.gateway.routing import Directory
from pynchy.gateway.spend import SpendGuard
from pynchy.gateway.usage import ModelUsage
from pynchy.kube.api import EVENTS_V1, KubeApi, TemporaryKubeError, resource_key
from pynchy.kube.events import NOTE_LIMIT, EventRecorder, ObjectRef, micro_time, truncate_note
from pynchy.store import outbound
from pynchy.store.models import OutboundRow

NS = "home"
RUN = ObjectRef("pynchy.dev/v1alpha1", "AgentRun", NS, "demo-run", "uid-run")


class FakeEvents:
    """The two calls the recorder makes, recorded; `gate` holds every call until set; `fail` makes
    the next calls raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None
        self._held = asyncio.Event()  # a call is waiting at the gate

    async def held(self) -> None:
        """Until a call of the recorder waits at the gate (it has taken what it posts)."""
        await self._held.wait()

    async def _answer(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.gate is not None:
            self._held.set()
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.calls.append((verb, body))
        return body

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self._answer("create", obj)

    async def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        assert kind == EVENTS_V1
        return await self._answer("patch", {"namespace": namespace, "name": name, **patch})


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def recorder(api: FakeEvents, tasks: TaskSet, clock: Clock | None = None, **options: Any) -> EventRecorder:
    return EventRecorder(api, tasks, "pynchy.dev/gateway", "gw-pod-1", clock=clock or Clock(), **options)


def run_async(fn: Any) -> Any:
    async def main() -> Any:
        tasks = TaskSet()
        try:
            return await fn(tasks)
        finally:
            await tasks.close()

    return asyncio.run(main())


# -- the recorder --------------------------------------------------------------------------------


def test_the_first_occurrence_creates_an_events_k8s_io_event_from_the_background() -> None:
    api = FakeEvents()
    clock = Clock()

    async def scenario(tasks: TaskSet) -> None:
        api.gate = asyncio.Event()  # the API server does not answer yet
        rec = recorder(api, tasks, clock)
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "agent run Failed: boom")
        assert rec.pending == 1  # record() only noted it
        await api.held()
        assert rec.pending == 0  # the poster took it and waits for the API server
        assert api.calls == []
        api.gate.set()
        await rec.idle()

    run_async(scenario)
    ((verb, event),) = api.calls
    assert verb == "create"
    assert event == {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": event["metadata"]["name"], "namespace": NS},
        "eventTime": micro_time(clock.now),
        "reportingController": "pynchy.dev/gateway",
        "reportingInstance": "gw-pod-1",
        "action": "RunAgent",
        "reason": "RunFailed",
        "regarding": {
            "apiVersion": "pynchy.dev/v1alpha1",
            "kind": "AgentRun",
            "namespace": NS,
            "name": "demo-run",
            "uid": "uid-run",
        },
        "note": "agent run Failed: boom",
        "type": "Warning",
    }
    assert event["metadata"]["name"].startswith("demo-run.")
    assert event["eventTime"] == "2027-01-15T08:00:00.000000Z"


def test_repeats_patch_the_series_of_the_same_event_and_pile_ups_are_one_patch() -> None:
    api = FakeEvents()
    clock = Clock()

    async def scenario(tasks: TaskSet) -> None:
        rec = recorder(api, tasks, clock)
        rec.record(RUN, "Warning", "DeliveryFailed", "Deliver", "channel_not_found")
        await rec.idle()
        clock.now += 10
        rec.record(RUN, "Warning", "DeliveryFailed", "Deliver", "channel_not_found")
        await rec.idle()
        api.gate = asyncio.Event()  # three more while the API server is slow: one patch, count 5
        for _ in range(3):
            clock.now += 1
            rec.record(RUN, "Warning", "DeliveryFailed", "Deliver", "channel_not_found")
        api.gate.set()
        await rec.idle()
        assert len(rec) == 1

    run_async(scenario)
    (_, created), *patches = api.calls
    name = created["metadata"]["name"]
    start = 1_800_000_000.0
    assert [verb for verb, _ in patches] == ["patch", "patch"]
    assert [body for _, body in patches] == [
        {"namespace": NS, "name": name, "series": {"count": 2, "lastObservedTime": micro_time(start + 10)}},
        {"namespace": NS, "name": name, "series": {"count": 5, "lastObservedTime": micro_time(start + 13)}},
    ]


def test_repeats_before_the_create_go_with_it_and_distinct_events_stay_apart() -> None:
    api = FakeEvents()

    async def scenario(tasks: TaskSet) -> None:
        rec = recorder(api, tasks)
        api.gate = asyncio.Event()
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "first")
        await api.held()  # being created
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "second")
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "second")
        rec.record(RUN, "Normal", "RunFailed", "RunAgent", "second")  # another type: another Event
        api.gate.set()
        await rec.idle()

    run_async(scenario)
    assert [(verb, body["note"], body["type"], body.get("series", {}).get("count")) for verb, body in api.calls] == [
        ("create", "first", "Warning", None),
        ("create", "second", "Warning", 2),
        ("create", "second", "Normal", None),
    ]
    assert len({body["metadata"]["name"] for _, body in api.calls}) == 3


def test_a_repeat_after_a_quiet_window_is_a_new_event() -> None:
    api = FakeEvents()
    clock = Clock()

    async def scenario(tasks: TaskSet) -> None:
        rec = recorder(api, tasks, clock, window=60)
        rec.record(RUN, "Warning", "BudgetReached", "CheckBudget", "daily budget reached")
        await rec.idle()
        clock.now += 61
        rec.record(RUN, "Warning", "BudgetReached", "CheckBudget", "daily budget reached")
        await rec.idle()
        assert len(rec) == 1  # the new series replaced the old one

    run_async(scenario)
    assert [verb for verb, _ in api.calls] == ["create", "create"]
    assert api.calls[0][1]["metadata"]["name"] != api.calls[1][1]["metadata"]["name"]


def test_the_map_is_bounded_and_the_least_recently_seen_goes_first() -> None:
    api = FakeEvents()

    async def scenario(tasks: TaskSet) -> EventRecorder:
        rec = recorder(api, tasks, limit=2)
        api.gate = asyncio.Event()
        rec.record(RUN, "Warning", "R", "A", "n0")
        await api.held()  # being created
        for i in range(1, 200):
            rec.record(RUN, "Warning", "R", "A", f"n{i}")
        assert len(rec) == 2
        assert rec.pending == 2  # n198 and n199: the rest was evicted before the poster got to it
        api.gate.set()
        await rec.idle()
        return rec

    rec = run_async(scenario)
    assert len(rec) == 2
    # What was evicted before the poster got to it was dropped (best-effort), never posted late.
    assert [body["note"] for _, body in api.calls] == ["n0", "n198", "n199"]


def test_notes_are_cut_to_the_apis_byte_limit_between_characters() -> None:
    assert truncate_note("short") == "short"
    exact = "x" * NOTE_LIMIT
    assert truncate_note(exact) == exact
    long = "ä" * 1000  # 2000 bytes
    cut = truncate_note(long)
    assert len(cut.encode()) <= NOTE_LIMIT
    assert cut.endswith("…")
    assert set(cut[:-1]) == {"ä"}
    assert len(truncate_note("€" * 400).encode()) <= NOTE_LIMIT  # 3-byte characters

    api = FakeEvents()

    async def scenario(tasks: TaskSet) -> None:
        rec = recorder(api, tasks)
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "y" * 5000)
        await rec.idle()

    run_async(scenario)
    assert len(api.calls[0][1]["note"].encode()) == NOTE_LIMIT


def test_a_refused_or_unreachable_api_drops_the_event_and_logs_once_per_outage() -> None:
    api = FakeEvents()

    async def scenario(tasks: TaskSet) -> list[dict[str, Any]]:
        rec = recorder(api, tasks)
        with capture_logs() as logs:
            api.fail = TemporaryKubeError(0, "ConnectionRefusedError", "the API server is down")
            for note in ("a", "b", "c"):
                rec.record(RUN, "Warning", "RunFailed", "RunAgent", note)
            await rec.idle()
            assert len(rec) == 0  # dropped, nothing kept for a retry
            api.fail = None
            rec.record(RUN, "Warning", "RunFailed", "RunAgent", "a")  # the next occurrence starts afresh
            await rec.idle()
        return logs

    logs = run_async(scenario)
    assert [(e["log_level"], e["event"].split(";")[0]) for e in logs] == [
        ("warning", "Kubernetes Event not posted"),
        ("info", "Kubernetes Events are posted again"),
    ]
    assert logs[0]["error"] == "0 ConnectionRefusedError: the API server is down"
    assert [(verb, body["note"]) for verb, body in api.calls] == [("create", "a")]


def test_recording_after_shutdown_neither_raises_nor_posts() -> None:
    api = FakeEvents()

    async def scenario(tasks: TaskSet) -> None:
        rec = recorder(api, tasks)
        await tasks.close()
        rec.record(RUN, "Warning", "RunFailed", "RunAgent", "late")
        assert rec.pending == 0

    run_async(scenario)
    assert api.calls == []


def test_events_k8s_io_objects_go_to_their_own_api_group() -> None:
    assert resource_key({"apiVersion": "events.k8s.io/v1", "kind": "Event"}) == EVENTS_V1
    assert resource_key({"apiVersion": "v1", "kind": "Event"}) == "Event"
    assert resource_key({"apiVersion": "pynchy.dev/v1alpha1", "kind": "Group"}) == "Group"
    assert KubeApi.path(EVENTS_V1, NS, "x.1") == "/apis/events.k8s.io/v1/namespaces/home/events/x.1"
    assert KubeApi.path("Event", NS) == "/api/v1/namespaces/home/events"


# -- what the gateway reports -----------------------------------------------------------------------


Recorded = list[tuple[ObjectRef, str, str, str, str]]


def gateway_events() -> tuple[GatewayEvents, Recorded]:
    seen: Recorded = []
    directory = Directory()
    meta = {"name": "demo", "namespace": NS, "uid": "uid-demo", "creationTimestamp": "2026-12-01T00:00:00Z"}
    directory.on_event("ADDED", {"metadata": meta, "spec": {"channels": [{"local": {"name": "demo"}}]}})
    events = GatewayEvents(lambda *event: seen.append(event), directory)
    return events, seen


def test_budget_notices_are_events_on_the_group_with_its_uid() -> None:
    events, seen = gateway_events()
    events.budget_notice(NS, "demo", Verdict("warning", None, "$4.10 of the daily budget of $5.00 used"))
    events.budget_notice(NS, "demo", Verdict("exceeded", None, "daily budget of $5.00 reached"))
    events.budget_notice(NS, "gone", Verdict("exceeded", None, "daily budget of $5.00 reached"))
    events.budget_notice(NS, "demo", Verdict("ok"))
    group = ObjectRef("pynchy.dev/v1alpha1", "Group", NS, "demo", "uid-demo")
    gone = ObjectRef("pynchy.dev/v1alpha1", "Group", NS, "gone")  # not in the directory: no uid
    assert seen == [
        (group, "Normal", "BudgetWarning", "CheckBudget", "$4.10 of the daily budget of $5.00 used"),
        (group, "Warning", "BudgetReached", "CheckBudget", "daily budget of $5.00 reached"),
        (gone, "Warning", "BudgetReached", "CheckBudget", "daily budget of $5.00 reached"),
    ]


class RefusingChannel:
    kind = "local"
    max_message_chars = 1000

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        raise DeliveryError("channel_not_found", permanent=True)


def test_a_delivery_given_up_is_reported_once_with_its_channel_and_error(tmp_path: Path) -> None:
    events, seen = gateway_events()

    async def main() -> None:
        db = Db(f"sqlite:///{tmp_path}/gateway.db")
        delivery = Delivery(db, {"local": RefusingChannel()}, on_gave_up=events.delivery_gave_up)  # type: ignore[dict-item]
        try:
            row = {"key": "k", "namespace": NS, "group": "demo", "text": "hi", "channel": "local", "channel_id": "c1"}
            await db.call(outbound.add, **row)
            await delivery.deliver_pending()
            await delivery.deliver_pending()  # nothing pending any more: no second report
        finally:
            db.close()

    asyncio.run(main())
    group = ObjectRef("pynchy.dev/v1alpha1", "Group", NS, "demo", "uid-demo")
    note = "gave up delivering a message to local channel c1: channel_not_found"
    assert seen == [(group, "Warning", "DeliveryFailed", "Deliver", note)]


def test_the_spend_guard_reports_each_notice_the_first_time_it_is_posted(tmp_path: Path) -> None:
    noticed: list[tuple[str, str, str]] = []
    posted: set[str] = set()

    async def notify(key: str, namespace: str, group: str, text: str) -> bool:
        new = key not in posted  # as the ledger answers: True the one time a key is new
        posted.add(key)
        return new

    async def main() -> None:
        db = Db(f"sqlite:///{tmp_path}/gateway.db")
        guard = SpendGuard(
            db,
            DEFAULT_PRICES,
            notify,
            clock=lambda: datetime(2026, 12, 1, 12, tzinfo=UTC),
            on_notice=lambda ns, group, verdict: noticed.append((ns, group, verdict.state)),
        )
        spec = GroupSpec.from_k8s({"channels": [{"local": {"name": "demo"}}], "budget": {"dailyUsd": 0.5}})
        usage = ModelUsage(model="claude-sonnet-4-5", input_tokens=100_000, output_tokens=10_000)  # $0.45
        try:
            await guard.record(NS, "demo", "r1", usage, spec)  # warning
            await guard.record(NS, "demo", "r1", usage, spec)  # exceeded ($0.90)
            for _ in range(3):
                assert (await guard.check(NS, "demo", spec)).state == "exceeded"
        finally:
            await guard.flush()  # the usage rows it writes behind
            db.close()

    asyncio.run(main())
    assert noticed == [(NS, "demo", "warning"), (NS, "demo", "exceeded")]


@pytest.mark.parametrize("limit", [0, -1])
def test_the_recorder_needs_room_for_one_series(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventRecorder(FakeEvents(), TaskSet(), "pynchy.dev/gateway", "x", limit=limit)
