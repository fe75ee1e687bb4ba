"""The pyinfra deploy (deploys/install.py) for real where it can be: `pyinfra @local` on this machine
builds the two images from the real Dockerfiles with buildah, imports them into a real node's
containerd through `k3s ctr`, creates the Secrets and applies the manifests through `k3s kubectl`;
the operator and the gateway then run on that node from exactly those images, and a second
identical run changes nothing.

What is not real here: k3s itself. No k3s binary can be had on this machine, so its install (and
the host prerequisites that go with it: packages, kernel modules, sysctls) stays tested on @fake
(tests/infra), and the run uses `pynchy_install_k3s = False`. A stand-in `k3s` first on PATH maps
`k3s ctr` to this node's containerd and `k3s kubectl` to its control plane; anything else it refuses.
The Dockerfiles' public base images cannot be pulled here either: buildah builds against a storage
of its own (CONTAINERS_STORAGE_CONF; kept under the image cache like a host's own storage, so
unchanged Dockerfile steps come from its layer cache) seeded with the stand-in base images that
pynchy.kube.images makes, named through `pynchy_image_build_args`, the option a mirror or an
air-gapped host uses.

The node is this module's own (its own directory, network namespace and control plane), so it runs
beside the session's node when both are up.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cluster.helpers import get, wait_for
from conftest import REPO
from infra.deploy_harness import copy_checkout
from pynchy.kube.binaries import ensure_binaries, ensure_node_binaries
from pynchy.kube.images import IMAGE_INPUTS, default_cache_dir, ensure_images, export_base_images, prune_dangling
from pynchy.kube.node.node import RealNode

PYINFRA = Path(sys.executable).with_name("pyinfra")
NAMESPACE = "pynchy-system"
DEPLOYMENTS = ("pynchy-operator", "pynchy-gateway")
API_KEY = "sk-ant-deploy-test-key-0123456789"
CHAT_TOKEN = "deploy-test-chat-token-0123456789"
RUN_TIMEOUT = 420  # one pyinfra run: two image builds (cold: about 80 s each here) and the rollout

# The deploy's commands call k3s's multi-call binary; this one serves them from the test node.
K3S_STANDIN = """\
#!/bin/sh
# Stand-in for k3s's multi-call binary (tests/node/test_deploy.py): `k3s ctr` is the test node's
# containerd, `k3s kubectl` its control plane. Nothing else is available.
case "$1" in
  ctr) shift; exec {ctr} --address {socket} "$@" ;;
  kubectl) shift; exec {kubectl} --kubeconfig {kubeconfig} "$@" ;;
  *) echo "k3s stand-in: only 'k3s ctr' and 'k3s kubectl' exist here, not 'k3s $*'" >&2; exit 1 ;;
esac
"""


@dataclass
class DeployRun:
    proc: subprocess.CompletedProcess[str]
    results: dict[str, Any]
    seconds: float
    changed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.proc.returncode == 0 and bool(self.results) and not self.errors

    def report(self) -> str:
        out, err = self.proc.stdout[-3000:], self.proc.stderr[-6000:]
        return f"exit {self.proc.returncode}\n--- stderr (end)\n{err}\n--- stdout (end)\n{out}"


@dataclass
class DeployHost:
    """This machine as the deploy's @local target: a checkout snapshot, the inventory, the environment."""

    node: RealNode
    checkout: Path
    inventory: Path
    env: dict[str, str]
    storage: BuilderStorage
    built: set[str] = field(default_factory=set)  # the image refs the runs chose
    timings: dict[str, float] = field(default_factory=dict)

    def run(self) -> DeployRun:
        """`pyinfra <inventory> deploys/install.py -y --json` from the checkout, as docs/install.md says."""
        started = time.monotonic()
        proc = subprocess.run(
            [str(PYINFRA), str(self.inventory), "deploys/install.py", "-y", "--json"],
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        seconds = time.monotonic() - started
        results = _json_results(proc.stdout)
        run = DeployRun(proc, results, seconds)
        for op in results.get("operations", []):
            if op["error"]:
                run.errors.append(op["name"])
            elif op["success"]:  # pyinfra's "success" column: the operation changed something
                run.changed.append(op["name"])
        run.errors += [f"failed host {h}" for h in results.get("failed_hosts", [])]
        self.built |= set(chosen_refs(run).values())
        return run

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.node.plane is not None
        return self.node.plane.kubectl(*args, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        assert self.node.plane is not None
        return get(self.node.plane, kind, name, NAMESPACE) or {}

    def containerd_refs(self) -> set[str]:
        out = subprocess.run(
            ["ctr", "--address", str(self.node.paths.containerd_socket), "-n", "k8s.io", "images", "ls", "-q"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return set(out.split())

    def pods(self, deployment: str) -> list[dict[str, Any]]:
        """The pods of `deployment` that are not being deleted."""
        out = self.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/name={deployment}", "-o", "json"
        ).stdout
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def describe(self) -> str:
        pods = self.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout
        return f"{pods}\n{events[-4000:]}"


def _json_results(stdout: str) -> dict[str, Any]:
    """pyinfra --json: one JSON document on stdout, {"plan": [...], "results": {...}}."""
    for candidate in (stdout, *reversed(stdout.splitlines())):
        try:
            payload = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(payload, dict) and "results" in payload:
            return payload["results"] or {}
    return {}


def _snapshot(dest: Path) -> Path:
    """What the deploy reads from the checkout (its own code, the manifests, the image inputs),
    copied once: others editing the working tree must not change the tags between the two runs."""
    paths = {"deploys", "manifests", *(p for inputs in IMAGE_INPUTS.values() for p in inputs)}
    return copy_checkout(REPO, paths, dest)


@dataclass
class BuilderStorage:
    """buildah's storage for the deploy's builds (CONTAINERS_STORAGE_CONF), kept under the image
    cache across runs as a host keeps its own: unchanged Dockerfile steps come from its layer cache.
    After a run it holds the base images and the images of that run only."""

    graph: Path
    run: Path
    conf: Path

    def buildah(self, env: dict[str, str], *args: str) -> str:
        proc = subprocess.run(["buildah", *args], env=env, capture_output=True, text=True, check=False)
        return proc.stdout

    def drop_images_but(self, env: dict[str, str], keep: set[str]) -> None:
        """Untag (and so remove, with the layers no other image uses) earlier runs' Pynchy images."""
        names = self.buildah(env, "images", "--format", "{{.Name}}:{{.Tag}}").split()
        old = [n for n in names if n.startswith("localhost/pynchy") and n not in keep]
        if old:
            self.buildah(env, "rmi", "--force", *old)
        prune_dangling(["buildah"], env=env)


@contextmanager
def deploy_storage() -> Iterator[BuilderStorage]:
    """The deploy tests' buildah storage, used by one test session at a time (a lock file)."""
    root = default_cache_dir() / "deploy-buildah"
    root.mkdir(parents=True, exist_ok=True)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    storage = BuilderStorage(root / "root", root / f"run-{boot}", root / "storage.conf")
    with (root / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Run state (locks, mount counts) must not outlive a reboot: one run root per boot.
            for stale in root.glob("run-*"):
                if stale != storage.run:
                    shutil.rmtree(stale, ignore_errors=True)
            storage.graph.mkdir(exist_ok=True)
            storage.run.mkdir(exist_ok=True)
            storage.conf.write_text(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{storage.graph}"\nrunroot = "{storage.run}"\n'
            )
            yield storage
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def deploy_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """A node of this module's own; only its sandbox and DNS images are imported beforehand."""
    bins = ensure_node_binaries()
    static = ensure_images(REPO, pause_binary=bins / "pause", coredns_binary=bins / "coredns", dockerfile_images=())
    node = RealNode(
        ensure_binaries(),
        bins,
        tmp_path_factory.mktemp("deploynode"),
        sandbox_image=static["pause"],
        dns_image=static["coredns"],
    )
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def deploy_host(deploy_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployHost]:
    plane = deploy_node.plane
    assert plane is not None
    tmp = tmp_path_factory.mktemp("deploy")
    checkout = _snapshot(tmp / "checkout")

    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    ctr = shutil.which("ctr")
    assert ctr, "ctr is not installed"
    standin = bin_dir / "k3s"
    standin.write_text(
        K3S_STANDIN.format(
            ctr=ctr,
            socket=deploy_node.paths.containerd_socket,
            kubectl=plane.bin_dir / "kubectl",
            kubeconfig=plane.kubeconfig,
        )
    )
    standin.chmod(0o755)

    with deploy_storage() as storage:
        build_args = export_base_images(checkout, storage.graph, storage.run)
        host_data = {
            "pynchy_install_k3s": False,
            "pynchy_image_builder": "buildah",
            "pynchy_image_build_args": build_args,
            "pynchy_state_dir": str(tmp / "state"),
        }
        inventory = tmp / "inventory.py"
        inventory.write_text(f"pynchy_nodes = [('@local', {host_data!r})]\n")

        # This shell's Pynchy variables (secrets among them) and kubeconfig stay out of the deploy.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYNCHY_") and k != "KUBECONFIG"}
        env |= {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "CONTAINERS_STORAGE_CONF": str(storage.conf),
            "PYNCHY_ANTHROPIC_API_KEY": API_KEY,
            "PYNCHY_CHAT_TOKEN": CHAT_TOKEN,
        }
        host = DeployHost(deploy_node, checkout, inventory, env, storage)
        storage.buildah(env, "rm", "--all")  # working containers of a run that was killed
        try:
            yield host
        finally:
            storage.buildah(env, "rm", "--all")
            storage.drop_images_but(env, host.built)


@pytest.fixture(scope="module")
def first_run(deploy_host: DeployHost) -> DeployRun:
    run = deploy_host.run()
    deploy_host.timings["first run"] = run.seconds
    return run


def chosen_refs(run: DeployRun) -> dict[str, str]:
    """The image refs the deploy chose, from the names of its image operations."""
    refs = {}
    for op in run.results.get("operations", []):
        for name in op["names"]:
            if m := re.search(r"\bImage (localhost/(pynchy(?:-agent)?):\S+)$", name):
                refs["agent" if m.group(2) == "pynchy-agent" else "pynchy"] = m.group(1)
    return refs


def test_deploy_builds_imports_and_runs_pynchy_on_the_node(deploy_host: DeployHost, first_run: DeployRun) -> None:
    run = first_run
    assert run.ok, run.report()
    refs = chosen_refs(run)
    assert set(refs) == {"pynchy", "agent"}, run.report()
    version = re.search(r'^version = "([^"]+)"', (deploy_host.checkout / "pyproject.toml").read_text(), re.M)
    assert version
    for ref in refs.values():
        assert re.fullmatch(rf"localhost/pynchy(-agent)?:{re.escape(version.group(1))}-[0-9a-f]{{12}}", ref)
    for step in (f"Image {refs['pynchy']}", f"Image {refs['agent']}", "Apply the manifests (server-side)"):
        assert any(step in name for name in run.changed), (step, run.changed)

    # The stand-in serves `ctr` and `kubectl` only: whatever else the deploy had called would have failed.
    refused = subprocess.run(["k3s", "--version"], env=deploy_host.env, capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert "k3s stand-in" in refused.stderr

    # Both images are in the node's containerd (nothing but the deploy put them there).
    assert set(refs.values()) <= deploy_host.containerd_refs()

    # The operator and the gateway available, their pods running the image the deploy built.
    def available(name: str) -> bool:
        obj = deploy_host.get("deployment", name)
        status = obj.get("status") or {}
        return bool(
            status.get("availableReplicas") == obj["spec"]["replicas"]
            and status.get("updatedReplicas") == obj["spec"]["replicas"]
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    def settled(name: str) -> list[dict[str, Any]] | None:
        pods = deploy_host.pods(name)
        ready = [
            p
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions", [])
            )
        ]
        return pods if len(pods) == 1 and ready else None

    for name in DEPLOYMENTS:
        try:
            wait_for(lambda n=name: available(n), timeout=120, interval=1, what=f"deployment {name} available")
            (pod,) = wait_for(lambda n=name: settled(n), timeout=120, interval=1, what=f"one ready pod of {name}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{deploy_host.describe()}") from None
        (container,) = pod["spec"]["containers"]
        assert container["image"] == refs["pynchy"]
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"], status
        assert status["image"] == refs["pynchy"], status
        assert status["imageID"], status

    # The agent image the operator will start pods from, and the Secrets from this machine / the host.
    operator = deploy_host.get("deployment", "pynchy-operator")
    (source,) = operator["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    config = deploy_host.get("configmap", source["configMapRef"]["name"])  # kustomize's hashed name
    assert config
    assert config["data"]["PYNCHY_AGENT_IMAGE"] == refs["agent"]
    gateway = deploy_host.get("secret", "pynchy-gateway")
    assert gateway
    assert set(gateway["data"]) >= {"PYNCHY_ANTHROPIC_API_KEY", "PYNCHY_CHAT_TOKEN"}
    token = deploy_host.get("secret", "pynchy-run-token")
    assert token
    assert token["data"]["PYNCHY_RUN_TOKEN_KEY"]
    # No secret value in pyinfra's output.
    assert API_KEY not in run.proc.stdout + run.proc.stderr
    assert CHAT_TOKEN not in run.proc.stdout + run.proc.stderr


def test_second_identical_run_changes_nothing(deploy_host: DeployHost, first_run: DeployRun) -> None:
    assert first_run.ok, first_run.report()
    before = {name: [p["metadata"]["uid"] for p in deploy_host.pods(name)] for name in DEPLOYMENTS}
    generations = {name: deploy_host.get("deployment", name)["metadata"]["generation"] for name in DEPLOYMENTS}

    second = deploy_host.run()
    deploy_host.timings["second run"] = second.seconds
    assert second.ok, second.report()
    assert second.results["totals"]["success"] == 0, second.changed  # pyinfra: 0 changed operations
    assert second.changed == []
    assert second.results["totals"]["no_change"] == len(second.results["operations"]) > 0
    # Nothing rebuilt, re-applied or restarted.
    assert not re.search(r"buildah build|images import|rollout restart", second.proc.stderr)
    assert {name: [p["metadata"]["uid"] for p in deploy_host.pods(name)] for name in DEPLOYMENTS} == before
    for name in DEPLOYMENTS:
        obj = deploy_host.get("deployment", name)
        assert obj
        assert obj["metadata"]["generation"] == generations[name]
    print(f"\ndeploy timings: { {k: round(v, 1) for k, v in deploy_host.timings.items()} }")
