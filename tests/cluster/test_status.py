"""`pynchy status` as a process against the real API server, under the read-only roles docs/install.md
documents, with the real operator and a real gateway (its /status on the metrics port, reached with
--gateway-url: the API server's service proxy refuses loopback endpoints, so that path is tested on the
real node, tests/node/test_conversation.py). Healthy, the gateway unreachable (1), and the API server
unreachable (3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.gateway_helpers import make_run, wait_gateway_sees
from cluster.helpers import apply, get, group, is_ready, wait_for
from cluster.status_helpers import pynchy_status, reader_kubeconfig, status_json
from conftest import make_gateway
from pynchy.clusterstatus.connect import connect
from pynchy.clusterstatus.gateway import via_service_proxy
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane, free_port


@pytest.fixture
def gateway(gateway_kubeconfig: Path, tmp_path: Path, namespace: str) -> Iterator[EmbeddedGateway]:
    gw: EmbeddedGateway = make_gateway(  # type: ignore[assignment]
        gateway_kubeconfig, tmp_path, "http://127.0.0.1:9", "sk-test", namespaces=[namespace], metrics_port=free_port()
    )
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def reader(control_plane: ControlPlane) -> Path:
    kubeconfig = reader_kubeconfig(control_plane)
    # Right after the API server starts, custom resources answer 429 "storage is (re)initializing"
    # for a moment; `pynchy status` reports that (exit 3) rather than wait, so the test waits first.
    wait_for(
        lambda: control_plane.kubectl("get", "groups,agentruns", "-A", check=False).returncode == 0,
        what="custom resources served",
    )
    return kubeconfig


def test_status_shows_groups_runs_the_queue_and_the_store(
    control_plane: ControlPlane, operator: object, gateway: EmbeddedGateway, reader: Path, namespace: str
) -> None:
    gw = gateway
    assert gw.gateway is not None
    apply(control_plane, namespace, group("home"))
    wait_for(lambda: is_ready(control_plane, "group", "home", namespace), timeout=60, what="Group home Ready")
    wait_gateway_sees(gw, namespace, "group", "home")
    # A live run of the Group (so the gateway creates none) and one turn waiting for it.
    make_run(control_plane, namespace, "home-run", "home")
    wait_gateway_sees(gw, namespace, "run", "home-run")
    cost = json.dumps({"status": {"usage": {"costUSD": 0.25}}})  # as the gateway reports a run's usage
    patch = ["patch", "agentrun", "home-run", "-n", namespace, "--subresource=status", "--type=merge", "-p", cost]
    control_plane.kubectl(*patch)
    gw.call(gw.gateway.submit(namespace, "home", "hello status"))
    base = gw.metrics_url.removesuffix("/metrics")

    code, report = status_json("--kubeconfig", str(reader), "-n", namespace, "--gateway-url", base)
    assert code == 0, report["problems"]
    assert (report["exit_code"], report["problems"], report["api_error"]) == (0, [], None)
    assert report["credentials"] == f"kubeconfig {reader}"
    [home] = report["groups"]
    assert (home["namespace"], home["name"], home["ready"], home["channels"]) == (
        namespace,
        "home",
        "True",
        "local:home",
    )
    [run] = report["runs"]
    assert (run["name"], run["group"], run["cost_usd"], run["turns"]) == ("home-run", "home", 0.25, 0)
    health = report["gateway"]["health"]
    assert report["gateway"]["error"] is None
    assert health["store"]["ok"] is True
    assert health["store"]["latency_ms"] >= 0
    assert (health["queue_depth"], health["active_runs"]) == (1, 1)
    assert health["queued"] == {f"{namespace}/home": 1}
    assert health["pending_approvals"] == 0

    # The gateway writes the Group's spend (no budget here) into its status, and status shows it.
    wait_for(
        lambda: ((get(control_plane, "group", "home", namespace) or {}).get("status") or {}).get("spend"),
        what="the gateway wrote the Group's spend",
    )
    proc = pynchy_status("--kubeconfig", str(reader), "-n", namespace, "--gateway-url", base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Cluster {control_plane.server} (kubeconfig {reader}); namespace {namespace}")
    [row] = [ln for ln in lines if ln.strip().startswith(namespace) and " home " in f"{ln} " and "local:home" in ln]
    assert row.split()[2:4] == ["True", "local:home"]
    assert row.split()[-3:] == ["$0.00", "$0.00", "none"]  # today, this month, budget
    assert any("home-run" in ln and "$0.25" in ln for ln in lines), proc.stdout
    assert f"Gateway ({base}/status): store ok (" in proc.stdout
    assert "1 queued turn, 0 running; 1 active run; pending approvals 0" in proc.stdout
    assert lines[-1] == "Healthy."


def test_an_unreachable_gateway_is_one_line_and_degraded(
    control_plane: ControlPlane, reader: Path, namespace: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc = pynchy_status("--kubeconfig", str(reader), "-n", namespace, "--gateway-url", dead)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("Gateway")]
    assert line.startswith(f"Gateway: unreachable through {dead}/status: ConnectionRefusedError: "), line
    assert "No Groups." in proc.stdout

    # Without --gateway-url: the API server's service proxy, which the reader may use; this cluster
    # has no gateway Service, so the proxy answers 404 (not 403: the documented Role is enough).
    code, report = status_json("--kubeconfig", str(reader), "-n", namespace)
    assert code == 1
    assert report["gateway"]["via"] == "the API server's service proxy (pynchy-system/pynchy-gateway:metrics)"
    assert report["gateway"]["error"] == 'HTTP 404: services "pynchy-gateway" not found', report["gateway"]
    assert report["problems"] == [
        f"gateway unreachable through {report['gateway']['via']}: {report['gateway']['error']}"
    ]
    # The Role names the metrics port only: the run API's port is not the reader's to proxy.
    conn = connect(reader)
    try:
        refused = via_service_proxy(conn.client, port="http")
    finally:
        conn.close()
    assert (refused.error or "").startswith('HTTP 403: services "pynchy-gateway:http" is forbidden'), refused.error


def test_an_unreachable_api_server_exits_3(control_plane: ControlPlane, tmp_path: Path) -> None:
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    proc = pynchy_status("--kubeconfig", str(dead))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"pynchy status: cannot read the cluster (kubeconfig {dead}): "), line
    assert "Connection refused" in line, line
    code, report = status_json("--kubeconfig", str(dead))
    assert (code, report["exit_code"], report["gateway"], report["groups"]) == (3, 3, None, [])
    assert report["problems"] == [f"cannot read the cluster: {report['api_error']}"]

    # Credentials the API server refuses to let read Groups are "cannot read the cluster" too.
    stranger = control_plane.service_account_kubeconfig("default", "stranger")
    code, report = status_json("--kubeconfig", str(stranger))
    assert code == 3
    assert report["api_error"].startswith("403 Forbidden: groups.pynchy.dev is forbidden"), report["api_error"]
