"""What the API server cannot check: do the objects a Group or Workspace refers to exist?

Each check returns Problems (reason + a message that says what to fix) and the references
it looked at, so the controller can re-check when one of them appears or changes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from pynchy.api.base import ConfigMapKeySelector
from pynchy.api.group import TextSource
from pynchy.api.resources import Group, Workspace
from pynchy.kube.api import KubeApi
from pynchy.operator.build.group import GroupInputs
from pynchy.operator.settings import OperatorSettings

Ref = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)
    refs: set[Ref] = field(default_factory=set)
    inputs: GroupInputs = field(default_factory=GroupInputs)
    workspace: dict[str, Any] | None = None

    def add(self, reason: str, message: str) -> None:
        self.problems.append(Problem(reason, message))


class _Lookup:
    """Reads each referenced object once per check and records it as a dependency."""

    def __init__(self, api: KubeApi, namespace: str, result: CheckResult) -> None:
        self.api = api
        self.namespace = namespace
        self.result = result
        self._cache: dict[Ref, dict[str, Any] | None] = {}

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        ref = (kind, self.namespace, name)
        self.result.refs.add(ref)
        if ref not in self._cache:
            self._cache[ref] = await self.api.get(kind, self.namespace, name)
        return self._cache[ref]

    async def secret_key(self, where: str, name: str, key: str) -> None:
        secret = await self.get("Secret", name)
        if secret is None:
            self.result.add(
                "SecretNotFound",
                f"{where}: Secret {name!r} does not exist in namespace {self.namespace!r}; create it or fix the name",
            )
        elif key not in (secret.get("data") or {}) and key not in (secret.get("stringData") or {}):
            keys = ", ".join(sorted(secret.get("data") or {})) or "none"
            self.result.add("SecretKeyNotFound", f"{where}: Secret {name!r} has no key {key!r} (it has: {keys})")

    async def config_map_text(self, where: str, ref: ConfigMapKeySelector) -> str | None:
        cm = await self.get("ConfigMap", ref.name)
        if cm is None:
            self.result.add(
                "ConfigMapNotFound",
                f"{where}: ConfigMap {ref.name!r} does not exist in namespace "
                f"{self.namespace!r}; create it or fix the name",
            )
            return None
        if ref.key in (cm.get("data") or {}):
            return str(cm["data"][ref.key])
        if ref.key in (cm.get("binaryData") or {}):
            try:
                return base64.b64decode(cm["binaryData"][ref.key]).decode()
            except (ValueError, UnicodeDecodeError):
                self.result.add(
                    "ConfigMapKeyNotText", f"{where}: key {ref.key!r} of ConfigMap {ref.name!r} is not UTF-8 text"
                )
                return None
        keys = ", ".join(sorted(cm.get("data") or {})) or "none"
        self.result.add(
            "ConfigMapKeyNotFound", f"{where}: ConfigMap {ref.name!r} has no key {ref.key!r} (it has: {keys})"
        )
        return None

    async def text(self, where: str, source: TextSource) -> str | None:
        if source.inline is not None:
            return source.inline
        assert source.config_map_key_ref is not None  # CEL: exactly one
        return await self.config_map_text(f"{where}.configMapKeyRef", source.config_map_key_ref)


async def check_group(api: KubeApi, g: Group, settings: OperatorSettings) -> CheckResult:
    result = CheckResult()
    ns = str(g.metadata.namespace)
    look = _Lookup(api, ns, result)
    spec = g.spec

    memory = await look.text("spec.agent.memory", spec.agent.memory) if spec.agent.memory else None
    directives = []
    for i, directive in enumerate(spec.agent.directives):
        text = await look.text(f"spec.agent.directives[{i}]", directive)
        if text is not None:
            directives.append(text)
    result.inputs = GroupInputs(memory=memory, directives=tuple(directives))

    for i, cred in enumerate(spec.credentials):
        await look.secret_key(f"spec.credentials[{i}] ({cred.env})", cred.secret_key_ref.name, cred.secret_key_ref.key)
    for i, server in enumerate(spec.agent.mcp_servers):
        if server.headers_secret_ref and await look.get("Secret", server.headers_secret_ref.name) is None:
            result.add(
                "SecretNotFound",
                f"spec.agent.mcpServers[{i}].headersSecretRef: Secret "
                f"{server.headers_secret_ref.name!r} does not exist in namespace {ns!r}",
            )

    if spec.workspace_ref:
        result.workspace = await look.get("Workspace", spec.workspace_ref.name)
        if result.workspace is None:
            result.add(
                "WorkspaceNotFound",
                f"spec.workspaceRef: Workspace {spec.workspace_ref.name!r} does not "
                f"exist in namespace {ns!r}; create it or remove workspaceRef",
            )

    for i, mount in enumerate(spec.mounts):
        where = f"spec.mounts[{i}] ({mount.name})"
        if mount.persistent_volume_claim:
            claim = mount.persistent_volume_claim.claim_name
            if await look.get("PersistentVolumeClaim", claim) is None:
                result.add(
                    "ClaimNotFound",
                    f"{where}: PersistentVolumeClaim {claim!r} does not exist in namespace "
                    f"{ns!r}; mounts take existing claims only",
                )
        elif mount.config_map:
            if await look.get("ConfigMap", mount.config_map.name) is None:
                result.add(
                    "ConfigMapNotFound",
                    f"{where}: ConfigMap {mount.config_map.name!r} does not exist in namespace {ns!r}",
                )
        elif mount.host_path and not settings.host_path_allowed(mount.host_path.path):
            allowed = ", ".join(settings.host_path_allowlist) or "none (PYNCHY_HOST_PATH_ALLOWLIST is empty)"
            result.add(
                "HostPathNotAllowed",
                f"{where}: hostPath {mount.host_path.path!r} is outside the "
                f"operator's allowlist ({allowed}); use a PVC or ask the "
                "cluster admin to allow the path",
            )

    if spec.runtime_class_name:
        result.refs.add(("RuntimeClass", "", spec.runtime_class_name))
        if await api.get("RuntimeClass", None, spec.runtime_class_name) is None:
            result.add(
                "RuntimeClassNotFound",
                f"spec.runtimeClassName: RuntimeClass {spec.runtime_class_name!r} "
                "does not exist; install it (for example gVisor) or remove the field",
            )
    return result


async def check_workspace(api: KubeApi, ws: Workspace) -> CheckResult:
    result = CheckResult()
    look = _Lookup(api, str(ws.metadata.namespace), result)
    git = ws.spec.git
    if git and git.credentials_secret_ref:
        name = git.credentials_secret_ref.name
        secret = await look.get("Secret", name)
        if secret is None:
            result.add(
                "SecretNotFound",
                f"spec.git.credentialsSecretRef: Secret {name!r} does not exist in namespace {ws.metadata.namespace!r}",
            )
        else:
            keys = set(secret.get("data") or {})
            ssh = not git.url.startswith("https://")
            needed = {"ssh-privatekey"} if ssh else {"username", "password"}
            if not needed <= keys:
                result.add(
                    "SecretKeyNotFound",
                    f"spec.git.credentialsSecretRef: Secret {name!r} needs the keys "
                    f"{', '.join(sorted(needed))} for a {'ssh' if ssh else 'https'} URL "
                    f"(it has: {', '.join(sorted(keys)) or 'none'})",
                )
    return result
