"""Messages into the gateway through `accept()` (the entry point every channel uses), against the
real API server: dedupe, routing, commands, the ledger, and one run per Group."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.gateway_helpers import agent, finish_turn, make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, get, group, wait_for
from conftest import make_gateway
from pynchy.gateway.channels.base import Inbound, Outcome
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane
from pynchy.store import outbound, records
from pynchy.store import turns as turn_store


@pytest.fixture
def gateway(gateway_kubeconfig: Path, tmp_path: Path, namespace: str) -> Iterator[EmbeddedGateway]:
    # Only the test's namespace: a Group of the same name in an earlier test's (terminating) namespace
    # would claim the same channel.
    gw = make_gateway(
        gateway_kubeconfig,
        tmp_path,
        "http://127.0.0.1:9",
        "sk-test",
        long_poll_seconds=5,
        owner="U0OWNER001",
        namespaces=[namespace],
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def setup_group(plane: ControlPlane, ns: str, gw: EmbeddedGateway, name: str, slack: str) -> None:
    channels = [{"local": {"name": name}}, {"slack": {"channelId": slack}}]
    trigger = {"mode": "mention", "aliases": ["pynchy"]}
    apply(plane, ns, group(name, channels=channels, trigger=trigger, allowedSenders=["owner", "slack:U0FRIEND01"]))
    wait_gateway_sees(gw, ns, "group", name)
    assert gw.gateway is not None
    wait_for(lambda: gw.gateway.directory.lookup("slack", slack), what="directory routes the channel")  # type: ignore[union-attr]


def slack(text: str, key: str, *, channel: str, sender: str = "slack:U0OWNER001", **kw: Any) -> Inbound:
    return Inbound("slack", channel, text, sender, key, **kw)


def runs_of(plane: ControlPlane, ns: str) -> list[str]:
    return plane.kubectl("get", "agentruns", "-n", ns, "-o", "name").stdout.split()


def test_replayed_messages_make_one_turn_and_a_burst_makes_one_run(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "inbox", "C0INBOX001")
    gw = gateway.gateway
    assert gw is not None

    async def burst() -> list[Any]:
        msgs = [
            slack(f"question {i}", f"slack:Ev{i}", channel="C0INBOX001", mentioned=True, external_id=f"17000.{i}")
            for i in range(20)
        ]
        first = await asyncio.gather(*(gw.accept(m) for m in msgs))
        replay = await asyncio.gather(*(gw.accept(m) for m in msgs))  # Slack retries every one
        return first + replay

    results = gateway.call(burst())
    first, replay = results[:20], results[20:]
    assert {r.outcome for r in first} <= {Outcome.QUEUED, Outcome.FOLLOW_UP}
    assert all(r.outcome == Outcome.DUPLICATE for r in replay)
    assert [r.turn_id for r in replay] == [r.turn_id for r in first]  # a replay names the first turn
    open_turns = gateway.call(gw.db.call(turn_store.open_turns, namespace, "inbox"))
    assert len(open_turns) == 20
    # The reply goes in a thread under the asking message (replyIn defaults to thread).
    assert {(t.reply_channel, t.reply_channel_id) for t in open_turns} == {("slack", "C0INBOX001")}
    assert sorted(t.reply_thread for t in open_turns) == sorted(f"17000.{i}" for i in range(20))
    wait_for(lambda: runs_of(control_plane, namespace), what="an AgentRun for the queued turns")
    assert len(runs_of(control_plane, namespace)) == 1


def test_routing_rules_decide_what_becomes_a_turn(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "rules", "C0RULES001")
    gw = gateway.gateway
    assert gw is not None
    cases = [
        (slack("hi all", "k1", channel="C0RULES001"), Outcome.IGNORED),  # not addressed
        (slack("pynchy, hi", "k2", channel="C0RULES001"), Outcome.QUEUED),  # alias
        (slack("hi", "k3", channel="C0RULES001", sender="slack:U0STRANGER", mentioned=True), Outcome.IGNORED),
        (slack("hi", "k4", channel="C0RULES001", sender="slack:U0FRIEND01", mentioned=True), Outcome.FOLLOW_UP),
        (slack("hi", "k5", channel="C0UNKNOWN1", mentioned=True), Outcome.IGNORED),  # no Group there
        (Inbound("local", "rules", "hello", "owner", "local:m1"), Outcome.FOLLOW_UP),
    ]
    # FOLLOW_UP needs a running turn: claim the first queued one with a run, as a pod would.
    run = make_run(control_plane, namespace, "rules-run", "rules")
    wait_gateway_sees(gateway, namespace, "run", "rules-run")
    client = agent(gateway, token_for(run, "rules"))
    outcomes = []
    for inbound, _ in cases:
        outcomes.append(gateway.call(gw.accept(inbound)).outcome)
        if inbound.dedupe_key == "k2":
            assert client.get("/v1/run/turns/next", params={"wait": 5}).json()["prompt"] == "hi"
    assert outcomes == [expected for _, expected in cases]
    ignored = gateway.call(gw.accept(slack("hi", "k5", channel="C0UNKNOWN1", mentioned=True)))
    assert ignored.outcome == Outcome.DUPLICATE  # even ignored messages are remembered

    # In the thread the agent answers in (under the aliased message k2), no fresh mention is needed.
    asked = gateway.call(gw.accept(slack("pynchy, start", "k7", channel="C0RULES001", external_id="1800.1")))
    in_thread = gateway.call(gw.accept(slack("and more", "k8", channel="C0RULES001", thread="1800.1")))
    elsewhere = gateway.call(gw.accept(slack("chatter", "k9", channel="C0RULES001", thread="1900.1")))
    assert asked.outcome == in_thread.outcome == Outcome.FOLLOW_UP
    assert elsewhere.outcome == Outcome.IGNORED


def test_reply_and_send_message_enter_the_ledger_split_and_targeted(
    control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway
) -> None:
    setup_group(control_plane, namespace, gateway, "ledger", "C0LEDGER01")
    gw = gateway.gateway
    assert gw is not None
    run = make_run(control_plane, namespace, "ledger-run", "ledger")
    wait_gateway_sees(gateway, namespace, "run", "ledger-run")
    client = agent(gateway, token_for(run, "ledger"))
    accepted = gateway.call(
        gw.accept(slack("write a lot", "ev-long", channel="C0LEDGER01", mentioned=True, external_id="171.5"))
    )
    turn = client.get("/v1/run/turns/next", params={"wait": 5}).json()
    assert turn["id"] == accepted.turn_id
    long_reply = "\n\n".join(f"paragraph {i}: " + "words " * 100 for i in range(15))
    finish_turn(client, turn["id"], long_reply)
    finish_turn(client, turn["id"], long_reply)  # a retried POST writes nothing twice

    rows = gateway.call(gw.db.call(outbound.for_group, namespace, "ledger"))
    assert len(rows) > 1  # split: no Slack channel is configured, so the default limit applies
    assert [r.key for r in rows] == [f"turn:{turn['id']}:{i}" for i in range(len(rows))]
    assert {(r.channel, r.channel_id, r.thread, r.state) for r in rows} == {
        ("slack", "C0LEDGER01", "171.5", outbound.PENDING)  # no Slack here: waits, never dropped
    }
    assert " ".join(" ".join(r.text for r in rows).split()) == " ".join(long_reply.split())

    r = client.post("/v1/run/tools/send_message", json={"arguments": {"text": "a note"}})
    assert r.status_code == 200, r.text
    note = gateway.call(gw.db.call(outbound.for_group, namespace, "ledger"))[-1]
    assert note.key.startswith("send:")
    assert (note.channel, note.channel_id, note.text) == ("local", "ledger", "a note")  # the first channel


def test_commands_pending_reset_and_stop(control_plane: ControlPlane, namespace: str, gateway: EmbeddedGateway) -> None:
    setup_group(control_plane, namespace, gateway, "cmds", "C0CMDS0001")
    gw = gateway.gateway
    assert gw is not None
    run = make_run(control_plane, namespace, "cmds-run", "cmds")
    wait_gateway_sees(gateway, namespace, "run", "cmds-run")
    client = agent(gateway, token_for(run, "cmds"))

    def say(text: str, key: str) -> Any:
        return gateway.call(gw.accept(Inbound("local", "cmds", text, "owner", key)))

    say("first job", "local:1")
    running = client.get("/v1/run/turns/next", params={"wait": 5}).json()
    say("second job", "local:2")
    pending = say("pending", "local:3")
    assert pending.outcome == Outcome.COMMAND
    assert pending.reply == "Pending:\n- running: first job\n- queued: second job"

    assert say("new session", "local:4").outcome == Outcome.COMMAND
    finish_turn(client, running["id"], "done one")
    nxt = client.get("/v1/run/turns/next", params={"wait": 5}).json()
    assert nxt["prompt"] == "second job"
    assert nxt.get("resetSession") is True  # the reset goes with the next turn handed over

    say("third job", "local:5")
    stopped = say("stop", "local:6")
    assert stopped.reply == "Stopped: 1 run(s) ended, 2 message(s) dropped."
    wait_for(lambda: get(control_plane, "agentrun", "cmds-run", namespace) is None, what="the run deleted")
    assert gateway.call(gw.db.call(turn_store.open_turns, namespace, "cmds")) == []
    replies = {r.key: r.text for r in gateway.call(gw.db.call(outbound.for_group, namespace, "cmds"))}
    assert replies["cmd:local:3"] == pending.reply
    assert replies["cmd:local:6"] == stopped.reply
    # Both dropped turns got a reply saying so (nobody is left waiting in silence).
    dropped = [r for r in gateway.call(gw.db.call(outbound.for_group, namespace, "cmds")) if r.is_error]
    assert sorted(r.text for r in dropped) == ["stopped by owner", "stopped by owner"]
    audit = gateway.call(gw.db.call(records.audit_log, namespace, "cmds"))
    assert [a.action for a in audit if a.action.startswith("command:")] == [
        "command:pending",
        "command:reset",
        "command:stop",
    ]
