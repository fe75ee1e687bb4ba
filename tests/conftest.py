"""Shared fixtures: a real control plane for the session, a namespace per test."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynchy.kube.binaries import ensure_binaries
from pynchy.kube.controlplane import ControlPlane

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # plain data modules such as invalid_cases


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager built from source, on loopback.

    Never skipped: if the binaries cannot be built, every cluster test errors with the reason.
    """
    bin_dir = ensure_binaries()
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane"))
    plane.start()
    try:
        plane.apply_crds(REPO / "crds")
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"t-{slug}-{digest}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
