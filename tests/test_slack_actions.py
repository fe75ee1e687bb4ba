"""Approval buttons in Slack, against the double: the Block Kit message posted and updated in place
through the ledger, and a person's click (over HTTP, signed, and over Socket Mode) reaching the
gateway's decide_approval(), with refusals told only to the person who clicked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from aiohttp import web
from structlog.testing import capture_logs

from conftest import RUN_TOKEN_KEY
from doubles.slack import (
    APP_TOKEN,
    BOT_TOKEN,
    FORM,
    OWNER,
    SIGNING_SECRET,
    SlackDouble,
    action_body,
    post_action,
    signed_headers,
    wait_until,
)
from pynchy.gateway.approvalview import (
    ACTION_APPROVE,
    ACTION_DENY,
    outcome_blocks,
    outcome_text,
    request_blocks,
    request_text,
)
from pynchy.gateway.channels.base import Accepted, DecisionReply, DeliveryError, Inbound, Outcome
from pynchy.gateway.db import Db
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.slack.actions import Click, answer_click, parse_click
from pynchy.gateway.slack.channel import SlackChannel
from pynchy.gateway.slack.events import EVENTS_PATH
from pynchy.gateway.slack.mrkdwn import to_mrkdwn
from pynchy.store import outbound
from pynchy.store.approvals import APPROVED
from pynchy.store.models import ApprovalRow, OutboundRow

T = TypeVar("T")
CHANNEL = "C0APPROVAL1"
PERSON = "U0PERSON001"
APPROVAL_ID = "ap7k2q"
REFUSED = "Only an approver of this Group can decide `ap7k2q`."


class Core:
    """The gateway as the channel sees it: the store, accept(), and decide_approval() answering
    with `answer` (or raising it)."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.decisions: list[tuple[str, bool, str]] = []
        self.questions: list[tuple[str, int, int, str]] = []
        self.answer: DecisionReply | Exception = DecisionReply("Approved.", decided=True)
        self.hold: threading.Event | None = None  # set: decisions wait for it

    async def accept(self, inbound: Inbound) -> Accepted:
        return Accepted(Outcome.IGNORED, reason="not under test")

    async def decide_approval(self, approval_id: str, approve: bool, sender: str) -> DecisionReply:
        self.decisions.append((approval_id, approve, sender))
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait, 30)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def answer_question(self, question_id: str, index: int, choice: int, sender: str) -> DecisionReply:
        self.questions.append((question_id, index, choice, sender))
        return DecisionReply("Answered.", decided=True)


class Gateway:
    """A SlackChannel on its own event loop thread; in HTTP mode behind a real aiohttp server."""

    def __init__(self, double: SlackDouble, tmp: Path, *, socket_mode: bool = False) -> None:
        self.double = double
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        values: dict[str, Any] = {
            "run_token_key": RUN_TOKEN_KEY,
            "database_url": f"sqlite:///{tmp}/gateway.db",
            "slack_bot_token": BOT_TOKEN,
            "slack_api_url": double.api_url,
        }
        if socket_mode:
            values["slack_app_token"] = APP_TOKEN
        else:
            values["slack_signing_secret"] = SIGNING_SECRET
        settings = GatewaySettings(**values)
        self.db = Db(settings.database_url)
        self.core = Core(self.db)
        self.runner: web.AppRunner | None = None
        self.url = ""
        try:
            self.channel: SlackChannel = self.call(self._start(settings))
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, settings: GatewaySettings) -> SlackChannel:
        channel = SlackChannel(settings, self.core)
        await channel.start()
        if not channel.socket_mode:
            app = web.Application()
            channel.install(app)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}{EVENTS_PATH}"
        return channel

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.call(self.db.call(fn, *args, **kwargs))

    def close(self) -> None:
        self.call(self._stop())
        self._stop_loop()

    async def _stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await self.channel.stop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.db.close()

    # -- the approval message, as the gateway writes it to the ledger --------------------------

    def request(self, approval: ApprovalRow) -> OutboundRow:
        row, _ = self.store(
            outbound.add,
            key=f"approval:{approval.id}",
            namespace="ns",
            group="alpha",
            text=request_text(approval),
            channel="slack",
            channel_id=CHANNEL,
            thread=approval.thread,
            blocks=json.dumps(request_blocks(approval)),
        )
        return row

    def outcome(self, approval: ApprovalRow) -> OutboundRow:
        row = self.store(
            outbound.restate,
            f"approval:{approval.id}",
            outcome_text(approval),
            json.dumps(outcome_blocks(approval)),
        )
        assert row is not None
        return row

    def deliver(self, row: OutboundRow, maybe_sent: bool = False) -> str | None:
        ts = self.call(self.channel.deliver(row, maybe_sent=maybe_sent))
        self.store(outbound.mark_sent, row.id, ts)
        return ts

    def posted_request(self) -> tuple[ApprovalRow, str]:
        """An approval request posted in a thread of CHANNEL: (its approval, the message's ts)."""
        asking = self.double.user_message(CHANNEL, "please clean up /tmp")
        approval = approval_row(thread=asking["ts"])
        ts = self.deliver(self.request(approval))
        assert ts is not None
        return approval, ts


def approval_row(thread: str | None = None, **fields: Any) -> ApprovalRow:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": APPROVAL_ID,
        "key": "hook:uid:tool-1",
        "namespace": "ns",
        "group": "alpha",
        "run": "alpha-run-1",
        "run_uid": "uid",
        "tool": "Bash",
        "args_digest": "0" * 64,
        "summary": "rm -rf /tmp/build && make",
        "state": "pending",
        "channel": "slack",
        "channel_id": CHANNEL,
        "thread": thread,
        "created_at": now,
        "expires_at": now + timedelta(minutes=10),
    }
    return ApprovalRow(**(values | fields))


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble() as d:
        yield d


@pytest.fixture
def gateway(double: SlackDouble, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(double, tmp_path)
    try:
        yield g
    finally:
        g.close()


@pytest.fixture
def socket_gateway(double: SlackDouble, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(double, tmp_path, socket_mode=True)
    try:
        wait_until(lambda: double.socket_connected, what="socket mode connection")
        yield g
    finally:
        g.close()


# -- the message: Block Kit through the ledger -----------------------------------------------


def test_request_is_posted_with_buttons_and_text_as_the_fallback(gateway: Gateway, double: SlackDouble) -> None:
    approval, ts = gateway.posted_request()
    message = double.message(CHANNEL, ts)
    assert message is not None
    assert message["thread_ts"] == approval.thread
    assert message["text"] == to_mrkdwn(request_text(approval))  # what notifications show
    assert message["blocks"] == request_blocks(approval)
    assert [(b["action_id"], b["value"]) for b in double.buttons(CHANNEL, ts)] == [
        (ACTION_APPROVE, APPROVAL_ID),
        (ACTION_DENY, APPROVAL_ID),
    ]
    (call,) = double.calls_to("chat.postMessage")
    assert call.params["blocks"] == request_blocks(approval)
    assert call.params["metadata"]["event_payload"] == {"key": f"approval:{APPROVAL_ID}"}


def test_outcome_rewrites_the_same_message_in_place_without_buttons(gateway: Gateway, double: SlackDouble) -> None:
    approval, ts = gateway.posted_request()
    decided = approval_row(thread=approval.thread, state=APPROVED, decided_by=f"slack:{PERSON}")
    row = gateway.outcome(decided)
    assert (row.state, row.external_id) == (outbound.PENDING, ts)
    assert gateway.deliver(row) == ts
    (update,) = double.calls_to("chat.update")
    assert update.params["ts"] == ts
    assert update.params["blocks"] == outcome_blocks(decided)
    message = double.message(CHANNEL, ts)
    assert message is not None
    assert message["text"] == to_mrkdwn(outcome_text(decided))
    assert message["blocks"] == outcome_blocks(decided)
    assert message["block_edits"] == [request_blocks(approval)]
    assert double.buttons(CHANNEL, ts) == []
    assert f"<@{PERSON}>" in json.dumps(message["blocks"])
    assert len(double.calls_to("chat.postMessage")) == 1  # never a second message


def test_request_posted_before_a_crash_is_adopted_not_posted_twice(gateway: Gateway, double: SlackDouble) -> None:
    asking = double.user_message(CHANNEL, "please")
    approval = approval_row(thread=asking["ts"])
    row = gateway.request(approval)
    first = gateway.call(gateway.channel.deliver(row, maybe_sent=False))  # posted; then the process died
    assert gateway.call(gateway.channel.deliver(row, maybe_sent=True)) == first
    assert double.calls_to("chat.update") == []  # same text, same blocks: nothing to change

    # Decided before the restarted gateway delivered the row: the found message gets the outcome.
    decided = approval_row(thread=asking["ts"], state=APPROVED, decided_by=f"slack:{PERSON}")
    gateway.store(outbound.restate, row.key, outcome_text(decided), json.dumps(outcome_blocks(decided)))
    assert gateway.call(gateway.channel.deliver(row, maybe_sent=True)) == first
    (update,) = double.calls_to("chat.update")
    assert update.params["blocks"] == outcome_blocks(decided)
    assert double.buttons(CHANNEL, first) == []
    assert len(double.bot_messages(CHANNEL)) == 1


def test_blocks_that_are_not_json_fail_the_row_permanently(gateway: Gateway, double: SlackDouble) -> None:
    row, _ = gateway.store(
        outbound.add, key="approval:bad", namespace="ns", group="alpha", text="x", channel="slack",
        channel_id=CHANNEL, blocks="[{not json",
    )  # fmt: skip
    with pytest.raises(DeliveryError) as err:
        gateway.call(gateway.channel.deliver(row, maybe_sent=False))
    assert err.value.permanent
    assert double.calls_to("chat.postMessage") == []


# -- a click over HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(("action", "approve"), [(ACTION_APPROVE, True), (ACTION_DENY, False)])
def test_signed_click_reaches_decide(gateway: Gateway, double: SlackDouble, action: str, approve: bool) -> None:
    _, ts = gateway.posted_request()
    with capture_logs() as logs:
        r = post_action(gateway.url, double.block_actions(CHANNEL, ts, action, user=PERSON))
        assert r.status_code == 200, r.text
        wait_until(lambda: gateway.core.decisions, what="the decision")
        wait_until(lambda: any(e["event"] == "slack approval button" for e in logs), what="its log line")
    assert gateway.core.decisions == [(APPROVAL_ID, approve, f"slack:{PERSON}")]
    line = next(e for e in logs if e["event"] == "slack approval button")
    assert (line["approval"], line["user"], line["decided"]) == (APPROVAL_ID, PERSON, True)
    assert double.ephemerals() == []  # decided: the gateway updates the message through the ledger


def test_click_is_acked_before_the_decision_is_made(gateway: Gateway, double: SlackDouble) -> None:
    """Slack wants the ack within 3 seconds: a slow decision must not hold it."""
    _, ts = gateway.posted_request()
    gateway.core.hold = release = threading.Event()
    gateway.core.answer = DecisionReply(REFUSED, decided=False)
    try:
        r = post_action(gateway.url, double.block_actions(CHANNEL, ts, ACTION_APPROVE, user=PERSON))
        assert r.status_code == 200  # answered while the decision is still being made
        wait_until(lambda: gateway.core.decisions, what="the decision under way")
        assert double.ephemerals() == []
    finally:
        release.set()
    wait_until(lambda: double.ephemerals(PERSON), what="the refusal, once decided")


def test_refused_click_is_told_only_to_that_person_in_the_thread(gateway: Gateway, double: SlackDouble) -> None:
    approval, ts = gateway.posted_request()
    gateway.core.answer = DecisionReply(REFUSED, decided=False)
    r = post_action(gateway.url, double.block_actions(CHANNEL, ts, ACTION_APPROVE, user=PERSON))
    assert r.status_code == 200
    (notice,) = wait_until(lambda: double.ephemerals(), what="the ephemeral refusal")
    assert (notice["channel"], notice["user"], notice["thread_ts"]) == (CHANNEL, PERSON, approval.thread)
    assert notice["text"] == to_mrkdwn(REFUSED)
    assert len(double.calls_to("chat.postEphemeral")) == 1
    assert gateway.core.decisions == [(APPROVAL_ID, True, f"slack:{PERSON}")]
    message = double.message(CHANNEL, ts)
    assert message is not None
    assert "edits" not in message  # nothing changed in the channel
    assert all(m["text"] != REFUSED for m in double.channel_messages(CHANNEL))


def test_a_failing_decision_tells_the_person_to_try_again(gateway: Gateway, double: SlackDouble) -> None:
    _, ts = gateway.posted_request()
    gateway.core.answer = RuntimeError("store down")
    with capture_logs() as logs:
        assert post_action(gateway.url, double.block_actions(CHANNEL, ts, ACTION_DENY, user=PERSON)).status_code == 200
        (notice,) = wait_until(lambda: double.ephemerals(PERSON), what="the ephemeral notice")
    assert "try again" in notice["text"]
    assert any(e["event"] == "slack approval button failed" and e["log_level"] == "warning" for e in logs)


@pytest.mark.parametrize("tamper", ["wrong-secret", "stale-timestamp", "changed-body", "no-headers"])
def test_click_with_a_bad_signature_gets_401_and_decides_nothing(
    gateway: Gateway, double: SlackDouble, tamper: str
) -> None:
    _, ts = gateway.posted_request()
    payload = double.block_actions(CHANNEL, ts, ACTION_APPROVE, user=PERSON)
    if tamper == "wrong-secret":
        r = post_action(gateway.url, payload, secret="not-the-secret")
    elif tamper == "stale-timestamp":
        r = post_action(gateway.url, payload, timestamp=int(time.time()) - 6 * 60)
    elif tamper == "changed-body":
        body = action_body(payload)
        headers = signed_headers(body, content_type=FORM)
        forged = action_body(payload | {"user": {"id": OWNER}})
        r = _post(gateway.url, forged, headers)
    else:
        r = _post(gateway.url, action_body(payload), {"Content-Type": FORM})
    assert r.status_code == 401
    assert gateway.core.decisions == []
    assert double.ephemerals() == []


def test_form_body_with_a_broken_payload_gets_400_when_signed_and_401_when_not(gateway: Gateway) -> None:
    body = "payload=%7B%22type%22%3A+%22block_actions%22"  # payload={"type": "block_actions"  (cut)
    signed = _post(gateway.url, body, signed_headers(body, content_type=FORM))
    unsigned = _post(gateway.url, body, signed_headers(body, secret="nope", content_type=FORM))
    assert (signed.status_code, unsigned.status_code) == (400, 401)
    assert gateway.core.decisions == []


def test_a_button_that_is_not_ours_gets_400(gateway: Gateway, double: SlackDouble) -> None:
    _, ts = gateway.posted_request()
    payload = double.block_actions(CHANNEL, ts, ACTION_APPROVE, user=PERSON)
    payload["actions"][0]["action_id"] = "someone_elses_button"
    assert post_action(gateway.url, payload).status_code == 400
    assert gateway.core.decisions == []


def _post(url: str, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body.encode(), headers=headers, timeout=30)


# -- a click over Socket Mode ----------------------------------------------------------------


def test_click_over_socket_mode_is_acked_and_decided(socket_gateway: Gateway, double: SlackDouble) -> None:
    gateway = socket_gateway
    approval, ts = gateway.posted_request()
    envelope = double.click(CHANNEL, ts, ACTION_DENY, user=PERSON)
    wait_until(lambda: envelope in double.acks, what="the ack")
    wait_until(lambda: gateway.core.decisions, what="the decision")
    assert gateway.core.decisions == [(APPROVAL_ID, False, f"slack:{PERSON}")]
    assert double.ephemerals() == []

    # Someone else clicks the same button later: refused, and told so privately.
    gateway.core.answer = DecisionReply(REFUSED, decided=False)
    again = double.click(CHANNEL, ts, ACTION_APPROVE, user=OWNER)
    wait_until(lambda: again in double.acks, what="the second ack")
    (notice,) = wait_until(lambda: double.ephemerals(), what="the ephemeral refusal")
    assert (notice["user"], notice["thread_ts"]) == (OWNER, approval.thread)
    assert gateway.core.decisions[-1] == (APPROVAL_ID, True, f"slack:{OWNER}")


# -- parsing a click -------------------------------------------------------------------------


def payload(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": PERSON},
        "channel": {"id": CHANNEL},
        "message": {"ts": "200.000002", "thread_ts": "200.000001"},
        "actions": [{"action_id": ACTION_APPROVE, "value": APPROVAL_ID, "type": "button"}],
    }
    return base | fields


def test_parse_click() -> None:
    assert parse_click(payload()) == Click(APPROVAL_ID, True, PERSON, CHANNEL, "200.000002", "200.000001")
    deny = parse_click(payload(actions=[{"action_id": ACTION_DENY, "value": "x1"}]))
    assert isinstance(deny, Click)
    assert (deny.approval_id, deny.approve, deny.sender) == ("x1", False, f"slack:{PERSON}")
    # a top-level message (a thread's parent carries its own ts as thread_ts) is not in a thread
    parent = parse_click(payload(message={"ts": "200.000001", "thread_ts": "200.000001"}))
    assert isinstance(parent, Click)
    assert parent.thread_ts is None
    # the channel from the container when the payload has none
    bare = parse_click(payload(channel=None, container={"channel_id": "C0OTHER0001", "message_ts": "1.2"}))
    assert isinstance(bare, Click)
    assert bare.channel_id == "C0OTHER0001"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"actions": []}, "no action"),
        ({"actions": [{"action_id": "other", "value": "x"}]}, "unknown action"),
        ({"actions": [{"action_id": ACTION_APPROVE}]}, "no approval id"),
        ({"user": None}, "no user"),
        ({"channel": None}, "no channel"),
    ],
)
def test_parse_click_refuses(fields: dict[str, Any], reason: str) -> None:
    got = parse_click(payload(**fields))
    assert isinstance(got, str)
    assert reason in got


def test_the_app_manifest_turns_interactivity_on() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[1] / "manifests" / "slack-app-manifest.yaml").read_text())
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True  # so no request_url is needed
    assert "chat:write" in manifest["oauth_config"]["scopes"]["bot"]  # chat.postEphemeral


def test_a_question_button_is_parsed_with_its_question_and_option() -> None:
    body = {
        "user": {"id": "U0ASKER0001"},
        "channel": {"id": "C0QUESTION1"},
        "message": {"ts": "1.000100", "thread_ts": "1.000000"},
        "actions": [{"action_id": "pynchy_question_1_2", "value": "qid234", "type": "button"}],
    }
    click = parse_click(body)
    assert not isinstance(click, str)
    assert (click.approval_id, click.option, click.sender) == ("qid234", (1, 2), "slack:U0ASKER0001")

    async def main() -> list[tuple[str, int, int, str]]:
        got: list[tuple[str, int, int, str]] = []

        async def answer(qid: str, index: int, choice: int, sender: str) -> DecisionReply:
            got.append((qid, index, choice, sender))
            return DecisionReply("ok", decided=True)

        async def never(*args: object) -> DecisionReply:
            raise AssertionError("not an approval")

        async def no_ephemeral(*args: object) -> None:
            raise AssertionError("nothing to tell")

        await answer_click(click, never, no_ephemeral, answer)
        return got

    assert asyncio.run(main()) == [("qid234", 1, 2, "slack:U0ASKER0001")]
