"""Slack events in: a bolt AsyncApp, fed by Socket Mode or by POST /slack/events.

Bolt does what Slack asks of a receiver: request signatures (HMAC of the raw body, timestamps older
than 5 minutes refused), the url_verification challenge, ssl_check, and acknowledging. Events are
processed *before* the acknowledgement (`process_before_response`): the message is stored and
deduped first (fast: one transaction), so an event acknowledged is never lost, and one that failed
is retried by Slack. Nothing slow happens before the ack: reactions and replies are sent later, by
hooks and by the delivery loop.

Approval buttons (block_actions, actions.py) come the same two ways: Socket Mode `interactive`
envelopes, or form-encoded `payload=<json>` POSTs to the same URL, signed like events. They are
acknowledged first and decided in the background."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from pynchy.aio import LogOnce
from pynchy.gateway.approvalview import ACTION_PATTERN
from pynchy.gateway.channels.base import Accepted, Inbound, Outcome
from pynchy.gateway.questionview import ACTION_PATTERN as QUESTION_PATTERN
from pynchy.gateway.slack.actions import Answer, Decide, Ephemeral, answer_click, parse_click
from pynchy.gateway.slack.inbound import Identity, Skip, parse
from pynchy.logs import get_logger

log = get_logger(__name__)

EVENTS_PATH = "/slack/events"
MAX_INBOUND_CHARS = 40_000
# An Events API request or an interactive payload (which repeats the clicked message) is a few KiB.
MAX_BODY_BYTES = 1 << 20
TOO_LONG_REPLY = (
    "That message is too long for me ({length:,} characters; the limit is {limit:,}). "
    "Please shorten it, or put the text in a file and tell me where it is."
)

Accept = Callable[[Inbound], Awaitable[Accepted]]
WhoAmI = Callable[[], Awaitable[Identity]]  # the app's identity; raises when it cannot be known
Reply = Callable[[str, str, str], Coroutine[Any, Any, None]]  # (channel, thread ts, text)


class EventReceiver:
    """Turns Slack events into `accept()` calls; answers Slack (and bad requests) correctly."""

    def __init__(
        self,
        token: str,
        api_url: str,
        *,
        signing_secret: str | None,
        accept: Accept,
        whoami: WhoAmI,
        reply: Reply,
        decide: Decide,
        ephemeral: Ephemeral,
        background: Callable[[Coroutine[Any, Any, Any]], None],
        answer: Answer | None = None,
    ) -> None:
        self._token = token
        self._accept = accept
        self._whoami = whoami
        self._reply = reply
        self._decide = decide
        self._answer = answer
        self._ephemeral = ephemeral
        self._background = background
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._unhandled_logged: LogOnce[str] = LogOnce()
        self.app = AsyncApp(
            # Bolt's own client is not used for calls (the channel has its own); no token here, the
            # authorize function below supplies it.
            client=AsyncWebClient(base_url=api_url),
            # Who we are comes from the channel's auth.test, cached. Bolt's built-in single-team
            # authorization would acknowledge an event with 200 when auth.test fails (and so lose
            # it); raising instead answers 500, and Slack delivers the event again later.
            authorize=self._authorizer(),
            signing_secret=signing_secret or "",
            # Socket Mode requests are not signed (bolt skips the check for them); HTTP ones must be.
            request_verification_enabled=signing_secret is not None,
            process_before_response=True,
            # Our own filter (inbound.parse) drops every bot's messages, ours included, and logs why.
            ignoring_self_events_enabled=False,
            name="pynchy-slack",
        )
        self.app.event(re.compile(r".*"))(self._on_event)
        self.app.action(re.compile(ACTION_PATTERN))(self._on_action)
        self.app.action(re.compile(QUESTION_PATTERN))(self._on_action)

    def _authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        # A plain function: bolt passes arguments by the names it finds (a bound method's `self` confuses it).
        async def authorize(enterprise_id: str | None, team_id: str | None, user_id: str | None) -> AuthorizeResult:
            me = await self._whoami()
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id,
                user_id=user_id,
                bot_user_id=me.user_id,
                bot_id=me.bot_id,
                bot_token=self._token,
            )

        return authorize

    # -- HTTP (Events API) -----------------------------------------------------------------

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        """POST /slack/events: Events API requests (JSON), and interactive payloads (a form with a
        `payload=<json>` field; bolt parses both, and checks the signature of the raw body)."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            log.warning("slack request refused: body too large", bytes=request.content_length)
            return _error(413, "request body too large")
        raw = await request.text()
        headers = dict(request.headers.items())
        retry = request.headers.get("X-Slack-Retry-Num")
        try:
            bolt_request = AsyncBoltRequest(body=raw, query=request.query_string, headers=headers)  # type: ignore[arg-type]  # bolt annotates headers as dict[str, str | Sequence[str]], invariant
        except ValueError:
            # Unparseable: refuse it, as a bad signature if it is not even signed correctly.
            if not self._signed(raw, request):
                log.warning("slack request with a bad signature rejected", remote=request.remote)
                return _error(401, "invalid signature")
            log.warning("slack request refused: body is not JSON", bytes=len(raw), retry=retry)
            return _error(400, "body is not a JSON Slack payload")
        response = await self.app.async_dispatch(bolt_request)
        if response.status == 401:
            log.warning("slack request with a bad signature rejected", remote=request.remote)
            return _error(401, "invalid signature")
        if response.status == 404:
            kind = bolt_request.body.get("type") if isinstance(bolt_request.body, dict) else None
            log.warning("slack request refused: unsupported payload", type=kind)
            return _error(400, f"unsupported Slack payload type {kind!r}")
        return await to_aiohttp_response(response)

    def _signed(self, raw: str, request: web.Request) -> bool:
        if self._verifier is None:
            return False
        return self._verifier.is_valid(
            body=raw,
            timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
            signature=request.headers.get("X-Slack-Signature", ""),
        )

    # -- the listener (both transports) ----------------------------------------------------

    async def _on_event(self, body: dict[str, Any], context: AsyncBoltContext, request: AsyncBoltRequest) -> None:
        event_id = body.get("event_id")
        retry_num = _header(request, "x-slack-retry-num")
        if retry_num is not None:
            log.info(
                "slack event redelivered",
                event_id=event_id,
                retry=retry_num,
                reason=_header(request, "x-slack-retry-reason"),
            )
        parsed = parse(body, Identity(context.bot_user_id, context.bot_id))
        if isinstance(parsed, Skip):
            self._log_skip(parsed, body)
            return
        if len(parsed.text) > MAX_INBOUND_CHARS:
            log.warning(
                "slack message refused: too long",
                event_id=event_id,
                channel=parsed.channel_id,
                chars=len(parsed.text),
                limit=MAX_INBOUND_CHARS,
            )
            if parsed.mentioned or parsed.direct:
                text = TOO_LONG_REPLY.format(length=len(parsed.text), limit=MAX_INBOUND_CHARS)
                thread = parsed.thread or parsed.external_id
                assert thread is not None  # parse() always sets the message's ts
                self._background(self._reply(parsed.channel_id, thread, text))
            return
        accepted = await self._accept(parsed)
        log_fn = log.debug if accepted.outcome in (Outcome.IGNORED, Outcome.DUPLICATE) else log.info
        log_fn(
            "slack message",
            event_id=event_id,
            key=parsed.dedupe_key,
            outcome=accepted.outcome.value,
            namespace=accepted.namespace,
            group=accepted.group,
            turn=accepted.turn_id,
            reason=accepted.reason or None,
        )

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """An Approve / Deny button: acknowledged at once, decided in the background."""
        await ack()
        click = parse_click(body)
        if isinstance(click, str):
            user = body.get("user")
            log.warning("slack button ignored", reason=click, user=user.get("id") if isinstance(user, dict) else None)
            return
        self._background(answer_click(click, self._decide, self._ephemeral, self._answer))

    def _log_skip(self, skip: Skip, body: dict[str, Any]) -> None:
        if skip.known:
            log.debug("slack event ignored", event_id=body.get("event_id"), reason=skip.reason)
            return
        # An event type the app is subscribed to but does not handle: say so once per type.
        if self._unhandled_logged.first(skip.reason):
            log.info("slack event ignored", event_id=body.get("event_id"), reason=skip.reason)


def _header(request: AsyncBoltRequest, name: str) -> str | None:
    values = request.headers.get(name)
    if not values:
        return None
    return str(values[0])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
