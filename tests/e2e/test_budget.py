"""Budgets and models at the model proxy, with the real Claude Code CLI in a sandboxed agent pod:
a Group answers until its daily budget is spent, is then told at once (no call leaves, the CLI does
not retry), answers again the next day, and a model it may not use is refused."""

from __future__ import annotations

import json
import threading
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest

from cluster.helpers import get, group, is_ready, wait_for
from doubles.anthropic import Usage, tool_use
from e2e.conftest import Stack
from e2e.helpers import apply, ask, run_status, runs

MODEL = "claude-sonnet-4-5"


def thrifty(stack: Stack, name: str, **spec: object) -> None:
    agent = {"idleTimeoutSeconds": 600, "model": MODEL}
    apply(stack, json.dumps(group(name, agent=agent, **spec)))
    wait_for(lambda: is_ready(stack.plane, "group", name, stack.namespace), timeout=60, what=f"Group {name} Ready")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.groups.get(stack.namespace, name), what="the gateway sees the Group")


def test_a_group_answers_until_its_daily_budget_then_is_told_at_once_and_again_the_next_day(stack: Stack) -> None:
    gw = stack.gateway.gateway
    assert gw is not None
    now = [datetime.now(UTC)]
    gw.spend.clock = lambda: now[0]
    thrifty(stack, "thrifty", budget={"dailyUsd": 0.05, "timeZone": "Europe/Berlin"})
    model = stack.model

    # 20,000 input and 2,000 output tokens of Sonnet 4.5: $0.06 + $0.03, over the $0.05 at once.
    model.on_prompt("first question", "First answer.", usage=Usage(20_000, 2_000))
    assert ask(stack, "thrifty", "first question").text == "First answer."
    calls = len(model.message_requests)

    result = ask(stack, "thrifty", "second question")
    assert result.type == "error" or result.is_error, result
    assert "daily budget of $0.05 reached; resets at 00:00 Europe/Berlin" in result.text, result
    assert len(model.message_requests) == calls  # no model call left the gateway
    # The CLI took the refusal as final: it did not retry it (it retries 429, 5xx and even 400).
    refused = gw.metrics.registry.get_sample_value(
        "pynchy_budget_refusals_total", {"group": f"{stack.namespace}/thrifty"}
    )
    assert refused is not None
    assert 1 <= refused <= 2, refused  # the turn, and at most the CLI's own side request

    # The channel was told once (the warning threshold and the limit were crossed by the same call).
    notes = wait_for(lambda: [m for m in local_messages(stack, "thrifty") if m.startswith("Budget")])
    assert notes == ["Budget: daily budget of $0.05 reached; resets at 00:00 Europe/Berlin"], notes

    # The Group's status says what happened: the serving run, its session, the spend, the state.
    def spent() -> dict[str, object] | None:
        status = (get(stack.plane, "group", "thrifty", stack.namespace) or {}).get("status") or {}
        return status if (status.get("spend") or {}).get("budget") == "exceeded" and status.get("sessionId") else None

    status = wait_for(spent, what="the Group's status shows the spend")
    assert status["spend"]["todayUsd"] == pytest.approx(0.09, abs=0.001), status  # plus the CLI's side requests
    assert status["spend"]["day"] == now[0].astimezone(zoneinfo.ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d")
    [run] = runs(stack)
    assert status["activeRun"] == run["metadata"]["name"]
    assert status["lastActivityTime"]
    header, row = stack.plane.kubectl("get", "groups", "thrifty", "-n", stack.namespace).stdout.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "READY", "WORKSPACE", "RUN", "SPEND"], header
    assert "0.09" in row, row

    # The next day (the proxy's clock moved on): it answers again.
    now[0] += timedelta(days=1)
    model.on_prompt("third question", "Third answer.")
    assert ask(stack, "thrifty", "third question").text == "Third answer."
    assert len(model.message_requests) > calls


def test_a_model_the_group_may_not_use_is_refused_even_when_the_agent_calls_it_itself(stack: Stack) -> None:
    thrifty(stack, "strict")
    # A prompt-injected agent tries a dearer model straight at the proxy, with its own credentials.
    script = (
        "python3 - <<'EOF'\n"
        "import json, os, urllib.request, urllib.error\n"
        "body = json.dumps({'model': 'claude-opus-4-1', 'max_tokens': 5,\n"
        "                   'messages': [{'role': 'user', 'content': 'hi'}]}).encode()\n"
        "req = urllib.request.Request(os.environ['ANTHROPIC_BASE_URL'] + '/v1/messages', data=body,\n"
        "    headers={'x-api-key': os.environ['ANTHROPIC_API_KEY'], 'content-type': 'application/json',\n"
        "             'anthropic-version': '2023-06-01'})\n"
        "try:\n"
        "    urllib.request.urlopen(req, timeout=30)\n"
        "    print('status=200')\n"
        "except urllib.error.HTTPError as e:\n"
        "    print('status=%d' % e.code, e.read().decode())\n"
        "EOF"
    )
    stack.model.on_prompt("try opus", tool_use("Bash", command=script))
    stack.model.after_tool("Bash", "Tried.")
    assert ask(stack, "strict", "try opus please").text == "Tried."
    [result] = [r for r in stack.model.main_requests[-1].tool_results() if r.name == "Bash"]
    assert "status=403" in result.text, result.text
    assert "model 'claude-opus-4-1' is not allowed for Group strict" in result.text, result.text
    assert all(r.body.get("model") == MODEL for r in stack.model.message_requests), "only the Group's model left"


def local_messages(stack: Stack, group_name: str) -> list[str]:
    from pynchy.store.models import OutboundRow

    gw = stack.gateway.gateway
    assert gw is not None

    def rows(session: object) -> list[str]:
        query = session.query(OutboundRow).filter(OutboundRow.group == group_name)  # type: ignore[attr-defined]
        return [r.text for r in query.order_by(OutboundRow.id).all()]

    return list(stack.gateway.call(gw.db.call(rows)))


def test_a_call_cut_off_mid_stream_is_metered_in_full(stack: Stack) -> None:
    """The agent pod goes away while the model is still answering: the upstream bills the whole
    answer, so the proxy reads it to the end and records all of its usage, for the run that asked."""
    thrifty(stack, "cutoff")
    gw = stack.gateway.gateway
    assert gw is not None
    hold = threading.Event()
    step = stack.model.on_prompt("long answer", "A long answer.", usage=Usage(4_321, 765), hold=hold)

    async def submit() -> None:
        await gw.submit(stack.namespace, "cutoff", "a long answer please", sender="owner")

    stack.gateway.call(submit())
    try:
        assert step.streaming.wait(90), "the model never started answering"
        [run] = runs(stack)
        pod = wait_for(lambda: run_status(stack, run["metadata"]["name"]).get("podName"), what="the run's pod")
        # The pod is deleted and its processes end while the answer is held after message_start.
        stack.plane.kubectl("delete", "pod", pod, "-n", stack.namespace, "--grace-period=1", "--wait=true")
    finally:
        hold.set()  # the rest of the answer (with the output tokens) now streams to a closed connection

    def metered() -> list[tuple[str, int, int]]:
        return [r for r in proxy_usage(stack, "cutoff") if r[1:] == (4_321, 765)]

    rows = wait_for(metered, what="the cut-off call's usage")
    assert rows == [(run["metadata"]["name"], 4_321, 765)]


def proxy_usage(stack: Stack, group_name: str) -> list[tuple[str, int, int]]:
    from pynchy.store.models import UsageRow

    gw = stack.gateway.gateway
    assert gw is not None

    def rows(session: object) -> list[tuple[str, int, int]]:
        query = session.query(UsageRow).filter(UsageRow.group == group_name, UsageRow.source == "proxy")  # type: ignore[attr-defined]
        return [(r.run, r.input_tokens, r.output_tokens) for r in query.order_by(UsageRow.id).all()]

    return list(stack.gateway.call(gw.db.call(rows)))
