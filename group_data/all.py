"""Settings for every host (pyinfra group data). Every key and its default is in
deploys/pynchy_infra/defaults.py; uncomment what you change. `pyinfra inventory.py debug-inventory`
shows the merged result.

Secret values never go here: they come from environment variables on the machine running pyinfra
(PYNCHY_ANTHROPIC_API_KEY, PYNCHY_SLACK_BOT_TOKEN, ...) or from files named in pynchy_secret_files.
"""

# -- k3s -------------------------------------------------------------------------------------------
# Upgrade: set a newer version with its checksums (sha256sum-<arch>.txt of the release, and the
# install.sh at the release tag), then run deploys/install.py again.
# k3s_version = "v1.36.4+k3s1"
# k3s_sha256 = {"amd64": {"k3s": "...", "install.sh": "...", "k3s-airgap-images-amd64.tar.zst": "..."}}

# Air-gapped: the release files on this machine (docs/install.md, "Air-gapped hosts").
# k3s_airgap = {
#     "binary": "airgap/k3s",
#     "install_script": "airgap/install.sh",
#     "images": "airgap/k3s-airgap-images-amd64.tar.zst",
# }
# pynchy_image_archives = {"pynchy": "airgap/pynchy.tar", "agent": "airgap/pynchy-agent.tar"}

# Extra k3s settings (keys are k3s server flags), e.g. no bundled Traefik when you do not use the
# Slack HTTP transport:
# k3s_config = {"disable": ["traefik"]}

# A registry mirror for pulls (k3s registries.yaml):
# k3s_registries = {"mirrors": {"docker.io": {"endpoint": ["https://mirror.example.org"]}}}

# The address in the kubeconfig fetched to ~/.kube/pynchy-<host>.yaml (default: the host name).
# k3s_api_address = "assistant.lan"

# -- Pynchy ----------------------------------------------------------------------------------------
# pynchy_overlay = "k3s"            # or "postgres"
# pynchy_components = []            # e.g. ["slack-http"] for Slack's HTTP Events API
# pynchy_image_builder = "auto"     # or "buildah", "nerdctl", "docker"
# Base images from a mirror (or already in the builder's store on an air-gapped host):
# pynchy_image_build_args = {"PYTHON_IMAGE": "mirror.example/library/python:3.11-slim-bookworm",
#                            "UV_IMAGE": "mirror.example/astral-sh/uv:0.13.9"}
# pynchy_install_k3s = False        # use the k3s you already run: no prerequisites, no k3s install
# pynchy_secret_files = {"PYNCHY_ANTHROPIC_API_KEY": "~/.config/pynchy/anthropic-key"}
