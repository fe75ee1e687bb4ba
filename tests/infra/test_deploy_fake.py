"""The install deploy against pyinfra's @fake connector: what a fresh host gets, that a host which
already has everything gets nothing (a second run changes nothing), and that no secret value
appears in any command or in pyinfra's output."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from deploys.pynchy_infra import bundle, prereqs
from deploys.pynchy_infra.defaults import K3S_SHA256, K3S_VERSION
from deploys.pynchy_infra.install import install

from infra.deploy_harness import FRESH, FakeHostState, Run, run_deploy

SECRETS = {
    "PYNCHY_ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdef",
    "PYNCHY_SLACK_BOT_TOKEN": "xoxb-test-bot-token-9876",
    "PYNCHY_SLACK_APP_TOKEN": "xapp-test-app-token-5432",
    "PYNCHY_OWNER": "U0OWNER123",
}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in (
        "PYNCHY_ANTHROPIC_AUTH_TOKEN",
        "PYNCHY_SLACK_SIGNING_SECRET",
        "PYNCHY_CHAT_TOKEN",
        "PYNCHY_RUN_TOKEN_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    return SECRETS


def dpkg(packages: list[str]) -> dict[str, list[str]]:
    """The answer of `dpkg -l` on a host with `packages` installed."""
    return {"dpkg -l": [f"ii  {p}  1.0-1  amd64  package {p}" for p in packages]}


def host_data(tmp_path: Path, responses: dict[Any, Any], **extra: Any) -> dict[str, Any]:
    return {"fake_responses": responses, "k3s_kubeconfig_dest": str(tmp_path / "kube" / "{host}.yaml"), **extra}


DOWNLOADS = ("/usr/local/bin/k3s", "/var/lib/pynchy-deploy/k3s-install.sh")


def installed_state(first: Run, tmp_path: Path) -> FakeHostState:
    """The host as the first run left it, answered the way the real commands would."""
    state = FakeHostState()
    for command in first.commands:
        if m := re.fullmatch(r"mkdir -p (\S+)", command):
            state.dirs.setdefault(m.group(1), "755")
        if m := re.fullmatch(r"chmod (\d+) (\S+)", command):
            if m.group(2) in first.uploads or m.group(2) in DOWNLOADS:
                state.file_modes[m.group(2)] = m.group(1)
            else:
                state.dirs[m.group(2)] = m.group(1)
        # Stamps written with their digest (the secret stamps are hashes of the files, below).
        if m := re.search(r"echo (\w+) > (\S+/stamps/\S+)$", command):
            state.answers[f"cat {m.group(2)} "] = m.group(1)
    for path, content in first.uploads.items():
        if path.startswith("/tmp/"):
            continue
        state.files[path] = content
        if path.endswith(".json") and "/secrets/" in path:
            name = Path(path).stem
            stamp = f"/var/lib/pynchy-deploy/stamps/secret-{name}"
            state.answers[f"cat {stamp} "] = hashlib.sha256(content).hexdigest()
    # Downloads: only their checksums are known (the pins).
    pins = K3S_SHA256["amd64"]
    state.sha256["/usr/local/bin/k3s"] = pins["k3s"]
    state.sha256["/var/lib/pynchy-deploy/k3s-install.sh"] = pins["install.sh"]
    # The kubeconfig already fetched: the local copy matches the host's.
    kubeconfig = tmp_path / "kube" / "fake-node.yaml"
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    kubeconfig.chmod(0o600)
    state.sha1["/var/lib/pynchy-deploy/kubeconfig.yaml"] = hashlib.sha1(kubeconfig.read_bytes()).hexdigest()

    refs = bundle.image_refs(built=True)
    state.answers.update(
        {
            **FRESH,
            **dpkg([*prereqs.PACKAGES, "buildah"]),
            "/proc/modules": [f"{m} 16384 0 - Live 0x0000000000000000" for m in prereqs.KERNEL_MODULES],
            **{f"sysctl {k} ": f"{k} = {v}" for k, v in prereqs.SYSCTLS.items()},
            "k3s --version": f"k3s version {K3S_VERSION} (0123abcd)",
            "--property SubState k3s.service": ["Id=k3s.service", "SubState=running"],
            "--property UnitFileState k3s.service": ["Id=k3s.service", "UnitFileState=enabled"],
            "get --raw=/readyz": "ok",
            "cmp -s - /var/lib/pynchy-deploy/kubeconfig.yaml": "same",
            **{f"name=={ref} ": f"sha256:{'0' * 64}" for ref in refs.values()},
            "secret pynchy-run-token --output name": "secret/pynchy-run-token",
            "get deployments --namespace pynchy-system": ["pynchy-operator=1/1/1", "pynchy-gateway=1/1/1"],
        }
    )
    return state


def test_fresh_host_gets_everything_in_order(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    run = run_deploy(install, host_data(tmp_path, FRESH))
    assert run.failed == []

    def first(pattern: str) -> int:
        hits = [i for i, c in enumerate(run.commands) if re.search(pattern, c)]
        assert hits, f"no command matches {pattern!r}"
        return hits[0]

    steps = [
        r"apt-get -y .* install .*\bipset\b.*\bbuildah\b",
        r"^modprobe -a br_netfilter$",
        r"^sysctl net.bridge.bridge-nf-call-iptables=1$",
        # the pinned binary, verified against its pinned checksum
        r"releases/download/v1\.36\.4%2Bk3s1/k3s ",
        K3S_SHA256["amd64"]["k3s"],
        r"^env INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_SKIP_START=true INSTALL_K3S_VERSION=v1\.36\.4\+k3s1 ",
        r"^systemctl start k3s.service$",
        r"until k3s kubectl get --raw=/readyz",
        r"^buildah build .* -t localhost/pynchy:",
        r"^k3s ctr --namespace k8s.io images import .*/pynchy/image.tar$",
        r"^buildah build .*agent-image/Dockerfile -t localhost/pynchy-agent:",
        r"apply --server-side --force-conflicts --field-manager=pynchy-deploy -k /var/lib/pynchy-deploy/manifests/host",
        r"create secret generic --namespace pynchy-system pynchy-run-token",
        r"patch secret --namespace pynchy-system pynchy-gateway --type=merge",
        r"rollout restart deployment --namespace pynchy-system pynchy-gateway",
        r"rollout status --namespace pynchy-system deployment/pynchy-operator",
    ]
    positions = [first(p) for p in steps]
    assert positions == sorted(positions), "steps ran out of order"
    # Settings are files, not installer flags (a later installer run would drop flags).
    config = run.uploads["/etc/rancher/k3s/config.yaml"].decode()
    assert "write-kubeconfig-mode: '0600'" in config
    assert "secrets-encryption: true" in config


def test_no_secret_value_in_commands_or_output(
    tmp_path: Path, secrets_env: dict[str, str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    run = run_deploy(install, host_data(tmp_path, FRESH))
    printed = capsys.readouterr()
    for value in secrets_env.values():
        assert not any(value in c for c in run.commands), "a secret value is in a command"
        assert value not in printed.out + printed.err + caplog.text
        for name in run.changed:
            assert value not in name
    # The values went only into the root-only Secret file, as a merge patch of exactly these keys.
    patch = json.loads(run.uploads["/var/lib/pynchy-deploy/secrets/pynchy-gateway.json"])
    assert patch == {"stringData": secrets_env}
    assert run.executed(r"^chmod 600 /var/lib/pynchy-deploy/secrets/pynchy-gateway.json$")
    assert run.executed(r"^chmod 700 /var/lib/pynchy-deploy/secrets$")
    # The generated run-token key never leaves the host: created there from /dev/urandom.
    (create,) = run.executed("create secret generic --namespace pynchy-system pynchy-run-token")
    assert "/dev/urandom" in create


def test_second_run_on_an_installed_host_changes_nothing(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    first = run_deploy(install, host_data(tmp_path, FRESH))
    assert first.failed == []
    installed = installed_state(first, tmp_path)
    second = run_deploy(install, host_data(tmp_path, installed.responses()))
    assert second.failed == []
    assert second.changed == []
    # and nothing was uploaded again
    assert second.uploads == {}


def test_a_changed_setting_changes_only_what_depends_on_it(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    first = run_deploy(install, host_data(tmp_path, FRESH))
    installed = installed_state(first, tmp_path)
    second = run_deploy(
        install, host_data(tmp_path, installed.responses(), k3s_config={"node-label": ["pynchy.dev/node=true"]})
    )
    assert second.failed == []
    assert [n.rsplit(" | ", 1)[-1] for n in second.changed] == [
        "k3s config.yaml",
        "Restart k3s for its new binary, images or configuration",
    ]
    assert second.executed(r"^systemctl restart k3s.service$")


def test_a_new_slack_token_updates_the_secret_and_restarts_the_gateway_only(
    tmp_path: Path, secrets_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_deploy(install, host_data(tmp_path, FRESH))
    installed = installed_state(first, tmp_path)
    monkeypatch.setenv("PYNCHY_SLACK_BOT_TOKEN", "xoxb-rotated-token-1111")
    second = run_deploy(install, host_data(tmp_path, installed.responses()))
    assert second.failed == []
    assert [n.rsplit(" | ", 1)[-1] for n in second.changed] == [
        "Gateway credentials file (PYNCHY_ANTHROPIC_API_KEY, PYNCHY_OWNER, PYNCHY_SLACK_APP_TOKEN, "
        "PYNCHY_SLACK_BOT_TOKEN; values not shown)",
        "Secret pynchy-gateway",
    ]
    assert second.executed("rollout restart deployment --namespace pynchy-system pynchy-gateway")
    assert not second.executed("rollout restart deployment --namespace pynchy-system pynchy-operator")


def test_without_credentials_in_the_environment_the_secret_is_left_alone(
    tmp_path: Path, secrets_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_deploy(install, host_data(tmp_path, FRESH))
    installed = installed_state(first, tmp_path)
    for key in SECRETS:
        monkeypatch.delenv(key)
    second = run_deploy(install, host_data(tmp_path, installed.responses()))
    assert second.failed == []
    assert second.changed == []
    assert not second.executed("pynchy-gateway --type=merge")


def test_changed_sources_rebuild_and_roll_the_images(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    # The tag names the inputs: a host whose containerd holds an older build gets a new image,
    # and the manifests (with the new tag) are applied again.
    first = run_deploy(install, host_data(tmp_path, FRESH))
    installed = installed_state(first, tmp_path)
    responses = installed.responses()
    old = bundle.image_refs(built=True)["pynchy"]
    del responses[f"name=={old} "]
    second = run_deploy(install, host_data(tmp_path, responses))
    assert second.failed == []
    assert [n.rsplit(" | ", 1)[-1] for n in second.changed] == [f"Image {old}"]
    assert second.executed(rf"^buildah build .* -t {re.escape(old)} ")


def test_the_uploaded_manifests_name_this_hosts_images(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    run = run_deploy(install, host_data(tmp_path, FRESH, pynchy_components=["slack-http"]))
    with tarfile.open(fileobj=BytesIO(run.uploads["/var/lib/pynchy-deploy/manifests.tar"])) as tar:
        host = tar.extractfile("host/kustomization.yaml")
        assert host is not None
        text = host.read().decode()
    refs = bundle.image_refs(built=True)
    assert f"newTag: {refs['pynchy'].rsplit(':', 1)[1]}" in text
    assert f"PYNCHY_AGENT_IMAGE={refs['agent']}" in text
    assert "../components/slack-http" in text
    assert "- ../overlays/k3s" in text


def test_postgres_overlay_generates_its_password_on_the_host(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    run = run_deploy(install, host_data(tmp_path, FRESH, pynchy_overlay="postgres"))
    assert run.failed == []
    (create,) = run.executed("create secret generic --namespace pynchy-system pynchy-postgres")
    assert "/dev/urandom" in create
    assert "PYNCHY_DATABASE_URL" in create


# -- air-gapped ---------------------------------------------------------------------------------------


@pytest.fixture
def airgap_files(tmp_path: Path) -> dict[str, Any]:
    """Stand-ins for the release files, with their own checksums pinned (the real pins name the
    real files, which this test does not download)."""
    folder = tmp_path / "airgap"
    folder.mkdir()
    contents = {
        "k3s": b"k3s binary stand-in",
        "install.sh": b"#!/bin/sh\n# install script stand-in\n",
        "k3s-airgap-images-amd64.tar.zst": b"images stand-in",
        "pynchy.tar": b"pynchy image archive stand-in",
        "pynchy-agent.tar": b"agent image archive stand-in",
    }
    for name, content in contents.items():
        (folder / name).write_bytes(content)
    pins = {name: hashlib.sha256(contents[name]).hexdigest() for name in list(contents)[:3]}
    return {
        "k3s_sha256": {"amd64": pins},
        "k3s_airgap": {
            "binary": str(folder / "k3s"),
            "install_script": str(folder / "install.sh"),
            "images": str(folder / "k3s-airgap-images-amd64.tar.zst"),
        },
        "pynchy_image_archives": {"pynchy": str(folder / "pynchy.tar"), "agent": str(folder / "pynchy-agent.tar")},
    }


def test_air_gapped_install_downloads_nothing(
    tmp_path: Path, secrets_env: dict[str, str], airgap_files: dict[str, Any]
) -> None:
    run = run_deploy(install, host_data(tmp_path, {**FRESH, **dpkg(prereqs.PACKAGES)}, **airgap_files))
    assert run.failed == []
    assert not run.executed(r"^(curl|wget|buildah|apt-get)\b|github\.com")
    assert run.uploads["/usr/local/bin/k3s"] == b"k3s binary stand-in"
    assert run.uploads["/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst"] == b"images stand-in"
    assert run.executed(r"^k3s ctr --namespace k8s.io images import /var/lib/pynchy-deploy/images/agent.tar$")
    refs = bundle.image_refs(built=False)
    with tarfile.open(fileobj=BytesIO(run.uploads["/var/lib/pynchy-deploy/manifests.tar"])) as tar:
        host = tar.extractfile("host/kustomization.yaml")
        assert host is not None
        assert f"PYNCHY_AGENT_IMAGE={refs['agent']}" in host.read().decode()


def test_air_gapped_files_that_do_not_match_their_pins_are_refused(
    tmp_path: Path, secrets_env: dict[str, str], airgap_files: dict[str, Any]
) -> None:
    Path(airgap_files["k3s_airgap"]["binary"]).write_bytes(b"tampered")
    with pytest.raises(Exception, match="does not match its pinned sha256"):
        run_deploy(install, host_data(tmp_path, {**FRESH, **dpkg(prereqs.PACKAGES)}, **airgap_files))


def test_an_air_gapped_host_without_its_packages_is_told_which(
    tmp_path: Path, secrets_env: dict[str, str], airgap_files: dict[str, Any]
) -> None:
    with pytest.raises(Exception, match=r"air-gapped host lacks the packages .*ipset"):
        run_deploy(install, host_data(tmp_path, FRESH, **airgap_files))


def test_an_architecture_without_pins_is_refused(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    with pytest.raises(Exception, match=r"no pinned k3s checksums for arm64"):
        run_deploy(install, host_data(tmp_path, {**FRESH, "uname -m": "aarch64"}))


# -- uninstall ------------------------------------------------------------------------------------------


def test_uninstall_removes_pynchy_and_then_has_nothing_left_to_do(tmp_path: Path, secrets_env: dict[str, str]) -> None:
    from deploys.pynchy_infra.uninstall import uninstall

    first = run_deploy(install, host_data(tmp_path, FRESH))
    installed = installed_state(first, tmp_path).responses()
    installed["/var/lib/pynchy-deploy/manifests/host/kustomization.yaml || test -L"] = (
        "user=root group=root mode=-rw-r--r-- atime=0 mtime=0 ctime=0 size=10 "
        "'/var/lib/pynchy-deploy/manifests/host/kustomization.yaml'"
    )
    installed["grep '^localhost/pynchy'"] = list(bundle.image_refs(built=True).values())
    removal = run_deploy(uninstall, host_data(tmp_path, installed))
    assert removal.failed == []
    assert removal.executed(
        r"^k3s kubectl delete --ignore-not-found --wait=true -k /var/lib/pynchy-deploy/manifests/host$"
    )
    assert removal.executed(r"^k3s ctr --namespace k8s.io images remove localhost/pynchy")
    assert removal.executed(r"^rm -rf /var/lib/pynchy-deploy$")
    assert not removal.executed("k3s-uninstall.sh")  # k3s stays unless asked

    # A host without Pynchy (what the removal leaves): nothing to do.
    again = run_deploy(uninstall, host_data(tmp_path, {**FRESH, "k3s --version": f"k3s version {K3S_VERSION} (x)"}))
    assert again.failed == []
    assert again.changed == []


def test_uninstall_with_k3s(tmp_path: Path) -> None:
    from deploys.pynchy_infra.uninstall import uninstall

    kubeconfig = tmp_path / "kube" / "fake-node.yaml"
    kubeconfig.parent.mkdir()
    kubeconfig.write_text("kubeconfig")
    state = FakeHostState(files={"/usr/local/bin/k3s-uninstall.sh": b"#!/bin/sh\n"})
    responses = {**state.responses(), **FRESH}
    run = run_deploy(uninstall, host_data(tmp_path, responses, pynchy_uninstall_k3s=True))
    assert run.failed == []
    assert run.executed(r"^/usr/local/bin/k3s-uninstall.sh$")
    assert not kubeconfig.exists()
