"""Metrics end to end: a real Prometheus (Debian's package) scrapes a real gateway and the real operator,
both on the real API server, while the test sends messages through the local channel and plays the
agent pod. The series Prometheus stores must show what happened; the alert rules must load, evaluate
and (in promtool's rule unit tests) fire exactly when they should."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cluster.gateway_helpers import agent, finish_turn, make_run, token_for, wait_gateway_sees
from cluster.helpers import apply, group
from conftest import REPO, make_gateway
from pynchy.gateway.channels.base import Inbound
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane, free_port
from pynchy.operator.run import EmbeddedOperator

RULES = REPO / "manifests" / "components" / "monitoring" / "rules.yaml"
CHAT_TOKEN = "metrics-chat-token-for-tests-0123456789"


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    assert Path(path).exists(), f"{name} is missing: apt-get install prometheus (./scripts/test installs it)"
    return path


class Prometheus:
    """A Prometheus server of its own: config, storage and port in the test's tmp_path."""

    def __init__(self, tmp_path: Path, targets: dict[str, str]) -> None:
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [address]}]}
                for job, address in targets.items()
            ],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    _binary("prometheus"),
                    f"--config.file={self.dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait(lambda: self._ready(), "Prometheus ready", timeout=60)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200, body
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query: the value of each series, keyed by its labels (sorted, as one string)."""
        result = self.api("query", query=expr)["result"]
        return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())): float(s["value"][1]) for s in result}

    def value(self, expr: str) -> float | None:
        values = list(self.query(expr).values())
        assert len(values) <= 1, f"{expr} gives several series: {values}"
        return values[0] if values else None

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 45.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def wait_value(self, expr: str, expected: float, timeout: float = 45.0) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.value(expr))
            return seen[-1] == expected

        try:
            self.wait(check, f"{expr} == {expected}", timeout)
        except AssertionError:
            raise AssertionError(f"{expr}: expected {expected}, Prometheus had {seen[-5:]}") from None


@pytest.fixture
def stack(
    control_plane: ControlPlane, operator_env: None, gateway_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[tuple[EmbeddedGateway, EmbeddedOperator, Prometheus]]:
    with contextlib.ExitStack() as stack:
        operator = EmbeddedOperator(metrics_port=0).start()
        stack.callback(operator.stop)
        gw: EmbeddedGateway = make_gateway(  # type: ignore[assignment]
            gateway_kubeconfig,
            tmp_path,
            "http://127.0.0.1:9",
            "sk-test",
            chat_token=CHAT_TOKEN,
            long_poll_seconds=30,
            namespaces=[namespace],
            metrics_port=free_port(),
        )
        gw.start()
        stack.callback(gw.stop)
        targets = {
            "pynchy-gateway": gw.metrics_url.removeprefix("http://").removesuffix("/metrics"),
            "pynchy-operator": operator.metrics_url.removeprefix("http://").removesuffix("/metrics"),
        }
        prometheus = Prometheus(tmp_path, targets).start()
        stack.callback(prometheus.stop)
        yield gw, operator, prometheus


def test_prometheus_scrapes_what_the_gateway_and_the_operator_did(
    control_plane: ControlPlane, namespace: str, stack: tuple[EmbeddedGateway, EmbeddedOperator, Prometheus]
) -> None:
    gw, _operator, prom = stack
    assert gw.gateway is not None
    g = f"{namespace}/watched"
    prom.wait_value('up{job="pynchy-gateway"}', 1.0)
    prom.wait_value('up{job="pynchy-operator"}', 1.0)

    # The operator reconciles the Group (and its run, below): counted per kind, timed.
    apply(control_plane, namespace, group("watched"))
    prom.wait(
        lambda: (prom.value('pynchy_operator_reconciles_total{kind="Group",result="success"}') or 0) >= 1,
        "a successful Group reconcile",
    )
    prom.wait(lambda: (prom.value('pynchy_operator_objects{kind="Group"}') or 0) >= 1, "the Group counted")
    assert (prom.value('pynchy_operator_reconcile_duration_seconds_count{kind="Group"}') or 0) >= 1
    assert prom.value('pynchy_operator_reconcile_errors_total{kind="Group"}') == 0.0
    assert prom.value("pynchy_operator_workqueue_depth") is not None

    # A live run of the Group (so the gateway creates none) and the pod's run API client.
    wait_gateway_sees(gw, namespace, "group", "watched")
    run = make_run(control_plane, namespace, "watched-run", "watched")
    wait_gateway_sees(gw, namespace, "run", "watched-run")
    pod = agent(gw, token_for(run, "watched"))
    prom.wait_value(f'pynchy_agent_runs_active{{group="{g}"}}', 1.0)

    # Messages in through the local channel: one queued, its retry a duplicate; one from a channel
    # no Group is bound to, ignored.
    chat = httpx.Client(base_url=gw.url + "/v1/chat", headers={"Authorization": f"Bearer {CHAT_TOKEN}"}, timeout=30)
    for _ in range(2):
        r = chat.post("/watched/messages", json={"text": "hello metrics", "clientMessageId": "m-1"})
        assert r.status_code in (200, 201, 202), r.text
    gw.call(gw.gateway.accept(Inbound("local", "nobody-here", "hi", "owner", "local:m-2")))
    prom.wait_value('pynchy_inbound_events_total{channel="local",outcome="queued"}', 1.0)
    prom.wait_value('pynchy_inbound_events_total{channel="local",outcome="duplicate"}', 1.0)
    prom.wait_value('pynchy_inbound_events_total{channel="local",outcome="ignored"}', 1.0)

    # The queue depth is read at scrape time: one turn waits, then a run holds it, then none.
    prom.wait_value(f'pynchy_turns_queued{{group="{g}"}}', 1.0)
    r = pod.get("/v1/run/turns/next", params={"wait": 30})
    assert r.status_code == 200, r.text
    turn = r.json()
    assert turn["prompt"] == "hello metrics"
    prom.wait_value(f'pynchy_turns_queued{{group="{g}"}}', 0.0)
    prom.wait_value(f'pynchy_turns_running{{group="{g}"}}', 1.0)
    prom.wait_value(f'pynchy_turn_queue_wait_seconds_count{{group="{g}"}}', 1.0)

    finish_turn(pod, turn["id"], "metrics are in")
    prom.wait_value(f'pynchy_turns_running{{group="{g}"}}', 0.0)
    prom.wait_value(f'pynchy_turn_first_event_seconds_count{{group="{g}"}}', 1.0)
    prom.wait_value(f'pynchy_turn_duration_seconds_count{{group="{g}",outcome="ok"}}', 1.0)
    # Every interval is measured from the queueing: wait <= first event <= complete.
    wait_s = prom.value(f'pynchy_turn_queue_wait_seconds_sum{{group="{g}"}}')
    first_s = prom.value(f'pynchy_turn_first_event_seconds_sum{{group="{g}"}}')
    done_s = prom.value(f'pynchy_turn_duration_seconds_sum{{group="{g}",outcome="ok"}}')
    assert wait_s is not None
    assert first_s is not None
    assert done_s is not None
    assert 0 <= wait_s <= first_s <= done_s < 120
    # The reply went through the delivery loop to the local channel, without a failure.
    prom.wait(lambda: (prom.value('pynchy_delivery_attempts_total{channel="local"}') or 0) >= 1, "a delivery attempt")
    assert not prom.query('pynchy_delivery_failures_total{channel="local"} > 0')

    # The alert rules loaded and evaluate against these series without error; none fires.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        rules = [rule for grp in prom.api("rules")["groups"] for rule in grp["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = prom.wait(rules_evaluated, "every rule evaluated")
    assert {r["name"] for r in rules} >= {"PynchyBudgetReached", "PynchyOperatorNotReconciling"}
    assert all(r["state"] == "inactive" for r in rules), [(r["name"], r["state"]) for r in rules]


# -- the rules file: promtool ---------------------------------------------------------------------


def test_promtool_accepts_the_rules_file() -> None:
    proc = subprocess.run(
        [_binary("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout + proc.stderr


# Minutes of synthetic series (promtool's `a+bxN` notation); evaluated at 50m. The first case has
# every problem for one Group, channel or kind and a calm counterpart of each that must not alert.
TROUBLE = {
    "interval": "1m",
    "input_series": [
        {"series": 'pynchy_budget_refusals_total{group="home/spender"}', "values": "0+1x60"},
        {"series": 'pynchy_budget_refusals_total{group="home/thrifty"}', "values": "0x60"},
        {"series": 'pynchy_delivery_gave_up_total{channel="slack"}', "values": "0x40 1x20"},
        {"series": 'pynchy_delivery_gave_up_total{channel="local"}', "values": "1x60"},  # long ago
        {"series": 'pynchy_agent_runs_finished_total{group="home/crashy",phase="Failed"}', "values": "0+1x60"},
        {"series": 'pynchy_agent_runs_finished_total{group="home/calm",phase="Failed"}', "values": "0x45 1x15"},
        {"series": 'pynchy_agent_runs_finished_total{group="home/calm",phase="Succeeded"}', "values": "0+5x60"},
        {"series": 'pynchy_operator_reconcile_errors_total{kind="AgentRun"}', "values": "0+1x60"},
        {"series": 'pynchy_operator_reconcile_errors_total{kind="Group"}', "values": "0+1x30 30x30"},  # recovered
        {"series": 'pynchy_operator_objects{kind="Group"}', "values": "5x60"},
        {"series": 'pynchy_operator_reconciles_total{kind="Group",result="success"}', "values": "0+1x5 5x55"},
        {"series": 'up{job="pynchy-operator",instance="op:9090"}', "values": "1x60"},
        {"series": 'up{job="pynchy-gateway",instance="gw:8080"}', "values": "1x30 0x30"},
    ],
    "promql_expr_test": [
        {
            "expr": 'ALERTS{alertstate="firing"}',
            "eval_time": "50m",
            "exp_samples": [
                {"labels": f'ALERTS{{alertname="{name}",alertstate="firing",{labels}}}', "value": 1}
                for name, labels in [
                    ("PynchyBudgetReached", 'group="home/spender",severity="info"'),
                    ("PynchyDeliveriesGivingUp", 'channel="slack",severity="warning"'),
                    ("PynchyGroupRunsFailing", 'group="home/crashy",severity="warning"'),
                    ("PynchyOperatorReconcileErrors", 'kind="AgentRun",severity="warning"'),
                    ("PynchyOperatorNotReconciling", 'severity="critical"'),
                    ("PynchyGatewayDown", 'instance="gw:8080",job="pynchy-gateway",severity="critical"'),
                ]
            ],
        },
        # `for: 10m` holds an alert back: reconciles stopped at 5m, so at 38m it is pending, not firing.
        {
            "expr": 'ALERTS{alertname="PynchyOperatorNotReconciling"}',
            "eval_time": "38m",
            "exp_samples": [
                {
                    "labels": 'ALERTS{alertname="PynchyOperatorNotReconciling",alertstate="pending",'
                    'severity="critical"}',
                    "value": 1,
                }
            ],
        },
    ],
}
HEALTHY = {
    "interval": "1m",
    "input_series": [
        {"series": 'pynchy_operator_objects{kind="Group"}', "values": "5x60"},
        {"series": 'pynchy_operator_reconciles_total{kind="Group",result="success"}', "values": "0+2x60"},
        {"series": 'pynchy_operator_reconcile_errors_total{kind="Group"}', "values": "0x60"},
        {"series": 'pynchy_agent_runs_finished_total{group="home/demo",phase="Succeeded"}', "values": "0+1x60"},
        {"series": 'up{job="pynchy-operator",instance="op:9090"}', "values": "1x60"},
        {"series": 'up{job="pynchy-gateway",instance="gw:8080"}', "values": "1x60"},
    ],
    "promql_expr_test": [{"expr": "ALERTS", "eval_time": "50m", "exp_samples": []}],
}


def test_alerts_fire_exactly_when_they_should(tmp_path: Path) -> None:
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [TROUBLE, HEALTHY]}
    tests = tmp_path / "rules_test.yaml"
    tests.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run(
        [_binary("promtool"), "test", "rules", str(tests)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
