"""End to end: a message becomes an AgentRun, a pod on the dev node, a real Claude Code turn, a reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from cluster.helpers import get, wait_for
from doubles.anthropic import Usage, text, tool_use, write_in_cwd
from e2e.conftest import MODEL_KEY, Stack
from e2e.helpers import apply, ask, ready_group, run_status, runs
from pynchy.operator.run import EmbeddedOperator
from pynchy.store import records

WORKSPACE = """
apiVersion: pynchy.dev/v1alpha1
kind: Workspace
metadata: {name: notes}
spec:
  storage: {size: 1Gi}
"""


def claim_dir(stack: Stack, claim: str) -> Path:
    uid = get(stack.plane, "pvc", claim, stack.namespace)["metadata"]["uid"]  # type: ignore[index]
    return stack.data_dir / "volumes" / stack.namespace / claim / uid


def test_a_message_runs_the_agent_in_a_pod_and_the_session_survives_the_pod(stack: Stack) -> None:
    apply(stack, WORKSPACE)
    ready_group(stack, "scribe", workspace="notes", idle=30)
    model = stack.model
    model.on_prompt("write the notes", write_in_cwd("notes.md", "# Notes\nbuy oat milk\n"), usage=Usage(100, 20))
    model.after_tool("Write", "I wrote notes.md for you.", usage=Usage(150, 10))

    result = ask(stack, "scribe", "please write the notes")
    assert result.type == "result", result
    assert result.text == "I wrote notes.md for you."
    assert (claim_dir(stack, "pynchy-ws-notes") / "notes.md").read_text() == "# Notes\nbuy oat milk\n"

    [first] = runs(stack)
    name = first["metadata"]["name"]
    status = wait_for(lambda: run_status(stack, name).get("turnsServed") == 1 and run_status(stack, name), what="usage")
    assert status["phase"] == "Running"
    assert status["usage"]["inputTokens"] == 250
    assert status["usage"]["outputTokens"] == 30
    session = status["sessionId"]
    assert session

    # Every model call went through the proxy with the real key; the pod only ever had its run token.
    main = model.main_requests
    assert main
    assert {r.header("x-api-key") for r in model.message_requests} == {MODEL_KEY}
    pod = get(stack.plane, "pod", name, stack.namespace)
    assert pod is not None
    assert MODEL_KEY not in json.dumps(pod)
    for f in stack.data_dir.rglob("*"):
        if f.is_file() and not f.is_symlink() and f.stat().st_size < 5_000_000:
            assert MODEL_KEY.encode() not in f.read_bytes(), f"the model key leaked into {f}"

    # A follow-up goes to the same run and continues the same conversation.
    model.on_prompt("what is on the list", "Oat milk.", usage=Usage(300, 5))
    result = ask(stack, "scribe", "what is on the list?")
    assert result.text == "Oat milk."
    assert len(runs(stack)) == 1
    assert "please write the notes" in json.dumps(model.main_requests[-1].body["messages"])

    # After the idle timeout the pod ends cleanly and the run succeeds.
    wait_for(lambda: run_status(stack, name).get("phase") == "Succeeded", timeout=90, what="run Succeeded after idle")
    assert run_status(stack, name)["turnsServed"] == 2

    # The next message starts a new run, which resumes the Group's session from its volume.
    model.on_prompt("anything else", "Nothing else on the list.")
    result = ask(stack, "scribe", "anything else?")
    assert result.text == "Nothing else on the list."
    second = runs(stack)[-1]
    assert second["metadata"]["name"] != name
    history = json.dumps(model.main_requests[-1].body["messages"])
    assert "please write the notes" in history
    assert "what is on the list" in history
    wait_for(lambda: run_status(stack, second["metadata"]["name"]).get("sessionId") == session, what="same session")


def test_agent_tools_create_tasks_and_a_non_admin_group_is_refused(stack: Stack) -> None:
    ready_group(stack, "helper")
    ready_group(stack, "neighbour")
    model = stack.model
    model.on_prompt(
        "remind me",
        tool_use("mcp__pynchy__schedule_task", name="standup", prompt="Time for standup", cron="0 9 * * 1-5"),
    )
    model.after_tool("mcp__pynchy__schedule_task", "Reminder scheduled.")
    assert ask(stack, "helper", "remind me about standup on weekdays at 9").text == "Reminder scheduled."
    task = get(stack.plane, "scheduledtask", "standup", stack.namespace)
    assert task is not None
    assert task["spec"]["groupRef"] == {"name": "helper"}
    assert task["spec"]["schedule"] == {"cron": "0 9 * * 1-5"}

    model.on_prompt(
        "cancel the neighbour",
        tool_use("mcp__pynchy__cancel_task", name="standup", group="neighbour"),
    )
    model.after_tool("mcp__pynchy__cancel_task", "I am not allowed to.")
    assert ask(stack, "helper", "cancel the neighbour's standup").text == "I am not allowed to."
    refusal = model.main_requests[-1].tool_results()
    assert refusal[0].is_error
    assert "not an admin group" in refusal[0].text
    gw = stack.gateway.gateway
    assert gw is not None
    audit = stack.gateway.call(gw.db.call(records.audit_log, stack.namespace, "helper"))
    assert [(a.action, a.target_group, a.allowed) for a in audit if not a.action.startswith("tool:")] == [
        ("schedule_task", "helper", True),
        ("cancel_task", "neighbour", False),
    ]
    # What the runner streamed, as the agent did it (refused or not).
    assert [a.action for a in audit if a.action.startswith("tool:")] == [
        "tool:pynchy/schedule_task",
        "tool:pynchy/cancel_task",
    ]
    assert get(stack.plane, "scheduledtask", "standup", stack.namespace) is not None


def test_run_tokens_are_per_run(stack: Stack) -> None:
    ready_group(stack, "tok")
    stack.model.on_prompt("hello", "hi")
    assert ask(stack, "tok", "hello").text == "hi"
    [run] = runs(stack)
    secret = get(stack.plane, "secret", f"{run['metadata']['name']}-token", stack.namespace)
    assert secret is not None
    import base64

    token = base64.b64decode(secret["data"]["token"]).decode()
    url = stack.gateway.url
    assert httpx.get(f"{url}/v1/run", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert httpx.get(f"{url}/v1/run", headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


def test_killing_the_operator_mid_run_does_not_start_the_run_twice(stack: Stack) -> None:
    """The operator runs as its own process here, so it can be SIGKILLed in the middle of a turn."""
    import os
    import subprocess
    import sys
    import threading

    ready_group(stack, "steady")
    stack.operator.stop()
    env = {**os.environ, "PYNCHY_LIVENESS_PORT": "0", "PYNCHY_METRICS_PORT": "0", "PYNCHY_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "pynchy", "operator"], env=env)
    try:
        gate = threading.Event()
        stack.model.on_prompt("long job", text("Long job done."), gate=gate)
        gw = stack.gateway.gateway
        assert gw is not None

        async def submit() -> Any:
            row = await gw.submit(stack.namespace, "steady", "a long job", sender="owner")
            return gw.watch(row.id)

        watch = stack.gateway.call(submit())
        wait_for(lambda: any(r.step and r.step.gate is gate for r in stack.model.main_requests), 60, what="turn")
        [run] = runs(stack)
        name = run["metadata"]["name"]
        pod_uid = get(stack.plane, "pod", name, stack.namespace)["metadata"]["uid"]  # type: ignore[index]
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()

    stack.operator = EmbeddedOperator().start()
    gate.set()
    result = stack.gateway.call(asyncio.wait_for(watch.done, 60), timeout=65)
    assert result.text == "Long job done."
    wait_for(lambda: run_status(stack, name).get("turnsServed") == 1, what="the run reports its turn")
    pods = json.loads(stack.plane.kubectl("get", "pods", "-n", stack.namespace, "-o", "json").stdout)["items"]
    assert [(p["metadata"]["name"], p["metadata"]["uid"]) for p in pods] == [(name, pod_uid)]
    assert len(runs(stack)) == 1
    assert run_status(stack, name)["phase"] == "Running"


def test_a_failing_pod_fails_the_run_with_the_reason(stack: Stack) -> None:
    apply(
        stack,
        """
apiVersion: pynchy.dev/v1alpha1
kind: Workspace
metadata: {name: broken}
spec:
  git: {url: "https://127.0.0.1:9/nobody/nothing.git", branch: main}
""",
    )
    ready_group(stack, "unlucky", workspace="broken")
    gw = stack.gateway.gateway
    assert gw is not None
    stack.gateway.call(gw.submit(stack.namespace, "unlucky", "hello"))
    [run] = wait_for(lambda: runs(stack), what="a run")
    name = run["metadata"]["name"]
    status = wait_for(lambda: run_status(stack, name).get("phase") == "Failed" and run_status(stack, name), timeout=90)
    assert status["reason"]
    assert "clone" in status["message"].lower(), status
