"""Helpers the gateway's cluster tests share: an AgentRun and its run token, an HTTP client playing
the agent pod, waiting for the gateway's caches, and finishing a turn as the agent would."""

from __future__ import annotations

import time
from typing import Any

import httpx

from cluster.helpers import get, wait_for
from conftest import RUN_TOKEN_KEY
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane
from pynchy.runtoken import RunClaims, issue

RUN = """
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {{name: {name}}}
spec:
  groupRef: {{name: {group}}}
  {extra}
"""


def make_run(plane: ControlPlane, ns: str, name: str, group: str, extra: str = "") -> dict[str, Any]:
    plane.kubectl("apply", "-n", ns, "-f", "-", input=RUN.format(name=name, group=group, extra=extra))
    return get(plane, "agentrun", name, ns)  # type: ignore[return-value]


def token_for(run: dict[str, Any], group: str, expires: int | None = None) -> str:
    meta = run["metadata"]
    claims = RunClaims(meta["namespace"], meta["name"], meta["uid"], group, expires or int(time.time()) + 600)
    return issue(RUN_TOKEN_KEY, claims, issued_at=int(time.time()))


def agent(gw: EmbeddedGateway, token: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def wait_gateway_sees(gw: EmbeddedGateway, ns: str, kind: str, name: str) -> None:
    assert gw.gateway is not None
    cache = gw.gateway.groups if kind == "group" else gw.gateway.run_cache
    wait_for(lambda: cache.get(ns, name), what=f"gateway cache has {kind} {name}")


def finish_turn(client: httpx.Client, turn_id: str, text: str, session: str = "sess-1") -> None:
    events = [
        {"type": "text_delta", "text": text[:3]},
        {"type": "text_delta", "text": text[3:]},
        {
            "type": "result",
            "text": text,
            "sessionId": session,
            "usage": {"inputTokens": 100, "outputTokens": 20, "costUSD": 0.01},
            "numTurns": 1,
        },
    ]
    r = client.post(f"/v1/run/turns/{turn_id}/events", json={"events": events})
    assert r.status_code == 204, r.text
