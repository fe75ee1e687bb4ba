"""OS prerequisites of a k3s node that enforces NetworkPolicies: packages, kernel modules, sysctls.

Split in two: the files (what survives a reboot) and loading them now, so the file part can run
anywhere, a chroot included, without touching the running kernel.
"""

from __future__ import annotations

from io import StringIO

from deploys.pynchy_infra.defaults import DEFAULTS, data
from deploys.pynchy_infra.facts import BUILDERS
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Which
from pyinfra.operations import apt, files, server

# br_netfilter + overlay: pod networking and containerd's snapshotter. The ip_set family: k3s's
# embedded network-policy controller (kube-router) enforces NetworkPolicies with ipsets.
KERNEL_MODULES = ("br_netfilter", "overlay", "ip_set", "ip_set_hash_ip", "ip_set_hash_net", "xt_set")

SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    # Many agent pods with file watchers (the Claude CLI) exhaust the small distribution defaults.
    "fs.inotify.max_user_instances": "1024",
    "fs.inotify.max_user_watches": "524288",
}

# What the deploys call on the host: downloads, checksums, archives, ipsets.
PACKAGES = ["ca-certificates", "curl", "tar", "zstd", "ipset", "kmod", "procps"]

MODULES_FILE = "/etc/modules-load.d/pynchy.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-pynchy.conf"


def modules_conf() -> str:
    return "# Written by the Pynchy deploy (deploys/pynchy_infra/prereqs.py).\n" + "\n".join(KERNEL_MODULES) + "\n"


def sysctl_conf() -> str:
    lines = [f"{key} = {value}" for key, value in SYSCTLS.items()]
    return "# Written by the Pynchy deploy (deploys/pynchy_infra/prereqs.py).\n" + "\n".join(lines) + "\n"


def wants_buildah() -> bool:
    """Install buildah when the host has no image builder and none is named in host data."""
    builder = data("pynchy_image_builder")
    if data("pynchy_image_archives"):
        return False
    if builder == "buildah":
        return True
    if builder != "auto":
        return False
    return not any(host.get_fact(Which, command=b) for b in BUILDERS)


@deploy("Pynchy: OS packages", data_defaults=DEFAULTS)
def packages() -> None:
    if not host.get_fact(Which, command="apt-get"):
        # Other distributions: install the equivalents of PACKAGES yourself (docs/install.md).
        host.noop("no apt-get on this host: OS packages are left to you")
        return
    wanted = list(PACKAGES) + (["buildah"] if wants_buildah() else [])
    installed = host.get_fact(DebPackages)
    missing = [p for p in wanted if p not in installed]
    if not missing:
        host.noop("OS packages are installed")
        return
    if data("k3s_airgap"):
        # No package lists to refresh without a network: bring them from your local mirror first.
        raise DeployError(f"air-gapped host lacks the packages {', '.join(missing)}; install them first")
    # Refresh the package lists only when something is missing: a second run changes nothing.
    apt.packages(name="Install packages", packages=missing, update=True)


@deploy("Pynchy: kernel module and sysctl files")
def host_files() -> None:
    files.put(name="Kernel modules to load at boot", src=StringIO(modules_conf()), dest=MODULES_FILE, mode="644")
    files.put(name="Sysctls for k3s", src=StringIO(sysctl_conf()), dest=SYSCTL_FILE, mode="644")


@deploy("Pynchy: load kernel modules and sysctls")
def load_now() -> None:
    for module in KERNEL_MODULES:
        server.modprobe(name=f"Load {module}", module=module)
    for key, value in SYSCTLS.items():
        server.sysctl(name=f"Set {key}", key=key, value=value)


@deploy("Pynchy: host prerequisites", data_defaults=DEFAULTS)
def prerequisites() -> None:
    packages()
    host_files()
    load_now()
