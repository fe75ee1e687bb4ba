"""The file-writing parts of the install deploy, for real, with pyinfra's @chroot connector on a
Debian root made by debootstrap: what they write (contents, modes), and that a second run changes
nothing. Starting k3s, loading kernel modules and building images need a real machine (systemd,
a kernel, a container runtime); those parts are checked on @fake (test_deploy_fake.py).

Needs root (chroot) and Debian's package mirror once: the root is cached under
~/.cache/pynchy/debootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploys.pynchy_infra import k3s, prereqs, secrets
from deploys.pynchy_infra.ops import private_file
from pyinfra.api import deploy

from infra.deploy_harness import deploy_on

CACHE = Path(os.environ.get("PYNCHY_DEBOOTSTRAP_CACHE", Path.home() / ".cache" / "pynchy" / "debootstrap"))
SUITE = "bookworm"


def debootstrap_root() -> Path:
    """A minimal Debian root, built once (about half a minute with a near mirror)."""
    root = CACHE / f"{SUITE}-minbase"
    if (root / "etc" / "debian_version").exists():
        return root
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, capture_output=True)
    partial = CACHE / f"{SUITE}-minbase.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", SUITE, str(partial), "http://deb.debian.org/debian"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"debootstrap failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    partial.rename(root)
    return root


@pytest.fixture(scope="module")
def chroot_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the @chroot test needs root (chroot(2)); the suite runs as root on our machines")
    # A private copy per run: the cached root stays clean.
    root = tmp_path_factory.mktemp("chroot") / "root"
    subprocess.run(["cp", "-a", str(debootstrap_root()), str(root)], check=True)
    return root


GATEWAY_VALUES = {"PYNCHY_SLACK_BOT_TOKEN": "xoxb-chroot-secret", "PYNCHY_OWNER": "U0CHROOT"}


@deploy("Pynchy: the parts that only write files")
def file_parts() -> None:
    prereqs.host_files()
    k3s.k3s_files()
    private_file(
        name="Gateway credentials file (values not shown)",
        dest="/var/lib/pynchy-deploy/secrets/pynchy-gateway.json",
        content=secrets.merge_patch(GATEWAY_VALUES),
    )


def run(root: Path, data: dict[str, Any]) -> list[str]:
    """Run file_parts in the chroot; return the names of the operations that changed something."""
    _, changed, failed = deploy_on(f"@chroot/{root}", file_parts, data)
    assert failed == []
    return [name.rsplit(" | ", 1)[-1] for name in changed]


@pytest.fixture(scope="module")
def airgap(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("airgap")
    contents = {"k3s": b"#!/bin/sh\necho k3s stand-in\n", "install.sh": b"#!/bin/sh\n", "images": b"images"}
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    digest = {name: hashlib.sha256(content).hexdigest() for name, content in contents.items()}
    return {
        "k3s_sha256": {
            "amd64": {
                "k3s": digest["k3s"],
                "install.sh": digest["install.sh"],
                "k3s-airgap-images-amd64.tar.zst": digest["images"],
            },
            "arm64": {
                "k3s-arm64": digest["k3s"],
                "install.sh": digest["install.sh"],
                "k3s-airgap-images-arm64.tar.zst": digest["images"],
            },
        },
        "k3s_airgap": {
            "binary": str(folder / "k3s"),
            "install_script": str(folder / "install.sh"),
            "images": str(folder / "images"),
        },
        "k3s_config": {"node-label": ["pynchy.dev/test=true"]},
    }


def test_files_are_written_then_left_alone(chroot_root: Path, airgap: dict[str, Any]) -> None:
    first = run(chroot_root, airgap)
    assert "k3s config.yaml" in first
    assert "Gateway credentials file (values not shown)" in first

    root = chroot_root
    assert (root / prereqs.MODULES_FILE.lstrip("/")).read_text() == prereqs.modules_conf()
    assert (root / prereqs.SYSCTL_FILE.lstrip("/")).read_text() == prereqs.sysctl_conf()
    config = root / "etc/rancher/k3s/config.yaml"
    assert "node-label:\n- pynchy.dev/test=true" in config.read_text()
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    binary = root / "usr/local/bin/k3s"
    assert binary.read_bytes().startswith(b"#!/bin/sh")
    assert oct(binary.stat().st_mode & 0o777) == "0o755"
    state_dir = root / "var/lib/pynchy-deploy"
    assert oct(state_dir.stat().st_mode & 0o777) == "0o700"
    creds = state_dir / "secrets/pynchy-gateway.json"
    assert json.loads(creds.read_text()) == {"stringData": GATEWAY_VALUES}
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert not (root / "etc/rancher/k3s/registries.yaml").exists()

    # The second run against the real files: nothing to do.
    assert run(chroot_root, airgap) == []

    # One setting changed: only that file is rewritten.
    changed = run(chroot_root, {**airgap, "k3s_config": {}})
    assert changed == ["k3s config.yaml"]
    assert "node-label" not in config.read_text()
