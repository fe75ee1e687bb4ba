"""Benchmark: N ScheduledTasks due in the same minute → time from the due time until each AgentRun
is created (p50/p99), then the operator's CPU while M tasks are idle.

    uv run python bench/schedule.py [--due 500] [--idle-tasks 2000] [--groups 10] [--idle 120]

Runs its own control plane (built from source, cached) and the real operator as a separate
process under its production RBAC, on real time (no injected clock). Creation times come from the
API server's audit log (the moment each create request completed, in microseconds), so the
creationTimestamp's one-second resolution does not blur them. CPU is utime + stime of the
operator process from /proc over the idle window. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from install import install, operator_process_env  # noqa: E402

from cluster.helpers import WRITE_VERBS  # noqa: E402
from conftest import OPERATOR_USER  # noqa: E402
from pynchy.kube.api import KubeApi  # noqa: E402
from pynchy.kube.binaries import ensure_binaries  # noqa: E402
from pynchy.kube.controlplane import ControlPlane  # noqa: E402

NS = "bench"


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def items(api: KubeApi, plural_kind: str) -> list[dict[str, Any]]:
    return list(api._request("GET", api.path(plural_kind, NS)).get("items", []))


class AuditTail:
    """Write requests from the audit log since creation, read incrementally (complete lines only: the
    API server may be in the middle of writing the last one)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.path = plane.audit_log
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.events: list[dict[str, Any]] = []

    def writes(self, user: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        self.events += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return [
            e
            for e in self.events
            if e["user"]["username"] == user
            and e["verb"] in WRITE_VERBS
            and (namespace is None or e.get("objectRef", {}).get("namespace") == namespace)
        ]


def wait_quiet(window: AuditTail, quiet: float, timeout: float, op: subprocess.Popen[bytes], log: Path) -> None:
    """Until the operator made no write for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if op.poll() is not None:
            raise SystemExit(f"operator exited with {op.returncode}; see {log}")
        now = len(window.writes(OPERATOR_USER, NS))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.5)
    raise SystemExit(f"the operator kept writing for {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--due", type=int, default=500, help="tasks due in the same minute")
    parser.add_argument("--idle-tasks", type=int, default=2000, help="tasks in total during the idle window")
    parser.add_argument("--groups", type=int, default=10, help="Groups the tasks belong to")
    parser.add_argument("--idle", type=float, default=120.0, help="idle window in seconds")
    parser.add_argument("--keep", type=Path, help="copy the audit and operator logs into this folder")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="pynchy-bench-") as tmp,
        ControlPlane(ensure_binaries(), Path(tmp) / "cp") as plane,
    ):
        env = operator_process_env(install(plane, NS)["operator"])
        log_path = Path(tmp) / "operator.log"
        log = open(log_path, "wb")  # noqa: SIM115
        op = subprocess.Popen([sys.executable, "-m", "pynchy", "operator"], env=env, stdout=log, stderr=log)
        import kubernetes

        api = KubeApi(kubernetes.config.new_client_from_config(str(plane.kubeconfig)), threads=16)
        try:
            time.sleep(3)  # let the operator list and watch
            groups = [f"g{i:03d}" for i in range(args.groups)]

            def create(body: dict[str, Any]) -> None:
                api._request("POST", api.path(body["kind"], NS), body=body)

            def task(name: str, schedule: dict[str, Any], group: str) -> dict[str, Any]:
                return {
                    "apiVersion": "pynchy.dev/v1alpha1",
                    "kind": "ScheduledTask",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"groupRef": {"name": group}, "prompt": f"Report for {name}.", "schedule": schedule},
                }

            with ThreadPoolExecutor(16) as pool:
                list(
                    pool.map(
                        create,
                        [
                            {
                                "apiVersion": "pynchy.dev/v1alpha1",
                                "kind": "Group",
                                "metadata": {"name": g, "namespace": NS},
                                "spec": {"channels": [{"local": {"name": g}}]},
                            }
                            for g in groups
                        ],
                    )
                )
            wait_quiet(AuditTail(plane), 2, 120, op, log_path)

            # -- N tasks due in the same (real, near-future) minute ------------------------------
            now = dt.datetime.now(dt.UTC)
            # The first whole minute at least 45 s away (creating and scheduling N tasks takes ~20 s).
            due = (now + dt.timedelta(seconds=105)).replace(second=0, microsecond=0)
            cron = {"cron": f"{due.minute} {due.hour} {due.day} {due.month} *"}
            setup = AuditTail(plane)
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, [task(f"due-{i:04d}", cron, groups[i % len(groups)]) for i in range(args.due)]))
            wait_quiet(setup, 2, 120, op, log_path)
            scheduled = sum(
                1
                for t in items(api, "ScheduledTask")
                if (t.get("status") or {}).get("nextScheduleTime") == due.isoformat().replace("+00:00", "Z")
            )
            lead = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if lead <= 1:
                raise SystemExit(f"setup took too long: the due minute {due} passed before all tasks were ready")
            window = AuditTail(plane)
            time.sleep(lead)
            deadline = time.monotonic() + 120
            latencies: list[float] = []
            while time.monotonic() < deadline:
                created = [
                    e
                    for e in window.writes(OPERATOR_USER, NS)
                    if e["verb"] == "create"
                    and e["objectRef"].get("resource") == "agentruns"
                    and e.get("responseStatus", {}).get("code") == 201
                ]
                if len(created) >= args.due:
                    latencies = [(parse(e["stageTimestamp"]) - due).total_seconds() for e in created]
                    break
                time.sleep(0.5)
            if not latencies:
                raise SystemExit(f"only {len(created)} of {args.due} runs were created within 120 s")
            wait_quiet(window, 3, 300, op, log_path)
            burst_writes = len(window.writes(OPERATOR_USER, NS))

            # -- M tasks idle ---------------------------------------------------------------------
            far = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(microsecond=0)
            extra = []
            for i in range(args.due, args.idle_tasks):
                kind = i % 3
                if kind == 0:
                    schedule = {"cron": f"{i % 60} {i % 24} 1 1 *"}
                elif kind == 1:
                    schedule = {"interval": "23h"}
                else:
                    schedule = {"once": far.isoformat().replace("+00:00", "Z")}
                extra.append(task(f"idle-{i:04d}", schedule, groups[i % len(groups)]))
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, extra))
            wait_quiet(AuditTail(plane), 5, 300, op, log_path)
            total_tasks = len(items(api, "ScheduledTask"))
            idle = AuditTail(plane)
            cpu_before, wall_before = cpu_seconds(op.pid), time.monotonic()
            time.sleep(args.idle)
            cpu = cpu_seconds(op.pid) - cpu_before
            wall = time.monotonic() - wall_before
            idle_writes = len(idle.writes(OPERATOR_USER))
            rss = peak_rss_mb(op.pid)
        finally:
            api.close()
            op.terminate()
            op.wait(30)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(plane.audit_log, args.keep / "audit.log")
                shutil.copy(log_path, args.keep / "operator.log")

    print(f"tasks due in the same minute:  {args.due} ({scheduled} showed it as nextScheduleTime; {lead:.0f} s lead)")
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(
        f"due → AgentRun created:        p50 {p50:.2f} s   p99 {p99:.2f} s"
        f"   first {min(latencies):.2f} s   last {max(latencies):.2f} s   (goal p99 <= 2 s)"
    )
    print(f"operator writes, burst:        {burst_writes} ({burst_writes / args.due:.1f} per task, runs included)")
    print(f"idle tasks:                    {total_tasks}")
    print(f"operator CPU while idle:       {100 * cpu / wall:.2f} % of one core over {wall:.0f} s   (goal < 5 %)")
    print(f"writes in the idle window:     {idle_writes}")
    print(f"operator peak RSS:             {rss:.0f} MB")


if __name__ == "__main__":
    main()
