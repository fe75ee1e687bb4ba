"""Typed settings, read from PYNCHY_* environment variables and validated at start-up.

Each component gets one settings object. A missing or malformed value stops the program
with a message naming the variable, never a silent fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsExit(SystemExit):
    """Raised (and exits non-zero) when settings are invalid; the text says what to fix.

    A SystemExit on purpose, and so not a PynchyError: settings are read at start-up, and no
    ``except Exception`` on the way (a supervisor, a work queue) may turn a misconfiguration
    into a logged error and carry on.
    """


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PYNCHY_LOG_", extra="ignore")

    level: str = Field(
        default="INFO",
        pattern=r"(?i)^(debug|info|warning|error|critical)$",
        description="Log level: DEBUG, INFO, WARNING or ERROR.",
    )
    format: str | None = Field(
        default=None,
        pattern=r"^(json|console)$",
        description="json or console; default: console on a terminal, json otherwise.",
    )


class ControlPlaneSettings(BaseSettings):
    """Where the locally built Kubernetes control plane lives (tests and `pynchy dev`)."""

    # validate_by_name: node_bin_dir= still works as a keyword, beside its alias.
    model_config = SettingsConfigDict(env_prefix="PYNCHY_K8S_", extra="ignore", validate_by_name=True)

    cache: Path = Field(
        default=Path.home() / ".cache" / "pynchy" / "k8s",
        description="Cache of the Kubernetes and etcd binaries built from source, one folder per version.",
    )
    bin_dir: Path | None = Field(
        default=None,
        description="Use binaries from this folder instead of building (must hold kube-apiserver, "
        "kube-controller-manager, kubectl and etcd).",
    )
    node_bin_dir: Path | None = Field(
        default=None,
        validation_alias="PYNCHY_NODE_BIN_DIR",  # the whole variable name: no PYNCHY_K8S_ prefix
        description="Use node binaries from this folder instead of building them with tools/node/build.sh "
        "(must hold kubelet, kube-scheduler, kube-proxy, kube-router, coredns and pause).",
    )


T = TypeVar("T", bound=BaseSettings)


def load(cls: type[T], **overrides: Any) -> T:
    """Instantiate settings, turning validation errors into one readable start-up error."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid settings for {cls.__name__}:"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]).upper()
            name = field if field.startswith("PYNCHY_") else prefix + field  # an alias is the full name
            lines.append(f"  {name}: {err['msg']}")
        raise SettingsExit("\n".join(lines)) from None
