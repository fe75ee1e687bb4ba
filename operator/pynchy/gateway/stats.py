"""Per-run counters the gateway reports into AgentRun status: turns served, usage, session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynchy.aio import KeyedLocks
from pynchy.gateway.agentruns import RunEntry, RunKey
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy_agent.protocol import UsageReport

log = get_logger(__name__)


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
        self.turns_served += 1
        if reply:
            self.last_reply = reply[:512]
        for key, value in usage.wire().items():
            if key == "costUSD":
                self.usage[key] = round(float(self.usage.get(key, 0.0)) + float(value), 6)
            else:
                self.usage[key] = int(self.usage.get(key, 0)) + int(value)

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

    def __init__(self, api: KubeApi, on_push: Callable[[str, str], None] | None = None) -> None:
        self.api = api
        self.on_push = on_push  # (namespace, group) after a turn's counters changed: the Group's status
        self._stats: dict[RunKey, RunStats] = {}  # until the run is deleted (forget)
        self._locks: KeyedLocks[RunKey] = KeyedLocks()

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
            try:
                await self.api.patch_status("AgentRun", key[0], key[1], self.stats(run).status())
            except KubeError as exc:
                log.warning("could not report run usage", run=key[1], namespace=key[0], error=exc.message)
        if self.on_push is not None:
            self.on_push(key[0], run.group)
