"""Shared set-up of the benchmarks: install Pynchy's CRDs and RBAC into a fresh control plane."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import LOCAL_PATH_CLASS, REPO, RUN_TOKEN_KEY
from pynchy.kube.controlplane import ControlPlane


def install(plane: ControlPlane, namespace: str, components: tuple[str, ...] = ("operator",)) -> dict[str, Path]:
    """CRDs, the local-path StorageClass, `namespace`, and each component's RBAC; returns the
    kubeconfig of each component's ServiceAccount."""
    plane.apply_crds(REPO / "crds")
    plane.kubectl("create", "namespace", "pynchy-system")
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl("apply", "-f", "-", input=LOCAL_PATH_CLASS)
    kubeconfigs = {}
    for component in components:
        plane.kubectl("apply", "-f", str(REPO / f"manifests/base/{component}/rbac.yaml"))
        kubeconfigs[component] = plane.service_account_kubeconfig("pynchy-system", f"pynchy-{component}")
    return kubeconfigs


def operator_process_env(kubeconfig: Path) -> dict[str, str]:
    """Environment of `pynchy operator` run as its own process under its ServiceAccount."""
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYNCHY_LIVENESS_PORT": "0",
        "PYNCHY_METRICS_PORT": "0",
        "PYNCHY_LOG_FORMAT": "json",
        "PYNCHY_LOG_LEVEL": "WARNING",
        "PYNCHY_RUN_TOKEN_KEY": RUN_TOKEN_KEY,
    }
