"""The node's own network namespace, its link to the host, and the addresses of one run.

A real node runs containerd, kubelet, kube-proxy and the NetworkPolicy enforcer inside a network
namespace of its own, joined to the host by one veth pair:

    host  <link_host_ip>/30  ==veth==  <link_node_ip>/30  node namespace  --bridge--  pods <pod_cidr>

Why a namespace: kube-proxy's and kube-router's iptables chains, ipsets, the CNI bridge, the
forwarding sysctls and every node-side port (10250, 10256, ...) have fixed names or numbers, so two
test runs on one machine would fight over them; inside a namespace each run has its own, and
deleting the namespace removes all of it, whatever state a killed run left behind. The namespace
has no default route: pods reach the pod network, the host's link address and nothing beyond the
machine. The host routes the pod range back through the link, so nothing is masqueraded.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pynchy.errors import PynchyError
from pynchy.logs import get_logger

log = get_logger(__name__)

# Runs take their addresses from this block: a /24 of pods and a /30 link each, by slot number.
POOL = ipaddress.ip_network("10.200.0.0/16")
SLOTS = 120
STATE_ROOT = Path("/run/pynchy-node")
# Set inside the node's namespace (they are per namespace): bridged pod traffic goes through
# iptables (kube-proxy, NetworkPolicies), and the namespace routes between pods and the link.
NAMESPACE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.conf.all.route_localnet": "1",
}


class NetworkError(PynchyError, RuntimeError):
    """The node's network could not be set up; the message says which command failed."""


@dataclass(frozen=True)
class NodeNetwork:
    """The names and addresses of one node run (all derived from its slot)."""

    run_id: str
    slot: int
    owner_pid: int

    @property
    def netns(self) -> str:
        return f"pynchy-{self.run_id}"

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns

    @property
    def host_veth(self) -> str:
        return f"pn{self.run_id}h"[:15]

    @property
    def node_veth(self) -> str:
        return f"pn{self.run_id}n"[:15]

    @property
    def bridge(self) -> str:
        return f"pnbr{self.run_id}"[:15]

    @property
    def pod_cidr(self) -> str:
        # Slots 0..119 take 10.200.<slot>.0/24 for pods; links live in 10.200.255.0/24 as /30s.
        return str(ipaddress.ip_network(f"{POOL.network_address + self.slot * 256}/24"))

    @property
    def pod_gateway(self) -> str:
        return str(ipaddress.ip_network(self.pod_cidr).network_address + 1)

    @property
    def link_cidr(self) -> str:
        return str(ipaddress.ip_network(f"{POOL.network_address + 255 * 256 + self.slot * 4}/30"))

    @property
    def link_host_ip(self) -> str:
        """The host's end of the link: services the node's pods must reach listen here."""
        return str(ipaddress.ip_network(self.link_cidr).network_address + 1)

    @property
    def link_node_ip(self) -> str:
        """The node's InternalIP."""
        return str(ipaddress.ip_network(self.link_cidr).network_address + 2)

    def state_file(self) -> Path:
        return STATE_ROOT / f"{self.run_id}.json"


def run(argv: list[str], *, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (`ip ...` inside `netns` when given)."""
    full = ["ip", "-n", netns, *argv[1:]] if netns else argv
    proc = subprocess.run(full, capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(full)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def in_netns(netns_path: Path, argv: list[str]) -> list[str]:
    """`argv` run in the node's network namespace only (`ip netns exec` would also remount /sys,
    hiding the cgroup mounts kubelet and containerd need)."""
    return ["nsenter", f"--net={netns_path}", "--", *argv]


@contextmanager
def _pool_lock() -> Iterator[None]:
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_ROOT / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def recorded_runs() -> list[NodeNetwork]:
    runs = []
    for path in sorted(STATE_ROOT.glob("*.json")):
        try:
            runs.append(NodeNetwork(**json.loads(path.read_text())["network"]))
        except (OSError, ValueError, TypeError, KeyError):
            log.warning("unreadable node state file", path=str(path))
    return runs


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout
    nets = []
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("default", "broadcast", "local", "unreachable", "multicast"):
            word = line.split()[1] if len(line.split()) > 1 else ""
        try:
            nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network) and n.prefixlen > 0]


def allocate(run_id: str) -> NodeNetwork:
    """Reserve a free slot (recorded in STATE_ROOT, so concurrent runs never take the same one)."""
    with _pool_lock():
        taken = {r.slot for r in recorded_runs()}
        used = _used_networks()
        for slot in range(SLOTS):
            if slot in taken:
                continue
            candidate = NodeNetwork(run_id, slot, os.getpid())
            mine = [ipaddress.ip_network(candidate.pod_cidr), ipaddress.ip_network(candidate.link_cidr)]
            if any(a.overlaps(b) for a in mine for b in used):
                continue
            candidate.state_file().write_text(json.dumps({"network": asdict(candidate)}))
            return candidate
    raise NetworkError(f"no free node network in {POOL}: {len(taken)} runs recorded in {STATE_ROOT}")


def create(net: NodeNetwork) -> None:
    """The namespace, the veth link with its addresses and routes, and the namespace's sysctls."""
    run(["ip", "netns", "add", net.netns])
    run(["ip", "link", "add", net.host_veth, "type", "veth", "peer", "name", net.node_veth])
    run(["ip", "link", "set", net.node_veth, "netns", net.netns])
    prefix = ipaddress.ip_network(net.link_cidr).prefixlen
    run(["ip", "addr", "add", f"{net.link_host_ip}/{prefix}", "dev", net.host_veth])
    run(["ip", "link", "set", net.host_veth, "up"])
    run(["ip", "addr", "add", f"{net.link_node_ip}/{prefix}", "dev", net.node_veth], netns=net.netns)
    run(["ip", "link", "set", net.node_veth, "up"], netns=net.netns)
    run(["ip", "link", "set", "lo", "up"], netns=net.netns)
    # Replies to pods go back through the node (no masquerading anywhere).
    run(["ip", "route", "add", net.pod_cidr, "via", net.link_node_ip, "dev", net.host_veth])
    for key, value in NAMESPACE_SYSCTLS.items():
        run(in_netns(net.netns_path, ["sysctl", "-q", "-w", f"{key}={value}"]))


def destroy(net: NodeNetwork) -> None:
    """Remove the namespace (and with it every chain, ipset, bridge and veth inside), the host's
    end of the link and the state file. Safe to call for a half-made or already removed network."""
    run(["ip", "link", "del", net.host_veth], check=False)
    run(["ip", "netns", "del", net.netns], check=False)
    net.state_file().unlink(missing_ok=True)
