"""`pynchy-agent` as a process: the real Claude Code CLI against the scripted model, turns from a fake run API.

(End-to-end tests against the real gateway live with the gateway.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from doubles.anthropic import ScriptedModel, Usage, tool_use
from doubles.runapi import FakeRunApi
from pynchy_agent.protocol import RunInfo, TextDelta, ToolResult, ToolUse, Turn, TurnFailed, TurnResult

TOKEN = "run-token-0123456789abcdef"
AGENT = Path(sys.executable).parent / "pynchy-agent"


@dataclass
class Pod:
    """Folders and environment of one agent pod; `start()` runs pynchy-agent with them."""

    root: Path
    model: ScriptedModel
    api: FakeRunApi
    idle: int = 3

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        self.workspace = self.root / "workspace"
        self.config = self.root / "config"
        self.termination_log = self.root / "termination-log"
        for folder in (self.home, self.workspace, self.config, self.root / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "agent.log"

    def write_config(self, **agent: Any) -> None:
        config = {
            "group": "family",
            "admin": False,
            "allowedTools": [],
            "mcpServers": [],
            "model": "claude-sonnet-4-5",
            "maxTurns": None,
            "timeoutSeconds": 600,
            "idleTimeoutSeconds": 600,
            "hasMemorySeed": False,
            "directiveCount": 0,
            **agent,
        }
        (self.config / "agent.json").write_text(json.dumps(config))

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "PYNCHY_RUN_API_URL": self.api.base_url,
            "PYNCHY_RUN_TOKEN": TOKEN,
            "PYNCHY_RUN_NAME": "run-1",
            "PYNCHY_NAMESPACE": "ns",
            "PYNCHY_GROUP": "family",
            "PYNCHY_WORKSPACE": str(self.workspace),
            "PYNCHY_HOME": str(self.home),
            "HOME": str(self.home),
            "PYNCHY_CONFIG_DIR": str(self.config),
            "PYNCHY_IDLE_TIMEOUT_SECONDS": str(self.idle),
            "PYNCHY_MCP_SECRETS_DIR": str(self.root / "mcp"),
            "PYNCHY_TERMINATION_LOG": str(self.termination_log),
            "ANTHROPIC_BASE_URL": self.model.base_url,
            "ANTHROPIC_API_KEY": TOKEN,
            "IS_SANDBOX": "1",
            "TMPDIR": str(self.root / "tmp"),
            **extra,
        }

    def start(self, **extra: str) -> Pod:
        self.proc = subprocess.Popen([str(AGENT)], env=self.env(**extra), stderr=self.log.open("ab"))
        return self

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"pynchy-agent did not exit within {timeout}s:\n{self.logs()}") from None

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def session_file(self) -> dict[str, Any] | None:
        path = self.home / ".pynchy" / "session.json"
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def api() -> Iterator[FakeRunApi]:
    with FakeRunApi(TOKEN) as a:
        yield a


@pytest.fixture
def pod(tmp_path: Path, model: ScriptedModel, api: FakeRunApi) -> Iterator[Pod]:
    p = Pod(tmp_path, model, api)
    yield p
    p.stop()


def test_a_turn_runs_tools_streams_text_reports_usage_and_the_pod_exits_when_idle(pod: Pod) -> None:
    pod.write_config(allowedTools=["Read", "Write", "Bash(git:*)"], directiveCount=1, hasMemorySeed=True)
    (pod.config / "directives.md").write_text("Always answer in haiku.\n")
    (pod.config / "CLAUDE.md").write_text("The family cat is called Ziggy.\n")
    target = pod.workspace / "list.txt"
    pod.model.on_prompt(
        "shopping list", tool_use("Write", file_path=str(target), content="milk\n"), usage=Usage(100, 20, 5, 7)
    )
    final = "Your shopping list is saved in list.txt, with milk on it."
    pod.model.after_tool("Write", final, usage=Usage(200, 30, 11, 13))
    pod.api.push(Turn(id="t1", prompt="write my shopping list", sender="alice"))

    started = time.monotonic()
    pod.start()
    result = pod.api.wait_final("t1")
    assert pod.wait() == 0, pod.logs()
    elapsed = time.monotonic() - started

    assert isinstance(result, TurnResult), result
    assert not result.is_error
    assert result.text == final
    assert target.read_text() == "milk\n"
    events = pod.api.events["t1"]
    assert events[-1] == result  # the result comes last
    assert ToolUse(name="Write", input={"file_path": str(target), "content": "milk\n"}) in events
    assert pod.api.text("t1") == final  # the deltas add up to the answer
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert 1 <= len(deltas) < 6  # coalesced (the model streamed it in six pieces)
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens) == (300, 50)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (16, 20)
    assert usage.cost_usd > 0
    assert result.num_turns == 2
    assert result.session_id
    # The session is kept for the next pod and reported to the gateway.
    assert pod.session_file() == {"sessionId": result.session_id, "totalCostUSD": pytest.approx(usage.cost_usd)}
    assert pod.api.sessions == [result.session_id]
    # Memory seeded, directives appended, sender named, Pynchy's tools offered, tools narrowed.
    assert (pod.home / ".claude" / "CLAUDE.md").read_text() == "The family cat is called Ziggy.\n"
    first = pod.model.main_requests[0]
    assert "Always answer in haiku." in first.system_text
    assert "Ziggy" in json.dumps(first.body["messages"]) or "Ziggy" in first.system_text
    assert "alice: write my shopping list" in first.new_input
    assert "mcp__pynchy__send_message" in first.tool_names
    assert "mcp__pynchy__reset_context" in first.tool_names
    builtins = {n for n in first.tool_names if not n.startswith("mcp__")}
    assert builtins <= {"Read", "Write", "Bash", "ToolSearch"}, builtins
    assert first.header("x-api-key") == TOKEN
    assert first.body["model"] == "claude-sonnet-4-5"
    # Idle after the turn: the pod polled with waits no longer than the remaining idle time, then left.
    assert all(0 <= w <= 30 for w in pod.api.polls)
    assert elapsed < 3 + 30
    assert '"reason": "idle"' in pod.logs()


def test_pynchy_tools_call_the_gateway_and_a_refusal_reaches_the_model(pod: Pod) -> None:
    pod.model.on_prompt(
        "tell everyone",
        tool_use("mcp__pynchy__send_message", text="Dinner at 7"),
        tool_use("mcp__pynchy__schedule_task", name="daily", prompt="news", cron="0 9 * * *", timeZone="Europe/Paris"),
    )
    pod.model.after_tool("mcp__pynchy__schedule_task", "Sent, and the schedule was refused.")
    pod.api.tool_answers["schedule_task"] = (403, "refused: only admin groups may schedule for others")
    pod.api.push(Turn(id="t1", prompt="tell everyone dinner is at 7"))

    pod.start()
    result = pod.api.wait_final("t1")
    assert pod.wait() == 0, pod.logs()

    assert isinstance(result, TurnResult)
    assert result.text == "Sent, and the schedule was refused."
    assert pod.api.tool_calls == [
        ("send_message", {"text": "Dinner at 7"}),
        ("schedule_task", {"name": "daily", "prompt": "news", "cron": "0 9 * * *", "timeZone": "Europe/Paris"}),
    ]
    seen = {r.name: r for r in pod.model.main_requests[-1].tool_results()}
    assert seen["mcp__pynchy__send_message"].text == "send_message done"
    assert not seen["mcp__pynchy__send_message"].is_error
    assert seen["mcp__pynchy__schedule_task"].is_error
    assert "only admin groups may schedule for others" in seen["mcp__pynchy__schedule_task"].text


def test_the_next_pod_resumes_the_group_session_and_isolated_runs_do_not_touch_it(
    tmp_path: Path, model: ScriptedModel, api: FakeRunApi
) -> None:
    model.on_prompt("remember blue", "Noted: blue.", usage=Usage(100, 10))
    model.on_prompt("what colour", "You said blue.", usage=Usage(100, 10))
    model.on_prompt("isolated question", "A fresh answer.", usage=Usage(100, 10))

    first = Pod(tmp_path, model, api, idle=1)
    api.push(Turn(id="t1", prompt="remember blue"))
    first.start()
    r1 = api.wait_final("t1")
    assert first.wait() == 0, first.logs()
    assert isinstance(r1, TurnResult)

    second = Pod(tmp_path, model, api, idle=1)
    api.push(Turn(id="t2", prompt="what colour did I say"))
    second.start()
    r2 = api.wait_final("t2")
    assert second.wait() == 0, second.logs()
    assert isinstance(r2, TurnResult)
    assert r2.session_id == r1.session_id  # resumed
    history = json.dumps(model.main_requests[-1].body["messages"])
    assert "remember blue" in history
    assert "Noted: blue." in history
    session = second.session_file()
    assert session is not None
    assert session["sessionId"] == r1.session_id
    # The CLI's cost is cumulative over a session (and restored on resume); each turn reports only its own.
    assert 0 < r2.usage.cost_usd < session["totalCostUSD"]
    assert session["totalCostUSD"] == pytest.approx(r1.usage.cost_usd + r2.usage.cost_usd)

    api.info = RunInfo(run="run-3", namespace="ns", group="family", context_mode="isolated")
    third = Pod(tmp_path, model, api, idle=1)
    api.push(Turn(id="t3", prompt="isolated question"))
    third.start()
    r3 = api.wait_final("t3")
    assert third.wait() == 0, third.logs()
    assert isinstance(r3, TurnResult)
    assert r3.session_id != r1.session_id
    assert "remember blue" not in json.dumps(model.main_requests[-1].body["messages"])
    assert third.session_file() == session  # the group's session file is untouched


def test_reset_session_and_reset_context_start_fresh(pod: Pod) -> None:
    pod.idle = 2
    pod.model.on_prompt("zebra-one", "One.")
    pod.model.on_prompt("zebra-two", "Two.")
    pod.model.on_prompt("forget everything", tool_use("mcp__pynchy__reset_context"))
    pod.model.after_tool("mcp__pynchy__reset_context", "Starting over.")
    pod.model.on_prompt("zebra-four", "Four.")
    pod.api.push(Turn(id="t1", prompt="zebra-one"))
    pod.start()
    r1 = pod.api.wait_final("t1")
    pod.api.push(Turn(id="t2", prompt="zebra-two", reset_session=True))
    r2 = pod.api.wait_final("t2")
    pod.api.push(Turn(id="t3", prompt="forget everything"))
    r3 = pod.api.wait_final("t3")
    assert isinstance(r1, TurnResult)
    assert isinstance(r2, TurnResult)
    assert isinstance(r3, TurnResult)
    assert r2.session_id != r1.session_id
    assert "zebra-one" not in json.dumps(pod.model.main_requests[1].body["messages"])
    # reset_context: the session is dropped right after the turn (file removed, gateway told).
    deadline = time.monotonic() + 10
    while pod.session_file() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pod.session_file() is None
    assert pod.api.sessions[-1] is None
    pod.api.push(Turn(id="t4", prompt="zebra-four", reset_session=True))  # the gateway's echo of the reset
    r4 = pod.api.wait_final("t4")
    assert isinstance(r4, TurnResult)
    assert r4.session_id not in (r1.session_id, r2.session_id, r3.session_id)
    assert pod.wait() == 0, pod.logs()
    assert r3.session_id == r2.session_id
    # Each reset is reported (None) before the new session is.
    assert pod.api.sessions == [r1.session_id, None, r2.session_id, None, r4.session_id]


def test_a_follow_up_that_arrives_mid_turn_is_answered_after_it(pod: Pod) -> None:
    gate = threading.Event()
    pod.model.on_prompt("slow question", "Slow answer.", gate=gate)
    pod.model.on_prompt("quick follow-up", "Quick answer.")
    pod.api.push(Turn(id="t1", prompt="slow question"))
    pod.start()
    pod.api.wait_delivered("t1")
    deadline = time.monotonic() + 30
    while not pod.model.main_requests and time.monotonic() < deadline:
        time.sleep(0.02)  # the model is now "thinking" about t1
    pod.api.push(Turn(id="t2", prompt="quick follow-up"))
    pod.api.wait_delivered("t2")
    time.sleep(0.5)
    assert pod.api.finals("t1") == []
    gate.set()
    r1, r2 = pod.api.wait_final("t1"), pod.api.wait_final("t2")
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert isinstance(r2, TurnResult)
    assert (r1.text, r2.text) == ("Slow answer.", "Quick answer.")
    assert pod.api.text("t1") == "Slow answer."
    assert pod.api.text("t2") == "Quick answer."
    assert r1.session_id == r2.session_id
    assert '"follow_up": true' in pod.logs()


def test_a_follow_up_taken_into_a_running_tool_turn_finishes_both_turns(pod: Pod) -> None:
    pod.api.tool_gate = threading.Event()
    pod.model.on_prompt("look it up", tool_use("mcp__pynchy__recall_memories", query="cat"))
    pod.model.after_tool("mcp__pynchy__recall_memories", "The cat is Ziggy, and yes, feed him.")
    pod.api.push(Turn(id="t1", prompt="look it up: the cat's name"))
    pod.start()
    deadline = time.monotonic() + 30
    while not pod.api.tool_calls and time.monotonic() < deadline:
        time.sleep(0.02)
    pod.api.push(Turn(id="t2", prompt="also feed the cat?"))
    pod.api.wait_delivered("t2")
    time.sleep(1.0)  # the runner writes t2 into the session while the tool runs
    pod.api.tool_gate.set()
    r1, r2 = pod.api.wait_final("t1"), pod.api.wait_final("t2")
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert isinstance(r2, TurnResult)
    assert r1.text == "The cat is Ziggy, and yes, feed him."
    assert len(pod.api.finals("t1")) == len(pod.api.finals("t2")) == 1
    # The CLI took t2 into t1's running turn ("the user sent a new message while you were working"):
    # one answer for both, so t2 ends with an empty result and t1 carries the text and the cost.
    assert '"answered_too": ["t2"]' in pod.logs()
    assert pod.api.events["t2"] == [TurnResult(text="", session_id=r1.session_id)]
    assert "also feed the cat?" in pod.model.main_requests[-1].new_input


def test_sigterm_fails_the_running_turn_and_exits_0(pod: Pod) -> None:
    gate = threading.Event()  # never set: the model never answers
    pod.model.on_prompt("long task", "never sent", gate=gate)
    pod.api.push(Turn(id="t1", prompt="a long task"))
    pod.start()
    deadline = time.monotonic() + 30
    while not pod.model.main_requests and time.monotonic() < deadline:
        time.sleep(0.02)
    # t2 must wait for a new session (t1 still runs), t3 waits behind it in the queue.
    pod.api.push(Turn(id="t2", prompt="start over", reset_session=True))
    pod.api.push(Turn(id="t3", prompt="and then this"))
    pod.api.wait_delivered("t3")
    time.sleep(0.3)
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert pod.wait(30) == 0, pod.logs()
    assert time.monotonic() - started < 10
    for turn in ("t1", "t2", "t3"):
        assert pod.api.finals(turn) == [TurnFailed(message="agent pod is stopping")], turn
    assert len(pod.model.main_requests) == 1


def test_a_bound_run_answers_its_prompt_then_exits_on_410(pod: Pod) -> None:
    pod.idle = 600
    pod.model.on_prompt("daily digest", "Here is your digest.")
    pod.api.bound_only = True
    pod.api.push(Turn(id="run-uid", prompt="daily digest please"))
    pod.start()
    result = pod.api.wait_final("run-uid")
    assert pod.wait(30) == 0, pod.logs()
    assert isinstance(result, TurnResult)
    assert result.text == "Here is your digest."


def test_exit_codes_and_the_termination_log(pod: Pod) -> None:
    pod.api.over = True
    pod.start()
    assert pod.wait() == 0, pod.logs()  # 410 on the first poll: nothing to do

    pod.api.refuse_token = True
    pod.start()
    assert pod.wait() == 1
    assert "the gateway refused the run token: the run token is not valid" in pod.termination_log.read_text()

    pod.start(PYNCHY_RUN_TOKEN="short")
    assert pod.wait() == 2
    message = pod.termination_log.read_text()
    assert message.startswith("invalid agent pod settings: PYNCHY_RUN_TOKEN")
    assert "pynchy-agent: invalid agent pod settings" in pod.logs()

    (pod.config / "agent.json").write_text("{not json")
    pod.start()
    assert pod.wait() == 2
    assert "agent.json cannot be read as JSON" in pod.termination_log.read_text()


def test_a_failing_model_fails_the_turn_but_not_the_pod(pod: Pod) -> None:
    # The CLI retries the 400 a few times, and the failed prompt stays in the next turn's new input
    # (no answer follows it), so the "zebra" step comes first in the script.
    pod.model.on_prompt("zebra", "Fine now.")
    pod.model.on_prompt("broken", error=(400, "invalid_request_error", "scripted failure 42"), times=100)
    pod.api.push(Turn(id="t1", prompt="broken request"))
    pod.start()
    r1 = pod.api.wait_final("t1")
    pod.api.push(Turn(id="t2", prompt="zebra request"))
    r2 = pod.api.wait_final("t2")
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert r1.is_error
    assert "scripted failure 42" in r1.text
    assert isinstance(r2, TurnResult)
    assert r2.text == "Fine now."


def test_tool_results_carry_the_gateway_text(pod: Pod) -> None:
    pod.api.tool_answers["list_tasks"] = ToolResult(text="daily-digest: every day at 09:00", data=[{"name": "x"}])
    pod.model.on_prompt("my tasks", tool_use("mcp__pynchy__list_tasks"))
    pod.model.after_tool("mcp__pynchy__list_tasks", "You have one task.")
    pod.api.push(Turn(id="t1", prompt="list my tasks"))
    pod.start()
    assert isinstance(pod.api.wait_final("t1"), TurnResult)
    assert pod.wait() == 0, pod.logs()
    (seen,) = pod.model.main_requests[-1].tool_results()
    assert seen.text.startswith("daily-digest: every day at 09:00")


def test_sigterm_during_start_up_exits_0_at_once(pod: Pod) -> None:
    pod.start(PYNCHY_RUN_API_URL="http://127.0.0.1:9")  # nothing listens: GET /v1/run keeps retrying
    deadline = time.monotonic() + 20
    while "run API call failed, retrying" not in pod.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)
    assert pod.wait(10) == 0, pod.logs()
    assert "pynchy-agent: stopped during start-up" in pod.logs()
