"""AgentRuns against the real API server, with the operator under its production RBAC.

There is no kubelet here: the tests play it, moving pods through their phases with status patches
(as the admin), the way a node would.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from typing import Any

import pytest

from cluster.helpers import AuditWindow, apply, condition, describe, get, group, is_ready, resync, synced, wait_for
from conftest import OPERATOR_USER
from pynchy.kube.controlplane import ControlPlane
from pynchy.runtoken import GRACE_SECONDS, verify


@pytest.fixture(autouse=True)
def only_this_namespace(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's operator watches its own namespace only, so runs that other tests leave in
    terminating namespaces never count against the cluster-wide limit here."""
    monkeypatch.setenv("PYNCHY_NAMESPACES", namespace)


def agentrun(name: str, group_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"groupRef": {"name": group_name}, **spec},
    }


def now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def kubelet(plane: ControlPlane, namespace: str, pod: str, phase: str, **extra: Any) -> None:
    """Report the agent container the way a node would."""
    t = now()
    terminated = {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t, **extra.pop("terminated", {})}
    status: dict[str, Any] = {"phase": phase, "startTime": t, **extra}
    state = {"running": {"startedAt": t}} if phase == "Running" else {"terminated": terminated}
    status["containerStatuses"] = [
        {
            "name": "agent",
            "ready": phase == "Running",
            "restartCount": 0,
            "image": "localhost/pynchy-agent:0.1.0",
            "imageID": "",
            "state": state,
        }
    ]
    plane.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def run_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return get(plane, "agentrun", name, namespace) or {}


def status_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return run_of(plane, namespace, name).get("status") or {}


def wait_phase(plane: ControlPlane, namespace: str, name: str, phase: str, reason: str | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        s = status_of(plane, namespace, name)
        return s if s.get("phase") == phase and (reason is None or s.get("reason") == reason) else None

    return wait_for(reached, what=f"{name} {phase} {reason or ''}")  # type: ignore[no-any-return]


def ready_group(plane: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    apply(plane, namespace, group(name, **spec))
    wait_for(lambda: is_ready(plane, "group", name, namespace), what=f"Group {name} Ready")


def pod_of(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    return get(plane, "pod", name, namespace)


@pytest.mark.usefixtures("operator")
def test_run_gets_its_pod_and_token_then_follows_the_pod(control_plane: ControlPlane, namespace: str) -> None:
    # The API server itself checks the pod against the "restricted" Pod Security Standard.
    control_plane.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    plain = control_plane.kubectl("run", "plain", "--image=busybox", "-n", namespace, "--dry-run=server", check=False)
    assert "violates PodSecurity" in plain.stderr  # enforced: a plain pod is refused
    control_plane.kubectl("create", "secret", "generic", "gh", "-n", namespace, "--from-literal=token=x")
    ready_group(
        control_plane,
        namespace,
        "fam",
        credentials=[{"env": "GH_TOKEN", "secretKeyRef": {"name": "gh", "key": "token"}}],
        agent={"timeoutSeconds": 900, "idleTimeoutSeconds": 120},
    )
    apply(control_plane, namespace, agentrun("fam-1", "fam", prompt="hello"))
    pod = wait_for(lambda: pod_of(control_plane, namespace, "fam-1"), what="agent pod")
    run = run_of(control_plane, namespace, "fam-1")
    grp = get(control_plane, "group", "fam", namespace)
    assert grp is not None

    # Owners: pod and Secret belong to the run, the run to its Group.
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "AgentRun",
        "fam-1",
        run["metadata"]["uid"],
        True,
    )
    wait_for(
        lambda: any(
            r["uid"] == grp["metadata"]["uid"]
            for r in run_of(control_plane, namespace, "fam-1")["metadata"].get("ownerReferences") or []
        ),
        what="run owned by its Group",
    )
    secret = get(control_plane, "secret", "fam-1-token", namespace)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    claims = verify(os.environ["PYNCHY_RUN_TOKEN_KEY"], base64.b64decode(secret["data"]["token"]).decode())
    assert (claims.namespace, claims.run, claims.uid, claims.group) == (
        namespace,
        "fam-1",
        run["metadata"]["uid"],
        "fam",
    )
    assert claims.expires - time.time() > 900 + GRACE_SECONDS - 120

    # The pod contract.
    labels = pod["metadata"]["labels"]
    assert labels["pynchy.dev/group"] == "fam"
    assert labels["pynchy.dev/run"] == "fam-1"
    assert labels["app.kubernetes.io/component"] == "agent"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "pynchy-fam"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["command"] == ["pynchy-agent"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    token_ref = {"secretKeyRef": {"name": "fam-1-token", "key": "token"}}
    assert env["PYNCHY_RUN_TOKEN"] == token_ref
    assert env["ANTHROPIC_API_KEY"] == token_ref
    assert env["GH_TOKEN"] == {"secretKeyRef": {"name": "gh", "key": "token"}}
    assert env["ANTHROPIC_BASE_URL"].endswith("/model")
    assert env["PYNCHY_IDLE_TIMEOUT_SECONDS"] == "120"
    assert (env["PYNCHY_NAMESPACE"], env["PYNCHY_GROUP"], env["PYNCHY_RUN_NAME"]) == (namespace, "fam", "fam-1")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/home/agent"]["name"]]["persistentVolumeClaim"]["claimName"] == "pynchy-fam-state"
    assert mounts["/workspace"]["subPath"] == "workspace"
    assert volumes[mounts["/etc/pynchy/group"]["name"]]["configMap"]["name"] == "pynchy-fam-config"
    assert mounts["/etc/pynchy/group"]["readOnly"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]

    s = wait_phase(control_plane, namespace, "fam-1", "Pending", "PodPending")
    assert s["podName"] == "fam-1"
    assert condition(run_of(control_plane, namespace, "fam-1"), "Reconciling")["status"] == "True"

    kubelet(control_plane, namespace, "fam-1", "Running")
    s = wait_phase(control_plane, namespace, "fam-1", "Running")
    assert s["startTime"]
    r = run_of(control_plane, namespace, "fam-1")
    assert condition(r, "Ready")["status"] == "True"
    assert condition(r, "ConfigCurrent")["status"] == "True"
    assert s["observedGeneration"] == r["metadata"]["generation"]

    kubelet(control_plane, namespace, "fam-1", "Succeeded", terminated={"finishedAt": "2030-01-01T00:00:00Z"})
    s = wait_phase(control_plane, namespace, "fam-1", "Succeeded")
    assert s["completionTime"] == "2030-01-01T00:00:00Z"
    r = run_of(control_plane, namespace, "fam-1")
    assert condition(r, "Complete")["status"] == "True"
    assert condition(r, "Reconciling") is None
    assert condition(r, "ConfigCurrent") is None


@pytest.mark.usefixtures("operator")
def test_second_run_of_a_group_waits_until_the_first_is_done(control_plane: ControlPlane, namespace: str) -> None:
    ready_group(control_plane, namespace, "solo")
    apply(control_plane, namespace, agentrun("solo-1", "solo"))
    wait_for(lambda: pod_of(control_plane, namespace, "solo-1"), what="first pod")
    apply(control_plane, namespace, agentrun("solo-2", "solo"))
    s = wait_phase(control_plane, namespace, "solo-2", "Pending", "Queued")
    assert s["message"] == "Group solo already has an active run solo-1"
    assert "podName" not in s
    kubelet(control_plane, namespace, "solo-1", "Running")
    wait_phase(control_plane, namespace, "solo-1", "Running")
    assert pod_of(control_plane, namespace, "solo-2") is None

    kubelet(control_plane, namespace, "solo-1", "Succeeded")
    wait_for(lambda: pod_of(control_plane, namespace, "solo-2"), what="second pod after the first succeeded")
    wait_phase(control_plane, namespace, "solo-2", "Pending", "PodPending")
    wait_phase(control_plane, namespace, "solo-1", "Succeeded")


def test_cluster_limit_queues_across_groups_in_creation_order(
    control_plane: ControlPlane, namespace: str, operator_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    monkeypatch.setenv("PYNCHY_MAX_CONCURRENT_RUNS", "1")
    with EmbeddedOperator() as op:
        for name in ("ga", "gb", "gc"):
            apply(control_plane, namespace, group(name))
        for name in ("ga", "gb", "gc"):
            wait_for(lambda n=name: is_ready(control_plane, "group", n, namespace), what=f"Group {name}")
        # Creation order differs from name order: run-c, then run-a, then run-b.
        for run, grp in (("run-c", "gc"), ("run-a", "ga"), ("run-b", "gb")):
            apply(control_plane, namespace, agentrun(run, grp))
            time.sleep(1.1)  # creationTimestamp has one-second resolution
        wait_for(lambda: pod_of(control_plane, namespace, "run-c"), what="oldest run starts")
        for run in ("run-a", "run-b"):
            s = wait_phase(control_plane, namespace, run, "Pending", "Queued")
            assert s["message"] == "cluster limit of 1 active runs reached"

        kubelet(control_plane, namespace, "run-c", "Failed", terminated={"exitCode": 1, "reason": "Error"})
        wait_for(lambda: pod_of(control_plane, namespace, "run-a"), what="next oldest run starts")
        resync(op)  # every run decided again: run-b still waits
        assert pod_of(control_plane, namespace, "run-b") is None
        kubelet(control_plane, namespace, "run-a", "Succeeded")
        wait_for(lambda: pod_of(control_plane, namespace, "run-b"), what="last run starts")


@pytest.mark.usefixtures("operator")
def test_failures_carry_the_exit_code_or_termination_message(control_plane: ControlPlane, namespace: str) -> None:
    ready_group(control_plane, namespace, "f1")
    ready_group(control_plane, namespace, "f2")
    ready_group(control_plane, namespace, "f3")
    for name, grp in (("told", "f1"), ("silent", "f2"), ("late", "f3")):
        apply(control_plane, namespace, agentrun(name, grp))
    for name in ("told", "silent", "late"):
        wait_for(lambda n=name: pod_of(control_plane, namespace, n), what=f"pod {name}")
        kubelet(control_plane, namespace, name, "Running")

    kubelet(
        control_plane,
        namespace,
        "told",
        "Failed",
        terminated={"exitCode": 2, "reason": "Error", "message": "the gateway refused the run token"},
    )
    kubelet(control_plane, namespace, "silent", "Failed", terminated={"exitCode": 3, "reason": "Error"})
    kubelet(
        control_plane,
        namespace,
        "late",
        "Failed",
        reason="DeadlineExceeded",
        message="Pod was active on the node longer than the specified deadline",
        terminated={"exitCode": 137, "reason": "Error"},
    )
    told = wait_phase(control_plane, namespace, "told", "Failed")
    assert (told["reason"], told["message"]) == ("Error", "the gateway refused the run token")
    silent = wait_phase(control_plane, namespace, "silent", "Failed")
    assert (silent["reason"], silent["message"]) == ("Error", "exit code 3")
    late = wait_phase(control_plane, namespace, "late", "TimedOut")
    assert late["reason"] == "DeadlineExceeded"
    r = run_of(control_plane, namespace, "late")
    assert condition(r, "Failed")["status"] == "True"
    assert condition(r, "Stalled")["status"] == "True"  # kstatus: Failed
    assert condition(r, "Ready")["status"] == "False"
    events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "DeadlineExceeded" and e["involvedObject"]["name"] == "late" for e in events)


def test_a_lost_pod_fails_the_run_and_is_never_recreated(
    control_plane: ControlPlane, namespace: str, operator: Any
) -> None:
    ready_group(control_plane, namespace, "lost")
    apply(control_plane, namespace, agentrun("lost-1", "lost"))
    wait_for(lambda: pod_of(control_plane, namespace, "lost-1"), what="pod")
    kubelet(control_plane, namespace, "lost-1", "Running")
    wait_phase(control_plane, namespace, "lost-1", "Running")
    control_plane.kubectl("delete", "pod", "lost-1", "-n", namespace, "--wait=false")
    s = wait_phase(control_plane, namespace, "lost-1", "Failed", "PodLost")
    assert "create a new AgentRun" in s["message"]
    assert s["completionTime"]
    # The queue, resyncs and the Group's events come and go; the run never starts again.
    control_plane.kubectl("annotate", "group", "lost", "-n", namespace, "nudge=1")
    control_plane.kubectl("annotate", "agentrun", "lost-1", "-n", namespace, "nudge=1")
    resync(operator)
    assert pod_of(control_plane, namespace, "lost-1") is None
    assert status_of(control_plane, namespace, "lost-1")["reason"] == "PodLost"


def test_restart_adopts_the_running_pod_and_resync_writes_nothing(
    control_plane: ControlPlane, namespace: str, operator_env: None
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    with EmbeddedOperator() as op:
        ready_group(control_plane, namespace, "keep")
        apply(control_plane, namespace, agentrun("keep-1", "keep"))
        wait_for(lambda: pod_of(control_plane, namespace, "keep-1"), what="pod")
        kubelet(control_plane, namespace, "keep-1", "Running")
        wait_phase(control_plane, namespace, "keep-1", "Running")
        apply(control_plane, namespace, agentrun("keep-2", "keep"))
        wait_phase(control_plane, namespace, "keep-2", "Pending", "Queued")
        resync(op)  # nothing is left for the operator to do at this state
    uid = pod_of(control_plane, namespace, "keep-1")["metadata"]["uid"]

    window = AuditWindow(control_plane)
    with EmbeddedOperator() as op:
        synced(op, processed=3, what="initial sync")
        resync(op)  # a resync, as the periodic timer does
        assert window.writes(OPERATOR_USER, namespace) == [], describe(window.writes(OPERATOR_USER, namespace))
        pods = json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        assert [p["metadata"]["name"] for p in pods] == ["keep-1"]
        assert pods[0]["metadata"]["uid"] == uid
        assert status_of(control_plane, namespace, "keep-2")["reason"] == "Queued"
        # The adopted pod is still followed.
        kubelet(control_plane, namespace, "keep-1", "Succeeded")
        wait_phase(control_plane, namespace, "keep-1", "Succeeded")
        wait_for(lambda: pod_of(control_plane, namespace, "keep-2"), what="queued run starts after the restart")


def test_finished_runs_are_deleted_after_ttl_and_beyond_history(
    control_plane: ControlPlane, namespace: str, operator_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pynchy.operator.run import EmbeddedOperator

    monkeypatch.setenv("PYNCHY_RUN_HISTORY_LIMIT", "2")
    with EmbeddedOperator():
        ready_group(control_plane, namespace, "hist")
        ready_group(control_plane, namespace, "ttl")
        apply(control_plane, namespace, agentrun("ttl-1", "ttl", ttlSecondsAfterFinished=4))
        wait_for(lambda: pod_of(control_plane, namespace, "ttl-1"), what="ttl pod")
        kubelet(control_plane, namespace, "ttl-1", "Succeeded")
        wait_phase(control_plane, namespace, "ttl-1", "Succeeded")
        wait_for(lambda: get(control_plane, "agentrun", "ttl-1", namespace) is None, timeout=15, what="TTL deletion")
        # Garbage collection takes the pod and the token Secret with the run.
        wait_for(
            lambda: (
                pod_of(control_plane, namespace, "ttl-1") is None
                and get(control_plane, "secret", "ttl-1-token", namespace) is None
            ),
            what="pod and Secret collected",
        )

        for i in range(1, 5):
            apply(control_plane, namespace, agentrun(f"hist-{i}", "hist"))
            wait_for(lambda i=i: pod_of(control_plane, namespace, f"hist-{i}"), what=f"pod hist-{i}")
            kubelet(control_plane, namespace, f"hist-{i}", "Succeeded")
            wait_phase(control_plane, namespace, f"hist-{i}", "Succeeded")

        def kept() -> list[str]:
            runs = json.loads(control_plane.kubectl("get", "agentruns", "-n", namespace, "-o", "json").stdout)
            return sorted(r["metadata"]["name"] for r in runs["items"] if not r["metadata"].get("deletionTimestamp"))

        wait_for(lambda: kept() == ["hist-3", "hist-4"], what="the two newest finished runs kept")


@pytest.mark.usefixtures("operator")
def test_run_waits_for_its_group_to_become_ready(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, namespace, agentrun("early-1", "later"))
    s = wait_phase(control_plane, namespace, "early-1", "Pending", "GroupNotReady")
    assert "Group 'later' does not exist" in s["message"]
    apply(
        control_plane,
        namespace,
        group("later", credentials=[{"env": "API_TOKEN", "secretKeyRef": {"name": "api", "key": "token"}}]),
    )
    wait_for(
        lambda: "Secret 'api' does not exist" in status_of(control_plane, namespace, "early-1").get("message", ""),
        what="GroupNotReady with the Group's message",
    )
    assert status_of(control_plane, namespace, "early-1")["reason"] == "GroupNotReady"
    assert pod_of(control_plane, namespace, "early-1") is None
    control_plane.kubectl("create", "secret", "generic", "api", "-n", namespace, "--from-literal=token=x")
    wait_for(lambda: pod_of(control_plane, namespace, "early-1"), what="pod once the Group is Ready")
    wait_phase(control_plane, namespace, "early-1", "Pending", "PodPending")


@pytest.mark.usefixtures("operator")
def test_config_change_mid_run_is_flagged_not_enforced(control_plane: ControlPlane, namespace: str) -> None:
    ready_group(control_plane, namespace, "drift")
    apply(control_plane, namespace, agentrun("drift-1", "drift"))
    pod = wait_for(lambda: pod_of(control_plane, namespace, "drift-1"), what="pod")
    kubelet(control_plane, namespace, "drift-1", "Running")
    wait_phase(control_plane, namespace, "drift-1", "Running")
    assert condition(run_of(control_plane, namespace, "drift-1"), "ConfigCurrent")["status"] == "True"
    control_plane.kubectl(
        "patch",
        "group",
        "drift",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"agent":{"directives":[{"inline":"Answer in French."}]}}}',
    )

    def flagged() -> dict[str, Any] | None:
        c = condition(run_of(control_plane, namespace, "drift-1"), "ConfigCurrent")
        return c if c and c["status"] == "False" else None

    c = wait_for(flagged, what="ConfigCurrent=False")
    assert c["reason"] == "ConfigChanged"
    assert pod_of(control_plane, namespace, "drift-1")["metadata"]["uid"] == pod["metadata"]["uid"]
    assert status_of(control_plane, namespace, "drift-1")["phase"] == "Running"
