"""Small helpers for tests against the real control plane."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pynchy.kube.controlplane import ControlPlane

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
T = TypeVar("T")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


def on_loop(op: Any, fn: Callable[[], T]) -> T:
    """Call `fn` on an EmbeddedOperator's event loop and return its result: the work queue and the
    controller's indexes belong to that loop, so the test thread neither reads nor changes them itself."""

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), op._loop).result(30)


def synced(op: Any, processed: int = 0, what: str = "the operator idle") -> None:
    """Wait until the operator has run at least `processed` reconciles and has none queued or running.

    Callbacks reach the loop in the order this thread sent them, so every reconcile asked for before
    the call (`op.resync_now()`, an event the operator had already seen) has finished when it returns.
    Delayed wake-ups (timers, retries) are not waited for."""
    wait_for(
        lambda: on_loop(op, lambda: op.controller.queue.processed >= processed and op.controller.queue.idle()),
        what=what,
    )


def resync(op: Any) -> None:
    """Have the operator re-check every object it knows, as its periodic resync does, and wait until it
    has: what those reconciles decided (and wrote) is then on the API server and in its audit log.
    This is how a test shows that nothing happens, instead of waiting out a quiet period."""
    op.resync_now()
    synced(op, what="the resync reconciled")


def group(name: str, **spec: Any) -> dict[str, Any]:
    """A Group manifest with a local channel of its own name; `spec` adds or replaces fields."""
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": name},
        "spec": {"channels": [{"local": {"name": name}}], **spec},
    }


def workspace(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pynchy.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name}, "spec": spec}


def apply(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get(plane: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def is_ready(plane: ControlPlane, kind: str, name: str, namespace: str) -> bool:
    obj = get(plane, kind, name, namespace)
    c = condition(obj, "Ready")
    return bool(
        obj and c and c["status"] == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


class AuditWindow:
    """Write requests recorded by the API server's audit log from now on."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.offset = plane.audit_log.stat().st_size if plane.audit_log.exists() else 0

    def writes(self, user: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.plane.audit_log.open() as f:
            f.seek(self.offset)
            events = [json.loads(line) for line in f if line.strip()]
        return [
            e
            for e in events
            if e["user"]["username"] == user
            and e["verb"] in WRITE_VERBS
            and (namespace is None or e.get("objectRef", {}).get("namespace") == namespace)
        ]


def describe(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource', '')}"
        f"{e['objectRef'].get('name', '')} -> {e.get('responseStatus', {}).get('code')}"
        for e in events
    ]
