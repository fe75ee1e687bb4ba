"""End to end through Slack: a signed mention → an AgentRun → a pod on the dev node running the real
Claude Code CLI (against the scripted model) → a placeholder streamed in the thread → the final reply."""

from __future__ import annotations

import json
import threading

from cluster.helpers import group, is_ready, wait_for
from doubles.anthropic import Usage, text, write_in_cwd
from doubles.slack import BOT_USER, SlackDouble, post_event
from e2e.conftest import Stack
from pynchy.gateway.slack.stream import PLACEHOLDER

CHANNEL = "C0E2ESLACK1"
GROUP = group("forecaster", channels=[{"slack": {"channelId": CHANNEL}}], trigger={"mode": "mention"})


def test_slack_mention_runs_the_agent_and_the_reply_streams_into_the_thread(
    slack_stack: Stack, slack: SlackDouble
) -> None:
    stack = slack_stack
    stack.plane.kubectl("apply", "-n", stack.namespace, "-f", "-", input=json.dumps(GROUP))
    wait_for(lambda: is_ready(stack.plane, "group", "forecaster", stack.namespace), timeout=60, what="Group Ready")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.directory.lookup("slack", CHANNEL), what="the gateway routes the channel")

    # The agent says something, uses a tool, and then waits (gated) before its final answer, so the
    # placeholder is seen showing the text so far.
    gate = threading.Event()
    stack.model.after_tool("Write", "Tomorrow will be **sunny**.", usage=Usage(200, 10), gate=gate)
    stack.model.on_prompt(
        "forecast",
        text("Checking the forecast."),
        write_in_cwd("forecast.txt", "sunny\n"),
        usage=Usage(100, 20),
    )

    asked = slack.user_message(CHANNEL, f"<@{BOT_USER}> what is the forecast?")
    thread = asked["ts"]
    for kind in ("app_mention", "message"):
        r = post_event(stack.gateway.url + "/slack/events", slack.event(CHANNEL, asked, kind=kind))
        assert r.status_code == 200, r.text

    def reply_text() -> str:
        replies = slack.thread(CHANNEL, thread)
        return replies[0]["text"] if replies else ""

    wait_for(lambda: slack.reactions(CHANNEL, thread) == ["eyes"], what="'received' reaction")
    wait_for(lambda: "Checking the forecast." in reply_text(), timeout=240, what="streamed text in the placeholder")
    assert "hourglass_flowing_sand" in slack.reactions(CHANNEL, thread)
    placeholder = slack.thread(CHANNEL, thread)[0]
    assert placeholder["edits"][0] == PLACEHOLDER

    gate.set()
    wait_for(lambda: reply_text() == "Tomorrow will be *sunny*.", timeout=120, what="the final reply in place")
    wait_for(lambda: "white_check_mark" in slack.reactions(CHANNEL, thread), what="'done' reaction")
    replies = slack.thread(CHANNEL, thread)
    assert len(replies) == 1
    assert replies[0]["ts"] == placeholder["ts"]  # one message: the placeholder became the answer
    top_level = [m for m in slack.channel_messages(CHANNEL) if m.get("thread_ts") in (None, m["ts"])]
    assert [m["ts"] for m in top_level] == [thread]  # nothing posted outside the thread
    assert len(stack.model.main_requests) >= 2
