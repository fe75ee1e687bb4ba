"""The PreToolUse hook: before Claude Code runs any tool, the Group's tool policy is asked.

Calls the policy allows run without a round trip (agent.json carries the policy). For the rest the
gateway decides: a deny comes back with its reason, an `ask` waits for a person (long-polls of
`POST /v1/run/permissions`, retried under the same tool use id, so a gateway restart in between
finds the same request). A hook that fails or times out blocks the tool (`on_failure="block"`).

This guards built-in tools against mistakes; it is not the boundary. An agent that bypassed it
would still meet the gateway's own checks on every MCP and Pynchy tool call, and the pod's network
policy for everything else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from claude_agent_sdk import HookMatcher
from claude_agent_sdk.types import HookContext, HookEvent

from pynchy_agent.client import GatewayUnavailableError, RunApiClient, RunApiError
from pynchy_agent.protocol import PermissionRequest
from pynchy_agent.toolpolicy import Policy, policy_name

log = logging.getLogger(__name__)

POLL_SECONDS = 50  # one long-poll; the gateway caps it at its own long-poll limit
HOOK_MARGIN_SECONDS = 120  # past the approval timeout: the gateway denies before the CLI gives up


def deny(reason: str) -> dict[str, Any]:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


class PermissionHook:
    def __init__(
        self,
        api: RunApiClient,
        policy: Policy,
        servers: list[str],
        current_turn: Callable[[], str | None],
    ) -> None:
        self.api = api
        self.policy = policy
        self.servers = servers
        self.current_turn = current_turn

    async def __call__(self, data: Any, tool_use_id: str | None, context: HookContext) -> dict[str, Any]:
        tool = str(data.get("tool_name") or "")
        arguments = data.get("tool_input") or {}
        if self.policy.action(policy_name(tool, self.servers)) == "allow":
            return {}  # no opinion: the call runs as it would without the hook
        use_id = tool_use_id or data.get("tool_use_id") or uuid.uuid4().hex
        ask = PermissionRequest(tool=tool, input=arguments, tool_use_id=use_id, turn_id=self.current_turn())
        try:
            while True:
                answer = await self.api.ask_permission(ask, POLL_SECONDS)
                if answer.decision == "allow":
                    log.info("tool allowed", extra={"tool": tool, "approval": answer.approval})
                    return {}
                if answer.decision == "deny":
                    log.info("tool denied", extra={"tool": tool, "approval": answer.approval})
                    return deny(answer.reason or f"{tool} was denied by the Group's tool policy.")
        except (RunApiError, GatewayUnavailableError) as exc:
            log.warning("tool permission could not be asked; denied", extra={"tool": tool, "error": str(exc)})
            return deny(f"{tool} was not run: the permission check failed ({exc}).")


def permission_hooks(hook: PermissionHook, approval_timeout_seconds: int) -> dict[HookEvent, list[HookMatcher]]:
    """The SDK's `hooks` option: the hook on every tool."""
    timeout = approval_timeout_seconds + HOOK_MARGIN_SECONDS
    matcher = HookMatcher(matcher=None, hooks=[hook], timeout=timeout, on_failure="block")  # type: ignore[list-item]
    return {"PreToolUse": [matcher]}
