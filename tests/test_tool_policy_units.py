"""The tool policy's matching (shared by the runner and the gateway) and its API type."""

from __future__ import annotations

import pytest

from pynchy.api.group import PYNCHY_TOOL_NAMES, GroupSpec
from pynchy_agent.protocol import TOOLS
from pynchy_agent.toolpolicy import Policy, Rule, arguments_digest, policy_name


def test_the_api_knows_every_pynchy_tool() -> None:
    assert set(PYNCHY_TOOL_NAMES) == set(TOOLS)


def test_no_policy_allows_everything() -> None:
    assert Policy.of(None).action("Bash") == "allow"
    assert Policy.of({}).action("github/create_issue") == "allow"


def test_the_first_matching_rule_decides_and_the_default_takes_the_rest() -> None:
    policy = Policy.of(
        {
            "default": "ask",
            "rules": [
                {"tools": ["github/delete_*", "Bash"], "action": "deny"},
                {"tools": ["github/*", "Read"], "action": "allow"},
                {"tools": ["*"], "action": "ask"},
            ],
        }
    )
    assert policy.action("github/delete_repo") == "deny"
    assert policy.action("github/create_issue") == "allow"
    assert policy.action("Bash") == "deny"
    assert policy.action("Read") == "allow"
    assert policy.action("Write") == "ask"
    assert policy.rule_index("Write") == 2
    assert Policy((Rule(("Web?etch",), "deny"),), "allow").action("WebFetch") == "deny"
    assert Policy((Rule(("Web?etch",), "deny"),), "allow").rule_index("Bash") is None


def test_patterns_are_case_sensitive_and_whole() -> None:
    policy = Policy((Rule(("bash", "pynchy/send"), "deny"),))
    assert policy.action("Bash") == "allow"
    assert policy.action("pynchy/send_message") == "allow"


@pytest.mark.parametrize(
    ("cli", "servers", "name"),
    [
        ("Bash", [], "Bash"),
        ("mcp__pynchy__send_message", [], "pynchy/send_message"),
        ("mcp__github__create_issue", ["github"], "github/create_issue"),
        ("mcp__my__srv__do_it", ["my", "my__srv"], "my__srv/do_it"),
        ("mcp__unknown__tool", [], "unknown/tool"),
    ],
)
def test_claude_code_names_map_to_policy_names(cli: str, servers: list[str], name: str) -> None:
    assert policy_name(cli, servers) == name


def test_the_digest_ignores_key_order_but_not_values() -> None:
    assert arguments_digest({"a": 1, "b": [1, 2]}) == arguments_digest({"b": [1, 2], "a": 1})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": 2})
    assert arguments_digest(None) == arguments_digest({})


def test_the_api_type_takes_a_policy_in_its_wire_shape() -> None:
    spec = GroupSpec.from_k8s(
        {
            "channels": [{"local": {"name": "a"}}],
            "agent": {
                "toolPolicy": {
                    "default": "deny",
                    "rules": [{"tools": ["pynchy/*", "Bash"], "action": "ask"}],
                    "approvers": ["owner", "slack:U0123ABCDE"],
                    "approvalTimeoutSeconds": 60,
                }
            },
        }
    )
    policy = spec.agent.tool_policy
    assert policy is not None
    assert policy.approval_timeout_seconds == 60
    assert Policy.of(policy.model_dump(by_alias=True)).action("Bash") == "ask"
    assert Policy.of(policy.model_dump(by_alias=True)).action("Write") == "deny"
