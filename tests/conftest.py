"""Shared fixtures: a real control plane for the session, a namespace per test."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynchy.dev.supervisor import LOCAL_PATH_CLASS
from pynchy.kube.binaries import ensure_binaries
from pynchy.kube.controlplane import ControlPlane

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # plain data modules such as invalid_cases


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager built from source, on loopback.

    Never skipped: if the binaries cannot be built, every cluster test errors with the reason.
    """
    bin_dir = ensure_binaries()
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        plane.apply_crds(REPO / "crds")
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"t-{slug}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


OPERATOR_USER = "system:serviceaccount:pynchy-system:pynchy-operator"


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane) -> Path:
    """Credentials of the operator's ServiceAccount, bound to exactly manifests/base/operator/rbac.yaml."""
    control_plane.kubectl("create", "namespace", "pynchy-system", check=False)
    control_plane.kubectl("apply", "-f", str(REPO / "manifests/base/operator/rbac.yaml"))
    control_plane.kubectl("apply", "-f", "-", input=LOCAL_PATH_CLASS)
    return control_plane.service_account_kubeconfig("pynchy-system", "pynchy-operator")


@pytest.fixture
def operator_env(operator_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    monkeypatch.setenv("PYNCHY_HOST_PATH_ALLOWLIST", "/srv/pynchy")
    monkeypatch.setenv("PYNCHY_WORKERS", "4")
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", RUN_TOKEN_KEY)
    # Whom the Groups' MCP Roles bind: the identity of gateway_kubeconfig.
    monkeypatch.setenv("PYNCHY_GATEWAY_SERVICE_ACCOUNT", GATEWAY_SERVICE_ACCOUNT)


@pytest.fixture
def operator(operator_env: None) -> Iterator[object]:
    """The real operator, in-process, under its production RBAC."""
    from pynchy.operator.run import EmbeddedOperator

    op = EmbeddedOperator().start()
    try:
        yield op
    finally:
        op.stop()


# Shared by the operator (which signs run tokens) and the gateway (which verifies them).
RUN_TOKEN_KEY = "pynchy-test-run-token-key-0123456789abcdef0123456"
# The gateway's ServiceAccount (as in manifests/base/gateway/rbac.yaml), namespace/name.
GATEWAY_SERVICE_ACCOUNT = "pynchy-system/pynchy-gateway"


@pytest.fixture(scope="session")
def gateway_kubeconfig(control_plane: ControlPlane) -> Path:
    """Credentials of the gateway's ServiceAccount, bound to exactly manifests/base/gateway/rbac.yaml."""
    control_plane.kubectl("create", "namespace", "pynchy-system", check=False)
    control_plane.kubectl("apply", "-f", str(REPO / "manifests/base/gateway/rbac.yaml"))
    return control_plane.service_account_kubeconfig(*GATEWAY_SERVICE_ACCOUNT.split("/"))


def make_gateway(kubeconfig: Path, data_dir: Path, upstream: str, api_key: str | None, **overrides: object) -> object:
    """An (unstarted) in-process gateway on a free loopback port with its own SQLite store."""
    from pynchy.gateway.main import EmbeddedGateway

    settings: dict[str, object] = {
        "run_token_key": RUN_TOKEN_KEY,
        "database_url": f"sqlite:///{data_dir}/gateway.db",
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "anthropic_api_key": api_key,
        "model_upstream_url": upstream,
        "metrics_port": 0,  # tests that scrape pass a free port
    }
    return EmbeddedGateway(kubeconfig=kubeconfig, **(settings | overrides))
