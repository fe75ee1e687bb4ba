"""Two host-data options on @fake: pynchy_install_k3s = False (a host whose k3s is yours: no
prerequisites, no k3s install, the images and Pynchy as usual) and pynchy_image_build_args (build
arguments for both Dockerfiles, part of the image tags)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from deploys.pynchy_infra import bundle
from deploys.pynchy_infra.install import install
from deploys.pynchy_infra.k3s import ADMIN_KUBECONFIG, BINARY, CONFIG_FILE
from deploys.pynchy_infra.prereqs import MODULES_FILE, SYSCTL_FILE
from pyinfra.api.exceptions import DeployError

from infra.deploy_harness import FRESH, run_deploy

MIRROR = {
    "PYTHON_IMAGE": "mirror.example/library/python:3.11-slim-bookworm",
    "UV_IMAGE": "mirror.example/astral-sh/uv:0.13.9",
}


@pytest.fixture(autouse=True)
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PYNCHY_ANTHROPIC_API_KEY", "PYNCHY_ANTHROPIC_AUTH_TOKEN", "PYNCHY_CHAT_TOKEN", "PYNCHY_RUN_TOKEN_KEY"):
        monkeypatch.delenv(key, raising=False)


def data(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"fake_responses": FRESH, "k3s_kubeconfig_dest": str(tmp_path / "kube" / "{host}.yaml"), **extra}


def test_without_k3s_install_only_images_and_pynchy_run(tmp_path: Path) -> None:
    run = run_deploy(install, data(tmp_path, pynchy_install_k3s=False))
    assert run.failed == []
    for pattern in (r"apt-get", r"modprobe", r"^sysctl ", r"k3s-install\.sh", r"systemctl", r"releases/download"):
        assert run.executed(pattern) == [], pattern
    for path in (MODULES_FILE, SYSCTL_FILE, CONFIG_FILE, BINARY):
        assert not any(path in c for c in run.commands), path
        assert path not in run.uploads
    assert not any(ADMIN_KUBECONFIG in c for c in run.commands)  # no kubeconfig fetched
    assert (tmp_path / "kube").exists() is False
    # The state directory root-only, the API waited for, then what the full install does.
    assert run.executed(r"^chmod 700 /var/lib/pynchy-deploy$")
    steps = [
        r"until k3s kubectl get --raw=/readyz",
        r"^buildah build .* -t localhost/pynchy:",
        r"^k3s ctr --namespace k8s.io images import .*/pynchy/image.tar$",
        r"apply --server-side --force-conflicts --field-manager=pynchy-deploy -k /var/lib/pynchy-deploy/manifests/host",
        r"create secret generic --namespace pynchy-system pynchy-run-token",
        r"rollout status --namespace pynchy-system deployment/pynchy-operator",
    ]
    positions = [next(i for i, c in enumerate(run.commands) if re.search(p, c)) for p in steps]
    assert positions == sorted(positions)


def test_build_args_reach_both_builds_and_name_the_tags(tmp_path: Path) -> None:
    plain = bundle.image_refs(built=True)
    refs = bundle.image_refs(built=True, build_args=MIRROR)
    assert refs != plain
    assert all(r.startswith(f"{plain[i].rsplit('-', 1)[0]}-") for i, r in refs.items())
    assert bundle.image_refs(built=True, build_args={}) == plain  # no arguments: the tags as before

    run = run_deploy(install, data(tmp_path, pynchy_image_build_args=MIRROR))
    assert run.failed == []
    builds = run.executed(r"^buildah build ")
    assert len(builds) == 2
    for build, ref in zip(builds, (refs["pynchy"], refs["agent"]), strict=True):
        assert f"--build-arg PYTHON_IMAGE={MIRROR['PYTHON_IMAGE']}" in build
        assert f"--build-arg UV_IMAGE={MIRROR['UV_IMAGE']}" in build
        assert f"-t {ref} " in build
    # The manifests name the same tags.
    manifests = run.uploads["/var/lib/pynchy-deploy/manifests.tar"]
    assert refs["pynchy"].rsplit(":", 1)[1].encode() in manifests
    assert f"PYNCHY_AGENT_IMAGE={refs['agent']}".encode() in manifests


def test_default_builds_pass_no_build_args(tmp_path: Path) -> None:
    run = run_deploy(install, data(tmp_path))
    assert run.failed == []
    assert run.executed(r"^buildah build ")
    assert not run.executed(r"--build-arg")


@pytest.mark.parametrize("bad", [["PYTHON_IMAGE=x"], {"PYTHON_IMAGE": 3}])
def test_build_args_must_be_a_dict_of_strings(tmp_path: Path, bad: object) -> None:
    with pytest.raises(DeployError, match="pynchy_image_build_args"):
        run_deploy(install, data(tmp_path, pynchy_image_build_args=bad))
