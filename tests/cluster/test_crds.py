"""The generated CRDs against a real kube-apiserver: installation, examples, rejections, explain."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from invalid_cases import INVALID_CASES, InvalidCase
from pynchy.api import KINDS, Kind
from pynchy.api.base import ApiModel
from pynchy.kube.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "manifests" / "examples").glob("*.yaml") if p.name != "kustomization.yaml")


def _get(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)


def test_crds_are_established_with_names_and_categories(control_plane: ControlPlane) -> None:
    for kind in KINDS:
        crd = _get(control_plane, "crd", kind.crd_name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        assert crd["status"]["acceptedNames"]["shortNames"] == list(kind.short_names)
    out = control_plane.kubectl("api-resources", "--api-group=pynchy.dev", "-o", "wide").stdout
    for kind in KINDS:
        line = next(ln for ln in out.splitlines() if ln.startswith(kind.plural + " "))
        assert "pynchy" in line.split()[-1], line  # CATEGORIES column
        assert kind.short_names[0] in line


def test_category_lists_every_kind(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests/examples/group-local.yaml"))
    out = control_plane.kubectl("get", "pynchy", "-n", namespace).stdout
    assert "group.pynchy.dev/" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted(control_plane: ControlPlane, namespace: str, path: Path) -> None:
    control_plane.kubectl("create", "--validate=strict", "-n", namespace, "-f", str(path))
    doc = yaml.safe_load(path.read_text())
    stored = _get(control_plane, doc["kind"].lower() + ".pynchy.dev", doc["metadata"]["name"], "-n", namespace)
    kind = next(k for k in KINDS if k.kind == doc["kind"])
    # What the server stored (with its defaults) is still valid for our models.
    kind.model.from_k8s(stored)


def test_server_applies_defaults(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests/examples/group-local.yaml"))
    doc = yaml.safe_load((REPO / "manifests/examples/group-local.yaml").read_text())
    spec = _get(control_plane, "group", doc["metadata"]["name"], "-n", namespace)["spec"]
    assert spec["trigger"]["mode"] == "mention"
    assert spec["allowedSenders"] == ["owner"]
    assert spec["agent"]["timeoutSeconds"] == 1800
    assert spec["agent"]["idleTimeoutSeconds"] == 600
    assert spec["state"] == {"size": "1Gi", "deletionPolicy": "Retain"}
    assert spec["admin"] is False


def _create(plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> tuple[int, str]:
    proc = plane.kubectl(
        "create", "--validate=strict", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    return proc.returncode, proc.stderr + proc.stdout


def test_there_are_enough_invalid_cases() -> None:
    assert len(INVALID_CASES) >= 20
    assert {c.manifest["kind"] for c in INVALID_CASES} == {k.kind for k in KINDS}


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.id for c in INVALID_CASES])
def test_invalid_resource_is_rejected_with_its_field(
    control_plane: ControlPlane, namespace: str, case: InvalidCase
) -> None:
    code, message = _create(control_plane, namespace, case.manifest)
    assert code != 0, f"the API server accepted {case.id}"
    for expected in case.expect:
        assert expected in message, f"{expected!r} not in:\n{message}"


def test_unknown_field_is_rejected_by_strict_validation(control_plane: ControlPlane, namespace: str) -> None:
    manifest = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "typo"},
        "spec": {"channels": [{"local": {"name": "typo"}}], "trigger": {"modee": "always"}},
    }
    code, message = _create(control_plane, namespace, manifest)
    assert code != 0
    assert 'unknown field "spec.trigger.modee"' in message


def test_an_invalid_group_gets_an_actionable_message(control_plane: ControlPlane, namespace: str) -> None:
    manifest = {
        "apiVersion": "pynchy.dev/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "family"},
        "spec": {"channels": [{"slack": {"channelId": "#family"}, "local": {"name": "family"}}]},
    }
    code, message = _create(control_plane, namespace, manifest)
    assert code != 0
    assert "spec.channels[0]" in message
    assert "set exactly one of slack or local" in message
    assert "spec.channels[0].slack.channelId" in message
    assert "not a channel name" in message


def test_agentrun_spec_is_immutable(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests/examples/agentrun.yaml"))
    name = yaml.safe_load((REPO / "manifests/examples/agentrun.yaml").read_text())["metadata"]["name"]
    proc = control_plane.kubectl(
        "patch",
        "agentrun",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"prompt":"something else"}}',
        check=False,
    )
    assert proc.returncode != 0
    assert "AgentRun spec is immutable" in proc.stderr


def test_workspace_access_mode_cannot_change(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests/examples/workspace.yaml"))
    name = yaml.safe_load((REPO / "manifests/examples/workspace.yaml").read_text())["metadata"]["name"]
    proc = control_plane.kubectl(
        "patch",
        "workspace",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"storage":{"accessMode":"ReadWriteMany"}}}',
        check=False,
    )
    assert proc.returncode != 0
    assert "spec.storage.accessMode" in proc.stderr
    assert "accessMode cannot change" in proc.stderr
    # Growing the volume is allowed.
    control_plane.kubectl(
        "patch", "workspace", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"storage":{"size":"50Gi"}}}'
    )


def test_status_is_a_subresource(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests/examples/group-local.yaml"))
    name = yaml.safe_load((REPO / "manifests/examples/group-local.yaml").read_text())["metadata"]["name"]
    before = _get(control_plane, "group", name, "-n", namespace)["metadata"]["generation"]
    status = {
        "status": {
            "observedGeneration": before,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Reconciled",
                    "message": "",
                    "lastTransitionTime": "2026-11-21T00:00:00Z",
                    "observedGeneration": before,
                }
            ],
        }
    }
    control_plane.kubectl(
        "patch", "group", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    obj = _get(control_plane, "group", name, "-n", namespace)
    assert obj["metadata"]["generation"] == before  # status writes do not bump generation
    table = control_plane.kubectl("get", "groups", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "WORKSPACE", "RUN"]
    assert table[0].split()[-1] == "AGE"
    assert table[1].split()[1] == "True"


EXAMPLE_OF = {
    "Group": "group-local.yaml",
    "Workspace": "workspace.yaml",
    "ScheduledTask": "scheduledtask-cron.yaml",
    "AgentRun": "agentrun.yaml",
}


def _time_fields(kind: Kind) -> list[str]:
    """Status fields shown in a column whose schema says date-time."""
    schema = kind.status.model_json_schema(by_alias=True)
    props = schema.get("properties", {})
    out = []
    for column in kind.columns:
        field = column.json_path.removeprefix(".status.")
        if column.json_path.startswith(".status.") and "." not in field and field in props:
            spec = props[field]
            options = [spec, *spec.get("anyOf", [])]
            if any(o.get("format") == "date-time" for o in options):
                out.append(field)
    return out


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_every_printer_column_reads_well_with_future_past_and_empty_times(
    control_plane: ControlPlane, namespace: str, kind: Kind
) -> None:
    """kubectl renders a `date` column as an age, and a future time as <invalid>: no column may."""
    example = REPO / "manifests/examples" / EXAMPLE_OF[kind.kind]
    control_plane.kubectl("apply", "-n", namespace, "-f", str(example))
    name = yaml.safe_load(example.read_text())["metadata"]["name"]
    fields = _time_fields(kind)
    future, past = "2999-01-01T09:00:00Z", "2020-01-01T09:00:00Z"
    for value in (future, past, None):
        if fields:
            patch = {"status": dict.fromkeys(fields, value)}
            control_plane.kubectl(
                "patch",
                kind.plural,
                name,
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps(patch),
            )
        table = control_plane.kubectl("get", kind.plural, name, "-n", namespace, "-o", "wide").stdout
        assert "<invalid>" not in table, (value, table)
        assert table.splitlines()[1].startswith(name), table
        for field in fields if value is not None else ():
            assert value in table, (field, table)  # the time itself, future or past


def _descriptions(model: type[ApiModel]) -> list[tuple[str, str]]:
    out = []
    for name, field in model.model_fields.items():
        out.append((field.alias or name, field.description or ""))
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_kubectl_explain_shows_descriptions(control_plane: ControlPlane, kind: Kind) -> None:
    top = _norm(control_plane.kubectl("explain", kind.singular).stdout)
    assert _norm(kind.description) in top
    spec = _norm(control_plane.kubectl("explain", f"{kind.singular}.spec").stdout)
    for field, description in _descriptions(kind.spec):
        assert field in spec
        assert _norm(description) in spec, f"{kind.kind}.spec.{field}: description missing from kubectl explain"
    status = _norm(control_plane.kubectl("explain", f"{kind.singular}.status").stdout)
    for field, description in _descriptions(kind.status):
        assert _norm(description) in status, f"{kind.kind}.status.{field}"
