"""Pynchy's agent tools as an in-process MCP server named `pynchy`: each call is a run API request.

The gateway executes and authorises every tool; the runner only forwards. The model sees them as
mcp__pynchy__<name>, with input schemas derived from the argument models in protocol.TOOLS.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from claude_agent_sdk import SdkMcpTool, create_sdk_mcp_server, tool
from claude_agent_sdk.types import McpSdkServerConfig

from pynchy_agent.client import RunApiClient, RunApiError
from pynchy_agent.protocol import ASK_USER, TOOLS, WireModel

log = logging.getLogger(__name__)

SERVER_NAME = "pynchy"
# The gateway answers ask_user by the question's deadline (at most a day, spec.agent.toolPolicy).
ASK_USER_TIMEOUT = 86400 + 120.0
RESET_TOOL = "reset_context"


def qualified(name: str) -> str:
    """The name the model calls a Pynchy tool by."""
    return f"mcp__{SERVER_NAME}__{name}"


def tool_names() -> list[str]:
    return [qualified(name) for name in TOOLS]


def _without_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_titles(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_without_titles(v) for v in node]
    return node


def input_schema(model: type[WireModel]) -> dict[str, Any]:
    """The tool's JSON schema: the argument model's, by alias (camelCase, as the gateway reads it)."""
    schema = _without_titles(model.model_json_schema(by_alias=True))
    assert isinstance(schema, dict)
    schema.setdefault("properties", {})
    return schema


def _text(text: str, *, error: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if error:
        result["is_error"] = True
    return result


def make_tool(
    api: RunApiClient, name: str, description: str, model: type[WireModel], on_success: Callable[[], None]
) -> SdkMcpTool[Any]:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            if name == ASK_USER:  # waits for people: as long as the gateway lets it, and retried
                result = await api.call_tool(
                    name, dict(arguments or {}), call_id=uuid.uuid4().hex, timeout=ASK_USER_TIMEOUT
                )
            else:
                result = await api.call_tool(name, dict(arguments or {}))
        except RunApiError as exc:
            log.info("tool refused", extra={"tool": name, "status": exc.status, "error": exc.message})
            return _text(exc.message, error=True)
        except Exception as exc:  # the gateway unreachable (GatewayUnavailableError) or a bad answer
            log.warning("tool call failed", extra={"tool": name, "error": str(exc)})
            return _text(f"The Pynchy gateway could not run {name}: {exc}", error=True)
        on_success()
        return _text(result.text)

    return tool(name, description, input_schema(model))(call)


def pynchy_tools(api: RunApiClient, on_reset: Callable[[], None]) -> list[SdkMcpTool[Any]]:
    return [
        make_tool(api, name, description, model, on_reset if name == RESET_TOOL else lambda: None)
        for name, (model, description) in TOOLS.items()
    ]


def pynchy_server(api: RunApiClient, on_reset: Callable[[], None]) -> McpSdkServerConfig:
    """`on_reset` runs after the gateway accepted reset_context: the runner drops the session after the turn."""
    return create_sdk_mcp_server(SERVER_NAME, tools=pynchy_tools(api, on_reset))
