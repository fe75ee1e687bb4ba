"""The whole installation, in order: host prerequisites, k3s, images, Pynchy.

With pynchy_install_k3s = False the host's own k3s is used as it is: no prerequisites, no k3s
install, only a wait for its API before the images and Pynchy."""

from __future__ import annotations

from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.images import images
from deploys.pynchy_infra.k3s import k3s
from deploys.pynchy_infra.ops import api_ready
from deploys.pynchy_infra.prereqs import prerequisites
from deploys.pynchy_infra.pynchy import pynchy
from pyinfra.api import deploy
from pyinfra.operations import files


@deploy("Pynchy", data_defaults=DEFAULTS)
def install() -> None:
    if data("pynchy_install_k3s"):
        prerequisites()
        k3s()
    else:
        files.directory(name="Deploy state directory", path=data("pynchy_state_dir"), mode="700")
        api_ready(name="Kubernetes API ready (k3s installed by you)")
    refs = images()
    pynchy(refs)
