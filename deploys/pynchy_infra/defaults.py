"""Host data defaults: every key a Pynchy deploy reads, with the value used when group_data/ or
the inventory does not set it. `pyinfra inventory.py debug-inventory` shows the merged result."""

from __future__ import annotations

from typing import Any

from pyinfra import host

# k3s, pinned by version and checksum. To upgrade, change all four in group_data/ (the values come
# from the release's sha256sum-<arch>.txt and the install.sh at the release tag) and run the
# install deploy again. Architectures without pins here must be pinned in group_data/.
K3S_VERSION = "v1.36.4+k3s1"
K3S_SHA256: dict[str, dict[str, str]] = {
    "amd64": {
        "k3s": "835873f37245fc615f547a2fe2af9402a347875f13fa64a1f136de644955ea3f",
        "install.sh": "46177d4c99440b4c0311b67233823a8e8a2fc09693f6c89af1a7161e152fbfad",
        "k3s-airgap-images-amd64.tar.zst": "9024613e2d468c51ba0e5ba21898604c41339354449fb3338cc6a7931189eb6a",
    },
}

DEFAULTS: dict[str, Any] = {
    # -- k3s -----------------------------------------------------------------------------------
    # False: the host already runs k3s, installed and looked after by you (with its kernel modules,
    # sysctls and packages). The install deploy then leaves the host prerequisites and k3s alone,
    # waits for its API and only builds the images and applies Pynchy; the k3s_* keys below are
    # unused. The deploy still calls `k3s ctr` and `k3s kubectl` on the host.
    "pynchy_install_k3s": True,
    "k3s_version": K3S_VERSION,
    "k3s_sha256": K3S_SHA256,
    # Where the online install fetches from; {version} is URL-quoted ("+" becomes %2B).
    "k3s_release_url": "https://github.com/k3s-io/k3s/releases/download/{version}",
    "k3s_install_script_url": "https://raw.githubusercontent.com/k3s-io/k3s/{version}/install.sh",
    # Air-gapped: local paths (on the machine running pyinfra) of the release files, e.g.
    # {"binary": "airgap/k3s", "images": "airgap/k3s-airgap-images-amd64.tar.zst",
    #  "install_script": "airgap/install.sh"}. None installs online.
    "k3s_airgap": None,
    # Merged over the defaults in k3s.py into /etc/rancher/k3s/config.yaml (keys are k3s flags).
    "k3s_config": {},
    # Written to /etc/rancher/k3s/registries.yaml when set (mirrors, private registries).
    "k3s_registries": None,
    # The kubeconfig fetched to this machine, and the API address written into it
    # (default: the inventory name of an SSH host, 127.0.0.1 for @local).
    "k3s_kubeconfig_dest": "~/.kube/pynchy-{host}.yaml",
    "k3s_api_address": None,
    # -- images ----------------------------------------------------------------------------------
    # "auto" uses the first of buildah, nerdctl, docker found on the host (buildah is installed
    # when none is); or name one.
    "pynchy_image_builder": "auto",
    # Build arguments for both Dockerfiles (--build-arg NAME=VALUE), e.g. base images from a mirror
    # or already on the host (air-gapped hosts, registries you cannot reach):
    # {"PYTHON_IMAGE": "mirror.example/library/python:3.11-slim-bookworm",
    #  "UV_IMAGE": "mirror.example/astral-sh/uv:0.13.9"}. They are part of the image tags, so
    # changing them rebuilds the images and rolls the pods. Not for secrets (they are in commands).
    "pynchy_image_build_args": {},
    # Air-gapped: local image archives to import instead of building, e.g.
    # {"pynchy": "airgap/pynchy.tar", "agent": "airgap/pynchy-agent.tar"}, tagged with the refs
    # docs/install.md gives.
    "pynchy_image_archives": None,
    # -- Pynchy ------------------------------------------------------------------------------------
    # manifests/overlays/<name>: "k3s" (SQLite on a volume) or "postgres".
    "pynchy_overlay": "k3s",
    # Extra components from manifests/components, e.g. ["slack-http"].
    "pynchy_components": [],
    # Secret values come from the environment of the machine running pyinfra, or from files named
    # here (variable name -> local path), never from this data itself.
    "pynchy_secret_files": {},
    # Deploy state on the host: bundles, build context, stamps, Secret files (root only).
    "pynchy_state_dir": "/var/lib/pynchy-deploy",
    # Uninstall: also remove k3s and everything in it.
    "pynchy_uninstall_k3s": False,
}


def data(key: str) -> Any:
    """Host data `key`, else its default above (a @deploy's data_defaults supply it only inside one)."""
    return host.data.get(key, DEFAULTS[key])
