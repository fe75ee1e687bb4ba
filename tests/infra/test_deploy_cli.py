"""The documented command line: `pyinfra inventory.py deploys/install.py` (here with a @fake
inventory and --dry) from the repository root, so group_data/ and the package imports are the real
ones, and with --diff -vvv nothing secret is printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.deploy_harness import FRESH

REPO = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")

INVENTORY = """
pynchy_nodes = [("@fake/node", {{"fake_responses": {fresh!r}, "k3s_kubeconfig_dest": "{kube}/{{host}}.yaml"}})]
"""


def pyinfra(
    tmp_path: Path, deploy: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory_fake.py"
    inventory.write_text(INVENTORY.format(fresh=FRESH, kube=tmp_path / "kube"))
    return subprocess.run(
        [str(PYINFRA), str(inventory), deploy, *extra],
        cwd=REPO,
        env={**os.environ, "PYINFRA_FAKE_DELAY": "0", "PYINFRA_FAKE_DELAY_JITTER": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("deploy", ["deploys/install.py", "deploys/uninstall.py"])
def test_dry_run_from_the_repository_root(tmp_path: Path, deploy: str) -> None:
    proc = pyinfra(tmp_path, deploy, "--dry")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Errors: 0" in proc.stdout + proc.stderr or "Detected changes" in proc.stdout + proc.stderr


def test_diff_and_verbose_output_hold_no_secret(tmp_path: Path) -> None:
    # Executed (on the fake host, -y), with diffs and every command and its output printed.
    secrets = {"PYNCHY_SLACK_BOT_TOKEN": "xoxb-cli-secret-4242", "PYNCHY_ANTHROPIC_API_KEY": "sk-ant-cli-secret-77"}
    proc = pyinfra(tmp_path, "deploys/install.py", "-y", "--diff", "-vvv", env=secrets)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout + proc.stderr
    assert "Gateway credentials file (PYNCHY_ANTHROPIC_API_KEY, PYNCHY_SLACK_BOT_TOKEN; values not shown)" in out
    assert ">>> k3s kubectl patch secret --namespace pynchy-system pynchy-gateway" in out  # -vvv shows commands
    for value in secrets.values():
        assert value not in out
