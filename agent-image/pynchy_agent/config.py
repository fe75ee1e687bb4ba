"""The Group's configuration as the operator mounts it: agent.json, CLAUDE.md and directives.md."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from pynchy_agent.errors import AgentError

AGENT_JSON = "agent.json"
MEMORY_SEED = "CLAUDE.md"
DIRECTIVES = "directives.md"


class ConfigError(AgentError):
    """The Group's configuration is missing or invalid."""


class _Model(BaseModel):
    # Unknown keys are ignored so a newer operator can add some before the agent image knows them.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class McpServer(_Model):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    transport: Literal["http", "sse"] = "http"
    # The server's own URL: only the gateway uses it (the runner reaches servers through its MCP proxy).
    url: str = Field(pattern=r"^https?://")


class AgentConfig(_Model):
    """agent.json, written by the operator from Group.spec.agent (no secrets)."""

    group: str
    admin: bool = False
    model: str | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    mcp_servers: list[McpServer] = Field(default_factory=list)
    tool_policy: dict[str, Any] | None = None  # Group.spec.agent.toolPolicy, as toolpolicy.Policy.of reads it
    max_turns: int | None = Field(default=None, ge=1)
    timeout_seconds: int | None = Field(default=None, ge=1)
    idle_timeout_seconds: int | None = Field(default=None, ge=1)
    has_memory_seed: bool = False
    directive_count: int = 0


@dataclass(frozen=True)
class GroupConfig:
    agent: AgentConfig
    directives: str | None  # appended to Claude Code's system prompt
    memory_seed: Path | None  # CLAUDE.md to copy into the agent's home on first use


def load_config(config_dir: Path) -> GroupConfig:
    path = config_dir / AGENT_JSON
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: is the Group's ConfigMap mounted at {config_dir}?") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read as JSON: {exc}") from None
    try:
        agent = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path} is invalid: {details}") from None
    directives_path = config_dir / DIRECTIVES
    directives = directives_path.read_text().strip() if directives_path.is_file() else ""
    seed = config_dir / MEMORY_SEED
    return GroupConfig(agent, directives or None, seed if seed.is_file() else None)


def seed_memory(seed: Path | None, home: Path) -> bool:
    """Copy the memory seed to ~/.claude/CLAUDE.md unless the agent already has one (its memory wins)."""
    target = home / ".claude" / MEMORY_SEED
    if seed is None or target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seed, target)
    return True


def mcp_servers(agent: AgentConfig, proxy_url: str, run_token: str) -> dict[str, dict[str, Any]]:
    """The Group's MCP servers in the Claude Agent SDK's shape: each one through the gateway's MCP proxy,
    with the run token (the gateway adds the server's credentials, which never enter the pod)."""
    base = proxy_url.rstrip("/")
    headers = {"Authorization": f"Bearer {run_token}"}
    return {
        server.name: {"type": server.transport, "url": f"{base}/{server.name}", "headers": dict(headers)}
        for server in agent.mcp_servers
    }
