"""The Group's tool policy, applied where tool calls pass the gateway (the boundary).

* `check`: a call that reaches the gateway (an MCP tools/call through the proxy, one of Pynchy's
  tools through the run API). `allow` runs it; `deny` refuses it; `ask` runs it only with an
  approval: the one the runner's hook already obtained for exactly this call (tool and argument
  digest; used up), or else a request made now, and the call waits for its decision.
* `preflight`: the runner's PreToolUse hook asking before Claude Code runs any tool (its built-in
  tools have no other checkpoint). Idempotent by the tool use id, so the runner retries it across a
  gateway restart and finds the same request. For built-in tools this guards against mistakes only:
  the network policy and the gateway's proxies are the boundary against a hostile agent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pynchy.gateway.approvals import Approvals
from pynchy.gateway.db import Db
from pynchy.gateway.routing import Directory
from pynchy.gateway.tools import Caller
from pynchy.store import approvals as approval_store
from pynchy.store import records
from pynchy.store.models import ApprovalRow
from pynchy_agent.toolpolicy import Action, Policy, Rule, arguments_digest

SUMMARY_CHARS = 1200
EXTRA_WAIT_SECONDS = 5.0  # past the deadline: the sweeper or the waiter itself denies it by then


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    decided_by: str  # 'policy', 'slack:U…', 'owner', 'timeout'
    reason: str  # for the model when refused
    approval: str | None = None


def call_summary(tool: str, arguments: dict[str, Any]) -> str:
    """What an approver reads: Bash's command as is, other tools' arguments as JSON."""
    command = arguments.get("command") if tool == "Bash" else None
    if isinstance(command, str):
        text = command
    else:
        text = json.dumps(arguments, indent=1, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def refusal(row: ApprovalRow | None, tool: str, timeout: int) -> str:
    if row is None:
        return f"The approval request for {tool} is gone; it was not run."
    if row.state == approval_store.EXPIRED:
        return f"Nobody approved {tool} within {timeout} seconds, so it was denied and did not run."
    return f"{tool} was denied by {row.decided_by} and did not run. Do not retry it; tell the user if it was needed."


class ToolGate:
    def __init__(self, db: Db, directory: Directory, approvals: Approvals) -> None:
        self.db = db
        self.directory = directory
        self.approvals = approvals

    def policy(self, namespace: str, group: str) -> Policy:
        entry = self.directory.get(namespace, group)
        spec = entry.spec.agent.tool_policy if entry is not None else None
        if spec is None:
            return Policy()
        return Policy(tuple(Rule(tuple(r.tools), r.action) for r in spec.rules), spec.default)

    def action(self, caller: Caller, tool: str) -> Action:
        return self.policy(caller.namespace, caller.group).action(tool)

    def servers(self, caller: Caller) -> list[str]:
        entry = self.directory.get(caller.namespace, caller.group)
        return [s.name for s in entry.spec.agent.mcp_servers] if entry is not None else []

    def _denied(self, caller: Caller, tool: str) -> str:
        index = self.policy(caller.namespace, caller.group).rule_index(tool)  # only on a refusal
        rule = f"rule {index + 1}" if index is not None else "its default"
        return (
            f"The Group's tool policy denies {tool} ({rule} of spec.agent.toolPolicy). "
            "Do not retry it; tell the user if it was needed."
        )

    async def check(
        self, caller: Caller, run_uid: str, tool: str, arguments: dict[str, Any], *, call_key: str | None = None
    ) -> Verdict:
        action = self.action(caller, tool)
        if action == "allow":
            return Verdict(True, "policy", "")
        if action == "deny":
            reason = self._denied(caller, tool)
            await self._audit_denial(caller, tool, arguments)
            return Verdict(False, "policy", reason)
        digest = arguments_digest(arguments)
        row = await self.approvals.consume(run_uid, tool, digest)
        if row is not None:  # the runner's hook asked first, and a person approved
            return Verdict(True, row.decided_by or "", "", row.id)
        key = f"call:{run_uid}:{call_key or uuid.uuid4().hex}"
        row = await self.approvals.request(caller, run_uid, tool, call_summary(tool, arguments), digest, key=key)
        return await self._outcome(caller, run_uid, row, tool, digest)

    async def _outcome(self, caller: Caller, run_uid: str, row: ApprovalRow, tool: str, digest: str) -> Verdict:
        timeout = self.approvals.timeout_of(caller.namespace, caller.group)
        decided = await self.approvals.wait(row.id, timeout + EXTRA_WAIT_SECONDS)
        if decided is not None and decided.state == approval_store.APPROVED:
            await self.approvals.consume(run_uid, tool, digest)
            return Verdict(True, decided.decided_by or "", "", decided.id)
        if decided is not None and decided.state == approval_store.PENDING:
            return Verdict(False, "timeout", f"No decision on {tool} arrived; it did not run.", decided.id)
        by = decided.decided_by if decided is not None else "timeout"
        return Verdict(False, by or "timeout", refusal(decided, tool, timeout), row.id)

    async def preflight(
        self,
        caller: Caller,
        run_uid: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        tool_use_id: str,
        turn_id: str | None,
        wait: float,
    ) -> tuple[str, str, str | None]:
        """The runner's question before a tool runs: ('allow' | 'deny' | 'pending', reason, approval id).
        'pending' after `wait` seconds: ask again with the same tool use id."""
        action = self.action(caller, tool)
        if action == "allow":
            return "allow", "", None
        if action == "deny":
            await self._audit_denial(caller, tool, arguments)
            return "deny", self._denied(caller, tool), None
        digest = arguments_digest(arguments)
        row = await self.approvals.request(
            caller,
            run_uid,
            tool,
            call_summary(tool, arguments),
            digest,
            key=f"hook:{run_uid}:{tool_use_id}",
            turn_id=turn_id,
        )
        decided = await self.approvals.wait(row.id, wait)
        if decided is None:
            return "deny", refusal(None, tool, 0), row.id
        if decided.state == approval_store.PENDING:
            return "pending", "", decided.id
        if decided.state == approval_store.APPROVED:
            return "allow", "", decided.id
        timeout = self.approvals.timeout_of(caller.namespace, caller.group)
        return "deny", refusal(decided, tool, timeout), decided.id

    async def _audit_denial(self, caller: Caller, tool: str, arguments: dict[str, Any]) -> None:
        detail = {"tool": tool, "argsDigest": arguments_digest(arguments), "decision": "deny", "decidedBy": "policy"}
        await self.db.call(
            records.audit,
            namespace=caller.namespace,
            group=caller.group,
            run=caller.run,
            action=f"policy:{tool}"[:64],
            allowed=False,
            detail=json.dumps(detail),
        )
