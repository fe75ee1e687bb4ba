"""A conversation on the real node: `pynchy chat` on the host → port-forward → the gateway pod → an
AgentRun → an agent pod from the built image → the real Claude Code CLI → the model proxy → the
scripted model; the session on the Group's volume outlives the pod."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.helpers import wait_for
from cluster.status_helpers import documented_apiserver_policy, pynchy_status, reader_kubeconfig, status_json
from doubles.anthropic import text, tool_use, write_in_cwd
from node.helpers import MODEL_KEY, Install

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"

SCRIBE = """
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {name: scribe}
spec:
  channels: [{local: {name: scribe}}]
  workspaceRef: {name: notes}
  agent: {idleTimeoutSeconds: 30}
"""


def test_the_example_group_answers_from_a_pod_of_the_built_image(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.ready_group(ns, (EXAMPLES / "group-local.yaml").read_text(), "demo")
    model = installed.model
    model.on_prompt("who are you", tool_use("Bash", command="id -u; id -g; touch /usr/local/probe; echo rc=$?"))
    model.after_tool("Bash", "I am the demo agent.")

    code, out, err = installed.chat(ns, "demo", "who are you?", tmp_path)
    assert code == 0, err
    assert out == "I am the demo agent.\n"

    [run] = installed.runs(ns)
    [pod] = installed.pods(ns)
    assert pod["metadata"]["name"] == run["metadata"]["name"]
    assert pod["spec"]["nodeName"] == installed.node.name
    assert pod["spec"]["containers"][0]["image"] == installed.agent_image
    [status] = pod["status"]["containerStatuses"]
    assert status["imageID"], status  # the image containerd ran (imported, never pulled)
    [result] = [r for r in model.main_requests[-1].tool_results() if r.name == "Bash"]
    lines = result.text.split()
    assert lines[:2] == ["1000", "1000"], result.text
    assert "Read-only file system" in result.text, result.text
    assert "rc=1" in result.text, result.text
    # The model proxy swapped the run token for the real key on the way out.
    assert {r.header("x-api-key") for r in model.message_requests[-2:]} == {MODEL_KEY}


def test_files_land_on_the_workspace_volume_and_the_session_survives_the_pod(
    installed: Install, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.apply(ns, (EXAMPLES / "workspace.yaml").read_text())
    installed.ready_group(ns, SCRIBE, "scribe")
    model = installed.model
    model.on_prompt("write the notes", write_in_cwd("notes.md", "# Notes\nbuy oat milk\n"))
    model.after_tool("Write", "I wrote notes.md.")

    code, out, err = installed.chat(ns, "scribe", "please write the notes", tmp_path)
    assert code == 0, err
    assert out == "I wrote notes.md.\n"
    workspace = installed.claim_path(ns, "pynchy-ws-notes")
    written = workspace / "notes.md"
    assert written.read_text() == "# Notes\nbuy oat milk\n"
    assert written.stat().st_uid == 1000  # the agent's uid, on the node's disk

    [first] = installed.runs(ns)
    name = first["metadata"]["name"]
    session = wait_for(lambda: installed.run_status(ns, name).get("sessionId"), what="the run's session id")

    # A follow-up goes to the same pod and continues the conversation.
    model.on_prompt("what is on the list", text("Oat milk."))
    code, out, err = installed.chat(ns, "scribe", "what is on the list?", tmp_path)
    assert (code, out) == (0, "Oat milk.\n"), err
    assert len(installed.runs(ns)) == 1
    assert "please write the notes" in json.dumps(model.main_requests[-1].body["messages"])

    # Idle: the runner exits, the pod ends, the run succeeds.
    wait_for(lambda: installed.run_status(ns, name).get("phase") == "Succeeded", timeout=120, what="idle exit")
    pod = installed.get("pod", name, ns)
    assert pod is None or pod["status"]["phase"] == "Succeeded"

    # The next message starts a new pod that resumes the session from the Group's volume.
    model.on_prompt("anything else", text("Nothing else on the list."))
    code, out, err = installed.chat(ns, "scribe", "anything else?", tmp_path)
    assert (code, out) == (0, "Nothing else on the list.\n"), err
    second = installed.runs(ns)[-1]["metadata"]["name"]
    assert second != name
    history = json.dumps(model.main_requests[-1].body["messages"])
    assert "please write the notes" in history
    assert "what is on the list" in history
    wait_for(lambda: installed.run_status(ns, second).get("sessionId") == session, what="the same session")


def test_pynchy_status_reaches_the_gateway_pod_through_the_api_servers_service_proxy(
    installed: Install, node_namespace: str
) -> None:
    ns = node_namespace
    installed.ready_group(ns, (EXAMPLES / "group-local.yaml").read_text(), "demo")
    # This node's API server runs on the host, outside the node's network namespace: it reaches pods
    # from the link address, which pynchy-system's NetworkPolicies do not let in (kube-router accepts
    # only a pod's own node). docs/install.md's policy for an API server elsewhere lets it in.
    policy = documented_apiserver_policy(f"{installed.node.link_host_ip}/32")
    installed.kubectl("apply", "-f", "-", input=policy)
    try:
        reader = reader_kubeconfig(installed.plane)  # the documented roles: services/proxy on :metrics only
        seen: list[tuple[int, dict[str, object]]] = []

        def healthy() -> bool:  # kube-router applies the new policy within seconds
            seen.append(status_json("--kubeconfig", str(reader), "-n", ns))
            return seen[-1][0] == 0

        try:
            wait_for(healthy, timeout=90, interval=2.0, what="pynchy status healthy through the service proxy")
        except AssertionError:
            raise AssertionError(f"last report: {json.dumps(seen[-1][1], indent=2)}") from None
        report = seen[-1][1]
        gateway = report["gateway"]
        assert isinstance(gateway, dict)
        assert gateway["via"] == "the API server's service proxy (pynchy-system/pynchy-gateway:metrics)"
        assert gateway["error"] is None
        health = gateway["health"]
        assert health["store"]["ok"] is True  # the gateway's SQLite file on its PVC
        assert (health["queue_depth"], health["running_turns"], health["pending_approvals"]) == (0, 0, 0)
        groups = report["groups"]
        assert isinstance(groups, list)
        assert [(g["name"], g["ready"], g["channels"]) for g in groups] == [("demo", "True", "local:demo")]

        proc = pynchy_status("--kubeconfig", str(reader), "-n", ns)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (
            "Gateway (the API server's service proxy (pynchy-system/pynchy-gateway:metrics)): store ok (" in proc.stdout
        )
        assert proc.stdout.splitlines()[-1] == "Healthy."
    finally:
        installed.kubectl("delete", "networkpolicy", "pynchy-status-from-apiserver", "-n", "pynchy-system", check=False)
