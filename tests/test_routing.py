"""Routing rules, magic commands and message splitting: pure functions, no server."""

from __future__ import annotations

import pytest

from pynchy.api.group import GroupSpec
from pynchy.gateway.channels.base import Inbound
from pynchy.gateway.channels.text import split_message
from pynchy.gateway.commands import Command, parse_command
from pynchy.gateway.routing import Directory, GroupEntry, decide, sender_allowed, strip_alias

OWNER = "U0OWNER123"


def entry(**spec: object) -> GroupEntry:
    base: dict[str, object] = {"channels": [{"slack": {"channelId": "C0123ABCD"}}]}
    base.update(spec)
    return GroupEntry("ns", "eng", "uid", "2026-01-01T00:00:00Z", GroupSpec.model_validate(base))


def slack(text: str, *, sender: str = f"slack:{OWNER}", mentioned: bool = False, **kw: object) -> Inbound:
    return Inbound("slack", "C0123ABCD", text, sender, "slack:Ev1", mentioned=mentioned, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("allowed", "sender", "ok"),
    [
        (["owner"], f"slack:{OWNER}", True),
        (["owner"], "owner", True),  # the local channel's user
        (["owner"], "slack:U0SOMEONE1", False),
        (["slack:U0SOMEONE1"], "slack:U0SOMEONE1", True),
        (["*"], "slack:U0ANYBODY1", True),
        ([], "owner", False),
    ],
)
def test_allowed_senders(allowed: list[str], sender: str, ok: bool) -> None:
    assert sender_allowed(allowed, sender, OWNER) is ok


def test_owner_without_configured_owner_matches_only_the_local_user() -> None:
    assert not sender_allowed(["owner"], f"slack:{OWNER}", None)
    assert sender_allowed(["owner"], "owner", None)


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("pynchy, what's up", "what's up"),
        ("@Pynchy: deploy it", "deploy it"),
        ("ghost do it", "do it"),
        ("pynchyx hello", None),  # a word boundary, not a prefix
        ("hello pynchy", None),  # only at the start
    ],
)
def test_aliases(text: str, rest: str | None) -> None:
    assert strip_alias(text, ["pynchy", "ghost"]) == rest


def test_mention_mode_needs_a_mention_alias_or_dm() -> None:
    e = entry(trigger={"mode": "mention", "aliases": ["pynchy"]})
    assert decide(e, slack("hello all"), OWNER).action == "ignore"
    assert decide(e, slack("hello", mentioned=True), OWNER).text == "hello"
    assert decide(e, slack("pynchy, hello"), OWNER).text == "hello"
    assert decide(e, slack("hello", direct=True), OWNER).action == "turn"


def test_always_mode_takes_every_allowed_message() -> None:
    e = entry(trigger={"mode": "always"})
    assert decide(e, slack("hello all"), OWNER).action == "turn"
    refused = decide(e, slack("hello all", sender="slack:U0STRANGER1"), OWNER)
    assert refused.action == "ignore"
    assert "allowedSenders" in refused.reason


def test_commands_need_the_agent_addressed_in_mention_mode() -> None:
    e = entry()
    assert decide(e, slack("reset"), OWNER).action == "ignore"  # someone else's 'reset' in a busy channel
    d = decide(e, slack("reset", mentioned=True), OWNER)
    assert d.action == "command"
    assert d.command == Command.RESET
    assert decide(e, slack("stop", sender="slack:U0STRANGER1", mentioned=True), OWNER).action == "ignore"


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("reset", Command.RESET),
        ("New Session", Command.RESET),
        ("/reset", Command.RESET),
        ("clear  context!", Command.RESET),
        ("stop", Command.STOP),
        ("cancel.", Command.STOP),
        ("pending?", Command.PENDING),
        ("please reset the router", None),
        ("stopwatch", None),
    ],
)
def test_parse_command(text: str, command: Command | None) -> None:
    assert parse_command(text) == command


def test_reply_thread_follows_reply_in() -> None:
    threaded = entry()
    top = slack("q", mentioned=True, external_id="1700000000.000100")
    in_thread = slack("q", mentioned=True, external_id="1700000000.000200", thread="1700000000.000100")
    assert threaded.reply_thread(top) == "1700000000.000100"  # a new thread under the message
    assert threaded.reply_thread(in_thread) == "1700000000.000100"  # the thread it was asked in
    flat = entry(channels=[{"slack": {"channelId": "C0123ABCD", "replyIn": "channel"}}])
    assert flat.reply_thread(in_thread) is None


def group_obj(name: str, created: str, channels: list[dict[str, object]]) -> dict[str, object]:
    meta = {"namespace": "ns", "name": name, "uid": f"uid-{name}", "creationTimestamp": created}
    return {"metadata": meta, "spec": {"channels": channels}}


def test_directory_follows_group_events_and_oldest_wins_a_contested_channel() -> None:
    d = Directory()
    d.on_event("ADDED", group_obj("new", "2026-02-01T00:00:00Z", [{"slack": {"channelId": "C0123ABCD"}}]))
    d.on_event("ADDED", group_obj("old", "2026-01-01T00:00:00Z", [{"slack": {"channelId": "C0123ABCD"}}]))
    d.on_event("ADDED", group_obj("demo", "2026-01-01T00:00:00Z", [{"local": {"name": "demo"}}]))
    assert d.lookup("slack", "C0123ABCD").name == "old"  # type: ignore[union-attr]
    assert d.local_channels() == ["demo"]
    d.on_event("DELETED", group_obj("old", "2026-01-01T00:00:00Z", []))
    assert d.lookup("slack", "C0123ABCD").name == "new"  # type: ignore[union-attr]
    d.on_event("MODIFIED", group_obj("new", "2026-02-01T00:00:00Z", [{"local": {"name": "moved"}}]))
    assert d.lookup("slack", "C0123ABCD") is None
    assert d.lookup("local", "moved").name == "new"  # type: ignore[union-attr]


def test_split_short_text_is_one_part() -> None:
    assert split_message("hello", 100) == ["hello"]


def test_split_prefers_paragraphs_and_respects_the_limit() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 30 for i in range(10))
    parts = split_message(text, 400)
    assert all(len(p) <= 400 for p in parts)
    assert all(p.startswith("paragraph") for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())


def test_split_keeps_code_fences_balanced() -> None:
    text = "intro\n```python\n" + "x = 1\n" * 300 + "```\noutro"
    parts = split_message(text, 500)
    assert len(parts) > 3
    assert all(len(p) <= 500 for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert parts[1].startswith("```python\n")


def test_split_cuts_a_word_longer_than_the_limit() -> None:
    parts = split_message("a" * 250, 100)
    assert "".join(parts) == "a" * 250
    assert all(len(p) <= 100 for p in parts)


def test_a_reply_in_the_agents_thread_needs_no_fresh_mention() -> None:
    e = entry()
    in_thread = slack("and also this", thread="1700000000.000100")
    assert decide(e, in_thread, OWNER).action == "ignore"
    assert decide(e, in_thread, OWNER, agent_thread=True).text == "and also this"
    stranger = slack("me too", thread="1700000000.000100", sender="slack:U0STRANGER1")
    assert decide(e, stranger, OWNER, agent_thread=True).action == "ignore"  # still only allowed senders
