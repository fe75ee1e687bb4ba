"""The Node object and its heartbeat (a Lease in kube-node-lease and the Ready condition)."""

from __future__ import annotations

import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any

from pynchy.devnode.client import Kube, q
from pynchy.devnode.status import LOOPBACK, RUNTIME, micro_now, now
from pynchy.kube.api import KubeError, KubeNotFoundError

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
MAX_PODS = 110
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def node_path(name: str, sub: str = "") -> str:
    return f"/api/v1/nodes/{q(name)}" + (f"/{sub}" if sub else "")


def lease_path(name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
    return f"{base}/{q(name)}" if name else base


def host_memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024


def os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def _read(path: str, default: str) -> str:
    try:
        return Path(path).read_text().strip() or default
    except OSError:
        return default


def capacity(data_dir: Path) -> dict[str, str]:
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{host_memory_kib()}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": str(shutil.disk_usage(data_dir).total),
    }


def labels(name: str) -> dict[str, str]:
    arch = ARCH.get(platform.machine(), platform.machine())
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "node.kubernetes.io/instance-type": "pynchy-dev",
        "pynchy.dev/devnode": "true",
    }


def conditions(ready: bool, previous: list[dict[str, Any]] | None = None, message: str = "") -> list[dict[str, Any]]:
    """Ready plus the three pressure conditions, heartbeat now, transition times kept when unchanged."""
    stamp = now()
    old = {c.get("type"): c for c in previous or []}

    def cond(type_: str, status: str, reason: str, msg: str) -> dict[str, Any]:
        prev = old.get(type_) or {}
        since = prev.get("lastTransitionTime") if prev.get("status") == status else None
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": msg,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": since or stamp,
        }

    return [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "the dev node does not track memory pressure"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "the dev node does not track disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "the dev node does not track PID pressure"),
        cond(
            "Ready",
            "True" if ready else "False",
            "KubeletReady" if ready else "DevNodeStopped",
            message or ("pynchy dev node is posting ready status" if ready else "pynchy dev node stopped"),
        ),
    ]


def node_status(
    name: str, data_dir: Path, kubelet_version: str, ready: bool, previous: dict[str, Any] | None
) -> dict[str, Any]:
    cap = capacity(data_dir)
    return {
        "capacity": cap,
        "allocatable": cap,
        "conditions": conditions(ready, ((previous or {}).get("status") or {}).get("conditions")),
        "addresses": [{"type": "InternalIP", "address": LOOPBACK}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": _read("/etc/machine-id", uuid.uuid5(uuid.NAMESPACE_DNS, name).hex),
            "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"pynchy-devnode/{name}")),
            "bootID": _read("/proc/sys/kernel/random/boot_id", ""),
            "kernelVersion": platform.release(),
            "osImage": os_image(),
            "containerRuntimeVersion": f"{RUNTIME}://0.1.0",
            "kubeletVersion": kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": labels(name)["kubernetes.io/arch"],
        },
    }


async def server_version(kube: Kube) -> str:
    try:
        info = await kube.request("GET", "/version")
        return str(info.get("gitVersion") or "v0.0.0")
    except KubeError:
        return "v0.0.0"


async def register(kube: Kube, name: str, data_dir: Path, kubelet_version: str) -> dict[str, Any]:
    """Create the Node (or adopt an existing one), labelled and Ready; returns the Node."""
    existing = await kube.get(node_path(name))
    if existing is None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {},
            "status": node_status(name, data_dir, kubelet_version, True, None),
        }
        try:
            existing = await kube.create("/api/v1/nodes", body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            existing = await kube.get(node_path(name))
    else:
        existing = await kube.merge_patch(node_path(name), {"metadata": {"labels": labels(name)}})
    assert existing is not None
    return await kube.merge_patch(
        node_path(name, "status"), {"status": node_status(name, data_dir, kubelet_version, True, existing)}
    )


async def post_ready(kube: Kube, name: str, ready: bool, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Refresh the conditions (heartbeat time), Ready or not."""
    conds = conditions(ready, ((previous or {}).get("status") or {}).get("conditions"))
    return await kube.merge_patch(node_path(name, "status"), {"status": {"conditions": conds}})


async def renew_lease(kube: Kube, name: str, node_uid: str) -> None:
    """Renew (or create) the node's Lease, which the node lifecycle controller reads as liveness."""
    spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_now()}
    try:
        await kube.merge_patch(lease_path(name), {"spec": spec})
        return
    except KubeNotFoundError:
        pass
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {**spec, "acquireTime": spec["renewTime"]},
    }
    try:
        await kube.create(lease_path(), lease)
    except KubeError as exc:
        if exc.status != 409:
            raise
