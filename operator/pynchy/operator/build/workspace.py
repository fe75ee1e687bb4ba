"""Workspace → its PersistentVolumeClaim."""

from __future__ import annotations

from typing import Any

from pynchy.api.resources import Workspace
from pynchy.operator.build.common import LABEL_WORKSPACE, base_labels, volume_claim, workspace_claim_name

# Every kind workspace_children emits; the Workspace reconciler lists and prunes by this tuple.
OWNED_KINDS: tuple[str, ...] = ("PersistentVolumeClaim",)


def workspace_claim(ws: Workspace, raw: dict[str, Any]) -> dict[str, Any]:
    """The workspace PVC. With deletionPolicy Retain it has no owner, so deleting the Workspace keeps it."""
    storage = ws.spec.storage
    name = ws.metadata.name
    return volume_claim(
        workspace_claim_name(name),
        str(ws.metadata.namespace),
        base_labels("workspace", **{LABEL_WORKSPACE: name}),
        raw,
        size=storage.size,
        storage_class_name=storage.storage_class_name,
        deletion_policy=storage.deletion_policy,
        access_mode=storage.access_mode,
    )


def workspace_children(ws: Workspace, raw: dict[str, Any]) -> list[dict[str, Any]]:
    return [workspace_claim(ws, raw)]
