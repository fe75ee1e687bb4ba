"""What the gateway knows about AgentRuns: each one parsed once, as the watch delivers it, into a
`RunEntry`; the runs of a Group; and starting the run that answers a Group's queued turns."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pynchy.aio import KeyedLocks
from pynchy.api.agentrun import AgentRunSpec
from pynchy.errors import NotFoundError
from pynchy.gateway.routing import Directory
from pynchy.kube.api import KubeApi
from pynchy.logs import get_logger

log = get_logger(__name__)
API_VERSION = "pynchy.dev/v1alpha1"
FINISHED = {"Succeeded", "Failed", "TimedOut"}
# A run created by us is "live" until the watch shows it, for at most this long.
CREATE_VISIBILITY_SECONDS = 30.0
RunKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class RunEntry:
    """One AgentRun as the gateway uses it: its spec validated, the status fields it reads."""

    namespace: str
    name: str
    uid: str
    created: datetime
    deleting: bool
    spec: AgentRunSpec
    phase: str | None = None
    pod_name: str | None = None
    message: str | None = None
    turns_served: int = 0
    config_current: bool = True  # the ConfigCurrent condition is not False
    status: dict[str, Any] | None = None  # as written; seeds the gateway's per-run counters

    @property
    def key(self) -> RunKey:
        return (self.namespace, self.name)

    @property
    def group(self) -> str:
        return self.spec.group_ref.name

    @property
    def over(self) -> bool:
        return self.deleting or self.phase in FINISHED

    @property
    def serves_group_turns(self) -> bool:
        """Runs that continue the Group's conversation take its queued messages; runs with their own
        prompt (schedules, manual runs) answer that prompt only."""
        return self.spec.context_mode == "group" and not self.spec.prompt

    @property
    def failed_at_start(self) -> bool:
        """A run for the Group's turns that failed without serving one (its pod never got going)."""
        return self.serves_group_turns and self.phase == "Failed" and not self.turns_served

    @property
    def prompt_source(self) -> str:
        """The turn source of the run's own prompt."""
        return "schedule" if self.spec.trigger.kind == "Schedule" else "manual"


def parse_run(obj: dict[str, Any]) -> RunEntry:
    """An AgentRun object → RunEntry. Raises pydantic's ValidationError on a spec the CRD should
    not have admitted."""
    meta = obj["metadata"]
    status = obj.get("status") or {}
    current = True
    for c in status.get("conditions") or []:
        if c.get("type") == "ConfigCurrent":
            current = c.get("status") != "False"
    created = meta.get("creationTimestamp")
    return RunEntry(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        created=datetime.fromisoformat(created) if created else datetime.min.replace(tzinfo=UTC),
        deleting=bool(meta.get("deletionTimestamp")),
        spec=AgentRunSpec.from_k8s(obj.get("spec") or {}),  # JSON semantics: timestamps are strings
        phase=status.get("phase"),
        pod_name=status.get("podName"),
        message=status.get("message"),
        turns_served=int(status.get("turnsServed") or 0),
        config_current=current,
        status=dict(status),
    )


class RunIndex:
    """AgentRuns by key and by Group, kept current by the AgentRun informer's events.

    `on_finished` hears of each run this index saw go from unfinished to finished (a run listed as
    already finished, after a restart, is not news)."""

    def __init__(self, on_finished: Callable[[RunEntry], None] | None = None) -> None:
        self._runs: dict[RunKey, RunEntry] = {}
        self._on_finished = on_finished

    def on_event(self, kind: str, obj: dict[str, Any]) -> RunEntry | None:
        """Apply a watch event; returns the parsed run (None when its spec is invalid)."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        try:
            entry = parse_run(obj)
        except ValidationError as exc:
            # The CRD's schema makes this rare; the operator reports it on the run.
            log.warning("agent run spec invalid; ignored", namespace=key[0], run=key[1], errors=exc.error_count())
            self._runs.pop(key, None)
            return None
        before = self._runs.pop(key, None) if kind == "DELETED" else self._runs.get(key)
        if kind != "DELETED":
            self._runs[key] = entry
        if (
            self._on_finished is not None
            and entry.phase in FINISHED
            and before is not None
            and before.phase not in FINISHED
        ):
            self._on_finished(entry)
        return entry

    def get(self, namespace: str, name: str) -> RunEntry | None:
        return self._runs.get((namespace, name))

    def of_group(self, namespace: str, group: str) -> list[RunEntry]:
        return [r for r in self._runs.values() if r.namespace == namespace and r.group == group]

    def active_by_group(self) -> Counter[tuple[str, str]]:
        """(namespace, Group) -> runs not finished nor being deleted."""
        return Counter((r.namespace, r.group) for r in self._runs.values() if not r.over)

    def __len__(self) -> int:
        return len(self._runs)


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


class AgentRuns:
    """The runs the gateway can see, and the one run per Group that takes its queued turns."""

    def __init__(self, api: KubeApi, directory: Directory, index: RunIndex) -> None:
        self.api = api
        self.directory = directory
        self.index = index
        # (ns, group) -> (run, when): runs we created, until the watch must have shown them.
        self._created: dict[tuple[str, str], tuple[str, float]] = {}
        self._locks: KeyedLocks[tuple[str, str]] = KeyedLocks()

    def run(self, namespace: str, name: str) -> RunEntry | None:
        return self.index.get(namespace, name)

    async def fetch(self, namespace: str, name: str) -> RunEntry | None:
        """The run from the watch cache, or from the API server when the watch has not shown it yet
        (it may lag a create by milliseconds)."""
        entry = self.index.get(namespace, name)
        if entry is not None:
            return entry
        obj = await self.api.get("AgentRun", namespace, name)
        if obj is None:
            return None
        try:
            return parse_run(obj)
        except ValidationError:
            return None

    def group_runs(self, namespace: str, group: str) -> list[RunEntry]:
        return self.index.of_group(namespace, group)

    def serving_run(self, namespace: str, group: str) -> str | None:
        """A live run that takes the Group's queued turns (pending counts: it will start)."""
        for r in self.group_runs(namespace, group):
            if not r.over and r.config_current and r.serves_group_turns:
                return r.name
        created = self._created.get((namespace, group))
        if created is None:
            return None
        if time.monotonic() - created[1] >= CREATE_VISIBILITY_SECONDS:
            del self._created[(namespace, group)]  # the watch has shown it (or it never came)
            return None
        seen = self.run(namespace, created[0])
        return created[0] if seen is None or not seen.over else None

    def prompt_run_waiting(self, namespace: str, group: str, besides: str) -> bool:
        """Is a run with its own prompt (a schedule) waiting for the Group's active run to end?"""
        return any(
            r.name != besides and not r.over and r.spec.prompt and not r.pod_name
            for r in self.group_runs(namespace, group)
        )

    async def ensure_run(self, namespace: str, group: str) -> str:
        """The run that will answer the Group's queued turns, creating one if none is live."""
        async with self._locks((namespace, group)):
            name = self.serving_run(namespace, group)
            if name is not None:
                return name
            g = self.directory.get(namespace, group)
            if g is None:
                raise NotFoundError(f"Group {namespace}/{group} does not exist")
            name = run_name_for(group, time.time())
            await self.api.create(message_run(namespace, group, name, g.uid))
            self._created[(namespace, group)] = (name, time.monotonic())
            log.info("started agent run", namespace=namespace, group=group, run=name)
            return name
