"""The PersistentVolume a local-path style provisioner makes for a claim (pure; shared by the dev
node's provisioner and the real node's)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def host_path_volume(
    claim: Mapping[str, Any], node_name: str, path: Path, reclaim: str, annotations: Mapping[str, str]
) -> dict[str, Any]:
    """A hostPath PV `pvc-<claim uid>` pre-bound to `claim`, pinned to `node_name` (as k3s's
    local-path provisioner makes them): the claim's size, access modes and class."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    on_node = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
    pv: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": dict(annotations)},
        "spec": {
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage") or "1Gi"},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": reclaim,
            "volumeMode": "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [on_node]}]}},
        },
    }
    if spec.get("storageClassName") is not None:
        pv["spec"]["storageClassName"] = spec["storageClassName"]
    return pv
