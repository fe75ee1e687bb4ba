"""The gateway's HTTP APIs in-process (aiohttp's test client): authentication and every error path
of the run API, the model proxy and the local chat API, without a cluster. The parts are the real
ones, wired as gateway/app.py wires them; the Group and the run come in as watch events would.
Also: the keyed state of the gateway does not grow with every Group, run and turn it has seen."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from pynchy.aio import TaskSet
from pynchy.chat.protocol import CHAT_PREFIX
from pynchy.gateway.agentruns import AgentRuns, RunEntry, RunIndex, parse_run
from pynchy.gateway.approvals import Approvals
from pynchy.gateway.db import Db
from pynchy.gateway.delivery import Delivery
from pynchy.gateway.hooks import ChannelHooks
from pynchy.gateway.httpapi.model_api import ModelApi
from pynchy.gateway.httpapi.run_api import RunApi
from pynchy.gateway.httpapi.runauth import RunAuth
from pynchy.gateway.lifecycle import TurnLifecycle
from pynchy.gateway.outbox import Outbox
from pynchy.gateway.pricing import DEFAULT_PRICES
from pynchy.gateway.proxy import ModelProxy
from pynchy.gateway.questions import Questions
from pynchy.gateway.routing import Directory
from pynchy.gateway.spend import SpendGuard
from pynchy.gateway.stats import StatsReporter
from pynchy.gateway.toolgate import ToolGate
from pynchy.gateway.toollimits import LimitValues
from pynchy.gateway.tools import Tools
from pynchy.gateway.turnhub import TurnHub
from pynchy.runtoken import RunClaims, issue
from pynchy.store import records
from pynchy_agent.protocol import MODEL_PROXY_PREFIX, RUN_API_PREFIX

KEY = "in-process-run-token-key-0123456789abcdef012345"
CHAT_TOKEN = "in-process-chat-token-0123456789"
GROUP = yaml.safe_load((Path(__file__).parents[1] / "manifests" / "examples" / "group-local.yaml").read_text())
NS = "home"


class EmptyKube:
    """The narrow Kubernetes API the parts call, holding nothing: no object exists beyond what the
    watch events brought, and writes are recorded (none of the paths here should succeed in one)."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append(obj)
        return obj

    async def list(self, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return []

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        return None


def group_obj(name: str = "demo", uid: str = "uid-demo") -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": uid, "creationTimestamp": "2026-12-01T00:00:00Z"}
    return {**GROUP, "metadata": meta}


def run_obj(name: str, group: str = "demo", phase: str | None = "Running", **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": f"uid-{name}", "creationTimestamp": "2026-12-01T00:00:00Z"}
    status = {"phase": phase} if phase else {}
    return {"metadata": meta, "spec": {"groupRef": {"name": group}, **spec}, "status": status}


def token(run: str, group: str = "demo", uid: str | None = None, expires: int | None = None) -> str:
    claims = RunClaims(NS, run, uid or f"uid-{run}", group, expires or int(time.time()) + 600)
    return issue(KEY, claims, issued_at=int(time.time()))


@dataclass
class Parts:
    db: Db
    kube: EmptyKube
    directory: Directory
    index: RunIndex
    runs: AgentRuns
    hub: TurnHub
    stats: StatsReporter
    tasks: TaskSet
    lifecycle: TurnLifecycle
    proxy: ModelProxy
    spend: SpendGuard
    approvals: Approvals
    gate: ToolGate
    questions: Questions


def build(
    tmp_path: Path,
    *,
    upstream: str = "http://127.0.0.1:9",
    spec: dict[str, Any] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> tuple[Parts, web.Application]:
    db = Db(f"sqlite:///{tmp_path}/gateway.db")
    kube = EmptyKube()
    directory, index, tasks = Directory(), RunIndex(), TaskSet()
    group = group_obj()
    directory.on_event("ADDED", {**group, "spec": {**group["spec"], **(spec or {})}})
    runs = AgentRuns(kube, directory, index)  # type: ignore[arg-type]  # EmptyKube has the methods used
    hub = TurnHub(db)
    hooks = ChannelHooks(tasks)
    delivery = Delivery(db, hooks.channels)
    stats = StatsReporter(kube)  # type: ignore[arg-type]
    lifecycle = TurnLifecycle(db, hub, runs, directory, hooks, delivery, stats, tasks)
    outbox = Outbox(db, delivery, directory)
    tools = Tools(kube, db, directory, outbox.send, LimitValues(10, 20, 300))  # type: ignore[arg-type]
    auth = RunAuth(KEY, runs, directory)
    approvals = Approvals(db, delivery, directory, None, lambda ns, run: index.get(ns, run) is None)
    gate = ToolGate(db, directory, approvals)
    questions = Questions(db, delivery, directory, None)
    app = web.Application()
    run_api = RunApi(db, hub, runs, lifecycle, tools, stats, tasks, 60.0, gate, questions)
    app.add_subapp(RUN_API_PREFIX, run_api.app(auth))
    proxy = ModelProxy(upstream, "sk-ant-test-key", None)
    spend = SpendGuard(db, DEFAULT_PRICES, outbox.post, clock=clock or (lambda: datetime.now(UTC)))
    app.add_subapp(MODEL_PROXY_PREFIX, ModelApi(db, proxy, spend).app(auth))
    return Parts(
        db, kube, directory, index, runs, hub, stats, tasks, lifecycle, proxy, spend, approvals, gate, questions
    ), app


Scenario = Callable[[TestClient[Any, Any], Parts], Awaitable[None]]


def serve(
    tmp_path: Path,
    scenario: Scenario,
    add: Callable[[Parts, web.Application], None] | None = None,
    **options: Any,
) -> None:
    async def main() -> None:
        parts, app = build(tmp_path, **options)
        if add is not None:
            add(parts, app)
        await parts.proxy.start()
        try:
            async with TestClient(TestServer(app)) as client:
                await scenario(client, parts)
        finally:
            await parts.proxy.close()
            await parts.tasks.close()
            parts.db.close()

    asyncio.run(main())


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def error_of(response: Any) -> str:
    body = await response.json()
    return str(body["error"])


# -- run API -------------------------------------------------------------------------------


def test_run_api_refuses_missing_forged_expired_and_orphaned_tokens(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        cases = [
            ({}, "missing run token"),
            (bearer("not-a-token"), ""),
            (bearer(token("r1", expires=int(time.time()) - 10)), "expired"),
            (bearer(token("r1", uid="uid-of-an-older-r1")), "no longer exists"),
            (bearer(token("gone")), "no longer exists"),  # the API server has no such run either
        ]
        for path in ("", "/turns/next", "/session", "/tools/list_tasks", "/turns/t1/events"):
            for headers, says in cases:
                method = client.get if path in ("", "/turns/next") else client.post
                r = await method(RUN_API_PREFIX + path, headers=headers)
                assert r.status == 401, (path, headers)
                assert says in await error_of(r)
        ok = await client.get(RUN_API_PREFIX, headers=bearer(token("r1")))
        assert ok.status == 200
        assert (await ok.json())["run"] == "r1"

    serve(tmp_path, scenario)


def test_run_api_error_paths_say_what_is_wrong(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("live"))
        parts.index.on_event("ADDED", run_obj("over", phase="Succeeded"))
        live, over = bearer(token("live")), bearer(token("over"))
        r = await client.get(RUN_API_PREFIX + "/turns/next?wait=soon", headers=live)
        assert (r.status, await error_of(r)) == (400, "wait must be a number of seconds")
        r = await client.get(RUN_API_PREFIX + "/turns/next", headers=over)
        assert (r.status, await error_of(r)) == (410, "the run is over")
        r = await client.post(RUN_API_PREFIX + "/tools/save_memory", headers=over, json={"arguments": {}})
        assert r.status == 410
        r = await client.post(RUN_API_PREFIX + "/turns/t1/events", headers=live, data=b"{not json")
        assert r.status == 422
        assert (await error_of(r)).startswith("invalid event batch: ")
        r = await client.post(RUN_API_PREFIX + "/turns/t1/events", headers=live, json={"events": [{"type": "result"}]})
        assert (r.status, await error_of(r)) == (404, "turn t1 was not delivered to this run")
        r = await client.post(RUN_API_PREFIX + "/session", headers=live, json={"sessionId": 7})
        assert r.status == 422
        assert "session report" in await error_of(r)
        r = await client.post(RUN_API_PREFIX + "/tools/no_such_tool", headers=live, json={"arguments": {}})
        assert r.status == 404
        assert "unknown tool 'no_such_tool'" in await error_of(r)
        r = await client.post(RUN_API_PREFIX + "/tools/send_message", headers=live, json={"arguments": {}})
        assert r.status == 422
        assert "invalid arguments for send_message" in await error_of(r)
        args = {"arguments": {"group": "other", "text": "hi"}}
        r = await client.post(RUN_API_PREFIX + "/tools/send_message", headers=live, json=args)
        assert r.status == 403
        assert "not an admin group" in await error_of(r)
        r = await client.get(RUN_API_PREFIX + "/no/such/route", headers=live)
        assert r.status == 404
        assert await error_of(r)  # rendered as the API's JSON error, not aiohttp's text page
        assert parts.kube.created == []

    serve(tmp_path, scenario)


def test_run_config_changed_and_prompt_answered_end_the_run(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        stale = run_obj("stale")
        stale["status"]["conditions"] = [{"type": "ConfigCurrent", "status": "False"}]
        parts.index.on_event("ADDED", stale)
        r = await client.get(RUN_API_PREFIX + "/turns/next", headers=bearer(token("stale")))
        assert r.status == 410
        assert "configuration changed" in await error_of(r)
        parts.index.on_event("ADDED", run_obj("once", prompt="say hi", contextMode="isolated"))
        first = await client.get(RUN_API_PREFIX + "/turns/next", headers=bearer(token("once")))
        assert first.status == 200
        assert (await first.json())["prompt"] == "say hi"
        again = await client.get(RUN_API_PREFIX + "/turns/next", headers=bearer(token("once")))
        assert again.status == 410
        assert "own prompt has been answered" in await error_of(again)

    serve(tmp_path, scenario)


def test_a_waiting_scheduled_run_makes_an_idle_conversation_run_give_way(tmp_path: Path) -> None:
    """The schedule's run (a Schedule trigger, timestamps as the API server writes them) is seen, and
    a conversation run's long-poll ends with 410 so that it can start."""

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("talk"))
        poll = asyncio.ensure_future(client.get(RUN_API_PREFIX + "/turns/next?wait=60", headers=bearer(token("talk"))))
        await wait_until(lambda: parts.hub.pending_sizes()[0] == 1)
        trigger = {"kind": "Schedule", "scheduledTaskRef": {"name": "digest"}, "scheduledTime": "2026-12-01T09:00:00Z"}
        scheduled = run_obj("digest-1", phase="Pending", prompt="the digest", contextMode="group", trigger=trigger)
        entry = parts.index.on_event("ADDED", scheduled)
        assert entry is not None
        assert entry.prompt_source == "schedule"
        parts.lifecycle.run_event("ADDED", entry)
        r = await poll
        assert r.status == 410
        assert "a scheduled run of this Group is waiting" in await error_of(r)

    serve(tmp_path, scenario)


def test_tool_limits_refuse_with_errors_the_model_reads_and_are_audited(tmp_path: Path) -> None:
    """send_message over its per-minute limit, a schedule more frequent than allowed, and schedule_task
    turned off: each a refusal naming the limit and the field, nothing sent or created, an audit row
    with allowed=False. A task within the limits is created, owned by its Group."""
    limits = {"sendMessagesPerMinute": 2, "minScheduleIntervalSeconds": 600}

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        off = group_obj("off", "uid-off")
        parts.directory.on_event(
            "ADDED", {**off, "spec": {**off["spec"], "agent": {"toolLimits": {"maxScheduledTasks": 0}}}}
        )
        parts.index.on_event("ADDED", run_obj("r1"))
        parts.index.on_event("ADDED", run_obj("r2", group="off"))
        demo, quiet = bearer(token("r1")), bearer(token("r2", "off"))

        async def tool(headers: dict[str, str], which: str, /, **arguments: Any) -> Any:
            return await client.post(f"{RUN_API_PREFIX}/tools/{which}", headers=headers, json={"arguments": arguments})

        for _ in range(2):
            assert (await tool(demo, "send_message", text="hi")).status == 200
        r = await tool(demo, "send_message", text="one too many")
        assert r.status == 429
        text = await error_of(r)
        assert text.startswith("send_message limit reached: 2 messages per minute for Group demo; try again in ")
        assert "spec.agent.toolLimits.sendMessagesPerMinute" in text

        r = await tool(demo, "schedule_task", name="often", prompt="p", interval="5m")
        assert r.status == 403
        assert "runs as often as every 300 s, and Group demo may schedule runs at most every 600 s" in await error_of(r)
        r = await tool(demo, "schedule_task", name="often", prompt="p", cron="*/5 * * * *")
        assert r.status == 403
        assert "spec.agent.toolLimits.minScheduleIntervalSeconds" in await error_of(r)
        r = await tool(quiet, "schedule_task", name="any", prompt="p", once="2026-12-24T18:00:00Z")
        assert r.status == 403
        assert "schedule_task is turned off for Group off" in await error_of(r)
        assert parts.kube.created == []

        r = await tool(demo, "schedule_task", name="hourly", prompt="p", interval="1h")
        assert r.status == 200, await r.text()
        (task,) = parts.kube.created
        assert task["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "pynchy.dev/v1alpha1",
                "kind": "Group",
                "name": "demo",
                "uid": "uid-demo",
                "controller": False,
            }
        ]

        rows = await parts.db.call(records.audit_log, NS)
        refused = [(a.group, a.action, a.detail) for a in rows if not a.allowed]
        expected = [
            ("demo", "send_message", "send_message limit reached: 2 messages per minute"),
            ("demo", "schedule_task", "schedule_task refused: interval 5m runs as often as every 300 s"),
            ("demo", "schedule_task", "schedule_task refused: cron '*/5 * * * *' runs as often as every 300 s"),
            ("off", "schedule_task", "schedule_task is turned off for Group off"),
        ]
        assert [(g, action) for g, action, _ in refused] == [(g, action) for g, action, _ in expected]
        for (_, _, detail), (_, _, start) in zip(refused, expected, strict=True):
            assert detail.startswith(start), detail
        assert [a.action for a in rows if a.allowed] == ["send_message", "send_message", "schedule_task"]

    serve(tmp_path, scenario, spec={"agent": {"toolLimits": limits}})


# -- model proxy ---------------------------------------------------------------------------


def test_model_proxy_refuses_in_anthropic_format(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("over", phase="Failed"))
        cases = [
            ({}, "missing run token"),
            ({"x-api-key": "sk-ant-real-looking-key"}, ""),
            ({"x-api-key": token("over")}, "the run is over"),
            (bearer(token("unknown")), "no longer exists"),
        ]
        for headers, says in cases:
            r = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json={})
            assert r.status == 401
            body = await r.json()
            assert body["type"] == "error"
            assert body["error"]["type"] == "authentication_error"
            assert says in body["error"]["message"]

    serve(tmp_path, scenario)


# -- model proxy: models, budgets, usage ------------------------------------------------------


class Upstream:
    """A Messages API answering every call with a short SSE stream and the given usage; it can
    hold a stream after message_start until released (a pod that goes away mid-answer)."""

    def __init__(self, input_tokens: int = 1000, output_tokens: int = 500) -> None:
        self.usage = (input_tokens, output_tokens)
        self.calls: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self.server = TestServer(app)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append({"body": body, "key": request.headers.get("x-api-key")})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {"type": "message_start", "message": {"model": body["model"], "usage": {"input_tokens": self.usage[0]}}}
        await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        delta = {"type": "message_delta", "usage": {"output_tokens": self.usage[1]}}
        await response.write(f"event: message_delta\ndata: {json.dumps(delta)}\n\n".encode())
        await response.write(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        await response.write_eof()
        return response


def proxied(upstream: Upstream, scenario: Scenario) -> Scenario:
    async def run(client: TestClient[Any, Any], parts: Parts) -> None:
        parts.index.on_event("ADDED", run_obj("r1"))
        await scenario(client, parts)

    return run


def message(model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def usage_rows(parts: Parts) -> list[tuple[str | None, int, int, float]]:
    from pynchy.store.models import UsageRow

    def rows(session: Any) -> list[tuple[str | None, int, int, float]]:
        return [(r.model, r.input_tokens, r.output_tokens, r.cost_usd) for r in session.query(UsageRow).all()]

    await parts.spend.flush()  # rows are written behind the answers
    return await parts.db.call(rows)


async def notices(parts: Parts) -> list[str]:
    from pynchy.store.models import OutboundRow

    def rows(session: Any) -> list[str]:
        return [r.text for r in session.query(OutboundRow).order_by(OutboundRow.id).all()]

    return await parts.db.call(rows)


def upstream_serve(tmp_path: Path, upstream: Upstream, scenario: Scenario, **options: Any) -> None:
    async def main() -> None:
        await upstream.server.start_server()
        try:
            url = str(upstream.server.make_url("")).rstrip("/")
            parts, app = build(tmp_path, upstream=url, **options)
            await parts.proxy.start()
            try:
                async with TestClient(TestServer(app)) as client:
                    await proxied(upstream, scenario)(client, parts)
            finally:
                await parts.proxy.close()
                await parts.tasks.close()
                parts.db.close()
        finally:
            await upstream.server.close()

    asyncio.run(main())


def test_a_group_over_its_daily_budget_is_refused_before_the_call_leaves_until_the_next_day(tmp_path: Path) -> None:
    upstream = Upstream(input_tokens=100_000, output_tokens=10_000)  # $0.30 + $0.15 on Sonnet 4.5
    now = [datetime(2026, 12, 1, 12, tzinfo=UTC)]
    budget = {"budget": {"dailyUsd": 0.5, "timeZone": "Europe/Berlin"}}

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        headers = bearer(token("r1"))
        first = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message())
        assert first.status == 200
        await first.read()
        assert await usage_rows(parts) == [("claude-sonnet-4-5", 100_000, 10_000, pytest.approx(0.45))]
        assert await notices(parts) == [
            "Budget warning: $0.45 of the daily budget of $0.50 used; resets at 00:00 Europe/Berlin"
        ]
        second = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message())
        await second.read()
        assert second.status == 200  # $0.45 < $0.50: still allowed; now $0.90
        refused = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message())
        assert refused.status == 403
        body = await refused.json()
        assert body["error"] == {
            "type": "permission_error",
            "message": "daily budget of $0.50 reached; resets at 00:00 Europe/Berlin",
        }
        assert len(upstream.calls) == 2  # the refused call never left
        again = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message())
        assert again.status == 403
        # One warning and one "reached" notice, however many calls.
        assert await notices(parts) == [
            "Budget warning: $0.45 of the daily budget of $0.50 used; resets at 00:00 Europe/Berlin",
            "Budget: daily budget of $0.50 reached; resets at 00:00 Europe/Berlin",
        ]
        now[0] += timedelta(days=1)  # the next day in Berlin: allowed again
        tomorrow = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message())
        assert tomorrow.status == 200
        await tomorrow.read()
        assert len(upstream.calls) == 3
        assert {c["key"] for c in upstream.calls} == {"sk-ant-test-key"}

    upstream_serve(tmp_path, upstream, scenario, spec=budget, clock=lambda: now[0])


def test_only_the_groups_models_and_the_clis_endpoints_are_forwarded(tmp_path: Path) -> None:
    upstream = Upstream()
    spec = {"agent": {"model": "claude-sonnet-4-5", "allowedModels": ["claude-haiku-4-5"]}}

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        headers = bearer(token("r1"))
        for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
            ok = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message(model))
            assert ok.status == 200, model
            await ok.read()
        refused = await client.post(
            MODEL_PROXY_PREFIX + "/v1/messages", headers=headers, json=message("claude-opus-4-1")
        )
        assert refused.status == 403
        error = (await refused.json())["error"]
        assert error["type"] == "permission_error"
        assert "model 'claude-opus-4-1' is not allowed for Group demo" in error["message"]
        assert "allowed: claude-haiku-4-5, claude-sonnet-4-5" in error["message"]
        other = await client.get(MODEL_PROXY_PREFIX + "/v1/models", headers=headers)
        assert other.status == 404
        assert (await other.json())["error"]["type"] == "not_found_error"
        assert [c["body"]["model"] for c in upstream.calls] == ["claude-sonnet-4-5", "claude-haiku-4-5"]

    upstream_serve(tmp_path, upstream, scenario, spec=spec)


def test_usage_of_a_call_cut_off_mid_stream_is_still_recorded(tmp_path: Path) -> None:
    upstream = Upstream(input_tokens=1234, output_tokens=567)

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        upstream.hold = asyncio.Event()
        response = await client.post(MODEL_PROXY_PREFIX + "/v1/messages", headers=bearer(token("r1")), json=message())
        assert response.status == 200
        await response.content.readuntil(b"\n\n")  # message_start reached the pod
        response.close()  # the pod goes away mid-answer
        upstream.hold.set()  # the upstream finishes (and bills) the answer anyway
        deadline = time.monotonic() + 20
        while not await usage_rows(parts):
            assert time.monotonic() < deadline, "the cut-off call's usage was never recorded"
            await asyncio.sleep(0.05)
        assert await usage_rows(parts) == [("claude-sonnet-4-5", 1234, 567, pytest.approx((1234 * 3 + 567 * 15) / 1e6))]

    upstream_serve(tmp_path, upstream, scenario)


# -- local chat API ------------------------------------------------------------------------


def _local(token_value: str | None) -> Callable[[Parts, web.Application], None]:
    from pynchy.gateway.channels.local import LocalChannel

    def add(parts: Parts, app: web.Application) -> None:
        async def accept(inbound: Any) -> Any:
            raise AssertionError("no message should get this far")

        secret = SecretStr(token_value) if token_value else None
        channel = LocalChannel(parts.db, parts.directory, accept, parts.hub.watch, token=secret, long_poll_seconds=1.0)
        channel.install(app)

    return add


def test_local_chat_disabled_without_a_token(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        r = await client.get(CHAT_PREFIX, headers=bearer(CHAT_TOKEN))
        assert r.status == 503
        assert "set PYNCHY_CHAT_TOKEN" in await error_of(r)

    serve(tmp_path, scenario, _local(None))


def test_local_chat_error_paths(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        r = await client.get(CHAT_PREFIX + "/demo")
        assert r.status == 401
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="pynchy-chat"'
        assert "missing token" in await error_of(r)
        r = await client.get(CHAT_PREFIX + "/demo", headers=bearer("wrong-token-0123456789"))
        assert (r.status, "wrong token" in await error_of(r)) == (401, True)
        auth = bearer(CHAT_TOKEN)
        r = await client.get(CHAT_PREFIX + "/nowhere", headers=auth)
        assert r.status == 404
        assert "local channels: demo" in await error_of(r)
        r = await client.post(CHAT_PREFIX + "/demo/messages", headers=auth, data=b"[]")
        assert r.status == 422
        assert (await error_of(r)).startswith("invalid message: ")
        r = await client.post(CHAT_PREFIX + "/demo/messages", headers=auth, data=b"x" * (2 << 20))
        assert r.status == 413
        r = await client.get(CHAT_PREFIX + "/demo/messages?after=minus-one", headers=auth)
        assert r.status == 422
        assert (await error_of(r)).startswith("invalid query: ")
        r = await client.get(CHAT_PREFIX + "/demo/turns/t9/events", headers=auth)
        assert r.status == 404
        ok = await client.get(CHAT_PREFIX, headers=auth)
        assert ok.status == 200
        assert [c["channel"] for c in (await ok.json())["channels"]] == ["demo"]

    serve(tmp_path, scenario, _local(CHAT_TOKEN))


# -- keyed state stays bounded -------------------------------------------------------------


def test_keyed_state_does_not_grow_with_groups_runs_and_turns(tmp_path: Path) -> None:
    """Long-polls of many Groups, runs started for them, their stats pushed, their turns watched
    and finished: afterwards no per-key lock, wake-up or watch is left behind."""

    many = 80  # long-polls at once, under the test client's 100 connections

    async def scenario(client: TestClient[Any, Any], parts: Parts) -> None:
        for i in range(many):
            parts.directory.on_event("ADDED", group_obj(f"g{i}", f"uid-g{i}"))
            parts.index.on_event("ADDED", run_obj(f"r{i}", group=f"g{i}"))
        polls = [
            client.get(RUN_API_PREFIX + "/turns/next?wait=60", headers=bearer(token(f"r{i}", f"g{i}")))
            for i in range(many)
        ]
        pending = [asyncio.ensure_future(p) for p in polls]
        await wait_until(lambda: parts.hub.pending_sizes()[0] == many)  # every Group has a waiter
        for i in range(many):
            await parts.hub.enqueue(NS, f"g{i}", f"prompt {i}", turn_id=f"t{i}")
        responses = await asyncio.gather(*pending)
        assert [r.status for r in responses] == [200] * many
        for i in range(many):
            parts.hub.watch(f"t{i}")
            events = {"events": [{"type": "result", "text": f"answer {i}"}]}
            r = await client.post(
                f"{RUN_API_PREFIX}/turns/t{i}/events", headers=bearer(token(f"r{i}", f"g{i}")), json=events
            )
            assert r.status == 204, await r.text()
        await wait_until(lambda: len(parts.tasks) == 0)  # the stats pushes the finishes spawned
        for i in range(many):
            await parts.runs.ensure_run(NS, f"g{i}")  # a live run serves: nothing created, lock used
        assert parts.kube.created == []
        assert parts.hub.pending_sizes() == (0, 0)
        assert len(parts.runs._locks) == 0
        assert len(parts.stats._locks) == 0
        for i in range(many):
            parts.index.on_event("DELETED", run_obj(f"r{i}", group=f"g{i}"))
            parts.lifecycle.run_event("DELETED", _gone(f"r{i}", f"g{i}"))
        await wait_until(lambda: len(parts.tasks) == 0)  # each deleted run's end handled
        assert len(parts.stats) == 0
        assert len(parts.index) == 0
        assert parts.lifecycle._ended == set()

    serve(tmp_path, scenario)


def _gone(name: str, group: str) -> RunEntry:
    return parse_run(run_obj(name, group=group))


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
