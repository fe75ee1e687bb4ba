"""Benchmark: N Groups created at once → time until all Ready, writes per Group, operator peak RSS,
and write requests during an idle window afterwards.

    uv run python bench/reconcile.py [--groups 200] [--idle 60]

Runs its own control plane (built from source, cached) and the real operator as a separate
process under its production RBAC. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from install import install, operator_process_env  # noqa: E402

from cluster.helpers import AuditWindow  # noqa: E402
from conftest import OPERATOR_USER  # noqa: E402
from pynchy.kube.api import KubeApi  # noqa: E402
from pynchy.kube.binaries import ensure_binaries  # noqa: E402
from pynchy.kube.controlplane import ControlPlane  # noqa: E402


def ready_count(plane: ControlPlane, namespace: str) -> int:
    items = json.loads(plane.kubectl("get", "groups", "-n", namespace, "-o", "json").stdout)["items"]
    n = 0
    for g in items:
        st = g.get("status") or {}
        if st.get("observedGeneration") == g["metadata"]["generation"] and any(
            c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []
        ):
            n += 1
    return n


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window in seconds")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="pynchy-bench-") as tmp,
        ControlPlane(ensure_binaries(), Path(tmp) / "cp") as plane,
    ):
        env = operator_process_env(install(plane, "bench")["operator"])
        log = open(Path(tmp) / "operator.log", "wb")  # noqa: SIM115
        op = subprocess.Popen([sys.executable, "-m", "pynchy", "operator"], env=env, stdout=log, stderr=log)
        try:
            time.sleep(3)  # let the operator list and watch
            window = AuditWindow(plane)
            import kubernetes

            api = KubeApi(kubernetes.config.new_client_from_config(str(plane.kubeconfig)), threads=16)

            def create(i: int) -> None:
                body = {
                    "apiVersion": "pynchy.dev/v1alpha1",
                    "kind": "Group",
                    "metadata": {"name": f"g{i:04d}", "namespace": "bench"},
                    "spec": {"channels": [{"local": {"name": f"g{i:04d}"}}]},
                }
                api._request("POST", api.path("Group", "bench"), body=body)

            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, range(args.groups)))
            created = time.monotonic() - started
            while ready_count(plane, "bench") < args.groups:
                if op.poll() is not None:
                    raise SystemExit(f"operator exited with {op.returncode}; see {log.name}")
                time.sleep(0.2)
            all_ready = time.monotonic() - started
            writes = len(window.writes(OPERATOR_USER, "bench"))

            idle = AuditWindow(plane)
            time.sleep(args.idle)
            idle_writes = len(idle.writes(OPERATOR_USER))
            rss = peak_rss_mb(op.pid)
            api.close()
        finally:
            op.terminate()
            op.wait(30)

    print(f"groups:                     {args.groups}")
    print(f"created in:                 {created:.1f} s")
    print(f"all Ready after:            {all_ready:.1f} s   (goal < 60 s)")
    print(f"operator writes:            {writes}  = {writes / args.groups:.2f} per Group   (goal <= 8)")
    print(f"operator peak RSS:          {rss:.0f} MB   (goal < 250 MB)")
    print(f"writes in {args.idle:.0f} s idle window: {idle_writes}   (goal 0)")


if __name__ == "__main__":
    main()
