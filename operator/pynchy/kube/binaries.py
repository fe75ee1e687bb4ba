"""Find, or build once from source, the control-plane and node binaries (see tools/kube/, tools/node/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pynchy.errors import PynchyError
from pynchy.logs import get_logger
from pynchy.paths import KUBE_TOOLS_DIR, NODE_TOOLS_DIR
from pynchy.settings import ControlPlaneSettings, load

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
NODE_REQUIRED = ("kubelet", "kube-scheduler", "kube-proxy", "kube-router", "coredns", "pause")
log = get_logger(__name__)


class BinariesUnavailableError(PynchyError, RuntimeError):
    """The control plane cannot start; the message says what is missing and how to get it."""


def _missing(bin_dir: Path, names: tuple[str, ...] = REQUIRED) -> list[str]:
    return [name for name in names if not (bin_dir / name).is_file()]


def _find_or_build(
    override: Path | None,
    env_name: str,
    script: Path,
    names: tuple[str, ...],
    settings: ControlPlaneSettings,
    what: str,
) -> Path:
    """The override folder when set (checked), else the last stdout line of the build script."""
    if override is not None:
        missing = _missing(override, names)
        if missing:
            raise BinariesUnavailableError(f"{env_name}={override} lacks {', '.join(missing)}")
        return override
    if not script.is_file():
        raise BinariesUnavailableError(
            f"{script} not found: run from a Pynchy checkout, or set {env_name} to a folder with {', '.join(names)}"
        )
    proc = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "PYNCHY_K8S_CACHE": str(settings.cache)},
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BinariesUnavailableError(
            f"building {what} failed (exit {proc.returncode}); the lines above say why. "
            "It needs Go >= 1.26 and the Go module proxy."
        )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise BinariesUnavailableError(f"{script} printed no bin directory")
    bin_dir = Path(lines[-1])
    missing = _missing(bin_dir, names)
    if missing:
        raise BinariesUnavailableError(f"build finished but {bin_dir} lacks {', '.join(missing)}")
    return bin_dir


def ensure_binaries(settings: ControlPlaneSettings | None = None) -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager and kubectl.

    Uses PYNCHY_K8S_BIN_DIR when set; otherwise runs tools/kube/build.sh, which returns the
    cached build at once or builds the pinned versions through the Go module proxy.
    """
    settings = settings or load(ControlPlaneSettings)
    if settings.bin_dir is None:
        log.info(
            "control plane binaries: checking cache (a first build takes 20-40 minutes)", cache=str(settings.cache)
        )
    return _find_or_build(
        settings.bin_dir,
        "PYNCHY_K8S_BIN_DIR",
        KUBE_TOOLS_DIR / "build.sh",
        REQUIRED,
        settings,
        "the Kubernetes control plane",
    )


def ensure_node_binaries(settings: ControlPlaneSettings | None = None) -> Path:
    """Directory holding kubelet, kube-scheduler, kube-proxy, kube-router, coredns and pause.

    Uses PYNCHY_NODE_BIN_DIR when set; otherwise runs tools/node/build.sh, which returns the
    cached build at once or builds the pinned versions (Go module proxy; gcc for pause).
    """
    settings = settings or load(ControlPlaneSettings)
    if settings.node_bin_dir is None:
        log.info("node binaries: checking cache (a first build takes a few minutes)", cache=str(settings.cache))
    return _find_or_build(
        settings.node_bin_dir,
        "PYNCHY_NODE_BIN_DIR",
        NODE_TOOLS_DIR / "build.sh",
        NODE_REQUIRED,
        settings,
        "the Kubernetes node binaries",
    )
