"""What the gateway knows of a Group, written into its status: the run serving it, the session its
next run resumes, when it last had a turn, and what its model calls cost today and this month.

The operator writes the Group's conditions and children; these fields are the gateway's alone, each
merge-patched only when it changed (a Group with nothing new is never written). Parts that see
activity call ``note(namespace, group)``; one background loop writes, a Group at a time, at most
once per ``interval`` seconds for a busy Group.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pynchy.gateway.agentruns import AgentRuns
from pynchy.gateway.db import Db
from pynchy.gateway.routing import Directory
from pynchy.gateway.spend import SpendGuard
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy.store import records

log = get_logger(__name__)

GroupKey = tuple[str, str]


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(eq=False)  # a service: identity, not value
class GroupStatusReporter:
    api: KubeApi
    db: Db
    runs: AgentRuns
    directory: Directory
    spend: SpendGuard
    interval: float = 1.0
    _written: dict[GroupKey, dict[str, Any]] = field(default_factory=dict)
    _dirty: set[GroupKey] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, namespace: str, group: str) -> None:
        """Something about this Group changed: its status is brought up to date soon."""
        self._dirty.add((namespace, group))
        self._wake.set()

    def forget(self, namespace: str, group: str) -> None:
        self._written.pop((namespace, group), None)
        self._dirty.discard((namespace, group))

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for namespace, group in sorted(dirty):
                await self.write(namespace, group)
            await asyncio.sleep(self.interval)  # coalesce a burst of notes into one write per Group

    async def fields(self, namespace: str, group: str) -> dict[str, Any]:
        entry = self.directory.get(namespace, group)
        session_id, last = await self.db.call(records.group_activity, namespace, group)
        return {
            "activeRun": self.runs.serving_run(namespace, group),
            "sessionId": session_id,
            "lastActivityTime": _stamp(last),
            "spend": await self.spend.snapshot(namespace, group, entry.spec if entry is not None else None),
        }

    async def write(self, namespace: str, group: str) -> None:
        if self.directory.get(namespace, group) is None:
            self.forget(namespace, group)
            return
        key = (namespace, group)
        try:
            fields = await self.fields(namespace, group)
            if key not in self._written:  # first time since start: what the Group already says
                obj = await self.api.get("Group", namespace, group)
                status = (obj or {}).get("status") or {}
                self._written[key] = {name: status.get(name) for name in fields}
            if self._written[key] == fields:
                return
            await self.api.patch_status("Group", namespace, group, fields)
            self._written[key] = fields
        except KubeError as exc:
            log.warning("could not write Group status", namespace=namespace, group=group, error=exc.message)
            self._dirty.add(key)  # tried again on the next note
