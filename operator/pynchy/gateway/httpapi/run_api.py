"""The run API: what an agent pod's runner calls (turns by long-poll, their events, the session,
Pynchy's tools). Every route is authenticated by the run token, in one middleware."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.orm import Session

from pynchy.aio import TaskSet
from pynchy.api.validation import format_errors
from pynchy.gateway.agentruns import AgentRuns
from pynchy.gateway.db import Db
from pynchy.gateway.httpapi.runauth import RUN_CONTEXT, RunAuth, RunContext, RunTokenError
from pynchy.gateway.lifecycle import TurnLifecycle
from pynchy.gateway.problems import Handler, RequestError, api_error_body, bearer, parse, problems
from pynchy.gateway.questions import Questions
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.toolgate import ToolGate
from pynchy.gateway.tools import ToolError, Tools
from pynchy.gateway.turnhub import TurnHub
from pynchy.gateway.usage import usage_row
from pynchy.logs import get_logger
from pynchy.store import records
from pynchy.store import turns as turn_store
from pynchy_agent.protocol import (
    ASK_USER,
    MAX_WAIT_SECONDS,
    AskUserArgs,
    EventBatch,
    PermissionAnswer,
    PermissionRequest,
    RunInfo,
    SessionReport,
    ToolCall,
    ToolResult,
    ToolUse,
    Turn,
    TurnFailed,
    TurnResult,
)
from pynchy_agent.toolpolicy import PYNCHY_SERVER, arguments_digest, policy_name

log = get_logger(__name__)


def authenticate(auth: RunAuth) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[RUN_CONTEXT] = await auth.context(bearer(request))
        except RunTokenError as exc:
            raise RequestError(401, str(exc)) from None
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


def _live(ctx: RunContext) -> None:
    if ctx.run.over:
        raise RequestError(410, "the run is over")


@dataclass(eq=False)  # a service: identity, not value
class RunApi:
    db: Db
    hub: TurnHub
    runs: AgentRuns
    lifecycle: TurnLifecycle
    tools: Tools
    stats: StatsReporter
    tasks: TaskSet
    long_poll_seconds: float
    gate: ToolGate
    questions: Questions

    def app(self, auth: RunAuth) -> web.Application:
        """The sub-app, to mount at RUN_API_PREFIX."""
        app = web.Application(middlewares=[problems(api_error_body), authenticate(auth)])
        app.router.add_get("", self.info)
        app.router.add_get("/turns/next", self.next_turn)
        app.router.add_post("/turns/{turn}/events", self.events)
        app.router.add_post("/session", self.session)
        app.router.add_post("/tools/{tool}", self.tool)
        app.router.add_post("/permissions", self.permission)
        return app

    async def info(self, request: web.Request) -> web.Response:
        ctx = request[RUN_CONTEXT]
        info = RunInfo(
            run=ctx.name,
            namespace=ctx.namespace,
            group=ctx.group_name,
            admin=ctx.caller.admin,
            context_mode=ctx.run.spec.context_mode,
        )
        return web.json_response(info.wire())

    async def next_turn(self, request: web.Request) -> web.StreamResponse:
        ctx = request[RUN_CONTEXT]
        _live(ctx)
        if not ctx.run.config_current:
            raise RequestError(410, "the Group's configuration changed; this run takes no more turns")
        try:
            wait = min(float(request.query.get("wait", "0")), self.long_poll_seconds, MAX_WAIT_SECONDS)
        except ValueError:
            raise RequestError(400, "wait must be a number of seconds") from None
        bound_only = not ctx.run.serves_group_turns
        if ctx.run.spec.prompt:
            # The run's own prompt is its first turn (idempotent: one row per run uid).
            await self.hub.enqueue(
                ctx.namespace,
                ctx.group_name,
                ctx.run.spec.prompt,
                turn_id=f"run-{ctx.claims.uid}",
                run=ctx.name,
                source=ctx.run.prompt_source,
            )

        def give_way() -> bool:
            # A conversation run takes no more turns while a scheduled run of the Group waits: it ends
            # after its current turn (or at once when idle) so the schedule can start.
            return self.runs.prompt_run_waiting(ctx.namespace, ctx.group_name, ctx.name)

        row = await self.hub.next_turn(
            ctx.namespace,
            ctx.group_name,
            ctx.name,
            bound_only=bound_only,
            wait=0 if bound_only else wait,
            give_way=None if bound_only else give_way,
        )
        if row is None:
            if bound_only:
                raise RequestError(410, "the run's own prompt has been answered; nothing more to do")
            if give_way():
                raise RequestError(410, "a scheduled run of this Group is waiting; this run ends while idle")
            return web.Response(status=204)
        turn = Turn(id=row.id, prompt=row.prompt, sender=row.sender)
        self.lifecycle.started(row)
        # A pending reset goes with the turn handed over now; read when the poll began, it would miss a
        # reset_context called while the poll waited (and reset a later turn instead).
        if not bound_only and await self.db.call(_take_reset, ctx.namespace, ctx.group_name):
            turn = turn.model_copy(update={"reset_session": True})
        log.info("turn delivered", namespace=ctx.namespace, run=ctx.name, turn=turn.id)
        return web.json_response(turn.wire())

    async def events(self, request: web.Request) -> web.Response:
        ctx = request[RUN_CONTEXT]
        turn_id = request.match_info["turn"]
        batch = parse(EventBatch, await request.read(), "event batch")
        row = await self.db.call(turn_store.get, turn_id)
        if row is None or row.delivered_to != ctx.name or row.namespace != ctx.namespace:
            raise RequestError(404, f"turn {turn_id} was not delivered to this run")
        if batch.events:
            self.lifecycle.events_posted(turn_id)
        uses = [e for e in batch.events if isinstance(e, ToolUse)]
        if uses:  # what the agent actually did, built-in tools too
            await self.db.call(_audit_tool_uses, ctx, uses, self.gate.servers(ctx.caller))
        for event in batch.events:
            self.hub.publish(turn_id, event)
            if isinstance(event, TurnResult | TurnFailed):
                await self._finish(ctx, turn_id, event)
        return web.Response(status=204)

    async def _finish(self, ctx: RunContext, turn_id: str, event: TurnResult | TurnFailed) -> None:
        is_error = isinstance(event, TurnFailed) or event.is_error
        text = event.message if isinstance(event, TurnFailed) else event.text
        row = await self.lifecycle.finish(
            ctx.namespace, ctx.group_name, turn_id, ctx.name, text, is_error, ctx.run.spec.deliver
        )
        if row is None:
            return  # already finished (a retried POST): nothing twice
        stats = self.stats.stats(ctx.run)
        if isinstance(event, TurnResult):
            u = event.usage
            row_ = usage_row(ctx.namespace, ctx.group_name, ctx.name, "runner", u, cost_usd=u.cost_usd)
            await self.db.call(records.record_usage, row_)
            stats.add(u, text)
            if event.session_id:
                stats.session_id = event.session_id
        self.tasks.spawn(self.stats.push(ctx.run), name="run-stats")

    async def session(self, request: web.Request) -> web.Response:
        ctx = request[RUN_CONTEXT]
        report = parse(SessionReport, await request.read(), "session report")
        if ctx.run.serves_group_turns:
            await self.db.call(_set_session, ctx.namespace, ctx.group_name, report.session_id)
        stats = self.stats.stats(ctx.run)
        if report.session_id and stats.session_id != report.session_id:
            stats.session_id = report.session_id
            self.tasks.spawn(self.stats.push(ctx.run), name="run-stats")
        return web.Response(status=204)

    async def tool(self, request: web.Request) -> web.Response:
        ctx = request[RUN_CONTEXT]
        _live(ctx)
        call = parse(ToolCall, await request.read() or b"{}", "tool call")
        name = request.match_info["tool"]
        verdict = await self.gate.check(ctx.caller, ctx.claims.uid, f"{PYNCHY_SERVER}/{name}", call.arguments)
        if not verdict.allowed:
            log.info("tool refused by the tool policy", run=ctx.name, tool=name, by=verdict.decided_by)
            raise RequestError(403, verdict.reason)
        if name == ASK_USER:
            return web.json_response((await self._ask_user(ctx, call)).wire())
        try:
            result = await self.tools.call(ctx.caller, name, call.arguments)
        except ToolError as exc:
            log.info("tool refused", run=ctx.name, tool=name, status=exc.status, reason=str(exc))
            raise RequestError(exc.status, str(exc)) from None
        return web.json_response(result.wire())

    async def _ask_user(self, ctx: RunContext, call: ToolCall) -> ToolResult:
        try:
            args = AskUserArgs.model_validate(call.arguments)
        except ValidationError as exc:
            raise RequestError(422, "invalid arguments for ask_user: " + "; ".join(format_errors(exc))) from None
        return await self.questions.ask(ctx.caller, ctx.claims.uid, args, call.call_id)

    async def permission(self, request: web.Request) -> web.Response:
        ctx = request[RUN_CONTEXT]
        _live(ctx)
        ask = parse(PermissionRequest, await request.read(), "permission request")
        try:
            wait = min(float(request.query.get("wait", "0")), self.long_poll_seconds, MAX_WAIT_SECONDS)
        except ValueError:
            raise RequestError(400, "wait must be a number of seconds") from None
        tool = policy_name(ask.tool, self.gate.servers(ctx.caller))
        decision, reason, approval = await self.gate.preflight(
            ctx.caller, ctx.claims.uid, tool, ask.input, tool_use_id=ask.tool_use_id, turn_id=ask.turn_id, wait=wait
        )
        answer = PermissionAnswer(decision=decision, reason=reason, approval=approval)  # type: ignore[arg-type]
        return web.json_response(answer.wire())


def _audit_tool_uses(session: Session, ctx: RunContext, uses: list[ToolUse], servers: list[str]) -> None:
    for use in uses:
        tool = policy_name(use.name, servers)
        records.audit(
            session,
            namespace=ctx.namespace,
            group=ctx.group_name,
            run=ctx.name,
            action=f"tool:{tool}"[:64],
            allowed=True,
            detail=json.dumps({"tool": tool, "argsDigest": arguments_digest(use.input), "decision": "used"}),
        )


def _take_reset(session: Session, namespace: str, group: str) -> bool:
    row = records.group_session(session, namespace, group)
    pending = row.reset_pending
    row.reset_pending = False
    return pending


def _set_session(session: Session, namespace: str, group: str, session_id: str | None) -> None:
    records.group_session(session, namespace, group).session_id = session_id
