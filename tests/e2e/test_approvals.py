"""Approvals and questions in the chat, enforced outside the agent pod, end to end: the real Claude
Code CLI in a sandboxed agent pod on the dev node, the scripted model driving its tools, the
gateway holding each call the Group's tool policy says to ask about until a person decides."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from typing import Any

from cluster.helpers import group, is_ready, wait_for
from doubles.anthropic import tool_use
from e2e.conftest import Stack
from e2e.helpers import apply, ask
from pynchy.gateway.channels.base import Inbound
from pynchy.store import records
from pynchy.store.models import ApprovalRow

IDLE = {"idleTimeoutSeconds": 600}


def policy_group(stack: Stack, name: str, policy: dict[str, Any], **agent: Any) -> None:
    apply(stack, json.dumps(group(name, agent={**IDLE, "toolPolicy": policy, **agent})))
    wait_for(lambda: is_ready(stack.plane, "group", name, stack.namespace), timeout=60, what=f"Group {name} Ready")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.groups.get(stack.namespace, name), what="the gateway sees the Group")


def pending(stack: Stack, group_name: str) -> list[ApprovalRow]:
    gw = stack.gateway.gateway
    assert gw is not None
    return stack.gateway.call(gw.approvals.pending(stack.namespace, group_name))


def say(stack: Stack, channel: str, text: str, sender: str = "owner") -> Any:
    """A message in the local channel, as `pynchy chat` sends it."""
    gw = stack.gateway.gateway
    assert gw is not None
    inbound = Inbound("local", channel, text, sender, f"local:{uuid.uuid4().hex}")
    return stack.gateway.call(gw.accept(inbound))


def audit(stack: Stack, group_name: str) -> list[tuple[str, dict[str, Any]]]:
    gw = stack.gateway.gateway
    assert gw is not None
    rows = stack.gateway.call(gw.db.call(records.audit_log, stack.namespace, group_name))
    return [(r.action, json.loads(r.detail) if r.detail.startswith("{") else {}) for r in rows]


def test_a_bash_call_under_ask_runs_once_approved_and_not_when_denied(stack: Stack) -> None:
    policy_group(stack, "builder", {"rules": [{"tools": ["Bash"], "action": "ask"}]})
    model = stack.model
    model.on_prompt("run the build", tool_use("Bash", command="echo built > built.txt && cat built.txt"))
    model.after_tool("Bash", "The build ran.")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(ask, stack, "builder", "please run the build", 240)
        [request] = wait_for(lambda: pending(stack, "builder"), timeout=180, what="an approval request")
        assert request.tool == "Bash"
        assert "echo built" in request.summary
        # Not an approver: refused, nothing decided.
        refused = say(stack, "builder", f"approve {request.id}", sender="slack:U0NOTOWNER1")
        assert refused.outcome.value == "ignored"  # not even an allowed sender of this Group
        accepted = say(stack, "builder", f"approve {request.id}")
        assert accepted.reply.startswith(f"[{request.id}] Approved by owner"), accepted.reply
        result = answer.result()
    assert result.text == "The build ran.", result
    [seen] = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"]
    assert "built" in seen.text
    assert not seen.is_error

    # Denied: the model reads the denial as the tool's error and says so; the command never ran.
    model.on_prompt("run it again", tool_use("Bash", command="echo again > again.txt"))
    model.after_tool("Bash", "I was not allowed to run it.")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(ask, stack, "builder", "run it again", 240)
        [request] = wait_for(lambda: pending(stack, "builder"), timeout=180, what="the second request")
        assert say(stack, "builder", f"deny {request.id}").reply.startswith(f"[{request.id}] Denied by owner")
        result = answer.result()
    assert result.text == "I was not allowed to run it.", result
    denial = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"][-1]
    assert "denied by owner" in denial.text, denial
    actions = audit(stack, "builder")
    assert ("approval:Bash", "approved") in [(a, d.get("decision")) for a, d in actions]
    assert ("approval:Bash", "denied") in [(a, d.get("decision")) for a, d in actions]
    assert sum(1 for a, _ in actions if a == "tool:Bash") == 2  # the runner's stream: what it actually tried
