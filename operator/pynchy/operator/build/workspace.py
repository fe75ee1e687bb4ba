"""Workspace → its PersistentVolumeClaim."""

from __future__ import annotations

from typing import Any

from pynchy.api.resources import Workspace
from pynchy.operator.build.common import (
    ANNOTATION_DELETION_POLICY,
    LABEL_WORKSPACE,
    base_labels,
    metadata,
    workspace_claim_name,
)


def workspace_claim(ws: Workspace, raw: dict[str, Any]) -> dict[str, Any]:
    """The workspace PVC. With deletionPolicy Retain it has no owner, so deleting the Workspace keeps it."""
    storage = ws.spec.storage
    name = ws.metadata.name
    owner = raw if storage.deletion_policy == "Delete" else None
    spec: dict[str, Any] = {
        "accessModes": [storage.access_mode],
        "resources": {"requests": {"storage": storage.size}},
        "volumeMode": "Filesystem",
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(
            workspace_claim_name(name),
            str(ws.metadata.namespace),
            base_labels("workspace", **{LABEL_WORKSPACE: name}),
            owner,
            {ANNOTATION_DELETION_POLICY: storage.deletion_policy},
        ),
        "spec": spec,
    }


def workspace_children(ws: Workspace, raw: dict[str, Any]) -> list[dict[str, Any]]:
    return [workspace_claim(ws, raw)]
