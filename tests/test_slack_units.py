"""Slack channel pieces without a gateway: event parsing, mrkdwn, splitting, error mapping, and
bolt's request checks in front of /slack/events."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from structlog.testing import capture_logs

from doubles.slack import BOT_ID, BOT_TOKEN, BOT_USER, SIGNING_SECRET, signed_headers
from pynchy.gateway.channels.base import Accepted, DecisionReply, Inbound, Outcome
from pynchy.gateway.channels.text import split_message
from pynchy.gateway.slack.client import carries_key, metadata
from pynchy.gateway.slack.errors import to_delivery_error
from pynchy.gateway.slack.events import EVENTS_PATH, MAX_INBOUND_CHARS, EventReceiver
from pynchy.gateway.slack.inbound import Identity, Skip, parse, strip_mention, unescape
from pynchy.gateway.slack.mrkdwn import escape_text, to_mrkdwn
from pynchy.gateway.slack.replies import ERROR_PREFIX, render
from pynchy.gateway.slack.stream import PLACEHOLDER, preview

ME = Identity(BOT_USER, BOT_ID)


def envelope(event: dict[str, Any], event_id: str = "Ev0001") -> dict[str, Any]:
    return {"type": "event_callback", "event_id": event_id, "team_id": "T1", "event": event}


def msg(**fields: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "C0AAAAAAAA", "user": "U0PERSON01", "text": "hello", "ts": "100.000001"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


# -- inbound ---------------------------------------------------------------------------------


def test_plain_channel_message() -> None:
    got = parse(envelope(msg(channel_type="channel")), ME)
    assert got == Inbound(
        channel="slack",
        channel_id="C0AAAAAAAA",
        text="hello",
        sender="slack:U0PERSON01",
        dedupe_key="slack:C0AAAAAAAA:100.000001",
        thread=None,
        external_id="100.000001",
        mentioned=False,
        direct=False,
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # the bot's mention is removed and noted; other people's mentions stay
        (msg(text=f"<@{BOT_USER}> what's up <@U0OTHER001>?"), {"text": "what's up <@U0OTHER001>?", "mentioned": True}),
        (msg(text=f"hey <@{BOT_USER}|pynchy>   do it"), {"text": "hey do it", "mentioned": True}),
        # app_mention is a mention even if the text has no <@bot> (it always has, but still)
        (msg(type="app_mention", text=f"<@{BOT_USER}> hi"), {"text": "hi", "mentioned": True}),
        # DMs are direct
        (msg(channel="D0DDDDDDDD", channel_type="im"), {"direct": True, "channel_id": "D0DDDDDDDD"}),
        (msg(channel="G0GGGGGGGG", channel_type="mpim"), {"direct": False}),
        # thread replies carry the thread; a thread's parent is top level
        (msg(ts="101.000002", thread_ts="100.000001"), {"thread": "100.000001", "external_id": "101.000002"}),
        (msg(thread_ts="100.000001"), {"thread": None}),
        # Slack's escaping is undone for the agent
        (msg(text="a &lt; b &amp;&amp; c &gt; d"), {"text": "a < b && c > d"}),
        # people's message subtypes
        (msg(subtype="thread_broadcast", thread_ts="99.1"), {"thread": "99.1"}),
        (msg(subtype="file_share", text="see file"), {"text": "see file"}),
    ],
)
def test_inbound_cases(event: dict[str, Any], expected: dict[str, Any]) -> None:
    got = parse(envelope(event), ME)
    assert isinstance(got, Inbound), got
    for key, value in expected.items():
        assert getattr(got, key) == value, key


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (msg(bot_id="B0SOMEBOT1"), "posted by a bot"),
        (msg(bot_id=BOT_ID, user=BOT_USER), "posted by a bot"),
        (msg(user=BOT_USER), "posted by this app"),
        (msg(subtype="message_changed"), "subtype"),
        (msg(subtype="message_deleted"), "subtype"),
        (msg(subtype="bot_message"), "subtype"),
        (msg(subtype="channel_join"), "subtype"),
        (msg(hidden=True), "hidden"),
        (msg(text=f"<@{BOT_USER}>"), "empty"),
        (msg(text=None), "no text"),
        (msg(user=None), "no user"),
        (msg(ts=None), "no channel or ts"),
    ],
)
def test_inbound_ignored(event: dict[str, Any], reason: str) -> None:
    got = parse(envelope(event), ME)
    assert isinstance(got, Skip)
    assert reason in got.reason
    assert got.known


@pytest.mark.parametrize(
    "body",
    [
        {"type": "url_verification", "challenge": "x"},
        {"type": "event_callback"},
        envelope({"type": "reaction_added", "user": "U1"}),
        envelope({"type": "member_joined_channel"}),
    ],
)
def test_unknown_events_are_skipped_as_unknown(body: dict[str, Any]) -> None:
    got = parse(body, ME)
    assert isinstance(got, Skip)
    assert not got.known


def test_mention_and_message_events_of_one_message_share_a_dedupe_key() -> None:
    text = f"<@{BOT_USER}> summarise this"
    as_mention = parse(envelope(msg(type="app_mention", text=text), "Ev1"), ME)
    as_message = parse(envelope(msg(text=text, channel_type="channel"), "Ev2"), ME)
    assert isinstance(as_mention, Inbound)
    assert isinstance(as_message, Inbound)
    assert as_mention == as_message  # same key, text, mention flag: the second is a duplicate


def test_strip_mention_and_unescape() -> None:
    assert strip_mention("hi", None) == ("hi", False)
    assert strip_mention(f"<@{BOT_USER}>\tgo", BOT_USER) == ("go", True)
    assert unescape("&amp;lt;") == "&lt;"  # one level only, as Slack escaped it


# -- mrkdwn ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and *it* and _it_ and ~~gone~~", "*bold* and _it_ and _it_ and ~gone~"),
        ("***both***", "_*both*_"),
        ("[docs](https://example.com/a?b=1&c=2)", "<https://example.com/a?b=1&amp;c=2|docs>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[**bold link**](https://x.y)", "<https://x.y|*bold link*>"),
        ("![a chart](https://x.y/c.png)", "<https://x.y/c.png|a chart>"),
        ("# Title **with bold**\ntext", "*Title with bold*\n\ntext"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("ping <@U0ABCDEF12> and <!here> in <#C0ABCDEF12|general>", None),
        ("`x <y> && **z**`", "`x &lt;y&gt; &amp;&amp; **z**`"),
        ("```python\nif a < b and c:\n    print('**no**')\n```", "```\nif a &lt; b and c:\n    print('**no**')\n```"),
        ("- one\n- **two**\n  - nested\n    - deeper", "• one\n• *two*\n    ◦ nested\n        ▪ deeper"),
        ("3. c\n4. d", "3. c\n4. d"),
        ("> quoted **b**\n> second", "> quoted *b*\n> second"),
        ("above\n\n---\n\nbelow", "above\n\n───\n\nbelow"),
        ("snake_case_name stays", "snake_case_name stays"),
        ("line one\nline two", "line one\nline two"),
        ("| a | bb |\n|---|---|\n| 1 | **2** |", "```\na | bb\n--+---\n1 | 2\n```"),
        ("```\nunclosed fence, mid-stream", "```\nunclosed fence, mid-stream\n```"),
        ("**half-written bold", "**half-written bold"),
        ("", ""),
    ],
)
def test_mrkdwn(markdown: str, mrkdwn: str | None) -> None:
    assert to_mrkdwn(markdown) == (markdown if mrkdwn is None else mrkdwn)


def test_escape_keeps_only_real_control_sequences() -> None:
    assert (
        escape_text("<@U0ABCDEF12> <b> <!channel> <!nothing>") == "<@U0ABCDEF12> &lt;b&gt; <!channel> &lt;!nothing&gt;"
    )


def test_split_long_reply_keeps_code_blocks_renderable() -> None:
    code = "\n".join(f"value_{i} = {i} < {i + 1}" for i in range(400))
    text = "Here is the file:\n\n```python\n" + code + "\n```\n\nThat is all."
    parts = split_message(text, 3800)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 3800
        rendered = to_mrkdwn(part)
        assert rendered.count("```") % 2 == 0, rendered[:200]
        assert "&lt;" in rendered  # code is escaped for Slack, not reformatted
        assert "value_" in rendered
    assert "That is all." in to_mrkdwn(parts[-1])


def test_reply_rendering() -> None:
    assert render("**done**", False) == "*done*"
    assert render("the agent stopped before answering", True) == ERROR_PREFIX + "the agent stopped before answering"
    assert render("   ", False) == "_(no text)_"


def test_streaming_preview() -> None:
    assert preview("", None, 100) == PLACEHOLDER
    assert preview("**so far**", None, 100) == "*so far*"
    assert preview("", "Bash", 100) == "_using Bash…_"
    assert preview("text", "Read", 100) == "text\n\n_using Read…_"
    cut = preview("x" * 500, None, 100)
    assert len(cut) <= 100
    assert cut.endswith("…")


def test_reply_metadata_carries_the_ledger_key() -> None:
    message = {"ts": "1.2", "metadata": metadata("turn:abc:0")}
    assert carries_key(message, "turn:abc:0")
    assert not carries_key(message, "turn:abc:1")
    assert not carries_key({"ts": "1.2"}, "turn:abc:0")
    assert not carries_key({"metadata": {"event_type": "other", "event_payload": {"key": "turn:abc:0"}}}, "turn:abc:0")


# -- error mapping ---------------------------------------------------------------------------


def api_error(error: str | None, status: int = 200, headers: dict[str, Any] | None = None) -> SlackApiError:
    data = {"ok": False, "error": error} if error else {}
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url="http://slack/api/chat.postMessage",
        req_args={},
        data=data,
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("failed", response)


@pytest.mark.parametrize(
    ("exc", "permanent", "retry_after"),
    [
        (api_error("ratelimited", 429, {"Retry-After": "7"}), False, 7.0),
        (api_error("ratelimited", 429, {}), False, 1.0),
        (api_error(None, 429, {"retry-after": ["3"]}), False, 3.0),
        (api_error("channel_not_found"), True, None),
        (api_error("not_in_channel"), True, None),
        (api_error("is_archived"), True, None),
        (api_error("msg_too_long"), True, None),
        (api_error("invalid_auth"), False, None),
        (api_error("internal_error"), False, None),
        (api_error(None, 503), False, None),
        (TimeoutError(), False, None),
        (ConnectionResetError("reset"), False, None),
    ],
)
def test_delivery_error_mapping(exc: BaseException, permanent: bool, retry_after: float | None) -> None:
    err = to_delivery_error(exc, "chat.postMessage")
    assert err.permanent is permanent
    assert err.retry_after == retry_after
    assert "chat.postMessage" in str(err)


# -- bolt in front of /slack/events ----------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.accepted: list[Inbound] = []
        self.replies: list[tuple[str, str, str]] = []
        self.decisions: list[tuple[str, bool, str]] = []
        self.ephemerals: list[tuple[str, str, str, str | None]] = []

    async def accept(self, inbound: Inbound) -> Accepted:
        self.accepted.append(inbound)
        return Accepted(Outcome.QUEUED, "ns", "g", turn_id="t1")

    async def reply(self, channel: str, thread: str, text: str) -> None:
        self.replies.append((channel, thread, text))

    async def decide(self, approval_id: str, approve: bool, sender: str) -> DecisionReply:
        self.decisions.append((approval_id, approve, sender))
        return DecisionReply("ok", decided=True)

    async def ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> None:
        self.ephemerals.append((channel, user, text, thread))


# The receiver makes no Web API calls (who it is comes from whoami(), replies go through reply()).
NO_API = "http://127.0.0.1:9/api/"


async def whoami() -> Identity:
    return ME


async def _with_receiver(scenario: Any, overrides: dict[str, Any]) -> Any:
    recorder = Recorder()
    tasks: list[asyncio.Future[Any]] = []
    parts: dict[str, Any] = {
        "accept": recorder.accept,
        "whoami": whoami,
        "reply": recorder.reply,
        "decide": recorder.decide,
        "ephemeral": recorder.ephemeral,
    } | overrides
    receiver = EventReceiver(
        BOT_TOKEN,
        NO_API,
        signing_secret=SIGNING_SECRET,
        background=lambda coro: tasks.append(asyncio.ensure_future(coro)),
        **parts,
    )
    app = web.Application()
    app.router.add_post(EVENTS_PATH, receiver.handle_http)
    async with TestClient(TestServer(app)) as client:
        result = await scenario(client, recorder)
    await asyncio.gather(*tasks)
    return result, recorder


def run_receiver(scenario: Any, **overrides: Any) -> Any:
    """Run `scenario(client, recorder)` against an EventReceiver behind /slack/events; `overrides`
    replace its accept/whoami/reply/decide/ephemeral. Returns (the scenario's result, the recorder)."""
    return asyncio.run(_with_receiver(scenario, overrides))


def body_of(event: dict[str, Any], event_id: str = "Ev0001") -> str:
    return json.dumps(envelope(event, event_id))


async def post_signed(client: TestClient, body: str) -> int:
    """POST `body` to /slack/events, signed with the right secret; the HTTP status."""
    r = await client.post(EVENTS_PATH, data=body, headers=signed_headers(body))
    return r.status


def test_signed_event_is_accepted_and_acked() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> int:
        return await post_signed(client, body_of(msg(text=f"<@{BOT_USER}> hi", channel_type="channel")))

    status, rec = run_receiver(scenario)
    assert status == 200
    assert [i.text for i in rec.accepted] == ["hi"]
    assert rec.accepted[0].mentioned  # the bot's id reached the parser through bolt's authorize


def test_url_verification_challenge() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> tuple[int, str]:
        body = json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"})
        r = await client.post(EVENTS_PATH, data=body, headers=signed_headers(body))
        return r.status, await r.text()

    (status, text), _ = run_receiver(scenario)
    assert status == 200
    assert "c-123" in text


@pytest.mark.parametrize(
    "tamper",
    ["wrong-secret", "stale-timestamp", "changed-body", "no-headers"],
)
def test_bad_signatures_get_401_and_one_log_line(tamper: str) -> None:
    async def scenario(client: TestClient, rec: Recorder) -> int:
        body = body_of(msg(text="hi"))
        if tamper == "wrong-secret":
            headers = signed_headers(body, secret="not-the-secret")
        elif tamper == "stale-timestamp":
            headers = signed_headers(body, timestamp=int(time.time()) - 6 * 60)
        elif tamper == "changed-body":
            headers = signed_headers(body)
            body = body.replace("hi", "ho")
        else:
            headers = {"Content-Type": "application/json"}
        r = await client.post(EVENTS_PATH, data=body, headers=headers)
        return r.status

    with capture_logs() as logs:
        status, rec = run_receiver(scenario)
    assert status == 401
    assert rec.accepted == []
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["slack request with a bad signature rejected"]


def test_malformed_json_gets_400_when_signed_and_401_when_not() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> tuple[int, int, str]:
        body = '{"type": "event_callback", "event": {'
        signed = await client.post(EVENTS_PATH, data=body, headers=signed_headers(body))
        unsigned = await client.post(EVENTS_PATH, data=body, headers=signed_headers(body, secret="nope"))
        return signed.status, unsigned.status, await signed.text()

    (signed, unsigned, text), rec = run_receiver(scenario)
    assert (signed, unsigned) == (400, 401)
    assert "not a JSON" in text
    assert rec.accepted == []


def test_unknown_event_type_is_acked_and_ignored() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> list[int]:
        statuses = []
        for i, event in enumerate([{"type": "reaction_added", "user": "U1"}, {"type": "reaction_added"}]):
            statuses.append(await post_signed(client, body_of(event, f"Ev{i}")))
        return statuses

    with capture_logs() as logs:
        statuses, rec = run_receiver(scenario)
    assert statuses == [200, 200]
    assert rec.accepted == []
    ignored = [e for e in logs if e["event"] == "slack event ignored" and e["log_level"] == "info"]
    assert len(ignored) == 1  # once per kind of event, not per event


def test_unsupported_payload_type_gets_400() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> int:
        return await post_signed(
            client, json.dumps({"type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1})
        )

    status, _ = run_receiver(scenario)
    assert status == 400


def test_oversized_message_is_refused_with_a_reply_in_its_thread() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> int:
        text = f"<@{BOT_USER}> " + "x" * (MAX_INBOUND_CHARS + 1)
        return await post_signed(client, body_of(msg(type="app_mention", text=text, ts="200.000001")))

    with capture_logs() as logs:
        status, rec = run_receiver(scenario)
    assert status == 200  # acknowledged: a retry would be refused the same way
    assert rec.accepted == []
    assert len(rec.replies) == 1
    channel, thread, text = rec.replies[0]
    assert (channel, thread) == ("C0AAAAAAAA", "200.000001")
    assert "too long" in text
    assert any(e["event"] == "slack message refused: too long" for e in logs)


def test_retry_headers_are_logged_and_the_retry_still_goes_to_accept() -> None:
    async def scenario(client: TestClient, rec: Recorder) -> int:
        body = body_of(msg(text="hi"))
        headers = signed_headers(body) | {"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"}
        r = await client.post(EVENTS_PATH, data=body, headers=headers)
        return r.status

    with capture_logs() as logs:
        status, rec = run_receiver(scenario)
    assert status == 200
    assert len(rec.accepted) == 1  # dedupe is the gateway's (by key, in the store)
    retry = next(e for e in logs if e["event"] == "slack event redelivered")
    assert (retry["retry"], retry["reason"]) == ("2", "http_timeout")


@pytest.mark.parametrize("broken_part", ["accept", "whoami"])
def test_failures_before_storing_are_not_acked_so_slack_retries(broken_part: str) -> None:
    """A store that is down, or Slack's auth.test failing: 500, never a 200 that loses the event."""

    async def broken(*args: Any) -> Any:
        raise RuntimeError("down")

    async def scenario(client: TestClient, rec: Recorder) -> int:
        return await post_signed(client, body_of(msg(text="hi")))

    status, _ = run_receiver(scenario, **{broken_part: broken})
    assert status == 500
