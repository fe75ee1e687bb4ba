"""Find, or build once from source, the control-plane binaries (see tools/kube/)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pynchy.logs import get_logger
from pynchy.paths import KUBE_TOOLS_DIR
from pynchy.settings import ControlPlaneSettings, load

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
log = get_logger(__name__)


class BinariesUnavailableError(RuntimeError):
    """The control plane cannot start; the message says what is missing and how to get it."""


def _missing(bin_dir: Path) -> list[str]:
    return [name for name in REQUIRED if not (bin_dir / name).is_file()]


def ensure_binaries(settings: ControlPlaneSettings | None = None) -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager and kubectl.

    Uses PYNCHY_K8S_BIN_DIR when set; otherwise runs tools/kube/build.sh, which returns the
    cached build at once or builds the pinned versions through the Go module proxy.
    """
    settings = settings or load(ControlPlaneSettings)
    if settings.bin_dir is not None:
        missing = _missing(settings.bin_dir)
        if missing:
            raise BinariesUnavailableError(f"PYNCHY_K8S_BIN_DIR={settings.bin_dir} lacks {', '.join(missing)}")
        return settings.bin_dir
    script = KUBE_TOOLS_DIR / "build.sh"
    if not script.is_file():
        raise BinariesUnavailableError(
            f"{script} not found: run from a Pynchy checkout, or set PYNCHY_K8S_BIN_DIR to a folder with "
            f"{', '.join(REQUIRED)}"
        )
    log.info("control plane binaries: checking cache (a first build takes 20-40 minutes)", cache=str(settings.cache))
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
            f"building the Kubernetes control plane failed (exit {proc.returncode}); the lines above say why. "
            "It needs Go >= 1.26 and the Go module proxy."
        )
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = _missing(bin_dir)
    if missing:
        raise BinariesUnavailableError(f"build finished but {bin_dir} lacks {', '.join(missing)}")
    return bin_dir
