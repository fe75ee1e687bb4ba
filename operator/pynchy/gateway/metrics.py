"""The gateway's Prometheus metrics, on its own registry (app.py builds one `GatewayMetrics` and gives
each part only the recorder it uses). Served at `/metrics` of the gateway's app.

Labels stay bounded: `group` is `namespace/name` of a Group, plus channel kind, model, outcome, phase
or token kind; never a message, turn or run. Gauges of current state (queued turns, active runs) are
computed at scrape time from what the gateway already keeps, not counted along the way."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pynchy.metrics import group_label, new_registry
from pynchy.store.models import TurnRow

# Seconds: from a local turn answered in a blink to a long agent task.
TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
# Turns claimed but without a first event yet; a turn whose run dies without posting one is forgotten
# when it is requeued or failed, and at worst pushed out by newer ones past this many.
AWAITING_LIMIT = 10_000
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


def _seconds(since: datetime | None, until: datetime | None) -> float | None:
    if since is None or until is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return max(0.0, (until - since).total_seconds())


class InboundMetrics:
    """What `accept()` did with each channel message."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.events = Counter(
            "pynchy_inbound_events",
            "Channel messages accepted by the gateway, by channel kind and outcome "
            "(queued, follow-up, duplicate, command, ignored, error).",
            ["channel", "outcome"],
            registry=registry if registry is not None else new_registry(),
        )

    def accepted(self, channel: str, outcome: str) -> None:
        self.events.labels(channel, outcome).inc()


class TurnMetrics:
    """Turn latency, every interval measured from when the turn was queued: until a run claimed it,
    until the run posted its first event (a text delta, a tool use, or the result), until it finished."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else new_registry()
        self.queue_wait = Histogram(
            "pynchy_turn_queue_wait_seconds",
            "Time from a turn being queued until a run claimed it.",
            ["group"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.first_event = Histogram(
            "pynchy_turn_first_event_seconds",
            "Time from a turn being queued until its run posted the first event (first token, tool use or result).",
            ["group"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "pynchy_turn_duration_seconds",
            "Time from a turn being queued until it finished (outcome ok or error).",
            ["group", "outcome"],
            buckets=TURN_BUCKETS,
            registry=registry,
        )
        # turn id -> (group label, queued at): claimed turns waiting for their first event.
        self._awaiting: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def claimed(self, row: TurnRow) -> None:
        label = group_label(row.namespace, row.group)
        wait = _seconds(row.created_at, row.delivered_at)
        if wait is not None:
            self.queue_wait.labels(label).observe(wait)
        self._awaiting[row.id] = (label, row.created_at)
        self._awaiting.move_to_end(row.id)
        while len(self._awaiting) > AWAITING_LIMIT:
            self._awaiting.popitem(last=False)

    def event_posted(self, turn_id: str, now: datetime | None = None) -> None:
        """A run posted events for the turn; only the first one after a claim is measured."""
        awaiting = self._awaiting.pop(turn_id, None)
        if awaiting is None:
            return
        label, queued_at = awaiting
        seconds = _seconds(queued_at, now or datetime.now(UTC))
        if seconds is not None:
            self.first_event.labels(label).observe(seconds)

    def finished(self, row: TurnRow) -> None:
        self._awaiting.pop(row.id, None)
        seconds = _seconds(row.created_at, row.finished_at or datetime.now(UTC))
        if seconds is not None:
            outcome = "error" if row.is_error else "ok"
            self.duration.labels(group_label(row.namespace, row.group), outcome).observe(seconds)

    def forget(self, turn_id: str) -> None:
        """The turn went back to the queue (its run ended): its next claim measures again."""
        self._awaiting.pop(turn_id, None)

    def __len__(self) -> int:
        return len(self._awaiting)


class DeliveryMetrics:
    """The delivery loop's sends: every attempt, the failed ones, and the rows it gave up on."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else new_registry()
        self.attempts = Counter(
            "pynchy_delivery_attempts", "Replies handed to a channel, by channel kind.", ["channel"], registry=registry
        )
        self.failures = Counter(
            "pynchy_delivery_failures",
            "Delivery attempts that failed (retried later, or given up), by channel kind.",
            ["channel"],
            registry=registry,
        )
        self.gave_up = Counter(
            "pynchy_delivery_gave_up",
            "Replies given up after the last attempt or a permanent error, by channel kind.",
            ["channel"],
            registry=registry,
        )

    def attempted(self, channel: str) -> None:
        self.attempts.labels(channel).inc()

    def failed(self, channel: str, *, gave_up: bool) -> None:
        self.failures.labels(channel).inc()
        if gave_up:
            self.gave_up.labels(channel).inc()


class RunMetrics:
    """AgentRuns the gateway saw finish (a transition it watched, so a restart counts nothing again)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.finished_runs = Counter(
            "pynchy_agent_runs_finished",
            "AgentRuns that finished while the gateway watched, by Group and phase (Succeeded, Failed, TimedOut).",
            ["group", "phase"],
            registry=registry if registry is not None else new_registry(),
        )

    def finished(self, namespace: str, group: str, phase: str) -> None:
        self.finished_runs.labels(group_label(namespace, group), phase).inc()


class ModelMetrics:
    """Model usage through the proxy, and calls refused because a Group's budget was reached."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else new_registry()
        self.tokens = Counter(
            "pynchy_model_tokens",
            "Model tokens used through the proxy, by Group, model and kind (input, output, cache_read, cache_write).",
            ["group", "model", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "pynchy_model_cost_usd",
            "Estimated model cost in US dollars through the proxy, by Group and model.",
            ["group", "model"],
            registry=registry,
        )
        self.budget_refusals = Counter(
            "pynchy_budget_refusals",
            "Model calls refused because the Group's budget was reached.",
            ["group"],
            registry=registry,
        )

    def record_model_usage(
        self, group: str, model: str, input: int, output: int, cache_read: int, cache_write: int, cost_usd: float
    ) -> None:
        """One model call's usage; `group` is `namespace/name` (see pynchy.metrics.group_label)."""
        for kind, count in zip(TOKEN_KINDS, (input, output, cache_read, cache_write), strict=True):
            if count > 0:
                self.tokens.labels(group, model, kind).inc(count)
        if cost_usd > 0:
            self.cost.labels(group, model).inc(cost_usd)

    def record_budget_refusal(self, group: str) -> None:
        self.budget_refusals.labels(group).inc()


class StoreMetrics:
    """Rows the store's retention deleted, by kind (messages, turns, outbound, usage, audit)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.pruned_rows = Counter(
            "pynchy_store_pruned_rows",
            "Rows deleted from the conversation store by retention, by kind of row.",
            ["kind"],
            registry=registry if registry is not None else new_registry(),
        )

    def pruned(self, kind: str, rows: int) -> None:
        self.pruned_rows.labels(kind).inc(rows)


@dataclass(frozen=True)
class GatewayState:
    """What the gateway holds right now, read at scrape time."""

    queued: Mapping[str, int] = field(default_factory=dict)  # group label -> queued turns
    running: Mapping[str, int] = field(default_factory=dict)  # group label -> turns with a run
    active_runs: Mapping[str, int] = field(default_factory=dict)  # group label -> AgentRuns not finished
    waiting_polls: int = 0  # Groups whose runs wait in a long-poll for a turn


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.state = GatewayState()

    def describe(self) -> Iterable[Metric]:
        return list(self._families(GatewayState()))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.state))

    @staticmethod
    def _families(state: GatewayState) -> Iterable[Metric]:
        for name, doc, values in (
            ("pynchy_turns_queued", "Turns waiting for a run to claim them (the queue depth), by Group.", state.queued),
            ("pynchy_turns_running", "Turns a run has claimed and not answered yet, by Group.", state.running),
            ("pynchy_agent_runs_active", "AgentRuns not finished, by Group.", state.active_runs),
        ):
            family = GaugeMetricFamily(name, doc, labels=["group"])
            for group, value in sorted(values.items()):
                family.add_metric([group], value)
            yield family
        yield GaugeMetricFamily(
            "pynchy_run_polls_waiting", "Groups whose run waits in a long-poll for a turn.", value=state.waiting_polls
        )


class GatewayMetrics:
    """Every gateway metric on one registry, as recorders for the parts that record."""

    def __init__(self) -> None:
        self.registry = new_registry()
        self.inbound = InboundMetrics(self.registry)
        self.turns = TurnMetrics(self.registry)
        self.delivery = DeliveryMetrics(self.registry)
        self.runs = RunMetrics(self.registry)
        self.model = ModelMetrics(self.registry)
        self.store = StoreMetrics(self.registry)
        self._state = _StateCollector()
        self.registry.register(self._state)

    def record_model_usage(
        self, group: str, model: str, input: int, output: int, cache_read: int, cache_write: int, cost_usd: float
    ) -> None:
        self.model.record_model_usage(group, model, input, output, cache_read, cache_write, cost_usd)

    def record_budget_refusal(self, group: str) -> None:
        self.model.record_budget_refusal(group)

    def observe_state(self, state: GatewayState) -> None:
        """Set what the state gauges report; the scrape handler calls this just before rendering."""
        self._state.state = state
