"""The gateway's run API against the real API server, with the test playing the agent pod over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.gateway_helpers import agent, finish_turn, make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, get, group, wait_for
from conftest import make_gateway
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane
from pynchy.runtoken import RunClaims, issue
from pynchy.store import outbound, records
from pynchy_agent.protocol import TurnResult


@pytest.fixture
def gateway(gateway_kubeconfig: Path, tmp_path: Path, namespace: str) -> Iterator[EmbeddedGateway]:
    # Only the test's namespace: a Group of the same name in an earlier test's (terminating) namespace
    # would claim the same channel.
    gw = make_gateway(
        gateway_kubeconfig,
        tmp_path,
        "http://127.0.0.1:9",
        "sk-real-key-never-in-pods",
        long_poll_seconds=5,
        namespaces=[namespace],
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def make_group(plane: ControlPlane, ns: str, name: str, admin: bool = False) -> dict[str, Any]:
    apply(plane, ns, group(name, admin=admin))
    return get(plane, "group", name, ns)  # type: ignore[return-value]


def test_turn_round_trip_reports_usage_and_reply(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "alpha")
    run = make_run(control_plane, namespace, "alpha-run-1", "alpha")
    wait_gateway_sees(gateway, namespace, "group", "alpha")
    wait_gateway_sees(gateway, namespace, "run", "alpha-run-1")
    client = agent(gateway, token_for(run, "alpha"))

    info = client.get("/v1/run").json()
    assert info == {
        "run": "alpha-run-1",
        "namespace": namespace,
        "group": "alpha",
        "admin": False,
        "contextMode": "group",
    }
    assert client.get("/v1/run/turns/next", params={"wait": 0}).status_code == 204

    gw = gateway.gateway
    assert gw is not None
    # The run is live, so submitting reuses it instead of creating another AgentRun.
    row = gateway.call(gw.submit(namespace, "alpha", "hello there", sender="owner"))
    watch = gateway.call(_watch(gw, row.id))
    r = client.get("/v1/run/turns/next", params={"wait": 5})
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["id"] == row.id
    assert turn["prompt"] == "hello there"
    finish_turn(client, turn["id"], "hi, owner")

    result = gateway.call(_done(watch))
    assert isinstance(result, TurnResult)
    assert result.text == "hi, owner"
    out = gateway.call(gw.db.call(outbound.for_group, namespace, "alpha"))
    assert [o.text for o in out] == ["hi, owner"]
    runs = control_plane.kubectl("get", "agentruns", "-n", namespace, "-o", "name").stdout.split()
    assert runs == ["agentrun.pynchy.dev/alpha-run-1"]

    status = wait_for(
        lambda: (get(control_plane, "agentrun", "alpha-run-1", namespace) or {}).get("status", {}).get("turnsServed"),
        what="turnsServed",
    )
    assert status == 1
    st = get(control_plane, "agentrun", "alpha-run-1", namespace)["status"]  # type: ignore[index]
    # No model call went through the proxy: nothing metered (the schema's zeros); the runner's
    # estimate is kept apart.
    assert st["usage"]["inputTokens"] == st["usage"]["costUSD"] == 0
    assert st["usage"]["reportedCostUSD"] == pytest.approx(0.01)
    assert st["sessionId"] == "sess-1"
    assert st["lastReply"] == "hi, owner"

    # Events for a turn this run was not given are refused.
    r = client.post("/v1/run/turns/nope/events", json={"events": [{"type": "text_delta", "text": "x"}]})
    assert r.status_code == 404


def test_long_poll_returns_as_soon_as_a_turn_is_queued(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "beta")
    run = make_run(control_plane, namespace, "beta-run-1", "beta")
    wait_gateway_sees(gateway, namespace, "group", "beta")
    wait_gateway_sees(gateway, namespace, "run", "beta-run-1")
    client = agent(gateway, token_for(run, "beta"))
    gw = gateway.gateway
    assert gw is not None

    import threading

    got: dict[str, Any] = {}

    def poll() -> None:
        got["response"] = client.get("/v1/run/turns/next", params={"wait": 30})

    t = threading.Thread(target=poll)
    t.start()
    gateway.call(gw.submit(namespace, "beta", "wake up"))
    t.join(20)
    assert not t.is_alive(), "the long-poll did not return after a turn was queued"
    assert got["response"].status_code == 200
    assert got["response"].json()["prompt"] == "wake up"


def test_submit_without_live_run_creates_one(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "gamma")
    wait_gateway_sees(gateway, namespace, "group", "gamma")
    gw = gateway.gateway
    assert gw is not None
    gateway.call(gw.submit(namespace, "gamma", "first"))
    gateway.call(gw.submit(namespace, "gamma", "second"))
    names = control_plane.kubectl("get", "agentruns", "-n", namespace, "-o", "json").stdout
    items = json.loads(names)["items"]
    assert len(items) == 1, "two messages in a row must share one run"
    run = items[0]
    assert run["spec"] == {
        "groupRef": {"name": "gamma"},
        "trigger": {"kind": "Message"},
        "contextMode": "group",
        "deliver": True,
    }
    owner = run["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Group", "gamma")
    with pytest.raises(LookupError):
        gateway.call(gw.submit(namespace, "no-such-group", "x"))


def test_tokens_are_checked(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "delta")
    run = make_run(control_plane, namespace, "delta-run-1", "delta")
    wait_gateway_sees(gateway, namespace, "run", "delta-run-1")
    for bad in ("-", "garbage", token_for(run, "delta", expires=int(time.time()) - 1)):
        r = httpx.get(f"{gateway.url}/v1/run", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, (bad, r.text)
        assert "error" in r.json()
    forged = issue("x" * 48, RunClaims(namespace, "delta-run-1", run["metadata"]["uid"], "delta", 2**31), 0)
    assert httpx.get(f"{gateway.url}/v1/run", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    # A token for a deleted-and-recreated run (same name, new uid) is refused.
    stale = token_for(run, "delta")
    control_plane.kubectl("delete", "agentrun", "delta-run-1", "-n", namespace)
    make_run(control_plane, namespace, "delta-run-1", "delta")
    r = httpx.get(f"{gateway.url}/v1/run", headers={"Authorization": f"Bearer {stale}"})
    assert r.status_code == 401
    # The model proxy refuses the same way, in the Anthropic error shape.
    r = httpx.post(f"{gateway.url}/model/v1/messages", headers={"x-api-key": stale}, json={})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_prompt_runs_answer_their_prompt_then_end(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "eps")
    run = make_run(
        control_plane, namespace, "eps-manual", "eps", extra="prompt: summarise the day\n  contextMode: isolated"
    )
    wait_gateway_sees(gateway, namespace, "run", "eps-manual")
    client = agent(gateway, token_for(run, "eps"))
    turn = client.get("/v1/run/turns/next", params={"wait": 1}).json()
    assert turn["prompt"] == "summarise the day"
    finish_turn(client, turn["id"], "a quiet day")
    r = client.get("/v1/run/turns/next", params={"wait": 1})
    assert r.status_code == 410
    # Messages for the Group are not handed to a run that has its own prompt.
    gw = gateway.gateway
    assert gw is not None
    gateway.call(gw.hub.enqueue(namespace, "eps", "not for the manual run"))
    assert client.get("/v1/run/turns/next", params={"wait": 1}).status_code == 410


def test_tools_are_authorised_per_group_and_audited(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "plain")
    make_group(control_plane, namespace, "other")
    make_group(control_plane, namespace, "boss", admin=True)
    plain_run = make_run(control_plane, namespace, "plain-run", "plain")
    boss_run = make_run(control_plane, namespace, "boss-run", "boss")
    for name in ("plain", "other", "boss"):
        wait_gateway_sees(gateway, namespace, "group", name)
    plain = agent(gateway, token_for(plain_run, "plain"))
    boss = agent(gateway, token_for(boss_run, "boss"))

    r = plain.post(
        "/v1/run/tools/schedule_task",
        json={"arguments": {"name": "daily", "prompt": "check mail", "cron": "0 9 * * *", "timeZone": "Europe/Berlin"}},
    )
    assert r.status_code == 200, r.text
    task = get(control_plane, "scheduledtask", "daily", namespace)
    assert task is not None
    assert task["spec"]["groupRef"] == {"name": "plain"}
    assert task["spec"]["schedule"] == {"cron": "0 9 * * *"}
    assert task["spec"]["timeZone"] == "Europe/Berlin"

    # The API server's own validation reaches the agent as a 422 with its message.
    r = plain.post("/v1/run/tools/schedule_task", json={"arguments": {"name": "bad", "prompt": "x", "cron": "nope"}})
    assert r.status_code == 422, r.text
    assert "cron" in r.json()["error"]

    # A non-admin group cannot touch another group's tasks or chat; the attempt is audited.
    r = plain.post(
        "/v1/run/tools/schedule_task",
        json={"arguments": {"name": "sneaky", "prompt": "x", "interval": "1h", "group": "other"}},
    )
    assert r.status_code == 403
    assert "not an admin group" in r.json()["error"]
    assert get(control_plane, "scheduledtask", "sneaky", namespace) is None
    r = plain.post("/v1/run/tools/send_message", json={"arguments": {"text": "hi", "group": "other"}})
    assert r.status_code == 403

    # An admin group may act for another group.
    r = boss.post("/v1/run/tools/pause_task", json={"arguments": {"name": "daily", "group": "plain"}})
    assert r.status_code == 200, r.text
    assert get(control_plane, "scheduledtask", "daily", namespace)["spec"]["suspend"] is True  # type: ignore[index]
    listing = plain.post("/v1/run/tools/list_tasks", json={"arguments": {}}).json()
    assert [t["name"] for t in listing["data"]] == ["daily"]
    assert listing["data"][0]["suspended"] is True
    assert plain.post("/v1/run/tools/resume_task", json={"arguments": {"name": "daily"}}).status_code == 200
    assert plain.post("/v1/run/tools/cancel_task", json={"arguments": {"name": "daily"}}).status_code == 200
    assert get(control_plane, "scheduledtask", "daily", namespace) is None
    assert plain.post("/v1/run/tools/cancel_task", json={"arguments": {"name": "daily"}}).status_code == 404

    gw = gateway.gateway
    assert gw is not None
    audit = gateway.call(gw.db.call(records.audit_log, namespace, "plain"))
    refused = [(a.action, a.target_group) for a in audit if not a.allowed]
    assert refused == [("schedule_task", "other"), ("send_message", "other")]

    # Unknown tools and bad arguments get messages that say what to fix.
    assert plain.post("/v1/run/tools/format_disk", json={"arguments": {}}).status_code == 404
    r = plain.post("/v1/run/tools/save_memory", json={"arguments": {"key": "k"}})
    assert r.status_code == 422
    assert "content" in r.json()["error"]


def test_agent_tasks_are_counted_against_the_limit_and_go_with_their_group(
    control_plane: ControlPlane, namespace: str, gateway
) -> None:
    """maxScheduledTasks counts the tasks the Group's agent created (from the API server, not those a
    person applied); those tasks are owned by the Group, so the garbage collector deletes them with it."""
    apply(control_plane, namespace, group("lim", agent={"toolLimits": {"maxScheduledTasks": 2}}))
    grp = get(control_plane, "group", "lim", namespace)
    assert grp is not None
    run = make_run(control_plane, namespace, "lim-run", "lim")
    wait_gateway_sees(gateway, namespace, "group", "lim")
    client = agent(gateway, token_for(run, "lim"))
    by_hand = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "ScheduledTask",
        "metadata": {"name": "by-hand"},
        "spec": {"groupRef": {"name": "lim"}, "prompt": "x", "schedule": {"interval": "1h"}},
    }
    apply(control_plane, namespace, by_hand)

    def schedule(name: str) -> httpx.Response:
        return client.post(
            "/v1/run/tools/schedule_task", json={"arguments": {"name": name, "prompt": "x", "interval": "1h"}}
        )

    assert schedule("t1").status_code == 200
    assert schedule("t2").status_code == 200
    r = schedule("t3")
    assert r.status_code == 403, r.text
    assert r.json()["error"] == (
        "schedule_task limit reached: Group lim has 2 tasks its agent created and may have at most 2; cancel one "
        "(list_tasks shows them) or ask an admin to raise spec.agent.toolLimits.maxScheduledTasks"
    )
    assert get(control_plane, "scheduledtask", "t3", namespace) is None
    assert client.post("/v1/run/tools/cancel_task", json={"arguments": {"name": "t1"}}).status_code == 200
    assert schedule("t3").status_code == 200, "a cancelled task no longer counts"

    task = get(control_plane, "scheduledtask", "t3", namespace)
    assert task is not None
    assert task["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "pynchy.dev/v1alpha1",
            "kind": "Group",
            "name": "lim",
            "uid": grp["metadata"]["uid"],
            "controller": False,
        }
    ]
    gw = gateway.gateway
    assert gw is not None
    audit = gateway.call(gw.db.call(records.audit_log, namespace, "lim"))
    assert [(a.action, a.detail.split(":")[0]) for a in audit if not a.allowed] == [
        ("schedule_task", "schedule_task limit reached")
    ]

    control_plane.kubectl("delete", "group", "lim", "-n", namespace)

    def agent_tasks_gone() -> bool:
        return all(get(control_plane, "scheduledtask", name, namespace) is None for name in ("t2", "t3"))

    wait_for(agent_tasks_gone, timeout=60, what="the garbage collector deleting the Group's agent tasks")
    assert get(control_plane, "scheduledtask", "by-hand", namespace) is not None  # a person's task has no owner


def test_memory_tools(control_plane: ControlPlane, namespace: str, gateway) -> None:
    make_group(control_plane, namespace, "mem")
    run = make_run(control_plane, namespace, "mem-run", "mem")
    wait_gateway_sees(gateway, namespace, "run", "mem-run")
    c = agent(gateway, token_for(run, "mem"))

    def tool(name: str, **args: Any) -> httpx.Response:
        return c.post(f"/v1/run/tools/{name}", json={"arguments": args})

    assert tool("save_memory", key="coffee", content="oat flat white").json()["text"] == "Saved memory 'coffee'."
    assert tool("save_memory", key="team", content="platform team, Berlin").status_code == 200
    assert [m["key"] for m in tool("recall_memories", query="berlin").json()["data"]] == ["team"]
    assert len(tool("recall_memories").json()["data"]) == 2
    assert tool("forget_memory", key="coffee").status_code == 200
    assert tool("forget_memory", key="coffee").status_code == 404
    assert [m["key"] for m in tool("recall_memories").json()["data"]] == ["team"]

    # reset_context makes the next turn start a fresh session.
    assert tool("reset_context").status_code == 200
    gw = gateway.gateway
    assert gw is not None
    gateway.call(gw.submit(namespace, "mem", "new topic"))
    turn = c.get("/v1/run/turns/next", params={"wait": 5}).json()
    assert turn["resetSession"] is True


async def _watch(gw: Any, turn_id: str) -> Any:
    return gw.watch(turn_id)


async def _done(watch: Any) -> Any:
    import asyncio

    return await asyncio.wait_for(watch.done, 10)


def test_an_idle_conversation_run_gives_way_to_a_waiting_scheduled_run(
    control_plane: ControlPlane, namespace: str, gateway
) -> None:
    make_group(control_plane, namespace, "zeta")
    run = make_run(control_plane, namespace, "zeta-chat", "zeta")
    wait_gateway_sees(gateway, namespace, "run", "zeta-chat")
    client = agent(gateway, token_for(run, "zeta"))
    import threading

    got: dict[str, Any] = {}
    poll = threading.Thread(target=lambda: got.update(r=client.get("/v1/run/turns/next", params={"wait": 30})))
    poll.start()
    make_run(control_plane, namespace, "zeta-digest", "zeta", extra="prompt: the daily digest")
    poll.join(20)
    assert not poll.is_alive(), "the idle run's long-poll did not end when a scheduled run started waiting"
    assert got["r"].status_code == 410
    assert "scheduled run" in got["r"].json()["error"]
