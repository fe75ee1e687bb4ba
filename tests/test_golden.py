"""Golden cases for the pure spec → manifests builders in pynchy.operator.build.

Each case is a data file in tests/golden/cases/ (tests/golden/README.md says how to add one); its
expected children sit next to it. Refresh with: UPDATE_GOLDEN=1 uv run pytest tests/test_golden.py
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import pynchy.operator.build
from pynchy.api.resources import Group, ScheduledTask, Workspace
from pynchy.operator import reconcile_group, reconcile_workspace, status
from pynchy.operator.build import agentrun, group, scheduledtask, workspace
from pynchy.operator.build.agentrun import RunInputs, agentrun_children, parse_time
from pynchy.operator.build.common import parse_timestamp
from pynchy.operator.build.group import GroupInputs, group_children
from pynchy.operator.build.scheduledtask import scheduled_run
from pynchy.operator.build.workspace import workspace_children
from pynchy.operator.checks import CheckResult
from pynchy.operator.settings import OperatorSettings

CASES = Path(__file__).parent / "golden" / "cases"
EXPECTED = ".children.yaml"  # <name>.yaml is a case, <name>.children.yaml what it renders
EXAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "examples"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
REFRESH = "UPDATE_GOLDEN=1 uv run pytest tests/test_golden.py"
GOLDEN_TOKEN_KEY = "golden-run-token-key-not-a-secret-0123456789abcd"


def _with_identity(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API server would add: namespace home, uid uid-<name>, generation 1 (unless already set)."""
    doc = dict(doc)
    identity = {"namespace": "home", "uid": f"uid-{doc['metadata']['name']}", "generation": 1}
    doc["metadata"] = {**identity, **doc["metadata"]}
    return doc


def _check(path: Path, objects: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(objects, sort_keys=True)
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"{path} did not exist and was written; review and commit it")
    assert text == path.read_text(), f"{path.name} changed; if intended, run {REFRESH}"


def _defaults() -> OperatorSettings:
    """Operator defaults, whatever PYNCHY_* variables the test process has."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PYNCHY_")}
    try:
        return OperatorSettings(run_token_key=GOLDEN_TOKEN_KEY)
    finally:
        os.environ.update(saved)


SETTINGS = _defaults()


# -- case files → builders ------------------------------------------------------------------------


def _merge(base: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386): mappings merge, anything else replaces, null removes."""
    if not isinstance(patch, dict):
        return patch
    out = dict(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _object(ref: dict[str, Any]) -> dict[str, Any]:
    """`{example: <file in manifests/examples>}` or `{inline: <manifest>}`, with the identity, then `patch`."""
    unknown = set(ref) - {"example", "inline", "patch"}
    assert not unknown, f"unknown keys {sorted(unknown)} in an object reference"
    assert ("example" in ref) != ("inline" in ref), "an object reference needs exactly one of example, inline"
    doc = yaml.safe_load((EXAMPLES / ref["example"]).read_text()) if "example" in ref else ref["inline"]
    merged: dict[str, Any] = _merge(_with_identity(doc), ref.get("patch") or {})
    return merged


def _inputs(case: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = case.get("inputs") or {}
    assert set(inputs) <= allowed, f"unknown inputs {sorted(set(inputs) - allowed)}; this builder takes {allowed}"
    return inputs


def _group(raw: dict[str, Any], case: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = _inputs(case, {"memory", "directives"})
    resolved = GroupInputs(memory=inputs.get("memory"), directives=tuple(inputs.get("directives") or ()))
    return group_children(Group.from_k8s(raw), raw, resolved, SETTINGS)


def _workspace(raw: dict[str, Any], case: dict[str, Any]) -> list[dict[str, Any]]:
    return workspace_children(Workspace.from_k8s(raw), raw)


def _agentrun(raw: dict[str, Any], case: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = _inputs(case, {"configHash", "workspace"})
    ws = Workspace.from_k8s(_object(inputs["workspace"])) if inputs.get("workspace") else None
    resolved = RunInputs(config_hash=inputs["configHash"], workspace=ws)
    g = Group.from_k8s(_object(case["group"]))
    return agentrun_children(raw, g, resolved, SETTINGS, parse_time(case["now"]))


def _scheduledtask(raw: dict[str, Any], case: dict[str, Any]) -> list[dict[str, Any]]:
    return [scheduled_run(ScheduledTask.from_k8s(raw), raw, parse_timestamp(case["scheduledTime"]))]


@dataclass(frozen=True)
class Builder:
    module: ModuleType  # the pynchy.operator.build module; exports OWNED_KINDS
    render: Callable[[dict[str, Any], dict[str, Any]], list[dict[str, Any]]]  # (object, case) → children
    keys: frozenset[str]  # the case keys besides `object`


BUILDERS = {
    "Group": Builder(group, _group, frozenset({"inputs"})),
    "Workspace": Builder(workspace, _workspace, frozenset()),
    "AgentRun": Builder(agentrun, _agentrun, frozenset({"group", "inputs", "now"})),
    "ScheduledTask": Builder(scheduledtask, _scheduledtask, frozenset({"scheduledTime"})),
}
CASE_FILES = sorted(p for p in CASES.glob("*.yaml") if not p.name.endswith(EXPECTED))


def _render(path: Path) -> tuple[Builder, list[dict[str, Any]]]:
    case = yaml.safe_load(path.read_text())
    raw = _object(case["object"])
    builder = BUILDERS.get(raw["kind"])
    assert builder, f"{path.name}: no builder for kind {raw['kind']}; known: {sorted(BUILDERS)}"
    unknown = set(case) - {"object"} - builder.keys
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)} for a {raw['kind']} case"
    return builder, builder.render(raw, case)


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    _check(path.with_name(path.stem + EXPECTED), _render(path)[1])


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_builder_owns_every_kind_it_emits(path: Path) -> None:
    """A kind missing from OWNED_KINDS would never be listed, so never pruned."""
    builder, children = _render(path)
    missing = {c["kind"] for c in children} - set(builder.module.OWNED_KINDS)
    assert not missing, f"{builder.module.__name__} emits {sorted(missing)}; add them to its OWNED_KINDS"


def test_every_builder_module_is_covered() -> None:
    """Each build module (besides common) exports OWNED_KINDS and has a golden case."""
    names = {m.name for m in pkgutil.iter_modules(pynchy.operator.build.__path__)} - {"common"}
    modules = {importlib.import_module(f"pynchy.operator.build.{n}") for n in names}
    assert modules == {b.module for b in BUILDERS.values()}, "add the new builder to BUILDERS"
    for module in modules:
        assert isinstance(module.OWNED_KINDS, tuple), module.__name__
        assert module.OWNED_KINDS, module.__name__
    kinds = {_object(yaml.safe_load(p.read_text())["object"])["kind"] for p in CASE_FILES}
    assert kinds == set(BUILDERS), f"kinds without a golden case: {sorted(set(BUILDERS) - kinds)}"


class SyncedError(Exception):
    """Stops the reconciler once it reached sync_children."""


@pytest.mark.parametrize(
    ("reconciler", "reconcile", "example", "builder"),
    [
        (reconcile_group, lambda raw: reconcile_group.reconcile_group(None, raw, SETTINGS), "group-local.yaml", group),
        (
            reconcile_workspace,
            lambda raw: reconcile_workspace.reconcile_workspace(None, raw),
            "workspace.yaml",
            workspace,
        ),
    ],
    ids=["Group", "Workspace"],
)
def test_pruning_lists_the_builders_owned_kinds(
    monkeypatch: pytest.MonkeyPatch,
    reconciler: ModuleType,
    reconcile: Callable[[dict[str, Any]], Any],
    example: str,
    builder: ModuleType,
) -> None:
    """The reconciler lists (and so prunes) children by the very tuple its builder exports."""
    seen: list[tuple[tuple[str, ...], list[dict[str, Any]]]] = []

    async def no_problems(*args: Any) -> CheckResult:
        return CheckResult()

    async def sync_children(api: Any, ns: str, sel: Any, kinds: tuple[str, ...], desired: Any, uid: str) -> Any:
        seen.append((kinds, desired))
        raise SyncedError

    check = "check_" + reconciler.__name__.rsplit("_", 1)[1]
    monkeypatch.setattr(reconciler, check, no_problems)
    monkeypatch.setattr(status, "sync_children", sync_children)
    with pytest.raises(SyncedError):
        asyncio.run(reconcile(_object({"example": example})))
    [(kinds, desired)] = seen
    assert kinds is builder.OWNED_KINDS
    assert {d["kind"] for d in desired} <= set(kinds)


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
