"""The operator's Prometheus metrics, on its own registry, served at `/metrics` on PYNCHY_METRICS_PORT
(handlers.py starts the server). The work queue reports every reconcile it runs; the queue's depth and
the objects the controller knows are read at scrape time (on the operator's event loop)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pynchy.metrics import new_registry

KINDS = ("Group", "Workspace", "ScheduledTask", "AgentRun")
RESULTS = ("success", "error", "refused")
# A no-op reconcile is a few reads; one that creates a pod or waits on a slow API server takes seconds.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class QueueDepth:
    queued: int  # keys waiting for a worker
    active: int  # keys a worker reconciles now
    delayed: int  # keys with a pending delayed add (backoff, schedule timers, TTLs)


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.depth: Callable[[], QueueDepth] = lambda: QueueDepth(0, 0, 0)
        self.objects: Callable[[], Mapping[str, int]] = dict

    def describe(self) -> Iterable[Metric]:
        return list(self._families(QueueDepth(0, 0, 0), {}))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.depth(), self.objects()))

    @staticmethod
    def _families(depth: QueueDepth, objects: Mapping[str, int]) -> Iterable[Metric]:
        yield GaugeMetricFamily("pynchy_operator_workqueue_depth", "Keys waiting for a worker.", value=depth.queued)
        yield GaugeMetricFamily(
            "pynchy_operator_workqueue_active", "Keys being reconciled right now.", value=depth.active
        )
        yield GaugeMetricFamily(
            "pynchy_operator_workqueue_delayed",
            "Keys waiting for a delayed reconcile (backoff, a schedule's next due time, a run's TTL).",
            value=depth.delayed,
        )
        family = GaugeMetricFamily("pynchy_operator_objects", "Objects the operator watches, by kind.", labels=["kind"])
        for kind in KINDS:
            family.add_metric([kind], objects.get(kind, 0))
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = new_registry()
        self.reconciles = Counter(
            "pynchy_operator_reconciles",
            "Reconciles run, by kind and result (success, error: retried with backoff, refused: not retried).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "pynchy_operator_reconcile_errors",
            "Reconciles that failed and are retried with backoff, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "pynchy_operator_reconcile_duration_seconds",
            "Time one reconcile took, by kind.",
            ["kind"],
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        for kind in KINDS:  # every series exists from the start, so rate() and absent() see zeros
            self.errors.labels(kind)
            self.duration.labels(kind)
            for result in RESULTS:
                self.reconciles.labels(kind, result)
        self._state = _StateCollector()
        self.registry.register(self._state)

    def reconciled(self, kind: str, result: str, seconds: float) -> None:
        self.reconciles.labels(kind, result).inc()
        if result == "error":
            self.errors.labels(kind).inc()
        self.duration.labels(kind).observe(seconds)

    def watch(self, depth: Callable[[], QueueDepth], objects: Callable[[], Mapping[str, int]]) -> None:
        """What the state gauges read at scrape time (call from the loop the scrapes run on)."""
        self._state.depth = depth
        self._state.objects = objects
