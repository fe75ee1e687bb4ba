"""Manifests the Kubernetes API server must reject, with what its error message must say.

Plain data, shared by the cluster tests (which create each manifest against the real
kube-apiserver with the generated CRDs) and the offline model tests (which check that the
pydantic models reject the subset that is not CEL-only).

`expect` holds substrings that must all appear in the API server's rejection message. They
name the offending field path plus a distinctive word of the CEL message or of the OpenAPI
error, so that wording changes between Kubernetes versions do not break them. Root-level CEL
rules (metadata.name) are reported without a useful field path, so those cases expect only a
distinctive part of the message.

No case relies on unknown fields: whether they are rejected or silently pruned depends on the
client's fieldValidation setting, so they are tested offline only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

API_VERSION = "pynchy.dev/v1alpha1"


@dataclass(frozen=True)
class InvalidCase:
    id: str
    manifest: dict
    expect: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Valid baselines; every case changes exactly one thing.


def _obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def group(name: str = "inv-group", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"channels": [{"local": {"name": "inv"}}]}
    base.update(spec)
    return _obj("Group", name, base)


def workspace(name: str = "inv-ws", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"storage": {"size": "1Gi"}}
    base.update(spec)
    return _obj("Workspace", name, base)


def task(name: str = "inv-task", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "groupRef": {"name": "inv-group"},
        "prompt": "Say hello.",
        "schedule": {"cron": "0 9 * * *"},
    }
    base.update(spec)
    return _obj("ScheduledTask", name, base)


def run(name: str = "inv-run", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"groupRef": {"name": "inv-group"}, "trigger": {"kind": "Manual"}, "prompt": "Say hello."}
    base.update(spec)
    return _obj("AgentRun", name, base)


def without(manifest: dict[str, Any], *path: str) -> dict[str, Any]:
    """A copy of manifest with the key at path (below spec) removed."""
    out = copy.deepcopy(manifest)
    node = out["spec"]
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _slack(channel_id: str) -> dict[str, Any]:
    return {"slack": {"channelId": channel_id}}


def _mount(**fields: Any) -> dict[str, Any]:
    return {"name": "notes", "mountPath": "/mnt/notes", **fields}


# ---------------------------------------------------------------------------------------------

INVALID_CASES: list[InvalidCase] = [
    # --- required fields ---------------------------------------------------------------------
    InvalidCase(
        "group-missing-channels",
        without(group(), "channels"),
        ("spec.channels", "Required value"),
    ),
    InvalidCase(
        "task-missing-prompt",
        without(task(), "prompt"),
        ("spec.prompt", "Required value"),
    ),
    InvalidCase(
        "task-missing-schedule",
        without(task(), "schedule"),
        ("spec.schedule", "Required value"),
    ),
    InvalidCase(
        "run-missing-groupref",
        without(run(), "groupRef"),
        ("spec.groupRef", "Required value"),
    ),
    InvalidCase(
        "group-empty-channels",
        group(channels=[]),
        ("spec.channels",),
    ),
    # --- enums -------------------------------------------------------------------------------
    InvalidCase(
        "group-bad-trigger-mode",
        group(trigger={"mode": "sometimes"}),
        ("spec.trigger.mode", "Unsupported value", "sometimes"),
    ),
    InvalidCase(
        "task-bad-concurrency-policy",
        task(concurrencyPolicy="Queue"),
        ("spec.concurrencyPolicy", "Unsupported value", "Queue"),
    ),
    InvalidCase(
        "task-bad-context-mode",
        task(contextMode="shared"),
        ("spec.contextMode", "Unsupported value", "shared"),
    ),
    InvalidCase(
        "run-bad-context-mode",
        run(contextMode="shared"),
        ("spec.contextMode", "Unsupported value", "shared"),
    ),
    InvalidCase(
        "workspace-bad-deletion-policy",
        workspace(storage={"size": "1Gi", "deletionPolicy": "Keep"}),
        ("spec.storage.deletionPolicy", "Unsupported value", "Keep"),
    ),
    InvalidCase(
        "workspace-bad-access-mode",
        workspace(storage={"size": "1Gi", "accessMode": "ReadWriteAll"}),
        ("spec.storage.accessMode", "Unsupported value", "ReadWriteAll"),
    ),
    InvalidCase(
        "run-bad-trigger-kind",
        run(trigger={"kind": "Webhook"}),
        ("spec.trigger.kind", "Unsupported value", "Webhook"),
    ),
    # --- schedules ---------------------------------------------------------------------------
    InvalidCase(
        "task-cron-four-fields",
        task(schedule={"cron": "0 9 * *"}),
        ("spec.schedule.cron", "exactly five fields"),
    ),
    InvalidCase(
        "task-cron-six-fields",
        task(schedule={"cron": "0 0 9 * * 1-5"}),
        ("spec.schedule.cron", "exactly five fields"),
    ),
    InvalidCase(
        "task-cron-macro",
        task(schedule={"cron": "@daily"}),
        ("spec.schedule.cron", "exactly five fields"),
    ),
    InvalidCase(
        "task-interval-zero",
        task(schedule={"interval": "0m"}),
        ("spec.schedule.interval", "at least 1m"),
    ),
    InvalidCase(
        "task-interval-too-small",
        task(schedule={"interval": "30s"}),
        ("spec.schedule.interval", "at least 1m"),
    ),
    InvalidCase(
        "task-interval-malformed",
        task(schedule={"interval": "every hour"}),
        ("spec.schedule.interval", "must be a duration"),
    ),
    InvalidCase(
        "task-interval-no-unit",
        task(schedule={"interval": "90"}),
        ("spec.schedule.interval", "must be a duration"),
    ),
    InvalidCase(
        "task-two-schedule-kinds",
        task(schedule={"cron": "0 9 * * *", "interval": "1h"}),
        ("spec.schedule", "set exactly one of schedule.cron, schedule.interval or schedule.once"),
    ),
    InvalidCase(
        "task-no-schedule-kind",
        task(schedule={}),
        ("spec.schedule", "set exactly one of schedule.cron, schedule.interval or schedule.once"),
    ),
    InvalidCase(
        "task-once-not-a-time",
        task(schedule={"once": "tomorrow"}),
        ("spec.schedule.once", "date-time"),
    ),
    InvalidCase(
        "task-bad-timezone",
        task(timeZone="Europe Berlin"),
        ("spec.timeZone", "should match"),
    ),
    InvalidCase(
        "task-negative-history-limit",
        task(successfulRunsHistoryLimit=-1),
        ("spec.successfulRunsHistoryLimit", "greater than or equal to 0"),
    ),
    # --- channels and senders ----------------------------------------------------------------
    InvalidCase(
        "group-channel-slack-and-local",
        group(channels=[{"slack": {"channelId": "C0123ABCD"}, "local": {"name": "inv"}}]),
        ("spec.channels[0]", "set exactly one of slack or local"),
    ),
    InvalidCase(
        "group-channel-empty-entry",
        group(channels=[{}]),
        ("spec.channels[0]", "set exactly one of slack or local"),
    ),
    InvalidCase(
        "group-slack-channel-name",
        group(channels=[_slack("general")]),
        ("spec.channels[0].slack.channelId", "Slack conversation id"),
    ),
    InvalidCase(
        "group-slack-channel-id-lowercase",
        group(channels=[_slack("c0123abcd")]),
        ("spec.channels[0].slack.channelId", "Slack conversation id"),
    ),
    InvalidCase(
        "group-local-channel-bad-name",
        group(channels=[{"local": {"name": "My Channel"}}]),
        ("spec.channels[0].local.name", "should match"),
    ),
    InvalidCase(
        "group-too-many-channels",
        group(channels=[{"local": {"name": f"inv-{i}"}} for i in range(9)]),
        ("spec.channels", "Too many"),
    ),
    InvalidCase(
        "group-bad-allowed-sender",
        group(allowedSenders=["owner", "@alice"]),
        ("spec.allowedSenders", "allowedSenders entries must be"),
    ),
    InvalidCase(
        "group-star-with-other-senders",
        group(allowedSenders=["*", "owner"]),
        ("spec.allowedSenders", "already allows everyone"),
    ),
    InvalidCase(
        "group-bad-trigger-alias",
        group(trigger={"mode": "mention", "aliases": ["hey pynchy"]}),
        ("spec.trigger.aliases[0]", "should match"),
    ),
    # --- types and ranges --------------------------------------------------------------------
    InvalidCase(
        "group-admin-string",
        group(admin="yes"),
        ("spec.admin", "must be of type boolean"),
    ),
    InvalidCase(
        "group-timeout-string",
        group(agent={"timeoutSeconds": "100"}),
        ("spec.agent.timeoutSeconds", "must be of type integer"),
    ),
    InvalidCase(
        "group-idle-timeout-too-small",
        group(agent={"idleTimeoutSeconds": 5}),
        ("spec.agent.idleTimeoutSeconds", "greater than or equal to 30"),
    ),
    InvalidCase(
        "group-max-turns-zero",
        group(agent={"maxTurns": 0}),
        ("spec.agent.maxTurns", "greater than or equal to 1"),
    ),
    InvalidCase(
        "task-suspend-string",
        task(suspend="true"),
        ("spec.suspend", "must be of type boolean"),
    ),
    InvalidCase(
        "task-prompt-too-long",
        task(prompt="x" * 16385),
        ("spec.prompt",),
    ),
    InvalidCase(
        "task-prompt-empty",
        task(prompt=""),
        ("spec.prompt",),
    ),
    InvalidCase(
        "run-prompt-too-long",
        run(prompt="x" * 16385),
        ("spec.prompt",),
    ),
    InvalidCase(
        "run-ttl-string",
        run(ttlSecondsAfterFinished="3600"),
        ("spec.ttlSecondsAfterFinished", "must be of type integer"),
    ),
    InvalidCase(
        "workspace-bad-size",
        workspace(storage={"size": "5GB"}),
        ("spec.storage.size", "should match"),
    ),
    InvalidCase(
        "group-bad-cpu-quantity",
        group(resources={"limits": {"cpu": "two"}}),
        ("spec.resources.limits.cpu", "should match"),
    ),
    # --- names -------------------------------------------------------------------------------
    InvalidCase(
        "group-name-upper-case",
        group(name="MyGroup"),
        ("RFC 1123",),
    ),
    InvalidCase(
        "group-name-too-long",
        group(name="g" * 41),
        ("metadata.name must be at most 40",),
    ),
    InvalidCase(
        "workspace-name-too-long",
        workspace(name="w" * 41),
        ("metadata.name must be at most 40",),
    ),
    InvalidCase(
        "task-name-too-long",
        task(name="t" * 53),
        ("metadata.name must be at most 52",),
    ),
    InvalidCase(
        "group-name-with-dot",
        group(name="team.eng"),
        ("metadata.name must be at most 40",),
    ),
    InvalidCase(
        "group-workspace-ref-bad-name",
        group(workspaceRef={"name": "My_Workspace"}),
        ("spec.workspaceRef.name", "should match"),
    ),
    # --- network, mounts, credentials --------------------------------------------------------
    InvalidCase(
        "group-bad-cidr",
        group(network={"egress": [{"cidr": "10.0.0.0/33"}]}),
        ("spec.network.egress[0].cidr", "cidr must be a network"),
    ),
    InvalidCase(
        "group-bad-except-cidr",
        group(network={"egress": [{"cidr": "0.0.0.0/0", "except": ["metadata"]}]}),
        ("spec.network.egress[0].except", "every except entry must be a CIDR"),
    ),
    InvalidCase(
        "group-bad-egress-port",
        group(network={"egress": [{"cidr": "0.0.0.0/0", "ports": [{"port": 70000}]}]}),
        ("spec.network.egress[0].ports[0].port", "less than or equal to 65535"),
    ),
    InvalidCase(
        "group-mount-two-sources",
        group(mounts=[_mount(persistentVolumeClaim={"claimName": "notes"}, configMap={"name": "notes"})]),
        ("spec.mounts[0]", "set exactly one of persistentVolumeClaim, configMap or hostPath"),
    ),
    InvalidCase(
        "group-mount-no-source",
        group(mounts=[_mount()]),
        ("spec.mounts[0]", "set exactly one of persistentVolumeClaim, configMap or hostPath"),
    ),
    InvalidCase(
        "group-mount-under-workspace",
        group(mounts=[_mount(mountPath="/workspace/notes", configMap={"name": "notes"})]),
        ("spec.mounts[0].mountPath", "must not be under /workspace"),
    ),
    InvalidCase(
        "group-mount-relative-path",
        group(mounts=[_mount(mountPath="mnt/notes", configMap={"name": "notes"})]),
        ("spec.mounts[0].mountPath", "must be an absolute path"),
    ),
    InvalidCase(
        "group-credential-anthropic-key",
        group(credentials=[{"env": "ANTHROPIC_API_KEY", "secretKeyRef": {"name": "anthropic", "key": "key"}}]),
        ("spec.credentials[0].env", "model credential is injected by the gateway"),
    ),
    InvalidCase(
        "group-credential-missing-secret",
        group(credentials=[{"env": "GH_TOKEN"}]),
        ("spec.credentials[0].secretKeyRef", "Required value"),
    ),
    InvalidCase(
        "group-directive-inline-and-configmap",
        group(agent={"directives": [{"inline": "Be brief.", "configMapKeyRef": {"name": "d", "key": "k"}}]}),
        ("spec.agent.directives[0]", "set exactly one of inline or configMapKeyRef"),
    ),
    # --- workspaces ---------------------------------------------------------------------------
    InvalidCase(
        "workspace-git-url-not-a-url",
        workspace(git={"url": "github.com example/repo"}),
        ("spec.git.url", "url must be an https://, ssh:// or user@host:path git URL"),
    ),
    InvalidCase(
        "workspace-git-url-http",
        workspace(git={"url": "http://github.com/example/repo.git"}),
        ("spec.git.url", "url must be an https://"),
    ),
    InvalidCase(
        "workspace-git-branch-dotdot",
        workspace(git={"url": "https://github.com/example/repo.git", "branch": "feature/../main"}),
        ("spec.git.branch", "not a valid ref name"),
    ),
    # --- agent runs ---------------------------------------------------------------------------
    InvalidCase(
        "run-schedule-trigger-without-task",
        run(trigger={"kind": "Schedule", "scheduledTime": "2026-01-02T09:00:00Z"}),
        ("spec.trigger", "a Schedule trigger needs scheduledTaskRef and scheduledTime"),
    ),
    InvalidCase(
        "run-manual-trigger-with-task",
        run(trigger={"kind": "Manual", "scheduledTaskRef": {"name": "inv-task"}}),
        ("spec.trigger", "only allowed when kind is Schedule"),
    ),
    # --- budgets and models ------------------------------------------------------------------
    InvalidCase(
        "group-budget-without-a-limit",
        group(budget={"timeZone": "Europe/Berlin"}),
        ("spec.budget", "set at least one limit: dailyUsd, monthlyUsd, dailyTokens or monthlyTokens"),
    ),
    InvalidCase(
        "group-budget-negative",
        group(budget={"dailyUsd": -1}),
        ("spec.budget.dailyUsd", "should be greater than or equal to 0"),
    ),
    InvalidCase(
        "group-budget-time-zone-shape",
        group(budget={"dailyUsd": 5, "timeZone": "Berlin time"}),
        ("spec.budget.timeZone", "should match"),
    ),
    InvalidCase(
        "group-budget-warn-percent",
        group(budget={"dailyUsd": 5, "warnPercent": 150}),
        ("spec.budget.warnPercent", "should be less than or equal to 100"),
    ),
    InvalidCase(
        "group-allowed-model-shape",
        group(agent={"model": "claude-sonnet-4-5", "allowedModels": ["not a model"]}),
        ("spec.agent.allowedModels[0]", "should match"),
    ),
    # --- agent tool limits -------------------------------------------------------------------
    InvalidCase(
        "group-tool-limits-negative-messages",
        group(agent={"toolLimits": {"sendMessagesPerMinute": -1}}),
        ("spec.agent.toolLimits.sendMessagesPerMinute", "should be greater than or equal to 0"),
    ),
    InvalidCase(
        "group-tool-limits-zero-interval",
        group(agent={"toolLimits": {"minScheduleIntervalSeconds": 0}}),
        ("spec.agent.toolLimits.minScheduleIntervalSeconds", "should be greater than or equal to 60"),
    ),
    InvalidCase(
        "group-tool-limits-too-many-tasks",
        group(agent={"toolLimits": {"maxScheduledTasks": 1001}}),
        ("spec.agent.toolLimits.maxScheduledTasks", "should be less than or equal to 1000"),
    ),
    InvalidCase(
        "group-tool-limits-messages-string",
        group(agent={"toolLimits": {"sendMessagesPerMinute": "10"}}),
        ("spec.agent.toolLimits.sendMessagesPerMinute", "must be of type integer"),
    ),
    # --- agent tool policy ---------------------------------------------------------------------
    InvalidCase(
        "group-tool-policy-bad-action",
        group(agent={"toolPolicy": {"rules": [{"tools": ["Bash"], "action": "maybe"}]}}),
        ("spec.agent.toolPolicy.rules[0].action", "Unsupported value"),
    ),
    InvalidCase(
        "group-tool-policy-bad-default",
        group(agent={"toolPolicy": {"default": "prompt"}}),
        ("spec.agent.toolPolicy.default", "Unsupported value"),
    ),
    InvalidCase(
        "group-tool-policy-no-tools",
        group(agent={"toolPolicy": {"rules": [{"tools": [], "action": "deny"}]}}),
        ("spec.agent.toolPolicy.rules[0].tools", "should have at least 1 items"),
    ),
    InvalidCase(
        "group-tool-policy-rule-without-action",
        group(agent={"toolPolicy": {"rules": [{"tools": ["Bash"]}]}}),
        ("spec.agent.toolPolicy.rules[0].action", "Required value"),
    ),
    InvalidCase(
        "group-tool-policy-pattern-with-space",
        group(agent={"toolPolicy": {"rules": [{"tools": ["Bash rm"], "action": "deny"}]}}),
        ("spec.agent.toolPolicy.rules[0].tools[0]", "should match"),
    ),
    InvalidCase(
        "group-tool-policy-empty-server",
        group(agent={"toolPolicy": {"rules": [{"tools": ["/create_issue"], "action": "ask"}]}}),
        ("spec.agent.toolPolicy.rules[0].tools[0]", "should match"),
    ),
    InvalidCase(
        "group-tool-policy-two-slashes",
        group(agent={"toolPolicy": {"rules": [{"tools": ["github/issues/create"], "action": "ask"}]}}),
        ("spec.agent.toolPolicy.rules[0].tools[0]", "should match"),
    ),
    InvalidCase(
        "group-tool-policy-unknown-server",
        group(agent={"toolPolicy": {"rules": [{"tools": ["github/create_issue"], "action": "ask"}]}}),
        ("spec.agent.toolPolicy.rules", "not in mcpServers"),
    ),
    InvalidCase(
        "group-tool-policy-unknown-pynchy-tool",
        group(agent={"toolPolicy": {"rules": [{"tools": ["pynchy/send_email"], "action": "deny"}]}}),
        ("spec.agent.toolPolicy.rules[0].tools", "must name one of Pynchy's tools"),
    ),
    InvalidCase(
        "group-tool-policy-timeout-too-short",
        group(agent={"toolPolicy": {"approvalTimeoutSeconds": 5}}),
        ("spec.agent.toolPolicy.approvalTimeoutSeconds", "should be greater than or equal to 30"),
    ),
    InvalidCase(
        "group-tool-policy-timeout-too-long",
        group(agent={"toolPolicy": {"approvalTimeoutSeconds": 90000}}),
        ("spec.agent.toolPolicy.approvalTimeoutSeconds", "should be less than or equal to 86400"),
    ),
    InvalidCase(
        "group-tool-policy-bad-approver",
        group(agent={"toolPolicy": {"approvers": ["alice"]}}),
        ("spec.agent.toolPolicy.approvers", "must be 'owner' or 'slack:<user id>'"),
    ),
    InvalidCase(
        "group-tool-policy-no-approvers",
        group(agent={"toolPolicy": {"approvers": []}}),
        ("spec.agent.toolPolicy.approvers", "should have at least 1 items"),
    ),
    InvalidCase(
        "group-tool-policy-too-many-rules",
        group(agent={"toolPolicy": {"rules": [{"tools": [f"Tool{i}"], "action": "deny"} for i in range(33)]}}),
        ("spec.agent.toolPolicy.rules", "must have at most 32 items"),
    ),
]
