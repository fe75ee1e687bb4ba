"""`pynchy status` without a cluster: rows from Group and AgentRun JSON, the problems and exit codes,
the text, which credentials are used, and the gateway's `GET /status` (its store check and queue depth)
served by the metrics server and read back by the client."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.orm import Session

from pynchy.cli import main
from pynchy.clusterstatus.connect import ConnectError, connect
from pynchy.clusterstatus.contract import GatewayHealth, StoreHealth
from pynchy.clusterstatus.gateway import GatewayProbe, _parse, from_url, proxy_path
from pynchy.clusterstatus.report import DEGRADED, HEALTHY, UNREACHABLE, StatusReport, exit_code, problems, render
from pynchy.clusterstatus.resources import GroupRow, group_row, run_row
from pynchy.gateway.agentruns import RunIndex
from pynchy.gateway.db import Db
from pynchy.gateway.health import Health
from pynchy.gateway.routing import Directory
from pynchy.gateway.turnhub import TurnHub
from pynchy.kube.controlplane import free_port
from pynchy.metrics import MetricsServer, new_registry
from pynchy.store import turns as turn_store

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)


def group_obj(name: str = "demo", *, ready: str = "True", generation: int = 1, **status: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "home", "generation": 2, "uid": f"uid-{name}"}
    cond = {"type": "Ready", "status": ready, "reason": "Ready" if ready == "True" else "Missing"}
    if ready != "True":
        cond["message"] = "ConfigMap home/notes does not exist"
    return {
        "metadata": meta,
        "spec": {"channels": [{"local": {"name": name}}, {"slack": {"channelId": "C0123"}}]},
        "status": {"observedGeneration": generation + 1, "conditions": [cond], **status},
    }


def healthy_gateway(**queued: int) -> GatewayProbe:
    health = GatewayHealth(
        store=StoreHealth(ok=True, latency_ms=0.7),
        queue_depth=sum(queued.values()),
        running_turns=0,
        active_runs=1,
        queued={f"home/{k}": v for k, v in queued.items()},
    )
    return GatewayProbe(via="http://gw:9090/status", health=health, error=None)


def report(groups: list[GroupRow], gateway: GatewayProbe | None, api_error: str | None = None) -> StatusReport:
    found = problems(groups, gateway)
    return StatusReport(
        server="https://k8s:6443",
        credentials="kubeconfig /k",
        namespace=None,
        api_error=api_error,
        groups=groups,
        runs=[],
        runs_total=0,
        gateway=gateway,
        problems=found,
        exit_code=exit_code(api_error, found),
    )


# -- rows ------------------------------------------------------------------------------------------


def test_a_group_row_shows_ready_channels_run_session_and_spend() -> None:
    row = group_row(
        group_obj(
            activeRun="demo-1",
            sessionId="sess-1",
            lastActivityTime="2026-12-01T11:55:00Z",
            spend={"day": "2026-12-01", "todayUsd": 0.25, "monthUsd": 3, "budget": "warning"},
        ),
        NOW,
    )
    assert (row.ready, row.channels, row.active_run, row.session_id) == (
        "True",
        "local:demo,slack:C0123",
        "demo-1",
        "sess-1",
    )
    assert row.last_activity == "5m"
    assert row.spend is not None
    assert (row.spend.today_usd, row.spend.month_usd, row.spend.budget) == (0.25, 3.0, "warning")
    assert row.message == ""


def test_a_ready_condition_of_an_older_generation_is_unknown() -> None:
    assert group_row(group_obj(generation=0), NOW).ready == "Unknown"
    assert group_row({"metadata": {"name": "new", "namespace": "home"}}, NOW).ready == "Unknown"
    broken = group_row(group_obj(ready="False"), NOW)
    assert (broken.ready, broken.message) == ("False", "ConfigMap home/notes does not exist")
    assert broken.spend is None


def test_a_run_row_shows_phase_turns_cost_and_age() -> None:
    run = {
        "metadata": {"name": "demo-1", "namespace": "home", "creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"groupRef": {"name": "demo"}},
        "status": {"phase": "Running", "reason": "Running", "turnsServed": 3, "usage": {"costUSD": 0.12}},
    }
    row = run_row(run, NOW)
    assert (row.group, row.phase, row.turns, row.cost_usd, row.age) == ("demo", "Running", 3, 0.12, "2h")
    fresh = run_row({"metadata": {"name": "x", "namespace": "home"}, "spec": {}}, NOW)
    assert (fresh.phase, fresh.turns, fresh.cost_usd, fresh.age, fresh.group) == ("New", 0, None, "-", None)


# -- problems and exit codes -----------------------------------------------------------------------


def test_all_ready_and_a_healthy_gateway_is_healthy() -> None:
    r = report([group_row(group_obj(), NOW)], healthy_gateway(demo=2))
    assert (r.problems, r.exit_code) == ([], HEALTHY)
    text = render(r)
    assert "Cluster https://k8s:6443 (kubeconfig /k); all namespaces" in text
    assert text.endswith("Healthy.")
    assert "store ok (0.7 ms); 2 queued turns, 0 running; 1 active run; pending approvals n/a" in text
    [header, line] = [ln for ln in text.splitlines() if "CHANNELS" in ln or "local:demo" in ln]
    assert header.split()[:6] == ["NAMESPACE", "GROUP", "READY", "CHANNELS", "ACTIVE", "RUN"]
    assert line.split()[:6] == ["home", "demo", "True", "local:demo,slack:C0123", "-", "2"]  # 2 queued


@pytest.mark.parametrize(
    ("groups", "gateway", "expected"),
    [
        ([group_obj(ready="False")], healthy_gateway(), "Group home/demo is not Ready (False): ConfigMap home/notes"),
        (
            [group_obj(spend={"day": "2026-12-01", "todayUsd": 5.0, "monthUsd": 5.0, "budget": "exceeded"})],
            healthy_gateway(),
            "Group home/demo reached its budget: its model calls are refused",
        ),
        (
            [group_obj()],
            GatewayProbe(
                via="the API server's service proxy (pynchy-system/pynchy-gateway:metrics)",
                health=None,
                error='HTTP 503: no endpoints available for service "pynchy-gateway"',
            ),
            "gateway unreachable through the API server's service proxy (pynchy-system/pynchy-gateway:metrics): "
            'HTTP 503: no endpoints available for service "pynchy-gateway"',
        ),
        (
            [group_obj()],
            GatewayProbe(
                via="u",
                health=GatewayHealth(
                    store=StoreHealth(ok=False, error="no answer within 2s"),
                    queue_depth=None,
                    running_turns=None,
                    active_runs=0,
                ),
                error=None,
            ),
            "gateway store unhealthy: no answer within 2s",
        ),
    ],
    ids=["not-ready", "budget", "gateway-unreachable", "store-unhealthy"],
)
def test_each_problem_degrades_and_is_listed(
    groups: list[dict[str, Any]], gateway: GatewayProbe, expected: str
) -> None:
    r = report([group_row(g, NOW) for g in groups], gateway)
    assert r.exit_code == DEGRADED
    [problem] = r.problems
    assert problem.startswith(expected), problem
    text = render(r)
    assert "Degraded: 1 problem\n  - " + problem in text


def test_an_unreachable_gateway_is_one_line_with_the_reason() -> None:
    probe = GatewayProbe(via="http://127.0.0.1:1/status", health=None, error="ConnectionRefusedError: [Errno 111]")
    lines = [ln for ln in render(report([], probe)).splitlines() if ln.startswith("Gateway")]
    assert lines == ["Gateway: unreachable through http://127.0.0.1:1/status: ConnectionRefusedError: [Errno 111]"]


def test_a_cluster_that_cannot_be_read_exits_3_in_one_line() -> None:
    r = report([], None, api_error="MaxRetryError: connection refused")
    assert r.exit_code == UNREACHABLE
    assert render(r) == "pynchy status: cannot read the cluster (kubeconfig /k): MaxRetryError: connection refused"


def test_the_cli_exits_3_when_the_api_server_does_not_answer(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"dead": f"http://127.0.0.1:{free_port()}"}, current="dead")
    result = CliRunner().invoke(main, ["status", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == UNREACHABLE, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"pynchy status: cannot read the cluster (kubeconfig {kubeconfig}): ")
    assert "Connection refused" in line or "ConnectionRefused" in line, line


# -- credentials -----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "me"}} for n in servers],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_credentials_come_from_the_flag_then_kubeconfig_then_home(tmp_path: Path) -> None:
    one = write_kubeconfig(tmp_path / "one", {"a": "https://a:6443", "b": "https://b:6443"}, current="a")
    two = write_kubeconfig(tmp_path / "two", {"c": "https://c:6443"}, current="c")
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    write_kubeconfig(tmp_path / "home" / ".kube" / "config", {"h": "https://h:6443"}, current="h")
    env = {"KUBECONFIG": str(two)}
    home = tmp_path / "home"
    cases = [
        (connect(one, environ=env, home=home), "https://a:6443", f"kubeconfig {one}"),
        (connect(one, "b", environ=env, home=home), "https://b:6443", f"kubeconfig {one} (context b)"),
        (connect(environ=env, home=home), "https://c:6443", f"kubeconfig {two}"),
        (connect(environ={}, home=home), "https://h:6443", f"kubeconfig {home / '.kube' / 'config'}"),
    ]
    for conn, server, source in cases:
        assert (conn.server, conn.source) == (server, source)
        assert conn.client.configuration.retries == 0  # one attempt per request: answer quickly
        conn.close()


def test_without_credentials_it_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConnectError, match=r"no kubeconfig \(--kubeconfig, \$KUBECONFIG or ~/.kube/config\)"):
        connect(environ={}, home=tmp_path)
    pod = {"KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(ConnectError, match="--context needs a kubeconfig"):
        connect(context="x", environ=pod, home=tmp_path)
    with pytest.raises(ConnectError, match="in-cluster credentials could not be loaded"):
        connect(environ=pod, home=tmp_path)  # no service account token in this test's filesystem
    with pytest.raises(ConnectError, match=r"kubeconfig .*missing could not be loaded"):
        connect(tmp_path / "missing", environ={}, home=tmp_path)


# -- the gateway's /status -------------------------------------------------------------------------


def test_the_service_proxy_path_names_the_metrics_port() -> None:
    assert (
        proxy_path("pynchy-system") == "/api/v1/namespaces/pynchy-system/services/pynchy-gateway:metrics/proxy/status"
    )


def test_a_proxy_error_is_the_status_message_and_other_answers_are_refused() -> None:
    status = b'{"kind":"Status","status":"Failure","message":"services \\"pynchy-gateway\\" not found","code":404}'
    assert _parse("p", 404, status).error == 'HTTP 404: services "pynchy-gateway" not found'
    assert (
        _parse("p", 200, b"<html>").error
        == "not the gateway's status JSON (body: Invalid JSON: expected value at line 1 column 1)"
    )
    missing = _parse("p", 200, b'{"queueDepth": 1}')
    assert missing.health is None
    assert missing.error is not None
    assert missing.error.startswith("not the gateway's status JSON (store: ")


def test_an_unreachable_url_says_why(tmp_path: Path) -> None:
    probe = from_url(f"http://127.0.0.1:{free_port()}")
    assert probe.health is None
    assert probe.via.endswith("/status")
    assert (probe.error or "").startswith("ConnectionRefusedError: "), probe.error


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    store = Db(f"sqlite:///{tmp_path}/gateway.db")
    yield store
    store.close()


def _directory(*names: str) -> Directory:
    directory = Directory()
    for name in names:
        meta = {"name": name, "namespace": "home", "uid": f"uid-{name}", "creationTimestamp": "2026-12-01T00:00:00Z"}
        directory.on_event("ADDED", {"metadata": meta, "spec": {"channels": [{"local": {"name": name}}]}})
    return directory


def test_the_metrics_port_serves_status_with_the_store_and_the_queue(db: Db) -> None:
    runs = RunIndex()
    meta = {"name": "demo-1", "namespace": "home", "uid": "uid-r", "creationTimestamp": "2026-12-01T00:00:00Z"}
    runs.on_event("ADDED", {"metadata": meta, "spec": {"groupRef": {"name": "demo"}}, "status": {"phase": "Running"}})
    health = Health(db, _directory("demo", "quiet"), runs, TurnHub(db))

    async def main() -> GatewayProbe:
        for prompt in ("one", "two"):
            await db.call(turn_store.enqueue, "home", "demo", prompt)
        server = MetricsServer(new_registry(), routes={"/status": health.handle})
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.to_thread(from_url, f"http://127.0.0.1:{server.port}")
        finally:
            await server.stop()

    probe = asyncio.run(main())
    assert probe.error is None
    assert probe.health is not None
    assert probe.health.store.ok
    assert probe.health.store.latency_ms is not None
    assert (probe.health.queue_depth, probe.health.running_turns, probe.health.active_runs) == (2, 0, 1)
    assert probe.health.queued == {"home/demo": 2}  # Groups without queued turns are left out
    assert probe.health.pending_approvals == 0


def test_a_failing_or_stuck_store_is_reported_not_raised(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(session: Session) -> None:
        raise RuntimeError("disk I/O error\nmore detail")

    release = threading.Event()

    def stuck(session: Session) -> None:
        release.wait(10)

    health = Health(db, _directory("demo"), RunIndex(), TurnHub(db), store_timeout=0.2)

    def check(query: Any) -> GatewayHealth:
        monkeypatch.setattr("pynchy.gateway.health._select_one", query)
        return asyncio.run(health.health())

    failed = check(broken)
    assert (failed.store.ok, failed.store.error, failed.queue_depth) == (False, "RuntimeError: disk I/O error", None)
    try:
        slow = check(stuck)
    finally:
        release.set()  # the stuck query ends, so the store's thread is free again
    assert (slow.store.ok, slow.store.error, slow.queue_depth) == (False, "no answer within 0.2s", None)
    wire = slow.to_wire()
    assert set(wire) == {"store", "queueDepth", "runningTurns", "activeRuns", "queued", "pendingApprovals"}
    assert set(wire["store"]) == {"ok", "error", "latencyMs"}  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(
            b'{"store": {"ok": true, "latencyMs": 1}, "queueDepth": 0, "runningTurns": 0, '
            b'"activeRuns": 0, "somethingNew": [1]}'
        )

    def log_message(self, *args: object) -> None:
        pass


def test_fields_a_newer_gateway_adds_are_ignored() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = from_url(f"http://127.0.0.1:{server.server_port}/status")
    finally:
        server.shutdown()
        server.server_close()
    assert probe.error is None
    assert probe.health is not None
    assert probe.via == f"http://127.0.0.1:{server.server_port}/status"
