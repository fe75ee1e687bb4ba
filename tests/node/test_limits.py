"""Limits the kubelet enforces and the operator reports (memory, deadline), logs of an agent pod, and
an operator pod replaced in the middle of a run."""

from __future__ import annotations

import threading
from pathlib import Path

from cluster.helpers import wait_for
from doubles.anthropic import text
from node.helpers import GROUP, SYSTEM, Install


def test_a_pod_over_its_memory_limit_fails_the_run_as_oomkilled(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    # Too little for the runner and the Claude Code CLI together: the kernel's OOM killer ends them.
    resources = "resources: {requests: {cpu: 50m, memory: 40Mi}, limits: {cpu: 500m, memory: 40Mi}}"
    installed.ready_group(ns, GROUP.format(name="tiny", extra=resources), "tiny")
    code, _, err = installed.chat(ns, "tiny", "hello tiny", tmp_path)
    # Every run's pod is killed before it takes the turn; after a few the person gets the reason.
    assert code != 0
    assert "could not start" in err, err
    assert "OOMKilled" in err, err
    name = installed.runs(ns)[0]["metadata"]["name"]
    status = wait_for(
        lambda: installed.run_status(ns, name).get("phase") == "Failed" and installed.run_status(ns, name),
        timeout=120,
        what="the run Failed",
    )
    assert status["reason"] == "OOMKilled", status
    assert "OOMKilled" in status["message"], status


def test_the_runs_deadline_times_it_out_and_logs_show_the_runner(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.ready_group(ns, GROUP.format(name="slow", extra="agent: {timeoutSeconds: 30}"), "slow")
    gate = threading.Event()  # never set: the turn outlives the run's deadline
    installed.model.on_prompt("take forever", text("never said"), gate=gate)
    code, out, err = installed.chat(ns, "slow", "take forever", tmp_path, timeout=200)
    assert code != 0
    assert "ran out of time" in err, (out, err)
    [run] = installed.runs(ns)
    name = run["metadata"]["name"]
    status = wait_for(
        lambda: installed.run_status(ns, name).get("phase") == "TimedOut" and installed.run_status(ns, name),
        timeout=60,
        what="the run TimedOut",
    )
    assert status["reason"] == "DeadlineExceeded", status
    gate.set()


def test_kubectl_logs_of_an_agent_pod_show_the_runner(installed: Install, node_namespace: str, tmp_path: Path) -> None:
    ns = node_namespace
    installed.ready_group(ns, GROUP.format(name="chatty", extra=""), "chatty")
    installed.model.on_prompt("say something", text("something"))
    code, out, err = installed.chat(ns, "chatty", "say something", tmp_path)
    assert (code, out) == (0, "something\n"), err
    [pod] = installed.pods(ns)
    logs = installed.kubectl("logs", "-n", ns, pod["metadata"]["name"]).stdout
    assert "turn received" in logs, logs[-2000:]


def test_an_operator_pod_replaced_mid_run_adopts_the_run(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.ready_group(ns, GROUP.format(name="steady", extra=""), "steady")
    gate = threading.Event()
    installed.model.on_prompt("a long job", text("Long job done."), gate=gate)
    result: dict[str, object] = {}
    chat = threading.Thread(
        target=lambda: result.update(
            zip(("code", "out", "err"), installed.chat(ns, "steady", "a long job", tmp_path), strict=True)
        )
    )
    chat.start()
    try:
        wait_for(lambda: any(r.step and r.step.gate is gate for r in installed.model.main_requests), 120, what="turn")
        [run] = installed.runs(ns)
        name = run["metadata"]["name"]
        pod_uid = installed.get("pod", name, ns)["metadata"]["uid"]  # type: ignore[index]
        [old] = installed.pods(SYSTEM, "app.kubernetes.io/name=pynchy-operator")
        installed.kubectl("delete", "pod", "-n", SYSTEM, old["metadata"]["name"], "--wait=true")
        installed.wait_available("pynchy-operator")
        [new] = installed.pods(SYSTEM, "app.kubernetes.io/name=pynchy-operator")
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
    finally:
        gate.set()
        chat.join(240)
    assert result.get("code") == 0, result
    assert result.get("out") == "Long job done.\n", result
    wait_for(lambda: installed.run_status(ns, name).get("turnsServed") == 1, what="the run reports its turn")
    pods = installed.pods(ns)
    assert [(p["metadata"]["name"], p["metadata"]["uid"]) for p in pods] == [(name, pod_uid)]
    assert len(installed.runs(ns)) == 1
    assert installed.run_status(ns, name)["phase"] == "Running"
