"""The operator against the real API server, running under its production RBAC."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cluster.helpers import (
    AuditWindow,
    apply,
    condition,
    describe,
    get,
    group,
    is_ready,
    resync,
    synced,
    wait_for,
    workspace,
)
from conftest import OPERATOR_USER, RUN_TOKEN_KEY
from pynchy.kube.controlplane import ControlPlane


def test_group_becomes_ready_with_isolated_children(control_plane: ControlPlane, namespace: str, operator: Any) -> None:
    window = AuditWindow(control_plane)
    apply(
        control_plane,
        namespace,
        group(
            "family", network={"egress": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"], "ports": [{"port": 443}]}]}
        ),
    )
    wait_for(lambda: is_ready(control_plane, "group", "family", namespace), what="Group Ready")
    g = get(control_plane, "group", "family", namespace)
    assert g is not None
    assert condition(g, "Accepted")["status"] == "True"
    assert g["status"]["children"] == {
        "serviceAccount": "pynchy-family",
        "stateClaim": "pynchy-family-state",
        "configMap": "pynchy-family-config",
        "networkPolicy": "pynchy-family",
    }
    sa = get(control_plane, "serviceaccount", "pynchy-family", namespace)
    assert sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["labels"]["pynchy.dev/group"] == "family"
    owner = sa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Group",
        "family",
        g["metadata"]["uid"],
        True,
    )
    # No RBAC is bound to the agent's ServiceAccount.
    bindings = json.loads(control_plane.kubectl("get", "rolebindings,clusterrolebindings", "-A", "-o", "json").stdout)
    assert not [b for b in bindings["items"] for s in b.get("subjects") or [] if s.get("name") == "pynchy-family"]
    # Retain (the default): the state claim has no owner, so it survives the Group.
    pvc = get(control_plane, "pvc", "pynchy-family-state", namespace)
    assert not pvc["metadata"].get("ownerReferences")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    np = get(control_plane, "networkpolicy", "pynchy-family", namespace)
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert not np["spec"].get("ingress")
    assert np["spec"]["egress"][-1]["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}
    cm = get(control_plane, "configmap", "pynchy-family-config", namespace)
    assert json.loads(cm["data"]["agent.json"])["group"] == "family"
    # Writes: 4 children + 1 status, nothing else (a resync, done before counting, adds none).
    resync(operator)
    assert len(window.writes(OPERATOR_USER, namespace)) <= 6, describe(window.writes(OPERATOR_USER, namespace))


@pytest.mark.usefixtures("operator")
def test_missing_secret_is_reported_then_picked_up(control_plane: ControlPlane, namespace: str) -> None:
    apply(
        control_plane,
        namespace,
        group("dev", credentials=[{"env": "GH_TOKEN", "secretKeyRef": {"name": "github", "key": "token"}}]),
    )

    def rejected() -> dict[str, Any] | None:
        c = condition(get(control_plane, "group", "dev", namespace), "Accepted")
        return c if c and c["status"] == "False" else None

    accepted = wait_for(rejected, what="Accepted=False")
    assert accepted["reason"] == "SecretNotFound"
    assert "spec.credentials[0] (GH_TOKEN): Secret 'github' does not exist" in accepted["message"]
    g = get(control_plane, "group", "dev", namespace)
    assert condition(g, "Ready")["status"] == "False"
    assert condition(g, "Stalled")["status"] == "True"  # kstatus: Failed, not InProgress forever
    events = json.loads(control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "SecretNotFound" and e["involvedObject"]["name"] == "dev" for e in events)
    assert get(control_plane, "serviceaccount", "pynchy-dev", namespace) is None

    control_plane.kubectl("create", "secret", "generic", "github", "-n", namespace, "--from-literal=wrong=x")
    wait_for(
        lambda: (
            (condition(get(control_plane, "group", "dev", namespace), "Accepted") or {}).get("reason")
            == "SecretKeyNotFound"
        ),
        what="SecretKeyNotFound",
    )
    control_plane.kubectl("delete", "secret", "github", "-n", namespace)
    control_plane.kubectl("create", "secret", "generic", "github", "-n", namespace, "--from-literal=token=x")
    wait_for(lambda: is_ready(control_plane, "group", "dev", namespace), timeout=15, what="Ready after Secret")
    assert condition(get(control_plane, "group", "dev", namespace), "Stalled") is None


@pytest.mark.usefixtures("operator")
def test_references_are_checked(control_plane: ControlPlane, namespace: str) -> None:
    apply(
        control_plane,
        namespace,
        group(
            "refs",
            workspaceRef={"name": "code"},
            agent={"directives": [{"configMapKeyRef": {"name": "house-rules", "key": "rules.md"}}]},
            mounts=[
                {"name": "photos", "mountPath": "/mnt/photos", "hostPath": {"path": "/home/someone/photos"}},
                {"name": "notes", "mountPath": "/mnt/notes", "persistentVolumeClaim": {"claimName": "notes"}},
            ],
        ),
    )
    c = wait_for(lambda: condition(get(control_plane, "group", "refs", namespace), "Accepted"), what="Accepted")
    assert c["status"] == "False"
    assert c["reason"] == "InvalidReferences"
    for expected in (
        "Workspace 'code' does not exist",
        "ConfigMap 'house-rules' does not exist",
        "hostPath '/home/someone/photos' is outside the operator's allowlist (/srv/pynchy)",
        "PersistentVolumeClaim 'notes' does not exist",
    ):
        assert expected in c["message"]

    # Fix everything; the Group follows each fix without being touched.
    control_plane.kubectl("create", "configmap", "house-rules", "-n", namespace, "--from-literal=rules.md=Be kind.")
    apply(control_plane, namespace, workspace("code"))
    apply(
        control_plane,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "notes"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    patch = {
        "spec": {
            "mounts": [
                {"name": "notes", "mountPath": "/mnt/notes", "persistentVolumeClaim": {"claimName": "notes"}},
                {"name": "photos", "mountPath": "/mnt/photos", "hostPath": {"path": "/srv/pynchy/photos"}},
            ]
        }
    }
    control_plane.kubectl("patch", "group", "refs", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_for(lambda: is_ready(control_plane, "group", "refs", namespace), what="Ready after fixes")
    cm = get(control_plane, "configmap", "pynchy-refs-config", namespace)
    assert cm["data"]["directives.md"] == "Be kind."
    # Editing the referenced ConfigMap updates the Group's ConfigMap.
    control_plane.kubectl(
        "patch", "configmap", "house-rules", "-n", namespace, "--type=merge", "-p", '{"data":{"rules.md":"Be brief."}}'
    )
    wait_for(
        lambda: (
            get(control_plane, "configmap", "pynchy-refs-config", namespace)["data"]["directives.md"] == "Be brief."
        ),
        what="directive update",
    )


@pytest.mark.usefixtures("operator")
def test_drift_is_repaired(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, namespace, group("drift"))
    wait_for(lambda: is_ready(control_plane, "group", "drift", namespace), what="Ready")
    uid = get(control_plane, "networkpolicy", "pynchy-drift", namespace)["metadata"]["uid"]
    control_plane.kubectl("delete", "networkpolicy", "pynchy-drift", "-n", namespace)
    recreated = wait_for(
        lambda: (
            (get(control_plane, "networkpolicy", "pynchy-drift", namespace) or {}).get("metadata", {}).get("uid")
            not in (None, uid)
        ),
        timeout=10,
        what="NetworkPolicy recreated",
    )
    assert recreated
    # Open the policy up by hand: the operator closes it again.
    control_plane.kubectl(
        "patch", "networkpolicy", "pynchy-drift", "-n", namespace, "--type=merge", "-p", '{"spec":{"ingress":[{}]}}'
    )
    wait_for(
        lambda: not get(control_plane, "networkpolicy", "pynchy-drift", namespace)["spec"].get("ingress"),
        timeout=10,
        what="ingress removed again",
    )
    control_plane.kubectl(
        "patch",
        "serviceaccount",
        "pynchy-drift",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"automountServiceAccountToken":true}',
    )
    wait_for(
        lambda: (
            get(control_plane, "serviceaccount", "pynchy-drift", namespace)["automountServiceAccountToken"] is False
        ),
        timeout=10,
        what="automount false again",
    )


def test_restart_and_resync_write_nothing(control_plane: ControlPlane, namespace: str, operator_env: None) -> None:
    from pynchy.operator.run import EmbeddedOperator

    with EmbeddedOperator() as op:
        for name in ("quiet-a", "quiet-b"):
            apply(control_plane, namespace, group(name))
        apply(control_plane, namespace, workspace("quiet-ws"))
        for kind, name in (("group", "quiet-a"), ("group", "quiet-b"), ("workspace", "quiet-ws")):
            wait_for(lambda k=kind, n=name: is_ready(control_plane, k, n, namespace), what=f"{kind} {name}")
        resync(op)  # nothing is left for the operator to do at this state

    window = AuditWindow(control_plane)
    with EmbeddedOperator() as op:
        synced(op, processed=3, what="initial sync")
        resync(op)  # a resync of everything, as the periodic timer does
    assert window.writes(OPERATOR_USER, namespace) == [], describe(window.writes(OPERATOR_USER, namespace))


def test_one_change_one_write_per_changed_object(control_plane: ControlPlane, namespace: str, operator: Any) -> None:
    apply(control_plane, namespace, group("edit"))
    wait_for(lambda: is_ready(control_plane, "group", "edit", namespace), what="Ready")
    resync(operator)
    window = AuditWindow(control_plane)
    control_plane.kubectl(
        "patch",
        "group",
        "edit",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"agent":{"directives":[{"inline":"Answer in French."}]}}}',
    )
    wait_for(lambda: is_ready(control_plane, "group", "edit", namespace), what="the edit reconciled")
    resync(operator)
    writes = describe(window.writes(OPERATOR_USER, namespace))
    assert sorted(writes) == sorted(
        [
            "patch configmaps/pynchy-edit-config -> 200",
            "patch groups/statusedit -> 200",  # observedGeneration and conditions follow the new generation
        ]
    ), writes


@pytest.mark.usefixtures("operator")
def test_deletion_policy_decides_what_survives(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, namespace, group("keep"))
    apply(control_plane, namespace, group("drop", state={"deletionPolicy": "Delete"}))
    apply(control_plane, namespace, workspace("ws-keep"))
    apply(control_plane, namespace, workspace("ws-drop", storage={"deletionPolicy": "Delete", "size": "2Gi"}))
    for kind, name in (("group", "keep"), ("group", "drop"), ("workspace", "ws-keep"), ("workspace", "ws-drop")):
        wait_for(lambda k=kind, n=name: is_ready(control_plane, k, n, namespace), what=f"{kind} {name}")
    assert (
        get(control_plane, "pvc", "pynchy-ws-ws-drop", namespace)["spec"]["resources"]["requests"]["storage"] == "2Gi"
    )
    control_plane.kubectl("delete", "group", "keep", "drop", "-n", namespace)
    control_plane.kubectl("delete", "workspace", "ws-keep", "ws-drop", "-n", namespace)

    def collected() -> bool:
        return all(
            get(control_plane, kind, name, namespace) is None
            for kind, name in (
                ("serviceaccount", "pynchy-keep"),
                ("configmap", "pynchy-keep-config"),
                ("networkpolicy", "pynchy-keep"),
                ("serviceaccount", "pynchy-drop"),
                ("pvc", "pynchy-drop-state"),
                ("pvc", "pynchy-ws-ws-drop"),
            )
        )

    wait_for(collected, timeout=30, what="garbage collection of children")
    assert get(control_plane, "pvc", "pynchy-keep-state", namespace) is not None
    assert get(control_plane, "pvc", "pynchy-ws-ws-keep", namespace) is not None

    # Re-creating the Group adopts its retained data.
    apply(control_plane, namespace, group("keep", state={"deletionPolicy": "Delete"}))
    wait_for(lambda: is_ready(control_plane, "group", "keep", namespace), what="Ready again")
    pvc = get(control_plane, "pvc", "pynchy-keep-state", namespace)
    assert pvc["metadata"]["ownerReferences"][0]["name"] == "keep"


@pytest.mark.usefixtures("operator")
def test_workspace_git_credentials_are_validated(control_plane: ControlPlane, namespace: str) -> None:
    apply(
        control_plane,
        namespace,
        workspace(
            "repo", git={"url": "https://git.example.com/me/notes.git", "credentialsSecretRef": {"name": "git-creds"}}
        ),
    )
    c = wait_for(lambda: condition(get(control_plane, "workspace", "repo", namespace), "Accepted"), what="Accepted")
    assert c["reason"] == "SecretNotFound"
    control_plane.kubectl(
        "create", "secret", "generic", "git-creds", "-n", namespace, "--from-literal=ssh-privatekey=x"
    )
    wait_for(
        lambda: (
            (condition(get(control_plane, "workspace", "repo", namespace), "Accepted") or {}).get("reason")
            == "SecretKeyNotFound"
        ),
        what="SecretKeyNotFound",
    )
    msg = condition(get(control_plane, "workspace", "repo", namespace), "Accepted")["message"]
    assert "needs the keys password, username for a https URL" in msg
    control_plane.kubectl("delete", "secret", "git-creds", "-n", namespace)
    control_plane.kubectl(
        "create",
        "secret",
        "generic",
        "git-creds",
        "-n",
        namespace,
        "--from-literal=username=me",
        "--from-literal=password=pw",
    )
    wait_for(lambda: is_ready(control_plane, "workspace", "repo", namespace), what="Ready")
    ws = get(control_plane, "workspace", "repo", namespace)
    assert ws["status"]["gitUrl"] == "https://git.example.com/me/notes.git"
    assert ws["status"]["gitBranch"] == "main"
    assert ws["status"]["claimName"] == "pynchy-ws-repo"


@pytest.mark.usefixtures("operator")
def test_group_waits_for_its_workspace(control_plane: ControlPlane, namespace: str) -> None:
    apply(control_plane, namespace, workspace("slow", storage={"storageClassName": "missing-class"}))
    apply(control_plane, namespace, group("waiter", workspaceRef={"name": "slow"}))

    def waiting() -> dict[str, Any] | None:
        c = condition(get(control_plane, "group", "waiter", namespace), "Ready")
        return c if c and c["reason"] == "WorkspaceNotReady" else None

    c = wait_for(waiting, what="WorkspaceNotReady")
    assert "StorageClass 'missing-class' does not exist" in c["message"]
    apply(  # cluster-scoped: the namespace is ignored
        control_plane,
        namespace,
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "missing-class"},
            "provisioner": "example.com/none",
            "volumeBindingMode": "WaitForFirstConsumer",
        },
    )
    # The StorageClass is not watched; the resync (or the next change) picks it up. Nudge the Workspace.
    control_plane.kubectl("annotate", "workspace", "slow", "-n", namespace, "nudge=1")
    wait_for(lambda: is_ready(control_plane, "group", "waiter", namespace), what="Group Ready")


def test_a_spec_the_models_reject_becomes_a_condition_not_a_crash(
    control_plane: ControlPlane, namespace: str, operator_env: None
) -> None:
    """An object stored under an older schema (here: edited in memory) gets Accepted=False InvalidSpec."""
    import asyncio

    from pynchy.kube.api import KubeApi, load_client
    from pynchy.operator.reconcile_group import reconcile_group
    from pynchy.operator.settings import OperatorSettings

    apply(control_plane, namespace, group("legacy"))
    raw = get(control_plane, "group", "legacy", namespace)
    assert raw is not None
    raw["spec"]["trigger"] = {"mode": "sometimes", "legacyField": True}

    async def run() -> None:
        api = KubeApi(load_client())
        try:
            result = await reconcile_group(api, raw, OperatorSettings())
        finally:
            api.close()
        assert [p.reason for p in result.problems] == ["InvalidSpec"]

    asyncio.run(run())
    c = condition(get(control_plane, "group", "legacy", namespace), "Accepted")
    assert c["status"] == "False"
    assert c["reason"] == "InvalidSpec"
    assert "spec.trigger.mode" in c["message"]
    assert "spec.trigger.legacyField" in c["message"]


def test_runs_under_plain_kopf_run(control_plane: ControlPlane, namespace: str, operator_kubeconfig: Any) -> None:
    """The documented alternative entry point: `kopf run -m pynchy.operator.handlers`."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "KUBECONFIG": str(operator_kubeconfig),
        "PYNCHY_LOG_FORMAT": "json",
        "PYNCHY_RUN_TOKEN_KEY": RUN_TOKEN_KEY,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", "-m", "pynchy.operator.handlers", "--all-namespaces", "--standalone"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        apply(control_plane, namespace, group("via-kopf"))
        wait_for(
            lambda: is_ready(control_plane, "group", "via-kopf", namespace) or proc.poll() is not None,
            what="Ready via kopf run",
        )
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        proc.wait(30)
