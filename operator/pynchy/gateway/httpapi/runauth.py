"""Who is calling: a run token (signed by the gateway for one AgentRun) checked against the run
it was issued for. Used by the run API and the model and MCP proxies, each with its own error format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pynchy.errors import PynchyError
from pynchy.gateway.agentruns import AgentRuns, RunEntry
from pynchy.gateway.problems import Handler, RequestError
from pynchy.gateway.routing import Directory, GroupEntry
from pynchy.gateway.tools import Caller
from pynchy.runtoken import RunClaims, TokenError, verify


class RunTokenError(PynchyError):
    """The request carries no valid run token for a run that still exists (HTTP 401)."""


@dataclass(frozen=True)
class RunContext:
    claims: RunClaims
    run: RunEntry
    group: GroupEntry | None

    @property
    def namespace(self) -> str:
        return self.claims.namespace

    @property
    def name(self) -> str:
        return self.claims.run

    @property
    def group_name(self) -> str:
        return self.claims.group

    @property
    def caller(self) -> Caller:
        admin = self.group is not None and self.group.spec.admin
        return Caller(self.claims.namespace, self.claims.group, self.claims.run, admin)


# The caller's run, set by the API's authentication middleware.
RUN_CONTEXT: web.RequestKey[RunContext] = web.RequestKey("run_context", RunContext)


class RunAuth:
    def __init__(self, key: str, runs: AgentRuns, directory: Directory) -> None:
        self._key = key
        self.runs = runs
        self.directory = directory

    async def context(self, token: str | None) -> RunContext:
        """The caller's run, or RunTokenError saying why not."""
        if not token:
            raise RunTokenError("missing run token (Authorization: Bearer <token>)")
        try:
            claims = verify(self._key, token)
        except TokenError as exc:
            raise RunTokenError(str(exc)) from None
        run = await self.runs.fetch(claims.namespace, claims.run)
        if run is None or run.uid != claims.uid:
            raise RunTokenError("the run this token was issued for no longer exists")
        return RunContext(claims, run, self.directory.get(claims.namespace, claims.group))


TokenOf = Callable[[web.Request], str | None]


def live_run_middleware(auth: RunAuth, token_of: TokenOf) -> Any:
    """aiohttp middleware: the request's run token (`token_of`) must name a run that is not over;
    RUN_CONTEXT is set, else 401 with why (the sub-app's error middleware renders it)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            ctx = await auth.context(token_of(request))
            if ctx.run.over:
                raise RunTokenError("the run is over")
        except RunTokenError as exc:
            raise RequestError(401, str(exc)) from None
        request[RUN_CONTEXT] = ctx
        response: web.StreamResponse = await handler(request)
        return response

    return middleware
