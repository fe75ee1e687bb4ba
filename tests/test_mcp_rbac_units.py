"""The gateway's per-Group access to MCP header Secrets: the pure Role/RoleBinding builder, the setting
naming the gateway's ServiceAccount, and the proxy's message when the API server refuses a Secret."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from pynchy.api.group import McpServer
from pynchy.api.resources import Group
from pynchy.gateway.mcpproxy import SecretHeaders
from pynchy.gateway.problems import RequestError
from pynchy.kube.api import KubeError
from pynchy.operator.build.group import GroupInputs, group_children, mcp_secret_names, mcp_secrets_access
from pynchy.operator.settings import OperatorSettings
from pynchy.settings import SettingsExit, load

REPO = Path(__file__).resolve().parents[1]
KEY = "unit-test-run-token-key-0123456789abcdefghijklmn"
SETTINGS = OperatorSettings(run_token_key=KEY)


def group_raw(*servers: dict[str, Any], name: str = "tools") -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": name, "namespace": "home", "uid": f"uid-{name}", "generation": 1},
        "spec": {"channels": [{"local": {"name": name}}], "agent": {"mcpServers": list(servers)}},
    }


def server(name: str, secret: str | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"name": name, "url": f"https://{name}.example.com/mcp"}
    if secret is not None:
        s["headersSecretRef"] = {"name": secret}
    return s


def children(raw: dict[str, Any], settings: OperatorSettings = SETTINGS) -> list[dict[str, Any]]:
    return group_children(Group.from_k8s(raw), raw, GroupInputs(), settings)


def test_no_role_when_no_secret_is_named() -> None:
    for raw in (group_raw(), group_raw(server("wiki"))):
        assert mcp_secrets_access(Group.from_k8s(raw), raw, SETTINGS) == []
        assert {c["kind"] for c in children(raw)} == {
            "ServiceAccount",
            "PersistentVolumeClaim",
            "ConfigMap",
            "NetworkPolicy",
        }


def test_role_names_exactly_the_secrets_sorted_and_once_each() -> None:
    raw = group_raw(server("zeta", "z-creds"), server("wiki"), server("alpha", "a-creds"), server("again", "z-creds"))
    g = Group.from_k8s(raw)
    assert mcp_secret_names(g) == ["a-creds", "z-creds"]
    role, binding = mcp_secrets_access(g, raw, SETTINGS)
    assert role["kind"] == "Role"
    assert role["metadata"]["name"] == "pynchy-mcp-tools"
    assert role["metadata"]["namespace"] == "home"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a-creds", "z-creds"]}
    ]
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["name"] == "pynchy-mcp-tools"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pynchy-mcp-tools"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pynchy-gateway", "namespace": "pynchy-system"}]
    for obj in (role, binding):
        meta = obj["metadata"]
        assert meta["labels"]["pynchy.dev/group"] == "tools"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "pynchy-operator"
        [owner] = meta["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Group",
            "tools",
            "uid-tools",
            True,
        )
    # Applied after the Group's other children, the Role before its binding.
    assert [c["kind"] for c in children(raw)][-2:] == ["Role", "RoleBinding"]


def test_the_binding_names_the_configured_gateway_account() -> None:
    settings = OperatorSettings(run_token_key=KEY, gateway_service_account="gw-ns/my-gateway")
    assert settings.gateway_service_account_ref == ("gw-ns", "my-gateway")
    raw = group_raw(server("notes", "notes"))
    _, binding = mcp_secrets_access(Group.from_k8s(raw), raw, settings)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "my-gateway", "namespace": "gw-ns"}]


@pytest.mark.parametrize(
    "value", ["pynchy-gateway", "/pynchy-gateway", "pynchy-system/", "a/b/c", "Pynchy/GW", "a b/c"]
)
def test_a_malformed_gateway_account_is_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PYNCHY_RUN_TOKEN_KEY", KEY)
    monkeypatch.setenv("PYNCHY_GATEWAY_SERVICE_ACCOUNT", value)
    with pytest.raises(SettingsExit) as exc:
        load(OperatorSettings)
    text = str(exc.value)
    assert "PYNCHY_GATEWAY_SERVICE_ACCOUNT" in text
    assert "<namespace>/<name>" in text
    assert "pynchy-system/pynchy-gateway" in text  # an example of the form


def test_the_default_gateway_account_is_the_one_the_manifests_deploy() -> None:
    rbac = [d for d in yaml.safe_load_all((REPO / "manifests/base/gateway/rbac.yaml").read_text()) if d]
    [sa] = [d for d in rbac if d["kind"] == "ServiceAccount"]
    deployment = yaml.safe_load((REPO / "manifests/base/gateway/deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    deployed = f"{sa['metadata']['namespace']}/{sa['metadata']['name']}"
    assert deployed == OperatorSettings.model_fields["gateway_service_account"].default
    kustomization = yaml.safe_load((REPO / "manifests/base/operator/kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert f"PYNCHY_GATEWAY_SERVICE_ACCOUNT={deployed}" in generator["literals"]
    # ... and the gateway's own ClusterRole no longer reads Secrets cluster-wide.
    [role] = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]


class Refusing:
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        raise KubeError(403, "Forbidden", f'secrets "{name}" is forbidden: User cannot get resource "secrets"')


def test_a_refused_secret_says_which_role_to_check() -> None:
    ref = McpServer.model_validate({"name": "notes", "url": "http://mcp.test/mcp", "headersSecretRef": {"name": "n"}})

    async def main() -> None:
        secrets = SecretHeaders(Refusing())  # type: ignore[arg-type]
        with pytest.raises(RequestError) as named:
            await secrets.get("home", ref, group="scribe")
        assert named.value.status == 502
        message = str(named.value)
        assert "Secret 'n' in namespace 'home' cannot be read: 403 Forbidden" in message
        assert "Role pynchy-mcp-scribe" in message
        assert "Group's status" in message
        with pytest.raises(RequestError, match=r"Role pynchy-mcp-<group> in namespace 'home'"):
            await secrets.get("home", ref)

    asyncio.run(main())
