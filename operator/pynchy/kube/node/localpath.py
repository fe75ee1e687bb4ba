"""A storage provisioner that behaves like k3s's local-path, for the real test node.

The production overlay asks for claims of the `local-path` StorageClass (provisioner
`rancher.io/local-path`, WaitForFirstConsumer), so the node must provision them as k3s does:
once the scheduler has picked the node (`volume.kubernetes.io/selected-node`), a hostPath
PersistentVolume `pvc-<claim uid>` with node affinity, backed by a directory
`<storage>/pvc-<uid>_<namespace>_<claim>` created with mode 0777 and owned by root, exactly
what local-path's helper pod does (`mkdir -m 0777 -p`). fsGroup does not apply to hostPath
volumes, so pods see that ownership as it is. Released volumes of a Delete class are removed,
directory and PersistentVolume.

Level-based: every watch event (and a periodic resync) compares all claims and volumes with
what should exist; nothing is written when nothing changed.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pynchy.kube import official
from pynchy.kube.volumes import host_path_volume
from pynchy.logs import get_logger

log = get_logger(__name__)

PROVISIONER = "rancher.io/local-path"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = ("volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
RESYNC_SECONDS = 10


def volume_dir(storage: Path, claim: dict[str, Any]) -> Path:
    meta = claim["metadata"]
    return storage / f"pvc-{meta['uid']}_{meta['namespace']}_{meta['name']}"


def wants_volume(claim: dict[str, Any], node_name: str) -> bool:
    """A Pending claim handed to local-path whose first consumer was scheduled to this node."""
    annotations = claim["metadata"].get("annotations") or {}
    ours = any(annotations.get(k) == PROVISIONER for k in STORAGE_PROVISIONER)
    pending = (claim.get("status") or {}).get("phase", "Pending") == "Pending"
    return ours and pending and annotations.get(SELECTED_NODE) == node_name and not claim["spec"].get("volumeName")


class LocalPathProvisioner:
    """Runs in two watch threads of the test process (the node's "helper pod" is the host itself)."""

    def __init__(self, kubeconfig: Path, node_name: str, storage: Path) -> None:
        self.node_name = node_name
        self.storage = storage
        self._api = client.CoreV1Api(official.new_client_from_config(config_file=str(kubeconfig)))
        self._storage_api = client.StorageV1Api(self._api.api_client)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> LocalPathProvisioner:
        self.storage.mkdir(parents=True, exist_ok=True)
        self.reconcile()
        for name, lister in (
            ("claims", self._api.list_persistent_volume_claim_for_all_namespaces),
            ("volumes", self._api.list_persistent_volume),
        ):
            thread = threading.Thread(target=self._watch, args=(lister,), name=f"local-path-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        # The watch threads are daemons blocked in a read of at most RESYNC_SECONDS; they see the
        # flag and end by themselves, and nothing they do after this point matters.
        self._threads.clear()

    def _watch(self, lister: Any) -> None:
        while not self._stop.is_set():
            try:
                for _ in official.Watch().stream(
                    lister, timeout_seconds=RESYNC_SECONDS, _request_timeout=RESYNC_SECONDS + 5
                ):
                    self.reconcile()
                    if self._stop.is_set():
                        return
                self.reconcile()
            except Exception as exc:  # a broken watch is retried; the API server may restart
                if not self._stop.is_set():
                    log.warning("local-path watch failed; retrying", error=str(exc))
                    self._stop.wait(1)

    def _reclaim_policy(self, class_name: str | None) -> str:
        if not class_name:
            return "Delete"
        try:
            sc = self._storage_api.read_storage_class(class_name)
        except ApiException:
            return "Delete"
        return sc.reclaim_policy or "Delete"

    def reconcile(self) -> None:
        with self._lock:
            sanitize = self._api.api_client.sanitize_for_serialization
            claims = sanitize(self._api.list_persistent_volume_claim_for_all_namespaces())["items"]
            volumes = sanitize(self._api.list_persistent_volume())["items"]
            existing = {v["metadata"]["name"] for v in volumes}
            for claim in claims:
                if not wants_volume(claim, self.node_name) or f"pvc-{claim['metadata']['uid']}" in existing:
                    continue
                self._provision(claim)
            for volume in volumes:
                annotations = volume["metadata"].get("annotations") or {}
                phase = (volume.get("status") or {}).get("phase")
                if (
                    annotations.get(PROVISIONED_BY) == PROVISIONER
                    and phase == "Released"
                    and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
                ):
                    self._delete(volume)

    def _provision(self, claim: dict[str, Any]) -> None:
        path = volume_dir(self.storage, claim)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o777)  # as local-path's helper does; the owner stays root
        reclaim = self._reclaim_policy(claim["spec"].get("storageClassName"))
        pv = host_path_volume(claim, self.node_name, path, reclaim, {PROVISIONED_BY: PROVISIONER})
        try:
            self._api.create_persistent_volume(client.V1PersistentVolume.model_validate(pv))
        except ApiException as exc:
            if exc.status != 409:
                raise
        log.info("provisioned volume", pv=pv["metadata"]["name"], claim=claim["metadata"]["name"], path=str(path))

    def _delete(self, volume: dict[str, Any]) -> None:
        path = Path(volume["spec"]["hostPath"]["path"])
        if path.parent == self.storage:
            shutil.rmtree(path, ignore_errors=True)
        try:
            self._api.delete_persistent_volume(volume["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("deleted released volume", pv=volume["metadata"]["name"])
