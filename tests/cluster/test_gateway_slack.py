"""The gateway with its Slack channel, against the real API server and the Slack double: signed
Events API requests in, the test playing the agent pod over the run API, replies and reactions out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cluster.gateway_helpers import agent, make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, group, wait_for
from conftest import make_gateway
from doubles.slack import BOT_TOKEN, BOT_USER, OWNER, SIGNING_SECRET, SlackDouble, post_event
from pynchy.gateway.main import EmbeddedGateway
from pynchy.gateway.slack.replies import ERROR_PREFIX
from pynchy.gateway.slack.stream import PLACEHOLDER
from pynchy.kube.controlplane import ControlPlane
from pynchy.store import outbound
from pynchy.store import turns as turn_store

T = TypeVar("T")
CHANNEL = "C0SLACKGW01"


@dataclass
class World:
    plane: ControlPlane
    namespace: str
    slack: SlackDouble
    gateway: EmbeddedGateway
    group: str = "chat"

    @property
    def events_url(self) -> str:
        return self.gateway.url + "/slack/events"

    def ask(self, text: str, *, event_ids: tuple[str, ...] = ("message", "app_mention")) -> dict[str, Any]:
        """The owner mentions the bot in the channel; Slack sends both of its events."""
        message = self.slack.user_message(CHANNEL, f"<@{BOT_USER}> {text}")
        for kind in event_ids:
            r = post_event(self.events_url, self.slack.event(CHANNEL, message, kind=kind))
            assert r.status_code == 200, r.text
        return message

    def store(self, fn: Callable[..., T], *args: Any) -> T:
        """A read of the gateway's store, in one transaction."""
        gw = self.gateway.gateway
        assert gw is not None
        return self.gateway.call(gw.db.call(fn, *args))

    def open_turns(self) -> list[Any]:
        return self.store(turn_store.open_turns, self.namespace, self.group)

    def pod(self) -> httpx.Client:
        """The test as the Group's agent pod, on a run the gateway reuses (it is live)."""
        run = make_run(self.plane, self.namespace, f"{self.group}-run", self.group)
        wait_gateway_sees(self.gateway, self.namespace, "run", f"{self.group}-run")
        return agent(self.gateway, token_for(run, self.group))


@pytest.fixture
def world(control_plane: ControlPlane, namespace: str, gateway_kubeconfig: Path, tmp_path: Path) -> Iterator[World]:
    with SlackDouble() as slack:
        gw = make_gateway(
            gateway_kubeconfig,
            tmp_path,
            "http://127.0.0.1:9",
            "sk-test",
            long_poll_seconds=5,
            namespaces=[namespace],  # Groups of earlier tests (namespaces being deleted) claim the same channel
            owner=OWNER,
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack.api_url,
        ).start()
        try:
            w = World(control_plane, namespace, slack, gw)
            slack_group = group(w.group, channels=[{"slack": {"channelId": CHANNEL}}], trigger={"mode": "mention"})
            apply(control_plane, namespace, slack_group)
            wait_gateway_sees(gw, namespace, "group", w.group)
            assert gw.gateway is not None
            directory = gw.gateway.directory
            wait_for(lambda: directory.lookup("slack", CHANNEL), what="the channel is routed")
            yield w
        finally:
            gw.stop()


def events(client: httpx.Client, turn_id: str, *batch: dict[str, Any]) -> None:
    r = client.post(f"/v1/run/turns/{turn_id}/events", json={"events": list(batch)})
    assert r.status_code == 204, r.text


def result(text: str) -> dict[str, Any]:
    return {"type": "result", "text": text, "sessionId": "sess-1", "numTurns": 1}


def test_mention_is_one_turn_answered_in_its_thread_with_status_reactions(world: World) -> None:
    pod = world.pod()
    asked = world.ask("what is **new**?")
    thread = asked["ts"]
    # Replays: Slack retrying the same event id, with its retry headers.
    replay = world.slack.event(CHANNEL, asked, kind="app_mention", event_id="EvReplayed1")
    for attempt in (None, 1, 2):
        assert post_event(world.events_url, replay, retry_num=attempt).status_code == 200

    (turn,) = world.open_turns()
    assert turn.prompt == "what is **new**?"  # the bot's mention is not part of it
    assert turn.reply_thread == thread
    wait_for(lambda: world.slack.reactions(CHANNEL, thread) == ["eyes"], what="'received' reaction")

    claimed = pod.get("/v1/run/turns/next", params={"wait": 5}).json()
    assert claimed["id"] == turn.id
    wait_for(lambda: world.slack.bot_messages(CHANNEL), what="placeholder in the thread")
    wait_for(lambda: "hourglass_flowing_sand" in world.slack.reactions(CHANNEL, thread), what="'working'")
    (placeholder,) = world.slack.thread(CHANNEL, thread)
    assert placeholder["text"] == PLACEHOLDER

    events(pod, turn.id, {"type": "text_delta", "text": "Nothing much, "})
    wait_for(lambda: world.slack.thread(CHANNEL, thread)[0]["text"] == "Nothing much,", what="streamed text in place")
    events(pod, turn.id, {"type": "text_delta", "text": "**all quiet**."}, result("Nothing much, **all quiet**."))

    wait_for(lambda: world.slack.thread(CHANNEL, thread)[0]["text"] == "Nothing much, *all quiet*.", what="final reply")
    wait_for(lambda: world.slack.reactions(CHANNEL, thread) == ["eyes", "white_check_mark"], what="'done'")
    replies = world.slack.thread(CHANNEL, thread)
    assert len(replies) == 1  # the placeholder became the reply: nothing posted twice
    assert replies[0]["ts"] == placeholder["ts"]
    assert replies[0]["metadata"]["event_payload"]["key"] == f"turn:{turn.id}:0"
    assert world.slack.channel_messages(CHANNEL)[0]["ts"] == thread  # nothing top level but the question
    assert len(world.open_turns()) == 0


def test_long_reply_is_split_and_rate_limits_are_waited_out(world: World) -> None:
    pod = world.pod()
    asked = world.ask("write a lot")
    turn = pod.get("/v1/run/turns/next", params={"wait": 5}).json()
    wait_for(lambda: world.slack.bot_messages(CHANNEL), what="placeholder")
    # Slack answers 429 to the next three posts: slack_sdk retries twice after Retry-After, then the
    # delivery loop waits the Retry-After it reports and sends again.
    world.slack.rate_limit("chat.postMessage", times=3, retry_after=1)
    long_reply = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))
    events(pod, turn["id"], result(long_reply))

    def parts() -> list[dict[str, Any]]:
        return world.slack.thread(CHANNEL, asked["ts"])

    wait_for(lambda: len(parts()) >= 3 and not parts()[0]["text"].startswith("_"), timeout=60, what="all parts")
    texts = [m["text"] for m in parts()]
    assert all(len(t) <= 4000 for t in texts)
    assert " ".join(" ".join(texts).split()) == " ".join(long_reply.split())
    keys = [m["metadata"]["event_payload"]["key"] for m in parts()]
    assert keys == [f"turn:{turn['id']}:{i}" for i in range(len(keys))]
    statuses = [c.status for c in world.slack.calls_to("chat.postMessage")]
    assert statuses.count(429) == 3
    assert statuses[-1] == 200
    rows = world.store(outbound.for_group, world.namespace, world.group)
    wait_for(
        lambda: all(r.state == outbound.SENT for r in world.store(outbound.for_group, world.namespace, world.group)),
        what="every part marked sent",
    )
    assert len(rows) == len(keys)


def test_bad_requests_are_refused_and_the_gateway_keeps_serving(world: World) -> None:
    message = world.slack.user_message(CHANNEL, f"<@{BOT_USER}> hello")
    body = world.slack.event(CHANNEL, message, kind="app_mention")
    assert post_event(world.events_url, body, secret="forged-secret").status_code == 401
    stale = post_event(world.events_url, body, timestamp=1_600_000_000)
    assert stale.status_code == 401
    malformed = post_event(world.events_url, '{"type": "event_callback", "event": ')
    assert malformed.status_code == 400
    assert "JSON" in malformed.json()["error"]
    unknown = world.slack.event(CHANNEL, {"ts": "1.1", "user": OWNER}, kind="reaction_added")
    assert post_event(world.events_url, unknown).status_code == 200  # acknowledged, ignored
    assert world.open_turns() == []

    assert post_event(world.events_url, body).status_code == 200
    (turn,) = world.open_turns()
    assert turn.prompt == "hello"


def test_oversized_message_gets_a_short_reply_and_no_turn(world: World) -> None:
    message = world.slack.user_message(CHANNEL, f"<@{BOT_USER}> " + "y" * 40_001)
    r = post_event(world.events_url, world.slack.event(CHANNEL, message, kind="app_mention"))
    assert r.status_code == 200
    wait_for(lambda: world.slack.thread(CHANNEL, message["ts"]), what="the refusal in the thread")
    (reply,) = world.slack.thread(CHANNEL, message["ts"])
    assert "too long" in reply["text"]
    assert world.open_turns() == []


def test_failed_run_gets_a_short_failure_reply(world: World) -> None:
    pod = world.pod()
    asked = world.ask("do the impossible")
    turn = pod.get("/v1/run/turns/next", params={"wait": 5}).json()
    wait_for(lambda: world.slack.bot_messages(CHANNEL), what="placeholder")
    events(pod, turn["id"], {"type": "error", "message": "the model API is unreachable"})
    wait_for(lambda: world.slack.thread(CHANNEL, asked["ts"])[0]["text"].startswith(ERROR_PREFIX), what="failure reply")
    (reply,) = world.slack.thread(CHANNEL, asked["ts"])
    assert reply["text"] == ERROR_PREFIX + "the model API is unreachable"
    wait_for(lambda: world.slack.reactions(CHANNEL, asked["ts"]) == ["eyes", "x"], what="'failed' reaction")


def test_messages_not_for_the_agent_are_left_alone(world: World) -> None:
    chatter = world.slack.user_message(CHANNEL, "just people talking")
    assert post_event(world.events_url, world.slack.event(CHANNEL, chatter)).status_code == 200
    stranger = world.slack.user_message(CHANNEL, f"<@{BOT_USER}> let me in", user="U0STRANGER1")
    assert post_event(world.events_url, world.slack.event(CHANNEL, stranger, kind="app_mention")).status_code == 200
    bot = world.slack.user_message(CHANNEL, f"<@{BOT_USER}> from a bot", user="U0OTHERBOT1")
    bot_event = world.slack.event(CHANNEL, bot, kind="app_mention")
    bot_event["event"]["bot_id"] = "B0OTHERBOT1"
    assert post_event(world.events_url, bot_event).status_code == 200
    assert world.open_turns() == []
    assert world.slack.calls_to("reactions.add") == []
    assert world.slack.calls_to("chat.postMessage") == []
