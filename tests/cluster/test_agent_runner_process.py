"""`pynchy-agent` as a process against the real gateway, with the real Claude Code CLI.

Turns come from the gateway's run API, tool calls are answered by the gateway's tool
implementations, and the CLI's model traffic goes through the gateway's model proxy to the scripted
model (the one double here: the remote Anthropic API). No operator runs: the test creates the Group
and AgentRun objects and starts the runner as the pod would. AgentRuns without a status are live to
the gateway; the test records a finished run (status.phase) the way the operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster.helpers import get, wait_for
from conftest import RUN_TOKEN_KEY, make_gateway
from doubles.anthropic import ScriptedModel, Usage, tool_use
from pynchy.gateway.agentruns import parse_run
from pynchy.gateway.app import Gateway
from pynchy.gateway.main import EmbeddedGateway
from pynchy.gateway.turnhub import TurnWatch
from pynchy.kube.controlplane import ControlPlane
from pynchy.runtoken import RunClaims, issue
from pynchy.store import outbound, records
from pynchy.store import turns as turn_store
from pynchy.store.models import GroupSessionRow, TurnRow
from pynchy_agent.protocol import Event, TextDelta, ToolUse, TurnFailed, TurnResult

AGENT = Path(sys.executable).parent / "pynchy-agent"
GROUP = "family"
REAL_KEY = "sk-ant-real-key-that-only-the-gateway-holds"  # what the model proxy sends upstream
T = TypeVar("T")


# -- the gateway side ----------------------------------------------------------------------------


class Watched:
    """One turn as the gateway publishes it: its events in order, and its end."""

    def __init__(self, cluster: Cluster, turn_id: str, watch: TurnWatch) -> None:
        self.cluster = cluster
        self.id = turn_id
        self._watch = watch
        self._events: list[Event] = []

    @property
    def events(self) -> list[Event]:
        async def drain() -> list[Event]:
            out = []
            while not self._watch.events.empty():
                out.append(self._watch.events.get_nowait())
            return out

        self._events += self.cluster.call(drain())
        return list(self._events)

    def done(self) -> bool:
        async def check() -> bool:
            return self._watch.done.done()

        return self.cluster.call(check())

    def final(self, timeout: float = 90) -> TurnResult | TurnFailed:
        async def wait() -> TurnResult | TurnFailed:
            return await asyncio.wait_for(asyncio.shield(self._watch.done), timeout)

        try:
            result = self.cluster.call(wait(), timeout + 5)
        except TimeoutError:
            raise AssertionError(f"turn {self.id} got no result within {timeout}s; events: {self.events}") from None
        return result

    def finals(self) -> list[Event]:
        return [e for e in self.events if isinstance(e, TurnResult | TurnFailed)]

    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    def row(self) -> TurnRow:
        row = self.cluster.store(turn_store.get, self.id)
        assert row is not None, self.id
        return row


def _mark_reset(session: Any, namespace: str, group: str) -> None:
    records.group_session(session, namespace, group).reset_pending = True


@dataclass
class Cluster:
    """The test's namespace on the real API server, the real gateway serving it, and the scripted model."""

    plane: ControlPlane
    namespace: str
    embedded: EmbeddedGateway
    model: ScriptedModel
    root: Path
    pods: list[Pod] = field(default_factory=list)

    @property
    def gw(self) -> Gateway:
        assert self.embedded.gateway is not None
        return self.embedded.gateway

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return self.embedded.call(coro, timeout)

    def store(self, fn: Callable[..., T], *args: Any) -> T:
        return self.call(self.gw.db.call(fn, *args))

    # -- objects --

    def apply(self, manifest: dict[str, Any]) -> None:
        manifest = {"apiVersion": "pynchy.dev/v1alpha1", **manifest}
        manifest["metadata"] = {"namespace": self.namespace, **manifest["metadata"]}
        self.plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def group(self, name: str = GROUP, admin: bool = False) -> None:
        spec = {"admin": admin, "channels": [{"local": {"name": name}}]}
        self.apply({"kind": "Group", "metadata": {"name": name}, "spec": spec})
        wait_for(lambda: self.gw.groups.get(self.namespace, name), what=f"the gateway sees Group {name}")

    def run(self, name: str, group: str = GROUP, **spec: Any) -> dict[str, Any]:
        self.apply({"kind": "AgentRun", "metadata": {"name": name}, "spec": {"groupRef": {"name": group}, **spec}})
        return wait_for(lambda: self.gw.run_cache.get(self.namespace, name), what=f"the gateway sees AgentRun {name}")

    def end_run(self, name: str) -> None:
        """What the operator records when the run's pod has exited: the run is over."""
        patch = json.dumps({"status": {"phase": "Succeeded"}})
        self.plane.kubectl(
            "patch", "agentrun", name, "-n", self.namespace, "--subresource=status", "--type=merge", "-p", patch
        )
        wait_for(lambda: self._run_over(name), what="run over")

    def _run_over(self, name: str) -> bool:
        obj = self.gw.run_cache.get(self.namespace, name)
        return obj is not None and parse_run(obj).over

    def run_status(self, name: str) -> dict[str, Any]:
        return (get(self.plane, "agentrun", name, self.namespace) or {}).get("status") or {}

    def delete_run(self, name: str) -> None:
        self.plane.kubectl("delete", "agentrun", name, "-n", self.namespace)
        wait_for(lambda: self.gw.run_cache.get(self.namespace, name) is None, what=f"AgentRun {name} gone")

    def token(self, run: dict[str, Any]) -> str:
        meta = run["metadata"]
        group = run["spec"]["groupRef"]["name"]
        now = int(time.time())
        return issue(RUN_TOKEN_KEY, RunClaims(meta["namespace"], meta["name"], meta["uid"], group, now + 3600), now)

    # -- turns --

    def submit(self, prompt: str, *, sender: str | None = None, group: str = GROUP) -> Watched:
        """A message for the Group, as a channel hands it to the gateway (a live run serves it)."""

        async def submit_and_watch() -> tuple[str, TurnWatch]:
            row = await self.gw.submit(self.namespace, group, prompt, sender=sender)
            # Nothing yields between the queueing and the watch (the serving run exists already),
            # so no event of the turn can be published before it is watched.
            return row.id, self.gw.watch(row.id)

        turn_id, watch = self.call(submit_and_watch())
        return Watched(self, turn_id, watch)

    def watch(self, turn_id: str) -> Watched:
        async def watch() -> TurnWatch:
            return self.gw.watch(turn_id)

        return Watched(self, turn_id, self.call(watch()))

    def request_reset(self, group: str = GROUP) -> None:
        """The Group's next turn starts a fresh session (the flag reset_context sets, too)."""
        self.store(_mark_reset, self.namespace, group)

    def group_session(self, group: str = GROUP) -> GroupSessionRow:
        return self.store(records.group_session, self.namespace, group)

    def pod(self, run: dict[str, Any], idle: int = 3, root: Path | None = None) -> Pod:
        pod = Pod(root or self.root / "pod", self, run, idle)
        self.pods.append(pod)
        return pod


@dataclass
class Pod:
    """Folders and environment of one agent pod for `run`; `start()` runs pynchy-agent with them."""

    root: Path
    cluster: Cluster
    run: dict[str, Any]
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
        self.log = self.root / f"{self.name}.log"
        self.token = self.cluster.token(self.run)

    @property
    def name(self) -> str:
        return str(self.run["metadata"]["name"])

    def write_config(self, **agent: Any) -> None:
        config = {
            "group": GROUP,
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
        url = self.cluster.embedded.url
        return {
            "PATH": os.environ["PATH"],
            "PYNCHY_RUN_API_URL": url,
            "PYNCHY_RUN_TOKEN": self.token,
            "PYNCHY_RUN_NAME": self.name,
            "PYNCHY_NAMESPACE": self.cluster.namespace,
            "PYNCHY_GROUP": self.run["spec"]["groupRef"]["name"],
            "PYNCHY_WORKSPACE": str(self.workspace),
            "PYNCHY_HOME": str(self.home),
            "HOME": str(self.home),
            "PYNCHY_CONFIG_DIR": str(self.config),
            "PYNCHY_IDLE_TIMEOUT_SECONDS": str(self.idle),
            "PYNCHY_MCP_PROXY_URL": url + "/mcp",  # the gateway's MCP proxy
            "PYNCHY_TERMINATION_LOG": str(self.termination_log),
            "ANTHROPIC_BASE_URL": url + "/model",  # the gateway's model proxy
            "ANTHROPIC_API_KEY": self.token,
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

    def records(self, message: str) -> list[dict[str, Any]]:
        """The runner's JSON log records with this message."""
        out = []
        for line in self.logs().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("msg") == message:
                out.append(record)
        return out

    def received(self, turn: Watched) -> dict[str, Any] | None:
        """The runner's "turn received" record of `turn` (it has the turn in hand)."""
        return next((r for r in self.records("turn received") if r.get("turn") == turn.id), None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def session_file(self) -> dict[str, Any] | None:
        path = self.home / ".pynchy" / "session.json"
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def cluster(
    control_plane: ControlPlane,
    namespace: str,
    gateway_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    model = ScriptedModel().start()
    no_credential = getattr(request, "param", {}).get("no_credential", False)
    embedded = make_gateway(
        gateway_kubeconfig,
        tmp_path,
        model.base_url,
        None if no_credential else REAL_KEY,
        namespaces=namespace,
        long_poll_seconds=30,  # the runner's own bound on its waits is what is tested
    )
    c = Cluster(control_plane, namespace, embedded, model, tmp_path)
    try:
        embedded.start()
        yield c
    finally:
        for pod in c.pods:
            pod.stop()
        model.stop()  # first: a model call still held by a gate ends, so the gateway stops at once
        embedded.stop()


@pytest.fixture
def pod(cluster: Cluster) -> Pod:
    cluster.group()
    return cluster.pod(cluster.run("family-run-1"))


def assert_only_the_real_key_reached_the_model(pod: Pod) -> None:
    requests = pod.cluster.model.requests
    assert requests
    for r in requests:
        assert r.header("x-api-key") == REAL_KEY, (r.path, r.headers)
        assert pod.token not in json.dumps(r.headers), (r.path, r.headers)


# -- the tests -----------------------------------------------------------------------------------


def test_a_turn_runs_tools_streams_text_reports_usage_and_the_pod_exits_when_idle(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    pod.write_config(allowedTools=["Read", "Write", "Bash(git:*)"], directiveCount=1, hasMemorySeed=True)
    (pod.config / "directives.md").write_text("Always answer in haiku.\n")
    (pod.config / "CLAUDE.md").write_text("The family cat is called Ziggy.\n")
    target = pod.workspace / "list.txt"
    model.on_prompt(
        "shopping list", tool_use("Write", file_path=str(target), content="milk\n"), usage=Usage(100, 20, 5, 7)
    )
    final = "Your shopping list is saved in list.txt, with milk on it."
    model.after_tool("Write", final, usage=Usage(200, 30, 11, 13))
    t1 = cluster.submit("write my shopping list", sender="alice")

    pod.start()
    result = t1.final()
    assert pod.wait() == 0, pod.logs()

    assert isinstance(result, TurnResult), result
    assert not result.is_error
    assert result.text == final
    assert target.read_text() == "milk\n"
    events = t1.events
    assert events[-1] == result  # the result comes last
    assert ToolUse(name="Write", input={"file_path": str(target), "content": "milk\n"}) in events
    assert t1.text() == final  # the deltas add up to the answer
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
    wait_for(lambda: cluster.group_session().session_id == result.session_id, what="the gateway has the session")
    # Memory seeded, directives appended, sender named, Pynchy's tools offered, tools narrowed.
    assert (pod.home / ".claude" / "CLAUDE.md").read_text() == "The family cat is called Ziggy.\n"
    first = model.main_requests[0]
    assert "Always answer in haiku." in first.system_text
    assert "Ziggy" in json.dumps(first.body["messages"]) or "Ziggy" in first.system_text
    assert "alice: write my shopping list" in first.new_input
    assert "mcp__pynchy__send_message" in first.tool_names
    assert "mcp__pynchy__reset_context" in first.tool_names
    builtins = {n for n in first.tool_names if not n.startswith("mcp__")}
    assert builtins <= {"Read", "Write", "Bash", "ToolSearch"}, builtins
    assert first.body["model"] == "claude-sonnet-4-5"
    # Every model call went through the gateway's proxy: upstream saw the real key, never the run token.
    assert_only_the_real_key_reached_the_model(pod)

    # The gateway recorded the turn, delivered the reply, metered the calls and reported the run.
    row = t1.row()
    assert (row.state, row.reply, row.delivered_to, row.sender) == (turn_store.DONE, final, pod.name, "alice")
    ledger = cluster.store(outbound.for_group, cluster.namespace, GROUP)
    assert [(o.text, o.turn_id) for o in ledger] == [(final, t1.id)]
    answered_calls = [r for r in model.message_requests if r.step is None or r.step.error is None]
    expected_in = sum((r.step.usage if r.step else model.default_usage).input_tokens for r in answered_calls)
    expected_out = sum((r.step.usage if r.step else model.default_usage).output_tokens for r in answered_calls)
    metered = wait_for(
        lambda: (
            (u := cluster.store(records.group_usage, cluster.namespace, GROUP, "proxy"))["calls"] == len(answered_calls)
            and u
        ),
        what="every model call metered by the proxy",
    )
    assert (metered["input_tokens"], metered["output_tokens"]) == (expected_in, expected_out)
    runner = cluster.store(records.group_usage, cluster.namespace, GROUP, "runner")
    assert (runner["input_tokens"], runner["output_tokens"], runner["calls"]) == (300, 50, 1)
    # The run's status has the metered usage, priced by the gateway, and the runner's estimate apart.
    status = wait_for(
        lambda: (
            (s := cluster.run_status(pod.name)).get("sessionId")
            and (s.get("usage") or {}).get("inputTokens") == expected_in
            and s
        ),
        what="the run's status with every metered call",
    )
    assert status["turnsServed"] == 1
    assert status["sessionId"] == result.session_id
    assert status["usage"]["outputTokens"] == expected_out
    metered_usd, _ = cluster.store(records.spend_since, cluster.namespace, GROUP, datetime(2000, 1, 1, tzinfo=UTC))
    assert metered_usd > 0
    assert status["usage"]["costUSD"] == pytest.approx(metered_usd, abs=1e-6)
    assert status["usage"]["reportedCostUSD"] == pytest.approx(usage.cost_usd, abs=1e-6)
    assert "phase" not in status  # the gateway reports counters only; the run's phase is the operator's

    # Idle after the turn, the pod left by itself, saying why (how soon is not a test's business).
    assert '"reason": "idle"' in pod.logs()


def test_pynchy_tools_call_the_gateway_and_a_refusal_reaches_the_model(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    cluster.group("others")
    schedule = {"name": "daily", "prompt": "news", "cron": "0 9 * * *", "timeZone": "Europe/Paris", "group": "others"}
    model.on_prompt(
        "tell everyone",
        tool_use("mcp__pynchy__send_message", text="Dinner at 7"),
        tool_use("mcp__pynchy__schedule_task", **schedule),
    )
    model.after_tool("mcp__pynchy__schedule_task", "Sent, and the schedule was refused.")
    t1 = cluster.submit("tell everyone dinner is at 7")

    pod.start()
    result = t1.final()
    assert pod.wait() == 0, pod.logs()

    assert isinstance(result, TurnResult)
    assert result.text == "Sent, and the schedule was refused."
    seen = {r.name: r for r in model.main_requests[-1].tool_results()}
    assert seen["mcp__pynchy__send_message"].text == f"Message sent to {GROUP}."
    assert not seen["mcp__pynchy__send_message"].is_error
    # A non-admin Group naming another Group: 403 from the gateway, shown to the model as a tool error.
    assert seen["mcp__pynchy__schedule_task"].is_error
    assert f"refused: group {GROUP} is not an admin group" in seen["mcp__pynchy__schedule_task"].text
    assert get(cluster.plane, "scheduledtask", "daily", cluster.namespace) is None
    # The message went out before the reply; both calls are audited with what the runner sent.
    ledger = cluster.store(outbound.for_group, cluster.namespace, GROUP)
    assert [(o.text, o.turn_id) for o in ledger] == [("Dinner at 7", None), (result.text, t1.id)]
    audit = cluster.store(records.audit_log, cluster.namespace, GROUP)
    calls = [a for a in audit if not a.action.startswith("tool:")]
    assert [(a.action, a.allowed, a.target_group, a.run) for a in calls] == [
        ("send_message", True, GROUP, pod.name),
        ("schedule_task", False, "others", pod.name),
    ]
    assert calls[0].detail == "{'text': 'Dinner at 7'}"
    # And what the runner streamed: every tool use, as the agent made it.
    used = sorted(a.action for a in audit if a.action.startswith("tool:"))
    assert used == ["tool:pynchy/schedule_task", "tool:pynchy/send_message"]


def test_the_next_pod_resumes_the_group_session_and_isolated_runs_do_not_touch_it(cluster: Cluster) -> None:
    model = cluster.model
    model.on_prompt("remember blue", "Noted: blue.", usage=Usage(100, 10))
    model.on_prompt("what colour", "You said blue.", usage=Usage(100, 10))
    model.on_prompt("isolated question", "A fresh answer.", usage=Usage(100, 10))
    cluster.group()

    first = cluster.pod(cluster.run("family-run-1"), idle=1)
    t1 = cluster.submit("remember blue")
    first.start()
    r1 = t1.final()
    assert first.wait() == 0, first.logs()
    assert isinstance(r1, TurnResult)
    cluster.end_run(first.name)

    # A new message, a new run, a new pod on the same state volume.
    second = cluster.pod(cluster.run("family-run-2"), idle=1)
    t2 = cluster.submit("what colour did I say")
    second.start()
    r2 = t2.final()
    assert second.wait() == 0, second.logs()
    assert isinstance(r2, TurnResult)
    assert t2.row().delivered_to == second.name
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
    assert cluster.group_session().session_id == r1.session_id
    cluster.end_run(second.name)

    # An isolated run (its own prompt) starts a fresh session and leaves the Group's alone.
    isolated = cluster.run("family-isolated", prompt="isolated question", contextMode="isolated")
    t3 = cluster.watch(f"run-{isolated['metadata']['uid']}")
    third = cluster.pod(isolated, idle=1)
    third.start()
    r3 = t3.final()
    assert third.wait() == 0, third.logs()
    assert isinstance(r3, TurnResult)
    assert r3.text == "A fresh answer."
    assert r3.session_id != r1.session_id
    assert "remember blue" not in json.dumps(model.main_requests[-1].body["messages"])
    assert third.session_file() == session  # the group's session file is untouched
    assert '"context_mode": "isolated"' in third.logs()
    assert '"reason": "over"' in third.logs()  # its prompt answered, the run ended on 410
    assert cluster.group_session().session_id == r1.session_id  # and the gateway's record of it too


def test_reset_session_and_reset_context_start_fresh(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    pod.idle = 2
    model.on_prompt("zebra-one", "One.")
    model.on_prompt("zebra-two", "Two.")
    model.on_prompt("forget everything", tool_use("mcp__pynchy__reset_context"))
    model.after_tool("mcp__pynchy__reset_context", "Starting over.")
    model.on_prompt("zebra-four", "Four.")
    model.on_prompt("zebra-five", "Five.")

    t1 = cluster.submit("zebra-one")
    pod.start()
    r1 = t1.final()
    assert isinstance(r1, TurnResult)
    wait_for(lambda: cluster.group_session().session_id == r1.session_id, what="session r1 reported")
    cluster.request_reset()
    t2 = cluster.submit("zebra-two")
    r2 = t2.final()
    assert isinstance(r2, TurnResult)
    wait_for(lambda: cluster.group_session().session_id == r2.session_id, what="session r2 reported")
    t3 = cluster.submit("forget everything")
    r3 = t3.final()
    assert isinstance(r3, TurnResult)
    assert r3.text == "Starting over."
    assert r2.session_id != r1.session_id
    assert "zebra-one" not in json.dumps(model.main_requests[1].body["messages"])
    assert r3.session_id == r2.session_id
    # reset_context: the session is dropped right after the turn (file removed, gateway told), and the
    # gateway keeps the reset for the Group's next turn.
    wait_for(lambda: pod.session_file() is None, what="session file removed")
    wait_for(lambda: cluster.group_session().session_id is None, what="the reset reported")
    assert cluster.group_session().reset_pending
    t4 = cluster.submit("zebra-four")
    r4 = t4.final()
    assert isinstance(r4, TurnResult)
    assert r4.session_id not in (r1.session_id, r2.session_id, r3.session_id)
    assert not cluster.group_session().reset_pending  # consumed by the turn that was delivered next
    t5 = cluster.submit("zebra-five")
    r5 = t5.final()
    assert isinstance(r5, TurnResult)
    assert r5.session_id == r4.session_id  # the reset was for one turn only
    assert "zebra-four" in json.dumps(model.main_requests[-1].body["messages"])
    assert pod.wait() == 0, pod.logs()
    assert cluster.group_session().session_id == r4.session_id

    resets = {t.id: (pod.received(t) or {}).get("reset_session") for t in (t1, t2, t3, t4, t5)}
    assert resets == {t1.id: False, t2.id: True, t3.id: False, t4.id: True, t5.id: False}
    assert len(pod.records("session reset")) == 3  # t2, after t3, t4 (t4's finds nothing left to drop)


def test_a_follow_up_that_arrives_mid_turn_is_answered_after_it(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    gate = threading.Event()
    model.on_prompt("slow question", "Slow answer.", gate=gate)
    model.on_prompt("quick follow-up", "Quick answer.")
    t1 = cluster.submit("slow question")
    pod.start()
    wait_for(lambda: model.main_requests, what="the model is thinking about t1")
    t2 = cluster.submit("quick follow-up")
    wait_for(lambda: '"follow_up": true' in pod.logs(), what="t2 written into the running session")
    assert not t1.done()
    assert t1.row().state == t2.row().state == turn_store.DELIVERED
    gate.set()
    r1, r2 = t1.final(), t2.final()
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert isinstance(r2, TurnResult)
    assert (r1.text, r2.text) == ("Slow answer.", "Quick answer.")
    assert t1.text() == "Slow answer."
    assert t2.text() == "Quick answer."
    assert r1.session_id == r2.session_id
    ledger = cluster.store(outbound.for_group, cluster.namespace, GROUP)
    assert [(o.text, o.turn_id) for o in ledger] == [("Slow answer.", t1.id), ("Quick answer.", t2.id)]


def test_a_follow_up_taken_into_a_running_tool_turn_finishes_both_turns(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    cluster.store(records.save_memory, cluster.namespace, GROUP, "cat", "The cat is called Ziggy.")
    gate = threading.Event()
    # The model's tool call is held back until t2 is in the session: the CLI then runs the tool
    # with t2 queued, and hands t2 to the model with the tool's result.
    model.on_prompt("look it up", tool_use("mcp__pynchy__recall_memories", query="cat"), gate=gate)
    model.after_tool("mcp__pynchy__recall_memories", "The cat is Ziggy, and yes, feed him.")
    t1 = cluster.submit("look it up: the cat's name")
    pod.start()
    wait_for(lambda: model.main_requests, what="the model is deciding on a tool for t1")
    t2 = cluster.submit("also feed the cat?")
    wait_for(lambda: '"follow_up": true' in pod.logs(), what="t2 written into the running session")
    gate.set()
    r1, r2 = t1.final(), t2.final()
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert isinstance(r2, TurnResult)
    assert r1.text == "The cat is Ziggy, and yes, feed him."
    assert len(t1.finals()) == len(t2.finals()) == 1
    # The CLI took t2 into t1's running turn ("the user sent a new message while you were working"):
    # one answer for both, so t2 ends with an empty result and t1 carries the text and the cost.
    assert '"answered_too": ["' + t2.id + '"]' in pod.logs()
    assert t2.events == [TurnResult(text="", session_id=r1.session_id)]
    last = model.main_requests[-1]
    assert "also feed the cat?" in last.new_input
    (recalled,) = (r for r in last.tool_results() if r.name == "mcp__pynchy__recall_memories")
    assert recalled.text.startswith("- cat: The cat is called Ziggy.")
    # Both turns are done in the gateway; only t1 has a reply to deliver.
    assert (t1.row().state, t2.row().state) == (turn_store.DONE, turn_store.DONE)
    ledger = cluster.store(outbound.for_group, cluster.namespace, GROUP)
    assert [(o.text, o.turn_id) for o in ledger] == [(r1.text, t1.id)]


def test_sigterm_fails_the_running_turn_and_exits_0(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    gate = threading.Event()  # never set: the model never answers
    model.on_prompt("long task", "never sent", gate=gate)
    t1 = cluster.submit("a long task")
    pod.start()
    wait_for(lambda: model.main_requests, what="the model is working on t1")
    # t2 must wait for a new session (t1 still runs), t3 waits behind it in the queue.
    cluster.request_reset()
    t2 = cluster.submit("start over")
    t3 = cluster.submit("and then this")
    wait_for(lambda: pod.received(t3), what="the runner has t3")
    assert (pod.received(t2) or {}).get("reset_session") is True
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)
    # Within Kubernetes' 30 s grace period (a bound, not a speed check; speed belongs in bench/).
    assert pod.wait(30) == 0, pod.logs()
    for turn in (t1, t2, t3):
        assert turn.finals() == [TurnFailed(message="agent pod is stopping")], turn.id
        row = turn.row()
        assert (row.state, row.reply, row.delivered_to) == (turn_store.FAILED, "agent pod is stopping", pod.name)
    assert len(model.main_requests) == 1


def test_a_bound_run_answers_its_prompt_then_exits_on_410(cluster: Cluster) -> None:
    cluster.model.on_prompt("daily digest", "Here is your digest.")
    cluster.group()
    run = cluster.run("family-digest", prompt="daily digest please")
    # A message for the Group meanwhile: not this run's to answer (it serves its own prompt only).
    waiting = cluster.call(cluster.gw.hub.enqueue(cluster.namespace, GROUP, "a message for the group"))
    t = cluster.watch(f"run-{run['metadata']['uid']}")
    pod = cluster.pod(run, idle=600)
    pod.start()
    result = t.final()
    assert pod.wait(30) == 0, pod.logs()
    assert isinstance(result, TurnResult)
    assert result.text == "Here is your digest."
    assert '"reason": "over"' in pod.logs()
    row = t.row()
    assert (row.state, row.run, row.prompt, row.source) == (turn_store.DONE, pod.name, "daily digest please", "manual")
    assert cluster.store(turn_store.get, waiting.id).state == turn_store.QUEUED
    assert all("a message for the group" not in r.new_input for r in cluster.model.main_requests)


def test_exit_codes_and_the_termination_log(pod: Pod) -> None:
    cluster = pod.cluster
    cluster.end_run(pod.name)
    pod.start()
    assert pod.wait() == 0, pod.logs()  # 410 on the first poll: nothing to do
    assert '"reason": "over"' in pod.logs()

    cluster.delete_run(pod.name)
    pod.start()
    assert pod.wait() == 1
    assert pod.termination_log.read_text() == (
        "the gateway refused the run token: the run this token was issued for no longer exists"
    )

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
    cluster, model = pod.cluster, pod.cluster.model
    # The CLI retries the 400 a few times, and the failed prompt stays in the next turn's new input
    # (no answer follows it), so the "zebra" step comes first in the script.
    model.on_prompt("zebra", "Fine now.")
    model.on_prompt("broken", error=(400, "invalid_request_error", "scripted failure 42"), times=100)
    t1 = cluster.submit("broken request")
    pod.start()
    r1 = t1.final()
    t2 = cluster.submit("zebra request")
    r2 = t2.final()
    assert pod.wait() == 0, pod.logs()
    assert isinstance(r1, TurnResult)
    assert r1.is_error
    assert "scripted failure 42" in r1.text
    assert isinstance(r2, TurnResult)
    assert r2.text == "Fine now."
    # The model's error passed through the proxy unchanged; the gateway records the turn as failed.
    row = t1.row()
    assert row.state == turn_store.FAILED
    assert row.is_error
    assert "scripted failure 42" in (row.reply or "")
    assert t2.row().state == turn_store.DONE


def test_tool_results_carry_the_gateway_text(pod: Pod) -> None:
    cluster, model = pod.cluster, pod.cluster.model
    cluster.group("others")
    for name, group in (("daily-digest", GROUP), ("their-task", "others")):
        spec = {"groupRef": {"name": group}, "prompt": "the news", "schedule": {"cron": "0 9 * * *"}}
        cluster.apply({"kind": "ScheduledTask", "metadata": {"name": name}, "spec": spec})
    model.on_prompt("my tasks", tool_use("mcp__pynchy__list_tasks"))
    model.after_tool("mcp__pynchy__list_tasks", "You have one task.")
    t1 = cluster.submit("list my tasks")
    pod.start()
    assert isinstance(t1.final(), TurnResult)
    assert pod.wait() == 0, pod.logs()
    (seen,) = model.main_requests[-1].tool_results()
    assert not seen.is_error
    # (the CLI may append a <system-reminder> to a tool's text)
    assert seen.text.splitlines()[0] == "- daily-digest: {'cron': '0 9 * * *'} next=None suspended=False"
    assert "their-task" not in seen.text


def test_sigterm_during_start_up_exits_0_at_once(pod: Pod) -> None:
    pod.start(PYNCHY_RUN_API_URL="http://127.0.0.1:9")  # nothing listens: GET /v1/run keeps retrying
    wait_for(lambda: "run API call failed, retrying" in pod.logs(), timeout=20, interval=0.05, what="a retry")
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)
    assert pod.wait(10) == 0, pod.logs()
    assert "pynchy-agent: stopped during start-up" in pod.logs()


@pytest.mark.parametrize("cluster", [{"no_credential": True}], indirect=True)
def test_without_a_model_credential_the_turn_says_what_to_set(pod: Pod) -> None:
    cluster = pod.cluster
    turn = cluster.submit("hello?")
    pod.start()
    final = turn.final()
    text = final.message if isinstance(final, TurnFailed) else final.text
    assert isinstance(final, TurnFailed) or final.is_error
    assert "ANTHROPIC_API_KEY" in text, text
    assert cluster.model.requests == []  # nothing was sent upstream
    assert turn.row().state == turn_store.FAILED
