"""The production stack on a real node: kubelet + containerd + runc + CNI + CoreDNS + kube-router,
the images built from the project's Dockerfiles, `manifests/overlays/k3s` applied with kubectl.

Only the Anthropic API is doubled (the scripted model, listening where pods reach the host). One
node and one installation serve the whole session; each test makes its own namespace (under the
restricted Pod Security Standard) for its Groups.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from conftest import REPO
from doubles.anthropic import ScriptedModel
from node.helpers import Install, PortForward, write_test_overlay
from pynchy.kube.binaries import ensure_binaries, ensure_node_binaries
from pynchy.kube.images import BuiltImage, ensure_images
from pynchy.kube.node.node import RealNode

MODEL_PORT = 443  # the gateway's NetworkPolicy lets it reach HTTPS ports: the double listens on one


@pytest.fixture(scope="session")
def node_images() -> dict[str, BuiltImage]:
    """pynchy, agent, pause and coredns images (built once per change of their inputs, cached)."""
    bins = ensure_node_binaries()
    return ensure_images(REPO, pause_binary=bins / "pause", coredns_binary=bins / "coredns")


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory, node_images: dict[str, BuiltImage]) -> Iterator[RealNode]:
    """Never skipped: on a machine that cannot run it, every node test errors with the reason."""
    node = RealNode(
        ensure_binaries(),
        ensure_node_binaries(),
        tmp_path_factory.mktemp("realnode"),
        sandbox_image=node_images["pause"],
        dns_image=node_images["coredns"],
    )
    node.start()
    try:
        node.import_images([node_images["pynchy"], node_images["agent"]])
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def node_model(real_node: RealNode) -> Iterator[ScriptedModel]:
    with ScriptedModel().listen_on(real_node.link_host_ip, MODEL_PORT) as model:
        yield model


@pytest.fixture(scope="session")
def installed(
    real_node: RealNode,
    node_model: ScriptedModel,
    node_images: dict[str, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    """`kubectl apply -k` of the test overlay; the operator and the gateway Ready as pods."""
    plane = real_node.plane
    assert plane is not None
    overlay = write_test_overlay(tmp_path_factory.mktemp("overlay"), node_images, node_model.base_url)
    plane.kubectl("apply", "--server-side", "-k", str(overlay))
    install = Install(real_node, node_model, overlay, node_images["agent"].ref)
    for name in ("pynchy-operator", "pynchy-gateway"):
        install.wait_available(name)
    with PortForward(plane, "pynchy-system", "svc/pynchy-gateway", 8080) as forward:
        install.gateway_url = forward.url
        yield install


@pytest.fixture
def node_namespace(installed: Install, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace for one test, enforcing the restricted Pod Security Standard like `pynchy`."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"n-{slug}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"
    installed.kubectl("create", "namespace", name)
    installed.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=false", check=False)
