"""AgentRun → its token Secret and its agent Pod (the pod contract lives here, in one place).

Pure: the run, its Group, the Group's Workspace, the ConfigMap hash and settings in; manifests out.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

from pynchy.api.resources import Group, Workspace
from pynchy.operator.build.common import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_TOKEN_ISSUED_AT,
    LABEL_GROUP,
    LABEL_RUN,
    base_labels,
    content_hash,
    group_config_map_name,
    group_sa_name,
    group_state_claim_name,
    metadata,
    parse_timestamp,
    run_pod_name,
    run_token_secret_name,
    timestamp,
    workspace_claim_name,
)
from pynchy.operator.settings import OperatorSettings
from pynchy.runtoken import GRACE_SECONDS, RunClaims, issue
from pynchy_agent.protocol import MCP_PROXY_PREFIX, MODEL_PROXY_PREFIX

# Every kind agentrun_children emits. Nothing lists or prunes them: the run controls both, so they
# go with it (garbage collection), and the pod is never replaced.
OWNED_KINDS: tuple[str, ...] = ("Secret", "Pod")

# Paths inside the agent container (the runner reads them from the environment).
WORKSPACE_DIR = "/workspace"
HOME_DIR = "/home/agent"
CONFIG_DIR = "/etc/pynchy/group"
GIT_DIR = "/etc/pynchy/git"
TMP_DIR = "/tmp"  # an emptyDir: the root filesystem is read-only
TERMINATION_LOG = "/dev/termination-log"
GIT_SSH_KEY = "ssh-privatekey"
AGENT_UID = 1000
TOKEN_KEY = "token"
SECRET_FILE_MODE = 0o400  # kubelet adds group read for fsGroup, so the agent (gid 1000) can read it
# Pynchy sets these itself; a Group credential with one of these names is left out.
RESERVED_ENV = frozenset(
    {
        "HOME",
        "TMPDIR",
        "IS_SANDBOX",
        "DISABLE_AUTOUPDATER",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
    }
)


@dataclass(frozen=True)
class RunInputs:
    """What the operator resolved for a run besides the Group itself."""

    config_hash: str  # the Group ConfigMap's pynchy.dev/config-hash (a hash of its data)
    workspace: Workspace | None = None


def parse_time(value: str) -> int:
    """Unix seconds of an RFC 3339 timestamp as the API server writes them."""
    return int(parse_timestamp(value).timestamp())


def rfc3339(seconds: int) -> str:
    return timestamp(dt.datetime.fromtimestamp(seconds, dt.UTC))


def run_token(run: dict[str, Any], g: Group, settings: OperatorSettings, issued_at: int) -> str:
    """The run's bearer token: names this run (namespace, name, uid) and its Group, valid for the run's
    hard timeout plus a grace period from `issued_at` (when the run was admitted)."""
    meta = run["metadata"]
    claims = RunClaims(
        namespace=meta["namespace"],
        run=meta["name"],
        uid=meta["uid"],
        group=g.metadata.name,
        expires=issued_at + g.spec.agent.timeout_seconds + GRACE_SECONDS,
    )
    return issue(settings.run_token_key.get_secret_value(), claims, issued_at=issued_at)


def token_secret(run: dict[str, Any], g: Group, settings: OperatorSettings, issued_at: int) -> dict[str, Any]:
    meta = run["metadata"]
    token = run_token(run, g, settings, issued_at)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(
            run_token_secret_name(meta["name"]),
            meta["namespace"],
            base_labels("agent-token", **{LABEL_GROUP: g.metadata.name, LABEL_RUN: meta["name"]}),
            run,
            {ANNOTATION_TOKEN_ISSUED_AT: rfc3339(issued_at)},
        ),
        "type": "Opaque",
        # `data`, not `stringData`: the server stores data, so comparing with the live object works.
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def _secret_env(name: str, secret: str, key: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _env(run: dict[str, Any], g: Group, ws: Workspace | None, settings: OperatorSettings) -> list[dict[str, Any]]:
    meta = run["metadata"]
    secret = run_token_secret_name(meta["name"])
    gateway = settings.gateway_url.rstrip("/")
    values = [
        ("PYNCHY_RUN_NAME", meta["name"]),
        ("PYNCHY_NAMESPACE", meta["namespace"]),
        ("PYNCHY_GROUP", g.metadata.name),
        ("PYNCHY_WORKSPACE", WORKSPACE_DIR),
        ("PYNCHY_HOME", HOME_DIR),
        ("HOME", HOME_DIR),
        ("PYNCHY_CONFIG_DIR", CONFIG_DIR),
        ("PYNCHY_IDLE_TIMEOUT_SECONDS", str(g.spec.agent.idle_timeout_seconds)),
        # = activeDeadlineSeconds: the runner tells "out of time" from other stops.
        ("PYNCHY_RUN_TIMEOUT_SECONDS", str(g.spec.agent.timeout_seconds)),
        ("PYNCHY_TERMINATION_LOG", TERMINATION_LOG),
        ("ANTHROPIC_BASE_URL", gateway + MODEL_PROXY_PREFIX),
        # The Group's MCP servers, through the gateway: their header Secrets never enter the pod.
        ("PYNCHY_MCP_PROXY_URL", gateway + MCP_PROXY_PREFIX),
        # The pod is the sandbox; the Claude CLI wants this before it allows bypassPermissions.
        ("IS_SANDBOX", "1"),
        ("TMPDIR", TMP_DIR),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]
    env: list[dict[str, Any]] = [
        {"name": "PYNCHY_RUN_API_URL", "value": gateway},
        _secret_env("PYNCHY_RUN_TOKEN", secret, TOKEN_KEY),
        # The model proxy takes the run token as the API key; the real key stays in the gateway.
        _secret_env("ANTHROPIC_API_KEY", secret, TOKEN_KEY),
    ]
    env += [{"name": k, "value": v} for k, v in values]
    git = ws.spec.git if ws else None
    if git:
        env += [
            {"name": "PYNCHY_GIT_URL", "value": git.url},
            {"name": "PYNCHY_GIT_BRANCH", "value": git.branch},
            {"name": "PYNCHY_GIT_WORKTREE_PER_GROUP", "value": "true" if git.worktree_per_group else "false"},
        ]
        if git.credentials_secret_ref:
            creds = git.credentials_secret_ref.name
            env += [
                _secret_env("PYNCHY_GIT_USERNAME", creds, "username", optional=True),
                _secret_env("PYNCHY_GIT_PASSWORD", creds, "password", optional=True),
                {"name": "PYNCHY_GIT_SSH_KEY_FILE", "value": f"{GIT_DIR}/{GIT_SSH_KEY}"},
            ]
    reserved = RESERVED_ENV | {e["name"] for e in env}
    env += [
        _secret_env(c.env, c.secret_key_ref.name, c.secret_key_ref.key)
        for c in g.spec.credentials
        if c.env not in reserved
    ]
    return env


def _volumes(
    g: Group, ws: Workspace | None, settings: OperatorSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) of the agent pod."""
    name = g.metadata.name
    volumes: list[dict[str, Any]] = [
        {"name": "home", "persistentVolumeClaim": {"claimName": group_state_claim_name(name)}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "home", "mountPath": HOME_DIR}]
    if ws is not None:
        volumes.append(
            {"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim_name(ws.metadata.name)}}
        )
        mounts.append({"name": "workspace", "mountPath": WORKSPACE_DIR})
    else:
        # No Workspace: a scratch folder on the Group's own volume, kept between runs.
        mounts.append({"name": "home", "mountPath": WORKSPACE_DIR, "subPath": "workspace"})
    volumes += [
        {"name": "config", "configMap": {"name": group_config_map_name(name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}},
    ]
    mounts += [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    git = ws.spec.git if ws else None
    if git and git.credentials_secret_ref:
        volumes.append(
            {
                "name": "git-ssh",
                "secret": {
                    "secretName": git.credentials_secret_ref.name,
                    "items": [{"key": GIT_SSH_KEY, "path": GIT_SSH_KEY, "mode": SECRET_FILE_MODE}],
                    "optional": True,
                },
            }
        )
        mounts.append({"name": "git-ssh", "mountPath": GIT_DIR, "readOnly": True})
    for m in g.spec.mounts:
        vol = f"mount-{m.name}"
        read_only = {"readOnly": True} if m.read_only else {}
        if m.persistent_volume_claim:
            source: dict[str, Any] = {
                "persistentVolumeClaim": {"claimName": m.persistent_volume_claim.claim_name, **read_only}
            }
        elif m.config_map:
            source = {"configMap": {"name": m.config_map.name}}
        else:
            assert m.host_path is not None  # CEL: exactly one source
            # Directory, not DirectoryOrCreate: a missing path fails the pod instead of appearing as root.
            source = {"hostPath": {"path": m.host_path.path, "type": "Directory"}}
        volumes.append({"name": vol, **source})
        mounts.append({"name": vol, "mountPath": m.mount_path, **read_only})
    return volumes, mounts


def _resources(g: Group, settings: OperatorSettings) -> dict[str, Any]:
    if g.spec.resources is not None:
        resources = g.spec.resources.to_k8s()
    else:
        resources = {
            "requests": {"cpu": settings.default_cpu_request, "memory": settings.default_memory_request},
            "limits": {"cpu": settings.default_cpu_limit, "memory": settings.default_memory_limit},
        }
    # Always bounded: a runaway agent is evicted rather than filling the node's disk.
    resources.setdefault("limits", {}).setdefault("ephemeral-storage", settings.default_ephemeral_storage_limit)
    return resources


def agent_pod(run: dict[str, Any], g: Group, inputs: RunInputs, settings: OperatorSettings) -> dict[str, Any]:
    """The run's one pod. Meets the "restricted" Pod Security Standard unless the Group mounts a hostPath."""
    meta = run["metadata"]
    volumes, mounts = _volumes(g, inputs.workspace, settings)
    container = {
        "name": "agent",
        "image": settings.agent_image,
        "command": ["pynchy-agent"],
        "workingDir": WORKSPACE_DIR,
        "env": _env(run, g, inputs.workspace, settings),
        "resources": _resources(g, settings),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    spec: dict[str, Any] = {
        "serviceAccountName": group_sa_name(g.metadata.name),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": g.spec.agent.timeout_seconds,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            # Re-own the volumes only when their root is not ours yet: big workspaces start fast.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if g.spec.runtime_class_name:
        spec["runtimeClassName"] = g.spec.runtime_class_name
    labels = base_labels("agent", **{LABEL_GROUP: g.metadata.name, LABEL_RUN: meta["name"]})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(
            run_pod_name(meta["name"]),
            meta["namespace"],
            labels,
            run,
            {ANNOTATION_CONFIG_HASH: pod_config_hash(spec, inputs.config_hash)},
        ),
        "spec": spec,
    }


def pod_config_hash(pod_spec: dict[str, Any], config_map_hash: str) -> str:
    """What a running pod was started from: its rendered spec and the Group ConfigMap's data."""
    return content_hash({"spec": pod_spec, "config": config_map_hash})


def agentrun_children(
    run: dict[str, Any], g: Group, inputs: RunInputs, settings: OperatorSettings, issued_at: int
) -> list[dict[str, Any]]:
    """The run's token Secret and its Pod, in creation order (the pod reads the Secret)."""
    return [token_secret(run, g, settings, issued_at), agent_pod(run, g, inputs, settings)]
