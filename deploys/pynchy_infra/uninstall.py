"""Remove Pynchy from a host: its objects (namespaces pynchy and pynchy-system with every Group,
Workspace and their volumes, and the CRDs), its images and the deploy's state; with
pynchy_uninstall_k3s = True also k3s itself and the files the prerequisites wrote."""

from __future__ import annotations

import os
import shlex
from collections.abc import Generator
from typing import Any

from deploys.pynchy_infra import k3s, prereqs
from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.facts import CTR, KUBECTL, K3sVersion, PynchyImages
from pyinfra import host
from pyinfra.api import FunctionCommand, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import files


@operation()
def objects_deleted(kustomization_dir: str) -> Generator[Any, None, None]:
    """Delete what the last install applied (its rendered kustomization is still on the host)."""
    if not host.get_fact(K3sVersion) or not host.get_fact(File, path=f"{kustomization_dir}/kustomization.yaml"):
        host.noop("no applied Pynchy manifests on this host")
        return
    yield f"{KUBECTL} delete --ignore-not-found --wait=true -k {shlex.quote(kustomization_dir)}"


@operation()
def images_removed() -> Generator[Any, None, None]:
    found = host.get_fact(PynchyImages) if host.get_fact(K3sVersion) else []
    if not found:
        host.noop("no Pynchy images in containerd")
        return
    yield f"{CTR} images remove {' '.join(shlex.quote(ref) for ref in found)}"


@operation()
def k3s_removed() -> Generator[Any, None, None]:
    if not host.get_fact(File, path="/usr/local/bin/k3s-uninstall.sh"):
        host.noop("k3s is not installed")
        return
    yield "/usr/local/bin/k3s-uninstall.sh"


@operation()
def local_file_absent(path: str) -> Generator[Any, None, None]:
    """Remove a file on this machine (where pyinfra runs)."""
    if not os.path.exists(path):
        host.noop(f"{path} does not exist")
        return
    yield FunctionCommand(os.remove, (path,), {})


@deploy("Pynchy: uninstall", data_defaults=DEFAULTS)
def uninstall() -> None:
    state_dir = data("pynchy_state_dir")
    objects_deleted(
        name="Delete Pynchy's objects (Groups and their data too)", kustomization_dir=f"{state_dir}/manifests/host"
    )
    images_removed(name="Remove Pynchy's images")
    files.directory(name="Remove the deploy state", path=state_dir, present=False)
    if not data("pynchy_uninstall_k3s"):
        return
    k3s_removed(name="Uninstall k3s (k3s-uninstall.sh)")
    # k3s-uninstall.sh removes /etc/rancher/k3s and the binary; these are ours.
    files.file(name="Remove the kernel module list", path=prereqs.MODULES_FILE, present=False)
    files.file(name="Remove the sysctl file", path=prereqs.SYSCTL_FILE, present=False)
    local_file_absent(name="Remove the fetched kubeconfig", path=k3s.kubeconfig_dest())
