"""What an agent container can see and reach on the real node: its own volumes, no credentials, a
read-only root, and only the network its Group's NetworkPolicy allows (enforced by kube-router)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.helpers import wait_for
from doubles.anthropic import text, tool_use
from node.helpers import GROUP, MODEL_KEY, Install

# Runs in the agent's Bash tool: each target "name host port" → "name open|refused|timeout|dns".
# Targets named in `until_open` are retried until they open (a policy change takes a moment to apply).
PROBE = r"""python3 - <<'EOF'
import socket, time
def attempt(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "open"
    except socket.gaierror:
        return "dns"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        text = str(exc).lower()
        return "refused" if "refused" in text or "unreachable" in text else type(exc).__name__
for spec in {targets!r}:
    name, host, port = spec.split()
    result = attempt(host, port)
    deadline = time.monotonic() + 60
    while name in {until_open!r} and result != "open" and time.monotonic() < deadline:
        time.sleep(0.5)
        result = attempt(host, port)
    print(name, result)
EOF"""


class Listener:
    """A TCP listener on the host that accepts and closes (so "open" means the SYN got through)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners(installed: Install) -> Iterator[tuple[Listener, Listener]]:
    pair = (Listener(installed.node.link_host_ip), Listener(installed.node.link_host_ip))
    yield pair
    for listener in pair:
        listener.close()


def probe(
    installed: Install, ns: str, group: str, targets: list[str], home: Path, until_open: tuple[str, ...] = ()
) -> dict[str, str]:
    """One chat turn whose Bash call tries each target from inside the agent container."""
    marker = f"probe {len(installed.model.requests)}"
    command = PROBE.format(targets=targets, until_open=list(until_open))
    installed.model.on_prompt(marker, tool_use("Bash", command=command, timeout=120000))
    installed.model.after_tool("Bash", text("probed"))
    code, out, err = installed.chat(ns, group, marker, home)
    assert (code, out) == (0, "probed\n"), f"{out}\n{err}"
    [result] = [r for r in installed.model.main_requests[-1].tool_results() if r.name == "Bash"]
    return dict(line.split(" ", 1) for line in result.text.splitlines() if " " in line)


def agent_pod(installed: Install, ns: str) -> dict:
    return wait_for(lambda: [p for p in installed.pods(ns) if p["status"].get("phase") == "Running"], what="pod")[-1]


def enforced_for(installed: Install, pod_ip: str) -> bool:
    """kube-router has programmed the pod's firewall chain (a new pod is open until it has)."""
    out = subprocess.run(installed.node.in_netns(["iptables-save", "-t", "filter"]), capture_output=True, text=True)
    return pod_ip in out.stdout


def test_nothing_of_the_gateway_or_the_cluster_is_inside_the_agent_container(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.ready_group(ns, GROUP.format(name="inspect", extra=""), "inspect")
    model = installed.model
    command = (
        "ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1 | head -1; "
        "env | grep -c '^PYNCHY_GATEWAY_'; "
        "touch /etc/probe 2>/dev/null && echo root-writable || echo root-read-only; "
        "touch $HOME/h $TMPDIR/t /workspace/w && echo volumes-writable; "
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '"
    )
    model.on_prompt("look around", tool_use("Bash", command=command))
    model.after_tool("Bash", text("looked"))
    code, out, err = installed.chat(ns, "inspect", "look around", tmp_path)
    assert (code, out) == (0, "looked\n"), err
    [result] = [r for r in model.main_requests[-1].tool_results() if r.name == "Bash"]
    lines = result.text.splitlines()
    assert "No such file or directory" in lines[0], result.text  # no ServiceAccount token
    assert lines[1] == "0", result.text  # enableServiceLinks: false (no variables of other Services)
    assert lines[2:4] == ["root-read-only", "volumes-writable"], result.text
    assert {"CapEff: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2"} <= set(lines), result.text

    # From the host: no process of the container has the real key in its environment, no file in its
    # root filesystem or volumes holds it, and its root is mounted read-only.
    pod = agent_pod(installed, ns)
    pids = installed.container_pids(ns, pod["metadata"]["name"])
    assert pids, "no processes found for the agent container"
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert MODEL_KEY.encode() not in environ
        assert b"ANTHROPIC_API_KEY=" in environ or b"PYNCHY_RUN_TOKEN=" in environ or b"HOME=" in environ
    root = Path(f"/proc/{pids[0]}/root")
    mounts = Path(f"/proc/{pids[0]}/mountinfo").read_text().splitlines()
    [root_mount] = [m for m in mounts if m.split()[4] == "/"]
    assert " ro," in f" {root_mount.split()[5]}," or root_mount.split()[5].startswith("ro"), root_mount
    leaked = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in ("proc", "sys", "dev"):
            dirnames.clear()
            continue
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < 20_000_000:
                    with open(path, "rb") as f:
                        if MODEL_KEY.encode() in f.read():
                            leaked.append(path)
            except OSError:
                continue
    assert not leaked, f"the model key is in {leaked}"

    # Limits on what the pod may write outside its volumes.
    spec = pod["spec"]
    [agent] = spec["containers"]
    assert agent["resources"]["limits"].get("ephemeral-storage"), agent["resources"]
    empty_dirs = [v for v in spec["volumes"] if "emptyDir" in v]
    assert empty_dirs
    assert all(v["emptyDir"].get("sizeLimit") for v in empty_dirs), empty_dirs


def test_network_policy_lets_an_agent_reach_the_gateway_and_dns_only(
    installed: Install, node_namespace: str, listeners: tuple[Listener, Listener], tmp_path: Path
) -> None:
    ns = node_namespace
    link = installed.node.link_host_ip
    allowed, other = listeners
    installed.ready_group(ns, GROUP.format(name="fenced", extra=""), "fenced")
    installed.ready_group(ns, GROUP.format(name="neighbour", extra=""), "neighbour")

    # The neighbour's agent starts a listener in its own pod (its pod stays up until its idle timeout).
    model = installed.model
    model.on_prompt(
        "open a port",
        tool_use("Bash", command="nohup python3 -m http.server 8000 >/dev/null 2>&1 & sleep 1; echo started"),
    )
    model.after_tool("Bash", text("listening"))
    code, out, err = installed.chat(ns, "neighbour", "open a port", tmp_path / "n")
    assert (code, out) == (0, "listening\n"), err
    neighbour = agent_pod(installed, ns)
    neighbour_ip = neighbour["status"]["podIP"]
    # The listener is there: from the node itself (which policies never block) it answers.
    reach = subprocess.run(
        installed.node.in_netns(
            ["python3", "-c", f"import socket; socket.create_connection(('{neighbour_ip}', 8000), 3)"]
        ),
        capture_output=True,
        text=True,
    )
    assert reach.returncode == 0, reach.stderr

    # The first turn starts the fenced pod; wait until kube-router has programmed it.
    model.on_prompt("hello fenced", text("hi"))
    code, out, err = installed.chat(ns, "fenced", "hello fenced", tmp_path / "f")
    assert (code, out) == (0, "hi\n"), err
    fenced = next(p for p in installed.pods(ns) if p["metadata"]["labels"].get("pynchy.dev/group") == "fenced")
    wait_for(lambda: enforced_for(installed, fenced["status"]["podIP"]), timeout=30, what="policy programmed")

    targets = [
        "gateway pynchy-gateway.pynchy-system.svc.cluster.local 8080",
        f"neighbour {neighbour_ip} 8000",
        "apiserver-service kubernetes.default.svc.cluster.local 443",
        f"apiserver {link} 6443",
        f"host-port {link} {allowed.port}",
        f"host-other-port {link} {other.port}",
        "outside 192.0.2.1 80",
    ]
    seen = probe(installed, ns, "fenced", targets, tmp_path / "f")
    assert seen["gateway"] == "open", seen
    for name in ("neighbour", "apiserver-service", "apiserver", "host-port", "host-other-port", "outside"):
        assert seen[name] != "open", (name, seen)
    assert (allowed.accepted, other.accepted) == (0, 0)

    # Adding a CIDR and port to the Group opens exactly that destination.
    extra = f"network: {{egress: [{{cidr: {link}/32, ports: [{{port: {allowed.port}}}]}}]}}"
    installed.ready_group(ns, GROUP.format(name="fenced", extra=extra), "fenced")
    wait_for(
        lambda: any(
            any(t.get("ipBlock", {}).get("cidr") == f"{link}/32" for t in rule.get("to", []))
            for rule in (installed.get("networkpolicy", "pynchy-fenced", ns) or {"spec": {"egress": []}})["spec"][
                "egress"
            ]
        ),
        what="the Group's NetworkPolicy allows the CIDR",
    )
    seen = probe(installed, ns, "fenced", targets, tmp_path / "f", until_open=("host-port",))
    assert seen["host-port"] == "open", seen
    for name in ("host-other-port", "apiserver", "neighbour"):
        assert seen[name] != "open", (name, seen)
    assert allowed.accepted >= 1
    assert other.accepted == 0
