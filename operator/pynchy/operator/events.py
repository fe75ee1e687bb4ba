"""Kubernetes Events about our objects (only on transitions, so a resync posts nothing)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pynchy.kube.api import KubeApi

COMPONENT = "pynchy-operator"


async def record_event(api: KubeApi, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
    meta = obj["metadata"]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    await api.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )
