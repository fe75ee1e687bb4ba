"""Which tool calls a Group's tool policy allows, asks a person about, or denies: pure functions.

One source of truth for the runner (which asks the gateway only about calls that are not allowed
outright) and the gateway (which decides and enforces). Tool names as the policy sees them:

* Claude Code's built-in tools by their own name: ``Bash``, ``Write``, ``WebFetch``;
* Pynchy's agent tools as ``pynchy/<tool>``: ``pynchy/send_message``;
* a Group MCP server's tools as ``<server>/<tool>``: ``github/create_issue``.

Patterns match whole names with ``*`` (any run of characters, ``/`` included) and ``?`` (one
character), case-sensitively. The first rule with a matching pattern decides; none: the default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

Action = Literal["allow", "ask", "deny"]
PYNCHY_SERVER = "pynchy"
CLI_MCP_PREFIX = "mcp__"


@dataclass(frozen=True)
class Rule:
    tools: tuple[str, ...]
    action: Action


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default: Action = "allow"

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> Policy:
        """From the camelCase shape of Group.spec.agent.toolPolicy (agent.json carries the same)."""
        if not raw:
            return cls()
        rules = tuple(Rule(tuple(r["tools"]), r["action"]) for r in raw.get("rules") or ())
        return cls(rules, raw.get("default") or "allow")

    def action(self, tool: str) -> Action:
        for rule in self.rules:
            if any(fnmatchcase(tool, pattern) for pattern in rule.tools):
                return rule.action
        return self.default

    def rule_index(self, tool: str) -> int | None:
        """Which rule decides `tool` (its index), None for the default: for messages and the audit."""
        for i, rule in enumerate(self.rules):
            if any(fnmatchcase(tool, pattern) for pattern in rule.tools):
                return i
        return None


def policy_name(cli_name: str, servers: Iterable[str]) -> str:
    """The policy's name of a tool as Claude Code calls it: ``mcp__github__create_issue`` →
    ``github/create_issue``. Server names may hold ``_``, so the longest known server wins."""
    if not cli_name.startswith(CLI_MCP_PREFIX):
        return cli_name
    rest = cli_name[len(CLI_MCP_PREFIX) :]
    for server in sorted({*servers, PYNCHY_SERVER}, key=len, reverse=True):
        if rest.startswith(server + "__"):
            return f"{server}/{rest[len(server) + 2 :]}"
    server, _, tool = rest.partition("__")
    return f"{server}/{tool}" if tool else cli_name


def arguments_digest(arguments: dict[str, Any] | Sequence[Any] | None) -> str:
    """A short, stable digest of a call's arguments: the audit keeps it instead of the arguments
    themselves, and an approval is bound to it (the call that runs is the call that was approved)."""
    canonical = json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
