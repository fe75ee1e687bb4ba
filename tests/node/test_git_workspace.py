"""A Workspace cloned from a git server on this machine, on a local-path volume whose root belongs to
root (as k3s's provisioner makes it): the agent, uid 1000, clones it and gets its own worktree."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from doubles.anthropic import text, tool_use
from doubles.githttp import GitHttpServer
from node.helpers import Install
from pynchy.kube.pki import CertificateAuthority

CA_DIR = "/etc/pynchy-test-ca"


@pytest.fixture
def git_server(installed: Install, tmp_path: Path) -> Iterator[GitHttpServer]:
    """An HTTPS git server on the host's link address, with a certificate of a CA of its own."""
    root = tmp_path / "repos"
    seed = tmp_path / "seed"
    seed.mkdir()
    run = ["git", "-c", "user.email=t@example.com", "-c", "user.name=T", "-c", "init.defaultBranch=main"]
    subprocess.run([*run, "init", "-q", str(seed)], check=True)
    (seed / "README.md").write_text("# The project\n")
    subprocess.run([*run, "-C", str(seed), "add", "README.md"], check=True)
    subprocess.run([*run, "-C", str(seed), "commit", "-q", "-m", "first"], check=True)
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(root / "project.git")], check=True)
    ca = CertificateAuthority(tmp_path / "ca", name="pynchy-test-git-ca")
    cert = ca.issue("git", "git", server=True, ip_addresses=(installed.node.link_host_ip,))
    server = (
        GitHttpServer(root, "alice", "s3cret-pass").listen_on(installed.node.link_host_ip).with_tls(cert.cert, cert.key)
    )
    with server:
        server.ca_pem = ca.cert_path.read_text()  # type: ignore[attr-defined]  # for the ConfigMap
        yield server


def manifests(server: GitHttpServer, link_ip: str) -> str:
    ca = "\n".join("    " + line for line in server.ca_pem.splitlines())  # type: ignore[attr-defined]
    return f"""
apiVersion: v1
kind: ConfigMap
metadata: {{name: git-ca}}
data:
  ca.crt: |
{ca}
---
apiVersion: v1
kind: Secret
metadata: {{name: project-git}}
stringData: {{username: alice, password: s3cret-pass}}
---
apiVersion: v1
kind: Secret
metadata: {{name: git-ca-path}}
stringData: {{path: {CA_DIR}/ca.crt}}
---
apiVersion: pynchy.dev/v1alpha1
kind: Workspace
metadata: {{name: project}}
spec:
  storage: {{size: 1Gi}}
  git:
    url: {server.base_url}/project.git
    branch: main
    credentialsSecretRef: {{name: project-git}}
    worktreePerGroup: true
---
apiVersion: pynchy.dev/v1alpha1
kind: Group
metadata: {{name: coder}}
spec:
  channels: [{{local: {{name: coder}}}}]
  workspaceRef: {{name: project}}
  mounts:
    - {{name: git-ca, mountPath: {CA_DIR}, configMap: {{name: git-ca}}}}
  credentials:
    - {{env: GIT_SSL_CAINFO, secretKeyRef: {{name: git-ca-path, key: path}}}}
  network:
    egress:
      - cidr: {link_ip}/32
        ports: [{{port: {server.port}}}]
"""


def test_a_git_workspace_is_cloned_and_a_group_worktree_made_as_uid_1000(
    installed: Install, node_namespace: str, git_server: GitHttpServer, tmp_path: Path
) -> None:
    ns = node_namespace
    installed.apply(ns, manifests(git_server, installed.node.link_host_ip))
    installed.wait_group_ready(ns, "coder")
    model = installed.model
    model.on_prompt(
        "where am i", tool_use("Bash", command="pwd; git status --short --branch; git log --format=%s; stat -c %u .")
    )
    model.after_tool("Bash", text("In my own worktree."))

    code, out, err = installed.chat(ns, "coder", "where am i?", tmp_path)
    assert code == 0, f"{out}\n{err}\n{installed.describe_pods(ns)}"
    assert out == "In my own worktree.\n"
    [result] = [r for r in model.main_requests[-1].tool_results() if r.name == "Bash"]
    lines = result.text.splitlines()
    assert lines[0] == "/workspace/.worktrees/coder", result.text
    assert lines[1].startswith("## pynchy/coder"), result.text
    assert "first" in lines, result.text
    assert lines[-1] == "1000", result.text

    workspace = installed.claim_path(ns, "pynchy-ws-project")
    assert workspace.stat().st_uid == 0  # the volume's root: local-path makes it root's, mode 0777
    assert (workspace / "README.md").read_text() == "# The project\n"
    assert (workspace / ".worktrees" / "coder" / "README.md").stat().st_uid == 1000
    assert all(a.startswith("Basic ") for a in git_server.authorizations if a)
