"""What the gateway knows about Groups and AgentRuns, from watch caches; and starting runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pynchy.kube.api import KubeApi
from pynchy.kube.informer import Informer
from pynchy.logs import get_logger

log = get_logger(__name__)
API_VERSION = "pynchy.dev/v1alpha1"
FINISHED = {"Succeeded", "Failed", "TimedOut"}
# A run created by us is "live" until the watch shows it, for at most this long.
CREATE_VISIBILITY_SECONDS = 30.0


def run_over(run: dict[str, Any]) -> bool:
    status = run.get("status") or {}
    return bool(run["metadata"].get("deletionTimestamp")) or status.get("phase") in FINISHED


def config_current(run: dict[str, Any]) -> bool:
    for c in (run.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ConfigCurrent":
            return c.get("status") != "False"
    return True


def serves_group_turns(run: dict[str, Any]) -> bool:
    """Runs that continue the Group's conversation take its queued messages; runs with their own
    prompt (schedules, manual runs) answer that prompt only."""
    spec = run.get("spec") or {}
    return spec.get("contextMode", "group") == "group" and not spec.get("prompt")


def failed_at_start(run: dict[str, Any]) -> bool:
    """A run for the Group's turns that failed without serving one (its pod never got going)."""
    status = run.get("status") or {}
    return serves_group_turns(run) and status.get("phase") == "Failed" and not status.get("turnsServed")


def _group_of(run: dict[str, Any]) -> str | None:
    return (run.get("spec") or {}).get("groupRef", {}).get("name")


def message_run(namespace: str, group: str, name: str, group_uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRun",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"pynchy.dev/group": group, "app.kubernetes.io/managed-by": "pynchy-gateway"},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "Group", "name": group, "uid": group_uid, "controller": True}
            ],
        },
        "spec": {"groupRef": {"name": group}, "trigger": {"kind": "Message"}, "contextMode": "group"},
    }


def run_name_for(group: str, now: float) -> str:
    # Group names are at most 40 characters, so this stays within the 52 an AgentRun allows us.
    return f"{group}-{int(now * 1000):x}"


class Runs:
    def __init__(self, api: KubeApi, groups: Informer, runs: Informer) -> None:
        self.api = api
        self.groups = groups
        self.runs = runs
        self._created: dict[tuple[str, str], tuple[str, float]] = {}  # (ns, group) -> (run, when)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.on_run_over: Callable[[dict[str, Any]], None] | None = None

    def group(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.groups.get(namespace, name)

    def run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.runs.get(namespace, name)

    def group_runs(self, namespace: str, group: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs.items()
            if r["metadata"]["namespace"] == namespace
            and (r.get("spec") or {}).get("groupRef", {}).get("name") == group
        ]

    def serving_run(self, namespace: str, group: str) -> str | None:
        """A live run that takes the Group's queued turns (pending counts: it will start)."""
        for r in self.group_runs(namespace, group):
            if not run_over(r) and config_current(r) and serves_group_turns(r):
                return str(r["metadata"]["name"])
        created = self._created.get((namespace, group))
        if created and time.monotonic() - created[1] < CREATE_VISIBILITY_SECONDS:
            seen = self.run(namespace, created[0])
            if seen is None or not run_over(seen):
                return created[0]
        return None

    def prompt_run_waiting(self, namespace: str, group: str, besides: str) -> bool:
        """Is a run with its own prompt (a schedule) waiting for the Group's active run to end?"""
        for r in self.group_runs(namespace, group):
            status = r.get("status") or {}
            if (
                r["metadata"]["name"] != besides
                and not run_over(r)
                and (r.get("spec") or {}).get("prompt")
                and not status.get("podName")
            ):
                return True
        return False

    async def ensure_run(self, namespace: str, group: str) -> str:
        """The run that will answer the Group's queued turns, creating one if none is live."""
        lock = self._locks.setdefault((namespace, group), asyncio.Lock())
        async with lock:
            name = self.serving_run(namespace, group)
            if name is not None:
                return name
            g = self.group(namespace, group)
            if g is None:
                raise LookupError(f"Group {namespace}/{group} does not exist")
            name = run_name_for(group, time.time())
            await self.api.create(message_run(namespace, group, name, g["metadata"]["uid"]))
            self._created[(namespace, group)] = (name, time.monotonic())
            log.info("started agent run", namespace=namespace, group=group, run=name)
            return name
