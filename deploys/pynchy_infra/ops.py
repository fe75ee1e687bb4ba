"""Small idempotent operations the Pynchy deploys build on.

pyinfra's shell operation always reports a change; these decide from a fact first and yield
nothing (a no-op) when the host is already as wanted, so a second run changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
from collections.abc import Generator
from io import BytesIO
from typing import Any

from deploys.pynchy_infra.facts import KUBECTL, ApiReady, KubeObject, RolloutsAvailable, SameContent, Stamp
from pyinfra import host
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand, operation
from pyinfra.facts.files import Sha256File


@operation()
def stamped(stamp: str, digest: str, commands: list[str], what: str) -> Generator[Any, None, None]:
    """Run `commands` unless the stamp file already holds `digest`; then record it.

    The stamp is written last, so a step that failed half-way runs again on the next deploy.
    `digest` names the inputs (a bundle's hash, a version), never a secret value.
    """
    if host.get_fact(Stamp, path=stamp) == digest:
        host.noop(f"{what}: already done ({digest[:12]})")
        return
    yield from commands
    yield f"mkdir -p {shlex.quote(stamp.rsplit('/', 1)[0])} && echo {shlex.quote(digest)} > {shlex.quote(stamp)}"


@operation()
def private_file(dest: str, content: bytes) -> Generator[Any, None, None]:
    """Write `content` (credentials) to `dest`, mode 0600, only when it differs.

    Unlike files.put this never shows a diff. The upload's temporary file is created 0600 first
    (owned by the SSH user when pyinfra uses sudo, so its upload can fill it), so the values are
    never readable by other users on the host, not even for a moment.
    """
    if host.get_fact(Sha256File, path=dest) == hashlib.sha256(content).hexdigest():
        host.noop(f"{dest} is up to date")
        return
    temp = host.get_temp_filename(dest)
    q = shlex.quote(temp)
    parent = shlex.quote(os.path.dirname(dest))
    yield StringCommand(
        f'umask 077 && mkdir -p {parent} && : > {q} && {{ [ -z "$SUDO_USER" ] || chown "$SUDO_USER" {q}; }}'
    )
    yield FileUploadCommand(BytesIO(content), dest, remote_temp_filename=temp)
    yield StringCommand(f"chmod 600 {shlex.quote(dest)}")


@operation()
def generated_secret(secret: str, namespace: str, create: list[str]) -> Generator[Any, None, None]:
    """Create a Secret whose values are generated on the host (random keys) unless it exists.

    The `create` commands make the values themselves (for example from /dev/urandom) so they never
    pass through this machine or pyinfra's output, and an existing Secret is never regenerated.
    """
    if host.get_fact(KubeObject, kind="secret", object_name=secret, namespace=namespace):
        host.noop(f"Secret {namespace}/{secret} exists")
        return
    yield from create


@operation()
def api_ready(timeout_seconds: int = 300) -> Generator[Any, None, None]:
    """Wait until the k3s API server answers (a no-op when it already does)."""
    if host.get_fact(ApiReady):
        host.noop("the Kubernetes API is ready")
        return
    yield f"timeout {timeout_seconds} sh -c 'until {KUBECTL} get --raw=/readyz >/dev/null 2>&1; do sleep 2; done'"


@operation()
def rollouts_available(namespace: str, names: list[str], timeout_seconds: int = 300) -> Generator[Any, None, None]:
    """Wait until the named Deployments are rolled out (a no-op when they are)."""
    if host.get_fact(RolloutsAvailable, namespace=namespace, names=tuple(names)):
        host.noop(f"{', '.join(names)} available")
        return
    for name in names:
        yield (
            f"{KUBECTL} rollout status --namespace {shlex.quote(namespace)} deployment/{shlex.quote(name)}"
            f" --timeout={timeout_seconds}s"
        )


@operation()
def command_output_file(command: str, dest: str) -> Generator[Any, None, None]:
    """Keep `dest` (root-only) equal to the output of `command`, rewriting it only when it differs."""
    if host.get_fact(SameContent, command=command, path=dest):
        host.noop(f"{dest} is up to date")
        return
    yield f"umask 077 && ( {command} ) > {shlex.quote(dest)}"


def _chmod_local(path: str, mode: int) -> None:
    if os.path.exists(path):  # absent only when the fetch before was simulated (dry runs, @fake)
        os.chmod(path, mode)


@operation()
def local_mode(path: str, mode: int = 0o600) -> Generator[Any, None, None]:
    """Give a file on this machine (where pyinfra runs) `mode`, e.g. a fetched kubeconfig."""
    if os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) == mode:
        host.noop(f"{path} has mode {mode:o}")
        return
    yield FunctionCommand(_chmod_local, (path, mode), {})
