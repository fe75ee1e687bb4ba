"""Kubernetes Events (events.k8s.io/v1) about our objects, posted from the background.

`EventRecorder.record()` only updates an in-memory map and makes sure a poster task runs: it never
waits for the API server and never raises, so the path that reports something pays nothing for it.
Repeats of one Event (same object, type, reason, action and note) within `window` seconds of the
last one are aggregated as client-go's recorder does: the first creates the Event, later ones patch
its `series` (count, lastObservedTime) under the same name; repeats that pile up before the poster
gets to them are one patch. A repeat after a quiet `window` starts a new Event.

Events are best-effort by design (the API server itself expires them after an hour, and client-go
drops them under pressure): an Event the API server refuses, or cannot take because it is down, is
logged (once per outage) and dropped, never retried or queued up.

Lifetime: the series of the most recent `limit` distinct Events (least recently seen evicted first,
an unposted one with it), so an unbounded stream of distinct notes cannot grow the map.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pynchy.aio import TaskSet
from pynchy.kube.api import EVENTS_V1
from pynchy.logs import get_logger

log = get_logger(__name__)

EventType = Literal["Normal", "Warning"]
NOTE_LIMIT = 1024  # bytes: the API server refuses a longer note
NAME_LIMIT = 128  # reportingInstance, reason and action
SERIES_WINDOW = 360.0  # client-go's: a series ends six minutes after its last occurrence
ELLIPSIS = "…"


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about (its `regarding`)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""  # from a watch when known; `kubectl describe` matches by name without it

    def wire(self) -> dict[str, str]:
        ref = {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}
        if self.uid:
            ref["uid"] = self.uid
        return ref


class EventApi(Protocol):
    """What the recorder needs of the API (`pynchy.kube.api.KubeApi` has it)."""

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]: ...


def truncate_note(note: str, limit: int = NOTE_LIMIT) -> str:
    """`note` in at most `limit` UTF-8 bytes (the API's limit counts bytes), cut between characters
    and ending in '…' when it was cut."""
    data = note.encode()
    if len(data) <= limit:
        return note
    return data[: limit - len(ELLIPSIS.encode())].decode(errors="ignore") + ELLIPSIS


def micro_time(at: float) -> str:
    """A Unix time as the API's MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_instance() -> str:
    """This process in its Events' reportingInstance: $POD_NAME when set, else the host name (a
    pod's host name is its name)."""
    return (os.environ.get("POD_NAME") or socket.gethostname() or "unknown")[:NAME_LIMIT]


_Key = tuple[ObjectRef, str, str, str, str]  # (regarding, type, reason, action, note)


@dataclass
class _Series:
    event: dict[str, Any]  # the Event as created
    last_observed: float
    count: int = 1  # occurrences seen
    posted: int = 0  # occurrences the API server has (0: not created yet)


class EventRecorder:
    def __init__(
        self,
        api: EventApi,
        tasks: TaskSet,
        controller: str,
        instance: str | None = None,
        *,
        limit: int = 1024,
        window: float = SERIES_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1:
            raise ValueError(f"EventRecorder limit must be at least 1, not {limit}")
        self.api = api
        self.tasks = tasks
        self.controller = controller
        self.instance = (instance or default_instance())[:NAME_LIMIT]
        self.limit = limit
        self.window = window
        self.clock = clock
        self._series: OrderedDict[_Key, _Series] = OrderedDict()
        self._pending: OrderedDict[_Key, None] = OrderedDict()  # series with occurrences to post
        self._poster: asyncio.Task[None] | None = None
        self._last_name_ns = 0
        self._failing = False

    def record(self, regarding: ObjectRef, type_: EventType, reason: str, action: str, note: str) -> None:
        """One occurrence: returns at once; the Event is created or its series patched in the background."""
        note = truncate_note(note)
        key: _Key = (regarding, type_, reason[:NAME_LIMIT], action[:NAME_LIMIT], note)
        now = self.clock()
        series = self._series.get(key)
        if series is not None and now - series.last_observed <= self.window:
            series.count += 1
            series.last_observed = now
        else:
            self._series[key] = _Series(self._event(key, now), now)
        self._series.move_to_end(key)
        while len(self._series) > self.limit:
            evicted, _ = self._series.popitem(last=False)
            self._pending.pop(evicted, None)
        self._pending[key] = None
        self._start_poster()

    def __len__(self) -> int:
        """Series kept for aggregation."""
        return len(self._series)

    @property
    def pending(self) -> int:
        """Series with occurrences not posted yet."""
        return len(self._pending)

    async def idle(self) -> None:
        """Wait until everything recorded so far was posted or dropped (tests)."""
        while self._poster is not None and not self._poster.done():
            await asyncio.wait({self._poster})

    def _start_poster(self) -> None:
        if self._poster is not None and not self._poster.done():
            return  # it takes what is pending before it ends
        try:
            self._poster = self.tasks.spawn(self._post_pending(), name="kube-events")
        except RuntimeError:  # the TaskSet closed: shutting down, nothing is posted any more
            self._pending.clear()

    def _event(self, key: _Key, now: float) -> dict[str, Any]:
        regarding, type_, reason, action, note = key
        # client-go's naming (<object>.<hex nanoseconds>), kept unique within this process.
        self._last_name_ns = max(int(now * 1e9), self._last_name_ns + 1)
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{regarding.name}.{self._last_name_ns:x}", "namespace": regarding.namespace},
            "eventTime": micro_time(now),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "regarding": regarding.wire(),
            "note": note,
            "type": type_,
        }

    async def _post_pending(self) -> None:
        while self._pending:
            key, _ = self._pending.popitem(last=False)
            series = self._series.get(key)
            if series is not None:
                await self._post(key, series)

    async def _post(self, key: _Key, series: _Series) -> None:
        count, last = series.count, series.last_observed
        meta = series.event["metadata"]
        marks = {"series": {"count": count, "lastObservedTime": micro_time(last)}}
        try:
            if series.posted == 0:
                await self.api.create(series.event | (marks if count > 1 else {}))
            else:
                await self.api.patch(EVENTS_V1, meta["namespace"], meta["name"], marks)
        except Exception as exc:  # best-effort: dropped, whatever the reason (see the module docstring)
            if self._series.get(key) is series:  # the next occurrence starts afresh
                del self._series[key]
                self._pending.pop(key, None)
            if not self._failing:
                self._failing = True
                log.warning(
                    "Kubernetes Event not posted; dropped (Events are best-effort), further failures not logged",
                    reason=key[2],
                    namespace=meta["namespace"],
                    regarding=key[0].name,
                    error=str(exc),
                )
            return
        if self._failing:
            self._failing = False
            log.info("Kubernetes Events are posted again")
        series.posted = count
