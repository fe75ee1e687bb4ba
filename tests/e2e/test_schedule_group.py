"""End to end: a group-mode ScheduledTask becomes due while a conversation turn is running. Its
prompt waits behind that turn, is answered as a turn of the Group's conversation (same Claude
session, history included), and the conversation goes on from there.

What happens, with the existing semantics (docs/gateway.md, "Which run gets which turn"): the
schedule creates its own AgentRun, which waits Pending while the Group's conversation run is
active (one active run per Group). The conversation run gives way: it finishes the running turn,
takes no more turns, and ends; the scheduled run then starts on the Group's volume, resumes the
Group's session, answers its prompt, and ends. The operator's clock is a test clock, so the
schedule becomes due when the test says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from typing import Any

from cluster.helpers import get, wait_for
from doubles.anthropic import text
from doubles.clock import TestClock
from e2e.conftest import Stack
from e2e.helpers import apply, ask, ready_group, run_status, runs
from pynchy.operator.build.common import parse_timestamp, timestamp
from pynchy.operator.run import EmbeddedOperator
from pynchy.schedule import run_name
from pynchy.store import turns as turn_store

DIGEST = """
apiVersion: pynchy.dev/v1alpha1
kind: ScheduledTask
metadata: {name: digest}
spec:
  groupRef: {name: team}
  prompt: Post the daily digest of what we discussed.
  schedule: {interval: 1h}
  contextMode: group
"""


def task_status(stack: Stack) -> dict[str, Any]:
    return (get(stack.plane, "scheduledtask", "digest", stack.namespace) or {}).get("status") or {}


def asked(stack: Stack, fragment: str) -> list[Any]:
    """The model's main requests whose new input (the prompt given since its last answer) has `fragment`."""
    return [r for r in stack.model.main_requests if fragment in r.new_input]


def test_a_group_schedule_is_answered_in_the_conversation_after_the_running_turn(stack: Stack) -> None:
    # The operator on a test clock (the stack's own runs on real time).
    stack.operator.stop()
    clock = TestClock()
    stack.operator = EmbeddedOperator(clock=clock).start()
    ready_group(stack, "team")
    gw = stack.gateway.gateway
    assert gw is not None
    model = stack.model

    apply(stack, DIGEST)
    due = wait_for(lambda: task_status(stack).get("nextScheduleTime"), what="the task scheduled")
    due = parse_timestamp(due)

    # A conversation turn runs, held open by the model.
    gate = threading.Event()
    model.on_prompt("what shall we cook", text("Lentil soup, with lemon."), gate=gate)
    model.on_prompt("daily digest", "Digest: we settled on lentil soup.")

    async def submit() -> Any:
        row = await gw.submit(stack.namespace, "team", "what shall we cook tonight?", sender="owner")
        return gw.watch(row.id)

    first_turn = stack.gateway.call(submit())
    wait_for(lambda: any(r.step and r.step.gate is gate for r in model.main_requests), 90, what="the turn running")
    [conversation] = runs(stack)
    conversation_run = conversation["metadata"]["name"]

    # The schedule becomes due: its run waits behind the Group's active run, with no pod.
    clock.set(due)
    stack.operator.resync_now()
    scheduled_run = run_name("digest", due)
    wait_for(
        lambda: "already has an active run" in run_status(stack, scheduled_run).get("message", ""),
        what="the scheduled run waiting for the Group",
    )
    scheduled = get(stack.plane, "agentrun", scheduled_run, stack.namespace)
    assert scheduled is not None
    assert (scheduled["spec"]["contextMode"], scheduled["spec"]["prompt"]) == (
        "group",
        "Post the daily digest of what we discussed.",
    )
    status = run_status(stack, scheduled_run)
    assert status["phase"] == "Pending"
    assert not status.get("podName")
    assert asked(stack, "daily digest") == []  # not slipped into the running turn

    # The running turn ends first, with its own answer.
    gate.set()
    result = stack.gateway.call(asyncio.wait_for(first_turn.done, 90), timeout=95)
    assert result.type == "result", result
    assert result.text == "Lentil soup, with lemon."
    session = wait_for(lambda: run_status(stack, conversation_run).get("sessionId"), what="the conversation's session")

    # The conversation run gives way (it ends once its turn is answered); then the scheduled prompt
    # is answered in the same session, after the first turn and with it in its history.
    wait_for(
        lambda: run_status(stack, conversation_run).get("phase") == "Succeeded",
        timeout=90,
        what="the conversation run gave way",
    )
    wait_for(
        lambda: run_status(stack, scheduled_run).get("phase") == "Succeeded",
        timeout=120,
        what="the scheduled run answered and ended",
    )
    final = run_status(stack, scheduled_run)
    assert final["lastReply"] == "Digest: we settled on lentil soup."
    assert final["turnsServed"] == 1
    assert final["sessionId"] == session
    [digest_request] = asked(stack, "daily digest")
    assert model.main_requests.index(digest_request) > next(
        i for i, r in enumerate(model.main_requests) if r.step and r.step.gate is gate
    )
    history = json.dumps(digest_request.body["messages"])
    assert "what shall we cook tonight?" in history
    assert "Lentil soup, with lemon." in history

    # The scheduled prompt is a turn of the Group, answered by the scheduled run.
    turn = stack.gateway.call(gw.db.call(turn_store.get, f"run-{scheduled['metadata']['uid']}"))
    assert turn is not None
    assert (turn.group, turn.run, turn.source, turn.state, turn.reply) == (
        "team",
        scheduled_run,
        "schedule",
        "done",
        "Digest: we settled on lentil soup.",
    )

    # The task's status records the run.
    wait_for(
        lambda: (
            [(h.get("runName"), h["outcome"]) for h in task_status(stack).get("history") or []]
            == [(scheduled_run, "Succeeded")]
        ),
        what="the task's history",
    )
    assert task_status(stack)["history"][0]["summary"] == "Digest: we settled on lentil soup."
    assert task_status(stack)["lastScheduleTime"] == timestamp(due)
    assert task_status(stack)["nextScheduleTime"] == timestamp(due + dt.timedelta(hours=1))

    # The conversation goes on in the same session, the scheduled turn included.
    model.on_prompt("remind me", "We are cooking lentil soup; the digest said so too.")
    assert ask(stack, "team", "remind me what the digest said").text == (
        "We are cooking lentil soup; the digest said so too."
    )
    history = json.dumps(model.main_requests[-1].body["messages"])
    assert "what shall we cook tonight?" in history
    assert "Post the daily digest of what we discussed." in history
    assert "Digest: we settled on lentil soup." in history
    latest = runs(stack)[-1]["metadata"]["name"]
    assert latest not in (conversation_run, scheduled_run)
    wait_for(lambda: run_status(stack, latest).get("sessionId") == session, what="still the same session")
