"""HTTP client of the local channel API (pynchy/chat/protocol.py), synchronous (httpx).

Connection problems are retried where that is safe: a message is re-sent with the same
clientMessageId (the gateway handles it once), an event stream resumes where it broke off."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from pynchy.chat.config import ChatConfig
from pynchy.chat.protocol import (
    CHAT_PREFIX,
    ChannelInfo,
    MessageAccepted,
    MessageBatch,
    PostMessage,
    Response,
    StreamError,
    StreamHeader,
    error_text,
    is_final,
    parse_event,
)
from pynchy.errors import PynchyError

T = TypeVar("T")
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
STREAM_READ_TIMEOUT = 60.0  # the gateway pings every 15 s; silence this long means a dead connection
RETRYABLE_STATUS = {502, 504}  # a proxy in front of a restarting gateway


class ChatError(PynchyError):
    """The gateway refused or could not be reached; the message is for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ChatTimeoutError(ChatError):
    """The deadline passed: the gateway could not be reached, or the answer did not come."""


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def cap(self, seconds: float) -> float:
        left = self.remaining()
        return seconds if left is None else max(0.01, min(seconds, left))


class ChatClient:
    def __init__(self, config: ChatConfig, *, on_retry: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_retry = on_retry or (lambda _msg: None)
        self._http = httpx.Client(
            base_url=config.gateway_url + CHAT_PREFIX,
            headers={"Authorization": f"Bearer {config.token}", "User-Agent": "pynchy-chat"},
            timeout=httpx.Timeout(30.0, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def info(self, channel: str, deadline: Deadline | None = None) -> ChannelInfo:
        return self._retrying(lambda: self._get(f"/{channel}", ChannelInfo), deadline or Deadline(30))

    def send(self, channel: str, text: str, client_message_id: str, deadline: Deadline) -> MessageAccepted:
        """Post a message; on a connection error post it again, with the same id, until the deadline."""
        body = PostMessage(text=text, client_message_id=client_message_id).wire()

        def post() -> MessageAccepted:
            r = self._http.post(f"/{channel}/messages", json=body, timeout=deadline.cap(30))
            return _parse(r, MessageAccepted)

        return self._retrying(post, deadline)

    def messages(self, channel: str, after: int, wait: float) -> MessageBatch:
        """One long-poll for messages after the cursor (no retry: the caller polls again)."""
        try:
            r = self._http.get(
                f"/{channel}/messages",
                params={"after": after, "wait": wait},
                timeout=httpx.Timeout(wait + 30, connect=10),
            )
        except httpx.TransportError as exc:
            raise ChatError(f"cannot reach the gateway at {self.config.gateway_url}: {_describe(exc)}") from None
        return _parse(r, MessageBatch)

    def events(self, channel: str, turn_id: str, deadline: Deadline) -> Iterator[Any]:
        """The turn's events up to and including the final one, across reconnects. A stream that
        restarts (a new gateway process) yields its StreamHeader again, so the caller can tell."""
        stream: str | None = None
        read = 0
        failures = 0
        while True:
            if deadline.passed:
                raise ChatTimeoutError("no answer")
            params: dict[str, Any] = {"from": read, **({"stream": stream} if stream else {})}
            timeout = httpx.Timeout(30.0, connect=10.0, read=deadline.cap(STREAM_READ_TIMEOUT))
            try:
                with self._http.stream(
                    "GET", f"/{channel}/turns/{turn_id}/events", params=params, timeout=timeout
                ) as r:
                    if r.status_code != 200:
                        r.read()
                        if r.status_code not in RETRYABLE_STATUS:
                            raise ChatError(error_text(r.content, r.status_code), r.status_code)
                        raise httpx.RemoteProtocolError(f"HTTP {r.status_code}")
                    for line in r.iter_lines():
                        event = parse_event(line)
                        if event is None:
                            continue
                        failures = 0
                        if isinstance(event, StreamHeader):
                            if event.stream != stream:
                                stream, read = event.stream, 0
                                yield event
                            continue
                        if event.type == "ping":
                            if deadline.passed:
                                raise ChatTimeoutError("no answer")
                            continue
                        read += 1
                        yield event
                        if is_final(event):
                            return
                # The response ended before the final event: the gateway is going away.
                problem = "the stream ended early"
            except StreamError as exc:
                raise ChatError(f"the gateway sent something unexpected: {exc}") from None
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ReadTimeout) and deadline.passed:
                    raise ChatTimeoutError("no answer") from None
                problem = _describe(exc)
            failures += 1
            self._pause(failures, problem, deadline)

    # -- plumbing --------------------------------------------------------------------------

    def _get(self, path: str, model: type[T]) -> T:
        return _parse(self._http.get(path), model)

    def _retrying(self, call: Callable[[], T], deadline: Deadline) -> T:
        failures = 0
        while True:
            try:
                return call()
            except httpx.TransportError as exc:
                problem = _describe(exc)
            except ChatError as exc:
                if exc.status not in RETRYABLE_STATUS:
                    raise
                problem = str(exc)
            failures += 1
            self._pause(failures, problem, deadline)

    def _pause(self, failures: int, problem: str, deadline: Deadline) -> None:
        delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
        left = deadline.remaining()
        if left is not None and left <= delay:
            raise ChatTimeoutError(f"cannot reach the gateway at {self.config.gateway_url}: {problem}")
        self.on_retry(f"{problem}; retrying")
        time.sleep(delay)


def _parse(r: httpx.Response, model: type[T]) -> T:
    if r.status_code != 200:
        raise ChatError(error_text(r.content, r.status_code), r.status_code)
    assert issubclass(model, Response)
    try:
        return model.model_validate_json(r.content)
    except ValueError as exc:
        raise ChatError(f"the gateway answered something unexpected ({exc.__class__.__name__})") from None


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({text})"
    return text
