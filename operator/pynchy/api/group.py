"""Group: one conversation space with its own isolated agent."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator

from pynchy.api.base import (
    DNS_SUBDOMAIN,
    ApiModel,
    Condition,
    ConfigMapKeySelector,
    DeletionPolicy,
    LocalObjectReference,
    ResourceRequirements,
    SecretKeySelector,
    Timestamp,
    cel,
    conditions_field,
    deletion_policy_field,
    observed_generation_field,
    storage_class_field,
    storage_class_immutable,
    validations,
    volume_size_field,
)


class SlackChannel(ApiModel):
    """A Slack conversation the Group answers in."""

    channel_id: str = Field(
        description="Slack conversation id: C… (public), G… (private) or D… (direct message), "
        "as shown in the channel's 'About' pane.",
        max_length=24,
        json_schema_extra=validations(
            cel(
                "self.matches('^[CGD][A-Z0-9]{8,22}$')",
                "channelId must be a Slack conversation id such as C0123ABCD "
                "(C, G or D followed by upper-case letters and digits), not a channel name",
            )
        ),
    )
    reply_in: Literal["thread", "channel"] = Field(
        default="thread",
        description="Where replies go: 'thread' answers in the thread of the asking message, "
        "'channel' posts top-level messages.",
    )


class LocalChannel(ApiModel):
    """The local channel (`pynchy chat <name>`), for use without Slack."""

    name: str = Field(
        description="Name people pass to `pynchy chat`; unique among local channels.",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )


class ChannelBinding(ApiModel):
    """Exactly one channel this Group is bound to."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "[has(self.slack), has(self.local)].filter(x, x).size() == 1",
                "set exactly one of slack or local in each channels entry",
            )
        )
    }

    slack: SlackChannel | None = Field(default=None, description="A Slack conversation.")
    local: LocalChannel | None = Field(default=None, description="A local channel reached with `pynchy chat`.")


class Trigger(ApiModel):
    """When a message wakes the agent."""

    mode: Literal["mention", "always"] = Field(
        default="mention",
        description="'mention': only messages that address the agent (@name or an alias) start a turn; "
        "'always': every message from an allowed sender does.",
    )
    aliases: list[Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=list,
        max_length=10,
        description="Extra names the agent answers to in 'mention' mode, besides its bot mention.",
    )


class TextSource(ApiModel):
    """Text given inline or taken from a ConfigMap key."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "has(self.inline) != has(self.configMapKeyRef)",
                "set exactly one of inline or configMapKeyRef",
            )
        )
    }

    inline: str | None = Field(default=None, description="The text itself.", max_length=65536)
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A ConfigMap key holding the text; edits to it are picked up."
    )


class McpServer(ApiModel):
    """An MCP server the agent may use, reached over HTTP."""

    name: str = Field(
        description="Server name as the agent sees it (tools appear as mcp__<name>__<tool>).",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
    )
    transport: Literal["http", "sse"] = Field(default="http", description="MCP transport: streamable 'http' or 'sse'.")
    url: str = Field(
        description="Server URL, reached by the gateway (the agent calls the gateway's MCP proxy): the Group's "
        "NetworkPolicy needs no egress for it, the gateway's must allow it.",
        max_length=2048,
        pattern=r"^https?://",
    )
    headers_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="A Secret in the Group's namespace whose keys the gateway sends as HTTP headers (for example "
        "Authorization); it never enters the agent pod.",
    )


# The gateway's defaults of spec.agent.toolLimits (PYNCHY_SEND_MESSAGES_PER_MINUTE, …) and the bounds
# both take; here so that the descriptions kubectl explain shows cannot drift from the gateway's values.
DEFAULT_SEND_MESSAGES_PER_MINUTE = 10
DEFAULT_MAX_SCHEDULED_TASKS = 20
DEFAULT_MIN_SCHEDULE_INTERVAL_SECONDS = 300
MAX_SEND_MESSAGES_PER_MINUTE = 120
MAX_SCHEDULED_TASKS = 1000
MIN_SCHEDULE_INTERVAL_BOUNDS = (60, 7 * 86400)  # the API's 1m interval minimum; a week


class ToolLimits(ApiModel):
    """Limits on the agent's tools that reach people or create work (enforced by the gateway; unset: its default)."""

    send_messages_per_minute: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEND_MESSAGES_PER_MINUTE,
        description="Most send_message calls of the agent in any 60 seconds; 0 turns send_message off. "
        f"Empty: the gateway's PYNCHY_SEND_MESSAGES_PER_MINUTE (default {DEFAULT_SEND_MESSAGES_PER_MINUTE}).",
    )
    max_scheduled_tasks: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SCHEDULED_TASKS,
        description="Most ScheduledTasks created by the agent's schedule_task that may exist at once (tasks "
        "applied by a person do not count); 0 turns schedule_task off. "
        f"Empty: the gateway's PYNCHY_MAX_SCHEDULED_TASKS (default {DEFAULT_MAX_SCHEDULED_TASKS}).",
    )
    min_schedule_interval_seconds: int | None = Field(
        default=None,
        ge=MIN_SCHEDULE_INTERVAL_BOUNDS[0],
        le=MIN_SCHEDULE_INTERVAL_BOUNDS[1],
        description="Shortest time between two runs of a task the agent schedules: its interval, or the "
        "closest two of a cron expression's next firings; a once schedule is not limited. Empty: the "
        f"gateway's PYNCHY_MIN_SCHEDULE_INTERVAL_SECONDS (default {DEFAULT_MIN_SCHEDULE_INTERVAL_SECONDS}).",
    )


DEFAULT_APPROVAL_TIMEOUT_SECONDS = 300
# Pynchy's agent tools (pynchy_agent.protocol.TOOLS; a test keeps the two equal: the API types import
# nothing of the agent image).
PYNCHY_TOOL_NAMES = (
    "send_message",
    "schedule_task",
    "list_tasks",
    "pause_task",
    "resume_task",
    "cancel_task",
    "save_memory",
    "recall_memories",
    "forget_memory",
    "reset_context",
    "ask_user",
)
# Built-in names (Bash, WebFetch), '<server>/<tool>' or a pattern of either; '*' and '?' are wildcards.
TOOL_PATTERN = r"^([A-Za-z*?][A-Za-z0-9_*?]*|[a-z0-9*?][-a-z0-9_*?]*/[A-Za-z0-9*?][-A-Za-z0-9_.*?]*)$"
APPROVER_RULE = "self.all(s, s == 'owner' || s.matches('^slack:[UW][A-Z0-9]{8,20}$'))"
_PYNCHY_NAMES_CEL = "[" + ", ".join(f"'{n}'" for n in PYNCHY_TOOL_NAMES) + "]"

ToolAction = Literal["allow", "ask", "deny"]


class ToolRule(ApiModel):
    """Tools matched by any of `tools` get `action`; rules are read in order and the first match decides."""

    tools: list[Annotated[str, Field(min_length=1, max_length=128, pattern=TOOL_PATTERN)]] = Field(
        min_length=1,
        max_length=16,
        description="Tool names or patterns: a built-in tool (Bash, Write, WebFetch), pynchy/<tool> for "
        "Pynchy's tools (pynchy/send_message), <server>/<tool> for an MCP server's (github/create_issue); "
        "'*' matches any characters, '?' one (github/*, */delete_*).",
        json_schema_extra=validations(
            cel(
                "self.all(t, !t.startsWith('pynchy/') || t.contains('*') || t.contains('?') "
                f"|| t.substring(7) in {_PYNCHY_NAMES_CEL})",
                "tools: pynchy/<tool> must name one of Pynchy's tools: " + ", ".join(PYNCHY_TOOL_NAMES),
            )
        ),
    )
    action: ToolAction = Field(
        description="allow: run it; ask: hold the call until an approver decides in the chat; deny: refuse it "
        "(the model reads why)."
    )


class ToolPolicy(ApiModel):
    """Which tool calls run, wait for a person's approval, or are refused (enforced by the gateway)."""

    default: ToolAction = Field(default="allow", description="The action for a tool no rule matches.")
    rules: list[ToolRule] = Field(
        default_factory=list, max_length=32, description="Ordered rules; the first whose tools match decides."
    )
    approvers: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["owner"],
        min_length=1,
        max_length=32,
        description="Who may approve or deny an 'ask': 'owner' (the gateway's configured owner; in the local "
        "channel its user) or 'slack:<user id>' entries.",
        json_schema_extra=validations(
            cel(APPROVER_RULE, "approvers entries must be 'owner' or 'slack:<user id>' such as slack:U0123ABCD")
        ),
    )
    approval_timeout_seconds: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        ge=30,
        le=86400,
        description="A request nobody decides within this many seconds is denied (and its message says so).",
    )


class AgentSettings(ApiModel):
    """How the Group's agent behaves."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "!has(self.toolPolicy) || !has(self.toolPolicy.rules) || self.toolPolicy.rules.all(r, "
                "r.tools.all(t, !t.contains('/') || t.split('/')[0] == 'pynchy' || t.split('/')[0].contains('*') "
                "|| t.split('/')[0].contains('?') "
                "|| (has(self.mcpServers) && self.mcpServers.exists(s, s.name == t.split('/')[0]))))",
                "toolPolicy.rules: a tool pattern <server>/<tool> names a server that is not in mcpServers; "
                "add the server or fix the name (pynchy/<tool> is for Pynchy's own tools)",
                field_path=".toolPolicy.rules",
            ),
        )
    }

    model: str | None = Field(
        default=None,
        description="Claude model id or alias (for example claude-sonnet-4-5); empty uses the operator default.",
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$",
    )
    memory: TextSource | None = Field(
        default=None,
        description="Seed for the group's CLAUDE.md memory, written only when the memory file does not exist yet.",
    )
    directives: list[TextSource] = Field(
        default_factory=list,
        max_length=16,
        description="Standing instructions appended to the system prompt, in order.",
    )
    allowed_tools: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=64,
        description="Claude Code tools the agent may use (for example Read, Write, Bash); empty allows the defaults.",
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        max_length=16,
        description="MCP servers the agent may call.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    max_turns: int | None = Field(
        default=None, ge=1, le=1000, description="Maximum agentic turns per user message; empty means no limit."
    )
    allowed_models: list[Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")]] = Field(
        default_factory=list,
        max_length=16,
        description="Further models the agent may call besides model (the gateway's model proxy refuses any "
        "other); empty allows model only, or the operator default.",
    )
    timeout_seconds: int = Field(
        default=1800,
        ge=30,
        le=86400,
        description="Hard limit on one agent run (pod lifetime), in seconds.",
    )
    idle_timeout_seconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description="The agent pod exits after this many seconds without a turn; the session stays resumable.",
    )
    tool_limits: ToolLimits | None = Field(
        default=None,
        description="Limits on send_message and schedule_task; empty uses the gateway's defaults for each.",
    )
    tool_policy: ToolPolicy | None = Field(
        default=None,
        description="Allow, ask a person about, or deny tool calls (built-in, Pynchy and MCP tools); empty "
        "allows every tool the agent has.",
    )


class Budget(ApiModel):
    """Spending limits, enforced by the gateway's model proxy before a model call leaves the cluster."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "has(self.dailyUsd) || has(self.monthlyUsd) || has(self.dailyTokens) || has(self.monthlyTokens)",
                "set at least one limit: dailyUsd, monthlyUsd, dailyTokens or monthlyTokens",
            )
        )
    }

    daily_usd: float | None = Field(
        default=None, ge=0, le=1_000_000, description="Most the Group may spend per day, in US dollars (for example 5)."
    )
    monthly_usd: float | None = Field(
        default=None, ge=0, le=10_000_000, description="Most the Group may spend per calendar month, in US dollars."
    )
    daily_tokens: int | None = Field(
        default=None, ge=0, le=10**12, description="Most model tokens (input, output and cache) per day."
    )
    monthly_tokens: int | None = Field(
        default=None, ge=0, le=10**13, description="Most model tokens (input, output and cache) per calendar month."
    )
    time_zone: str = Field(
        default="UTC",
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
        description="IANA time zone of the day and month boundaries, for example Europe/Berlin.",
    )
    warn_percent: int = Field(
        default=80,
        ge=1,
        le=100,
        description="Post one warning to the channel per day or month when spending reaches this share of a limit.",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return value


class CredentialRef(ApiModel):
    """An environment variable of the agent set from a Secret key (never an inline value)."""

    env: str = Field(
        description="Environment variable name in the agent container, for example GH_TOKEN.",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        json_schema_extra=validations(
            cel(
                "!(self in ['ANTHROPIC_API_KEY', 'ANTHROPIC_AUTH_TOKEN', 'ANTHROPIC_BASE_URL', "
                "'CLAUDE_CODE_OAUTH_TOKEN'])",
                "the model credential is injected by the gateway's model proxy; remove this entry "
                "and put the key in the gateway's Secret",
            )
        ),
    )
    secret_key_ref: SecretKeySelector = Field(description="The Secret key that holds the value.")


class PvcSource(ApiModel):
    """An existing PersistentVolumeClaim."""

    claim_name: str = Field(
        description="Name of an existing PersistentVolumeClaim in this namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


class ConfigMapSource(ApiModel):
    """An existing ConfigMap, mounted as files."""

    name: str = Field(
        description="Name of an existing ConfigMap in this namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


class HostPathSource(ApiModel):
    """A directory on the node (allowlisted by the operator)."""

    path: str = Field(
        description="Absolute host path; allowed only under a prefix in the operator's hostPath allowlist.",
        min_length=1,
        max_length=4096,
        pattern=r"^/",
    )


class ExtraMount(ApiModel):
    """An existing volume mounted into the agent pod."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "[has(self.persistentVolumeClaim), has(self.configMap), has(self.hostPath)].filter(x, x).size() == 1",
                "set exactly one of persistentVolumeClaim, configMap or hostPath in each mounts entry",
            ),
        )
    }

    name: str = Field(
        description="Volume name, unique within the Group.",
        min_length=1,
        max_length=50,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )
    mount_path: str = Field(
        description="Absolute path in the agent container, for example /mnt/notes.",
        min_length=2,
        max_length=1024,
        json_schema_extra=validations(
            cel(
                "self.startsWith('/') && !self.contains('..') && !self.contains(':')",
                "mountPath must be an absolute path without '..' or ':'",
            ),
            cel(
                "!(self == '/workspace' || self.startsWith('/workspace/') || self == '/home/agent' "
                "|| self.startsWith('/home/agent/'))",
                "mountPath must not be under /workspace or /home/agent, which Pynchy mounts itself",
            ),
        ),
    )
    read_only: bool = Field(default=True, description="Mount read-only (the default).")
    persistent_volume_claim: PvcSource | None = Field(default=None, description="Mount an existing PVC.")
    config_map: ConfigMapSource | None = Field(default=None, description="Mount an existing ConfigMap as files.")
    host_path: HostPathSource | None = Field(
        default=None, description="Mount a host directory (only where the operator's allowlist permits)."
    )


class EgressPort(ApiModel):
    """A destination port."""

    port: int = Field(ge=1, le=65535, description="Destination port.")
    protocol: Literal["TCP", "UDP"] = Field(default="TCP", description="Protocol: TCP or UDP.")


class EgressRule(ApiModel):
    """Destinations the agent pod may reach beyond DNS and the gateway."""

    cidr: str = Field(
        description="Destination network in CIDR notation, for example 203.0.113.0/24 or 0.0.0.0/0.",
        max_length=64,
        json_schema_extra=validations(
            cel("isCIDR(self)", "cidr must be a network such as 10.0.0.0/8 or 2001:db8::/32")
        ),
    )
    except_cidrs: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        alias="except",
        max_length=16,
        description="Sub-networks of cidr to keep blocked, for example the cluster and metadata ranges.",
        json_schema_extra=validations(
            cel("self.all(c, isCIDR(c))", "every except entry must be a CIDR such as 169.254.0.0/16")
        ),
    )
    ports: list[EgressPort] = Field(
        default_factory=list,
        max_length=16,
        description="Allowed destination ports; empty allows every port.",
    )


class NetworkSettings(ApiModel):
    """Network rules of the agent pod: no ingress; egress to DNS, the gateway and what is listed here."""

    egress: list[EgressRule] = Field(
        default_factory=list,
        max_length=32,
        description="Extra egress destinations. Empty keeps the agent on DNS and the Pynchy gateway only.",
    )


class StateStorage(ApiModel):
    """The volume that holds the agent's home: session transcripts and CLAUDE.md memory."""

    model_config = ApiModel.model_config | {"json_schema_extra": validations(storage_class_immutable("Group"))}

    size: str = volume_size_field("1Gi")
    storage_class_name: str | None = storage_class_field()
    deletion_policy: DeletionPolicy = deletion_policy_field("Group")


class GroupSpec(ApiModel):
    """Desired state of a Group."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "!has(self.allowedSenders) || !('*' in self.allowedSenders) || self.allowedSenders.size() == 1",
                "allowedSenders: '*' already allows everyone; remove the other entries",
                field_path=".allowedSenders",
            ),
        )
    }

    display_name: str | None = Field(default=None, description="Human-friendly name.", max_length=200)
    channels: list[ChannelBinding] = Field(
        min_length=1,
        max_length=8,
        description="Where people talk to this Group's agent: Slack conversations and/or local channels.",
    )
    trigger: Trigger = Field(default_factory=Trigger, description="Which messages start a turn.")
    allowed_senders: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=lambda: ["owner"],
        max_length=64,
        description="Who may wake the agent: '*' (anyone), 'owner' (the configured owner), or "
        "'slack:<user id>' entries. Admin Groups also honour this list.",
        json_schema_extra=validations(
            cel(
                "self.all(s, s == '*' || s == 'owner' || s.matches('^slack:[UW][A-Z0-9]{8,20}$'))",
                "allowedSenders entries must be '*', 'owner' or 'slack:<user id>' such as slack:U0123ABCD",
            )
        ),
    )
    admin: bool = Field(
        default=False,
        description="An admin Group may manage other Groups' tasks and message their channels.",
    )
    workspace_ref: LocalObjectReference | None = Field(
        default=None, description="Workspace mounted at /workspace; empty gives the agent a scratch workspace."
    )
    agent: AgentSettings = Field(default_factory=AgentSettings, description="Agent behaviour and limits.")
    credentials: list[CredentialRef] = Field(
        default_factory=list,
        max_length=32,
        description="Environment variables set from Secret keys (tokens for tools such as gh).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["env"]},
    )
    mounts: list[ExtraMount] = Field(
        default_factory=list,
        max_length=16,
        description="Existing PVCs, ConfigMaps or allowlisted host paths mounted into the agent pod.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    network: NetworkSettings = Field(default_factory=NetworkSettings, description="Egress rules of the agent pod.")
    budget: Budget | None = Field(
        default=None,
        description="Spending limits of the agent's model calls; empty uses the gateway's default budget, if any.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU and memory of the agent container; empty uses the operator defaults."
    )
    runtime_class_name: str | None = Field(
        default=None,
        description="RuntimeClass for stronger isolation, for example gvisor or kata.",
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    state: StateStorage = Field(default_factory=StateStorage, description="The agent home volume.")


class GroupChildren(ApiModel):
    """Names of the objects the operator manages for this Group."""

    service_account: str | None = Field(default=None, description="ServiceAccount of the agent pods.", max_length=253)
    state_claim: str | None = Field(default=None, description="PVC holding the agent home.", max_length=253)
    config_map: str | None = Field(
        default=None, description="ConfigMap with memory seed and directives.", max_length=253
    )
    network_policy: str | None = Field(default=None, description="NetworkPolicy of the agent pods.", max_length=253)


class GroupSpend(ApiModel):
    """What the Group's model calls cost in its current budget day and month (written by the gateway)."""

    day: str = Field(
        description="The budget day, in the budget's time zone (UTC without one), e.g. 2026-12-01.", max_length=10
    )
    today_usd: float = Field(ge=0, description="Spent this day, in US dollars.")
    month_usd: float = Field(ge=0, description="Spent this calendar month, in US dollars.")
    budget: Literal["none", "ok", "warning", "exceeded"] = Field(
        description="none (no budget), ok, warning (past warnPercent) or exceeded (model calls are refused)."
    )


class GroupStatus(ApiModel):
    """Observed state of a Group."""

    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] = conditions_field()
    children: GroupChildren | None = Field(default=None, description="Objects managed for this Group.")
    active_run: str | None = Field(
        default=None, description="Name of the AgentRun serving the Group now.", max_length=253
    )
    session_id: str | None = Field(default=None, description="Claude session id the next run resumes.", max_length=128)
    last_activity_time: Timestamp | None = Field(default=None, description="When the Group last had a turn.")
    spend: GroupSpend | None = Field(default=None, description="Model spending, as the gateway metered it.")
