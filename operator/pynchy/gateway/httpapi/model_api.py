"""The model proxy's sub-app: agent pods call it as their Anthropic API with their run token as
the key; errors come back in Anthropic's format so Claude Code shows them as such."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pynchy.gateway.db import Db
from pynchy.gateway.httpapi.runauth import RUN_CONTEXT, RunAuth, RunTokenError
from pynchy.gateway.problems import Handler, RequestError, bearer, problems
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.usage import ModelUsage, usage_row
from pynchy.store import records

_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def authenticate(auth: RunAuth) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            ctx = await auth.context(request.headers.get("x-api-key") or bearer(request))
            if ctx.run.over:
                raise RunTokenError("the run is over")
        except RunTokenError as exc:
            raise RequestError(401, str(exc)) from None
        request[RUN_CONTEXT] = ctx
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


class ModelApi:
    def __init__(self, db: Db, proxy: ModelProxy) -> None:
        self.db = db
        self.proxy = proxy

    def app(self, auth: RunAuth) -> web.Application:
        """The sub-app, to mount at MODEL_PROXY_PREFIX."""
        app = web.Application(middlewares=[problems(anthropic_error_body), authenticate(auth)])
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.StreamResponse:
        ctx = request[RUN_CONTEXT]

        async def meter(usage: ModelUsage) -> None:
            row = usage_row(ctx.namespace, ctx.group_name, ctx.name, "proxy", usage, model=usage.model)
            await self.db.call(records.record_usage, row)

        return await self.proxy.forward(request, request.match_info["tail"], meter)
