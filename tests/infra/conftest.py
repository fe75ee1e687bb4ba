"""The deploys are a package of the repository root (deploys.pynchy_infra), as pyinfra imports them
when run from the root; put the root on sys.path for these tests too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def repo_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of what the deploys read from the checkout, taken once: other people editing the
    working tree during the run must not change image tags between a test's first and second run."""
    from deploys.pynchy_infra import bundle

    from infra.deploy_harness import copy_checkout

    return copy_checkout(REPO, {*bundle.CONTEXT_INPUTS, "manifests"}, tmp_path_factory.mktemp("checkout"))


@pytest.fixture(autouse=True)
def frozen_checkout(repo_snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from deploys.pynchy_infra import bundle

    monkeypatch.setattr(bundle, "REPO", repo_snapshot)
    return repo_snapshot
