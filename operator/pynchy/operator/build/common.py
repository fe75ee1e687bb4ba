"""Names, labels, owner references and timestamps shared by every child manifest."""

from __future__ import annotations

import datetime as dt
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


def group_mcp_role_name(group: str) -> str:
    """The Role (and its RoleBinding) that lets the gateway read the Group's MCP header Secrets."""
    return f"pynchy-mcp-{group}"


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


def volume_claim(
    name: str,
    namespace: str,
    labels: dict[str, str],
    owner: dict[str, Any],
    *,
    size: str,
    storage_class_name: str | None,
    deletion_policy: str,
    access_mode: str = "ReadWriteOnce",
) -> dict[str, Any]:
    """A filesystem PVC. With deletionPolicy Retain it has no owner, so deleting `owner` keeps it."""
    spec: dict[str, Any] = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": size}},
        "volumeMode": "Filesystem",
    }
    if storage_class_name:
        spec["storageClassName"] = storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(
            name,
            namespace,
            labels,
            owner if deletion_policy == "Delete" else None,
            {ANNOTATION_DELETION_POLICY: deletion_policy},
        ),
        "spec": spec,
    }


def timestamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, lossless (microseconds kept when there are any)."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: str) -> dt.datetime:
    """An RFC 3339 timestamp (as the API server or ``timestamp`` writes it) as an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone offset")
    return parsed


def content_hash(value: Any) -> str:
    """Stable short hash of JSON-able content (for config-hash annotations)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
