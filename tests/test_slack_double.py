"""slack_sdk and the Slack channel against the local Slack double, with a real store (SQLite) and
a stand-in for the gateway's accept(): delivery, adoption after a crash, streaming and its race
with the final reply, reactions, rate limits, Socket Mode."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from slack_sdk.errors import SlackApiError
from structlog.testing import capture_logs

from conftest import RUN_TOKEN_KEY
from doubles.slack import APP_TOKEN, BOT_TOKEN, BOT_USER, SIGNING_SECRET, SlackDouble, wait_until
from pynchy.gateway.channels.base import Accepted, DecisionReply, DeliveryError, Inbound, Outcome
from pynchy.gateway.db import Db
from pynchy.gateway.settings import GatewaySettings
from pynchy.gateway.slack.channel import SlackChannel
from pynchy.gateway.slack.client import SlackApi, make_client
from pynchy.gateway.slack.errors import to_delivery_error
from pynchy.gateway.slack.inbound import dedupe_key
from pynchy.gateway.slack.replies import ERROR_PREFIX
from pynchy.gateway.slack.stream import PLACEHOLDER
from pynchy.gateway.turnhub import TurnWatch
from pynchy.store import messages, outbound
from pynchy.store import turns as turn_store
from pynchy.store.models import OutboundRow, TurnRow
from pynchy_agent.protocol import TextDelta, ToolUse, TurnResult

T = TypeVar("T")
CHANNEL = "C0PYNCHY001"


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble() as d:
        yield d


# -- slack_sdk against the double ------------------------------------------------------------


def test_web_api_round_trip(double: SlackDouble) -> None:
    async def main() -> None:
        client = make_client(BOT_TOKEN, double.api_url)
        auth = await client.auth_test()
        assert (auth["user_id"], auth["bot_id"]) == (BOT_USER, "B0PYNCHY001")
        asked = double.user_message(CHANNEL, "question")
        posted = await client.chat_postMessage(
            channel=CHANNEL,
            text="answer",
            thread_ts=asked["ts"],
            metadata={"event_type": "pynchy_reply", "event_payload": {"key": "k1"}},
        )
        await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="better answer")
        await client.reactions_add(channel=CHANNEL, timestamp=asked["ts"], name="eyes")
        with pytest.raises(SlackApiError) as err:
            await client.reactions_add(channel=CHANNEL, timestamp=asked["ts"], name="eyes")
        assert err.value.response["error"] == "already_reacted"
        replies = await client.conversations_replies(channel=CHANNEL, ts=asked["ts"], include_all_metadata=True)
        assert [m["text"] for m in replies["messages"]] == ["question", "better answer"]
        assert replies["messages"][1]["metadata"]["event_payload"] == {"key": "k1"}
        bare = await client.conversations_replies(channel=CHANNEL, ts=asked["ts"])
        assert "metadata" not in bare["messages"][1]
        top = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
        assert [m["text"] for m in top["messages"]] == ["question"]  # thread replies are not history
        user = await client.users_info(user="U0OWNER0001")
        assert user["user"]["name"] == "owner"
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, text="x" * 40_001)
        assert err.value.response["error"] == "msg_too_long"

    asyncio.run(main())
    assert double.reactions(CHANNEL, double.channel_messages(CHANNEL)[0]["ts"]) == ["eyes"]


def test_blocks_and_ephemeral_messages(double: SlackDouble) -> None:
    button = {"type": "button", "action_id": "act", "value": "v1", "text": {"type": "plain_text", "text": "Go"}}
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}},
        {"type": "actions", "block_id": "b1", "elements": [button]},
    ]
    plain = [{"type": "section", "text": {"type": "mrkdwn", "text": "done"}}]

    async def main() -> str:
        client = make_client(BOT_TOKEN, double.api_url)
        posted = await client.chat_postMessage(channel=CHANNEL, text="hi", blocks=blocks)
        ts = str(posted["ts"])
        assert double.buttons(CHANNEL, ts) == [button | {"block_id": "b1"}]
        await client.chat_update(channel=CHANNEL, ts=ts, text="still hi")  # blocks left out: kept
        assert double.buttons(CHANNEL, ts)
        await client.chat_update(channel=CHANNEL, ts=ts, text="done", blocks=plain)
        history = await client.conversations_history(channel=CHANNEL)
        assert history["messages"][0]["blocks"] == plain  # as Slack shows it, without the double's edits
        assert "block_edits" not in history["messages"][0]
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"text": "no type"}])
        assert err.value.response["error"] == "invalid_blocks"
        eph = await client.chat_postEphemeral(channel=CHANNEL, user="U0PERSON001", text="only you", thread_ts=ts)
        assert eph["message_ts"]
        with pytest.raises(SlackApiError) as err:
            await client.chat_postEphemeral(channel=CHANNEL, user="nobody", text="x")
        assert err.value.response["error"] == "user_not_found"
        return ts

    ts = asyncio.run(main())
    message = double.message(CHANNEL, ts)
    assert message is not None
    assert message["blocks"] == plain
    assert message["block_edits"] == [blocks]
    assert double.buttons(CHANNEL, ts) == []
    (eph,) = double.ephemerals("U0PERSON001")
    assert (eph["channel"], eph["text"], eph["thread_ts"]) == (CHANNEL, "only you", ts)
    assert [m["ts"] for m in double.channel_messages(CHANNEL)] == [ts]  # ephemeral: not in the channel


def test_bad_token_is_refused(double: SlackDouble) -> None:
    async def main() -> str:
        with pytest.raises(SlackApiError) as err:
            await make_client("xoxb-wrong", double.api_url).auth_test()
        return str(err.value.response["error"])

    assert asyncio.run(main()) == "invalid_auth"


def test_429_retry_after_is_honoured_by_the_retry_handler(double: SlackDouble) -> None:
    double.rate_limit("chat.postMessage", times=1, retry_after=1)

    async def main() -> str:
        response = await make_client(BOT_TOKEN, double.api_url).chat_postMessage(channel=CHANNEL, text="hi")
        return str(response["ts"])

    ts = asyncio.run(main())
    calls = double.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 1.0  # waited as long as Retry-After said
    assert [m["ts"] for m in double.bot_messages(CHANNEL)] == [ts]


def test_429_past_the_retries_becomes_a_delivery_error_with_retry_after(double: SlackDouble) -> None:
    double.rate_limit("chat.postMessage", times=10, retry_after=1)

    async def main() -> DeliveryError:
        api = SlackApi(make_client(BOT_TOKEN, double.api_url))
        with pytest.raises(SlackApiError) as err:
            await api.post(CHANNEL, "hi", thread=None, key=None)
        return to_delivery_error(err.value, "chat.postMessage")

    err = asyncio.run(main())
    assert err.retry_after == 1.0
    assert not err.permanent
    assert len(double.calls_to("chat.postMessage")) == 3  # the first try and two retries


# -- the channel with a real store -----------------------------------------------------------


class Core:
    """The part of the gateway the channel calls: its store, accept() and decide_approval()."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.accepted: list[Inbound] = []
        self.decisions: list[tuple[str, bool, str]] = []
        self.answers: list[tuple[str, int, int, str]] = []

    async def accept(self, inbound: Inbound) -> Accepted:
        self.accepted.append(inbound)
        return Accepted(Outcome.QUEUED, "ns", "alpha", turn_id="t")

    async def decide_approval(self, approval_id: str, approve: bool, sender: str) -> DecisionReply:
        self.decisions.append((approval_id, approve, sender))
        return DecisionReply("recorded", decided=True)

    async def answer_question(self, question_id: str, index: int, choice: int, sender: str) -> DecisionReply:
        self.answers.append((question_id, index, choice, sender))
        return DecisionReply("answered", decided=True)


class Harness:
    """A SlackChannel on its own event loop thread (like the embedded gateway)."""

    def __init__(self, double: SlackDouble, tmp: Path, **settings: Any) -> None:
        self.double = double
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        values: dict[str, Any] = {
            "run_token_key": RUN_TOKEN_KEY,
            "database_url": f"sqlite:///{tmp}/gateway.db",
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": double.api_url,
        }
        self.settings = GatewaySettings(**(values | settings))
        self.db = Db(self.settings.database_url)
        self.core = Core(self.db)
        try:
            self.channel: SlackChannel = self.call(self._make())
        except BaseException:
            self._stop_loop()
            raise

    async def _make(self) -> SlackChannel:
        channel = SlackChannel(self.settings, self.core, update_interval=0.05)
        await channel.start()
        return channel

    def soon(self, coro: Awaitable[T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        return self.soon(coro).result(timeout)

    def store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.call(self.db.call(fn, *args, **kwargs))

    def close(self) -> None:
        self.call(self.channel.stop())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.db.close()

    # store helpers

    def asked(self, text: str = "question", thread: str | None = None) -> tuple[dict[str, Any], TurnRow]:
        """Someone asks in CHANNEL: the message in Slack, its inbound row, and a queued turn."""
        message = self.double.user_message(CHANNEL, text, thread_ts=thread)
        row, _ = self.store(
            messages.record_inbound,
            dedupe_key=dedupe_key(CHANNEL, message["ts"]),
            channel="slack",
            channel_id=CHANNEL,
            text=text,
            external_id=message["ts"],
            namespace="ns",
            group="alpha",
        )
        turn = self.store(
            turn_store.enqueue,
            "ns",
            "alpha",
            text,
            reply_channel="slack",
            reply_channel_id=CHANNEL,
            reply_thread=thread or message["ts"],
            message_id=row.id,
            message_ref=message["ts"],
        )
        return message, turn

    def reply(self, turn: TurnRow, parts: list[str], is_error: bool = False) -> list[OutboundRow]:
        return self.store(outbound.add_reply, turn, parts, is_error=is_error)

    def deliver(self, row: OutboundRow, maybe_sent: bool = False) -> str | None:
        ts = self.call(self.channel.deliver(row, maybe_sent=maybe_sent))
        self.store(outbound.mark_sent, row.id, ts)
        return ts


@pytest.fixture
def harness(double: SlackDouble, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(double, tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_reply_goes_to_the_thread_with_its_key(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    rows = harness.reply(turn, ["**Hello** & welcome", "part two"])
    for row in rows:
        harness.deliver(row)
    replies = double.thread(CHANNEL, message["ts"])
    assert [m["text"] for m in replies] == ["*Hello* &amp; welcome", "part two"]
    assert [m["metadata"]["event_payload"]["key"] for m in replies] == [f"turn:{turn.id}:0", f"turn:{turn.id}:1"]


def test_error_reply_gets_a_prefix(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    (row,) = harness.reply(turn, ["the run timed out"], is_error=True)
    harness.deliver(row)
    (reply,) = double.thread(CHANNEL, message["ts"])
    assert reply["text"] == ERROR_PREFIX + "the run timed out"


def test_maybe_sent_adopts_the_earlier_message_instead_of_posting_again(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    (row,) = harness.reply(turn, ["the answer"])
    # A process posted it, then died before marking it sent.
    first = harness.call(harness.channel.deliver(row, maybe_sent=False))
    again = harness.call(harness.channel.deliver(row, maybe_sent=True))
    assert again == first
    assert len(double.thread(CHANNEL, message["ts"])) == 1
    assert double.calls_to("chat.update") == []  # same text: nothing to change


def test_maybe_sent_in_a_channel_searches_history(harness: Harness, double: SlackDouble) -> None:
    rows = harness.store(
        outbound.add, key="send:abc", namespace="ns", group="alpha", text="hi", channel="slack", channel_id=CHANNEL
    )
    row = rows[0]
    first = harness.call(harness.channel.deliver(row, maybe_sent=False))
    again = harness.call(harness.channel.deliver(row, maybe_sent=True))
    assert again == first
    assert len(double.bot_messages(CHANNEL)) == 1
    assert double.calls_to("conversations.history")


def test_maybe_sent_with_nothing_found_posts(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    (row,) = harness.reply(turn, ["the answer"])
    harness.deliver(row, maybe_sent=True)
    assert [m["text"] for m in double.thread(CHANNEL, message["ts"])] == ["the answer"]


def test_permanent_and_rate_limit_errors(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    (row,) = harness.reply(turn, ["x"])
    double.fail("chat.postMessage", "not_in_channel")
    with pytest.raises(DeliveryError) as err:
        harness.call(harness.channel.deliver(row, maybe_sent=False))
    assert err.value.permanent
    double.rate_limit("chat.postMessage", times=1, retry_after=1)
    harness.deliver(row)  # retried inside slack_sdk after Retry-After
    assert [c.status for c in double.calls_to("chat.postMessage")] == [200, 429, 200]
    assert len(double.thread(CHANNEL, message["ts"])) == 1


def test_placeholder_deleted_meanwhile_reply_is_posted_anew(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    (row,) = harness.reply(turn, ["final"])
    harness.store(outbound.set_external_id, row.id, "1.999999")  # a placeholder that no longer exists
    harness.deliver(row)
    assert [m["text"] for m in double.thread(CHANNEL, message["ts"])] == ["final"]


def stream_some(harness: Harness, turn: TurnRow, watch: TurnWatch) -> Future[None]:
    return harness.soon(harness.channel.turn_started(turn, watch))


def test_streamed_reply_is_one_message_updated_in_place(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    watch = harness.call(_new_watch())
    task = stream_some(harness, turn, watch)
    thread = message["ts"]
    wait_until(lambda: double.thread(CHANNEL, thread), what="placeholder")
    assert double.thread(CHANNEL, thread)[0]["text"] == PLACEHOLDER

    harness.loop.call_soon_threadsafe(watch.events.put_nowait, TextDelta(text="Working on **it**"))
    wait_until(lambda: double.thread(CHANNEL, thread)[0]["text"] == "Working on *it*", what="streamed text")
    harness.loop.call_soon_threadsafe(watch.events.put_nowait, ToolUse(name="Bash"))
    wait_until(lambda: "_using Bash…_" in double.thread(CHANNEL, thread)[0]["text"], what="tool status")

    # The turn ends: the reply is written (part 0 finishes the placeholder), then delivered.
    rows = harness.reply(turn, ["Working on **it**. Done!", "And a second part."])
    harness.loop.call_soon_threadsafe(_finish, watch, TurnResult(text="done"))
    task.result(30)
    for row in rows:
        harness.deliver(row)
    replies = double.thread(CHANNEL, thread)
    assert [m["text"] for m in replies] == ["Working on *it*. Done!", "And a second part."]
    assert replies[0]["edits"][0] == PLACEHOLDER  # the placeholder became the reply
    assert len(double.calls_to("chat.postMessage")) == 2


def test_streaming_skips_a_reply_that_is_already_final(harness: Harness, double: SlackDouble) -> None:
    _, turn = harness.asked()
    harness.reply(turn, ["fast answer"])
    watch = harness.call(_new_watch())
    stream_some(harness, turn, watch).result(30)
    assert double.calls_to("chat.postMessage") == []


def test_final_reply_during_placeholder_post_is_not_posted_twice(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    release = double.hold("chat.postMessage")
    watch = harness.call(_new_watch())
    streaming = stream_some(harness, turn, watch)
    wait_until(lambda: double.calls_to("chat.postMessage"), what="placeholder post in flight")
    # The final reply lands while the placeholder post is still in flight; delivery starts at once.
    (row,) = harness.reply(turn, ["final text"])
    harness.loop.call_soon_threadsafe(_finish, watch, TurnResult(text="final text"))
    delivering = harness.soon(harness.channel.deliver(row, maybe_sent=False))
    release.set()
    ts = delivering.result(30)
    streaming.result(30)
    replies = double.thread(CHANNEL, message["ts"])
    assert [m["text"] for m in replies] == ["final text"]
    assert replies[0]["ts"] == ts
    assert len(double.calls_to("chat.postMessage")) == 1


def test_late_streaming_update_never_overwrites_the_final_text(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    watch = harness.call(_new_watch())
    streaming = stream_some(harness, turn, watch)
    wait_until(lambda: double.thread(CHANNEL, message["ts"]), what="placeholder")
    (row,) = harness.reply(turn, ["final"])
    harness.deliver(row)
    # Text still arriving after the final reply was sent: no update may follow it.
    harness.loop.call_soon_threadsafe(watch.events.put_nowait, TextDelta(text="stale partial"))
    streaming.result(30)  # it stops by itself: the row is no longer streaming
    assert [m["text"] for m in double.thread(CHANNEL, message["ts"])] == ["final"]


def test_placeholder_of_a_turn_without_reply_text_is_removed(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    watch = harness.call(_new_watch())
    streaming = stream_some(harness, turn, watch)
    wait_until(lambda: double.thread(CHANNEL, message["ts"]), what="placeholder")
    harness.loop.call_soon_threadsafe(_finish, watch, TurnResult(text=""))
    streaming.result(30)
    harness.call(harness.channel.turn_ended(turn, True))  # the gateway wrote no reply rows
    assert double.thread(CHANNEL, message["ts"]) == []
    assert len(double.calls_to("chat.delete")) == 1


def test_status_reactions(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    channel = harness.channel
    harness.call(channel.turn_queued(turn))
    assert double.reactions(CHANNEL, message["ts"]) == ["eyes"]
    watch = harness.call(_new_watch())
    streaming = stream_some(harness, turn, watch)
    wait_until(lambda: "hourglass_flowing_sand" in double.reactions(CHANNEL, message["ts"]), what="working")
    harness.loop.call_soon_threadsafe(_finish, watch, TurnResult(text="ok"))
    streaming.result(30)
    harness.call(channel.turn_ended(turn, True))
    wait_until(lambda: "white_check_mark" in double.reactions(CHANNEL, message["ts"]), what="done")
    assert double.reactions(CHANNEL, message["ts"]) == ["eyes", "white_check_mark"]

    other, failed = harness.asked("again")
    harness.call(channel.turn_queued(failed))
    harness.call(channel.turn_ended(failed, False))
    assert double.reactions(CHANNEL, other["ts"]) == ["eyes", "x"]


def test_reaction_errors_are_logged_not_raised(harness: Harness, double: SlackDouble) -> None:
    message, turn = harness.asked()
    double.fail("reactions.add", "missing_scope")
    with capture_logs() as logs:
        harness.call(harness.channel.turn_queued(turn))  # refused: logged
        harness.call(harness.channel.turn_queued(turn))  # added
        harness.call(harness.channel.turn_queued(turn))  # already_reacted: fine, not a warning
    warnings = [e for e in logs if e["event"] == "slack reaction failed" and e["log_level"] == "warning"]
    assert [e["error"] for e in warnings] == ["missing_scope"]
    assert double.reactions(CHANNEL, message["ts"]) == ["eyes"]


def test_turn_without_a_slack_message_gets_no_reactions(harness: Harness, double: SlackDouble) -> None:
    turn = harness.store(turn_store.enqueue, "ns", "alpha", "from a schedule")
    harness.call(harness.channel.turn_queued(turn))
    harness.call(harness.channel.turn_ended(turn, True))
    assert double.calls_to("reactions.add") == []


# -- Socket Mode -----------------------------------------------------------------------------


def test_socket_mode_delivers_events_and_acks_them(double: SlackDouble, tmp_path: Path) -> None:
    h = Harness(double, tmp_path, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    try:
        wait_until(lambda: double.socket_connected, what="socket mode connection")
        asked = double.user_message(CHANNEL, f"<@{BOT_USER}> over the socket")
        mention = double.event(CHANNEL, asked, kind="app_mention")
        envelope = double.socket_send(mention)
        wait_until(lambda: envelope in double.acks, what="ack")
        assert [i.text for i in h.core.accepted] == ["over the socket"]
        # Slack's redelivery of the same event over the socket: logged, accepted again (the store dedupes).
        with capture_logs() as logs:
            again = double.socket_send(mention, retry_attempt=1)
            wait_until(lambda: again in double.acks, what="ack of the retry")
        assert len(h.core.accepted) == 2
        assert h.core.accepted[0].dedupe_key == h.core.accepted[1].dedupe_key
        assert any(e["event"] == "slack event redelivered" for e in logs)
        assert double.calls_to("apps.connections.open")
    finally:
        h.close()
    assert not double.socket_connected


async def _new_watch() -> TurnWatch:
    return TurnWatch()


def _finish(watch: TurnWatch, event: Any) -> None:
    watch.events.put_nowait(event)
    if not watch.done.done():
        watch.done.set_result(event)


def test_start_with_a_refused_token_fails_clearly(double: SlackDouble, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="PYNCHY_SLACK_BOT_TOKEN"):
        Harness(double, tmp_path, slack_bot_token="xoxb-not-the-token")


def test_start_while_slack_is_unreachable_does_not_fail(tmp_path: Path) -> None:
    class Nowhere:
        api_url = "http://127.0.0.1:9/api/"  # nothing listens on the discard port

    with capture_logs() as logs:
        h = Harness(Nowhere(), tmp_path)  # type: ignore[arg-type]
    try:
        assert any(e["event"] == "slack unreachable at start; retrying in the background" for e in logs)
    finally:
        h.close()


def test_socket_mode_connection_is_retried_until_slack_takes_it(double: SlackDouble, tmp_path: Path) -> None:
    double.fail("apps.connections.open", "internal_error")
    h = Harness(double, tmp_path, slack_app_token=APP_TOKEN, slack_signing_secret=None)
    try:
        wait_until(lambda: double.socket_connected, what="socket mode connection after a retry")
        assert [c.error for c in double.calls_to("apps.connections.open")][:2] == ["internal_error", None]
    finally:
        h.close()
