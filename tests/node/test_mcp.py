"""A Group's MCP server on the real node: the agent pod calls the gateway's MCP proxy (`/mcp/<server>`),
the gateway pod calls the server (through its own egress NetworkPolicy, enforced by kube-router) with
the headers of the server's Secret added, and a call the tool policy asks about waits until the
person in `pynchy chat` approves it."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cluster.helpers import wait_for
from doubles.anthropic import tool_use
from mcpserver import NotesServer
from node.helpers import GROUP, SYSTEM, Install, in_node_network

NOTES_KEY = "notes-api-key-that-must-never-reach-a-pod"
# The gateway's egress NetworkPolicy (manifests/base/networkpolicies.yaml) allows DNS and TCP 443 and
# 6443 only. On the host's link address the scripted model has 443 and the API server 6443, so the
# server listens on the node's own address (its InternalIP), port 443, as a remote HTTPS server would.
NOTES_PORT = 443
# Runs in the agent's Bash tool: "open", or "shut <why>" when the connection does not get through.
CONNECT = """python3 - <<'EOF'
import socket
try:
    socket.create_connection(({host!r}, {port}), timeout=5).close()
    print("open")
except OSError as exc:
    print("shut", type(exc).__name__)
EOF"""


@pytest.fixture
def notes(installed: Install) -> Iterator[NotesServer]:
    assert installed.node.net is not None
    host = installed.node.net.link_node_ip
    server = in_node_network(installed.node, NotesServer("http", host=host, port=NOTES_PORT).start)
    yield server
    server.stop()


def programmed(installed: Install, pod_ip: str) -> bool:
    """kube-router has programmed the pod's firewall chain (a new pod is open until it has)."""
    out = subprocess.run(installed.node.in_netns(["iptables-save", "-t", "filter"]), capture_output=True, text=True)
    return pod_ip in out.stdout


def audit(installed: Install, namespace: str, group: str) -> list[tuple[str, bool, dict[str, Any]]]:
    """The gateway's audit rows of a Group, read from its SQLite file on the node's disk."""
    db = installed.claim_path(SYSTEM, "pynchy-gateway-data") / "gateway.db"
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        rows = conn.execute(
            'SELECT action, allowed, detail FROM audit WHERE namespace = ? AND "group" = ? ORDER BY id',
            (namespace, group),
        ).fetchall()
    return [(a, bool(allowed), json.loads(d) if d.startswith("{") else {}) for a, allowed, d in rows]


def test_an_mcp_tool_under_ask_runs_once_approved_in_pynchy_chat_and_its_secret_stays_out_of_the_pod(
    installed: Install, node_namespace: str, notes: NotesServer, tmp_path: Path
) -> None:
    ns = node_namespace
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "notes-creds"},
              "stringData": {"X-Api-Key": NOTES_KEY}}  # fmt: skip
    installed.apply(ns, json.dumps(secret))
    agent = {
        "mcpServers": [{"name": "notes", "url": notes.url, "headersSecretRef": {"name": "notes-creds"}}],
        "toolPolicy": {"rules": [{"tools": ["notes/add_note"], "action": "ask"}]},
    }
    installed.ready_group(ns, GROUP.format(name="scribe", extra=f"agent: {json.dumps(agent)}"), "scribe")
    model = installed.model
    model.on_prompt("note the oat milk", tool_use("mcp__notes__add_note", text="buy oat milk"))
    model.after_tool("mcp__notes__add_note", "Noted: buy oat milk.")

    # One interactive session, piped: the message, then `y` to the `Approve? [y/N]` prompt.
    code, out, err = installed.chat(ns, "scribe", "please note the oat milk", tmp_path, stdin="y\n")
    assert code == 0, err
    assert "approval needed" in err, err
    assert "notes/add_note" in err, err
    assert "Approved by owner" in err, err
    assert "Noted: buy oat milk." in out, f"{out}\n{err}"

    # The call reached the server once approved, through the gateway, which added the Secret's header.
    assert notes.notes == ["buy oat milk"]
    [seen] = [r for q in model.main_requests for r in q.tool_results() if r.name == "mcp__notes__add_note"]
    assert "noted: buy oat milk" in seen.text, seen
    assert not seen.is_error, seen
    assert NOTES_KEY in notes.seen_header("x-api-key")
    assert notes.seen_header("authorization") == []  # the run token stayed with the gateway

    # The key is nowhere in the agent pod: not in its spec, not in what the operator gave it, not in
    # the environment of its processes.
    [pod] = installed.pods(ns)
    assert pod["status"]["phase"] == "Running", pod["status"]  # idle, until its idle timeout
    dumped = json.dumps(pod)
    assert NOTES_KEY not in dumped
    assert "notes-creds" not in dumped  # no env, envFrom or volume refers to the Secret
    encoded = base64.b64encode(NOTES_KEY.encode()).decode()
    given = json.loads(installed.kubectl("get", "configmaps,secrets", "-n", ns, "-o", "json").stdout)["items"]
    leaked = [
        o["metadata"]["name"]
        for o in given
        if o["metadata"]["name"] != "notes-creds" and (NOTES_KEY in json.dumps(o) or encoded in json.dumps(o))
    ]
    assert leaked == [], f"the key is in {leaked}"
    pids = installed.container_pids(ns, pod["metadata"]["name"])
    assert pids, "no processes found for the agent container"
    for pid in pids:
        assert NOTES_KEY.encode() not in Path(f"/proc/{pid}/environ").read_bytes()

    # Only the gateway reaches the server: from the agent pod (its Group's NetworkPolicy allows the
    # gateway and DNS) a connection does not get through, once kube-router has programmed the pod.
    pod_ip = pod["status"]["podIP"]
    wait_for(lambda: programmed(installed, pod_ip), timeout=30, what="the agent pod's NetworkPolicy programmed")
    connect = CONNECT.format(host=notes.host, port=notes.port)
    model.on_prompt("call the notes server yourself", tool_use("Bash", command=connect))
    model.after_tool("Bash", "Tried.")
    code, out, err = installed.chat(ns, "scribe", "call the notes server yourself", tmp_path)
    assert (code, out) == (0, "Tried.\n"), err
    [tried] = [r for r in model.main_requests[-1].tool_results() if r.name == "Bash"]
    assert tried.text.strip().startswith("shut "), tried.text  # refused or timed out: python3 ran, got nowhere
    assert installed.pods(ns)[0]["metadata"]["name"] == pod["metadata"]["name"]  # the same pod, still

    # The audit has the request, the owner's approval and the call the gateway forwarded.
    def audited() -> list[tuple[str, bool, dict[str, Any]]]:
        rows = audit(installed, ns, "scribe")
        return rows if any(a == "mcp:notes/add_note" for a, _, _ in rows) else []

    rows = wait_for(audited, what="the MCP call audited")
    decisions = [(d.get("decision"), d.get("decidedBy")) for a, _, d in rows if a == "approval:notes/add_note"]
    assert decisions == [("ask", None), ("approved", "owner")], rows
    [call] = [(allowed, d) for a, allowed, d in rows if a == "mcp:notes/add_note"]
    assert call[0] is True, rows
    assert (call[1]["decision"], call[1]["status"]) == ("allow", 200), rows
