"""SIGKILL the gateway in the middle of a Slack conversation, twice, and restart it: no message is
lost and none is duplicated (in the store or in what people see in Slack).

The gateway runs as its own process (`pynchy gateway`); the test plays Slack (the local Web API
double and signed Events API requests, retried the way Slack retries) and the agent pod (the run API
over HTTP with a run token)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from cluster.gateway_helpers import token_for
from cluster.helpers import get, wait_for
from doubles.slack import BOT_TOKEN, OWNER, SIGNING_SECRET, SlackDouble, post_event
from gatewayproc import GatewayProcess
from pynchy.kube.controlplane import ControlPlane
from pynchy.store.models import MessageRow, OutboundRow, TurnRow

CHANNEL = "C0CRASH0001"
SETUP = f"""
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {{name: crash}}
spec:
  channels: [{{slack: {{channelId: {CHANNEL}}}}}]
---
apiVersion: pynchy.dev/v1alpha1
kind: AgentRun
metadata: {{name: crash-run}}
spec: {{groupRef: {{name: crash}}}}
"""


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble().start()
    try:
        yield double
    finally:
        double.stop()


def new_gateway(kubeconfig: Path, data: Path, slack: SlackDouble, ns: str) -> GatewayProcess:
    return GatewayProcess(
        kubeconfig,
        data,
        namespaces=ns,
        owner=OWNER,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
        long_poll_seconds="5",
    ).start()


def send(gw: GatewayProcess, body: dict[str, Any], retry: int | None = None) -> int:
    return post_event(f"{gw.url}/slack/events", body, retry_num=retry).status_code


def next_turn(pod: httpx.Client) -> dict[str, Any]:
    r = pod.get("/v1/run/turns/next", params={"wait": 5})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def answer(pod: httpx.Client, turn_id: str, text: str) -> None:
    result = {"type": "result", "text": text, "sessionId": "s-1", "usage": {}, "numTurns": 1}
    r = pod.post(f"/v1/run/turns/{turn_id}/events", json={"events": [result]})
    assert r.status_code == 204, r.text


def test_sigkill_mid_conversation_loses_nothing_and_duplicates_nothing(
    control_plane: ControlPlane, namespace: str, gateway_kubeconfig: Path, tmp_path: Path, slack: SlackDouble
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=SETUP)
    run = get(control_plane, "agentrun", "crash-run", namespace)
    assert run is not None
    gw = new_gateway(gateway_kubeconfig, tmp_path, slack, namespace)
    try:
        ask = slack.user_message(CHANNEL, "<@U0PYNCHYBOT> first question")
        root = ask["ts"]
        e1 = slack.event(CHANNEL, ask, kind="app_mention")
        follow = slack.user_message(CHANNEL, "<@U0PYNCHYBOT> second question", thread_ts=root)
        e2 = slack.event(CHANNEL, follow, kind="app_mention")

        def pod(g: GatewayProcess) -> httpx.Client:
            return httpx.Client(
                base_url=g.url, headers={"Authorization": f"Bearer {token_for(run, 'crash')}"}, timeout=30
            )

        # 1. The first question is being answered (its placeholder is up) and the second is queued.
        assert wait_for(lambda: send(gw, e1) == 200, what="the gateway knows the Group") is True
        t1 = next_turn(pod(gw))
        assert t1["prompt"] == "first question"
        wait_for(lambda: slack.thread(CHANNEL, root), what="the streamed placeholder")
        assert send(gw, e2) == 200

        # 2. SIGKILL. A third question arrives while the gateway is down: Slack gets no answer.
        gw.kill()
        third = slack.user_message(CHANNEL, "<@U0PYNCHYBOT> third question", thread_ts=root)
        e3 = slack.event(CHANNEL, third, kind="app_mention")
        with pytest.raises(httpx.ConnectError):
            send(gw, e3)

        # 3. Restart on the same store. Slack retries all three; only the third is new.
        gw = new_gateway(gateway_kubeconfig, tmp_path, slack, namespace)
        assert [send(gw, e, retry=1) for e in (e1, e2, e3)] == [200, 200, 200]
        # The agent pod lived on: it delivers the first answer to the new process.
        answer(pod(gw), t1["id"], "answer one")
        wait_for(lambda: "answer one" in [m["text"] for m in slack.thread(CHANNEL, root)], what="answer one")
        # Every message the agent's answer goes into was the streamed placeholder: finished in place.

        # 4. The second answer is posted, but the gateway dies before hearing Slack took it.
        held = slack.hold_answer("chat.postMessage")
        t2 = next_turn(pod(gw))
        assert t2["prompt"] == "second question"
        wait_for(lambda: len(slack.calls_to("chat.postMessage")) >= 2, what="the second placeholder posted")
        gw.kill()
        held.set()

        # 5. Restart: the ledger row is found in Slack by its key and finished in place, not posted again.
        gw = new_gateway(gateway_kubeconfig, tmp_path, slack, namespace)
        answer(pod(gw), t2["id"], "answer two")
        t3 = next_turn(pod(gw))
        assert t3["prompt"] == "third question"
        answer(pod(gw), t3["id"], "answer three")

        def replies() -> list[str]:
            return [m["text"] for m in slack.thread(CHANNEL, root) if m.get("bot_id")]

        try:
            wait_for(lambda: replies() == ["answer one", "answer two", "answer three"], what="three answers")
        except AssertionError:
            raise AssertionError(f"the thread shows {slack.thread(CHANNEL, root)}") from None
        engine = create_engine(f"sqlite:///{tmp_path}/gateway.db")
        with engine.connect() as c:
            turns = c.execute(select(TurnRow.prompt, TurnRow.state).order_by(TurnRow.seq)).all()
            inbound = c.execute(select(MessageRow.text).where(MessageRow.direction == "in")).scalars().all()
            ledger = c.execute(select(OutboundRow.key, OutboundRow.state).order_by(OutboundRow.id)).all()
        assert [tuple(t) for t in turns] == [
            ("first question", "done"),
            ("second question", "done"),
            ("third question", "done"),
        ]
        assert sorted(inbound) == sorted(["first question", "second question", "third question"])
        assert [state for _, state in ledger] == ["sent", "sent", "sent"]
        assert json.dumps(replies()).count("answer") == 3
    finally:
        gw.stop()
        print(gw.tail())
