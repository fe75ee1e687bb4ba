"""Configuration files and objects of a real node, as pure functions of its paths and addresses.

Each follows what was checked on our machine kind (docs/devnode.md, "The real node"): containerd
1.6 needs `restrict_oom_score_adj` (no CAP_SYS_RESOURCE) and a local pause image; kubelet runs on
cgroup v1 with the cgroupfs driver under a cgroup of the run's own; DNS serves only cluster.local
(nothing is forwarded: a test node reaches nothing beyond this machine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.0.0.10"
CNI_BIN_DIR = Path("/usr/lib/cni")
DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class NodePaths:
    """Every file and folder of one node, under its data dir."""

    root: Path

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.yaml"

    @property
    def storage(self) -> Path:
        """Where the local-path provisioner puts volumes."""
        return self.root / "storage"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def _toml(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, values in tables.items():
        if name:
            lines.append(f"\n[{name}]")
        lines += [f"  {k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines).lstrip() + "\n"


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6 (config version 2), private to the node: own root, state, socket, runc root."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    runc = f"{cri}.containerd.runtimes.runc"
    return _toml(
        {
            "": {
                "version": 2,
                "root": paths.containerd_root,
                "state": paths.containerd_state,
                "oom_score": 0,
            },
            "grpc": {"address": paths.containerd_socket},
            "ttrpc": {"address": ""},
            "metrics": {"address": ""},
            "debug": {"level": "warn"},
            'plugins."io.containerd.internal.v1.opt"': {"path": paths.root / "containerd" / "opt"},
            cri: {
                "sandbox_image": sandbox_image,
                # No CAP_SYS_RESOURCE in the VM: runc may not lower oom_score_adj below the parent's.
                "restrict_oom_score_adj": True,
                "disable_apparmor": True,
                # Pod network namespaces under the state dir, not in the host's /run/netns.
                "netns_mounts_under_state_dir": True,
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "enable_cdi": False,
            },
            f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
            runc: {"runtime_type": "io.containerd.runc.v2"},
            f"{runc}.options": {"SystemdCgroup": False, "Root": paths.runc_root},
            f"{cri}.cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": paths.cni_conf_dir, "max_conf_num": 1},
            f"{cri}.registry": {"config_path": ""},
        }
    )


def cni_conflist(paths: NodePaths, bridge: str, pod_cidr: str, pod_gateway: str) -> str:
    """bridge + host-local + portmap, no masquerading (the host routes the pod range back)."""
    conf = {
        "cniVersion": "1.0.0",
        "name": "pynchy",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr, "gateway": pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


@dataclass(frozen=True)
class KubeletCerts:
    client_ca: Path
    serving_cert: Path
    serving_key: Path


def kubelet_config(paths: NodePaths, node_ip: str, cgroup_root: str, certs: KubeletCerts) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(certs.client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(certs.serving_cert),
        "tlsPrivateKeyFile": str(certs.serving_key),
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # cgroup v1 here; pods under a cgroup of this run's own, so two nodes never touch each
        # other's pods and teardown finds every container process.
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "makeIPTablesUtilChains": False,
        # A test node lives on a shared disk: never evict or collect images for disk pressure.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
        "serializeImagePulls": False,
        "staticPodPath": "",
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(paths: NodePaths, kubeconfig: Path, node_name: str, pod_cidr: str) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": pod_cidr,
        "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Host-wide conntrack knobs stay as they are (0: do not change).
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    return yaml.safe_dump(config, sort_keys=False)


COREFILE = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""


def dns_objects(image: str) -> list[dict[str, Any]]:
    """CoreDNS as cluster DNS: a pod labelled k8s-app=kube-dns (the label NetworkPolicies name)
    behind the kube-dns Service at CLUSTER_DNS_IP. Nothing is forwarded upstream."""
    labels = dict(DNS_LABELS)
    meta = {"namespace": DNS_NAMESPACE, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "pynchy-node:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "pynchy-node:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pynchy-node:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": DNS_NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", **meta},
            "data": {"Corefile": COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            # Port 53 without a capability.
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                                "resources": {
                                    "requests": {"cpu": "10m", "memory": "32Mi"},
                                    "limits": {"memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]


# Identities of the node's components: (file stem, user, groups, ClusterRole bound to the user or None
# when a bootstrap binding already covers it).
def node_identities(node_name: str) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    return [
        ("kubelet", f"system:node:{node_name}", ("system:nodes",), None),
        ("kube-proxy", "system:kube-proxy", (), None),
        ("kube-scheduler", "system:kube-scheduler", (), None),
        ("kube-router", "pynchy-node:kube-router", (), "pynchy-node:kube-router"),
        ("local-path", "pynchy-node:local-path", (), "pynchy-node:local-path"),
    ]


def node_rbac() -> list[dict[str, Any]]:
    """Roles for the components that have no bootstrap role, and the API server's kubelet client."""
    read = ["get", "list", "watch"]
    roles = {
        "pynchy-node:kube-router": [
            {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes", "services", "endpoints"], "verbs": read},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ],
        "pynchy-node:local-path": [
            {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": read},
            {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": [*read, "create", "delete"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": read},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    }
    objects: list[dict[str, Any]] = []
    for name, rules in roles.items():
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": rules,
            }
        )
        objects.append(_binding(name, name, "User", name))
    # kubectl logs/exec/port-forward: the API server's client certificate may call every kubelet API.
    objects.append(
        _binding("pynchy-node:apiserver-kubelet", "system:kubelet-api-admin", "User", "kube-apiserver-kubelet-client")
    )
    return objects


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    }
