"""Repository rules that keep the project importable and the agent image small."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_operator_folder_is_not_a_package() -> None:
    # A top-level package named `operator` would shadow Python's standard library.
    assert not (REPO / "operator" / "__init__.py").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import operator, pynchy; print(operator.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert proc.stdout.strip().endswith("operator.py")


def test_fixed_layout_exists() -> None:
    for name in (
        "operator/pynchy",
        "deploys",
        "crds",
        "manifests",
        "agent-image",
        "tests",
        "pyproject.toml",
        "inventory.py",
        "uv.lock",
        "README.md",
        ".ci/run",
        "scripts/test",
    ):
        assert (REPO / name).exists(), name


def test_agent_runner_does_not_depend_on_the_operator() -> None:
    project = tomllib.loads((REPO / "agent-image" / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    for heavy in ("kopf", "kubernetes", "sqlalchemy", "slack", "pyinfra", "pynchy>"):
        assert heavy not in deps
    for path in (REPO / "agent-image" / "pynchy_agent").rglob("*.py"):
        text = path.read_text()
        assert "import pynchy\n" not in text, path
        assert "from pynchy." not in text, path


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "./scripts/test" in readme
    assert "./scripts/test" in ci
