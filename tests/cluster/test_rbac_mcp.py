"""The gateway reads exactly the MCP header Secrets its Groups name, through the Role pynchy-mcp-<group>
the operator keeps per Group: against the real API server's RBAC, with the operator and the gateway's
credentials both under their production rules."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from cluster.helpers import AuditWindow, apply, describe, get, group, is_ready, resync, wait_for
from conftest import OPERATOR_USER
from pynchy.api.group import McpServer
from pynchy.gateway.mcpproxy import SecretHeaders
from pynchy.gateway.problems import RequestError
from pynchy.kube import official
from pynchy.kube.api import KubeApi
from pynchy.kube.controlplane import ControlPlane

ROLE = "pynchy-mcp-tools"


def mcp_group(*secrets: str) -> dict[str, Any]:
    servers = [
        {"name": f"s{i}", "url": f"http://mcp-{i}.test/mcp", "headersSecretRef": {"name": s}}
        for i, s in enumerate(secrets)
    ]
    servers.append({"name": "open", "url": "http://open.test/mcp"})  # no Secret: adds nothing to the Role
    return group("tools", agent={"mcpServers": servers})


class GatewayReader:
    """Secrets read with the gateway's own credentials: the status the API server answers."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.client = official.new_client_from_config(str(kubeconfig))
        self.core = CoreV1Api(self.client)
        self.namespace = namespace

    def status(self, name: str) -> int:
        try:
            self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            return int(exc.status or 0)
        return 200

    def readable(self, *names: str) -> dict[str, int]:
        return {n: self.status(n) for n in names}


def test_the_gateway_may_get_exactly_the_secrets_its_groups_name(
    control_plane: ControlPlane, namespace: str, gateway_kubeconfig: Path, operator: Any
) -> None:
    for name in ("a-creds", "b-creds"):
        control_plane.kubectl("-n", namespace, "create", "secret", "generic", name, "--from-literal=X-Api-Key=k")
    gw = GatewayReader(gateway_kubeconfig, namespace)
    assert gw.readable("a-creds", "b-creds") == {"a-creds": 403, "b-creds": 403}  # nothing cluster-wide

    apply(control_plane, namespace, mcp_group("a-creds", "a-creds"))
    role = wait_for(lambda: get(control_plane, "role", ROLE, namespace), what="the Role")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a-creds"]}
    ]
    binding = wait_for(lambda: get(control_plane, "rolebinding", ROLE, namespace), what="the RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pynchy-gateway", "namespace": "pynchy-system"}]
    g = get(control_plane, "group", "tools", namespace)
    assert g is not None
    for obj in (role, binding):
        [owner] = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("Group", g["metadata"]["uid"], True)
    wait_for(lambda: is_ready(control_plane, "group", "tools", namespace), what="Group Ready")
    wait_for(lambda: gw.readable("a-creds", "b-creds") == {"a-creds": 200, "b-creds": 403}, what="a readable, b not")
    # Only get, by name: no list, no watch, no other verb.
    assert _cannot_list(gw)
    # In sync: a resync writes nothing (the live Role and RoleBinding compare equal to the desired ones).
    window = AuditWindow(control_plane)
    resync(operator)
    assert window.writes(OPERATOR_USER, namespace) == [], describe(window.writes(OPERATOR_USER, namespace))

    # The proxy's refusal says where to look.
    ref = McpServer.model_validate({"name": "b", "url": "http://b.test/mcp", "headersSecretRef": {"name": "b-creds"}})

    async def refused() -> str:
        api = KubeApi(official.new_client_from_config(str(gateway_kubeconfig)))
        try:
            with pytest.raises(RequestError) as exc:
                await SecretHeaders(api).get(namespace, ref, group="tools")
            return str(exc.value)
        finally:
            api.close()

    message = asyncio.run(refused())
    assert "403" in message
    assert f"Role {ROLE} in namespace {namespace!r}" in message

    # The Group names b-creds instead: the Role follows.
    apply(control_plane, namespace, mcp_group("b-creds"))
    wait_for(lambda: gw.readable("a-creds", "b-creds") == {"a-creds": 403, "b-creds": 200}, what="b readable, a not")
    assert get(control_plane, "role", ROLE, namespace)["rules"][0]["resourceNames"] == ["b-creds"]

    # No Secret named any more: the operator prunes both.
    apply(control_plane, namespace, group("tools", agent={"mcpServers": [{"name": "open", "url": "http://o.test/"}]}))
    wait_for(
        lambda: (
            get(control_plane, "role", ROLE, namespace) is None
            and get(control_plane, "rolebinding", ROLE, namespace) is None
        ),
        what="Role and RoleBinding pruned",
    )
    wait_for(lambda: gw.readable("a-creds", "b-creds") == {"a-creds": 403, "b-creds": 403}, what="neither readable")

    # Named again, then the Group deleted: garbage collection removes them with it.
    apply(control_plane, namespace, mcp_group("a-creds", "b-creds"))
    wait_for(lambda: gw.readable("a-creds", "b-creds") == {"a-creds": 200, "b-creds": 200}, what="both readable")
    control_plane.kubectl("-n", namespace, "delete", "group", "tools")
    wait_for(
        lambda: (
            get(control_plane, "role", ROLE, namespace) is None
            and get(control_plane, "rolebinding", ROLE, namespace) is None
        ),
        # The garbage collector learns of a new kind (the CRDs, installed as the session starts) on its
        # next discovery resync, so the first Group deleted in a session can wait that long.
        timeout=90,
        what="Role and RoleBinding gone with the Group (kube-controller-manager's garbage collector)",
    )
    wait_for(lambda: gw.readable("a-creds", "b-creds") == {"a-creds": 403, "b-creds": 403}, what="neither readable")


def _cannot_list(gw: GatewayReader) -> bool:
    try:
        gw.core.list_namespaced_secret(gw.namespace)
    except ApiException as exc:
        return exc.status == 403
    return False


@pytest.mark.usefixtures("operator")
def test_a_deleted_role_is_restored(control_plane: ControlPlane, namespace: str, gateway_kubeconfig: Path) -> None:
    """The operator watches its Roles and RoleBindings as it does its other children."""
    control_plane.kubectl("-n", namespace, "create", "secret", "generic", "a-creds", "--from-literal=X-Api-Key=k")
    gw = GatewayReader(gateway_kubeconfig, namespace)
    apply(control_plane, namespace, mcp_group("a-creds"))
    wait_for(lambda: gw.status("a-creds") == 200, what="a readable")
    control_plane.kubectl("-n", namespace, "delete", "rolebinding", ROLE)
    control_plane.kubectl("-n", namespace, "delete", "role", ROLE)
    wait_for(
        lambda: get(control_plane, "role", ROLE, namespace) and get(control_plane, "rolebinding", ROLE, namespace),
        timeout=15,
        what="Role and RoleBinding re-created",
    )
    wait_for(lambda: gw.status("a-creds") == 200, what="a readable again")
