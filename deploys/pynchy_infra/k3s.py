"""k3s at a pinned version and checksum: online or air-gapped, configured by files, restarted only
when its binary, images or configuration changed, and its kubeconfig fetched to this machine."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from functools import cache
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.ops import api_ready, command_output_file, local_mode, stamped
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Arch
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

BINARY = "/usr/local/bin/k3s"
CONFIG_DIR = "/etc/rancher/k3s"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
REGISTRIES_FILE = f"{CONFIG_DIR}/registries.yaml"
ADMIN_KUBECONFIG = f"{CONFIG_DIR}/k3s.yaml"
IMAGES_DIR = "/var/lib/rancher/k3s/agent/images"

# Settings live in config.yaml, never in installer flags: a later install run without the same
# flags would silently drop them.
CONFIG_DEFAULTS: dict[str, Any] = {
    # The admin kubeconfig holds cluster-admin credentials: root only.
    "write-kubeconfig-mode": "0600",
    # Secrets (Slack and model credentials among them) encrypted at rest in the datastore.
    "secrets-encryption": True,
}

_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}
_BINARY_NAMES = {"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}


def arch() -> str:
    machine = host.get_fact(Arch) or "x86_64"
    if machine not in _ARCHES:
        raise DeployError(f"k3s has no release for the architecture {machine!r}")
    return _ARCHES[machine]


def pins(arch_name: str) -> dict[str, str]:
    """The pinned checksums for this architecture; refusing to guess any that are missing."""
    pinned = data("k3s_sha256").get(arch_name)
    if not pinned:
        raise DeployError(
            f"no pinned k3s checksums for {arch_name}: set k3s_sha256['{arch_name}'] in group_data/ "
            f"from the release's sha256sum-{arch_name}.txt (docs/install.md)"
        )
    return pinned


def api_address() -> str:
    """The address written into the fetched kubeconfig and the server certificate's SANs."""
    configured = data("k3s_api_address")
    if configured:
        return str(configured)
    if host.name.startswith("@"):
        return "127.0.0.1"
    return host.name.rsplit("@", 1)[-1]


def config_yaml() -> str:
    config = {**CONFIG_DEFAULTS, **data("k3s_config")}
    address = api_address()
    if address != "127.0.0.1":
        config["tls-san"] = sorted({*config.get("tls-san", []), address})
    return "# Written by the Pynchy deploy; set k3s_config in group_data/ instead of editing.\n" + yaml.safe_dump(
        config, sort_keys=True
    )


@cache
def local_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked_local_file(path: str, expected: str | None, what: str) -> str:
    """An air-gap file, verified against its pin before anything is copied."""
    full = os.path.expanduser(path)
    if not Path(full).is_file():
        raise DeployError(f"k3s_airgap: {what} {path!r} does not exist")
    if expected and local_sha256(full) != expected:
        raise DeployError(f"k3s_airgap: {what} {path!r} does not match its pinned sha256 {expected}")
    return full


@deploy("Pynchy: k3s files", data_defaults=DEFAULTS)
def k3s_files() -> dict[str, Any]:
    """Binary, install script, air-gap images and configuration; returns the ops whose change
    means k3s must restart (and the installer's digest)."""
    version = data("k3s_version")
    arch_name = arch()
    pinned = pins(arch_name)
    binary_name = _BINARY_NAMES[arch_name]
    images_name = f"k3s-airgap-images-{arch_name}.tar.zst"
    state_dir = data("pynchy_state_dir")
    install_script = f"{state_dir}/k3s-install.sh"

    files.directory(name="Deploy state directory", path=state_dir, mode="700")
    files.directory(name="k3s configuration directory", path=CONFIG_DIR, mode="755")
    airgap = data("k3s_airgap")
    watched = []
    if airgap:
        watched.append(
            files.put(
                name=f"k3s {version} binary (air-gapped)",
                src=checked_local_file(airgap["binary"], pinned.get(binary_name), "binary"),
                dest=BINARY,
                mode="755",
            )
        )
        files.put(
            name="k3s install script (air-gapped)",
            src=checked_local_file(airgap["install_script"], pinned.get("install.sh"), "install_script"),
            dest=install_script,
            mode="755",
        )
        if airgap.get("images"):
            files.directory(name="k3s images directory", path=IMAGES_DIR, mode="755")
            watched.append(
                files.put(
                    name=f"k3s {version} images (air-gapped)",
                    src=checked_local_file(airgap["images"], pinned.get(images_name), "images"),
                    dest=f"{IMAGES_DIR}/{images_name}",
                    mode="644",
                )
            )
    else:
        quoted = quote(version, safe="")
        watched.append(
            files.download(
                name=f"k3s {version} binary",
                src=f"{data('k3s_release_url').format(version=quoted)}/{binary_name}",
                dest=BINARY,
                mode="755",
                sha256sum=pinned[binary_name],
            )
        )
        files.download(
            name=f"k3s {version} install script",
            src=data("k3s_install_script_url").format(version=quoted),
            dest=install_script,
            mode="755",
            sha256sum=pinned["install.sh"],
        )

    watched.append(files.put(name="k3s config.yaml", src=StringIO(config_yaml()), dest=CONFIG_FILE, mode="600"))
    registries = data("k3s_registries")
    if registries:
        watched.append(
            files.put(
                name="k3s registries.yaml",
                src=StringIO(yaml.safe_dump(registries, sort_keys=True)),
                dest=REGISTRIES_FILE,
                mode="600",
            )
        )
    else:
        watched.append(files.file(name="No k3s registries.yaml", path=REGISTRIES_FILE, present=False))
    digest = hashlib.sha256(f"{version}\n{pinned.get('install.sh')}\n{install_script}".encode()).hexdigest()
    return {"watched": watched, "install_script": install_script, "installer_digest": digest}


@deploy("Pynchy: k3s service", data_defaults=DEFAULTS)
def k3s_service(staged: dict[str, Any]) -> None:
    state_dir = data("pynchy_state_dir")
    env = {
        # The binary is already in place and verified; the script only writes the unit and helpers.
        "INSTALL_K3S_SKIP_DOWNLOAD": "true",
        "INSTALL_K3S_SKIP_START": "true",
        "INSTALL_K3S_VERSION": data("k3s_version"),
        "INSTALL_K3S_EXEC": "server",
    }
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    stamped(
        name="Run the k3s install script (systemd unit, uninstall script)",
        stamp=f"{state_dir}/stamps/k3s-installer",
        digest=staged["installer_digest"],
        commands=[f"env {assignments} sh {shlex.quote(staged['install_script'])}"],
        what="k3s install script",
    )
    systemd.service(
        name="Restart k3s for its new binary, images or configuration",
        service="k3s",
        running=True,
        restarted=True,
        _if=any_changed(*staged["watched"]),
    )
    systemd.service(name="k3s running and enabled", service="k3s", running=True, enabled=True)
    api_ready(name="Kubernetes API ready")


def kubeconfig_dest() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", host.name).strip("-") or "local"
    return os.path.expanduser(data("k3s_kubeconfig_dest").format(host=name))


@deploy("Pynchy: kubeconfig", data_defaults=DEFAULTS)
def fetch_kubeconfig() -> None:
    """The admin kubeconfig, pointed at the host's address, copied to this machine (0600)."""
    copy = f"{data('pynchy_state_dir')}/kubeconfig.yaml"
    server = f"https://{api_address()}:6443"
    command_output_file(
        name="Kubeconfig for this machine",
        command=f"sed 's#https://127.0.0.1:6443#{server}#' {ADMIN_KUBECONFIG}",
        dest=copy,
    )
    dest = kubeconfig_dest()
    files.get(name=f"Fetch the kubeconfig to {dest}", src=copy, dest=dest, create_local_dir=True)
    local_mode(name="Kubeconfig readable only by you", path=dest, mode=0o600)


@deploy("Pynchy: k3s", data_defaults=DEFAULTS)
def k3s() -> None:
    staged = k3s_files()
    k3s_service(staged)
    fetch_kubeconfig()
