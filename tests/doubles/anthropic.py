"""A scripted Anthropic Messages API server: the real Claude Code CLI runs against it.

    with ScriptedModel() as model:
        model.on_prompt("make notes", tool_use("Write", file_path="/tmp/x/notes.txt", content="hi"))
        model.after_tool("Write", "Done, notes written.", usage=Usage(input_tokens=30, output_tokens=7))
        env = {"ANTHROPIC_BASE_URL": model.base_url, "ANTHROPIC_API_KEY": "...", ...}
        ...  # run the CLI (claude_agent_sdk.query / ClaudeSDKClient / pynchy-agent)
        model.main_requests[-1].tool_results()  # -> [ToolResultSeen(name="Write", ...)]

Matching: every *main-conversation* request (one that offers the model tools) is answered by the
first step of the script, in script order, that is not used up and whose condition holds:

* `on_prompt(x, ...)`   - the text given since the model's last answer contains x: a new prompt, or a
                          message the CLI slipped into a running turn (see `new_input_text`);
* `after_tool(y, ...)`  - the last user message carries a tool_result for a tool named y;
* `next_reply(...)`     - any main request.

Side requests the CLI makes on its own (the session title, and anything else without tools) never
consume steps; they get a default answer (JSON built from the requested schema, or text "ok"), as
does a main request no step matches. Everything is recorded in `requests`. Replies are instant
unless a step has a `gate` (a threading.Event the answer waits for) - handy to keep a turn running -
or a `hold` (the stream starts, then waits for it: a call to cut off in the middle).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .server import ThreadedServer

log = logging.getLogger(__name__)

Block = dict[str, Any]
MID_TURN_MARKER = "The user sent a new message"  # how Claude Code slips a prompt into a running turn


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def wire(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        }


def text(value: str) -> Block:
    return {"type": "text", "text": value}


def tool_use(name: str, input: dict[str, Any] | None = None, /, *, id: str | None = None, **kwargs: Any) -> Block:
    """A tool_use block; arguments as a dict or as keywords: tool_use("Write", file_path=..., content=...)."""
    args = dict(input or {}, **kwargs)
    return {"type": "tool_use", "id": id or f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": args}


@dataclass
class Step:
    """One scripted answer and the condition under which it is given."""

    blocks: list[Block]
    usage: Usage = field(default_factory=Usage)
    prompt_contains: str | None = None
    tool_result_for: str | None = None
    times: int = 1
    gate: threading.Event | None = None
    # Streamed answers only: message_start (with the input tokens) is sent, `streaming` set, and the
    # rest waits for `hold` - a call the caller can be cut off from in the middle.
    hold: threading.Event | None = None
    streaming: threading.Event = field(default_factory=threading.Event)
    error: tuple[int, str, str] | None = None  # (HTTP status, Anthropic error type, message)
    stop_reason: str | None = None
    used: int = 0

    @property
    def exhausted(self) -> bool:
        return self.used >= self.times

    def matches(self, body: dict[str, Any]) -> bool:
        if self.prompt_contains is not None:
            return self.prompt_contains in new_input_text(body)
        if self.tool_result_for is not None:
            return any(r.name == self.tool_result_for for r in tool_results(body))
        return True


@dataclass(frozen=True)
class ToolResultSeen:
    name: str | None
    tool_use_id: str
    text: str
    is_error: bool


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    side: bool = False
    step: Step | None = None

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def new_input(self) -> str:
        return new_input_text(self.body) if isinstance(self.body, dict) else ""

    @property
    def last_user_text(self) -> str:
        last = last_user_message(self.body) if isinstance(self.body, dict) else None
        return user_text(last) if last else ""

    def tool_results(self) -> list[ToolResultSeen]:
        return tool_results(self.body) if isinstance(self.body, dict) else []

    @property
    def tool_names(self) -> list[str]:
        tools = self.body.get("tools") if isinstance(self.body, dict) else None
        return [t.get("name", "") for t in tools or []]

    @property
    def system_text(self) -> str:
        system = self.body.get("system") if isinstance(self.body, dict) else None
        if isinstance(system, str):
            return system
        return "\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict))


# -- reading request bodies --------------------------------------------------------------------


def _blocks(message: dict[str, Any]) -> list[Block]:
    content = message.get("content")
    if isinstance(content, str):
        return [text(content)]
    return [b for b in content or [] if isinstance(b, dict)]


def last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in reversed(body.get("messages") or []) if m.get("role") == "user"), None)


def new_input_text(body: dict[str, Any]) -> str:
    """Text the model is given since its last answer: the user's prompt, or a message Claude Code slips
    into a running turn ("The user sent a new message while you were working: ...") as a system
    message or a reminder in a tool result. Other system messages (the environment, ...) are left out."""
    messages = body.get("messages") or []
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    parts = []
    for message in messages[last_assistant + 1 :]:
        if message.get("role") == "user":
            parts.append(user_text(message))
            # ... or inside a tool result, as a system reminder (MCP tools).
            parts += [t for b in tool_results_in(message) if MID_TURN_MARKER in (t := _result_text(b))]
        elif message.get("role") == "system":
            body_text = user_text(message)
            if MID_TURN_MARKER in body_text:
                parts.append(body_text)
    return "\n".join(parts)


def user_text(message: dict[str, Any]) -> str:
    return "\n".join(b.get("text", "") for b in _blocks(message) if b.get("type") == "text")


def tool_results_in(message: dict[str, Any]) -> list[Block]:
    return [b for b in _blocks(message) if b.get("type") == "tool_result"]


def _result_text(block: Block) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(c.get("text", "") for c in content or [] if isinstance(c, dict))


def tool_results(body: dict[str, Any]) -> list[ToolResultSeen]:
    """The tool results in the last user message, each with the name of the tool that was called."""
    last = last_user_message(body)
    if last is None:
        return []
    names = {
        b.get("id"): b.get("name")
        for m in body.get("messages") or []
        if m.get("role") == "assistant"
        for b in _blocks(m)
        if b.get("type") == "tool_use"
    }
    return [
        ToolResultSeen(
            names.get(b.get("tool_use_id")), b.get("tool_use_id", ""), _result_text(b), bool(b.get("is_error"))
        )
        for b in tool_results_in(last)
    ]


def is_side_request(body: dict[str, Any]) -> bool:
    """The CLI's own small requests (session title, ...) offer no tools; the conversation always does."""
    return not body.get("tools")


def value_for_schema(schema: dict[str, Any]) -> Any:
    """A minimal value of a JSON schema (for structured-output side requests such as the title)."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: value_for_schema(v) for k, v in props.items() if k in (schema.get("required") or props)}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    return "ok"


# -- the server ----------------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _chunks(value: str, size: int = 12) -> Iterator[str]:
    """Split text into a few deltas at word boundaries, like the real API does (lossless)."""
    current = ""
    for word in re.findall(r"\s*\S+\s*|\s+", value):
        if current and len(current) + len(word) > size:
            yield current
            current = ""
        current += word
    if current:
        yield current


class ScriptedModel(ThreadedServer):
    """The scripted server; a context manager. See the module docstring."""

    name = "scripted-model"

    def __init__(self, default_text: str = "ok", default_usage: Usage | None = None) -> None:
        super().__init__()
        self.default_text = default_text
        self.default_usage = default_usage or Usage()
        self.steps: list[Step] = []
        self._requests: list[RecordedRequest] = []

    # -- scripting --

    def add(self, step: Step) -> Step:
        with self._lock:
            self.steps.append(step)
        return step

    def on_prompt(self, contains: str, *blocks: Block | str, **options: Any) -> Step:
        return self.add(Step(_as_blocks(blocks), prompt_contains=contains, **options))

    def after_tool(self, tool_name: str, *blocks: Block | str, **options: Any) -> Step:
        return self.add(Step(_as_blocks(blocks), tool_result_for=tool_name, **options))

    def next_reply(self, *blocks: Block | str, **options: Any) -> Step:
        return self.add(Step(_as_blocks(blocks), **options))

    # -- inspecting --

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return [r for r in self.message_requests if not r.side]

    @property
    def unused_steps(self) -> list[Step]:
        with self._lock:
            return [s for s in self.steps if not s.exhausted]

    # -- handling --

    def _claim(self, body: dict[str, Any]) -> Step | None:
        with self._lock:
            for step in self.steps:
                if not step.exhausted and step.matches(body):
                    step.used += 1
                    return step
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        record = RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers), body)
        with self._lock:
            self._requests.append(record)

        if request.path == "/v1/messages" and request.method == "POST" and isinstance(body, dict):
            record.side = is_side_request(body)
            record.step = None if record.side else self._claim(body)
            return await self._messages(request, body, record.step)
        if request.path == "/v1/messages/count_tokens" and request.method == "POST":
            return web.json_response({"input_tokens": max(1, len(raw) // 4)})
        if request.path == "/api/hello":  # the CLI's connection warm-up; the answer is ignored
            return web.Response(status=200)
        log.warning("scripted model: unknown request %s %s", request.method, request.path)
        return _error(404, "not_found_error", f"{request.method} {request.path} is not served by the scripted model")

    async def _messages(self, request: web.Request, body: dict[str, Any], step: Step | None) -> web.StreamResponse:
        if step is not None and step.gate is not None:
            await self._wait_for(step.gate)
        if step is not None and step.error is not None:
            return _error(*step.error)
        if step is not None:
            # A callable block is rendered from the request (e.g. a path under the agent's cwd).
            blocks = [dict(b(body)) if callable(b) else dict(b) for b in step.blocks]
            usage = step.usage
        else:
            blocks, usage = [self._default_block(body)], self.default_usage
        has_tool = any(b["type"] == "tool_use" for b in blocks)
        stop_reason = (step.stop_reason if step else None) or ("tool_use" if has_tool else "end_turn")
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-scripted"),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage.wire(),
        }
        if not body.get("stream"):
            return web.json_response(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for n, chunk in enumerate(_stream_events(message, usage)):
            await response.write(chunk)
            if n == 0 and step is not None and step.hold is not None:
                step.streaming.set()
                await self._wait_for(step.hold)
        await response.write_eof()
        return response

    def _default_block(self, body: dict[str, Any]) -> Block:
        fmt = (body.get("output_config") or {}).get("format") or {}
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
            return text(json.dumps(value_for_schema(fmt["schema"])))
        return text(self.default_text)


def working_directory(body: dict[str, Any]) -> str | None:
    """The cwd Claude Code states in its environment section ("Primary working directory: /x"), which
    recent CLIs send as a system-role message and older ones inside the system prompt."""
    texts: list[str] = []
    for part in [body.get("system"), *[m.get("content") for m in body.get("messages") or []]]:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, list):
            texts.extend(b.get("text", "") for b in part if isinstance(b, dict))
    match = re.search(r"Primary working directory:\s*(\S+)", "\n".join(texts))
    return match.group(1) if match else None


def write_in_cwd(relative: str, content: str) -> Callable[[dict[str, Any]], Block]:
    """A Write tool_use for `relative` under the agent's working directory, resolved per request."""

    def render(body: dict[str, Any]) -> Block:
        cwd = working_directory(body)
        if cwd is None:
            raise ValueError("the request's system prompt names no working directory")
        return tool_use("Write", file_path=f"{cwd.rstrip('/')}/{relative}", content=content)

    return render


def _as_blocks(blocks: tuple[Block | str, ...]) -> list[Block]:
    return [text(b) if isinstance(b, str) else b for b in blocks]


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def _stream_events(message: dict[str, Any], usage: Usage) -> Iterator[bytes]:
    start = dict(message, content=[], stop_reason=None, usage=dict(usage.wire(), output_tokens=1))
    yield _sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": text("")}
            )
            for piece in _chunks(block["text"]):
                delta = {"type": "text_delta", "text": piece}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        elif block["type"] == "tool_use":
            empty = dict(block, input={})
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})
            encoded = json.dumps(block["input"])
            half = len(encoded) // 2
            for piece in (encoded[:half], encoded[half:]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        else:
            raise ValueError(f"the scripted model cannot stream a {block['type']!r} block")
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage.wire()})
    yield _sse("message_stop", {"type": "message_stop"})
