"""The whole installation, in order: host prerequisites, k3s, images, Pynchy."""

from __future__ import annotations

from deploys.pynchy_infra.defaults import DEFAULTS
from deploys.pynchy_infra.images import images
from deploys.pynchy_infra.k3s import k3s
from deploys.pynchy_infra.prereqs import prerequisites
from deploys.pynchy_infra.pynchy import pynchy
from pyinfra.api import deploy


@deploy("Pynchy", data_defaults=DEFAULTS)
def install() -> None:
    prerequisites()
    k3s()
    refs = images()
    pynchy(refs)
