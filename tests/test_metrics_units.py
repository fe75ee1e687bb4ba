"""The gateway's and the operator's Prometheus metrics, read back from their own registries with
`get_sample_value`: what each part records, that state gauges follow what exists, that a restart
counts nothing twice, and that the monitoring component names only series that exist."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pynchy.errors import RefusedError, TemporaryError
from pynchy.gateway.agentruns import RunIndex
from pynchy.gateway.channels.base import DeliveryError, Inbound
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.inbox import Inbox
from pynchy.gateway.metrics import AWAITING_LIMIT, GatewayMetrics, GatewayState, TurnMetrics
from pynchy.gateway.routing import Directory
from pynchy.metrics import exposition
from pynchy.operator.metrics import OperatorMetrics, QueueDepth
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.workqueue import WorkQueue
from pynchy.settings import SettingsExit, load
from pynchy.store import outbound
from pynchy.store.models import OutboundRow, TurnRow

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "manifests" / "components" / "monitoring"
NS = "home"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def turn(turn_id: str = "t1", group: str = "demo", **fields: Any) -> TurnRow:
    return TurnRow(id=turn_id, namespace=NS, group=group, prompt="hi", **fields)


def run_obj(name: str, phase: str | None, group: str = "demo") -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}", "creationTimestamp": "2026-12-01T00:00:00Z"}
    return {"metadata": meta, "spec": {"groupRef": {"name": group}}, "status": {"phase": phase} if phase else {}}


# -- gateway -------------------------------------------------------------------------------------


def test_turn_latencies_are_measured_from_queueing_and_the_first_event_once() -> None:
    m = GatewayMetrics()
    r = m.registry
    m.turns.claimed(turn(created_at=T0, delivered_at=T0 + timedelta(seconds=2)))
    assert value(r, "pynchy_turn_queue_wait_seconds_sum", group="home/demo") == 2.0
    assert value(r, "pynchy_turn_queue_wait_seconds_bucket", group="home/demo", le="1.0") == 0.0
    assert value(r, "pynchy_turn_queue_wait_seconds_bucket", group="home/demo", le="2.5") == 1.0

    m.turns.event_posted("t1", now=T0 + timedelta(seconds=3))
    m.turns.event_posted("t1", now=T0 + timedelta(seconds=9))  # later batches are not first events
    assert value(r, "pynchy_turn_first_event_seconds_count", group="home/demo") == 1.0
    assert value(r, "pynchy_turn_first_event_seconds_sum", group="home/demo") == 3.0

    m.turns.finished(turn(created_at=T0, finished_at=T0 + timedelta(seconds=10), is_error=False))
    m.turns.finished(turn("t2", created_at=T0, finished_at=T0 + timedelta(seconds=4), is_error=True))
    assert value(r, "pynchy_turn_duration_seconds_sum", group="home/demo", outcome="ok") == 10.0
    assert value(r, "pynchy_turn_duration_seconds_count", group="home/demo", outcome="error") == 1.0
    assert len(m.turns) == 0


def test_a_requeued_turn_measures_its_first_event_after_the_next_claim() -> None:
    m = TurnMetrics()
    m.claimed(turn(created_at=T0, delivered_at=T0))
    m.forget("t1")  # its run died: back to the queue
    m.event_posted("t1", now=T0 + timedelta(seconds=1))  # a late batch of the dead run: not measured
    assert m.first_event.labels("home/demo")._sum.get() == 0.0  # type: ignore[attr-defined]
    m.claimed(turn(created_at=T0, delivered_at=T0 + timedelta(seconds=5)))
    m.event_posted("t1", now=T0 + timedelta(seconds=6))
    assert m.first_event.labels("home/demo")._sum.get() == 6.0  # type: ignore[attr-defined]


def test_turns_waiting_for_a_first_event_are_bounded() -> None:
    m = TurnMetrics()
    for i in range(AWAITING_LIMIT + 50):
        m.claimed(turn(f"t{i}", created_at=T0, delivered_at=T0))
    assert len(m) == AWAITING_LIMIT
    m.event_posted("t0", now=T0)  # pushed out: nothing measured, nothing kept
    assert len(m) == AWAITING_LIMIT


def test_state_gauges_report_what_exists_at_scrape_time() -> None:
    m = GatewayMetrics()
    r = m.registry
    m.observe_state(GatewayState(queued={"home/a": 3, "home/b": 0}, running={"home/a": 1}, active_runs={"home/a": 1}))
    assert value(r, "pynchy_turns_queued", group="home/a") == 3.0
    assert value(r, "pynchy_turns_queued", group="home/b") == 0.0
    assert value(r, "pynchy_turns_running", group="home/a") == 1.0
    assert value(r, "pynchy_agent_runs_active", group="home/a") == 1.0
    m.observe_state(GatewayState(queued={"home/b": 2}, waiting_polls=4))
    assert value(r, "pynchy_turns_queued", group="home/a") is None  # a Group gone is no series
    assert value(r, "pynchy_turns_queued", group="home/b") == 2.0
    assert value(r, "pynchy_run_polls_waiting") == 4.0


def test_run_index_counts_runs_it_saw_finish_and_not_those_listed_finished() -> None:
    m = GatewayMetrics()
    index = RunIndex(on_finished=lambda run: m.runs.finished(run.namespace, run.group, run.phase or ""))
    index.on_event("ADDED", run_obj("old", "Failed"))  # finished before a restart: not news
    index.on_event("ADDED", run_obj("r1", "Pending"))
    index.on_event("ADDED", run_obj("r2", "Running"))
    assert index.active_by_group() == {(NS, "demo"): 2}
    index.on_event("MODIFIED", run_obj("r1", "Failed"))
    index.on_event("MODIFIED", run_obj("r1", "Failed"))  # a status write after the end: counted once
    index.on_event("MODIFIED", run_obj("r2", "Succeeded"))
    index.on_event("DELETED", run_obj("r2", "Succeeded"))
    r = m.registry
    assert value(r, "pynchy_agent_runs_finished_total", group="home/demo", phase="Failed") == 1.0
    assert value(r, "pynchy_agent_runs_finished_total", group="home/demo", phase="Succeeded") == 1.0
    assert index.active_by_group() == {}


def test_model_usage_and_budget_refusals() -> None:
    m = GatewayMetrics()
    m.record_model_usage("home/demo", "claude-sonnet-4-5", 100, 20, 0, 7, 0.25)
    m.record_model_usage("home/demo", "claude-sonnet-4-5", 1, 2, 3, 4, 0.05)
    m.record_budget_refusal("home/demo")
    r = m.registry
    labels = {"group": "home/demo", "model": "claude-sonnet-4-5"}
    assert value(r, "pynchy_model_tokens_total", **labels, kind="input") == 101.0
    assert value(r, "pynchy_model_tokens_total", **labels, kind="output") == 22.0
    assert value(r, "pynchy_model_tokens_total", **labels, kind="cache_read") == 3.0
    assert value(r, "pynchy_model_tokens_total", **labels, kind="cache_write") == 11.0
    assert value(r, "pynchy_model_cost_usd_total", **labels) == pytest.approx(0.30)
    assert value(r, "pynchy_budget_refusals_total", group="home/demo") == 1.0


def test_two_gateways_in_one_process_keep_their_own_counts() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.inbound.accepted("local", "queued")
    assert value(one.registry, "pynchy_inbound_events_total", channel="local", outcome="queued") == 1.0
    assert value(two.registry, "pynchy_inbound_events_total", channel="local", outcome="queued") is None
    response = exposition(one.registry)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert response.body is not None
    assert b'pynchy_inbound_events_total{channel="local",outcome="queued"} 1.0' in bytes(response.body)  # type: ignore[arg-type]


def test_inbox_counts_each_message_by_channel_and_outcome(tmp_path: Path) -> None:
    async def main() -> GatewayMetrics:
        db = Db(f"sqlite:///{tmp_path}/gateway.db")
        directory = Directory()
        meta = {"name": "demo", "namespace": NS, "uid": "uid-demo", "creationTimestamp": "2026-12-01T00:00:00Z"}
        directory.on_event("ADDED", {"metadata": meta, "spec": {"channels": [{"local": {"name": "demo"}}]}})
        m = GatewayMetrics()

        async def no_command(*_: Any) -> str:
            raise AssertionError("no command is sent")

        inbox = Inbox(db, directory, None, no_command, lambda row: None, m.inbound)
        try:
            for mid, channel in (("m1", "demo"), ("m1", "demo"), ("m2", "nowhere")):
                await inbox.accept(Inbound("local", channel, "hello", "owner", f"local:{mid}"))
        finally:
            db.close()
        return m

    r = asyncio.run(main()).registry
    assert value(r, "pynchy_inbound_events_total", channel="local", outcome="queued") == 1.0
    assert value(r, "pynchy_inbound_events_total", channel="local", outcome="duplicate") == 1.0
    assert value(r, "pynchy_inbound_events_total", channel="local", outcome="ignored") == 1.0


class RefusingChannel:
    kind = "local"
    max_message_chars = 1000

    def __init__(self, error: DeliveryError) -> None:
        self.error = error

    async def deliver(self, row: OutboundRow, *, maybe_sent: bool) -> str | None:
        raise self.error


def test_delivery_counts_attempts_failures_and_replies_given_up(tmp_path: Path) -> None:
    async def main() -> GatewayMetrics:
        db = Db(f"sqlite:///{tmp_path}/gateway.db")
        m = GatewayMetrics()
        channel = RefusingChannel(DeliveryError("try later", retry_after=0.0))
        delivery = Delivery(db, {"local": channel}, m.delivery)  # type: ignore[dict-item]
        try:
            for key in ("a", "b"):
                await db.call(
                    outbound.add, key=key, namespace=NS, group="demo", text=key, channel="local", channel_id=key
                )
            await delivery.deliver_pending()  # both fail, both will be retried
            channel.error = DeliveryError("channel_not_found", permanent=True)
            delivery._not_before.clear()
            await delivery.deliver_pending()  # both given up
        finally:
            db.close()
        return m

    r = asyncio.run(main()).registry
    assert value(r, "pynchy_delivery_attempts_total", channel="local") == 4.0
    assert value(r, "pynchy_delivery_failures_total", channel="local") == 4.0
    assert value(r, "pynchy_delivery_gave_up_total", channel="local") == 2.0


# -- operator ------------------------------------------------------------------------------------


def test_work_queue_reports_each_reconcile_by_kind_and_result() -> None:
    m = OperatorMetrics()

    async def reconcile(key: tuple[str, str, str]) -> float | None:
        if key[2] == "broken":
            raise TemporaryError("API server unavailable", retry_after=60.0)
        if key[2] == "refused":
            raise RefusedError("Invalid", "the spec is wrong")
        return None

    async def main() -> tuple[int, int, int]:
        queue = WorkQueue(reconcile, 2, observe=lambda key, result, s: m.reconciled(key[0], result, s))
        m.watch(lambda: QueueDepth(*queue.depth()), lambda: {"Group": 3})
        queue.start()
        for name in ("a", "b", "broken"):
            queue.add(("Group", NS, name))
        queue.add(("AgentRun", NS, "refused"))
        while not queue.idle():
            await asyncio.sleep(0.01)
        depth = queue.depth()
        await queue.stop()
        return depth

    depth = asyncio.run(main())
    r = m.registry
    assert value(r, "pynchy_operator_reconciles_total", kind="Group", result="success") == 2.0
    assert value(r, "pynchy_operator_reconciles_total", kind="Group", result="error") == 1.0
    assert value(r, "pynchy_operator_reconciles_total", kind="AgentRun", result="refused") == 1.0
    assert value(r, "pynchy_operator_reconcile_errors_total", kind="Group") == 1.0
    assert value(r, "pynchy_operator_reconcile_errors_total", kind="AgentRun") == 0.0  # refused is not retried
    assert value(r, "pynchy_operator_reconcile_duration_seconds_count", kind="Group") == 3.0
    assert value(r, "pynchy_operator_reconcile_errors_total", kind="Workspace") == 0.0  # present from the start
    assert depth == (0, 0, 1)  # the failed key waits for its retry
    assert value(r, "pynchy_operator_workqueue_delayed") == 1.0
    assert value(r, "pynchy_operator_workqueue_depth") == 0.0
    assert value(r, "pynchy_operator_objects", kind="Group") == 3.0
    assert value(r, "pynchy_operator_objects", kind="AgentRun") == 0.0


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"PYNCHY_METRICS_PORT": "70000"}, "PYNCHY_METRICS_PORT"),
        ({"PYNCHY_METRICS_PORT": "-1"}, "PYNCHY_METRICS_PORT"),
        ({"PYNCHY_METRICS_PORT": "8080"}, "different ports"),  # the liveness port's default
    ],
)
def test_metrics_port_is_validated(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str) -> None:
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", "k" * 32)
    for name, v in env.items():
        monkeypatch.setenv(name, v)
    with pytest.raises(SettingsExit, match=error):
        load(OperatorSettings)


def test_metrics_port_defaults_to_9090_and_0_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", "k" * 32)
    assert load(OperatorSettings).metrics_port == 9090
    monkeypatch.setenv("PYNCHY_METRICS_PORT", "0")
    monkeypatch.setenv("PYNCHY_LIVENESS_PORT", "0")
    assert load(OperatorSettings).metrics_port == 0


# -- the monitoring component names only series that exist ----------------------------------------


def _exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (GatewayMetrics().registry, OperatorMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = _exported_names()
    rules = (MONITORING / "rules.yaml").read_text()
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    used = set(re.findall(r"\bpynchy_[a-z_]+", rules + "\n".join(exprs)))
    assert used
    assert used <= exported, sorted(used - exported)


def test_prometheus_rule_carries_exactly_the_rules_file() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load((MONITORING / "rules.yaml").read_text())
