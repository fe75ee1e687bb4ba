"""Start and stop etcd, kube-apiserver and kube-controller-manager on loopback.

Used by the test suite (a session fixture) and by `pynchy dev`. Flags follow envtest and
hack/local-up-cluster.sh; certificates are throwaway; the admin user is a client
certificate in system:masters. Extra client identities (for example the operator's
ServiceAccount, to test its RBAC) get kubeconfigs of their own.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from pynchy.errors import PynchyError
from pynchy.kube.pki import CertificateAuthority, service_account_keys
from pynchy.kube.processes import ManagedProcess
from pynchy.logs import get_logger

log = get_logger(__name__)
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR

# Log every request that changes state (and nothing else) so tests can count writes.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


class ControlPlaneError(PynchyError, RuntimeError):
    """The control plane failed to start; the message carries the component's last log lines."""


class KubectlError(PynchyError, subprocess.CalledProcessError):
    """kubectl failed; str() includes what it printed, so test failures explain themselves."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) bound to 127.0.0.1.

    `data_dir` holds etcd data, certificates, logs, the audit log and kubeconfigs; reusing
    it keeps the cluster's state across restarts (what `pynchy dev` does).
    """

    def __init__(
        self,
        bin_dir: Path,
        data_dir: Path,
        *,
        controller_manager: bool = True,
        apiserver_port: int | None = None,
        bind_address: str = LOOPBACK,
        nodes: bool = False,
        start_timeout: float = 90.0,
    ) -> None:
        self.bin_dir = bin_dir
        # Where the API server listens (and what the `kubernetes` Service points at). Loopback
        # unless a real node's pods must reach it (pynchy.kube.node binds it to the node's link).
        self.bind_address = bind_address
        # Real kubelets register: Node authorizer + NodeRestriction, and client certificates for
        # the API server's calls to kubelets (logs, exec, port-forward).
        self.nodes = nodes
        self.data_dir = data_dir.resolve()
        self.controller_manager = controller_manager
        self.apiserver_port = apiserver_port
        self.start_timeout = start_timeout
        self.pki_dir = self.data_dir / "pki"
        self.logs_dir = self.data_dir / "logs"
        self.audit_log = self.logs_dir / "audit.log"
        self.kubeconfig = self.data_dir / "admin.kubeconfig"
        self.processes: list[ManagedProcess] = []
        self.server = ""

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        started = time.monotonic()
        ca = CertificateAuthority(self.pki_dir)
        sa = service_account_keys(self.pki_dir)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=tuple(dict.fromkeys((LOOPBACK, self.bind_address, KUBERNETES_SERVICE_IP))),
        )
        port = self.apiserver_port or free_port(self.bind_address)
        self.server = f"https://{self.bind_address}:{port}"
        self.write_kubeconfig(self.kubeconfig, "pynchy-admin", ("system:masters",), ca=ca)

        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://{LOOPBACK}:{etcd_port}"
        etcd = ManagedProcess(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.data_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://{LOOPBACK}:{peer_port}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer_port}",
                f"--initial-cluster=default=http://{LOOPBACK}:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.logs_dir / "etcd.log",
        )
        self._launch(etcd)
        self._wait(etcd, lambda: self._http_ok(f"{etcd_url}/health"))

        policy = self.data_dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.bind_address}",
                f"--advertise-address={self.bind_address}",
                f"--secure-port={port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                "--authorization-mode=Node,RBAC" if self.nodes else "--authorization-mode=RBAC",
                "--allow-privileged=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--profiling=false",
                *([] if self.controller_manager else ["--disable-admission-plugins=ServiceAccount"]),
                *(self._node_flags(ca) if self.nodes else []),
            ],
            self.logs_dir / "kube-apiserver.log",
        )
        self._launch(apiserver)
        self._wait(apiserver, self._apiserver_ready)

        if self.controller_manager:
            kcm = ManagedProcess(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig}",
                    f"--service-account-private-key-file={sa.key}",
                    f"--root-ca-file={ca.cert_path}",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--controllers=*",
                    "--concurrent-gc-syncs=10",
                    # A quota on a CRD kind made before the quota monitor learned the kind (it
                    # rediscovers every 30 s) is otherwise first computed at the 5-minute resync.
                    "--resource-quota-sync-period=15s",
                ],
                self.logs_dir / "kube-controller-manager.log",
            )
            self._launch(kcm)
            # Pods need the namespace's default ServiceAccount, made by KCM's serviceaccount controller.
            self._wait(kcm, lambda: self._kubectl_ok("get", "serviceaccount", "default", "-n", "default"))
        log.info(
            "control plane ready",
            server=self.server,
            seconds=round(time.monotonic() - started, 1),
            kubeconfig=str(self.kubeconfig),
        )

    def _node_flags(self, ca: CertificateAuthority) -> list[str]:
        client = ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", organizations=("kubelets",))
        return [
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={client.cert}",
            f"--kubelet-client-key={client.key}",
            # The node's name is not in any DNS: the API server dials kubelets by their InternalIP.
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    # -- helpers ----------------------------------------------------------------------

    def _launch(self, proc: ManagedProcess) -> None:
        if not Path(proc.argv[0]).is_file():
            raise ControlPlaneError(f"{proc.argv[0]} not found; run tools/kube/build.sh")
        proc.start()
        self.processes.append(proc)

    def _wait(self, proc: ManagedProcess, ready: Any) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise ControlPlaneError(f"{proc.name} exited during start-up:\n{proc.tail()}")
            if ready():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{proc.name} not ready after {self.start_timeout:.0f}s:\n{proc.tail()}")

    def _http_ok(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "pynchy-admin.crt", self.pki_dir / "pynchy-admin.key")
        return ctx

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=3, context=self._ssl_context()) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def _kubectl_ok(self, *args: str) -> bool:
        return self.kubectl(*args, check=False).returncode == 0

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def write_kubeconfig(
        self, path: Path, user: str, groups: tuple[str, ...] = (), *, ca: CertificateAuthority | None = None
    ) -> Path:
        """A kubeconfig authenticating as `user` in `groups` with a client certificate."""
        ca = ca or CertificateAuthority(self.pki_dir)
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        pair = ca.issue(stem, user, organizations=groups)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "pynchy", "cluster": {"server": self.server, "certificate-authority-data": _b64(ca.cert_path)}}
            ],
            "users": [
                {"name": user, "user": {"client-certificate-data": _b64(pair.cert), "client-key-data": _b64(pair.key)}}
            ],
            "contexts": [{"name": "pynchy", "context": {"cluster": "pynchy", "user": user}}],
            "current-context": "pynchy",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """Credentials that RBAC treats as ServiceAccount `namespace/name` (its user name and groups)."""
        return self.write_kubeconfig(
            self.data_dir / f"sa-{namespace}-{name}.kubeconfig",
            f"system:serviceaccount:{namespace}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )

    def apply_crds(self, crd_dir: Path, timeout: str = "60s") -> list[str]:
        """Install every CRD in `crd_dir` and wait until each is Established."""
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            raise ControlPlaneError(f"no CRD files in {crd_dir}")
        for f in files:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
        self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout}", *[f"crd/{n}" for n in names])
        return names

    def audit_events(self) -> list[dict[str, Any]]:
        """Write requests recorded so far (one dict per audit event)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
