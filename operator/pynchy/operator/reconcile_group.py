"""Group → ServiceAccount, state PVC, ConfigMap, NetworkPolicy, and a truthful status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import Group
from pynchy.operator.build.common import (
    LABEL_GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    group_config_map_name,
    group_network_policy_name,
    group_sa_name,
    group_state_claim_name,
)
from pynchy.operator.build.group import group_children
from pynchy.operator.checks import CheckResult, check_group
from pynchy.operator.children import sync_children
from pynchy.operator.claims import claim_usable
from pynchy.operator.conditions import Cond, condition
from pynchy.operator.kubeapi import KubeApi, KubeError
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.status import NOT_ACCEPTED, acceptance, conditions_for, publish, publish_invalid_spec

CHILD_KINDS = ("ServiceAccount", "PersistentVolumeClaim", "ConfigMap", "NetworkPolicy")


async def reconcile_group(api: KubeApi, raw: dict[str, Any], settings: OperatorSettings) -> CheckResult:
    meta = raw["metadata"]
    generation = int(meta.get("generation", 0))
    existing = (raw.get("status") or {}).get("conditions") or []
    try:
        g = Group.from_k8s(raw)
    except ValidationError as exc:
        return await publish_invalid_spec(api, raw, exc)

    checks = await check_group(api, g, settings)
    accepted = acceptance(checks.problems)
    status: dict[str, Any] = {"observedGeneration": generation}
    ready = NOT_ACCEPTED
    if accepted.status:
        name = meta["name"]
        try:
            live = await sync_children(
                api,
                meta["namespace"],
                {LABEL_GROUP: name, LABEL_MANAGED_BY: MANAGED_BY},
                CHILD_KINDS,
                group_children(g, raw, checks.inputs, settings),
                meta["uid"],
            )
        except KubeError as exc:
            if exc.temporary:
                raise
            ready = Cond("Ready", False, "ApplyFailed", f"the API server refused a child object: {exc.message}")
        else:
            status["children"] = {
                "serviceAccount": group_sa_name(name),
                "stateClaim": group_state_claim_name(name),
                "configMap": group_config_map_name(name),
                "networkPolicy": group_network_policy_name(name),
            }
            ready = await _readiness(api, live[f"PersistentVolumeClaim/{group_state_claim_name(name)}"], checks)
    status["conditions"] = conditions_for(existing, accepted, ready, generation)
    await publish(api, raw, status)
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
