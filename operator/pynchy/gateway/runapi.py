"""HTTP routes of the run API (agent pods) and the model proxy, with run-token authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from pynchy.api.validation import format_errors
from pynchy.gateway.agentruns import config_current, run_over, serves_group_turns
from pynchy.gateway.tools import Caller, ToolError
from pynchy.gateway.usage import ModelUsage
from pynchy.logs import get_logger
from pynchy.runtoken import RunClaims, TokenError, verify
from pynchy.store import records
from pynchy.store import turns as turn_store
from pynchy.store.models import UsageRow
from pynchy_agent.protocol import (
    MAX_WAIT_SECONDS,
    MODEL_PROXY_PREFIX,
    RUN_API_PREFIX,
    ApiError,
    EventBatch,
    RunInfo,
    SessionReport,
    ToolCall,
    Turn,
    TurnFailed,
    TurnResult,
    UsageReport,
)

if TYPE_CHECKING:
    from pynchy.gateway.app import Gateway

log = get_logger(__name__)


def error(status: int, message: str) -> web.Response:
    return web.json_response(ApiError(error=message).wire(), status=status)


@dataclass(frozen=True)
class RunContext:
    claims: RunClaims
    run: dict[str, Any]
    group: dict[str, Any] | None

    @property
    def namespace(self) -> str:
        return self.claims.namespace

    @property
    def name(self) -> str:
        return self.claims.run

    @property
    def caller(self) -> Caller:
        admin = bool(((self.group or {}).get("spec") or {}).get("admin"))
        return Caller(self.claims.namespace, self.claims.group, self.claims.run, admin)


class UnauthorizedError(Exception):
    pass


class RunApi:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._key = gateway.settings.run_token_key.get_secret_value()

    def install(self, app: web.Application) -> None:
        p = RUN_API_PREFIX
        app.router.add_get(p, self.info)
        app.router.add_get(f"{p}/turns/next", self.next_turn)
        app.router.add_post(p + "/turns/{turn}/events", self.events)
        app.router.add_post(f"{p}/session", self.session)
        app.router.add_post(p + "/tools/{tool}", self.tool)
        app.router.add_route("*", MODEL_PROXY_PREFIX + "/{tail:.*}", self.model)
        app.router.add_get("/healthz", self.healthz)

    # -- authentication ----------------------------------------------------------------

    async def _context(self, token: str | None) -> RunContext:
        if not token:
            raise UnauthorizedError("missing run token (Authorization: Bearer <token>)")
        try:
            claims = verify(self._key, token)
        except TokenError as exc:
            raise UnauthorizedError(str(exc)) from None
        run = self.gw.runs.run(claims.namespace, claims.run)
        if run is None:
            # The watch may lag a create by milliseconds; ask the API server before refusing.
            run = await self.gw.api.get("AgentRun", claims.namespace, claims.run)
        if run is None or run["metadata"]["uid"] != claims.uid:
            raise UnauthorizedError("the run this token was issued for no longer exists")
        return RunContext(claims, run, self.gw.runs.group(claims.namespace, claims.group))

    async def _auth(self, request: web.Request) -> RunContext:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        try:
            return await self._context(token)
        except UnauthorizedError as exc:
            raise web.HTTPUnauthorized(
                text=ApiError(error=str(exc)).model_dump_json(by_alias=True), content_type="application/json"
            ) from None

    @staticmethod
    def _live(ctx: RunContext) -> None:
        if run_over(ctx.run):
            raise web.HTTPGone(
                text=ApiError(error="the run is over").model_dump_json(), content_type="application/json"
            )

    # -- run API -----------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def info(self, request: web.Request) -> web.Response:
        ctx = await self._auth(request)
        spec = ctx.run.get("spec") or {}
        info = RunInfo(
            run=ctx.name,
            namespace=ctx.namespace,
            group=ctx.claims.group,
            admin=ctx.caller.admin,
            context_mode=spec.get("contextMode", "group"),
        )
        return web.json_response(info.wire())

    async def next_turn(self, request: web.Request) -> web.StreamResponse:
        ctx = await self._auth(request)
        self._live(ctx)
        if not config_current(ctx.run):
            return error(410, "the Group's configuration changed; this run takes no more turns")
        try:
            wait = min(float(request.query.get("wait", "0")), self.gw.settings.long_poll_seconds, MAX_WAIT_SECONDS)
        except ValueError:
            return error(400, "wait must be a number of seconds")
        spec = ctx.run.get("spec") or {}
        bound_only = not serves_group_turns(ctx.run)
        if spec.get("prompt"):
            # The run's own prompt is its first turn (idempotent: one row per run uid).
            source = "schedule" if (spec.get("trigger") or {}).get("kind") == "Schedule" else "manual"
            await self.gw.hub.enqueue(
                ctx.namespace,
                ctx.claims.group,
                spec["prompt"],
                turn_id=f"run-{ctx.claims.uid}",
                run=ctx.name,
                source=source,
            )

        def give_way() -> bool:
            # A conversation run takes no more turns while a scheduled run of the Group waits: it ends
            # after its current turn (or at once when idle) so the schedule can start.
            return self.gw.runs.prompt_run_waiting(ctx.namespace, ctx.claims.group, ctx.name)

        row = await self.gw.hub.next_turn(
            ctx.namespace,
            ctx.claims.group,
            ctx.name,
            bound_only=bound_only,
            wait=0 if bound_only else wait,
            give_way=None if bound_only else give_way,
        )
        if row is None:
            if bound_only:
                return error(410, "the run's own prompt has been answered; nothing more to do")
            if give_way():
                return error(410, "a scheduled run of this Group is waiting; this run ends while idle")
            return web.Response(status=204)
        turn = Turn(id=row.id, prompt=row.prompt, sender=row.sender)
        self.gw.turn_started(row)
        # A pending reset goes with the turn handed over now; read when the poll began, it would miss a
        # reset_context called while the poll waited (and reset a later turn instead).
        if not bound_only and await self.gw.db.call(_take_reset, ctx.namespace, ctx.claims.group):
            turn = turn.model_copy(update={"reset_session": True})
        log.info("turn delivered", namespace=ctx.namespace, run=ctx.name, turn=turn.id)
        return web.json_response(turn.wire())

    async def events(self, request: web.Request) -> web.Response:
        ctx = await self._auth(request)
        turn_id = request.match_info["turn"]
        try:
            batch = EventBatch.model_validate_json(await request.read())
        except ValidationError as exc:
            return error(422, "invalid event batch: " + "; ".join(format_errors(exc)))
        row = await self.gw.db.call(turn_store.get, turn_id)
        if row is None or row.delivered_to != ctx.name or row.namespace != ctx.namespace:
            return error(404, f"turn {turn_id} was not delivered to this run")
        for event in batch.events:
            self.gw.hub.publish(turn_id, event)
            if isinstance(event, TurnResult | TurnFailed):
                await self._finish(ctx, turn_id, event)
        return web.Response(status=204)

    async def _finish(self, ctx: RunContext, turn_id: str, event: TurnResult | TurnFailed) -> None:
        is_error = isinstance(event, TurnFailed) or event.is_error
        text = event.message if isinstance(event, TurnFailed) else event.text
        deliver = bool((ctx.run.get("spec") or {}).get("deliver", True))
        row = await self.gw.finish_turn(ctx.namespace, ctx.claims.group, turn_id, ctx.name, text, is_error, deliver)
        if row is None:
            return  # already finished (a retried POST): nothing twice
        stats = self.gw.stats.stats(ctx.run)
        if isinstance(event, TurnResult):
            u = event.usage
            await self.gw.db.call(records.record_usage, _usage_row(ctx, "runner", u, cost_usd=u.cost_usd))
            stats.add(u, text)
            if event.session_id:
                stats.session_id = event.session_id
        self.gw.background(self.gw.stats.push(ctx.run))

    async def session(self, request: web.Request) -> web.Response:
        ctx = await self._auth(request)
        try:
            report = SessionReport.model_validate_json(await request.read())
        except ValidationError as exc:
            return error(422, "invalid session report: " + "; ".join(format_errors(exc)))
        if serves_group_turns(ctx.run):
            await self.gw.db.call(_set_session, ctx.namespace, ctx.claims.group, report.session_id)
        stats = self.gw.stats.stats(ctx.run)
        if report.session_id and stats.session_id != report.session_id:
            stats.session_id = report.session_id
            self.gw.background(self.gw.stats.push(ctx.run))
        return web.Response(status=204)

    async def tool(self, request: web.Request) -> web.Response:
        ctx = await self._auth(request)
        self._live(ctx)
        try:
            call = ToolCall.model_validate_json(await request.read() or b"{}")
        except ValidationError as exc:
            return error(422, "invalid tool call: " + "; ".join(format_errors(exc)))
        name = request.match_info["tool"]
        try:
            result = await self.gw.tools.call(ctx.caller, name, call.arguments)
        except ToolError as exc:
            log.info("tool refused", run=ctx.name, tool=name, status=exc.status, reason=str(exc))
            return error(exc.status, str(exc))
        return web.json_response(result.wire())

    # -- model proxy -------------------------------------------------------------------

    async def model(self, request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        token = request.headers.get("x-api-key") or (
            header[7:].strip() if header.lower().startswith("bearer ") else None
        )
        try:
            ctx = await self._context(token)
            if run_over(ctx.run):
                raise UnauthorizedError("the run is over")
        except UnauthorizedError as exc:
            body = {"type": "error", "error": {"type": "authentication_error", "message": str(exc)}}
            return web.json_response(body, status=401)

        async def meter(usage: ModelUsage) -> None:
            await self.gw.db.call(records.record_usage, _usage_row(ctx, "proxy", usage, model=usage.model))

        return await self.gw.proxy.forward(request, request.match_info["tail"], meter)


def _usage_row(ctx: RunContext, source: str, usage: ModelUsage | UsageReport, **extra: Any) -> UsageRow:
    return UsageRow(
        namespace=ctx.namespace,
        group=ctx.claims.group,
        run=ctx.name,
        source=source,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cache_creation_input_tokens=usage.cache_creation_input_tokens,
        **extra,
    )


def _take_reset(session: Any, namespace: str, group: str) -> bool:
    row = records.group_session(session, namespace, group)
    pending = row.reset_pending
    row.reset_pending = False
    return pending


def _set_session(session: Any, namespace: str, group: str, session_id: str | None) -> None:
    records.group_session(session, namespace, group).session_id = session_id
