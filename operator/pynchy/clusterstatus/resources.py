"""Groups and AgentRuns from the API server, as the rows `pynchy status` and `pynchy dev status` show.

Objects are read as plain JSON, not through the strict API models: a status command must still show a
Group that an older or newer CRD version shaped differently, so a missing field is shown as missing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from pynchy.api.base import API_GROUP, API_VERSION

REQUEST_TIMEOUT = 5.0  # seconds per API call: a status command must not hang on a dead server


class SpendRow(BaseModel):
    day: str | None
    today_usd: float | None
    month_usd: float | None
    budget: str  # none, ok, warning, exceeded (as the gateway wrote it)


class GroupRow(BaseModel):
    namespace: str
    name: str
    ready: Literal["True", "False", "Unknown"]  # Unknown also when the status is of an older generation
    channels: str
    active_run: str | None
    session_id: str | None
    last_activity_time: str | None
    last_activity: str  # age of last_activity_time, "-" without one
    spend: SpendRow | None
    message: str  # the Ready condition's message when not Ready


class RunRow(BaseModel):
    namespace: str
    name: str
    group: str | None
    phase: str
    reason: str
    turns: int
    cost_usd: float | None
    created: str | None
    age: str
    message: str


def condition_of(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """The object's condition of that type, {} when it has none."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def parse_time(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def age(stamp: str | None, now: dt.datetime) -> str:
    """`5s`, `3m`, `2h`, `4d` since the RFC 3339 `stamp`; `-` without one."""
    if not stamp:
        return "-"
    seconds = int((now - parse_time(stamp)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def channels(group: dict[str, Any]) -> str:
    out = []
    for binding in (group.get("spec") or {}).get("channels") or []:
        if "local" in binding:
            out.append(f"local:{binding['local'].get('name')}")
        elif "slack" in binding:
            out.append(f"slack:{binding['slack'].get('channelId')}")
    return ",".join(out) or "-"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _spend(status: dict[str, Any]) -> SpendRow | None:
    spend = status.get("spend")
    if not isinstance(spend, dict):
        return None
    return SpendRow(
        day=str(spend["day"]) if spend.get("day") else None,
        today_usd=_number(spend.get("todayUsd")),
        month_usd=_number(spend.get("monthUsd")),
        budget=str(spend.get("budget") or "none"),
    )


def group_row(group: dict[str, Any], now: dt.datetime) -> GroupRow:
    meta = group["metadata"]
    status = group.get("status") or {}
    ready = condition_of(group, "Ready")
    # A condition of an older generation says nothing about the spec as it is now.
    current = status.get("observedGeneration") == meta.get("generation")
    state: Literal["True", "False", "Unknown"] = "Unknown"
    if current and ready.get("status") in ("True", "False"):
        state = "True" if ready["status"] == "True" else "False"
    return GroupRow(
        namespace=meta["namespace"],
        name=meta["name"],
        ready=state,
        channels=channels(group),
        active_run=status.get("activeRun"),
        session_id=status.get("sessionId"),
        last_activity_time=status.get("lastActivityTime"),
        last_activity=age(status.get("lastActivityTime"), now),
        spend=_spend(status),
        message="" if ready.get("status") == "True" else (ready.get("message") or ready.get("reason") or ""),
    )


def run_row(run: dict[str, Any], now: dt.datetime) -> RunRow:
    meta = run["metadata"]
    status = run.get("status") or {}
    usage = status.get("usage") or {}
    return RunRow(
        namespace=meta["namespace"],
        name=meta["name"],
        group=((run.get("spec") or {}).get("groupRef") or {}).get("name"),
        phase=status.get("phase") or "New",
        reason=status.get("reason") or "",
        turns=int(status.get("turnsServed") or 0),
        cost_usd=_number(usage.get("costUSD")),
        created=meta.get("creationTimestamp"),
        age=age(meta.get("creationTimestamp"), now),
        message=status.get("message") or "",
    )


def _items(listing: object) -> list[dict[str, Any]]:
    """The items of a custom object list (the client hands it over as decoded JSON)."""
    assert isinstance(listing, dict)
    return list(listing["items"])


def list_objects(client: ApiClient, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Every object of a pynchy.dev kind, in one namespace or all; raises what the client raises."""
    api = CustomObjectsApi(client)
    if namespace is None:
        listing = api.list_cluster_custom_object(API_GROUP, API_VERSION, plural, _request_timeout=REQUEST_TIMEOUT)
    else:
        listing = api.list_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, plural, _request_timeout=REQUEST_TIMEOUT
        )
    return _items(listing)


def read(
    client: ApiClient, namespace: str | None = None, now: dt.datetime | None = None
) -> tuple[list[GroupRow], list[RunRow]]:
    """The Groups (by namespace and name) and AgentRuns (oldest first) of one namespace or all."""
    now = now or dt.datetime.now(dt.UTC)
    groups = list_objects(client, "groups", namespace)
    runs = list_objects(client, "agentruns", namespace)
    groups.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    runs.sort(key=lambda o: o["metadata"].get("creationTimestamp") or "")
    return [group_row(g, now) for g in groups], [run_row(r, now) for r in runs]


def api_error(exc: BaseException) -> str:
    """One line saying why the API server did not answer, or what it refused (its Status message)."""
    if isinstance(exc, ApiException):
        message = ""
        try:
            message = str(json.loads(exc.body or "").get("message") or "")
        except (ValueError, AttributeError):
            message = str(exc.body or "")[:300]
        head = f"{exc.status} {exc.reason or ''}".strip()
        return f"{head}: {message}" if message else head
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__
