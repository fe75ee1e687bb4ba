"""Is a PersistentVolumeClaim usable by a pod?"""

from __future__ import annotations

from typing import Any

from pynchy.kube.api import KubeApi

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


async def claim_usable(api: KubeApi, claim: dict[str, Any]) -> tuple[bool, str]:
    """(usable, explanation). Bound is usable; so is Pending under WaitForFirstConsumer binding
    (k3s local-path binds only when the first pod is scheduled)."""
    name = claim["metadata"]["name"]
    phase = (claim.get("status") or {}).get("phase", "Pending")
    if phase == "Bound":
        return True, f"PersistentVolumeClaim {name} is Bound"
    if phase == "Lost":
        return False, f"PersistentVolumeClaim {name} lost its volume; restore the volume or delete the claim"
    class_name = (claim.get("spec") or {}).get("storageClassName")
    storage_class = None
    if class_name:
        storage_class = await api.get("StorageClass", None, class_name)
        if storage_class is None:
            return False, f"PersistentVolumeClaim {name} is Pending: StorageClass {class_name!r} does not exist"
    else:
        for sc in await api.list("StorageClass", None):
            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                storage_class = sc
                break
        if storage_class is None:
            return False, (
                f"PersistentVolumeClaim {name} is Pending and the cluster has no default StorageClass; "
                "set storageClassName or install a provisioner such as local-path"
            )
    if storage_class.get("volumeBindingMode") == "WaitForFirstConsumer":
        return True, (
            f"PersistentVolumeClaim {name} will bind when the first agent pod starts "
            f"(StorageClass {storage_class['metadata']['name']} waits for its first consumer)"
        )
    return (
        False,
        f"PersistentVolumeClaim {name} is Pending; waiting for StorageClass "
        f"{storage_class['metadata']['name']} to provision a volume",
    )
