"""`pynchy status` as a person runs it: a process of its own, under the read-only roles docs/install.md
tells people to apply (read from the document, so the two cannot drift apart)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO
from pynchy.kube.controlplane import ControlPlane

DOC = REPO / "docs" / "install.md"
RBAC_MARKER = "# pynchy status: read-only access"
EXAMPLE_CIDR = "192.0.2.10/32"


def documented_rbac() -> str:
    """The YAML block of docs/install.md that starts with RBAC_MARKER."""
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        if block.startswith(RBAC_MARKER):
            return str(block)
    raise AssertionError(f"docs/install.md has no yaml block starting with {RBAC_MARKER!r}")


def documented_apiserver_policy(cidr: str) -> str:
    """docs/install.md's NetworkPolicy that lets an API server on another address reach /status."""
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL):
        if "name: pynchy-status-from-apiserver" in block:
            assert EXAMPLE_CIDR in block, "the documented policy's example address changed"
            return str(block).replace(EXAMPLE_CIDR, cidr)
    raise AssertionError("docs/install.md has no NetworkPolicy pynchy-status-from-apiserver")


def reader_kubeconfig(plane: ControlPlane, name: str = "pynchy-status-reader") -> Path:
    """Credentials of a ServiceAccount bound to exactly the documented roles, as docs/install.md binds them."""
    plane.kubectl("create", "namespace", "pynchy-system", check=False)
    plane.kubectl("apply", "-f", "-", input=documented_rbac())
    subject = f"--serviceaccount=pynchy-system:{name}"
    plane.kubectl("create", "clusterrolebinding", name, "--clusterrole=pynchy-status", subject, check=False)
    plane.kubectl("create", "rolebinding", name, "-n", "pynchy-system", "--role=pynchy-status", subject, check=False)
    return plane.service_account_kubeconfig("pynchy-system", name)


def pynchy_status(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"PYNCHY_LOG_FORMAT": "json"}
    return subprocess.run(
        [sys.executable, "-m", "pynchy", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status_json(*args: str) -> tuple[int, dict[str, Any]]:
    proc = pynchy_status(*args, "--json")
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None
