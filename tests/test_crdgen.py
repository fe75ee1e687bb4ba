"""crds/ is exactly what the generator produces, and the schemas are structural and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pynchy.api import KINDS
from pynchy.crdgen import build_crd, render_crds
from pynchy.crdgen.schema import structural_schema

REPO = Path(__file__).resolve().parents[1]


def test_crds_directory_matches_the_models() -> None:
    rendered = render_crds()
    on_disk = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert set(on_disk) == set(rendered), "crds/ has missing or extra files; run `uv run pynchy crds`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"crds/{name} is out of date; run `uv run pynchy crds`"


def test_pynchy_crds_regenerates_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    subprocess.run([sys.executable, "-m", "pynchy", "crds", "--out", str(out)], check=True, capture_output=True)
    for path in (REPO / "crds").glob("*.yaml"):
        assert (out / path.name).read_bytes() == path.read_bytes()
    check = subprocess.run(
        [sys.executable, "-m", "pynchy", "crds", "--check", "--out", str(out)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    (out / "groups.pynchy.dev.yaml").write_text("# hand edit\n")
    check = subprocess.run(
        [sys.executable, "-m", "pynchy", "crds", "--check", "--out", str(out)], capture_output=True, text=True
    )
    assert check.returncode == 1
    assert "groups.pynchy.dev.yaml" in check.stderr


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_schema_is_structural_bounded_and_described(kind: Any) -> None:
    for part in (kind.spec, kind.status):
        for path, node in _walk(structural_schema(part), part.__name__):
            assert "type" in node, f"{path} has no type"
            assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & set(node), f"{path} is not structural"
            if path != part.__name__ and not path.endswith("[]"):
                assert node.get("description"), f"{path} has no description"
            if node["type"] == "string" and "enum" not in node and "format" not in node:
                assert "maxLength" in node, f"{path} is an unbounded string (CEL cost, etcd size)"
            if node["type"] == "array":
                assert "maxItems" in node, f"{path} is an unbounded list"


def test_crd_has_status_subresource_columns_and_category() -> None:
    for kind in KINDS:
        crd = build_crd(kind)
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        names = [c["name"] for c in version["additionalPrinterColumns"]]
        assert names[-1] == "Age"
        assert crd["spec"]["names"]["categories"] == ["pynchy"]
        assert crd["spec"]["names"]["shortNames"]


def test_generated_yaml_has_no_anchors() -> None:
    for text in render_crds().values():
        assert "&id" not in text
        assert "*id" not in text
        yaml.safe_load(text)
