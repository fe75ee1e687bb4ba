"""The contract between the operator and an agent pod: environment variables the runner reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import AnyHttpUrl, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RunnerSettings(BaseSettings):
    """Set by the operator on every agent pod; validated before the first turn."""

    model_config = SettingsConfigDict(env_prefix="PYNCHY_", extra="ignore")

    run_api_url: AnyHttpUrl = Field(description="Base URL of the gateway's run API.")
    run_token: SecretStr = Field(min_length=16, description="Per-run token; authorises this run only.")
    run_name: str = Field(min_length=1, max_length=253, description="Name of the AgentRun.")
    group: str = Field(min_length=1, max_length=63, description="Name of the Group.")
    workspace: Path = Field(default=Path("/workspace"), description="Working directory of the agent.")
    home: Path = Field(default=Path("/home/agent"), description="Agent home on the Group's state volume.")
    config_dir: Path = Field(default=Path("/etc/pynchy/group"), description="The Group's ConfigMap files.")
    idle_timeout_seconds: int = Field(default=600, ge=1, description="Exit after this long without a turn.")
