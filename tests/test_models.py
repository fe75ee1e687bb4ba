"""Offline tests of the pynchy.dev API models: examples, strictness, documentation, rejections.

No cluster is needed. The CEL rules of the CRDs are checked by the cluster tests; here only the
part of validation the pydantic models do themselves is asserted.
"""

from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from invalid_cases import INVALID_CASES, InvalidCase
from pynchy.api import KINDS, KINDS_BY_NAME
from pynchy.api.base import ApiModel
from pynchy.api.validation import validate_document

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (REPO / "manifests" / "examples").glob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected exactly one object, found {len(docs)}"
    return docs[0]


def _assert_subset(written: Any, rendered: Any, path: str = "spec") -> None:
    """Every value the user wrote survives in the rendered form, unchanged."""
    if isinstance(written, dict):
        assert isinstance(rendered, dict), f"{path}: became {rendered!r}"
        for key, value in written.items():
            assert key in rendered, f"{path}.{key}: dropped by the round trip"
            _assert_subset(value, rendered[key], f"{path}.{key}")
    elif isinstance(written, list):
        assert isinstance(rendered, list), f"{path}: became {rendered!r}"
        assert len(written) == len(rendered), f"{path}: length changed"
        for index, (w, r) in enumerate(zip(written, rendered, strict=True)):
            _assert_subset(w, r, f"{path}[{index}]")
    else:
        assert written == rendered, f"{path}: {written!r} became {rendered!r}"


# --- examples -----------------------------------------------------------------------------------


def test_examples_exist_for_every_kind() -> None:
    assert EXAMPLES, "manifests/examples/ holds no manifests"
    kinds = {_load(path)["kind"] for path in EXAMPLES}
    assert kinds == set(KINDS_BY_NAME)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path: Path) -> None:
    doc = _load(path)
    assert doc["apiVersion"] == "pynchy.dev/v1alpha1"
    assert "namespace" not in doc["metadata"], "examples leave the namespace to kubectl"
    assert validate_document(doc) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_round_trips(path: Path) -> None:
    doc = _load(path)
    # Values must be JSON as the API server would send them (quoted timestamps, no YAML dates).
    json.dumps(doc)
    obj = KINDS_BY_NAME[doc["kind"]].model.from_k8s(doc)
    rendered = obj.to_k8s()
    assert rendered["apiVersion"] == doc["apiVersion"]
    assert rendered["kind"] == doc["kind"]
    assert rendered["metadata"]["name"] == doc["metadata"]["name"]
    _assert_subset(doc["spec"], rendered["spec"])
    # The rendered form is itself valid and stable.
    again = KINDS_BY_NAME[doc["kind"]].model.from_k8s(rendered).to_k8s()
    assert again == rendered


# --- strictness ---------------------------------------------------------------------------------


def _group(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "strict"},
        "spec": {"channels": [{"local": {"name": "strict"}}], **spec},
    }


def test_valid_baseline_is_accepted() -> None:
    assert validate_document(_group()) == []


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"trigger": {"modee": "always"}}, "spec.trigger.modee"),
        ({"allowedSender": ["owner"]}, "spec.allowedSender"),
        ({"agent": {"timeout": 60}}, "spec.agent.timeout"),
        ({"network": {"egress": [{"cidr": "0.0.0.0/0", "port": 443}]}}, "spec.network.egress[0].port"),
    ],
)
def test_unknown_field_is_rejected_with_its_path(spec: dict[str, Any], path: str) -> None:
    problems = validate_document(_group(**spec))
    assert problems, f"{path} was accepted"
    assert any(p.startswith(f"{path}:") for p in problems), problems


def test_unknown_top_level_spec_field_in_other_kinds() -> None:
    doc = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "ScheduledTask",
        "metadata": {"name": "t"},
        "spec": {"groupRef": {"name": "g"}, "prompt": "hi", "schedule": {"cron": "0 9 * * *"}, "timezone": "UTC"},
    }
    problems = validate_document(doc)
    assert any(p.startswith("spec.timezone:") for p in problems), problems


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"agent": {"timeoutSeconds": "100"}}, "spec.agent.timeoutSeconds"),
        ({"agent": {"idleTimeoutSeconds": 600.0}}, "spec.agent.idleTimeoutSeconds"),
        ({"agent": {"maxTurns": True}}, "spec.agent.maxTurns"),
        ({"admin": "true"}, "spec.admin"),
        ({"admin": 1}, "spec.admin"),
        ({"trigger": {"aliases": "pynchy"}}, "spec.trigger.aliases"),
        ({"resources": {"limits": {"cpu": 2}}}, "spec.resources.limits.cpu"),
    ],
)
def test_wrong_type_is_not_coerced(spec: dict[str, Any], path: str) -> None:
    problems = validate_document(_group(**spec))
    assert any(p.startswith(f"{path}:") for p in problems), problems


def test_strict_models_keep_types() -> None:
    spec = KINDS_BY_NAME["Group"].model.from_k8s(_group(agent={"timeoutSeconds": 120})).spec
    assert spec.agent.timeout_seconds == 120
    assert isinstance(spec.agent.timeout_seconds, int)


def test_foreign_objects_are_ignored_and_unknown_versions_reported() -> None:
    assert validate_document({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}) == []
    bad_version = _group()
    bad_version["apiVersion"] = "pynchy.dev/v1"
    assert validate_document(bad_version)[0].startswith("apiVersion:")
    bad_kind = _group()
    bad_kind["kind"] = "Channel"
    assert validate_document(bad_kind)[0].startswith("kind:")


# --- documentation ------------------------------------------------------------------------------


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """ApiModel classes inside an annotation such as list[X] | None or Annotated[X, ...]."""
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_nested_models(arg))
    return found


def _walk(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    if model in seen:
        return []
    seen.add(model)
    missing = []
    for name, info in model.model_fields.items():
        if not (info.description or "").strip():
            missing.append(f"{model.__name__}.{name}")
        for nested in _nested_models(info.annotation):
            missing.extend(_walk(nested, seen))
    return missing


def _spec_and_status_models() -> list[type[ApiModel]]:
    return [m for kind in KINDS for m in (kind.spec, kind.status)]


@pytest.mark.parametrize("model", _spec_and_status_models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model: type[ApiModel]) -> None:
    assert _walk(model, set()) == []


def test_description_walk_reaches_nested_models() -> None:
    seen: set[type[BaseModel]] = set()
    _walk(KINDS_BY_NAME["Group"].spec, seen)
    names = {m.__name__ for m in seen}
    # Reached through list[...], X | None and plain nesting.
    assert {"ChannelBinding", "SlackChannel", "TextSource", "EgressPort", "ResourceList", "StateStorage"} <= names


def test_nested_models_handles_union_syntax() -> None:
    from pynchy.api.group import SlackChannel

    assert _nested_models(SlackChannel | None) == [SlackChannel]
    assert _nested_models(list[SlackChannel]) == [SlackChannel]
    assert isinstance(SlackChannel | None, types.UnionType)


# --- invalid cases ------------------------------------------------------------------------------

# Cases whose problem is a type, enum, required field, range, length or pattern: the models check
# these as the OpenAPI schema does. CEL-only rules (exactly-one-of, cron shape, CIDRs, senders,
# mount paths, metadata.name) are checked by the API server alone and are not listed here.
PYDANTIC_REJECTS = {
    "group-missing-channels",
    "task-missing-prompt",
    "task-missing-schedule",
    "run-missing-groupref",
    "group-empty-channels",
    "group-bad-trigger-mode",
    "task-bad-concurrency-policy",
    "task-bad-context-mode",
    "run-bad-context-mode",
    "workspace-bad-deletion-policy",
    "workspace-bad-access-mode",
    "run-bad-trigger-kind",
    "task-once-not-a-time",
    "task-bad-timezone",
    "task-negative-history-limit",
    "group-local-channel-bad-name",
    "group-too-many-channels",
    "group-bad-trigger-alias",
    "group-admin-string",
    "group-timeout-string",
    "group-idle-timeout-too-small",
    "group-max-turns-zero",
    "task-suspend-string",
    "task-prompt-too-long",
    "task-prompt-empty",
    "run-prompt-too-long",
    "run-ttl-string",
    "workspace-bad-size",
    "group-bad-cpu-quantity",
    "group-workspace-ref-bad-name",
    "group-bad-egress-port",
    "group-credential-missing-secret",
    "group-tool-limits-negative-messages",
    "group-tool-limits-zero-interval",
    "group-tool-limits-too-many-tasks",
    "group-tool-limits-messages-string",
    "group-tool-policy-bad-action",
    "group-tool-policy-bad-default",
    "group-tool-policy-no-tools",
    "group-tool-policy-rule-without-action",
    "group-tool-policy-pattern-with-space",
    "group-tool-policy-empty-server",
    "group-tool-policy-two-slashes",
    "group-tool-policy-timeout-too-short",
    "group-tool-policy-timeout-too-long",
    "group-tool-policy-no-approvers",
    "group-tool-policy-too-many-rules",
}

CASES_BY_ID = {case.id: case for case in INVALID_CASES}


def _local_path(field_path: str) -> str:
    """The models report paths as the API server does: 'spec.channels[0].local.name'."""
    return field_path


def test_invalid_cases_are_well_formed() -> None:
    assert len(INVALID_CASES) >= 26
    assert len(CASES_BY_ID) == len(INVALID_CASES), "duplicate case ids"
    assert {case.manifest["kind"] for case in INVALID_CASES} == set(KINDS_BY_NAME)
    assert set(CASES_BY_ID) >= PYDANTIC_REJECTS
    for case in INVALID_CASES:
        assert isinstance(case, InvalidCase)
        assert case.expect, case.id
        assert all(isinstance(e, str) and e for e in case.expect), case.id
        manifest = case.manifest
        assert manifest["apiVersion"] == "pynchy.dev/v1alpha1", case.id
        assert manifest["metadata"]["name"], case.id
        assert "namespace" not in manifest["metadata"], case.id
        assert isinstance(manifest["spec"], dict), case.id
        json.dumps(manifest)


def test_invalid_cases_do_not_share_state() -> None:
    # Builders must hand out independent dicts: a test that mutates one case cannot break another.
    specs = [id(case.manifest["spec"]) for case in INVALID_CASES]
    assert len(set(specs)) == len(specs)


@pytest.mark.parametrize("case_id", sorted(PYDANTIC_REJECTS))
def test_models_reject_schema_level_invalid_case(case_id: str) -> None:
    case = CASES_BY_ID[case_id]
    problems = validate_document(copy.deepcopy(case.manifest))
    assert problems, f"{case_id}: the models accepted it"
    # The first expectation is the field path; the models report it too (dotted list indices).
    field_path = case.expect[0]
    assert field_path.startswith("spec."), case_id
    assert any(p.startswith(_local_path(field_path)) for p in problems), problems


def test_snake_case_keys_are_not_wire_names() -> None:
    problems = validate_document(_group(allowed_senders=["*"]))
    assert any(p.startswith("spec.allowed_senders:") for p in problems), problems


def test_names_are_checked_offline_like_the_server_does() -> None:
    doc = _group()
    doc["metadata"]["name"] = "x" * 41
    assert any("at most 40 characters" in p for p in validate_document(doc))
