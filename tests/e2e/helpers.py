"""Helpers the end-to-end tests share: apply manifests, ready a Group, ask it something, read runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from cluster.helpers import get, group, is_ready, wait_for
from e2e.conftest import Stack


def apply(stack: Stack, manifest: str) -> None:
    stack.plane.kubectl("apply", "-n", stack.namespace, "-f", "-", input=manifest)


def ready_group(stack: Stack, name: str, *, workspace: str | None = None, idle: int = 600) -> None:
    spec: dict[str, Any] = {"agent": {"idleTimeoutSeconds": idle}}
    if workspace:
        spec["workspaceRef"] = {"name": workspace}
    apply(stack, json.dumps(group(name, **spec)))
    wait_for(lambda: is_ready(stack.plane, "group", name, stack.namespace), timeout=60, what=f"Group {name} Ready")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.groups.get(stack.namespace, name), what="the gateway sees the Group")


def ask(stack: Stack, group: str, prompt: str, timeout: float = 90) -> Any:
    """Send a message as the local channel would, and wait for the agent's final event."""
    gw = stack.gateway.gateway
    assert gw is not None

    async def go() -> Any:
        row = await gw.submit(stack.namespace, group, prompt, sender="owner")
        watch = gw.watch(row.id)
        return await asyncio.wait_for(watch.done, timeout)

    return stack.gateway.call(go(), timeout=timeout + 5)


def runs(stack: Stack) -> list[dict[str, Any]]:
    out = stack.plane.kubectl("get", "agentruns", "-n", stack.namespace, "-o", "json").stdout
    return sorted(json.loads(out)["items"], key=lambda r: r["metadata"]["creationTimestamp"])


def run_status(stack: Stack, name: str) -> dict[str, Any]:
    return (get(stack.plane, "agentrun", name, stack.namespace) or {}).get("status") or {}
