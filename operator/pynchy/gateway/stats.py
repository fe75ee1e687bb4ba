"""Per-run counters the gateway reports into AgentRun status: turns served, usage, session.

Usage is what the model proxy metered for the run (every call, side requests included, priced by the
gateway's price table); the runner's own estimate of the cost is kept beside it as reportedCostUSD."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynchy.aio import KeyedLocks, TaskSet
from pynchy.gateway.agentruns import RunEntry, RunKey
from pynchy.gateway.usage import FIELDS, ModelUsage
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy_agent.protocol import UsageReport

log = get_logger(__name__)

_WIRE = {
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "cache_read_input_tokens": "cacheReadInputTokens",
    "cache_creation_input_tokens": "cacheCreationInputTokens",
}


@dataclass
class RunStats:
    turns_served: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None
    last_reply: str | None = None

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> RunStats:
        return cls(
            int(status.get("turnsServed") or 0),
            dict(status.get("usage") or {}),
            status.get("sessionId"),
            status.get("lastReply"),
        )

    def add(self, usage: UsageReport, reply: str) -> None:
        """A turn the runner reported: counted, and its cost estimate kept apart from the metered one."""
        self.turns_served += 1
        if reply:
            self.last_reply = reply[:512]
        self._add_cost("reportedCostUSD", usage.cost_usd)

    def metered(self, usage: ModelUsage, cost: float) -> None:
        """One model call the proxy metered for this run."""
        for name in FIELDS:
            key = _WIRE[name]
            self.usage[key] = int(self.usage.get(key, 0)) + int(getattr(usage, name))
        self._add_cost("costUSD", cost)

    def _add_cost(self, key: str, value: float) -> None:
        self.usage[key] = round(float(self.usage.get(key, 0.0)) + float(value), 6)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"turnsServed": self.turns_served, "usage": self.usage}
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        if self.last_reply is not None:
            out["lastReply"] = self.last_reply
        return out


class StatsReporter:
    """Keeps counters per run and merge-patches them into the AgentRun's status (fields the
    operator never writes), one patch at a time per run."""

    def __init__(
        self, api: KubeApi, on_push: Callable[[str, str], None] | None = None, tasks: TaskSet | None = None
    ) -> None:
        self.api = api
        self.on_push = on_push  # (namespace, group) after a turn's counters changed: the Group's status
        self._stats: dict[RunKey, RunStats] = {}  # until the run is deleted (forget)
        self._locks: KeyedLocks[RunKey] = KeyedLocks()
        self._tasks = tasks or TaskSet()
        self._queued: set[RunKey] = set()  # a push is waiting to start; more changes ride along

    def metered(self, run: RunEntry, usage: ModelUsage, cost: float) -> None:
        """A model call of this run was metered: counted now, written soon (a burst of calls in one
        turn is one patch, not one per call)."""
        self.stats(run).metered(usage, cost)
        if run.key not in self._queued:
            self._queued.add(run.key)
            self._tasks.spawn(self.push(run), name="run-stats")

    def stats(self, run: RunEntry) -> RunStats:
        if run.key not in self._stats:
            self._stats[run.key] = RunStats.from_status(run.status or {})
        return self._stats[run.key]

    def forget(self, namespace: str, name: str) -> None:
        self._stats.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._stats)

    async def push(self, run: RunEntry) -> None:
        key = run.key
        async with self._locks(key):
            self._queued.discard(key)  # from here on a change queues the next push
            try:
                await self.api.patch_status("AgentRun", key[0], key[1], self.stats(run).status())
            except KubeError as exc:
                log.warning("could not report run usage", run=key[1], namespace=key[0], error=exc.message)
        if self.on_push is not None:
            self.on_push(key[0], run.group)
