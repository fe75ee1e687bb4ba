"""The contract between the operator and an agent pod: environment variables the runner reads."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, AnyHttpUrl, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pynchy_agent.errors import AgentError
from pynchy_agent.protocol import MCP_PROXY_PREFIX


class RunnerSettings(BaseSettings):
    """Set by the operator on every agent pod; validated before the first turn."""

    model_config = SettingsConfigDict(env_prefix="PYNCHY_", extra="ignore")

    run_api_url: AnyHttpUrl = Field(description="Base URL of the gateway's run API.")
    run_token: SecretStr = Field(min_length=16, description="Per-run token; authorises this run only.")
    run_name: str = Field(min_length=1, max_length=253, description="Name of the AgentRun.")
    namespace: str | None = Field(default=None, max_length=63, description="Namespace of the AgentRun (for logs).")
    group: str = Field(min_length=1, max_length=63, description="Name of the Group.")
    workspace: Path = Field(default=Path("/workspace"), description="Working directory of the agent.")
    home: Path = Field(default=Path("/home/agent"), description="Agent home on the Group's state volume.")
    config_dir: Path = Field(default=Path("/etc/pynchy/group"), description="The Group's ConfigMap files.")
    idle_timeout_seconds: int = Field(default=600, ge=1, description="Exit after this long without a turn.")
    run_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="The pod's activeDeadlineSeconds: a stop near it is the run running out of time.",
    )
    mcp_proxy_url: AnyHttpUrl | None = Field(
        default=None,
        description="The gateway's MCP proxy (<gateway>/mcp): the Group's MCP servers are reached there. "
        "Unset: PYNCHY_RUN_API_URL + /mcp.",
    )
    termination_log: Path = Field(
        default=Path("/dev/termination-log"), description="Where a fatal error is written for Kubernetes."
    )
    log_level: str = Field(default="INFO", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")

    # The model proxy: the Claude CLI reads these two itself; checked here so a pod without them fails fast.
    anthropic_base_url: AnyHttpUrl = Field(
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL"), description="The gateway's model proxy (<gateway>/model)."
    )
    anthropic_api_key: SecretStr = Field(
        min_length=1, validation_alias=AliasChoices("ANTHROPIC_API_KEY"), description="The run token, as API key."
    )

    # A Workspace with git.
    git_url: str | None = Field(default=None, max_length=2048, description="Repository cloned into an empty workspace.")
    git_branch: str = Field(default="main", min_length=1, max_length=255, description="Branch to check out.")
    git_worktree_per_group: bool = Field(
        default=False, description="Work in the Group's own worktree and branch (pynchy/<group>) of the clone."
    )
    git_username: str | None = Field(default=None, description="https user name (with git_password).")
    git_password: SecretStr | None = Field(default=None, description="https password or token.")
    git_ssh_key_file: Path = Field(
        default=Path("/etc/pynchy/git/ssh-privatekey"), description="ssh private key, used when the file exists."
    )

    @property
    def mcp_url(self) -> str:
        """Where the Group's MCP server <name> is reached: <mcp_url>/<name>."""
        if self.mcp_proxy_url is not None:
            return str(self.mcp_proxy_url).rstrip("/")
        return str(self.run_api_url).rstrip("/") + MCP_PROXY_PREFIX

    @property
    def state_dir(self) -> Path:
        """Pynchy's own files on the state volume (the session file)."""
        return self.home / ".pynchy"


class SettingsError(AgentError):
    """Invalid or missing settings: one message naming every bad variable."""


def load_settings() -> RunnerSettings:
    try:
        return RunnerSettings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            name = field if field.isupper() else f"PYNCHY_{field.upper()}"  # an alias is the variable itself
            problems.append(f"{name} is not set" if err["type"] == "missing" else f"{name}: {err['msg']}")
        raise SettingsError("invalid agent pod settings: " + "; ".join(problems)) from None
