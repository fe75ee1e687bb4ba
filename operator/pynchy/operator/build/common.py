"""Names, labels and owner references shared by every child manifest."""

from __future__ import annotations

import hashlib
import json
from typing import Any

MANAGED_BY = "pynchy-operator"
LABEL_GROUP = "pynchy.dev/group"
LABEL_WORKSPACE = "pynchy.dev/workspace"
LABEL_RUN = "pynchy.dev/run"
LABEL_SCHEDULED_TASK = "pynchy.dev/scheduled-task"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
ANNOTATION_DELETION_POLICY = "pynchy.dev/deletion-policy"
ANNOTATION_CONFIG_HASH = "pynchy.dev/config-hash"
ANNOTATION_TOKEN_ISSUED_AT = "pynchy.dev/token-issued-at"


def group_sa_name(group: str) -> str:
    return f"pynchy-{group}"


def group_state_claim_name(group: str) -> str:
    return f"pynchy-{group}-state"


def group_config_map_name(group: str) -> str:
    return f"pynchy-{group}-config"


def group_network_policy_name(group: str) -> str:
    return f"pynchy-{group}"


def workspace_claim_name(workspace: str) -> str:
    return f"pynchy-ws-{workspace}"


def run_pod_name(run: str) -> str:
    """One pod per AgentRun, named like it: a second pod for the same run cannot exist."""
    return run


def run_token_secret_name(run: str) -> str:
    return f"{run}-token"


def base_labels(component: str, **extra: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PART_OF: "pynchy", LABEL_COMPONENT: component, **extra}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller reference to `owner` (a full object with apiVersion, kind, metadata.name/uid)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    name: str,
    namespace: str,
    labels: dict[str, str],
    owner: dict[str, Any] | None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    # No owner means "keep this when the parent goes" (deletionPolicy Retain).
    meta["ownerReferences"] = [owner_reference(owner)] if owner is not None else []
    return meta


def content_hash(value: Any) -> str:
    """Stable short hash of JSON-able content (for config-hash annotations)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
