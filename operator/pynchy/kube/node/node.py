"""A real Kubernetes node on this machine: containerd + runc + CNI, kubelet, kube-proxy, CoreDNS,
kube-router's NetworkPolicy controller and a local-path provisioner, against a control plane of its
own. What proves pods, images, security contexts, volumes and network policy (docs/devnode.md).

    with RealNode(bin_dir, node_bin_dir, tmp / "node", sandbox_image=pause, dns_image=coredns) as node:
        node.import_images([agent, pynchy])
        node.plane.kubectl("apply", "-k", "manifests/overlays/k3s")

Needs root on Linux (namespaces, cgroups, iptables). Everything it makes is named by a run id and
undone by `stop()`, by a reaper process if the owner dies, or by the next run's sweep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from pynchy.errors import PynchyError
from pynchy.kube.controlplane import SERVICE_CIDR, ControlPlane, KubectlError
from pynchy.kube.images import BuiltImage, import_images
from pynchy.kube.node import cleanup, network
from pynchy.kube.node.config import (
    DNS_LABELS,
    DNS_NAMESPACE,
    KubeletCerts,
    NodePaths,
    cni_conflist,
    containerd_config,
    dns_objects,
    kube_proxy_config,
    kubelet_config,
    node_identities,
    node_rbac,
)
from pynchy.kube.node.localpath import LocalPathProvisioner
from pynchy.kube.pki import CertificateAuthority
from pynchy.kube.processes import ManagedProcess
from pynchy.logs import get_logger

log = get_logger(__name__)

APISERVER_PORT = 6443  # what k3s uses, and what the control plane's NetworkPolicies allow
REQUIRED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ipset", "iptables", "nsenter", "ip")
LOCAL_PATH_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "rancher.io/local-path",
    "volumeBindingMode": "WaitForFirstConsumer",
    "reclaimPolicy": "Delete",
}


class NodeError(PynchyError, RuntimeError):
    """The node could not start; the message says what failed and shows its last log lines."""


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a real node (empty when it can)."""
    problems = []
    if sys.platform != "linux":
        problems.append("a real node needs Linux")
    if os.geteuid() != 0:
        problems.append("a real node needs root (namespaces, cgroups, iptables)")
    problems += [f"{tool} is not installed" for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        problems.append("the CNI plugins are not installed (Debian: containernetworking-plugins)")
    return problems


class RealNode:
    """One node and its control plane. `plane` is the ControlPlane (kubectl, kubeconfigs)."""

    def __init__(
        self,
        bin_dir: Path,
        node_bin_dir: Path,
        data_dir: Path,
        *,
        sandbox_image: BuiltImage,
        dns_image: BuiltImage,
        start_timeout: float = 120.0,
    ) -> None:
        self.bin_dir = bin_dir
        self.node_bin_dir = node_bin_dir
        self.data_dir = data_dir.resolve()
        self.paths = NodePaths(self.data_dir)
        self.sandbox_image = sandbox_image
        self.dns_image = dns_image
        self.start_timeout = start_timeout
        self.run_id = uuid.uuid4().hex[:6]
        self.name = f"pynchy-node-{self.run_id}"
        self.net: network.NodeNetwork | None = None
        self.state: cleanup.NodeState | None = None
        self.plane: ControlPlane | None = None
        self.processes: list[ManagedProcess] = []
        self.provisioner: LocalPathProvisioner | None = None
        self._reaper: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        problems = missing_prerequisites()
        if problems:
            raise NodeError("cannot run a real node here: " + "; ".join(problems))
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        started = time.monotonic()
        swept = cleanup.sweep()
        if swept:
            log.info("removed nodes left by dead runs", runs=swept)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.net = network.allocate(self.run_id)
        self.state = cleanup.NodeState(self.net, str(self.data_dir), f"/pynchy-{self.run_id}")
        self.state.save()
        self._start_reaper()
        cleanup.remember_host_sysctls()
        network.create(self.net)
        cleanup.make_cgroups(self.state.cgroup)

        self.plane = ControlPlane(
            self.bin_dir,
            self.data_dir / "controlplane",
            bind_address=self.net.link_host_ip,
            apiserver_port=APISERVER_PORT,
            nodes=True,
            start_timeout=self.start_timeout,
        )
        self.plane.start()
        kubeconfigs = self._identities()
        self._apply(node_rbac())
        self._write_configs(kubeconfigs)

        containerd = self._launch("containerd", ["containerd", "--config", str(self.paths.containerd_config)])
        self._wait(containerd, self._containerd_ready)
        self.import_images([self.sandbox_image, self.dns_image])

        kubelet = self._launch(
            "kubelet",
            [
                str(self.node_bin_dir / "kubelet"),
                f"--config={self.paths.kubelet_config}",
                f"--kubeconfig={kubeconfigs['kubelet']}",
                f"--root-dir={self.paths.kubelet_dir}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.net.link_node_ip}",
                "--v=1",
            ],
        )
        self._launch(
            "kube-scheduler",
            [
                str(self.node_bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfigs['kube-scheduler']}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ],
            netns=False,
        )
        self._wait(kubelet, self._node_ready)
        # kube-router identifies its node by the Node object: start it (and kube-proxy) once it exists.
        self._launch(
            "kube-proxy",
            [str(self.node_bin_dir / "kube-proxy"), f"--config={self.paths.kube_proxy_config}", "--v=1"],
        )
        self._launch(
            "kube-router",
            [
                str(self.node_bin_dir / "kube-router"),
                f"--kubeconfig={kubeconfigs['kube-router']}",
                f"--hostname-override={self.name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--health-port=20244",
                "--metrics-port=0",
            ],
        )

        self._apply([LOCAL_PATH_CLASS, *dns_objects(self.dns_image.ref)])
        self.provisioner = LocalPathProvisioner(kubeconfigs["local-path"], self.name, self.paths.storage).start()
        self._wait(kubelet, self._dns_ready)
        log.info(
            "real node ready",
            node=self.name,
            server=self.plane.server,
            pod_cidr=self.net.pod_cidr,
            seconds=round(time.monotonic() - started, 1),
        )

    def stop(self) -> None:
        """Pods first (so containers end in order), then processes, mounts, cgroups, network."""
        if self.plane is not None and self.plane.processes and self._component_alive("kubelet"):
            self.plane.kubectl("delete", "pods", "--all", "-A", "--grace-period=1", "--timeout=30s", check=False)
        if self.provisioner is not None:
            self.provisioner.stop()
            self.provisioner = None
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self.state is not None:
            cleanup.teardown(self.state)
        if self.plane is not None:
            self.plane.stop()
        if self._reaper is not None:
            if self._reaper.stdin:
                self._reaper.stdin.close()
            try:
                self._reaper.wait(30)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
            self._reaper = None

    # -- what tests use ------------------------------------------------------------------------

    @property
    def link_host_ip(self) -> str:
        """The host's address as pods see it: servers pods must reach listen here."""
        assert self.net is not None
        return self.net.link_host_ip

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.kubeconfig

    def import_images(self, images: Iterable[BuiltImage]) -> None:
        """Load image archives into the node's containerd (in parallel: each is mostly I/O and hashing)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            for done in [pool.submit(import_images, [i], "ctr", self.paths.containerd_socket) for i in images]:
                done.result()

    def in_netns(self, argv: list[str]) -> list[str]:
        """`argv` as a command run in the node's network namespace (where pod IPs are routed)."""
        assert self.net is not None
        return network.in_netns(self.net.netns_path, argv)

    def component_log(self, name: str) -> Path:
        return self.paths.logs / f"{name}.log"

    # -- helpers --------------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        assert self.net is not None
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "pynchy.kube.node.reaper", str(self.net.state_file())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=(self.data_dir / "reaper.log").open("ab"),
            start_new_session=True,  # survives the owner's process group being killed
        )

    def _identities(self) -> dict[str, Path]:
        assert self.plane is not None
        out = {}
        for stem, user, groups, _role in node_identities(self.name):
            out[stem] = self.plane.write_kubeconfig(self.data_dir / f"{stem}.kubeconfig", user, groups)
        return out

    def _write_configs(self, kubeconfigs: dict[str, Path]) -> None:
        assert self.net is not None
        assert self.state is not None
        assert self.plane is not None
        p = self.paths
        for folder in (p.containerd_root, p.containerd_state, p.runc_root, p.cni_conf_dir, p.cni_ipam_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (p.kubelet_dir, p.pod_logs, p.storage, p.logs):
            folder.mkdir(parents=True, exist_ok=True)
        p.containerd_config.write_text(containerd_config(p, self.sandbox_image.ref))
        (p.cni_conf_dir / "10-pynchy.conflist").write_text(
            cni_conflist(p, self.net.bridge, self.net.pod_cidr, self.net.pod_gateway)
        )
        ca = CertificateAuthority(self.plane.pki_dir)
        serving = ca.issue(
            "kubelet-serving",
            f"system:node:{self.name}",
            server=True,
            dns_names=(self.name,),
            ip_addresses=(self.net.link_node_ip,),
        )
        certs = KubeletCerts(ca.cert_path, serving.cert, serving.key)
        p.kubelet_config.write_text(kubelet_config(p, self.net.link_node_ip, self.state.cgroup, certs))
        p.resolv_conf.write_text("")  # nothing upstream: a test node resolves cluster names only
        p.kube_proxy_config.write_text(kube_proxy_config(p, kubeconfigs["kube-proxy"], self.name, self.net.pod_cidr))

    def _launch(self, name: str, argv: list[str], *, netns: bool = True) -> ManagedProcess:
        assert self.net is not None
        full = network.in_netns(self.net.netns_path, argv) if netns else argv
        proc = ManagedProcess(name, full, self.component_log(name))
        proc.start()
        self.processes.append(proc)
        return proc

    def _component_alive(self, name: str) -> bool:
        return any(p.name == name and p.alive() for p in self.processes)

    def _wait(self, proc: ManagedProcess, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                if not p.alive():
                    raise NodeError(f"{p.name} exited during start-up:\n{p.tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise NodeError(f"{proc.name}: not ready after {self.start_timeout:.0f}s:\n{proc.tail()}")

    def _containerd_ready(self) -> bool:
        probe = ["ctr", "--address", str(self.paths.containerd_socket), "version"]
        return subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0

    def _node_ready(self) -> bool:
        assert self.plane is not None
        out = self.plane.kubectl(
            "get", "node", self.name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        )
        return out.stdout.strip() == "True"

    def _dns_ready(self) -> bool:
        assert self.plane is not None
        selector = ",".join(f"{k}={v}" for k, v in DNS_LABELS.items())
        out = self.plane.kubectl(
            "get",
            "pods",
            "-n",
            DNS_NAMESPACE,
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return "True" in out.stdout.split()

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        assert self.plane is not None
        try:
            self.plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objects))
        except KubectlError as exc:
            raise NodeError(f"applying the node's objects failed: {exc}") from exc
