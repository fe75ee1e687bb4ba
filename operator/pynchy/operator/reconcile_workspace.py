"""Workspace → PVC (with its deletion policy) and a truthful status."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import Workspace
from pynchy.kube.api import KubeApi
from pynchy.operator.build.common import LABEL_MANAGED_BY, LABEL_WORKSPACE, MANAGED_BY, workspace_claim_name
from pynchy.operator.build.workspace import OWNED_KINDS, workspace_children
from pynchy.operator.checks import CheckResult, check_workspace
from pynchy.operator.claims import claim_usable
from pynchy.operator.conditions import Cond
from pynchy.operator.status import (
    NOT_ACCEPTED,
    acceptance,
    publish,
    publish_invalid_spec,
    status_fields,
    sync_or_refusal,
)


async def reconcile_workspace(api: KubeApi, raw: dict[str, Any]) -> CheckResult:
    meta = raw["metadata"]
    try:
        ws = Workspace.from_k8s(raw)
    except ValidationError as exc:
        return await publish_invalid_spec(api, raw, exc)

    checks = await check_workspace(api, ws)
    accepted = acceptance(checks.problems)
    ready = NOT_ACCEPTED
    fields: dict[str, Any] = {}
    if accepted.status:
        selector = {LABEL_WORKSPACE: meta["name"], LABEL_MANAGED_BY: MANAGED_BY}
        live, refusal = await sync_or_refusal(api, raw, selector, OWNED_KINDS, workspace_children(ws, raw))
        if live is None:
            ready = refusal or NOT_ACCEPTED
        else:
            claim = live[f"PersistentVolumeClaim/{workspace_claim_name(meta['name'])}"]
            usable, why = await claim_usable(api, claim)
            ready = Cond("Ready", usable, "VolumeReady" if usable else "ClaimPending", why)
            fields["claimName"] = claim["metadata"]["name"]
        if ws.spec.git:
            fields["gitUrl"] = ws.spec.git.url
            fields["gitBranch"] = ws.spec.git.branch
    await publish(api, raw, status_fields(raw, accepted, ready, **fields))
    return checks
