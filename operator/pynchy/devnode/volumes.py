"""Volumes of a pod as directories on the host, and a local-path-style provisioner for claims.

Each pod volume becomes a directory (or, for a hostPath file, a file):

* ``persistentVolumeClaim`` / ``ephemeral``: the bound PersistentVolume's hostPath (or
  local) path. A Pending claim without a volume is provisioned like k3s's local-path
  provisioner: a PersistentVolume ``pvc-<claim uid>`` with a hostPath under
  ``<data_dir>/volumes/<namespace>/<claim>/<claim uid>``, ``claimRef`` to the claim, the
  claim's class, access modes and requested size, the class's reclaim policy (Delete if
  the class does not say), and node affinity to this node. kube-controller-manager's PV
  controller then binds the two. When such a volume is Released with policy Delete, the
  dev node deletes its directory and the PersistentVolume (:func:`release`).
* ``emptyDir``: ``<pod dir>/volumes/<name>`` (medium and sizeLimit are ignored).
* ``configMap`` / ``secret`` / ``projected`` / ``downwardAPI``: files written once into
  ``<pod dir>/volumes/<name>`` before the first container starts, with the item's mode
  minus the write bits (they are read-only in Kubernetes); later changes to the source
  objects are not synced. A projected ``serviceAccountToken`` is requested with the
  TokenRequest API, bound to the pod, and not refreshed.
* ``hostPath``: the host path itself (its ``type`` is checked or created).

Errors are :class:`VolumeError`; a *permanent* one (an unsupported volume type) fails the
pod, others (a missing ConfigMap, a claim not bound yet) are retried with backoff while
the pod waits in ContainerCreating, like the kubelet.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pynchy.devnode.client import Kube, config_object_path, q
from pynchy.devnode.envvars import EnvError, field_value, object_bytes, resource_value
from pynchy.errors import PynchyError
from pynchy.kube.api import KubeError
from pynchy.kube.volumes import host_path_volume
from pynchy.logs import get_logger

log = get_logger(__name__)

PROVISIONER = "pynchy.dev/devnode"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
NODE_ANNOTATION = "pynchy.dev/devnode-node"
DEFAULT_MODE = 0o644
READ_ONLY_MASK = ~0o222 & 0o7777


class VolumeError(PynchyError):
    """A volume cannot be prepared; ``permanent`` ones fail the pod, the others are retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def claim_dir(data_dir: Path, namespace: str, claim: str, uid: str) -> Path:
    """Where a provisioned claim's data lives: one directory per claim *uid*."""
    return data_dir / "volumes" / namespace / claim / uid


# -- files of configMap / secret / projected / downwardAPI volumes (pure) -----------------

File = tuple[str, bytes, int]  # (relative path, content, mode)


def projection_files(
    data: Mapping[str, bytes] | None,
    items: list[Mapping[str, Any]] | None,
    default_mode: int | None,
    *,
    optional: bool,
    kind: str,
    name: str,
) -> list[File]:
    """The files a configMap or secret source projects: ``items`` if given, else every key.

    ``data`` is ``None`` when the object does not exist. Modes lose their write bits.
    """
    mode = DEFAULT_MODE if default_mode is None else default_mode
    if data is None:
        if optional:
            return []
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    files: list[File] = []
    if items:
        for item in items:
            key = item.get("key", "")
            if key not in data:
                if optional:
                    continue
                what = "config key" if kind == "ConfigMap" else "secret key"
                raise VolumeError(f"{kind.lower()} {name!r} references non-existent {what}: {key}", permanent=False)
            files.append((item.get("path") or key, data[key], _mode(item.get("mode"), mode)))
    else:
        files = [(key, value, _mode(None, mode)) for key, value in sorted(data.items())]
    return files


def _mode(item_mode: int | None, default: int) -> int:
    return (default if item_mode is None else int(item_mode)) & READ_ONLY_MASK


def config_data(obj: Mapping[str, Any] | None) -> dict[str, bytes] | None:
    """A ConfigMap's or Secret's data as bytes; None when the object does not exist."""
    return None if obj is None else object_bytes(obj)


def write_files(directory: Path, files: list[File]) -> None:
    """Write ``files`` below ``directory`` (which is created), replacing existing ones."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory.resolve()
    for rel, content, mode in files:
        target = (directory / rel).resolve()
        if not target.is_relative_to(base):
            raise VolumeError(f"item path {rel!r} leaves the volume", permanent=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.write_bytes(content)
        target.chmod(mode)


# -- preparing a pod's volumes ------------------------------------------------------------


class VolumePreparer:
    """Turns each volume of one pod into a local path (see the module docstring)."""

    def __init__(
        self,
        kube: Kube,
        node_name: str,
        data_dir: Path,
        pod: Mapping[str, Any],
        pod_dir: Path,
        allocatable: Mapping[str, str],
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.data_dir = data_dir
        self.pod = pod
        self.pod_dir = pod_dir
        self.allocatable = allocatable
        meta = pod["metadata"]
        self.ns = meta["namespace"]
        self.pod_name = meta["name"]

    async def prepare(self, already: dict[str, Path]) -> dict[str, Path]:
        """Prepare every volume not in ``already``; returns volume name → local path."""
        paths = dict(already)
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = volume["name"]
            if name not in paths:
                paths[name] = await self.prepare_one(volume)
        return paths

    async def prepare_one(self, volume: Mapping[str, Any]) -> Path:
        name: str = volume["name"]
        local = self.pod_dir / "volumes" / name
        if "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
            return local
        if "persistentVolumeClaim" in volume:
            return await self.claim_path(volume["persistentVolumeClaim"]["claimName"], ephemeral=False)
        if "ephemeral" in volume:
            return await self.claim_path(f"{self.pod_name}-{name}", ephemeral=True)
        if "hostPath" in volume:
            return host_path(volume["hostPath"])
        if "configMap" in volume or "secret" in volume:
            src = volume.get("configMap") or volume.get("secret") or {}
            files = await self._config_files(volume, src.get("defaultMode"))
            await asyncio.to_thread(_replace_dir, local, files)
            return local
        if "projected" in volume:
            projected = volume["projected"]
            files = []
            for source in projected.get("sources") or []:
                files.extend(await self._projected_source(source, projected.get("defaultMode")))
            await asyncio.to_thread(_replace_dir, local, files)
            return local
        if "downwardAPI" in volume:
            dapi = volume["downwardAPI"]
            files = self._downward_files(dapi.get("items"), dapi.get("defaultMode"))
            await asyncio.to_thread(_replace_dir, local, files)
            return local
        kinds = sorted(k for k in volume if k != "name")
        raise VolumeError(
            f"volume {name!r}: type {', '.join(kinds) or '?'} is not supported by the dev node "
            "(supported: persistentVolumeClaim, ephemeral, emptyDir, configMap, secret, projected, downwardAPI, "
            "hostPath)",
            permanent=True,
        )

    async def _config_files(self, source: Mapping[str, Any], default_mode: int | None) -> list[File]:
        """The files of a configMap or secret source: a volume's, or one of a projected volume."""
        kind = "ConfigMap" if "configMap" in source else "Secret"
        src = source.get("configMap") or source.get("secret") or {}
        name = src.get("name") or src.get("secretName") or ""  # a secret volume names it secretName
        obj = await self.kube.get(config_object_path(self.ns, kind, name))
        return projection_files(
            config_data(obj), src.get("items"), default_mode, optional=bool(src.get("optional")), kind=kind, name=name
        )

    async def _projected_source(self, source: Mapping[str, Any], default_mode: int | None) -> list[File]:
        if "configMap" in source or "secret" in source:
            return await self._config_files(source, default_mode)
        if "downwardAPI" in source:
            return self._downward_files(source["downwardAPI"].get("items"), default_mode)
        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = await self._token(sat.get("audience") or "", int(sat.get("expirationSeconds") or 3600))
            return [(sat["path"], token.encode(), _mode(None, DEFAULT_MODE if default_mode is None else default_mode))]
        kinds = sorted(source)
        raise VolumeError(f"projected source {', '.join(kinds)} is not supported by the dev node", permanent=True)

    def _downward_files(self, items: list[Mapping[str, Any]] | None, default_mode: int | None) -> list[File]:
        mode = DEFAULT_MODE if default_mode is None else default_mode
        containers = {c["name"]: c for c in (self.pod.get("spec") or {}).get("containers") or []}
        files: list[File] = []
        try:
            for item in items or []:
                if item.get("fieldRef"):
                    value = field_value(self.pod, item["fieldRef"].get("fieldPath", ""))
                elif item.get("resourceFieldRef"):
                    ref = item["resourceFieldRef"]
                    container: Mapping[str, Any] = containers.get(ref.get("containerName") or "") or next(
                        iter(containers.values()), {}
                    )
                    value = resource_value(container, ref, self.allocatable)
                else:
                    continue
                files.append((item["path"], value.encode(), _mode(item.get("mode"), mode)))
        except EnvError as exc:
            raise VolumeError(str(exc), permanent=True) from None
        return files

    async def _token(self, audience: str, expiration: int) -> str:
        spec = self.pod.get("spec") or {}
        sa = spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.pod["metadata"]["uid"],
                },
            },
        }
        try:
            result = await self.kube.create(f"/api/v1/namespaces/{q(self.ns)}/serviceaccounts/{q(sa)}/token", body)
        except KubeError as exc:
            raise VolumeError(f"failed to fetch token for serviceaccount {sa!r}: {exc.message}") from None
        return str(result["status"]["token"])

    # -- claims ---------------------------------------------------------------------

    async def claim_path(self, claim_name: str, *, ephemeral: bool) -> Path:
        """The bound volume's directory, provisioning (and waiting for binding) if needed."""
        path = f"/api/v1/namespaces/{q(self.ns)}/persistentvolumeclaims/{q(claim_name)}"
        delay = 0.05
        provisioned = False
        for _ in range(60):
            pvc = await self.kube.get(path)
            if pvc is None:
                raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
            if ephemeral and not any(
                ref.get("uid") == self.pod["metadata"]["uid"] for ref in pvc["metadata"].get("ownerReferences") or []
            ):
                raise VolumeError(f'persistentvolumeclaim "{claim_name}" was not created for this pod')
            if pvc["metadata"].get("deletionTimestamp"):
                raise VolumeError(f'persistentvolumeclaim "{claim_name}" is being deleted')
            spec = pvc.get("spec") or {}
            if (pvc.get("status") or {}).get("phase") == "Bound" and spec.get("volumeName"):
                return await self._volume_path(spec["volumeName"], claim_name)
            if not spec.get("volumeName") and not provisioned:
                await self.provision(pvc)
                provisioned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound yet')

    async def _volume_path(self, pv_name: str, claim_name: str) -> Path:
        pv = await self.kube.get(f"/api/v1/persistentvolumes/{q(pv_name)}")
        if pv is None:
            raise VolumeError(f'persistentvolume "{pv_name}" of claim "{claim_name}" not found')
        spec = pv.get("spec") or {}
        if spec.get("hostPath"):
            return host_path(spec["hostPath"])
        if spec.get("local"):
            return Path(spec["local"]["path"])
        kinds = sorted(
            k for k in spec if isinstance(spec[k], dict) and k not in ("capacity", "claimRef", "nodeAffinity")
        )
        raise VolumeError(
            f'persistentvolume "{pv_name}" ({", ".join(kinds)}) is not a hostPath or local volume; '
            "the dev node can only use directories on this host",
            permanent=True,
        )

    async def provision(self, pvc: Mapping[str, Any]) -> None:
        """Create a hostPath PersistentVolume pre-bound to ``pvc`` (like local-path's provisioner)."""
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        if spec.get("volumeMode") == "Block":
            raise VolumeError(
                f'persistentvolumeclaim "{meta["name"]}": block volumes are not supported', permanent=True
            )
        if spec.get("selector"):
            raise VolumeError(
                f'persistentvolumeclaim "{meta["name"]}": claims with a selector are not provisioned', permanent=True
            )
        class_name = spec.get("storageClassName")
        reclaim = "Delete"
        if class_name:
            sc = await self.kube.get(f"/apis/storage.k8s.io/v1/storageclasses/{q(class_name)}")
            reclaim = (sc or {}).get("reclaimPolicy") or "Delete"
        directory = claim_dir(self.data_dir, meta["namespace"], meta["name"], meta["uid"])
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        annotations = {PROVISIONED_BY: PROVISIONER, NODE_ANNOTATION: self.node_name}
        pv = host_path_volume(pvc, self.node_name, directory, reclaim, annotations)
        try:
            await self.kube.create("/api/v1/persistentvolumes", pv)
            log.info("provisioned volume", claim=f"{meta['namespace']}/{meta['name']}", path=str(directory))
        except KubeError as exc:
            if exc.status != 409:
                raise VolumeError(f"provisioning a volume for claim {meta['name']!r} failed: {exc.message}") from None


def host_path(src: Mapping[str, Any]) -> Path:
    """A hostPath volume's path, created or checked according to its ``type``."""
    path = Path(src["path"])
    kind = src.get("type") or ""
    if kind == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif kind == "FileOrCreate":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    elif kind == "Directory" and not path.is_dir():
        raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not path.is_file():
        raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif kind in ("Socket", "CharDevice", "BlockDevice") and not path.exists():
        raise VolumeError(f"hostPath type check failed: {path} does not exist")
    return path


def _replace_dir(directory: Path, files: list[File]) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    write_files(directory, files)


# -- mounting into the pod root -----------------------------------------------------------


def make_links(links: list[tuple[str, str]]) -> list[Path]:
    """Create the ``(link, target)`` symlinks (see pathmap.plan_links); returns what was created."""
    created: list[Path] = []
    try:
        for link_str, target in links:
            link = Path(link_str)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.is_dir():
                try:
                    link.rmdir()
                except OSError:
                    raise VolumeError(
                        f"cannot mount at {link}: a non-empty directory is already there", permanent=True
                    ) from None
            os.symlink(target, link)
            created.append(link)
    except BaseException:
        remove_links(created)
        raise
    return created


def remove_links(links: list[Path]) -> None:
    """Undo :func:`make_links`, innermost first (nested links live inside outer volumes)."""
    for link in reversed(links):
        try:
            if link.is_symlink():
                link.unlink()
        except OSError as exc:
            log.warning("could not remove mount link", link=str(link), error=str(exc))


async def release(kube: Kube, pv: Mapping[str, Any], volumes_root: Path) -> bool:
    """Delete a Released volume's data and object if the dev node provisioned it (policy Delete)."""
    meta, spec = pv["metadata"], pv.get("spec") or {}
    if (meta.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
        return False
    if (pv.get("status") or {}).get("phase") != "Released" or spec.get("persistentVolumeReclaimPolicy") != "Delete":
        return False
    directory = Path((spec.get("hostPath") or {}).get("path") or "/nonexistent")
    if not directory.is_relative_to(volumes_root):
        return False  # another dev node's volume
    await asyncio.to_thread(shutil.rmtree, directory, True)
    for parent in (directory.parent, directory.parent.parent):  # claim dir, namespace dir, if now empty
        try:
            parent.rmdir()
        except OSError:
            break
    try:
        await kube.delete(
            f"/api/v1/persistentvolumes/{q(meta['name'])}",
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": meta["uid"]}},
        )
    except KubeError as exc:
        if exc.status not in (404, 409):
            raise
    log.info("deleted released volume", pv=meta["name"], path=str(directory))
    return True
