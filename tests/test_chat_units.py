"""`pynchy chat` and the local channel's wire models, without a gateway: config resolution, request
validation, NDJSON parsing, rendering, the display state, and a turn feed's replay."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError
from sqlalchemy.orm import Session

from doubles.server import ThreadedServer
from pynchy.api.validation import format_errors
from pynchy.chat.cli import Session as ChatSession
from pynchy.chat.client import ChatClient, ChatTimeoutError, Deadline
from pynchy.chat.config import ChatConfig, ChatConfigError, resolve
from pynchy.chat.protocol import (
    ApprovalAsked,
    ChatMessage,
    EventsQuery,
    MessageBatch,
    MessagesQuery,
    Ping,
    PostMessage,
    Status,
    StreamError,
    StreamHeader,
    TextDelta,
    ToolUse,
    TurnFailed,
    TurnResult,
    error_text,
    is_final,
    message_kind,
    parse_event,
)
from pynchy.chat.render import Style, TurnPrinter, message_block, tool_summary
from pynchy.chat.state import MAX_SHOWN, StateFile, state_dir
from pynchy.gateway.channels.base import Accepted, Inbound, Outcome
from pynchy.gateway.channels.local import LocalChannel, TurnFeed, approval_request_id, final_event
from pynchy.gateway.db import Db
from pynchy.gateway.turnhub import TurnWatch
from pynchy.store import outbound
from pynchy.store import turns as turn_store
from pynchy.store.models import OutboundRow, TurnRow

URL = "http://127.0.0.1:8420"
TOKEN = "chat-token-0123456789abcdef"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- config ---------------------------------------------------------------------------------


def test_config_from_the_file_with_namespace(tmp_path: Path) -> None:
    text = f"# written by `pynchy dev`\ngateway_url: {URL}/\ntoken: {TOKEN}\nnamespace: home\n"
    f = write(tmp_path / "chat.yaml", text)
    cfg = resolve(environ={}, path=f)
    assert (cfg.gateway_url, cfg.token, cfg.namespace, cfg.path) == (URL, TOKEN, "home", f)


def test_config_file_from_PYNCHY_CONFIG(tmp_path: Path) -> None:
    f = write(tmp_path / "elsewhere.yaml", f"gateway_url: {URL}\ntoken: {TOKEN}\n")
    cfg = resolve(environ={"PYNCHY_CONFIG": str(f)})
    assert cfg.path == f
    assert cfg.namespace is None


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    f = write(tmp_path / "chat.yaml", "gateway_url: http://file:1\ntoken: file-token\n")
    env = {"PYNCHY_CHAT_URL": "http://env:2", "PYNCHY_CHAT_TOKEN": "env-token"}
    assert resolve(environ=env, path=f).gateway_url == "http://env:2"
    assert resolve(environ=env, path=f).token == "env-token"
    cfg = resolve(gateway_url="https://flag:3", token="flag-token", environ=env, path=f)
    assert (cfg.gateway_url, cfg.token) == ("https://flag:3", "flag-token")
    # A blank variable is no value: the file's counts.
    assert resolve(environ={"PYNCHY_CHAT_TOKEN": "  "}, path=f).token == "file-token"


def test_missing_file_names_the_file_the_keys_and_the_alternatives(tmp_path: Path) -> None:
    f = tmp_path / "nope" / "chat.yaml"
    with pytest.raises(ChatConfigError) as exc:
        resolve(environ={}, path=f)
    msg = str(exc.value)
    assert str(f) in msg
    assert "gateway_url" in msg
    assert "token" in msg
    assert "does not exist" in msg
    assert "pynchy dev" in msg
    assert "--gateway-url/PYNCHY_CHAT_URL" in msg
    assert "--token/PYNCHY_CHAT_TOKEN" in msg


def test_only_the_missing_key_is_named(tmp_path: Path) -> None:
    f = write(tmp_path / "chat.yaml", f"gateway_url: {URL}\n")
    with pytest.raises(ChatConfigError) as exc:
        resolve(environ={}, path=f)
    msg = str(exc.value)
    assert "no token" in msg
    assert "gateway_url" not in msg
    assert "does not exist" not in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway_url: a: b\n", "not valid YAML (line 1: mapping values are not allowed here)"),
        ("- a\n- b\n", "must be a mapping"),
        (f"gateway_url: {URL}\ntoken: 12345\n", "token: input should be a valid string"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path / "chat.yaml", text)
    with pytest.raises(ChatConfigError) as exc:
        resolve(environ={}, path=f)
    assert expected in str(exc.value)
    assert str(f) in str(exc.value)


def test_a_bad_url_names_where_it_came_from(tmp_path: Path) -> None:
    f = write(tmp_path / "chat.yaml", f"gateway_url: localhost:8420\ntoken: {TOKEN}\n")
    with pytest.raises(ChatConfigError, match=r"chat.yaml: gateway_url: 'localhost:8420' is not an http"):
        resolve(environ={}, path=f)
    with pytest.raises(ChatConfigError, match=r"^PYNCHY_CHAT_URL: 'ftp://x'"):
        resolve(environ={"PYNCHY_CHAT_URL": "ftp://x"}, path=f)


def test_unknown_keys_in_the_file_are_ignored(tmp_path: Path) -> None:
    f = write(tmp_path / "chat.yaml", f"gateway_url: {URL}\ntoken: {TOKEN}\nfuture_key: 1\n")
    assert resolve(environ={}, path=f).token == TOKEN


# -- request and response models ------------------------------------------------------------


def errors_of(model: type, data: object) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        model.model_validate_json(json.dumps(data))  # type: ignore[attr-defined]
    return format_errors(exc.value)


def test_post_message_wire_shape() -> None:
    msg = PostMessage(text="hello", client_message_id="6f1c2d")
    assert msg.wire() == {"text": "hello", "clientMessageId": "6f1c2d"}
    assert PostMessage.model_validate_json(json.dumps(msg.wire())) == msg


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text": "hi"}, "clientMessageId: Field required"),
        ({"clientMessageId": "a1"}, "text: Field required"),
        ({"text": "   ", "clientMessageId": "a1"}, "text: Value error, text must not be empty"),
        ({"text": 5, "clientMessageId": "a1"}, "text: Input should be a valid string"),
        ({"text": "hi", "clientMessageId": 7}, "clientMessageId: Input should be a valid string"),
        ({"text": "hi", "clientMessageId": "has space"}, "clientMessageId: String should match pattern"),
        ({"text": "hi", "clientMessageId": "a" * 101}, "clientMessageId: String should match pattern"),
        ({"text": "hi", "clientMessageId": "a1", "channel": "x"}, "channel: Extra inputs are not permitted"),
    ],
)
def test_post_message_errors_name_the_field(data: dict, expected: str) -> None:
    assert any(line.startswith(expected) for line in errors_of(PostMessage, data)), errors_of(PostMessage, data)


def test_query_models_take_strings_and_check_bounds() -> None:
    q = MessagesQuery.model_validate({"after": "41", "wait": "2.5"})
    assert (q.after, q.wait) == (41, 2.5)
    assert MessagesQuery.model_validate({}).after == 0
    for bad, field in (({"after": "-1"}, "after"), ({"wait": "61"}, "wait"), ({"wait": "soon"}, "wait")):
        with pytest.raises(ValidationError) as exc:
            MessagesQuery.model_validate(bad)
        assert format_errors(exc.value)[0].startswith(field)
    with pytest.raises(ValidationError):
        MessagesQuery.model_validate({"cursor": "1"})
    e = EventsQuery.model_validate({"stream": "abc", "from": "3"})
    assert (e.stream, e.from_) == ("abc", 3)


def test_responses_ignore_fields_a_newer_gateway_adds() -> None:
    batch = MessageBatch.model_validate(
        {"messages": [{"id": 3, "key": "send:x", "kind": "message", "text": "hi", "new": 1}], "cursor": 3, "more": 1}
    )
    assert batch.messages[0].text == "hi"


def test_message_kinds_from_ledger_keys() -> None:
    assert message_kind("turn:abc:0") == "reply"
    assert message_kind("cmd:local:123") == "command"
    assert message_kind("send:9f") == "message"


# -- NDJSON ---------------------------------------------------------------------------------


def test_parse_every_event_type() -> None:
    lines = [
        StreamHeader(stream="s1", turn="t1", state="queued").line(),
        Status(attempt=2).line(),
        Ping().line(),
        TextDelta(text="hel").model_dump_json(by_alias=True).encode(),
        ToolUse(name="Write", input={"file_path": "a.md"}).model_dump_json(by_alias=True).encode(),
        ApprovalAsked(id="k3f9x2", tool="Bash", text="Approval needed").line(),
        TurnResult(text="hello", session_id="s").model_dump_json(by_alias=True).encode(),
        TurnFailed(message="the agent stopped").model_dump_json(by_alias=True).encode(),
    ]
    events = [parse_event(line) for line in lines]
    assert [type(e) for e in events] == [
        StreamHeader, Status, Ping, TextDelta, ToolUse, ApprovalAsked, TurnResult, TurnFailed
    ]  # fmt: skip
    assert events[1].attempt == 2
    assert events[5] == ApprovalAsked(id="k3f9x2", tool="Bash", text="Approval needed")
    assert json.loads(lines[5]) == {"type": "approval", "id": "k3f9x2", "tool": "Bash", "text": "Approval needed"}
    assert events[6].session_id == "s"
    assert [is_final(e) for e in events] == [False] * 6 + [True, True]


def test_parse_blank_and_unknown_lines_are_skipped() -> None:
    assert parse_event("") is None
    assert parse_event(b"  \n") is None
    assert parse_event('{"type": "thinking_delta", "text": "hm"}') is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "needs a string 'type'"),
        ('{"text": "x"}', "needs a string 'type'"),
        ('{"type": "text_delta"}', "invalid text_delta event"),
        ('{"type": "status", "attempt": "first"}', "invalid status event"),
    ],
)
def test_parse_malformed_lines_raise(line: str, expected: str) -> None:
    with pytest.raises(StreamError, match=expected):
        parse_event(line)


def test_error_text_reads_api_errors() -> None:
    assert error_text(b'{"error": "wrong token"}', 401) == "wrong token"
    assert error_text(b"<html>bad gateway</html>", 502) == "<html>bad gateway</html>"
    assert error_text(b"", 504) == "HTTP 504"


# -- rendering ------------------------------------------------------------------------------


def render(*events: object) -> tuple[str, str, TurnPrinter]:
    out, err = io.StringIO(), io.StringIO()
    printer = TurnPrinter(out, err)
    for e in events:
        printer.event(e)
    return out.getvalue(), err.getvalue(), printer


def test_streamed_answer_is_not_printed_twice() -> None:
    out, err, p = render(TextDelta(text="Hel"), TextDelta(text="lo."), TurnResult(text="Hello."))
    assert out == "Hello.\n"
    assert err == ""
    assert p.ok


def test_unstreamed_answer_is_printed_at_the_end() -> None:
    out, _, p = render(StreamHeader(stream="s", turn="t", state="done"), TurnResult(text="Done."))
    assert out == "Done.\n"
    assert p.ok


def test_tool_uses_go_to_stderr_and_break_the_text() -> None:
    out, err, _ = render(
        TextDelta(text="Let me write it."),
        ToolUse(name="Write", input={"file_path": "/w/notes.md", "content": "x"}),
        TextDelta(text="Written."),
        TurnResult(text="Written."),
    )
    assert out == "Let me write it.\n\nWritten.\n"
    assert err == "⏺ Write(/w/notes.md)\n"


def test_final_text_the_deltas_did_not_show_is_added() -> None:
    out, _, _ = render(TextDelta(text="Working on it"), TurnResult(text="The answer is 4."))
    assert out == "Working on it\n\nThe answer is 4.\n"


def test_failures_go_to_stderr_and_are_not_ok() -> None:
    out, err, p = render(TextDelta(text="Sta"), TurnFailed(message="the agent stopped before answering"))
    assert out == "Sta\n"
    assert err == "error: the agent stopped before answering\n"
    assert not p.ok
    _, err, p = render(TurnResult(text="model unauthorised", is_error=True))
    assert err == "error: model unauthorised\n"
    assert not p.ok


def test_a_restarted_attempt_is_announced() -> None:
    out, err, _ = render(Status(attempt=1), TextDelta(text="Half"), Status(attempt=2), TextDelta(text="Whole"))
    assert out == "Half\nWhole"
    assert "attempt 2" in err


def test_an_empty_answer_says_why() -> None:
    out, err, p = render(TurnResult(text=""))
    assert out == ""
    assert "no text in the answer" in err
    assert p.ok


def test_an_approval_request_is_a_note_by_default_and_breaks_the_text() -> None:
    out, err, _ = render(
        TextDelta(text="Let me check."),
        ApprovalAsked(id="k3f9x2", tool="Bash", text="Approval needed [k3f9x2]: the agent wants to use Bash."),
        TextDelta(text="Checked."),
        TurnResult(text="Checked."),
    )
    assert out == "Let me check.\n\nChecked.\n"
    assert err == "Approval needed [k3f9x2]: the agent wants to use Bash.\n"
    asked: list[ApprovalAsked] = []
    printer = TurnPrinter(io.StringIO(), io.StringIO(), asked.append)
    printer.event(ApprovalAsked(id="a", tool="t", text="x"))
    assert asked == [ApprovalAsked(id="a", tool="t", text="x")]


def test_tool_summary_is_short_and_drops_the_mcp_prefix() -> None:
    assert tool_summary(ToolUse(name="mcp__pynchy__send_message", input={"text": "hi"})) == "send_message(hi)"
    assert tool_summary(ToolUse(name="Bash", input={"command": "x" * 200}), width=10) == "Bash(xxxxxxxxx…)"
    assert tool_summary(ToolUse(name="Odd", input={"n": 1})) == 'Odd({"n":1})'


def test_message_block_plain_without_a_terminal() -> None:
    msg = ChatMessage(id=1, key="send:1", kind="message", text="ping\n", is_error=True)
    header, body = message_block(msg, Style(io.StringIO()))
    assert header == "[--:--] message"
    assert body == "error: ping"


# -- display state --------------------------------------------------------------------------


def test_state_lives_under_xdg_state_home(tmp_path: Path) -> None:
    assert state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "pynchy" / "chat"
    assert state_dir({}).parts[-4:] == (".local", "state", "pynchy", "chat")


def test_state_cursor_only_moves_forward_and_shown_merges(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    a = StateFile(URL, "demo", env)
    b = StateFile(URL, "demo", env)  # a second process, same gateway and channel
    assert a.load().cursor is None
    a.update(cursor=10, add=["turn:t1"])
    b.update(cursor=7, add=["cmd:local:c1"])
    state = a.load()
    assert state.cursor == 10
    assert state.shown == ["turn:t1", "cmd:local:c1"]
    assert state.seen("turn:t1:0", "t1")
    assert state.seen("cmd:local:c1", None)
    assert not state.seen("turn:t2:0", "t2")
    a.update(remove=["turn:t1"])
    assert not a.load().seen("turn:t1:0", "t1")
    # Per gateway and channel.
    assert StateFile(URL, "other", env).load().cursor is None
    assert StateFile("http://elsewhere:1", "demo", env).load().cursor is None


def test_state_is_bounded_and_survives_a_corrupt_file(tmp_path: Path) -> None:
    s = StateFile(URL, "demo", {"XDG_STATE_HOME": str(tmp_path)})
    s.update(add=[f"turn:{i}" for i in range(MAX_SHOWN + 20)])
    shown = s.load().shown
    assert len(shown) == MAX_SHOWN
    assert shown[-1] == f"turn:{MAX_SHOWN + 19}"
    s.path.write_text("{not json")
    assert s.load().cursor is None
    assert s.update(cursor=3).cursor == 3


# -- a turn feed (the gateway side of streaming) --------------------------------------------


def turn_row(state: str, reply: str | None = None, is_error: bool = False) -> TurnRow:
    return TurnRow(id="t1", namespace="ns", group="g", prompt="p", state=state, reply=reply, is_error=is_error)


def test_feed_replays_from_any_point_and_ends_at_the_final_event() -> None:
    async def go() -> tuple[list[object], list[object], str]:
        feed = TurnFeed("t1")
        watch = TurnWatch()
        feed.follow(watch)
        watch.events.put_nowait(TextDelta(text="a"))
        watch.events.put_nowait(TextDelta(text="b"))
        changed = feed.changed()
        await asyncio.wait_for(changed, 5)
        while len(feed.events) < 2:
            await asyncio.wait_for(feed.changed(), 5)
        late_reader = list(feed.events[1:])
        watch.events.put_nowait(TurnResult(text="ab"))
        watch.events.put_nowait(TextDelta(text="after the end"))
        while not feed.finished:
            await asyncio.wait_for(feed.changed(), 5)
        return list(feed.events), late_reader, feed.state

    events, late, state = asyncio.run(go())
    assert [type(e) for e in events] == [TextDelta, TextDelta, TurnResult]
    assert late == [TextDelta(text="b")]
    assert state == "done"


def test_feed_finishes_from_the_store_after_what_the_watch_still_holds() -> None:
    async def go() -> list[object]:
        feed = TurnFeed("t1")
        watch = TurnWatch()
        feed.follow(watch)
        # Published but not yet consumed when the store's word arrives: order is kept, no duplicate.
        watch.events.put_nowait(TextDelta(text="x"))
        watch.events.put_nowait(TurnFailed(message="stopped by owner"))
        feed.finish_from(turn_row("failed", "stopped by owner", True))
        feed.finish_from(turn_row("failed", "stopped by owner", True))
        await asyncio.sleep(0)
        return list(feed.events)

    assert asyncio.run(go()) == [TextDelta(text="x"), TurnFailed(message="stopped by owner")]


def test_feed_synthesises_the_final_event_when_no_one_published_it() -> None:
    async def go() -> tuple[list[object], str]:
        feed = TurnFeed("t1")
        feed.follow(TurnWatch())
        feed.finish_from(turn_row("delivered"))  # not ended: nothing happens
        assert not feed.events
        feed.finish_from(turn_row("done", "the answer"))
        return list(feed.events), feed.state

    assert asyncio.run(go()) == ([TurnResult(text="the answer")], "done")
    assert final_event(turn_row("failed", None, True)) == TurnFailed(message="the turn failed")


# -- the client against a gateway double that drops connections ---------------------------


class FlakyGateway(ThreadedServer):
    """Answers /v1/chat like the gateway, but breaks the first connection of each kind mid-way."""

    name = "flaky-chat-gateway"

    def __init__(self, restart_stream: bool = False) -> None:
        super().__init__()
        self.restart_stream = restart_stream
        self.posts: list[dict] = []
        self.event_queries: list[dict[str, str]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            self.posts.append(await request.json())
            if len(self.posts) == 1:
                assert request.transport is not None
                request.transport.close()  # the message arrived; the answer is lost on the way back
                return web.Response()
            return web.json_response({"outcome": "duplicate", "turnId": "t1"})
        self.event_queries.append(dict(request.query))
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        first = len(self.event_queries) == 1
        stream = "s2" if self.restart_stream and not first else "s1"
        lines = [StreamHeader(stream=stream, turn="t1", state="running").line()]
        if first or self.restart_stream:
            lines += [Status().line(), _wire(TextDelta(text="Hel"))]
        if not first:
            lines += [Ping().line(), _wire(TextDelta(text="lo")), _wire(TurnResult(text="Hello"))]
        for line in lines:
            await resp.write(line)
        if first:
            assert request.transport is not None
            request.transport.close()  # the gateway went away mid-answer
            return resp
        await resp.write_eof()
        return resp


def _wire(event: object) -> bytes:
    return event.model_dump_json(by_alias=True).encode() + b"\n"  # type: ignore[attr-defined]


@pytest.fixture
def flaky() -> Iterator[FlakyGateway]:
    server = FlakyGateway().start()
    try:
        yield server
    finally:
        server.stop()


def client_for(server: FlakyGateway) -> tuple[ChatClient, list[str]]:
    retries: list[str] = []
    cfg = ChatConfig(gateway_url=server.base_url, token=TOKEN, namespace=None, path=Path("/nowhere"))
    return ChatClient(cfg, on_retry=retries.append), retries


def test_a_lost_answer_to_a_post_is_retried_with_the_same_message_id(flaky: FlakyGateway) -> None:
    client, retries = client_for(flaky)
    accepted = client.send("demo", "hello", "msg-42", Deadline(30))
    assert (accepted.outcome, accepted.turn_id) == ("duplicate", "t1")
    assert flaky.posts == [{"text": "hello", "clientMessageId": "msg-42"}] * 2
    assert len(retries) == 1


def test_a_broken_event_stream_resumes_after_what_was_read(flaky: FlakyGateway) -> None:
    client, retries = client_for(flaky)
    events = list(client.events("demo", "t1", Deadline(30)))
    assert [e.type for e in events] == ["stream", "status", "text_delta", "text_delta", "result"]
    assert flaky.event_queries == [{"from": "0"}, {"from": "2", "stream": "s1"}]
    assert len(retries) == 1


def test_a_restarted_stream_is_announced_and_read_from_its_start() -> None:
    server = FlakyGateway(restart_stream=True).start()
    try:
        client, _ = client_for(server)
        events = list(client.events("demo", "t1", Deadline(30)))
    finally:
        server.stop()
    assert [e.type for e in events] == [
        "stream", "status", "text_delta",  # the first process, until it went away
        "stream", "status", "text_delta", "text_delta", "result",  # the new one, from its start
    ]  # fmt: skip
    assert [e.stream for e in events if e.type == "stream"] == ["s1", "s2"]
    out, err, printer = render(*events)
    assert out == "Hel\nHello\n"  # what a person saw: the text restarted after a dim note
    assert "the gateway restarted" in err
    assert printer.ok


def test_an_unreachable_gateway_gives_up_at_the_deadline() -> None:
    cfg = ChatConfig(gateway_url="http://127.0.0.1:9", token=TOKEN, namespace=None, path=Path("/nowhere"))
    with pytest.raises(ChatTimeoutError, match=r"cannot reach the gateway at http://127.0.0.1:9: connection failed"):
        ChatClient(cfg).send("demo", "hello", "m1", Deadline(1.5))


# -- approvals: a real LocalChannel and the CLI session ---------------------------------------

APPROVAL = "k3f9x2"
REQUEST = (
    f"Approval needed [{APPROVAL}]: the agent wants to use Bash.\nrm -rf build\n"
    f"Reply `approve {APPROVAL}` or `deny {APPROVAL}` (denied if nobody decides in time)."
)


def test_approval_request_ids_come_from_request_keys_only() -> None:
    assert approval_request_id(f"approval:{APPROVAL}") == APPROVAL
    for key in (f"approval:{APPROVAL}:outcome", "approval:", "approval", "turn:t1:0", f"cmd:approval:{APPROVAL}"):
        assert approval_request_id(key) is None, key


@dataclass(frozen=True)
class Bound:
    namespace: str = "ns"
    name: str = "demo-group"


class OneChannel:
    def lookup(self, kind: str, channel_id: str) -> Bound | None:
        return Bound() if (kind, channel_id) == ("local", "demo") else None

    def local_channels(self) -> list[str]:
        return ["demo"]


class ApprovalGateway(ThreadedServer):
    """A real LocalChannel (SQLite store) behind a stand-in for the gateway's `accept`: a message
    queues a turn that asks for an approval (delivered twice, like a retried delivery); `approve
    <id>` / `deny <id>` is answered as a command and ends the turn, as the real gateway would."""

    name = "approval-chat-gateway"

    def __init__(self, db_path: Path, blocks: bool = True) -> None:
        super().__init__()
        self.db_path = db_path
        self.blocks = blocks
        self.channel: LocalChannel | None = None
        self.db: Db | None = None
        self.watches: dict[str, TurnWatch] = {}
        self.decisions: list[str] = []
        self.asked = threading.Event()
        self.turn_id = ""

    async def _start_site(self, sock: socket.socket) -> None:
        self.db = Db(f"sqlite:///{self.db_path}")
        self.channel = LocalChannel(
            self.db, OneChannel(), self._accept, self._watch, token=SecretStr(TOKEN), long_poll_seconds=0.5
        )
        app = web.Application()
        self.channel.install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        super().stop()
        if self.db is not None:
            self.db.close()

    def _watch(self, turn_id: str) -> TurnWatch:
        watch = self.watches[turn_id] = TurnWatch()
        return watch

    async def _ledger(self, key: str, text: str, turn_id: str | None = None, blocks: str | None = None) -> OutboundRow:
        assert self.db is not None

        def add(session: Session) -> OutboundRow:
            row, _ = outbound.add(
                session,
                key=key,
                namespace="ns",
                group="demo-group",
                text=text,
                channel="local",
                channel_id="demo",
                turn_id=turn_id,
                blocks=blocks,
            )
            return row

        return await self.db.call(add)

    async def _accept(self, inbound: Inbound) -> Accepted:
        assert self.channel is not None
        assert self.db is not None
        word, _, approval = inbound.text.partition(" ")
        if word in ("approve", "deny"):
            self.decisions.append(inbound.text)
            outcome = "Approved" if word == "approve" else "Denied"
            reply = f"[{approval}] {outcome} by owner."
            await self._ledger(f"cmd:{inbound.dedupe_key}", reply)
            done = await self._ledger(
                f"approval:{approval}:outcome", f"[{approval}] Bash: {outcome} by owner.", self.turn_id
            )
            await self.channel.deliver(done, maybe_sent=False)  # an outcome: not a request in the feed
            await self._ledger(outbound.reply_key(self.turn_id), f"The agent was {outcome.lower()}.", self.turn_id)
            self.watches[self.turn_id].events.put_nowait(TurnResult(text=f"The agent was {outcome.lower()}."))
            return Accepted(Outcome.COMMAND, "ns", "demo-group", reply=reply)
        turn = await self.db.call(
            turn_store.enqueue, "ns", "demo-group", inbound.text, reply_channel="local", reply_channel_id="demo"
        )
        self.turn_id = turn.id
        await self.channel.turn_queued(turn)
        watch = self.watches[turn.id]
        watch.events.put_nowait(TextDelta(text="Let me run it."))
        feed = self.channel._feeds[turn.id]
        for _ in range(2000):  # the feed has taken the text before the request is delivered
            if any(isinstance(e, TextDelta) for e in feed.events):
                break
            await asyncio.sleep(0.005)
        data = json.dumps({"approval": {"id": APPROVAL, "tool": "Bash"}}) if self.blocks else None
        request = await self._ledger(f"approval:{APPROVAL}", REQUEST, turn.id, data)
        await self.channel.deliver(request, maybe_sent=False)
        await self.channel.deliver(request, maybe_sent=True)  # delivered again: still one request
        self.asked.set()
        return Accepted(Outcome.QUEUED, "ns", "demo-group", turn_id=turn.id)

    def feed_events(self) -> list[object]:
        assert self.channel is not None
        return list(self.channel._feeds[self.turn_id].events)


@pytest.fixture
def approvals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApprovalGateway]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    server = ApprovalGateway(tmp_path / "gateway.db").start()
    try:
        yield server
    finally:
        server.stop()


def session_for(server: ApprovalGateway) -> tuple[ChatSession, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    cfg = ChatConfig(gateway_url=server.base_url, token=TOKEN, namespace=None, path=Path("/nowhere"))
    return ChatSession(cfg, "demo", out, err), out, err


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "decision"), [("y", "approve"), ("yes", "approve"), ("n", "deny"), ("", "deny")])
def test_an_approval_asked_mid_turn_is_answered_from_the_piped_input(
    approvals: ApprovalGateway, answer: str, decision: str
) -> None:
    session, out, err = session_for(approvals)
    assert session.interactive(io.StringIO(f"run the build\n{answer}\n")) == 0
    assert approvals.decisions == [f"{decision} {APPROVAL}"]
    outcome = "Approved" if decision == "approve" else "Denied"
    first = out.getvalue()
    assert first.startswith(f"Let me run it.\n\nThe agent was {outcome.lower()}.\n\n")
    text = err.getvalue()
    assert f"approval needed [{APPROVAL}]: Bash\n{REQUEST}\nApprove? [y/N] {answer}\n" in text
    assert f"[{APPROVAL}] {outcome} by owner.\n" in text  # the command's answer
    # The feed had the request once, though it was delivered twice (and its outcome after it).
    asked = [e for e in approvals.feed_events() if isinstance(e, ApprovalAsked)]
    assert asked == [ApprovalAsked(id=APPROVAL, tool="Bash", text=REQUEST)]
    # Nothing of it shows again, in this session's arrivals or the next session's catch-up: the
    # request, the command's answer and the turn's reply were shown, and the outcome message is
    # part of that turn (its turn id), whose answer this session showed.
    later, out, _ = session_for(approvals)
    assert later.interactive(io.StringIO("")) == 0
    assert first + out.getvalue() == f"Let me run it.\n\nThe agent was {outcome.lower()}.\n\n"


def test_at_the_end_of_input_an_approval_is_denied(approvals: ApprovalGateway) -> None:
    session, _, err = session_for(approvals)
    assert session.interactive(io.StringIO("run the build\n")) == 0
    assert approvals.decisions == [f"deny {APPROVAL}"]
    assert f"Approve? [y/N] \n[{APPROVAL}] Denied by owner.\n" in err.getvalue()


def test_one_shot_from_a_terminal_asks_there(approvals: ApprovalGateway) -> None:
    session, out, err = session_for(approvals)
    assert session.one_shot("run the build", 30, FakeTty("y\n")) == 0
    assert approvals.decisions == [f"approve {APPROVAL}"]
    assert out.getvalue() == "Let me run it.\n\nThe agent was approved.\n"
    assert "Approve? [y/N] [k3f9x2] Approved by owner.\n" in err.getvalue()  # a terminal echoed the y


def test_one_shot_without_a_terminal_shows_the_request_and_waits_for_another_client(
    approvals: ApprovalGateway,
) -> None:
    approvals.blocks = False  # a gateway that does not say the tool yet

    session, out, err = session_for(approvals)

    def another_client() -> None:
        assert approvals.asked.wait(20)
        deadline = time.monotonic() + 20
        while 'reply "approve' not in err.getvalue():  # the session has shown the request: decide now
            assert time.monotonic() < deadline, "the session never showed the request"
            time.sleep(0.01)
        cfg = ChatConfig(gateway_url=approvals.base_url, token=TOKEN, namespace=None, path=Path("/nowhere"))
        with ChatClient(cfg) as client:
            client.send("demo", f"approve {APPROVAL}", "other-client-1", Deadline(20))

    decider = threading.Thread(target=another_client)
    decider.start()
    stdin = io.StringIO("y\n")
    try:
        assert session.one_shot("run the build", 30, stdin) == 0
    finally:
        decider.join(30)
    assert stdin.read() == "y\n"  # not read
    assert out.getvalue() == "Let me run it.\n\nThe agent was approved.\n"
    text = err.getvalue()
    assert f"approval needed [{APPROVAL}]: a tool\n{REQUEST}\n" in text
    assert (
        f'reply "approve {APPROVAL}" or "deny {APPROVAL}" in pynchy chat demo (or in any channel of the Group)' in text
    )
    assert "Approve?" not in text
