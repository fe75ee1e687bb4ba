"""Group → ServiceAccount, agent-home PVC, config ConfigMap, NetworkPolicy, and (when its MCP servers
name header Secrets) the Role and RoleBinding that let the gateway read exactly those Secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pynchy.api.resources import Group
from pynchy.operator.build.common import (
    ANNOTATION_CONFIG_HASH,
    LABEL_COMPONENT,
    LABEL_GROUP,
    base_labels,
    content_hash,
    group_config_map_name,
    group_mcp_role_name,
    group_network_policy_name,
    group_sa_name,
    group_state_claim_name,
    metadata,
    volume_claim,
)
from pynchy.operator.settings import OperatorSettings

DIRECTIVE_SEPARATOR = "\n\n---\n\n"
# Every kind group_children emits. The Group reconciler lists these (and prunes what it controls
# and no longer wants) by this tuple, so a kind added here is also pruned.
OWNED_KINDS: tuple[str, ...] = (
    "ServiceAccount",
    "PersistentVolumeClaim",
    "ConfigMap",
    "NetworkPolicy",
    "Role",
    "RoleBinding",
)
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class GroupInputs:
    """Text the operator resolved from referenced ConfigMaps (or inline), in spec order."""

    memory: str | None = None
    directives: tuple[str, ...] = field(default=())


def agent_pod_selector(group: str) -> dict[str, str]:
    """Labels every agent pod of the Group carries (the AgentRun controller sets them)."""
    return {LABEL_GROUP: group, LABEL_COMPONENT: "agent"}


def _labels(group: str, component: str) -> dict[str, str]:
    return base_labels(component, **{LABEL_GROUP: group})


def service_account(g: Group, raw: dict[str, Any]) -> dict[str, Any]:
    name = g.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(group_sa_name(name), str(g.metadata.namespace), _labels(name, "agent-identity"), raw),
        # Agents never talk to the Kubernetes API: no token, and no RBAC bound to this account.
        "automountServiceAccountToken": False,
    }


def state_claim(g: Group, raw: dict[str, Any]) -> dict[str, Any]:
    state = g.spec.state
    name = g.metadata.name
    return volume_claim(
        group_state_claim_name(name),
        str(g.metadata.namespace),
        _labels(name, "agent-state"),
        raw,
        size=state.size,
        storage_class_name=state.storage_class_name,
        deletion_policy=state.deletion_policy,
    )


def agent_config(g: Group, inputs: GroupInputs, settings: OperatorSettings) -> dict[str, Any]:
    """What the agent runner reads from /etc/pynchy/group/agent.json (no secrets)."""
    agent = g.spec.agent
    return {
        "group": g.metadata.name,
        "admin": g.spec.admin,
        "model": agent.model,
        "allowedTools": list(agent.allowed_tools),
        "mcpServers": [
            {"name": m.name, "transport": m.transport, "url": m.url, "headersSecret": bool(m.headers_secret_ref)}
            for m in agent.mcp_servers
        ],
        # The runner asks the gateway only about the calls this does not allow outright.
        "toolPolicy": agent.tool_policy.model_dump(mode="json", by_alias=True) if agent.tool_policy else None,
        "maxTurns": agent.max_turns,
        "timeoutSeconds": agent.timeout_seconds,
        "idleTimeoutSeconds": agent.idle_timeout_seconds,
        "hasMemorySeed": inputs.memory is not None,
        "directiveCount": len(inputs.directives),
    }


def config_map(g: Group, raw: dict[str, Any], inputs: GroupInputs, settings: OperatorSettings) -> dict[str, Any]:
    name = g.metadata.name
    data = {"agent.json": json.dumps(agent_config(g, inputs, settings), indent=2, sort_keys=True) + "\n"}
    if inputs.memory is not None:
        data["CLAUDE.md"] = inputs.memory
    if inputs.directives:
        data["directives.md"] = DIRECTIVE_SEPARATOR.join(inputs.directives)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            group_config_map_name(name),
            str(g.metadata.namespace),
            _labels(name, "agent-config"),
            raw,
            {ANNOTATION_CONFIG_HASH: content_hash(data)},
        ),
        "data": data,
    }


def network_policy(g: Group, raw: dict[str, Any], settings: OperatorSettings) -> dict[str, Any]:
    """No ingress; egress to cluster DNS, the Pynchy gateway, and the CIDRs the Group allows."""
    name = g.metadata.name
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}},
                    "podSelector": {"matchLabels": dict(settings.dns_pod_labels)},
                }
            ],
            "ports": dns_ports,
        },
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.gateway_namespace}},
                    "podSelector": {"matchLabels": dict(settings.gateway_pod_labels)},
                }
            ],
            "ports": [{"protocol": "TCP", "port": settings.gateway_port}],
        },
    ]
    for rule in g.spec.network.egress:
        block: dict[str, Any] = {"cidr": rule.cidr}
        if rule.except_cidrs:
            block["except"] = list(rule.except_cidrs)
        entry: dict[str, Any] = {"to": [{"ipBlock": block}]}
        if rule.ports:
            entry["ports"] = [{"protocol": p.protocol, "port": p.port} for p in rule.ports]
        egress.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            group_network_policy_name(name), str(g.metadata.namespace), _labels(name, "agent-network"), raw
        ),
        "spec": {
            "podSelector": {"matchLabels": agent_pod_selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def mcp_secret_names(g: Group) -> list[str]:
    """The Secrets the Group's MCP servers take their headers from (headersSecretRef): sorted, unique."""
    return sorted({m.headers_secret_ref.name for m in g.spec.agent.mcp_servers if m.headers_secret_ref})


def mcp_secrets_access(g: Group, raw: dict[str, Any], settings: OperatorSettings) -> list[dict[str, Any]]:
    """A Role granting `get` on exactly the Group's MCP header Secrets, bound to the gateway's
    ServiceAccount (its MCP proxy adds those headers itself); nothing when the Group names none."""
    secrets = mcp_secret_names(g)
    if not secrets:
        return []
    name = g.metadata.name
    namespace = str(g.metadata.namespace)
    role_name = group_mcp_role_name(name)
    labels = _labels(name, "gateway-mcp-access")
    sa_namespace, sa_name = settings.gateway_service_account_ref
    role = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": metadata(role_name, namespace, labels, raw),
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": secrets}],
    }
    binding = {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": metadata(role_name, namespace, dict(labels), raw),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    }
    return [role, binding]


def group_children(
    g: Group, raw: dict[str, Any], inputs: GroupInputs, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """Every object a Group needs before an agent pod can run, in apply order."""
    return [
        service_account(g, raw),
        state_claim(g, raw),
        config_map(g, raw, inputs, settings),
        network_policy(g, raw, settings),
        *mcp_secrets_access(g, raw, settings),
    ]
