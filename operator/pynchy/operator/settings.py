"""Operator settings: one typed object, read from PYNCHY_* variables and validated at start-up."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pynchy.api.base import QUANTITY

CommaList = Annotated[list[str], NoDecode]
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a namespace name
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")  # a ServiceAccount name (at most 253)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class OperatorSettings(BaseSettings):
    """Everything the operator needs to know that is not in a custom resource."""

    model_config = SettingsConfigDict(env_prefix="PYNCHY_", extra="ignore", frozen=True)

    namespaces: CommaList = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated); empty watches every namespace.",
    )
    host_path_allowlist: CommaList = Field(
        default_factory=list,
        description="Absolute host path prefixes Groups may mount with hostPath (comma-separated); "
        "empty forbids hostPath mounts.",
    )
    gateway_namespace: str = Field(
        default="pynchy-system", min_length=1, max_length=63, description="Namespace of the Pynchy gateway."
    )
    gateway_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "pynchy-gateway"},
        description="Labels of the gateway pods (JSON); agent pods may reach them.",
    )
    gateway_service_account: str = Field(
        default="pynchy-system/pynchy-gateway",
        description="ServiceAccount of the gateway, as <namespace>/<name>: each Group that names MCP header "
        "Secrets gets a Role pynchy-mcp-<group> letting exactly this account read exactly those Secrets.",
    )
    gateway_port: int = Field(default=8080, ge=1, le=65535, description="Port of the gateway's run API.")
    gateway_url: str = Field(
        default="http://pynchy-gateway.pynchy-system.svc:8080",
        pattern=r"^https?://",
        description="URL agent pods use to reach the gateway.",
    )
    dns_namespace: str = Field(default="kube-system", description="Namespace of the cluster DNS pods.")
    dns_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"}, description="Labels of the cluster DNS pods (JSON)."
    )
    agent_image: str = Field(
        default="localhost/pynchy-agent:0.1.0", min_length=1, description="Container image of agent pods."
    )
    default_cpu_request: str = Field(default="250m", pattern=QUANTITY, description="Default agent CPU request.")
    default_memory_request: str = Field(default="512Mi", pattern=QUANTITY, description="Default agent memory request.")
    default_cpu_limit: str = Field(default="2", pattern=QUANTITY, description="Default agent CPU limit.")
    default_memory_limit: str = Field(default="2Gi", pattern=QUANTITY, description="Default agent memory limit.")
    default_ephemeral_storage_limit: str = Field(
        default="4Gi",
        pattern=QUANTITY,
        description="Agent ephemeral-storage limit (its /tmp, logs and writable layer) when the Group sets none; "
        "the kubelet evicts a pod over it instead of letting it fill the node's disk.",
    )
    tmp_size_limit: str = Field(
        default="1Gi",
        pattern=QUANTITY,
        description="sizeLimit of the agent's /tmp emptyDir (TMPDIR: the CLI's scratch files).",
    )
    max_concurrent_runs: int = Field(default=4, ge=1, le=1000, description="Agent runs active at once, cluster-wide.")
    run_token_key: SecretStr = Field(
        description="Key (at least 32 characters) that signs each run's token. Required. Keep it in a Secret "
        "shared with the gateway, which verifies the tokens with the same key.",
    )
    run_ttl_seconds: int = Field(
        default=3600,
        ge=0,
        le=2592000,
        description="Delete a finished AgentRun (and its pod) this long after it finished, unless the run sets "
        "spec.ttlSecondsAfterFinished.",
    )
    run_history_limit: int = Field(
        default=20, ge=0, le=1000, description="Finished AgentRuns kept per Group; older ones are deleted first."
    )
    workers: int = Field(default=8, ge=1, le=64, description="Reconcile workers.")
    resync_seconds: int = Field(
        default=600, ge=0, description="Re-check every object this often (0: only on changes); a no-op writes nothing."
    )
    liveness_port: int = Field(default=8080, ge=0, le=65535, description="Port of /healthz (0 disables it).")
    metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (reconciles, errors, durations, work-queue depth); "
        "0 disables it. Must differ from the liveness port.",
    )

    @field_validator("namespaces", "host_path_allowlist", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("host_path_allowlist")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not prefix.startswith("/") or ".." in prefix:
                raise ValueError(f"{prefix!r} must be an absolute path without '..'")
        return [p.rstrip("/") or "/" for p in value]

    @field_validator("gateway_service_account")
    @classmethod
    def _namespace_slash_name(cls, value: str) -> str:
        namespace, slash, name = value.strip().partition("/")
        if not slash or not _DNS_LABEL.fullmatch(namespace) or not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            raise ValueError(
                f"{value!r} is not <namespace>/<name> of the gateway's ServiceAccount (two lowercase DNS names, "
                "for example pynchy-system/pynchy-gateway)"
            )
        return f"{namespace}/{name}"

    @field_validator("run_token_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters; generate one with `openssl rand -hex 32`")
        return value

    @model_validator(mode="after")
    def _ports_differ(self) -> OperatorSettings:
        if self.metrics_port and self.metrics_port == self.liveness_port:
            raise ValueError(
                f"PYNCHY_METRICS_PORT and PYNCHY_LIVENESS_PORT are both {self.metrics_port}; give them different ports"
            )
        return self

    @property
    def gateway_service_account_ref(self) -> tuple[str, str]:
        """(namespace, name) of the gateway's ServiceAccount."""
        namespace, _, name = self.gateway_service_account.partition("/")
        return namespace, name

    def host_path_allowed(self, path: str) -> bool:
        if ".." in path.split("/"):
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.host_path_allowlist)
