"""A local Slack: the Web API methods the gateway calls, Socket Mode, and signed Events API requests.

Point slack_sdk at it with `base_url=double.api_url`. It keeps channels' messages (threads,
metadata, Block Kit blocks, reactions, edits) and ephemeral messages so tests assert on what people
would see, and records every call. A person clicks a message's button with `click()` (Socket Mode)
or `post_action(url, double.block_actions(...))` (HTTP, signed).
Answers are shaped like Slack's: HTTP 200 with `ok: false` and an `error` for logical failures,
HTTP 429 with `Retry-After` when rate limited (`rate_limit(method, times, retry_after)`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from aiohttp import WSMsgType, web

from doubles.server import ThreadedServer

BOT_TOKEN = "xoxb-1111-2222-pynchytestbot"
APP_TOKEN = "xapp-1-A0PYNCHY01-3333-pynchytestapp"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM_ID = "T0PYNCHY01"
APP_ID = "A0PYNCHY01"
BOT_USER = "U0PYNCHYBOT"
BOT_ID = "B0PYNCHY001"
OWNER = "U0OWNER0001"
MAX_TEXT = 40_000


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int = 200
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Injected:
    times: int
    error: str | None = None  # ok:false with this error
    retry_after: int | None = None  # HTTP 429 with this Retry-After


class _ApiError(Exception):
    """Raised by an _api_* method: Slack answers `{"ok": false, "error": error}`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


class SlackDouble(ThreadedServer):
    name = "slack-double"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self._injected: dict[str, list[_Injected]] = {}
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())
        self._event_ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._ephemerals: list[dict[str, Any]] = []
        self._trigger_ids = itertools.count(1)
        self._holds: dict[str, threading.Event] = {}
        self._holds_after: dict[str, threading.Event] = {}
        self.acks: dict[str, dict[str, Any]] = {}

    # -- for tests: set-up and faults --------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` get HTTP 429 with this Retry-After."""
        with self._lock:
            self._injected.setdefault(method, []).append(_Injected(times, retry_after=retry_after))

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next `times` calls of `method` get `{"ok": false, "error": error}`."""
        with self._lock:
            self._injected.setdefault(method, []).append(_Injected(times, error=error))

    def hold(self, method: str) -> threading.Event:
        """Calls of `method` wait (unanswered) until the returned event is set."""
        release = threading.Event()
        with self._lock:
            self._holds[method] = release
        return release

    def hold_answer(self, method: str) -> threading.Event:
        """Calls of `method` take effect (a message is posted) but their answer waits until the
        returned event is set: the caller cannot know it succeeded (a crash at that moment)."""
        release = threading.Event()
        with self._lock:
            self._holds_after[method] = release
        return release

    def next_ts(self) -> str:
        return f"{self._ts_base}.{next(self._ts):06d}"

    def user_message(
        self, channel: str, text: str, *, user: str = OWNER, thread_ts: str | None = None
    ) -> dict[str, Any]:
        """A person writes in a channel (stored, so replies, reactions and history find it)."""
        msg: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": self.next_ts(), "team": TEAM_ID}
        if thread_ts:
            msg["thread_ts"] = thread_ts
        with self._lock:
            self.messages.setdefault(channel, []).append(msg)
        return dict(msg)

    def event(
        self,
        channel: str,
        message: dict[str, Any],
        *,
        kind: str = "message",
        channel_type: str = "channel",
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The Events API envelope Slack sends for `message` (as a `message` or `app_mention`)."""
        event = {k: v for k, v in message.items() if k != "reactions"}
        event.update(type=kind, channel=channel, event_ts=message["ts"])
        if kind == "message":
            event["channel_type"] = channel_type
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._event_ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER, "is_bot": True}],
            "is_ext_shared_channel": False,
        }

    # -- for tests: what happened ------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(json.dumps(m)) for m in self.messages.get(channel, [])]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """A thread's replies (not its parent), oldest first."""
        return [m for m in self.channel_messages(channel) if m.get("thread_ts") == ts and m["ts"] != ts]

    def bot_messages(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.channel_messages(channel) if m.get("bot_id") == BOT_ID]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.channel_messages(channel) if m["ts"] == ts), None)

    def reactions(self, channel: str, ts: str) -> list[str]:
        msg = self.message(channel, ts) or {}
        return [r["name"] for r in msg.get("reactions", [])]

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """chat.postEphemeral messages (channel, user, text, thread_ts, blocks, message_ts), oldest
        first; only `user`'s with it. They are not part of any channel's history, as in Slack."""
        with self._lock:
            return [dict(e) for e in self._ephemerals if user is None or e["user"] == user]

    def buttons(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """The buttons in a message's blocks (each with its block_id added), in order."""
        msg = self.message(channel, ts) or {}
        found = []
        for block in msg.get("blocks") or []:
            elements = list(block.get("elements") or [])
            if isinstance(block.get("accessory"), dict):
                elements.append(block["accessory"])
            for element in elements:
                if isinstance(element, dict) and element.get("type") == "button":
                    found.append(element | {"block_id": block.get("block_id", "")})
        return found

    # -- for tests: a person clicks a button -------------------------------------------------

    def block_actions(
        self, channel: str, ts: str, action_id: str, *, user: str = OWNER, value: str | None = None
    ) -> dict[str, Any]:
        """The block_actions payload Slack sends when `user` clicks the button `action_id` of the
        message `ts` (it must be there, as in Slack; `value` overrides the button's own)."""
        msg = self.message(channel, ts)
        if msg is None:
            raise AssertionError(f"no message {ts} in {channel}")
        button = next((b for b in self.buttons(channel, ts) if b.get("action_id") == action_id), None)
        if button is None:
            raise AssertionError(f"message {ts} has no button {action_id!r}")
        name = "owner" if user == OWNER else user.lower()
        message = {k: v for k, v in msg.items() if k != "edits"}
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if msg.get("thread_ts"):
            container["thread_ts"] = msg["thread_ts"]
        trigger = f"{next(self._trigger_ids)}.{TEAM_ID}.{uuid.uuid4().hex[:16]}"
        return {
            "type": "block_actions",
            "user": {"id": user, "username": name, "name": name, "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": trigger,
            "team": {"id": TEAM_ID, "domain": "pynchy-test"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": message,
            "state": {"values": {}},
            "response_url": f"{self.base_url}/actions/{TEAM_ID}/{uuid.uuid4().hex}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": button["block_id"],
                    "text": button.get("text", {"type": "plain_text", "text": action_id}),
                    "value": button.get("value", "") if value is None else value,
                    **({"style": button["style"]} if "style" in button else {}),
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def click(self, channel: str, ts: str, action_id: str, *, user: str = OWNER, value: str | None = None) -> str:
        """`user` clicks a button, over Socket Mode: an `interactive` envelope; its envelope id
        (wait for it in `acks`)."""
        return self.socket_send(self.block_actions(channel, ts, action_id, user=user, value=value), kind="interactive")

    # -- Socket Mode -------------------------------------------------------------------------

    @property
    def socket_connected(self) -> bool:
        with self._lock:
            return any(not ws.closed for ws in self._sockets)

    def socket_send(self, body: dict[str, Any], *, retry_attempt: int = 0, kind: str = "events_api") -> str:
        """Send an envelope (`events_api`, or `interactive` for a block_actions payload) to the
        connected app; returns its envelope id."""
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": False,
            "payload": body,
        }
        if kind == "events_api":  # interactive envelopes are not redelivered, so carry no retry fields
            envelope |= {"retry_attempt": retry_attempt, "retry_reason": "timeout" if retry_attempt else ""}
        with self._lock:
            sockets = [ws for ws in self._sockets if not ws.closed]
        if not sockets or self._loop is None:
            raise RuntimeError("no Socket Mode connection")
        asyncio.run_coroutine_threadsafe(sockets[-1].send_json(envelope), self._loop).result(10)
        return envelope_id

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self._lock:
            self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "slack-double", "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }
        )
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "envelope_id" in data:
                with self._lock:
                    self.acks[data["envelope_id"]] = data
        return ws

    # -- the Web API -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/socket":
            return await self._socket(request)
        if not request.path.startswith("/api/"):
            return web.Response(status=404, text="not a Slack API path")
        method = request.path[len("/api/") :]
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                params.update(json.loads(raw))
            else:
                params.update(dict(parse_qsl(raw.decode(), keep_blank_values=True)))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        call = Call(method, params)
        with self._lock:
            self.calls.append(call)
            hold = self._holds.get(method)
        if hold is not None:
            await self._wait_for(hold)
        with self._lock:
            injected = self._take_injected(method)
        if injected is not None and injected.retry_after is not None:
            call.status, call.error = 429, "ratelimited"
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(injected.retry_after)}
            )
        if injected is not None:
            call.error = injected.error
            return web.json_response({"ok": False, "error": injected.error})
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            call.error = "invalid_auth" if token else "not_authed"
            return web.json_response({"ok": False, "error": call.error})
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            call.error = "unknown_method"
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        with self._lock:
            try:
                answer = handler(params)
            except _ApiError as refused:
                answer = {"ok": False, "error": refused.error}
            hold_after = self._holds_after.get(method)
        if hold_after is not None:
            await self._wait_for(hold_after)
        if not answer.get("ok"):
            call.error = answer.get("error")
        headers = {"X-OAuth-Scopes": "app_mentions:read,channels:history,chat:write,im:history,reactions:write"}
        return web.json_response(answer, headers=headers if method == "auth.test" else None)

    def _take_injected(self, method: str) -> _Injected | None:
        queue = self._injected.get(method) or []
        if not queue:
            return None
        head = queue[0]
        head.times -= 1
        if head.times <= 0:
            queue.pop(0)
        return head

    # Each _api_* runs under self._lock, and raises _ApiError for a logical failure.

    def _api_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://pynchy-test.slack.com/",
            "team": "Pynchy Test",
            "user": "pynchy",
            "team_id": TEAM_ID,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def _api_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = str(p.get("user", ""))
        if not user.startswith(("U", "W")):
            raise _ApiError("user_not_found")
        name = "owner" if user == OWNER else user.lower()
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": TEAM_ID,
                "name": name,
                "real_name": name.title(),
                "is_bot": user == BOT_USER,
                "profile": {"display_name": name, "real_name": name.title()},
            },
        }

    @staticmethod
    def _channel(p: dict[str, Any]) -> str:
        channel = p.get("channel")
        if not isinstance(channel, str) or channel[:1] not in ("C", "G", "D"):
            raise _ApiError("channel_not_found")
        return channel

    def _find(self, channel: str, ts: Any) -> dict[str, Any] | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def _target(self, p: dict[str, Any], ts_param: str = "ts", *, not_ours: str | None = None) -> dict[str, Any]:
        """The message a call names. With `not_ours`, only the bot's own messages qualify (that
        error for anyone else's)."""
        msg = self._find(self._channel(p), p.get(ts_param))
        if msg is None:
            raise _ApiError("message_not_found")
        if not_ours is not None and msg.get("bot_id") != BOT_ID:
            raise _ApiError(not_ours)
        return msg

    @staticmethod
    def _metadata(value: Any) -> dict[str, Any] | None:
        if value is None or value == "":
            return None
        return json.loads(value) if isinstance(value, str) else dict(value)

    @staticmethod
    def _blocks(value: Any) -> list[dict[str, Any]] | None:
        """Block Kit blocks as sent: a list (JSON bodies) or its JSON (form bodies); None if absent."""
        if value is None:
            return None
        try:
            blocks = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            raise _ApiError("invalid_blocks_format") from None
        if not isinstance(blocks, list) or not all(isinstance(b, dict) and b.get("type") for b in blocks):
            raise _ApiError("invalid_blocks")
        return json.loads(json.dumps(blocks))

    def _api_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        text = p.get("text") or ""
        blocks = self._blocks(p.get("blocks"))
        if not text and not blocks:
            raise _ApiError("no_text")
        if len(text) > MAX_TEXT:
            raise _ApiError("msg_too_long")
        msg: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "text": text,
            "ts": self.next_ts(),
            "team": TEAM_ID,
        }
        thread = p.get("thread_ts")
        if thread:
            msg["thread_ts"] = str(thread)
            parent = self._find(channel, str(thread))
            if parent is not None:
                parent["thread_ts"] = parent["ts"]
                parent["reply_count"] = parent.get("reply_count", 0) + 1
        if (meta := self._metadata(p.get("metadata"))) is not None:
            msg["metadata"] = meta
        if blocks:
            msg["blocks"] = blocks
        self.messages.setdefault(channel, []).append(msg)
        return {"ok": True, "channel": channel, "ts": msg["ts"], "message": dict(msg)}

    def _api_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = self._target(p, not_ours="cant_update_message")
        text = p.get("text") or ""
        blocks = self._blocks(p.get("blocks"))
        if len(text) > MAX_TEXT:
            raise _ApiError("msg_too_long")
        msg.setdefault("edits", []).append(msg["text"])
        msg["text"] = text
        if (meta := self._metadata(p.get("metadata"))) is not None:
            msg["metadata"] = meta
        # As in Slack: blocks left out are kept; an empty list removes them.
        if blocks is not None:
            msg.setdefault("block_edits", []).append(msg.get("blocks"))
            if blocks:
                msg["blocks"] = blocks
            else:
                msg.pop("blocks", None)
        return {"ok": True, "channel": p["channel"], "ts": msg["ts"], "text": text, "message": dict(msg)}

    def _api_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        user = str(p.get("user") or "")
        if not user.startswith(("U", "W")):
            raise _ApiError("user_not_found")
        text = p.get("text") or ""
        blocks = self._blocks(p.get("blocks"))
        if not text and not blocks:
            raise _ApiError("no_text")
        if len(text) > MAX_TEXT:
            raise _ApiError("msg_too_long")
        ts = self.next_ts()
        self._ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text,
                "thread_ts": str(p["thread_ts"]) if p.get("thread_ts") else None,
                "blocks": blocks,
                "message_ts": ts,
            }
        )
        return {"ok": True, "message_ts": ts}

    def _api_chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = self._target(p, not_ours="cant_delete_message")
        self.messages[p["channel"]].remove(msg)
        return {"ok": True, "channel": p["channel"], "ts": msg["ts"]}

    def _api_reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        name = p.get("name")
        msg = self._target(p, "timestamp")
        reactions = msg.setdefault("reactions", [])
        if any(r["name"] == name for r in reactions):
            raise _ApiError("already_reacted")
        reactions.append({"name": name, "users": [BOT_USER], "count": 1})
        return {"ok": True}

    def _api_reactions_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        name = p.get("name")
        msg = self._target(p, "timestamp")
        reactions = msg.get("reactions", [])
        if not any(r["name"] == name for r in reactions):
            raise _ApiError("no_reaction")
        msg["reactions"] = [r for r in reactions if r["name"] != name]
        return {"ok": True}

    def _page(self, p: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        limit = int(p.get("limit") or 100)
        start = int(p.get("cursor") or 0)
        page = items[start : start + limit]
        with_meta = _truthy(p.get("include_all_metadata"))
        hidden = ("edits", "block_edits")
        shown = [{k: v for k, v in m.items() if k not in hidden and (with_meta or k != "metadata")} for m in page]
        more = start + limit < len(items)
        return {
            "ok": True,
            "messages": shown,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _api_conversations_history(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        oldest = float(p.get("oldest") or 0)
        latest = float(p.get("latest") or "inf")
        top = [
            m
            for m in self.messages.get(channel, [])
            if m.get("thread_ts") in (None, m["ts"]) and oldest <= float(m["ts"]) <= latest
        ]
        return self._page(p, sorted(top, key=lambda m: float(m["ts"]), reverse=True))

    def _api_conversations_replies(self, p: dict[str, Any]) -> dict[str, Any]:
        channel, ts = self._channel(p), p.get("ts")
        in_thread = [m for m in self.messages.get(channel, []) if m["ts"] == ts or m.get("thread_ts") == ts]
        if not in_thread:
            raise _ApiError("thread_not_found")
        return self._page(p, sorted(in_thread, key=lambda m: float(m["ts"])))


# -- the Events API, signed ----------------------------------------------------------------


def signature(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return f"v0={digest}"


def signed_headers(
    body: str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
    }


def post_event(
    url: str,
    body: dict[str, Any] | str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    retry_num: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a signed Events API request to `url` (the gateway's /slack/events), as Slack does."""
    raw = body if isinstance(body, str) else json.dumps(body)
    sent = signed_headers(raw, secret=secret, timestamp=timestamp)
    if retry_num is not None:
        sent["X-Slack-Retry-Num"] = str(retry_num)
        sent["X-Slack-Retry-Reason"] = "http_timeout"
    sent.update(headers or {})
    return httpx.post(url, content=raw.encode(), headers=sent, timeout=30)


FORM = "application/x-www-form-urlencoded"


def action_body(payload: dict[str, Any]) -> str:
    """The form body Slack POSTs for an interactive payload: `payload=<url-encoded JSON>`."""
    return urlencode({"payload": json.dumps(payload)})


def post_action(
    url: str,
    payload: dict[str, Any] | str,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST an interactive payload (e.g. `double.block_actions(...)`) to `url` as Slack does: the
    request URL of the app's interactivity (the gateway's /slack/events), form-encoded, signed. A
    str is sent as the raw form body."""
    raw = payload if isinstance(payload, str) else action_body(payload)
    sent = signed_headers(raw, secret=secret, timestamp=timestamp, content_type=FORM)
    sent.update(headers or {})
    return httpx.post(url, content=raw.encode(), headers=sent, timeout=30)


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; its value. Generous timeouts, no timing assertions."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
