"""The control plane itself: garbage collection works, and no process outlives its owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pynchy.kube.controlplane import ControlPlane


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_garbage_collector_deletes_owned_objects(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = json.loads(control_plane.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json").stdout)[
        "metadata"
    ]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    control_plane.kubectl("create", "-f", "-", input=json.dumps(child))
    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if control_plane.kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode != 0:
            return
        time.sleep(0.3)
    raise AssertionError("kube-controller-manager did not garbage-collect the owned ConfigMap")


def test_namespace_deletion_completes(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "short-lived")
    control_plane.kubectl("delete", "namespace", "short-lived", "--timeout=60s")


def test_stop_leaves_no_process(control_plane: ControlPlane, tmp_path: Path) -> None:
    plane = ControlPlane(control_plane.bin_dir, tmp_path / "cp", controller_manager=False)
    with plane:
        pids = [p.pid for p in plane.processes if p.pid]
        assert len(pids) == 2
        assert plane.kubectl("get", "namespaces").returncode == 0
    assert _wait_gone(pids, timeout=5) == []


def test_children_die_with_a_killed_parent(control_plane: ControlPlane, tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pynchy.kube.controlplane import ControlPlane\n"
        f"p = ControlPlane(Path({str(control_plane.bin_dir)!r}), Path({str(tmp_path / 'cp')!r}), "
        "controller_manager=False)\n"
        "p.start()\n"
        "print('PIDS', *(x.pid for x in p.processes), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("PIDS"):  # skip start-up log lines
            line = parent.stdout.readline()
            assert line, "the child exited before starting the control plane"
        pids = [int(x) for x in line.split()[1:]]
        assert len(pids) == 2, line
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(pids) == [], "etcd/kube-apiserver outlived a SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
