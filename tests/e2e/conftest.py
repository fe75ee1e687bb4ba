"""The whole path, for real: API server + operator + gateway + dev node + the Claude Code CLI,
with only the Anthropic API replaced by the scripted model."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import GATEWAY_SERVICE_ACCOUNT, RUN_TOKEN_KEY, make_gateway
from doubles.anthropic import ScriptedModel
from doubles.slack import BOT_TOKEN, OWNER, SIGNING_SECRET, SlackDouble
from pynchy.devnode import Address, DevNode, Sandbox
from pynchy.gateway.main import EmbeddedGateway
from pynchy.kube.controlplane import ControlPlane
from pynchy.operator.run import EmbeddedOperator

MODEL_KEY = "sk-ant-real-key-that-must-never-reach-a-pod"


def gateway_address(url: str) -> Address:
    """The gateway's host:port, relayed into every agent sandbox."""
    return Address.parse(urlsplit(url).netloc)


@dataclass
class Stack:
    plane: ControlPlane
    namespace: str
    model: ScriptedModel
    gateway: EmbeddedGateway
    operator: EmbeddedOperator
    node: DevNode
    data_dir: Path


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@contextmanager
def running_stack(
    plane: ControlPlane,
    namespace: str,
    operator_kubeconfig: Path,
    gateway_kubeconfig: Path,
    model: ScriptedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    isolation: bool = True,
    **gateway_settings: object,
) -> Iterator[Stack]:
    """Gateway (with `gateway_settings`), operator and dev node for `namespace`, stopped afterwards."""
    gateway = make_gateway(
        gateway_kubeconfig, tmp_path, model.base_url, MODEL_KEY, namespaces=[namespace], **gateway_settings
    ).start()
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", RUN_TOKEN_KEY)
    monkeypatch.setenv("PYNCHY_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("PYNCHY_NAMESPACES", namespace)
    monkeypatch.setenv("PYNCHY_WORKERS", "4")
    monkeypatch.setenv("PYNCHY_GATEWAY_SERVICE_ACCOUNT", GATEWAY_SERVICE_ACCOUNT)  # gateway_kubeconfig's identity
    operator = EmbeddedOperator().start()
    node_name = "dev-" + hashlib.sha1(namespace.encode()).hexdigest()[:10]
    node = DevNode(
        plane.kubeconfig,
        tmp_path / "node",
        name=node_name,
        namespaces=[namespace],
        sandbox=Sandbox(relays=(gateway_address(gateway.url),)) if isolation else None,
    )
    node.start()
    s = Stack(plane, namespace, model, gateway, operator, node, tmp_path / "node")
    try:
        yield s
    finally:
        node.stop()
        s.operator.stop()
        gateway.stop()


@pytest.fixture
def stack(
    control_plane: ControlPlane,
    namespace: str,
    operator_kubeconfig: Path,
    gateway_kubeconfig: Path,
    model: ScriptedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    with running_stack(
        control_plane, namespace, operator_kubeconfig, gateway_kubeconfig, model, tmp_path, monkeypatch
    ) as s:
        yield s


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble() as double:
        yield double


@pytest.fixture
def slack_stack(
    control_plane: ControlPlane,
    namespace: str,
    operator_kubeconfig: Path,
    gateway_kubeconfig: Path,
    model: ScriptedModel,
    slack: SlackDouble,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    """e2e.conftest's stack, with the gateway's Slack channel pointed at the double."""
    with running_stack(
        control_plane,
        namespace,
        operator_kubeconfig,
        gateway_kubeconfig,
        model,
        tmp_path,
        monkeypatch,
        owner=OWNER,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
    ) as stack:
        yield stack
