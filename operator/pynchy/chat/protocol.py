"""The local channel's HTTP API, shared by the gateway (pynchy/gateway/channels/local.py) and
`pynchy chat` (pynchy/chat/client.py). Every request carries `Authorization: Bearer <PYNCHY_CHAT_TOKEN>`.

    GET  /v1/chat                                          -> ChannelList
    GET  /v1/chat/{channel}                                -> ChannelInfo
    POST /v1/chat/{channel}/messages          PostMessage  -> 200 MessageAccepted
    GET  /v1/chat/{channel}/messages?after=<id>&wait=<s>   -> 200 MessageBatch (long-poll)
    GET  /v1/chat/{channel}/turns/{turn}/events?stream=<id>&from=<n>
                                                           -> 200 NDJSON: StreamHeader, then ChatEvent lines

Errors are `{"error": "..."}` (the run API's ApiError) with 401/404/413/422/503.

The event stream: the first line is a `StreamHeader`; then the turn's events in order (a `status`
line each time a run takes the turn, text deltas, tool uses) up to and including the final
`result` or `error` line, after which the response ends. `ping` lines keep an idle stream alive.
An `approval` line (ApprovalAsked) says the turn waits for a person's decision on a tool call:
answer it by sending `approve <id>` or `deny <id>` as a message to the channel (a command; its
reply is the outcome), and keep reading the stream. A `question` line (QuestionAsked): the agent
asks 1-4 questions (ask_user); answer each, in order, with `answer <id> <option number or words>`.
A client that lost the connection asks again with `stream=<the header's id>&from=<events read>`
and gets only what it has not seen (a gateway restart starts a new stream id: events from 0).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from pynchy.errors import PynchyError
from pynchy_agent.protocol import ApiError, TextDelta, ToolUse, TurnFailed, TurnResult

CHAT_PREFIX = "/v1/chat"
MAX_TEXT_CHARS = 100_000  # one message, either way
MAX_BODY_BYTES = 1 << 20
MAX_WAIT_SECONDS = 60
PING_SECONDS = 15.0
NDJSON = "application/x-ndjson"
CLIENT_MESSAGE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"

__all__ = [
    "ApiError",
    "TextDelta",
    "ToolUse",
    "TurnFailed",
    "TurnResult",
]


class ChatWire(BaseModel):
    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def line(self) -> bytes:
        return json.dumps(self.wire(), separators=(",", ":")).encode() + b"\n"


class Request(ChatWire):
    """What a client sends: camelCase, unknown fields refused, no type coercion."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)


class Response(ChatWire):
    """What the gateway answers; a client ignores fields it does not know (newer gateways)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PostMessage(Request):
    text: str = Field(description=f"The message, at most {MAX_TEXT_CHARS} characters.")
    client_message_id: str = Field(
        pattern=CLIENT_MESSAGE_ID,
        description="Chosen by the client (a UUID), the same on every retry of one message: the "
        "gateway handles a message once per id.",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty")
        return value


class MessagesQuery(Request):
    model_config = Request.model_config | ConfigDict(strict=False)

    after: int = Field(default=0, ge=0, description="Cursor: the id of the last message already shown.")
    wait: float = Field(default=0, ge=0, le=MAX_WAIT_SECONDS, description="Seconds to wait for a new message.")


class EventsQuery(Request):
    model_config = Request.model_config | ConfigDict(strict=False)

    stream: str | None = Field(default=None, max_length=64, description="The stream id of an earlier connection.")
    from_: int = Field(default=0, ge=0, alias="from", description="Events of that stream already read.")


class ChannelSummary(Response):
    channel: str
    namespace: str
    group: str


class ChannelList(Response):
    channels: list[ChannelSummary]


class ChannelInfo(ChannelSummary):
    cursor: int = Field(description="Id of the channel's newest message (0: none yet).")
    max_text_chars: int = MAX_TEXT_CHARS


class MessageAccepted(Response):
    outcome: Literal["queued", "follow-up", "duplicate", "command", "ignored"]
    namespace: str | None = None
    group: str | None = None
    turn_id: str | None = Field(default=None, description="The turn answering the message; stream its events.")
    reply: str | None = Field(default=None, description="A command's answer.")
    reason: str | None = Field(default=None, description="Why the message was ignored.")


MessageKind = Literal["reply", "command", "message"]


class ChatMessage(Response):
    """One message the gateway sent to the channel (a turn's reply, a command's answer, a
    send_message note, a scheduled run's reply)."""

    id: int = Field(description="The cursor value of this message.")
    key: str
    kind: MessageKind
    text: str
    is_error: bool = False
    turn_id: str | None = None
    at: datetime | None = None


class MessageBatch(Response):
    messages: list[ChatMessage]
    cursor: int = Field(description="Pass as `after` next time.")


def message_kind(key: str) -> MessageKind:
    if key.startswith("turn:"):
        return "reply"
    if key.startswith("cmd:"):
        return "command"
    return "message"


# -- the event stream ----------------------------------------------------------------------


TurnState = Literal["queued", "running", "done", "failed"]


class StreamHeader(Response):
    type: Literal["stream"] = "stream"
    stream: str = Field(description="Id of this turn's event stream in this gateway process.")
    turn: str
    state: TurnState


class Status(Response):
    """A run took the turn (attempt > 1: again, after the previous run ended without answering)."""

    type: Literal["status"] = "status"
    state: Literal["running"] = "running"
    attempt: int = 1


class Ping(Response):
    type: Literal["ping"] = "ping"


class ApprovalAsked(Response):
    """The turn waits for a person to approve a tool call: send `approve <id>` or `deny <id>`."""

    type: Literal["approval"] = "approval"
    id: str = Field(description="The approval request's id, as typed in `approve <id>`.")
    tool: str = Field(description="The tool the agent wants to use.")
    text: str = Field(description="The request as a person reads it (what, and how to answer).")


class AskedQuestion(Response):
    question: str
    options: list[str]
    allow_free_text: bool = False


class QuestionAsked(Response):
    """The agent asks the user (ask_user): send `answer <id> <n | words>` once per question, in order."""

    type: Literal["question"] = "question"
    id: str = Field(description="The question's id, as typed in `answer <id> …`.")
    questions: list[AskedQuestion]
    text: str = Field(description="The questions as a person reads them.")


ChatEvent = Annotated[
    StreamHeader | Status | Ping | ApprovalAsked | QuestionAsked | TextDelta | ToolUse | TurnResult | TurnFailed,
    Field(discriminator="type"),
]
FINAL_TYPES = {"result", "error"}
_EVENT = TypeAdapter(ChatEvent)
_KNOWN = {"stream", "status", "ping", "approval", "question", "text_delta", "tool_use", "result", "error"}


class StreamError(PynchyError, ValueError):
    """A line of the event stream that is not what the protocol says."""


def parse_event(line: str | bytes) -> Any | None:
    """One NDJSON line → an event; None for a blank line or an event type this client does not
    know (a newer gateway). Malformed lines raise StreamError."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise StreamError(f"not JSON: {line[:200]!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise StreamError(f"an event needs a string 'type': {line[:200]!r}")
    if data["type"] not in _KNOWN:
        return None
    try:
        return _EVENT.validate_python(data)
    except ValidationError as exc:
        raise StreamError(f"invalid {data['type']} event: {exc.errors()[0]['msg']}") from exc


def is_final(event: Any) -> bool:
    return getattr(event, "type", None) in FINAL_TYPES


def error_text(body: bytes | str, status: int) -> str:
    """The message of an error response (ApiError JSON), or its text."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error
    return text.strip()[:500] or f"HTTP {status}"
