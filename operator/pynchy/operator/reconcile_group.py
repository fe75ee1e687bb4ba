"""Group → ServiceAccount, state PVC, ConfigMap, NetworkPolicy, the gateway's Role for the MCP header
Secrets (when any are named), and a truthful status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import Group
from pynchy.kube.api import KubeApi
from pynchy.operator.build.common import (
    LABEL_GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    group_config_map_name,
    group_network_policy_name,
    group_sa_name,
    group_state_claim_name,
)
from pynchy.operator.build.group import OWNED_KINDS, group_children
from pynchy.operator.checks import CheckResult, check_group
from pynchy.operator.claims import claim_usable
from pynchy.operator.conditions import Cond, condition
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.status import (
    NOT_ACCEPTED,
    acceptance,
    publish,
    publish_invalid_spec,
    status_fields,
    sync_or_refusal,
)


async def reconcile_group(api: KubeApi, raw: dict[str, Any], settings: OperatorSettings) -> CheckResult:
    name = raw["metadata"]["name"]
    try:
        g = Group.from_k8s(raw)
    except ValidationError as exc:
        return await publish_invalid_spec(api, raw, exc)

    checks = await check_group(api, g, settings)
    accepted = acceptance(checks.problems)
    ready = NOT_ACCEPTED
    fields: dict[str, Any] = {}
    if accepted.status:
        selector = {LABEL_GROUP: name, LABEL_MANAGED_BY: MANAGED_BY}
        live, refusal = await sync_or_refusal(
            api, raw, selector, OWNED_KINDS, group_children(g, raw, checks.inputs, settings)
        )
        if live is None:
            ready = refusal or NOT_ACCEPTED
        else:
            fields["children"] = {
                "serviceAccount": group_sa_name(name),
                "stateClaim": group_state_claim_name(name),
                "configMap": group_config_map_name(name),
                "networkPolicy": group_network_policy_name(name),
            }
            ready = await _readiness(api, live[f"PersistentVolumeClaim/{group_state_claim_name(name)}"], checks)
    await publish(api, raw, status_fields(raw, accepted, ready, **fields))
    return checks


async def _readiness(api: KubeApi, claim: dict[str, Any], checks: CheckResult) -> Cond:
    usable, why = await claim_usable(api, claim)
    if not usable:
        return Cond("Ready", False, "ClaimPending", why)
    if checks.workspace is not None:
        ws_ready = condition((checks.workspace.get("status") or {}).get("conditions"), "Ready")
        if not ws_ready or ws_ready.get("status") != "True":
            detail = ws_ready["message"] if ws_ready else "it has not been reconciled yet"
            return Cond(
                "Ready",
                False,
                "WorkspaceNotReady",
                f"Workspace {checks.workspace['metadata']['name']} is not ready: {detail}",
            )
    return Cond("Ready", True, "Ready", "Agent environment is ready. " + why)
