"""Workspace → PVC (with its deletion policy) and a truthful status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import Workspace
from pynchy.operator.build.common import LABEL_MANAGED_BY, LABEL_WORKSPACE, MANAGED_BY, workspace_claim_name
from pynchy.operator.build.workspace import workspace_children
from pynchy.operator.checks import CheckResult, check_workspace
from pynchy.operator.children import sync_children
from pynchy.operator.claims import claim_usable
from pynchy.operator.conditions import Cond
from pynchy.operator.kubeapi import KubeApi, KubeError
from pynchy.operator.status import NOT_ACCEPTED, acceptance, conditions_for, publish, publish_invalid_spec


async def reconcile_workspace(api: KubeApi, raw: dict[str, Any]) -> CheckResult:
    meta = raw["metadata"]
    generation = int(meta.get("generation", 0))
    existing = (raw.get("status") or {}).get("conditions") or []
    try:
        ws = Workspace.from_k8s(raw)
    except ValidationError as exc:
        return await publish_invalid_spec(api, raw, exc)

    checks = await check_workspace(api, ws)
    accepted = acceptance(checks.problems)
    ready = NOT_ACCEPTED
    status: dict[str, Any] = {"observedGeneration": generation}
    if accepted.status:
        try:
            live = await sync_children(
                api,
                meta["namespace"],
                {LABEL_WORKSPACE: meta["name"], LABEL_MANAGED_BY: MANAGED_BY},
                ("PersistentVolumeClaim",),
                workspace_children(ws, raw),
                meta["uid"],
            )
        except KubeError as exc:
            if exc.temporary:
                raise
            ready = Cond("Ready", False, "ApplyFailed", f"the API server refused the volume claim: {exc.message}")
        else:
            claim = live[f"PersistentVolumeClaim/{workspace_claim_name(meta['name'])}"]
            usable, why = await claim_usable(api, claim)
            ready = Cond("Ready", usable, "VolumeReady" if usable else "ClaimPending", why)
            status["claimName"] = claim["metadata"]["name"]
        if ws.spec.git:
            status["gitUrl"] = ws.spec.git.url
            status["gitBranch"] = ws.spec.git.branch
    status["conditions"] = conditions_for(existing, accepted, ready, generation)
    await publish(api, raw, status)
    return checks
