"""The Claude Agent SDK options of the pod's one long-lived client."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, HookMatcher
from claude_agent_sdk.types import HookEvent, McpSdkServerConfig, SystemPromptPreset

from pynchy_agent.config import GroupConfig, mcp_servers
from pynchy_agent.settings import RunnerSettings
from pynchy_agent.tools import SERVER_NAME, tool_names

log = logging.getLogger(__name__)


def builtin_tools(allowed: list[str]) -> list[str] | None:
    """The built-in tools the agent gets: those allowedTools names (without a rule such as
    `Bash(git:*)`), or Claude Code's defaults when it names none. Under bypassPermissions the
    allow-list alone would restrict nothing, so the tool set itself is narrowed."""
    names: list[str] = []
    for entry in allowed:
        name = entry.split("(", 1)[0].strip()
        if name and not name.startswith("mcp__") and name not in names:
            names.append(name)
    return names or None


def system_prompt(directives: str | None) -> SystemPromptPreset:
    prompt: SystemPromptPreset = {"type": "preset", "preset": "claude_code"}
    if directives:
        prompt["append"] = directives
    return prompt


def side_model_env(model: str | None) -> dict[str, str]:
    """The CLI's own small requests (titles, summaries) use a Haiku model unless told otherwise; a
    Group that names its model may call only that (the gateway's proxy refuses others), so they
    use it too."""
    if not model:
        return {}
    return {"ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": model}


def build_options(
    settings: RunnerSettings,
    config: GroupConfig,
    *,
    cwd: Path,
    resume: str | None,
    pynchy: McpSdkServerConfig,
    env: dict[str, str],
    stderr: Callable[[str], None] | None = None,
    hooks: dict[HookEvent, list[HookMatcher]] | None = None,
) -> ClaudeAgentOptions:
    agent = config.agent
    servers: dict[str, Any] = mcp_servers(agent, settings.mcp_url, settings.run_token.get_secret_value())
    if SERVER_NAME in servers:
        log.warning("the Group's MCP server named 'pynchy' is shadowed by Pynchy's own tools")
    servers[SERVER_NAME] = pynchy
    return ClaudeAgentOptions(
        cwd=str(cwd),
        system_prompt=system_prompt(config.directives),
        tools=builtin_tools(agent.allowed_tools),
        allowed_tools=[*agent.allowed_tools, *tool_names()],
        mcp_servers=servers,
        permission_mode="bypassPermissions",  # the pod is the sandbox
        model=agent.model,
        max_turns=agent.max_turns,
        setting_sources=["user", "project"],  # ~/.claude/CLAUDE.md (the Group's memory) and the project's
        include_partial_messages=True,
        resume=resume,
        env={"HOME": str(settings.home), "IS_SANDBOX": "1", **side_model_env(agent.model), **env},
        stderr=stderr,
        # The tool policy's check before every tool (permissions.py); bypassPermissions does not skip hooks.
        hooks=hooks,
    )
