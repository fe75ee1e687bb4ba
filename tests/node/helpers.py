"""What the real-node tests share: the installation, a port-forward, `pynchy chat`, and looking at an
agent container from the host (its processes, environment and root filesystem)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cluster.helpers import get, is_ready, wait_for
from conftest import REPO, RUN_TOKEN_KEY
from doubles.anthropic import ScriptedModel
from pynchy.kube.controlplane import ControlPlane
from pynchy.kube.images import BuiltImage
from pynchy.kube.node.cleanup import CGROUP_ROOT
from pynchy.kube.node.node import RealNode

MODEL_KEY = "sk-ant-real-key-that-must-never-reach-a-pod"
CHAT_TOKEN = "node-chat-token-0123456789abcdef"
SYSTEM = "pynchy-system"
# A Group on the local channel named like it; `extra` adds spec fields (YAML flow style).
GROUP = """
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {{name: {name}}}
spec:
  channels: [{{local: {{name: {name}}}}}]
  {extra}
"""
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def write_test_overlay(directory: Path, images: dict[str, BuiltImage], model_url: str) -> Path:
    """The production overlay plus what a test installation changes: image tags, the model's URL,
    the Secrets. Nothing else (same RBAC, NetworkPolicies, probes, limits, volumes)."""
    directory.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(REPO / "manifests" / "overlays" / "k3s", directory)
    pynchy_name, pynchy_tag = images["pynchy"].ref.rsplit(":", 1)
    (directory / "kustomization.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources:
              - {base}
            images:
              - name: localhost/pynchy
                newName: {pynchy_name}
                newTag: "{pynchy_tag}"
            configMapGenerator:
              - name: pynchy-operator
                namespace: pynchy-system
                behavior: merge
                literals:
                  - PYNCHY_AGENT_IMAGE={images["agent"].ref}
              - name: pynchy-gateway
                namespace: pynchy-system
                behavior: merge
                literals:
                  - PYNCHY_MODEL_UPSTREAM_URL={model_url}
            secretGenerator:
              - name: pynchy-run-token
                namespace: pynchy-system
                options: {{disableNameSuffixHash: true}}
                literals:
                  - PYNCHY_RUN_TOKEN_KEY={RUN_TOKEN_KEY}
              - name: pynchy-gateway
                namespace: pynchy-system
                options: {{disableNameSuffixHash: true}}
                literals:
                  - PYNCHY_ANTHROPIC_API_KEY={MODEL_KEY}
                  - PYNCHY_CHAT_TOKEN={CHAT_TOKEN}
            """
        )
    )
    return directory


class PortForward:
    """`kubectl port-forward` to a free local port, as a person reaches the gateway from their machine."""

    def __init__(self, plane: ControlPlane, namespace: str, target: str, port: int) -> None:
        self.argv = [
            str(plane.bin_dir / "kubectl"),
            f"--kubeconfig={plane.kubeconfig}",
            "port-forward",
            "-n",
            namespace,
            target,
            f":{port}",
            "--address=127.0.0.1",
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def __enter__(self) -> PortForward:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                break
        if not self.url:
            raise RuntimeError("kubectl port-forward did not start:\n" + "".join(self.output))
        # Keep reading, so the pipe never fills (kubectl prints a line per connection).
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Install:
    node: RealNode
    model: ScriptedModel
    overlay: Path
    agent_image: str
    gateway_url: str = ""

    @property
    def plane(self) -> ControlPlane:
        assert self.node.plane is not None
        return self.node.plane

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, check=check, input=input)

    def apply(self, namespace: str, manifest: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return get(self.plane, kind, name, namespace)

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", selector] if selector else [])]
        items = json.loads(self.kubectl(*args).stdout)["items"]
        return sorted(items, key=lambda o: o["metadata"]["creationTimestamp"])

    def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        return self.items("pods", namespace, selector)

    def runs(self, namespace: str) -> list[dict[str, Any]]:
        return self.items("agentruns", namespace)

    def run_status(self, namespace: str, name: str) -> dict[str, Any]:
        return (self.get("agentrun", name, namespace) or {}).get("status") or {}

    def wait_available(self, deployment: str, namespace: str = SYSTEM, timeout: float = 180) -> None:
        def available() -> bool:
            obj = self.get("deployment", deployment, namespace) or {}
            status = obj.get("status") or {}
            return bool(
                status.get("availableReplicas")
                and status.get("updatedReplicas") == obj["spec"]["replicas"]
                and status.get("observedGeneration") == obj["metadata"]["generation"]
            )

        try:
            wait_for(available, timeout=timeout, what=f"deployment {deployment} available")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe_pods(namespace)}") from None

    def describe_pods(self, namespace: str) -> str:
        out = self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
        logs = ""
        for pod in self.pods(namespace):
            name = pod["metadata"]["name"]
            logs += (
                f"\n--- logs of {name}\n" + self.kubectl("logs", "-n", namespace, name, "--tail=30", check=False).stdout
            )
        return f"{out}\n{events[-4000:]}{logs[-6000:]}"

    def ready_group(self, namespace: str, manifest: str, name: str) -> None:
        self.apply(namespace, manifest)
        self.wait_group_ready(namespace, name)

    def wait_group_ready(self, namespace: str, name: str) -> None:
        wait_for(lambda: is_ready(self.plane, "group", name, namespace), timeout=90, what=f"Group {name} Ready")

    # -- the local channel, as a person uses it --

    def chat(
        self, namespace: str, channel: str, message: str, home: Path, timeout: float = 240, stdin: str | None = None
    ) -> tuple[int, str, str]:
        """`pynchy chat <channel> -m <message>` on the host, through the port-forward. With `stdin`, the
        interactive session, piped: `message`, then the lines of `stdin` (answers to its prompts:
        `Approve? [y/N]`, a question's choices), and it leaves at the end of its input."""
        home.mkdir(parents=True, exist_ok=True)
        config = home / "chat.yaml"
        config.write_text(f"gateway_url: {self.gateway_url}\ntoken: {CHAT_TOKEN}\nnamespace: {namespace}\n")
        env = {k: v for k, v in os.environ.items() if k not in ("PYNCHY_CHAT_URL", "PYNCHY_CHAT_TOKEN")}
        env |= {"PYNCHY_CONFIG": str(config), "XDG_STATE_HOME": str(home / "state"), "NO_COLOR": "1"}
        argv = [sys.executable, "-m", "pynchy", "chat", channel]
        if stdin is None:
            argv += ["-m", message, "--timeout", str(int(timeout))]
        proc = subprocess.run(
            argv,
            env=env,
            input=None if stdin is None else f"{message}\n{stdin}",
            capture_output=True,
            text=True,
            timeout=timeout + 30,
        )
        return proc.returncode, proc.stdout, proc.stderr

    # -- an agent container, seen from the host --

    def claim_path(self, namespace: str, claim: str) -> Path:
        """The host directory behind a claim (a local-path volume)."""
        pvc = self.get("pvc", claim, namespace)
        assert pvc is not None, f"no claim {claim}"
        assert pvc["spec"].get("volumeName"), f"claim {claim} is not bound"
        pv = self.get("pv", pvc["spec"]["volumeName"], "")
        assert pv is not None
        return Path(pv["spec"]["hostPath"]["path"])

    def container_pids(self, namespace: str, pod: str) -> list[int]:
        """Processes of a pod's containers (the pause process excluded), from its cgroup."""
        obj = self.get("pod", pod, namespace)
        assert obj is not None
        uid = obj["metadata"]["uid"]
        ids = [
            c["containerID"].split("://", 1)[1]
            for c in (obj.get("status") or {}).get("containerStatuses") or []
            if c.get("containerID")
        ]
        assert self.node.state is not None
        # cgroupfs driver: <root>/kubepods/<qos>/pod<uid>/<container id>, in every hierarchy.
        top = CGROUP_ROOT / "pids" / self.node.state.cgroup.lstrip("/")
        pids: set[int] = set()
        for procs in top.rglob("cgroup.procs"):
            folder = str(procs.parent)
            if f"pod{uid}" in folder and any(folder.endswith(cid) for cid in ids):
                pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)


def in_node_network(node: RealNode, fn: Callable[[], T]) -> T:
    """`fn()` in a thread that joined the node's network namespace: a socket it opens lives there (so
    a server can listen on the node's own address, link_node_ip), and threads it starts stay there."""
    assert node.net is not None
    netns = node.net.netns_path
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="in-node-network")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
