"""The model proxy's sub-app: agent pods call it as their Anthropic API with their run token as
the key; errors come back in Anthropic's format so Claude Code shows them as such."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from pynchy.api.group import GroupSpec
from pynchy.gateway.db import Db
from pynchy.gateway.httpapi.runauth import RUN_CONTEXT, RunAuth, live_run_middleware
from pynchy.gateway.problems import RequestError, bearer, problems
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.spend import SpendGuard
from pynchy.gateway.usage import ModelUsage
from pynchy.logs import get_logger

log = get_logger(__name__)

_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def _api_key(request: web.Request) -> str | None:
    """The CLI sends the run token as its API key (x-api-key), or as a bearer token (auth token mode)."""
    return request.headers.get("x-api-key") or bearer(request)


# What the Claude Code CLI calls; nothing else of the Anthropic API is forwarded.
FORWARDED = {("POST", "v1/messages"), ("POST", "v1/messages/count_tokens"), ("GET", "api/hello"), ("HEAD", "api/hello")}
# 403 permission_error: the Claude Code CLI fails the turn at once and shows the message. It retries
# 429 and 5xx for minutes, a 401 as a login problem, and even a 400 a few times.
REFUSED = 403


def refusal(message: str) -> web.Response:
    body = {"type": "error", "error": {"type": "permission_error", "message": message}}
    return web.json_response(body, status=REFUSED)


def allowed_models(spec: GroupSpec | None) -> set[str]:
    """The models a Group may call: spec.agent.model and allowedModels; empty when it names none."""
    if spec is None or spec.agent.model is None:
        return set()
    return {spec.agent.model, *spec.agent.allowed_models}


def requested_model(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


class ModelApi:
    def __init__(self, db: Db, proxy: ModelProxy, spend: SpendGuard) -> None:
        self.db = db
        self.proxy = proxy
        self.spend = spend

    def app(self, auth: RunAuth) -> web.Application:
        """The sub-app, to mount at MODEL_PROXY_PREFIX."""
        app = web.Application(middlewares=[problems(anthropic_error_body), live_run_middleware(auth, _api_key)])
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.StreamResponse:
        ctx = request[RUN_CONTEXT]
        tail = request.match_info["tail"]
        if (request.method, tail) not in FORWARDED:
            raise RequestError(404, f"{request.method} /{tail} is not forwarded by Pynchy's model proxy")
        spec = ctx.group.spec if ctx.group is not None else None
        if request.method == "POST" and tail == "v1/messages":
            allowed = allowed_models(spec)
            model = requested_model(await request.read())
            if allowed and model not in allowed:
                names = ", ".join(sorted(allowed))
                return refusal(
                    f"model {model!r} is not allowed for Group {ctx.group_name}; allowed: {names} "
                    "(spec.agent.model and spec.agent.allowedModels)"
                )
            verdict = await self.spend.check(ctx.namespace, ctx.group_name, spec)
            if verdict.state == "exceeded":
                log.info("model call refused: budget", namespace=ctx.namespace, group=ctx.group_name)
                return refusal(verdict.message)

        async def meter(usage: ModelUsage) -> None:
            await self.spend.record(ctx.namespace, ctx.group_name, ctx.name, usage, spec)

        return await self.proxy.forward(request, tail, meter)
