"""The gateway's Kubernetes Events on the real API server, under the gateway's real RBAC: a Group
spends past its budget through the model proxy (the scripted model upstream), its budget notices
cannot be delivered (the Slack double refuses them), and its run fails. The Events must show up in
events.k8s.io/v1 about the right objects (with their uids), a repeat as a series, and be found with
the `kubectl get events --field-selector reason=…` docs/gateway.md gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.gateway_helpers import make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, get, group, wait_for
from conftest import make_gateway
from doubles.anthropic import ScriptedModel, Usage
from doubles.slack import BOT_TOKEN, OWNER, SIGNING_SECRET, SlackDouble
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane

CHANNEL = "C0EVENTS001"
# Each call costs $0.045 on Sonnet 4.5 ($3 + $15 per million): the first passes the 80% warning of
# $0.05, the second reaches the budget, and the next is refused.
CALL_USAGE = Usage(input_tokens=10_000, output_tokens=1_000)
BUDGET = {"dailyUsd": 0.05, "timeZone": "Europe/Berlin"}
REACHED = "daily budget of $0.05 reached; resets at 00:00 Europe/Berlin"


@pytest.fixture
def world(
    control_plane: ControlPlane, namespace: str, gateway_kubeconfig: Path, tmp_path: Path
) -> Iterator[tuple[EmbeddedGateway, SlackDouble]]:
    with SlackDouble() as slack, ScriptedModel(default_usage=CALL_USAGE) as model:
        gw: EmbeddedGateway = make_gateway(  # type: ignore[assignment]
            gateway_kubeconfig,
            tmp_path,
            model.base_url,
            "sk-test",
            long_poll_seconds=5,
            namespaces=[namespace],
            owner=OWNER,
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack.api_url,
        ).start()
        try:
            yield gw, slack
        finally:
            gw.stop()


def events_v1(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    proc = plane.kubectl("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json")
    return list(json.loads(proc.stdout)["items"])


def event_with(plane: ControlPlane, namespace: str, reason: str, count: int | None = None) -> dict[str, Any] | None:
    """The gateway's Event with this reason (and series count, when given), once it is there."""
    for event in events_v1(plane, namespace):
        if event.get("reason") != reason or event.get("reportingController") != "pynchy.dev/gateway":
            continue
        if count is None or (event.get("series") or {}).get("count") == count:
            return event
    return None


def model_call(gw: EmbeddedGateway, token: str) -> httpx.Response:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gw.url}/model/v1/messages", headers={"x-api-key": token}, json=body | {"stream": True})


def test_budget_and_delivery_failures_are_kubernetes_events(
    control_plane: ControlPlane, namespace: str, world: tuple[EmbeddedGateway, SlackDouble]
) -> None:
    gw, slack = world
    apply(control_plane, namespace, group("spender", channels=[{"slack": {"channelId": CHANNEL}}], budget=BUDGET))
    grp = get(control_plane, "group", "spender", namespace)
    assert grp is not None
    run = make_run(control_plane, namespace, "spender-run", "spender")
    wait_gateway_sees(gw, namespace, "group", "spender")
    wait_gateway_sees(gw, namespace, "run", "spender-run")
    token = token_for(run, "spender")
    # The Slack channel is gone: both budget notices are given up at their first attempt.
    slack.fail("chat.postMessage", "channel_not_found", times=2)

    # Calls until the budget refuses one (the call that reaches it is let through; its cost is
    # metered when its answer has streamed, so the refusal comes with the second or third call).
    def refused() -> httpx.Response | None:
        r = model_call(gw, token)
        return r if r.status_code == 403 else None

    refusal = wait_for(refused, timeout=60, interval=0.1, what="a call refused by the budget")
    assert refusal.json()["error"]["message"] == REACHED
    assert model_call(gw, token).status_code == 403  # refused again: still one notice, one Event

    group_ref = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "namespace": namespace,
        "name": "spender",
        "uid": grp["metadata"]["uid"],
    }
    warning = wait_for(lambda: event_with(control_plane, namespace, "BudgetWarning"), what="BudgetWarning Event")
    assert warning["type"] == "Normal"
    assert warning["regarding"] == group_ref
    assert "of the daily budget of $0.05 used; resets at 00:00 Europe/Berlin" in warning["note"]
    reached = wait_for(lambda: event_with(control_plane, namespace, "BudgetReached"), what="BudgetReached Event")
    assert reached["type"] == "Warning"
    assert reached["regarding"] == group_ref
    assert reached["note"] == REACHED
    assert reached["action"] == "CheckBudget"
    assert reached["reportingInstance"]
    assert "series" not in reached or reached["series"] is None  # once per period, however many refusals

    # Both notices were given up with the same error: one Event, a series of two.
    gave_up = wait_for(
        lambda: event_with(control_plane, namespace, "DeliveryFailed", count=2), what="DeliveryFailed series of 2"
    )
    assert gave_up["type"] == "Warning"
    assert gave_up["regarding"] == group_ref
    error = "chat.postMessage: channel_not_found"
    assert gave_up["note"] == f"gave up delivering a message to slack channel {CHANNEL}: {error}"
    assert len([e for e in events_v1(control_plane, namespace) if e["reason"] == "DeliveryFailed"]) == 1

    # What docs/gateway.md tells people to type finds them (the core/v1 view of the same Events).
    listed = control_plane.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=BudgetReached", "-o", "json"
    )
    (core,) = json.loads(listed.stdout)["items"]
    assert core["involvedObject"]["uid"] == grp["metadata"]["uid"]
    assert core["message"] == REACHED
