"""Approvals and questions in the chat, enforced outside the agent pod, end to end: the real Claude
Code CLI in a sandboxed agent pod on the dev node, the scripted model driving its tools, the
gateway holding each call the Group's tool policy says to ask about until a person decides."""

from __future__ import annotations

import concurrent.futures
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from cluster.helpers import group, is_ready, wait_for
from conftest import RUN_TOKEN_KEY
from doubles.anthropic import ScriptedModel, tool_use
from doubles.slack import BOT_USER, OWNER, SlackDouble, post_action, post_event
from e2e.conftest import MODEL_KEY, Stack, gateway_address
from e2e.helpers import apply, ask
from e2e.test_chat import CHAT_TOKEN, chat
from gatewayproc import GatewayProcess
from mcpserver import NotesServer
from pynchy.devnode import DevNode, Sandbox
from pynchy.gateway.approvalview import ACTION_APPROVE, ACTION_DENY
from pynchy.gateway.channels.base import Inbound
from pynchy.kube.controlplane import ControlPlane
from pynchy.operator.run import EmbeddedOperator
from pynchy.store import records
from pynchy.store.models import ApprovalRow, TurnRow

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


@pytest.fixture
def chat_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNCHY_CHAT_TOKEN", CHAT_TOKEN)  # before the stack starts (fixture order)


def test_pynchy_chat_asks_for_the_approval_and_for_the_agents_question(
    chat_token: None, stack: Stack, tmp_path: Path
) -> None:
    policy_group(stack, "chooser", {"rules": [{"tools": ["Bash"], "action": "ask"}]})
    model = stack.model
    question = {"question": "Which colour?", "options": ["red", "blue"]}
    model.on_prompt("help me choose", tool_use("mcp__pynchy__ask_user", questions=[question]))
    model.after_tool("mcp__pynchy__ask_user", "Blue it is.")
    model.on_prompt("list the files", tool_use("Bash", command="ls -a"))
    model.after_tool("Bash", "Listed.")
    # One interactive session, piped: a message, the answer to the question, a message, the approval.
    code, out, err = chat(stack, tmp_path, "chooser", stdin="help me choose\n2\nlist the files\ny\n")
    assert code == 0, err
    assert "Which colour?" in err
    assert "2) blue" in err
    assert "Which colour? → blue" in err  # the command's answer
    assert "Blue it is." in out
    assert "approval needed" in err
    assert "Approved by owner" in err
    assert "Listed." in out
    [answer] = [r for q in model.main_requests for r in q.tool_results() if r.name == "mcp__pynchy__ask_user"]
    assert "Which colour? → blue" in answer.text
    [listing] = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"]
    assert not listing.is_error


# -- Slack: buttons, MCP through the gateway -----------------------------------------------------

NOTES_KEY = "notes-api-key-that-must-never-reach-a-pod"
STRANGER = "U0STRANGER1"


def slack_group(stack: Stack, name: str, channel: str, agent: dict[str, Any]) -> None:
    manifest = group(name, channels=[{"slack": {"channelId": channel}}], agent={**IDLE, **agent})
    manifest["spec"]["allowedSenders"] = ["owner", f"slack:{STRANGER}"]  # the stranger may talk, not approve
    apply(stack, json.dumps(manifest))
    wait_for(lambda: is_ready(stack.plane, "group", name, stack.namespace), timeout=60, what=f"Group {name} Ready")
    gw = stack.gateway.gateway
    assert gw is not None
    wait_for(lambda: gw.directory.lookup("slack", channel), what="the gateway routes the channel")


def mention(stack: Stack, slack: SlackDouble, channel: str, text: str) -> str:
    asked = slack.user_message(channel, f"<@{BOT_USER}> {text}")
    r = post_event(stack.gateway.url + "/slack/events", slack.event(channel, asked, kind="app_mention"))
    assert r.status_code == 200, r.text
    return str(asked["ts"])


def with_buttons(slack: SlackDouble, channel: str, thread: str, action: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next(
            (
                m
                for m in slack.thread(channel, thread)
                if any(b.get("action_id", "").startswith(action) for b in slack.buttons(channel, m["ts"]))
            ),
            None,
        )

    return wait_for(find, timeout=180, what=f"a message with {action} buttons in the thread")


def click(stack: Stack, slack: SlackDouble, channel: str, ts: str, action: str, user: str = OWNER) -> None:
    r = post_action(stack.gateway.url + "/slack/events", slack.block_actions(channel, ts, action, user=user))
    assert r.status_code == 200, r.text


def final_reply(slack: SlackDouble, channel: str, thread: str, text: str) -> None:
    wait_for(
        lambda: any(m.get("text") == text for m in slack.thread(channel, thread)),
        timeout=180,
        what=f"the reply {text!r} in the thread",
    )


def test_an_mcp_tool_under_ask_runs_after_a_slack_approval_and_its_secret_stays_out_of_the_pod(
    slack_stack: Stack, slack: SlackDouble
) -> None:
    stack = slack_stack
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "notes-creds"},
              "stringData": {"X-Api-Key": NOTES_KEY}}  # fmt: skip
    apply(stack, json.dumps(secret))
    with NotesServer("http") as notes:
        agent = {
            "mcpServers": [{"name": "notes", "url": notes.url, "headersSecretRef": {"name": "notes-creds"}}],
            "toolPolicy": {"rules": [{"tools": ["notes/add_note"], "action": "ask"}]},
        }
        slack_group(stack, "scribe", "C0E2EAPPROV", agent)
        model = stack.model
        model.on_prompt("note the milk", tool_use("mcp__notes__add_note", text="buy milk"))
        model.after_tool("mcp__notes__add_note", "Noted: buy milk.")
        thread = mention(stack, slack, "C0E2EAPPROV", "note the milk")
        request = with_buttons(slack, "C0E2EAPPROV", thread, "pynchy_approval")
        assert "notes/add_note" in request["text"]
        assert notes.notes == []  # held: nothing reached the server's tool yet

        # Someone who may talk to the agent but is no approver: told so, privately; nothing decided.
        click(stack, slack, "C0E2EAPPROV", request["ts"], ACTION_APPROVE, user=STRANGER)
        [refusal] = wait_for(lambda: slack.ephemerals(STRANGER), what="the stranger's refusal")
        assert "not one" in refusal["text"]

        click(stack, slack, "C0E2EAPPROV", request["ts"], ACTION_APPROVE)
        final_reply(slack, "C0E2EAPPROV", thread, "Noted: buy milk.")
        assert notes.notes == ["buy milk"]
        [seen] = [r for q in model.main_requests for r in q.tool_results() if r.name == "mcp__notes__add_note"]
        assert "noted: buy milk" in seen.text
        updated = slack.message("C0E2EAPPROV", request["ts"])
        assert updated is not None
        assert "Approved by" in updated["text"]
        assert slack.buttons("C0E2EAPPROV", request["ts"]) == []  # the buttons are gone

        # The server's key was added by the gateway; the run token never left it.
        assert NOTES_KEY in notes.seen_header("x-api-key")
        assert all(not h.startswith("Bearer ") for h in notes.seen_header("authorization"))

    # ... and it is nowhere in the agent pod: not in its spec, not in any file the pod was given.
    pods = json.loads(stack.plane.kubectl("get", "pods", "-n", stack.namespace, "-o", "json").stdout)["items"]
    assert pods
    assert all(NOTES_KEY not in json.dumps(p) and "notes-creds" not in json.dumps(p) for p in pods)
    for path in stack.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert NOTES_KEY.encode() not in path.read_bytes(), path


def test_a_denied_and_an_expired_request_say_so_to_the_model_and_in_slack(
    slack_stack: Stack, slack: SlackDouble
) -> None:
    stack = slack_stack
    gw = stack.gateway.gateway
    assert gw is not None
    slack_group(stack, "careful", "C0E2EDENIED", {"toolPolicy": {"rules": [{"tools": ["Bash"], "action": "ask"}]}})
    model = stack.model
    model.on_prompt("delete the logs", tool_use("Bash", command="rm -rf logs"))
    model.after_tool("Bash", "I may not delete them.", times=2)
    thread = mention(stack, slack, "C0E2EDENIED", "delete the logs")
    request = with_buttons(slack, "C0E2EDENIED", thread, "pynchy_approval")
    click(stack, slack, "C0E2EDENIED", request["ts"], ACTION_DENY)
    final_reply(slack, "C0E2EDENIED", thread, "I may not delete them.")
    denial = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"][-1]
    assert "denied by slack:" in denial.text, denial
    assert "Denied by" in (slack.message("C0E2EDENIED", request["ts"]) or {}).get("text", "")

    # Nobody decides: the deadline passes (the gateway's clock is moved on) and it is denied.
    model.on_prompt("delete the cache", tool_use("Bash", command="rm -rf cache"))
    thread = mention(stack, slack, "C0E2EDENIED", "delete the cache")
    request = with_buttons(slack, "C0E2EDENIED", thread, "pynchy_approval")
    real_clock = gw.approvals.clock
    gw.approvals.clock = lambda: real_clock() + timedelta(seconds=301)
    final_reply(slack, "C0E2EDENIED", thread, "I may not delete them.")
    expired = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"][-1]
    assert "Nobody approved Bash within 300 seconds" in expired.text, expired
    wait_for(
        lambda: "nobody decided in time" in (slack.message("C0E2EDENIED", request["ts"]) or {}).get("text", ""),
        what="the request's message shows it expired",
    )


def test_ask_user_is_answered_with_slack_buttons(slack_stack: Stack, slack: SlackDouble) -> None:
    stack = slack_stack
    slack_group(stack, "asker", "C0E2EQUESTN", {})
    model = stack.model
    questions = [
        {"question": "Tea or coffee?", "options": ["tea", "coffee"]},
        {"question": "Milk?", "options": ["yes", "no"]},
    ]
    model.on_prompt("make me a drink", tool_use("mcp__pynchy__ask_user", questions=questions))
    model.after_tool("mcp__pynchy__ask_user", "One coffee, no milk, coming up.")
    thread = mention(stack, slack, "C0E2EQUESTN", "make me a drink")
    asked = with_buttons(slack, "C0E2EQUESTN", thread, "pynchy_question")
    click(stack, slack, "C0E2EQUESTN", asked["ts"], "pynchy_question_0_1")  # coffee
    wait_for(
        lambda: (
            [b["action_id"] for b in slack.buttons("C0E2EQUESTN", asked["ts"])]
            == ["pynchy_question_1_0", "pynchy_question_1_1"]
        ),
        what="the first question shown as answered",
    )
    click(stack, slack, "C0E2EQUESTN", asked["ts"], "pynchy_question_1_1")  # no milk
    final_reply(slack, "C0E2EQUESTN", thread, "One coffee, no milk, coming up.")
    [answer] = [r for q in model.main_requests for r in q.tool_results() if r.name == "mcp__pynchy__ask_user"]
    assert "Tea or coffee? → coffee" in answer.text
    assert "Milk? → no" in answer.text


# -- the gateway SIGKILLed while a request is pending ----------------------------------------------


def test_a_decision_after_the_gateway_was_killed_and_restarted_still_reaches_the_agent(
    control_plane: ControlPlane,
    namespace: str,
    operator_kubeconfig: Path,
    gateway_kubeconfig: Path,
    model: ScriptedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway runs as its own process, so it can be SIGKILLed while the agent's Bash call waits
    for a decision; the runner keeps asking under the same tool use id until a new gateway answers."""
    settings = {
        "namespaces": namespace,
        "anthropic_api_key": MODEL_KEY,
        "model_upstream_url": model.base_url,
        "chat_token": CHAT_TOKEN,
        "long_poll_seconds": "5",
    }
    data = tmp_path / "gateway"
    data.mkdir()
    gateway = GatewayProcess(gateway_kubeconfig, data, **settings).start()
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", RUN_TOKEN_KEY)
    monkeypatch.setenv("PYNCHY_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("PYNCHY_NAMESPACES", namespace)
    operator = EmbeddedOperator().start()
    node = DevNode(
        control_plane.kubeconfig,
        tmp_path / "node",
        name="dev-" + uuid.uuid4().hex[:10],
        namespaces=[namespace],
        sandbox=Sandbox(relays=(gateway_address(gateway.url),)),
    )
    node.start()
    chat_api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {CHAT_TOKEN}"}, timeout=30)
    store = create_engine(f"sqlite:///{data}/gateway.db")
    try:
        manifest = group("survivor", agent={**IDLE, "toolPolicy": {"rules": [{"tools": ["Bash"], "action": "ask"}]}})
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        wait_for(lambda: is_ready(control_plane, "group", "survivor", namespace), timeout=60, what="Group Ready")
        model.on_prompt("count the files", tool_use("Bash", command="ls | wc -l"))
        model.after_tool("Bash", "Counted, after the restart.")

        def post(text: str) -> dict[str, Any]:
            body = {"text": text, "clientMessageId": uuid.uuid4().hex}
            r = chat_api.post("/v1/chat/survivor/messages", json=body)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        turn = wait_for(lambda: post("count the files").get("turnId"), what="the gateway routes the channel")

        def pending() -> list[Any]:
            with store.connect() as conn:
                rows = conn.execute(select(ApprovalRow.id, ApprovalRow.key).where(ApprovalRow.state == "pending"))
                return list(rows)

        [(approval, key)] = wait_for(pending, timeout=180, what="the pending request")
        assert key.startswith("hook:")  # asked by the runner's hook: it will ask again after the restart

        gateway.kill()
        gateway = GatewayProcess(gateway_kubeconfig, data, port=gateway.port, **settings).start()
        answer = post(f"approve {approval}")
        assert answer["reply"].startswith(f"[{approval}] Approved by owner"), answer

        def reply() -> str | None:
            with store.connect() as conn:
                row = conn.execute(select(TurnRow.state, TurnRow.reply).where(TurnRow.id == turn)).one()
            return row.reply if row.state == "done" else None

        assert wait_for(reply, timeout=180, what="the turn's reply") == "Counted, after the restart."
        [seen] = [r for q in model.main_requests for r in q.tool_results() if r.name == "Bash"]
        assert not seen.is_error, seen
        with store.connect() as conn:
            assert len(list(conn.execute(select(ApprovalRow.id)))) == 1  # the retried ask found the same request
    finally:
        chat_api.close()
        store.dispose()
        node.stop()
        operator.stop()
        gateway.stop()
