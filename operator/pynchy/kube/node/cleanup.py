"""Leave nothing behind: processes, mounts, cgroups, the network namespace, host sysctls.

Everything a node run creates is named by its run id and recorded in a state file
(`/run/pynchy-node/<id>.json`) before it is created, so the same teardown works after a clean
stop, after a failed start, from the reaper when the test process was killed, and from the next
run's sweep if even the reaper died.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pynchy.kube.node.network import STATE_ROOT, NodeNetwork, destroy, pid_alive
from pynchy.logs import get_logger

log = get_logger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# kubelet sets these host-wide (they are not per namespace); a node puts them back as found.
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
SYSCTL_FILE = STATE_ROOT / "host-sysctls.saved"


@dataclass(frozen=True)
class NodeState:
    """What one run made, by name: enough to undo it from another process."""

    network: NodeNetwork
    data_dir: str
    cgroup: str  # the kubelet's cgroupRoot, "/pynchy-<id>", in every v1 hierarchy

    def save(self) -> None:
        self.network.state_file().write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> NodeState:
        raw = json.loads(path.read_text())
        return cls(NodeNetwork(**raw["network"]), raw["data_dir"], raw["cgroup"])


def cgroup_dirs(name: str) -> list[Path]:
    """The run's cgroup in each mounted hierarchy (v1 controllers, named and unified ones)."""
    if not CGROUP_ROOT.is_dir():
        return []
    return [d / name.lstrip("/") for d in sorted(CGROUP_ROOT.iterdir()) if (d / "cgroup.procs").exists()]


def make_cgroups(name: str) -> None:
    for directory in cgroup_dirs(name):
        directory.mkdir(exist_ok=True)
        # A new cpuset has no CPUs or memory nodes: give it the parent's, or no task may join.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            own = directory / knob
            if own.exists() and not own.read_text().strip():
                own.write_text((directory.parent / knob).read_text())


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def _netns_pids(net: NodeNetwork) -> set[int]:
    if not net.netns_path.exists():
        return set()
    try:
        target = os.stat(net.netns_path).st_ino
    except OSError:
        return set()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino == target:
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _shim_pids(data_dir: str) -> set[int]:
    """containerd shims of this run's containerd (they name its socket on their command line)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "containerd-shim" in cmdline and data_dir in cmdline:
            pids.add(int(entry.name))
    return pids


def kill_everything(state: NodeState, timeout: float = 20.0) -> None:
    """SIGKILL every process of the run until none is left (containers, shims, node daemons)."""
    deadline = time.monotonic() + timeout
    me = os.getpid()
    while True:
        pids = (_cgroup_pids(state.cgroup) | _netns_pids(state.network) | _shim_pids(state.data_dir)) - {me}
        if not pids:
            return
        if time.monotonic() > deadline:
            log.warning("node processes still alive after teardown", pids=sorted(pids))
            return
        for pid in pids:
            with contextlib.suppress(OSError):  # gone already
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_all(prefix: str) -> None:
    for _ in range(5):
        points = mounts_under(prefix)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(prefix)
    if left:
        log.warning("mounts left under the node's data dir", mounts=left[:10])


def remove_cgroups(name: str) -> None:
    for top in cgroup_dirs(name):
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):  # the top one reports what is left below
                directory.rmdir()
        try:
            top.rmdir()
        except OSError as exc:
            log.warning("cgroup not removed", cgroup=str(top), error=str(exc))


def _sysctl(key: str) -> str:
    return Path("/proc/sys", *key.split(".")).read_text().strip()


def remember_host_sysctls() -> None:
    """Record the host's values before the first concurrent run's kubelet changes them."""
    if SYSCTL_FILE.exists():
        return
    values = {}
    for key in KUBELET_SYSCTLS:
        try:
            values[key] = _sysctl(key)
        except OSError:
            continue
    SYSCTL_FILE.write_text(json.dumps(values))


def restore_host_sysctls(others_alive: bool) -> None:
    """Put the host's values back once no other run needs the kubelet's."""
    if others_alive or not SYSCTL_FILE.exists():
        return
    for key, value in json.loads(SYSCTL_FILE.read_text()).items():
        try:
            Path("/proc/sys", *key.split(".")).write_text(value)
        except OSError as exc:
            log.warning("could not restore sysctl", key=key, value=value, error=str(exc))
    SYSCTL_FILE.unlink(missing_ok=True)


def live_runs(excluding: str | None = None) -> list[NodeState]:
    states = []
    for path in sorted(STATE_ROOT.glob("*.json")):
        try:
            state = NodeState.load(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if state.network.run_id != excluding and pid_alive(state.network.owner_pid):
            states.append(state)
    return states


def teardown(state: NodeState) -> None:
    """Undo one run completely. Idempotent."""
    kill_everything(state)
    unmount_all(state.data_dir)
    remove_cgroups(state.cgroup)
    destroy(state.network)
    restore_host_sysctls(others_alive=bool(live_runs(excluding=state.network.run_id)))


def sweep() -> list[str]:
    """Tear down runs whose owner died without cleaning up (the reaper normally does it)."""
    cleaned = []
    for path in sorted(STATE_ROOT.glob("*.json")):
        try:
            state = NodeState.load(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not pid_alive(state.network.owner_pid):
            log.warning("removing a node left behind by a dead run", run=state.network.run_id)
            teardown(state)
            cleaned.append(state.network.run_id)
    return cleaned
