"""Golden files for the pure spec → manifests functions. Refresh with: UPDATE_GOLDEN=1 ./scripts/test -k golden"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pynchy.api.resources import Group, Workspace
from pynchy.operator.build.agentrun import RunInputs, agentrun_children, parse_time
from pynchy.operator.build.group import GroupInputs, group_children
from pynchy.operator.build.workspace import workspace_children
from pynchy.operator.settings import OperatorSettings

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "examples"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN_TOKEN_KEY = "golden-run-token-key-not-a-secret-0123456789abcd"


def _with_identity(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["metadata"] = {**doc["metadata"], "namespace": "home", "uid": f"uid-{doc['metadata']['name']}", "generation": 1}
    return doc


def _check(name: str, objects: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=True)
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"{path} did not exist and was written; review and commit it")
    assert text == path.read_text(), f"{name} changed; if intended, run UPDATE_GOLDEN=1 ./scripts/test -k golden"


def _defaults() -> OperatorSettings:
    """Operator defaults, whatever PYNCHY_* variables the test process has."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PYNCHY_")}
    try:
        return OperatorSettings(run_token_key=GOLDEN_TOKEN_KEY)
    finally:
        os.environ.update(saved)


SETTINGS = _defaults()


@pytest.mark.parametrize("example", ["group-local.yaml", "group-slack.yaml", "group-admin.yaml"])
def test_group_children_golden(example: str) -> None:
    raw = _with_identity(yaml.safe_load((EXAMPLES / example).read_text()))
    g = Group.from_k8s(raw)
    memory = g.spec.agent.memory.inline if g.spec.agent.memory else None
    directives = tuple(
        d.inline or f"<text of {d.config_map_key_ref.name}/{d.config_map_key_ref.key}>"
        for d in g.spec.agent.directives
        if d.inline or d.config_map_key_ref
    )
    children = group_children(g, raw, GroupInputs(memory=memory, directives=directives), SETTINGS)
    _check(example.replace(".yaml", ".children.yaml"), children)


@pytest.mark.parametrize("example", ["workspace.yaml", "workspace-git.yaml"])
def test_workspace_children_golden(example: str) -> None:
    raw = _with_identity(yaml.safe_load((EXAMPLES / example).read_text()))
    _check(example.replace(".yaml", ".children.yaml"), workspace_children(Workspace.from_k8s(raw), raw))


def test_retain_has_no_owner_and_delete_has_one() -> None:
    raw = _with_identity(yaml.safe_load((EXAMPLES / "group-local.yaml").read_text()))
    keep = group_children(Group.from_k8s(raw), raw, GroupInputs(), SETTINGS)[1]
    assert keep["metadata"]["ownerReferences"] == []
    raw["spec"] = {**raw["spec"], "state": {"deletionPolicy": "Delete"}}
    drop = group_children(Group.from_k8s(raw), raw, GroupInputs(), SETTINGS)[1]
    assert drop["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"


def test_children_are_deterministic() -> None:
    raw = _with_identity(yaml.safe_load((EXAMPLES / "group-slack.yaml").read_text()))
    g = Group.from_k8s(raw)
    assert group_children(g, raw, GroupInputs(), SETTINGS) == group_children(g, raw, GroupInputs(), SETTINGS)


# -- AgentRun → token Secret + Pod ---------------------------------------------------------------

RUN_CREATED = "2026-01-02T09:00:00Z"
# group-slack.yaml plus everything else a pod can carry: MCP header Secrets, extra mounts, a RuntimeClass.
FULL_GROUP_EXTRAS: dict[str, Any] = {
    "runtimeClassName": "gvisor",
    "mounts": [
        {
            "name": "notes",
            "mountPath": "/mnt/notes",
            "readOnly": False,
            "persistentVolumeClaim": {"claimName": "notes"},
        },
        {"name": "rules", "mountPath": "/etc/house-rules", "configMap": {"name": "house-rules"}},
        {"name": "photos", "mountPath": "/mnt/photos", "hostPath": {"path": "/srv/pynchy/photos"}},
    ],
}
FULL_MCP = [
    {"name": "linear", "url": "https://mcp.linear.app/mcp", "headersSecretRef": {"name": "linear-mcp"}},
    {"name": "docs_search", "transport": "sse", "url": "https://docs.example.com/sse"},
    {"name": "github_tools", "url": "https://api.githubcopilot.com/mcp/", "headersSecretRef": {"name": "gh-mcp"}},
]


def _run(group: str) -> dict[str, Any]:
    raw = _with_identity(yaml.safe_load((EXAMPLES / "agentrun.yaml").read_text()))
    raw["metadata"]["creationTimestamp"] = RUN_CREATED
    raw["spec"]["groupRef"] = {"name": group}
    return raw


def _full_group() -> tuple[Group, Workspace]:
    raw = _with_identity(yaml.safe_load((EXAMPLES / "group-slack.yaml").read_text()))
    raw["spec"] = {**raw["spec"], **FULL_GROUP_EXTRAS}
    raw["spec"]["agent"] = {**raw["spec"]["agent"], "mcpServers": FULL_MCP}
    ws = Workspace.from_k8s(_with_identity(yaml.safe_load((EXAMPLES / "workspace-git.yaml").read_text())))
    return Group.from_k8s(raw), ws


def test_agentrun_minimal_golden() -> None:
    g = Group.from_k8s(_with_identity(yaml.safe_load((EXAMPLES / "group-local.yaml").read_text())))
    run = _run("demo")
    children = agentrun_children(run, g, RunInputs(config_hash="eef8bfed6bf91f20"), SETTINGS, parse_time(RUN_CREATED))
    _check("agentrun-minimal.children.yaml", children)


def test_agentrun_full_golden() -> None:
    g, ws = _full_group()
    run = _run("eng")
    inputs = RunInputs(config_hash="0123456789abcdef", workspace=ws)
    _check("agentrun-full.children.yaml", agentrun_children(run, g, inputs, SETTINGS, parse_time(RUN_CREATED)))
